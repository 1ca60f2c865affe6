//! Fork-join for the training step's short parallel phases, waiting by polling instead of
//! sleeping.
//!
//! A training step forks and joins several times (the shards' passes, the first layer's
//! weight gradient, the optimiser), each phase a few hundred microseconds. rayon parks a
//! thread that finds no work after a few dozen yields, and waking it again goes through the
//! kernel; on a VM, a parked vCPU is halted and its wake-up takes an interrupt through the
//! hypervisor. On the project's 2-vCPU Cascade Lake VMs that made 8f's epochs up to twice as
//! long as with threads that never sleep. So, during an epoch, [`KeepWarm`] keeps the pool's
//! other threads polling for work, and [`map_parts`] waits for its parts by polling too. A
//! poll that finds nothing spins briefly, then yields the core to the OS scheduler: a thread
//! that yields stays runnable, so it needs no wake-up, but leaves its core to any thread that
//! has work. (With `--threads 4` on 2 cores, pure spinning made 8f's epochs 1.8 x as long as
//! parking did; this way they stay within about 10 % of parking, either side, at 4 and 8.)

use std::hint::spin_loop;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `task` applied to every item, the first on the calling thread and the others as rayon
/// jobs; returns the results in the items' order once all have finished. While it waits it
/// runs queued jobs or polls (as `Idle` does); it never parks the thread. A panicking task
/// is re-raised here, after the others have finished.
pub fn map_parts<T: Send, R: Send>(items: Vec<T>, task: impl Fn(T) -> R + Sync) -> Vec<R> {
    let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
    let mut parts = items.into_iter().zip(results.iter_mut());
    if let Some((first, first_result)) = parts.next() {
        let pending = AtomicUsize::new(parts.len());
        rayon::in_place_scope(|scope| {
            for (item, result) in parts {
                let (task, pending) = (&task, &pending);
                scope.spawn(move |_| {
                    // Counted down even when the task panics, so the wait below ends.
                    let _done = CountDown(pending);
                    *result = Some(task(item));
                });
            }
            *first_result = Some(task(first));
            let mut idle = Idle::default();
            while pending.load(Ordering::Acquire) > 0 {
                idle.poll();
            }
        });
    }
    results.into_iter().map(|r| r.expect("every part ran (a panic would have been re-raised)")).collect()
}

struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// While alive, keeps every other thread of the calling thread's rayon pool polling for jobs
/// instead of parking (each spends CPU time meanwhile: hold it only around work that keeps
/// the threads busy, such as an epoch). Outside a pool, or in a pool of one, it does nothing.
pub struct KeepWarm {
    stop: Arc<AtomicBool>,
    polling: Arc<AtomicUsize>,
}

impl KeepWarm {
    /// Sets the pool's other threads polling until the returned guard is dropped.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let polling = Arc::new(AtomicUsize::new(0));
        let others = rayon::current_num_threads().saturating_sub(1);
        if let (Some(caller), true) = (rayon::current_thread_index(), others > 0) {
            let (stop, polling) = (stop.clone(), polling.clone());
            // One copy per thread; the caller's own returns at once when it runs.
            rayon::spawn_broadcast(move |thread| {
                if thread.index() == caller {
                    return;
                }
                polling.fetch_add(1, Ordering::AcqRel);
                let mut idle = Idle::default();
                while !stop.load(Ordering::Acquire) {
                    idle.poll();
                }
                polling.fetch_sub(1, Ordering::AcqRel);
            });
        }
        KeepWarm { stop, polling }
    }
}

impl Drop for KeepWarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        while self.polling.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
    }
}

/// One thread polling for rayon jobs: each poll runs a queued job if there is one; else it
/// spins for the first [`Idle::SPINS`] polls since the last job (a step's next phase usually
/// comes within microseconds), then yields the core to the OS at every poll (with more
/// threads than cores, a spinning poller would hold a core that a thread with work needs).
#[derive(Default)]
struct Idle {
    polls: u32,
}

impl Idle {
    const SPINS: u32 = 100;

    fn poll(&mut self) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            self.polls = 0;
        } else if self.polls < Self::SPINS {
            self.polls += 1;
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
