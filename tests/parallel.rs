//! `parallel`: the polling fork-join of the training step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use simdnn::parallel::{Exchange, KeepWarm, map_parts};

/// Runs `f` on another thread and fails the test if it has not returned in 60 s (a wait that
/// never ends would otherwise hang the whole test run).
fn within_a_minute<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(f()).ok());
    result.recv_timeout(Duration::from_secs(60)).expect("finished within a minute")
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool")
}

#[test]
fn results_come_back_in_order_with_the_first_part_on_the_calling_thread() {
    let check = || {
        let caller = thread::current().id();
        let runs = AtomicUsize::new(0);
        let results = map_parts((0..7).collect(), |i: usize| {
            runs.fetch_add(1, Ordering::Relaxed);
            (i * i, thread::current().id())
        });
        assert_eq!(runs.load(Ordering::Relaxed), 7, "each part runs once");
        assert_eq!(results.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 4, 9, 16, 25, 36]);
        assert_eq!(results[0].1, caller, "part 0 runs on the calling thread");
    };
    within_a_minute(move || {
        pool(2).install(check);
        pool(1).install(check);
        // Outside any pool the other parts go to the global pool.
        check();
        assert!(map_parts(Vec::<u8>::new(), |_| 0).is_empty());
    });
}

#[test]
fn parts_run_at_the_same_time() {
    // Part 0 waits until part 1 has started: run one after the other, they never finish.
    within_a_minute(|| {
        for keep_warm in [false, true] {
            pool(2).install(|| {
                let _warm = keep_warm.then(KeepWarm::start);
                for _ in 0..50 {
                    let started = AtomicBool::new(false);
                    map_parts(vec![0, 1], |part| {
                        if part == 0 {
                            while !started.load(Ordering::Acquire) {
                                std::hint::spin_loop();
                            }
                        } else {
                            started.store(true, Ordering::Release);
                        }
                    });
                }
            })
        }
    });
}

#[test]
fn a_panicking_part_is_re_raised_after_the_others_finish() {
    for panicking in [0, 2] {
        let finished = within_a_minute(move || {
            pool(2).install(|| {
                let finished = AtomicUsize::new(0);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    map_parts(vec![0, 1, 2, 3], |part| {
                        if part == panicking {
                            panic!("part {part} fails");
                        }
                        thread::sleep(Duration::from_millis(20));
                        finished.fetch_add(1, Ordering::Relaxed);
                    })
                }));
                assert!(outcome.is_err(), "part {panicking}'s panic reaches the caller");
                finished.load(Ordering::Relaxed)
            })
        });
        assert_eq!(finished, 3, "the other parts finished (part {panicking} panicked)");
    }
}

#[test]
fn keep_warm_lets_go_of_the_threads_when_dropped() {
    within_a_minute(|| {
        let pool = pool(3);
        pool.install(|| {
            for _ in 0..20 {
                let _outer = KeepWarm::start();
                {
                    // Nested: the inner pollers run inside the outer ones until dropped.
                    let _inner = KeepWarm::start();
                    let sums = map_parts((0..3).collect(), |i: u64| (0..1000 * (i + 1)).sum::<u64>());
                    assert_eq!(sums, [499_500, 1_999_000, 4_498_500]);
                }
                let sums = map_parts(vec![10u64, 20], |n| (0..n).sum::<u64>());
                assert_eq!(sums, [45, 190]);
            }
        });
        // Every thread is free again: a job on each of them completes.
        assert_eq!(pool.broadcast(|ctx| ctx.index()).len(), 3);
        // Outside a pool it does nothing.
        drop(KeepWarm::start());
    });
}

/// Threads trading blocks through an `Exchange` in lockstep rounds read, in every round, what
/// each of the others published in that round (a reader a round behind or ahead, or a box
/// rewritten while it is read, would show other values), over several tasks that go on from
/// the rounds the last one left.
#[test]
fn exchanged_blocks_arrive_intact_round_after_round() {
    let value = |thread: usize, round: u64, i: usize| (thread * 1_000_000 + round as usize * 100 + i) as f32;
    within_a_minute(move || {
        for threads in [2, 3] {
            let exchange = Exchange::new(threads, 64);
            pool(threads).install(|| {
                for task in 0..3u64 {
                    map_parts((0..threads).collect(), |t| {
                        let mut member = exchange.member(t);
                        for round in task * 200 + 1..=(task + 1) * 200 {
                            // Blocks of different lengths, so stale tails show too.
                            let len = 1 + (round as usize + t) % 64;
                            member.publish(|out| {
                                out[..len].iter_mut().enumerate().for_each(|(i, v)| *v = value(t, round, i))
                            });
                            member.wait();
                            for s in 0..threads {
                                let len = 1 + (round as usize + s) % 64;
                                let got = &member.inbox(s)[..len];
                                assert!(
                                    got.iter().enumerate().all(|(i, &v)| v == value(s, round, i)),
                                    "thread {t}, round {round}: thread {s}'s block is {got:?}"
                                );
                            }
                        }
                    });
                }
            });
        }
    });
}

/// A thread that panics mid-task releases the others from their wait (they panic too)
/// instead of leaving them waiting for a round that never comes.
#[test]
fn a_panic_in_one_member_stops_the_others_waiting() {
    let panicked = within_a_minute(|| {
        let exchange = Exchange::new(2, 4);
        pool(2).install(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                map_parts(vec![0, 1], |t| {
                    let mut member = exchange.member(t);
                    member.publish(|out| out[0] = t as f32);
                    member.wait();
                    if t == 1 {
                        panic!("thread 1 fails after one round");
                    }
                    member.publish(|out| out[0] = 2.0);
                    member.wait();
                })
            }))
            .is_err()
        })
    });
    assert!(panicked, "the panic reaches the caller");
}
