//! The reader connections: a fixed set, each lent to one read at a time. A read takes the
//! first idle one, or waits for one if all are lent (reads are short, and the blocking
//! pool's size bounds how many wait).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::Connection;

pub(super) struct ReaderPool {
    readers: Vec<Mutex<Connection>>,
    /// Where the next search for an idle reader starts, so waits spread over all of them.
    next: AtomicUsize,
}

impl ReaderPool {
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        Self {
            readers: connections.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A reader, waiting for one if all are lent; `None` when the pool has none at all.
    pub(super) fn take(&self) -> Option<MutexGuard<'_, Connection>> {
        let n = self.readers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(reader) => return Some(reader),
                // A read that panicked left nothing half-done: a read has nothing to undo.
                Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        Some(
            self.readers[start]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_lent_to_one_read_at_a_time_and_waited_for() {
        let pool = std::sync::Arc::new(ReaderPool::new(vec![
            Connection::open_in_memory().unwrap(),
            Connection::open_in_memory().unwrap(),
        ]));
        let first = pool.take().unwrap();
        let second = pool.take().unwrap();
        let waiter = {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || pool.take().map(|c| c.is_autocommit()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "both readers are lent");
        drop(first);
        drop(second);
        assert_eq!(waiter.join().unwrap(), Some(true));
        assert!(ReaderPool::new(Vec::new()).take().is_none());
    }
}
