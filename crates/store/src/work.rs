//! Where database calls may run: never on an async runtime's worker threads, whose every
//! blocked millisecond stalls the requests they serve. [`crate::SqliteStore`] runs each
//! call on tokio's blocking pool inside [`store_work`]; threads of no runtime (the crate's
//! own tests) may call the database directly. Debug builds check this at every connection
//! taken, so a change that reaches the database from a runtime thread fails its tests and
//! names the rule.

use std::cell::Cell;

thread_local! {
    static IN_STORE_WORK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, which may call the store, as store work: the caller promises this thread is
/// not an async runtime's worker (it is the blocking pool's, or a thread of its own).
pub(crate) fn store_work<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_STORE_WORK.with(|w| w.set(self.0));
        }
    }
    let _reset = Reset(IN_STORE_WORK.with(|w| w.replace(true)));
    f()
}

/// Debug builds: the calling thread may block on the database.
pub(crate) fn debug_check_thread() {
    debug_assert!(
        tokio::runtime::Handle::try_current().is_err() || IN_STORE_WORK.with(Cell::get),
        "a database call on an async runtime thread: run it on the blocking pool inside \
         store_work"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_work_marks_its_thread_only_while_it_runs() {
        assert!(!IN_STORE_WORK.with(Cell::get));
        store_work(|| {
            assert!(IN_STORE_WORK.with(Cell::get));
            store_work(|| assert!(IN_STORE_WORK.with(Cell::get)));
            assert!(IN_STORE_WORK.with(Cell::get));
        });
        assert!(!IN_STORE_WORK.with(Cell::get));
        debug_check_thread(); // no runtime here: allowed
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_database_call_on_a_runtime_thread_is_caught() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let caught = runtime.block_on(async { std::panic::catch_unwind(debug_check_thread) });
        assert!(caught.is_err());
        let allowed =
            runtime.block_on(async { store_work(|| std::panic::catch_unwind(debug_check_thread)) });
        assert!(allowed.is_ok());
    }
}
