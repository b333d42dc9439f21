//! `Sender`s against the handle's lifecycle: used after close, blocked in back-pressure
//! while the handle is dropped, a callback panicking while they send, a lost daemon.
//! None of these may reach a finalized handle, hang, or lose the typed error. And a
//! sender waiting out back-pressure wakes at the dispatching thread's deliveries.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg::retry::Backoff;
use cpg::{DispatchMode, Error, Handle};
use support::cluster::{stoppable_pair, Paused};
use support::event::latest_members;
use support::peer::{join_waiting, pump_until, Peer};
use support::{big_stack, shared_cluster, unique_group, WAIT};

#[test]
fn a_sender_after_close_gets_closed_and_never_reaches_libcpg() {
    big_stack(|| {
        let group = unique_group("sender-closed");
        let a = Peer::pumped(shared_cluster(), 0);
        // The flood tests of this file load the same daemon: it may push back.
        join_waiting(a.handle(), &group).unwrap();
        let sender = a.handle().sender();
        let clone = sender.clone();
        sender
            .send_with_retry(b"before", &Backoff::default())
            .unwrap();
        pump_until(&[&a], WAIT, "the sender's message", || {
            a.messages(&group) == vec![(1, b"before".to_vec())]
        });
        assert!(!sender.is_closed());
        a.into_handle().close().unwrap();
        assert!(sender.is_closed() && clone.is_closed());
        assert_eq!(sender.send(b"after").unwrap_err(), Error::Closed);
        assert_eq!(
            clone
                .send_with_retry(b"after", &Backoff::default())
                .unwrap_err(),
            Error::Closed
        );
    });
}

#[test]
fn a_sender_of_a_handle_that_has_not_joined_is_refused() {
    big_stack(|| {
        let a = Peer::pumped(shared_cluster(), 0);
        let sender = a.handle().sender();
        assert_eq!(sender.send(b"x").unwrap_err(), Error::NotJoined);
    });
}

/// A send waiting out back-pressure wakes at the next delivery of the thread that
/// dispatches, not at the end of its back-off's pause: with a first pause of a minute,
/// it returns within seconds of the ring moving again. (Back-pressure on demand: with
/// node 2's daemon stopped, node 1's daemon orders nothing and refuses sends once its
/// queue is full.)
#[test]
fn a_send_waiting_out_back_pressure_returns_at_a_delivery_not_after_its_pause() {
    let pause = Duration::from_secs(60);
    let patient = Backoff {
        initial: pause,
        max_delay: pause,
        timeout: Duration::from_secs(3600),
        max_attempts: u32::MAX,
    };
    let cluster = stoppable_pair(10_000);
    big_stack(move || {
        let group = unique_group("sender-woken");
        let delivered = Arc::new(AtomicU64::new(0));
        let handle = {
            let delivered = delivered.clone();
            cluster
                .node(0)
                .enter(|| {
                    Handle::builder()
                        .on_deliver(move |_, _| {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        })
                        .build()
                })
                .expect("a handle on node 1")
        };
        handle.join(&group).unwrap();
        let sender = handle.sender();
        let m = vec![7u8; 64 << 10];
        let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
        // Fill node 1's queue: send until every send has been refused for 200 ms (one
        // refusal may be the daemon reading requests more slowly than they come; a
        // queue that nothing drains refuses them all).
        let mut sent = 0u32;
        let mut refused_since: Option<Instant> = None;
        while refused_since.is_none_or(|t| t.elapsed() < Duration::from_millis(200)) {
            match sender.send(&m) {
                Ok(()) => {
                    sent += 1;
                    refused_since = None;
                }
                Err(e) if e.is_retryable() => {
                    refused_since.get_or_insert_with(Instant::now);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("send {sent}: {e}"),
            }
            assert!(sent < 20_000, "20,000 sends of 64 KiB, no back-pressure");
        }
        let waiting = {
            let (sender, m) = (sender.clone(), m.clone());
            std::thread::spawn(move || {
                let result = sender.send_with_retry(&m, &patient);
                (result, Instant::now())
            })
        };
        // The ring is stuck (for a token timeout of 10 s at least, long enough for a
        // loaded machine or valgrind): nothing is delivered, and the send waits in its
        // first pause.
        let stuck = Instant::now() + Duration::from_millis(500);
        while Instant::now() < stuck {
            handle.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
        assert!(
            !waiting.is_finished(),
            "the send met no back-pressure ({sent} sent before)"
        );
        let resumed = Instant::now();
        drop(paused);
        while !waiting.is_finished() && resumed.elapsed() < pause + WAIT {
            handle.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
        let (result, returned) = waiting.join().unwrap();
        result.unwrap();
        let took = returned.saturating_duration_since(resumed);
        assert!(
            took < pause / 3,
            "the send returned {took:?} after the ring moved again: it slept out its \
             {pause:?} pause instead of waking at a delivery"
        );
        assert!(delivered.load(Ordering::Relaxed) > 0);
    });
}

/// Rounds of: 4 threads flood large messages through senders while the owner
/// dispatches for a while, then drops the handle. Every sender thread must end soon
/// after, with `Closed`.
#[test]
fn dropping_the_handle_under_a_flood_ends_every_sender_promptly() {
    big_stack(|| {
        for round in 0..4u64 {
            let group = unique_group("sender-drop");
            let a = Peer::pumped(shared_cluster(), 0);
            // The previous round's flood (or a sibling's) may still fill the daemon.
            join_waiting(a.handle(), &group).unwrap();
            let sender = a.handle().sender();
            let sent = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let sender = sender.clone();
                    let sent = sent.clone();
                    std::thread::spawn(move || {
                        let m = vec![7u8; 512 << 10];
                        loop {
                            match sender.send_with_retry(&m, &Backoff::default()) {
                                Ok(()) => {
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => return e,
                            }
                        }
                    })
                })
                .collect();
            // Dispatch for a while (the daemon keeps sending our own messages back),
            // or not at all in the last round: then senders wait out back-pressure
            // with nobody dispatching.
            // Either way, until some send went through: the drop must come while the
            // flood is under way (under valgrind, four threads filling their 512 KiB
            // and making their first send can take longer than the pause).
            let pause = if round < 3 { 100 + 150 * round } else { 300 };
            let until = Instant::now() + Duration::from_millis(pause);
            let deadline = Instant::now() + WAIT;
            while Instant::now() < until || sent.load(Ordering::Relaxed) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: nothing sent within {WAIT:?}"
                );
                if round < 3 {
                    a.handle()
                        .dispatch_timeout(Duration::from_millis(5))
                        .unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let dropped = Instant::now();
            drop(a);
            for t in threads {
                assert_eq!(t.join().unwrap(), Error::Closed, "round {round}");
            }
            // Promptly: within the time a close takes, not the 30 s a sender waiting
            // out back-pressure may spend with `Backoff::default()`. Under valgrind
            // (memcheck runs this file) four threads in 512 KiB sends take seconds.
            let took = dropped.elapsed();
            assert!(took < WAIT / 2, "round {round}: {took:?}");
            assert_eq!(sender.send(b"x").unwrap_err(), Error::Closed);
        }
    });
}

/// A callback panics while threads send: the senders end promptly (their sends were
/// accepted, or refused with `Poisoned` once the handle is poisoned), the handle leaves
/// its group (nobody reads its events any more, so the daemon would queue everything
/// for it), and later sends are refused.
#[test]
fn a_panicking_callback_poisons_the_senders_too_and_the_handle_leaves() {
    big_stack(|| {
        let group = unique_group("sender-panic");
        let node = shared_cluster().node(0);
        let delivered = Arc::new(AtomicU64::new(0));
        let count = delivered.clone();
        let handle = node.enter(|| {
            Handle::builder()
                .on_deliver(move |_, _| {
                    if count.fetch_add(1, Ordering::Relaxed) == 10 {
                        panic!("planted panic");
                    }
                })
                .build()
                .unwrap()
        });
        join_waiting(&handle, &group).unwrap();
        let sender = handle.sender();
        let senders: Vec<_> = (0..3)
            .map(|i| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for seq in 0..50u32 {
                        match sender.send_with_retry(&[i, seq as u8], &Backoff::default()) {
                            Ok(()) => {}
                            Err(Error::Poisoned) => return,
                            Err(e) => panic!("sender {i}: {e}"),
                        }
                    }
                })
            })
            .collect();
        let panicked = catch_unwind(AssertUnwindSafe(|| loop {
            handle.dispatch_timeout(Duration::from_millis(10)).unwrap();
        }));
        assert!(
            panicked.is_err(),
            "the callback's panic resumes in dispatch"
        );
        for s in senders {
            s.join().expect("senders end with Ok or Poisoned");
        }
        assert_eq!(
            handle.dispatch(DispatchMode::All).unwrap_err(),
            Error::Poisoned
        );
        assert_eq!(sender.send(b"refused").unwrap_err(), Error::Poisoned);
        assert_eq!(handle.send(b"refused").unwrap_err(), Error::Poisoned);
        // The member is gone from the group.
        let watcher = Peer::pumped(shared_cluster(), 1);
        let deadline = Instant::now() + WAIT;
        while watcher
            .handle()
            .members(&group)
            .unwrap()
            .iter()
            .any(|m| m.pid == std::process::id() && m.nodeid == 1)
        {
            assert!(
                Instant::now() < deadline,
                "the poisoned handle is still a member"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(handle);
        assert_eq!(sender.send(b"x").unwrap_err(), Error::Closed);
    });
}

#[test]
fn a_sender_sees_a_lost_daemon() {
    big_stack(|| {
        let private = cpg_testkit::Cluster::start(1);
        let group = unique_group("sender-lost");
        let a = Peer::pumped(&private, 0);
        a.handle().join(&group).unwrap();
        let sender = a.handle().sender();
        sender.send(b"x").unwrap();
        private.kill_daemon(0);
        let deadline = Instant::now() + WAIT;
        let err = loop {
            match sender.send(b"y") {
                Err(e) => break e,
                Ok(()) => {
                    assert!(Instant::now() < deadline, "sends keep succeeding");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        assert!(err.is_daemon_lost(), "{err:?}");
        // The handle learned it too.
        assert!(a.handle().send(b"z").unwrap_err().is_daemon_lost());
    });
}

/// The outcome of one send: when it began and whether it said `Ok`.
type Sent = (Instant, u64, bool);

/// Remembers the earliest moment a call reported a lost daemon (its end).
#[derive(Default)]
struct FirstLoss(std::sync::Mutex<Option<Instant>>);

impl FirstLoss {
    fn record(&self, at: Instant) {
        let mut first = self.0.lock().unwrap();
        if first.is_none_or(|f| at < f) {
            *first = Some(at);
        }
    }

    fn get(&self) -> Instant {
        self.0.lock().unwrap().expect("a call reported the loss")
    }
}

/// Threads send through `Sender`s, waiting out back-pressure, while the owner
/// dispatches, and the daemon is killed under them. The dispatcher and every sender
/// end within `WAIT` of the kill with a lost-daemon error, and no send that began
/// after a call (on any thread) had reported the loss says `Ok`: the daemon is gone,
/// so such an `Ok` would be a message reported sent that never reached it.
#[test]
fn senders_on_other_threads_end_on_a_killed_daemon_and_no_later_send_says_ok() {
    big_stack(|| {
        let private = cpg_testkit::Cluster::start(1);
        let group = unique_group("sender-killed");
        let delivered = Arc::new(AtomicU64::new(0));
        let count = delivered.clone();
        let handle = private.node(0).enter(|| {
            Handle::builder()
                .on_deliver(move |_, _| {
                    count.fetch_add(1, Ordering::Relaxed);
                })
                .build()
                .unwrap()
        });
        join_waiting(&handle, &group).unwrap();
        let sender = handle.sender();
        // Waits end on progress or the delay, never on this budget.
        let patient = Backoff {
            timeout: Duration::from_secs(3600),
            max_attempts: u32::MAX,
            ..Backoff::default()
        };
        let first_loss = Arc::new(FirstLoss::default());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for t in 0..4u32 {
            let (sender, first_loss, done) = (sender.clone(), first_loss.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let mut sent: Vec<Sent> = Vec::new();
                for seq in 0.. {
                    let m = support::message::message(t, seq, 16 << 10);
                    let began = Instant::now();
                    match sender.send_with_retry(&m, &patient) {
                        Ok(()) => sent.push((began, seq, true)),
                        Err(e) => {
                            first_loss.record(Instant::now());
                            let _ = done.send((t, sent, e));
                            return;
                        }
                    }
                }
            });
        }
        drop(done_tx);
        // Dispatch until the flood is under way, then kill the daemon.
        while delivered.load(Ordering::Relaxed) < 500 {
            handle.dispatch_timeout(Duration::from_millis(10)).unwrap();
        }
        private.kill_daemon(0);
        let killed = Instant::now();
        let dispatch_error = loop {
            match handle.dispatch_timeout(Duration::from_millis(10)) {
                Ok(_) => assert!(killed.elapsed() < WAIT, "dispatch never saw the loss"),
                Err(e) => break e,
            }
        };
        first_loss.record(Instant::now());
        assert!(dispatch_error.is_daemon_lost(), "{dispatch_error:?}");
        let mut ok = 0;
        for _ in 0..4 {
            let left = WAIT.saturating_sub(killed.elapsed());
            let (t, sent, error) = done_rx
                .recv_timeout(left)
                .expect("a sender still running WAIT after the kill");
            assert!(error.is_daemon_lost(), "sender {t}: {error:?}");
            let loss = first_loss.get();
            for (began, seq, _) in sent.iter().filter(|s| s.2) {
                assert!(
                    *began < loss,
                    "sender {t}: message {seq} began {:?} after the loss was reported, and \
                     said Ok",
                    *began - loss
                );
            }
            ok += sent.len();
        }
        assert!(
            ok > 0,
            "nothing was sent before the kill: this test proved nothing"
        );
        assert!(sender.send(b"x").unwrap_err().is_daemon_lost());
        assert!(handle.send(b"x").unwrap_err().is_daemon_lost());
    });
}

/// A callback panics while threads send through `Sender`s: every sender ends (with
/// `Poisoned` once the handle is poisoned), the handle leaves, and a member on the
/// other node delivered exactly the messages whose sends said `Ok`, each once: an `Ok`
/// after the leave would be a message the daemon answered and dropped (corosync takes
/// a send from a connection that left and discards it).
#[test]
fn a_callback_panic_under_senders_leaves_ok_exactly_for_what_the_group_delivered() {
    big_stack(|| {
        let cluster = shared_cluster();
        let group = unique_group("sender-panic-ok");
        let watcher = Peer::threaded(cluster.node(1), "watcher", &group);
        let delivered = Arc::new(AtomicU64::new(0));
        let count = delivered.clone();
        let handle = cluster.node(0).enter(|| {
            Handle::builder()
                .on_deliver(move |_, _| {
                    if count.fetch_add(1, Ordering::Relaxed) == 300 {
                        panic!("planted panic");
                    }
                })
                .build()
                .unwrap()
        });
        join_waiting(&handle, &group).unwrap();
        let me = handle.local_member().unwrap();
        watcher
            .log()
            .wait_for("the member on node 1", WAIT, |events| {
                latest_members(events)
                    .filter(|m| m.contains(&me))
                    .map(|_| ())
            });
        let sender = handle.sender();
        let senders: Vec<_> = (0..4u32)
            .map(|t| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    let mut ok = Vec::new();
                    for seq in 0..100_000u64 {
                        let m = support::message::message(t, seq, 4 << 10);
                        match sender.send_with_retry(&m, &Backoff::default()) {
                            Ok(()) => ok.push(seq),
                            Err(Error::Poisoned) => return ok,
                            Err(e) => panic!("sender {t}: {e}"),
                        }
                    }
                    panic!("sender {t}: never poisoned");
                })
            })
            .collect();
        let panicked = catch_unwind(AssertUnwindSafe(|| loop {
            handle.dispatch_timeout(Duration::from_millis(10)).unwrap();
        }));
        assert!(
            panicked.is_err(),
            "the callback's panic resumes in dispatch"
        );
        let poisoned = Instant::now();
        let ok: Vec<Vec<u64>> = senders
            .into_iter()
            .map(|s| s.join().expect("a sender ends with Ok or Poisoned"))
            .collect();
        assert!(
            poisoned.elapsed() < WAIT,
            "the senders took {:?}",
            poisoned.elapsed()
        );
        // The watcher sees the member go, after everything it had sent.
        watcher
            .log()
            .wait_for("the poisoned member's leave", WAIT, |events| {
                latest_members(events)
                    .filter(|m| !m.contains(&me))
                    .map(|_| ())
            });
        let got: Vec<(u32, u64)> = watcher
            .events()
            .iter()
            .filter_map(|e| e.test_msg())
            .collect();
        for (t, ok) in ok.iter().enumerate() {
            let from_t: Vec<u64> = got
                .iter()
                .filter(|(s, _)| *s == t as u32)
                .map(|(_, seq)| *seq)
                .collect();
            assert_eq!(
                &from_t, ok,
                "sender {t}: delivered on node 2 vs. the sends that said Ok"
            );
        }
        let total: usize = ok.iter().map(Vec::len).sum();
        assert!(total > 0, "nothing was sent: this test proved nothing");
        assert_eq!(sender.send(b"x").unwrap_err(), Error::Poisoned);
    });
}
