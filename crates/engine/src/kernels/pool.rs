//! The compute pool: the threads matrix products and wide element-wise ops are split over,
//! and the rule for when splitting is worth it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on the calling thread: handing them to
/// the pool costs more than it saves.
pub(super) const PARALLEL_MIN_WORK: usize = 1 << 16;

pub(super) static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Sizes the persistent compute pool that large matrix products are split across (the
/// `--threads` setting). Takes effect once, before the first product; `1` keeps everything
/// on the calling thread.
pub fn set_compute_threads(n: usize) {
    POOL.get_or_init(|| {
        (n > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("basalt-compute-{i}"))
                    .build()
                    .ok()
            })
            .flatten()
    });
}

pub(super) fn pool() -> Option<&'static rayon::ThreadPool> {
    POOL.get().and_then(Option::as_ref)
}

/// The number of threads products are split over (1 without a pool).
pub fn compute_threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// Runs `f` on a thread of the compute pool, when there is one. A forward pass run this way
/// gives each of its products to the pool from inside it: the pool thread running the pass
/// works on the product too and the others steal from it, instead of every product being
/// injected from outside while the caller blocks and is woken again (per product, that
/// hand-off cost as much as a small product itself).
///
/// While the pass runs, the pool's other threads poll for its work instead of going to
/// sleep between products: a pass hands out a few hundred small pieces of work per token,
/// and a thread that slept between them had to be woken through the kernel for the next
/// one (context switches were 14% of decode's samples in `perf`).
///
/// All models share the pool, so a thread polling for one model's pass may pick up another
/// model's whole pass and run it; the first pass then finishes after that one (the two
/// take turns instead of interleaving their products).
pub fn in_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let Some(pool) = pool() else {
        return f();
    };
    pool.install(|| {
        let done = AtomicBool::new(false);
        rayon::scope(|s| {
            for _ in 1..rayon::current_num_threads() {
                s.spawn(|_| poll_until(&done));
            }
            // Set however `f` ends, so the pollers always stop.
            let _finished = SetOnDrop(&done);
            let _busy = Busy::enter();
            f()
        })
    })
}

thread_local! {
    /// Passes and pollers on this thread's stack.
    static BUSY: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as running a pass or a poller while alive.
pub(super) struct Busy;

impl Busy {
    fn enter() -> Self {
        BUSY.with(|b| b.set(b.get() + 1));
        Busy
    }

    fn is_set() -> bool {
        BUSY.with(|b| b.get() > 0)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(b.get().saturating_sub(1)));
    }
}

/// Runs whatever work the pool has until `done`. Returns at once on a thread that already
/// runs a pass or a poller further down its stack (the pass's own thread, when it picks up
/// its own poller while waiting): polling there would hold up what it is part of.
pub(super) fn poll_until(done: &AtomicBool) {
    if Busy::is_set() {
        return;
    }
    let _busy = Busy::enter();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

pub(super) struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` on every chunk of `out` (`chunk` elements each, with its index): on the compute
/// pool when `work` (multiply-adds, roughly) is worth the hand-off, else on this thread.
/// Each chunk is computed by the same code either way, so results never depend on it.
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    match pool().filter(|_| work >= PARALLEL_MIN_WORK) {
        Some(pool) => pool.install(|| {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| f(i, c))
        }),
        None => out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c)),
    }
}
