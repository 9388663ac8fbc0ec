//! A small pool of spinning workers for decoding's matrix–vector products.
//!
//! Decoding one token runs a couple of hundred short products (tens of
//! microseconds each) separated by small single-threaded ops. rayon parks
//! its workers between them, and waking a parked thread costs about as much
//! as the product itself. These workers instead spin for a few milliseconds
//! after each job (as llama.cpp's do), then park; a job wakes parked
//! workers.
//!
//! [`run`] splits `parts` numbered pieces of work between the calling thread
//! and the workers, up to `rayon::current_num_threads()` threads in all, and
//! returns when every piece is done. One job runs at a time; a caller that
//! finds the pool busy (several threads decoding at once) runs its pieces
//! on rayon instead. Which thread runs a piece never changes what the piece
//! computes.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long an idle worker spins before it parks.
const SPIN_FOR: Duration = Duration::from_millis(3);

/// After spinning this long, a waiting thread (idle worker, or a caller
/// waiting for acknowledgements) yields its CPU between checks. Without
/// this, on a machine with more runnable threads than cores (a build
/// running beside a decode, say), a spinning thread held its core for a
/// whole time slice while the thread it waited for could not run:
/// SmolLM2 Q4_0 decoded 6.8 tokens/s on two threads beside a two-job
/// compile.
const YIELD_AFTER: Duration = Duration::from_micros(50);

/// Spins between two checks of the clock (about 10 µs of `pause`s).
const SPINS_PER_CHECK: u32 = 256;

/// One job: a function of the piece number, shared with the workers.
struct Job {
    /// Points at the caller's closure, alive until every worker has
    /// acknowledged the job.
    run: *const (dyn Fn(usize) + Sync),
    parts: usize,
    /// Next unclaimed piece.
    next: AtomicUsize,
    /// Workers allowed to help (the rest only acknowledge).
    max_helpers: usize,
    helpers: AtomicUsize,
    /// Workers done with this job (helped or not).
    acks: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Claims and runs pieces until none is left.
    fn work(&self) {
        loop {
            let part = self.next.fetch_add(1, Ordering::Relaxed);
            if part >= self.parts {
                return;
            }
            // SAFETY: `run` points at the closure of the caller of `run`,
            // which does not return before every worker has acknowledged
            // this job (after its last use of `self`).
            let run = unsafe { &*self.run };
            if catch_unwind(AssertUnwindSafe(|| run(part))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct Pool {
    workers: usize,
    /// Incremented when a job is published.
    epoch: AtomicUsize,
    job: AtomicPtr<Job>,
    /// Held by the caller of the running job.
    busy: Mutex<()>,
    sleep: Mutex<()>,
    wake: Condvar,
    sleeping: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers,
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            busy: Mutex::new(()),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            sleeping: AtomicUsize::new(0),
        }));
        let mut started = 0;
        for i in 0..workers {
            let spawned = std::thread::Builder::new()
                .name(format!("kaiyuan-gemv-{i}"))
                .spawn(move || worker(pool));
            if spawned.is_ok() {
                started += 1;
            }
        }
        if started < workers {
            // Without all its workers the pool would wait for acks forever:
            // report none, so every job runs on rayon.
            return Box::leak(Box::new(Pool {
                workers: 0,
                epoch: AtomicUsize::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                busy: Mutex::new(()),
                sleep: Mutex::new(()),
                wake: Condvar::new(),
                sleeping: AtomicUsize::new(0),
            }));
        }
        pool
    })
}

fn worker(pool: &'static Pool) {
    // Workers are started before the first job is published, at epoch 0;
    // reading the epoch here instead could miss a job published meanwhile.
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if pool.epoch.load(Ordering::SeqCst) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(SPINS_PER_CHECK) {
                let waited = start.elapsed();
                if waited > SPIN_FOR {
                    let mut guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
                    pool.sleeping.fetch_add(1, Ordering::SeqCst);
                    while pool.epoch.load(Ordering::SeqCst) == seen {
                        guard = pool.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    pool.sleeping.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                if waited > YIELD_AFTER {
                    std::thread::yield_now();
                    continue;
                }
            }
            std::hint::spin_loop();
        }
        seen = pool.epoch.load(Ordering::SeqCst);
        let job = pool.job.load(Ordering::Acquire);
        if job.is_null() {
            continue;
        }
        // SAFETY: a job is published before its epoch and its caller waits
        // for this worker's acknowledgement before the job goes away; no
        // later job can be published before that either.
        let job = unsafe { &*job };
        if job.helpers.fetch_add(1, Ordering::Relaxed) < job.max_helpers {
            job.work();
        }
        job.acks.fetch_add(1, Ordering::Release);
    }
}

/// Runs `f(0)`, …, `f(parts − 1)` on this thread and the spinning workers
/// (at most `rayon::current_num_threads()` threads), returning when all are
/// done. A panic in `f` is re-raised here after every piece has finished.
pub(crate) fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let threads = rayon::current_num_threads().min(pool.workers + 1);
    if parts <= 1 || threads <= 1 {
        (0..parts).for_each(f);
        return;
    }
    let Ok(_busy) = pool.busy.try_lock() else {
        (0..parts).into_par_iter().for_each(f);
        return;
    };
    let short: *const (dyn Fn(usize) + Sync + '_) = f;
    // SAFETY: only the lifetime bound of the trait object changes; the
    // pointer is used by the workers only until every one of them has
    // acknowledged this job, before `run` returns and `f` can go away.
    let run_ptr: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(short) };
    let job = Job {
        run: run_ptr,
        parts,
        next: AtomicUsize::new(0),
        max_helpers: threads - 1,
        helpers: AtomicUsize::new(0),
        acks: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    pool.job
        .store(&job as *const Job as *mut Job, Ordering::Release);
    pool.epoch.fetch_add(1, Ordering::SeqCst);
    if pool.sleeping.load(Ordering::SeqCst) > 0 {
        let _guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    job.work();
    // Workers that took no piece still acknowledge; one that has no core
    // just now (more runnable threads than cores) gets this one's.
    let start = Instant::now();
    let mut spins = 0u32;
    while job.acks.load(Ordering::Acquire) < pool.workers {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(SPINS_PER_CHECK) && start.elapsed() > YIELD_AFTER {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    pool.job.store(std::ptr::null_mut(), Ordering::Release);
    if job.panicked.load(Ordering::Relaxed) {
        resume_unwind(Box::new("a piece of a parallel job panicked"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_transpose_equals_the_definition() {
        for (m, n) in [(1, 1), (1, 7), (5, 1), (16, 16), (17, 33), (40, 3), (3, 70)] {
            let by_col: Vec<u32> = (0..(m * n) as u32).collect();
            let got = {
                let mut out = vec![u32::MAX; m * n];
                columns_to_rows_into(&by_col, m, n, &mut out);
                out
            };
            let want: Vec<u32> = (0..m * n).map(|k| by_col[(k % n) * m + k / n]).collect();
            assert_eq!(got, want, "m = {m}, n = {n}");
        }
    }

    #[test]
    fn every_piece_runs_once_from_many_callers() {
        let callers: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    for round in 0..200 {
                        let parts = 1 + (round * 7 + c) % 37;
                        let hits: Vec<AtomicUsize> =
                            (0..parts).map(|_| AtomicUsize::new(0)).collect();
                        run(parts, &|p| {
                            hits[p].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                })
            })
            .collect();
        for c in callers {
            assert!(c.join().is_ok());
        }
    }

    #[test]
    fn a_panicking_piece_is_reported_after_the_others_finish() {
        let done = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run(16, &|p| {
                if p == 3 {
                    panic!("piece 3");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(result.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 15);
        // The pool still works afterwards.
        let count = AtomicUsize::new(0);
        run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}

/// An output buffer written by disjoint pieces from several workers of
/// [`run`] (the decode GEMVs, dense and quantized, and decoding's attention
/// heads).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T = f32>(pub(crate) *mut T);

// SAFETY: callers give every piece its own disjoint range of the buffer,
// which outlives the `run` call that writes it.
unsafe impl<T> Sync for SharedOut<T> {}
// SAFETY: as above; the pointer is only dereferenced inside that call.
unsafe impl<T> Send for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The buffer's start.
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// `by_col` (n outputs × m rows, output-major as the pieces write it) as
/// (m, n) row-major.
pub(crate) fn columns_to_rows(by_col: Vec<f32>, m: usize, n: usize) -> Vec<f32> {
    if m == 1 {
        // One row: both layouts are the same vector.
        return by_col;
    }
    let mut out = vec![0.0f32; m * n];
    columns_to_rows_into(&by_col, m, n, &mut out);
    out
}

/// [`columns_to_rows`] into `out` (m·n elements): `out[i·n + j] =
/// by_col[j·m + i]`, in square tiles so that both sides stay in L1 (one
/// output row's writes per column, element by element, missed the cache
/// at every write and cost 12% of a quantized prefill).
pub(crate) fn columns_to_rows_into<T: Copy>(by_col: &[T], m: usize, n: usize, out: &mut [T]) {
    const TILE: usize = 16;
    assert!(
        by_col.len() >= m * n && out.len() >= m * n,
        "transpose sizes"
    );
    for j0 in (0..n).step_by(TILE) {
        let j1 = (j0 + TILE).min(n);
        for i0 in (0..m).step_by(TILE) {
            let i1 = (i0 + TILE).min(m);
            for j in j0..j1 {
                let col = &by_col[j * m..j * m + m];
                for i in i0..i1 {
                    out[i * n + j] = col[i];
                }
            }
        }
    }
}
