//! A persistent worker pool for the kernels' row splitting: a GEMV call
//! takes about a millisecond, so spawning threads per call (tens of
//! microseconds each) is a visible part of it.
//!
//! [`run_on`] runs one closure on `threads` threads, the caller's thread
//! included, and returns when every thread that started it has finished.
//! Workers are started on first need, kept for the process, and sleep on a
//! condition variable between calls after polling for the next job for
//! at most [`SPIN`] (100 us); a caller whose workers are still running
//! polls as long before it sleeps. Back-to-back calls then skip the
//! wake-ups, and an idle pool holds no core. One caller uses the pool at
//! a time; a concurrent
//! caller (another thread running a kernel meanwhile) falls back to scoped
//! threads instead of waiting. The closure must split its work dynamically
//! (the kernels take chunks from a shared counter): a worker may join late
//! or not at all, and the caller's own thread then does the rest.
//!
//! Limits: the pool never shrinks; a panic in the closure on a worker
//! thread aborts the process (the kernels do not panic).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a worker that finished a job, and a caller whose workers are
/// still busy, poll before sleeping on a condition variable. Waking a
/// sleeping thread costs tens of microseconds, paid twice per call (the
/// worker's start, the caller's return), while decode calls follow each
/// other within microseconds. Measured on the shared 2-core machine
/// (block-dot decode m = 4096, k = 14336, n = 1, 2 threads, medians of 5
/// alternating runs, load 1.7-2.9): without polling 1.18 ms, with 100 us
/// 1.10 ms; with `jit.rs`'s shrinking chunks as well, 30, 100 or 300 us
/// all 1.09-1.10 ms. The bound keeps an idle pool from holding a core.
const SPIN: Duration = Duration::from_micros(100);

/// Polls `ready` with spin-loop hints for at most [`SPIN`].
fn spin_until(ready: impl Fn() -> bool) {
    let start = Instant::now();
    // `ready` is polled after every hint (a `pause` takes up to about 140
    // cycles), the clock only every 64.
    let mut polls = 0u32;
    while !ready() {
        std::hint::spin_loop();
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(64) && start.elapsed() >= SPIN {
            return;
        }
    }
}

/// The job of the current call: a type-erased pointer to the caller's
/// closure, valid until the caller has seen `active == 0` with the job
/// withdrawn.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn() + Sync + 'static));

// SAFETY: the pointee is `Sync`, and `run_on` keeps it alive (and borrowed)
// until no worker can still use it.
unsafe impl Send for Job {}

struct State {
    /// Bumped for every call, so a worker takes each job at most once.
    generation: u64,
    job: Option<Job>,
    /// Workers the current call still wants.
    wanted: usize,
    /// Workers running the current job.
    active: usize,
    /// Worker threads started so far.
    workers: usize,
}

struct Pool {
    /// Held by the one caller using the pool.
    busy: Mutex<()>,
    state: Mutex<State>,
    /// Workers wait here for a job.
    work: Condvar,
    /// The caller waits here for `active == 0`.
    done: Condvar,
    /// `State::generation` of the last posted job, readable without the
    /// lock (a spinning worker polls it).
    posted: AtomicU64,
    /// `State::active`, readable without the lock (a spinning caller
    /// polls it); written under the lock.
    running: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        busy: Mutex::new(()),
        state: Mutex::new(State {
            generation: 0,
            job: None,
            wanted: 0,
            active: 0,
            workers: 0,
        }),
        work: Condvar::new(),
        done: Condvar::new(),
        posted: AtomicU64::new(0),
        running: AtomicUsize::new(0),
    })
}

/// Locks `m`, ignoring poisoning: the state is only counters, updated
/// under the lock before any code that could panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    loop {
        spin_until(|| p.posted.load(Ordering::Acquire) != seen);
        let job = {
            let mut st = lock(&p.state);
            loop {
                match st.job {
                    Some(job) if st.generation != seen && st.wanted > 0 => {
                        seen = st.generation;
                        st.wanted -= 1;
                        st.active += 1;
                        p.running.store(st.active, Ordering::Release);
                        break job;
                    }
                    _ => st = p.work.wait(st).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        // SAFETY: `run_on` does not return (so the closure stays alive)
        // until `active` is back to 0, which this worker's decrement below
        // is part of.
        let f = unsafe { &*job.0 };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            // The caller may be reading results the closure was writing.
            std::process::abort();
        }
        let mut st = lock(&p.state);
        st.active -= 1;
        p.running.store(st.active, Ordering::Release);
        if st.active == 0 {
            p.done.notify_all();
        }
    }
}

/// Runs `work` on `threads` threads (the caller's included) and returns
/// when all of them have finished it.
pub(crate) fn run_on(threads: usize, work: &(dyn Fn() + Sync)) {
    if threads <= 1 {
        work();
        return;
    }
    let p = pool();
    let Ok(_busy) = p.busy.try_lock() else {
        // Another call holds the pool: scoped threads, as before the pool.
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        return;
    };
    {
        let mut st = lock(&p.state);
        while st.workers < threads - 1 {
            let spawned = std::thread::Builder::new()
                .name("lowbit-gemm".into())
                .spawn(move || worker(p));
            if spawned.is_err() {
                // No more threads: run with the workers there are.
                break;
            }
            st.workers += 1;
        }
        // SAFETY: the lifetime is erased only for the pointer's type; the
        // job is withdrawn and every worker using it has finished before
        // this function returns (below).
        let job: *const (dyn Fn() + Sync + 'static) =
            unsafe { std::mem::transmute(work as *const (dyn Fn() + Sync)) };
        st.generation += 1;
        st.job = Some(Job(job));
        st.wanted = threads - 1;
        p.posted.store(st.generation, Ordering::Release);
        p.work.notify_all();
    }
    work();
    let mut st = lock(&p.state);
    st.job = None;
    st.wanted = 0;
    if st.active > 0 {
        drop(st);
        spin_until(|| p.running.load(Ordering::Acquire) == 0);
        st = lock(&p.state);
    }
    while st.active > 0 {
        st = p.done.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::run_on;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every chunk of a shared counter is done exactly once, call after
    /// call, with thread counts growing and shrinking, and from several
    /// callers at once (one gets the pool, the others scoped threads).
    #[test]
    fn chunks_are_done_once_per_call() {
        let callers: Vec<_> = (0..3)
            .map(|t| {
                std::thread::spawn(move || {
                    for (i, threads) in [2usize, 4, 1, 3, 2, 8].iter().cycle().take(60).enumerate()
                    {
                        let next = AtomicUsize::new(0);
                        let hits: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
                        run_on(*threads, &|| loop {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            if c >= hits.len() {
                                break;
                            }
                            // Widens the window in which a call that
                            // returned early would miss this chunk.
                            std::thread::yield_now();
                            hits[c].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(
                            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                            "caller {t}, call {i}, {threads} threads"
                        );
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
    }
}
