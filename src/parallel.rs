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

/// Blocks of floats traded by the threads of one parallel task in lockstep rounds (the
/// tensor-parallel training step's exchanges of partial products and deltas): in each round
/// every thread publishes a block, waits until all have published theirs, then reads the
/// others'. Each thread writes its own two boxes in turn, so a thread may publish the next
/// round while another still reads this one; it cannot get two rounds ahead, as it waits
/// for every thread at each round.
pub struct Exchange {
    published: Vec<PaddedCounter>,
    boxes: Vec<[std::cell::UnsafeCell<Vec<f32>>; 2]>,
    /// Raised when a thread panics mid-task, so the others stop waiting for it.
    poisoned: AtomicBool,
}

// Safety: a box is written only by its thread, through its `Member`, and read by others only
// between the round that published it and their own next publication, which the counters
// order (see `Member`).
unsafe impl Sync for Exchange {}

/// A counter on a cache line of its own: each thread's is polled by the others.
#[repr(align(128))]
struct PaddedCounter(std::sync::atomic::AtomicU64);

impl Exchange {
    /// For `threads` threads, each publishing at most `capacity` floats per round.
    pub fn new(threads: usize, capacity: usize) -> Self {
        Exchange {
            published: (0..threads).map(|_| PaddedCounter(0.into())).collect(),
            boxes: (0..threads).map(|_| [vec![0.0; capacity].into(), vec![0.0; capacity].into()]).collect(),
            poisoned: AtomicBool::new(false),
        }
    }

    pub fn threads(&self) -> usize {
        self.published.len()
    }

    /// Thread `t`'s handle, for one task. It goes on from the round where the last task left
    /// this thread, so every task must take the same number of rounds on every thread.
    pub fn member(&self, t: usize) -> Member<'_> {
        assert!(t < self.threads(), "thread {t} of an exchange of {}", self.threads());
        Member { exchange: self, thread: t, round: self.published[t].0.load(Ordering::Relaxed) }
    }
}

/// One thread's side of an [`Exchange`].
pub struct Member<'e> {
    exchange: &'e Exchange,
    thread: usize,
    round: u64,
}

impl Member<'_> {
    /// Starts the next round: `fill` writes this thread's block into its box, which the
    /// others may read once it returns.
    pub fn publish(&mut self, fill: impl FnOnce(&mut [f32])) {
        self.round += 1;
        let cell = &self.exchange.boxes[self.thread][(self.round % 2) as usize];
        // Safety: only this thread writes its boxes; the others last read this one two
        // rounds ago, and each has published since (this thread waited for them).
        fill(unsafe { &mut *cell.get() });
        self.exchange.published[self.thread].0.store(self.round, Ordering::Release);
    }

    /// Waits until every thread has published this round (spinning, then yielding the core;
    /// never running other rayon jobs, which could be another part of this task).
    ///
    /// # Panics
    /// If another thread of the task panicked.
    pub fn wait(&self) {
        for (s, counter) in self.exchange.published.iter().enumerate() {
            let mut spins = 0u32;
            while s != self.thread && counter.0.load(Ordering::Acquire) < self.round {
                if self.exchange.poisoned.load(Ordering::Relaxed) {
                    panic!("another thread of the parallel step panicked");
                }
                if spins < 1 << 12 {
                    spins += 1;
                    spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Thread `s`'s block of this round (after [`Member::wait`]).
    pub fn inbox(&self, s: usize) -> &[f32] {
        let cell = &self.exchange.boxes[s][(self.round % 2) as usize];
        // Safety: thread `s` published it this round and rewrites it only after this thread
        // has published the next one, which needs `&mut self`, ending this borrow.
        unsafe { &*cell.get() }
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.exchange.poisoned.store(true, Ordering::Relaxed);
        }
    }
}
