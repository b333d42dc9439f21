//! The quorum handle against the shared single-node daemon, which runs without a
//! quorum provider: what the quorum type, `is_quorate` and the notifications say there
//! (and that the node list's ring is the one CPG reports), the rules of tracking, the
//! dispatch modes, a panicking callback, re-entry from a callback, small stacks,
//! handles made and dropped on many threads; and the async stream (feature `tokio`).

mod support;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::quorum::{Quorum, QuorumCallbacks, QuorumEvent, QuorumType, Track};
use cpg::{CsError, DispatchMode, Dispatched, Error, Operation, RingId, DISPATCH_STACK};
use support::log::Log;
use support::quorum::{recording_cpg, recording_quorum, Record, Seen, Source};
use support::{big_stack, unique_group, WAIT};

/// Callbacks that do nothing.
struct Nothing;

impl QuorumCallbacks for Nothing {}

/// Runs `f` on a big stack inside the shared daemon's namespace.
fn on_shared<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let node = cpg_testkit::shared();
    big_stack(move || node.enter(f))
}

/// Dispatches `q` until `log` holds `n` records, failing after [`WAIT`].
fn pump_until_len(q: &Quorum, log: &Log<Record>, n: usize) {
    let deadline = Instant::now() + WAIT;
    while log.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {:?} after {WAIT:?}",
            log.events()
        );
        q.dispatch_timeout(Duration::from_millis(100))
            .expect("dispatch");
    }
}

/// The quorum events of `log`, in order.
fn quorum_events(log: &Log<Record>) -> Vec<QuorumEvent> {
    log.events()
        .into_iter()
        .filter_map(|r| match r.seen {
            Seen::Quorum(_, event) => Some(event),
            _ => None,
        })
        .collect()
}

/// The state a node without a provider reports when tracking starts: its node list
/// (the real ring, itself as the only member), then "quorate" with ring 0.0 and no
/// members. Returns the node list's ring.
fn assert_current_state_without_provider(events: &[QuorumEvent]) -> RingId {
    let [QuorumEvent::NodeList {
        ring_id,
        members,
        joined,
        left,
    }, QuorumEvent::Quorum {
        quorate,
        ring_id: quorum_ring,
        members: quorum_members,
    }] = events
    else {
        panic!("expected a node list then a quorum notification: {events:?}");
    };
    assert_eq!(
        (members.as_slice(), joined.as_slice(), left.as_slice()),
        (&[1][..], &[][..], &[][..]),
        "the node list of the single node"
    );
    assert_eq!(ring_id.nodeid, 1, "the single node forms its ring");
    assert!(*quorate, "without a provider every partition is quorate");
    assert_eq!(
        (*quorum_ring, quorum_members.as_slice()),
        (RingId { nodeid: 0, seq: 0 }, &[][..]),
        "without a provider the quorum notification has no ring and no members"
    );
    *ring_id
}

#[test]
fn without_a_provider_the_type_says_so_and_the_node_list_ring_is_cpgs() {
    on_shared(|| {
        let log = Log::new("quorum");
        let q = recording_quorum(&log).expect("connect to the quorum service");
        assert_eq!(q.quorum_type(), QuorumType::NoProvider);
        assert!(!q.quorum_type().has_provider());
        assert_eq!(q.is_quorate(), Ok(true));
        // Nothing comes before tracking starts.
        assert_eq!(
            q.dispatch(DispatchMode::OneNonblocking),
            Ok(Dispatched::NothingPending)
        );
        q.track_start(Track::CURRENT | Track::CHANGES).unwrap();
        pump_until_len(&q, &log, 2);
        let ring = assert_current_state_without_provider(&quorum_events(&log));
        assert!(log
            .events()
            .iter()
            .all(|r| matches!(r.seen, Seen::Quorum(Source::Callback, _))));

        // CPG reports the same ring for the same membership.
        let cpg_log = Log::new("cpg");
        let h = recording_cpg(&cpg_log).unwrap();
        h.join(&unique_group("quorum-ring")).unwrap();
        let deadline = Instant::now() + WAIT;
        let totem = loop {
            if let Some(Seen::Totem(ring, nodes)) =
                cpg_log.events().into_iter().map(|r| r.seen).next()
            {
                break (ring, nodes);
            }
            assert!(
                Instant::now() < deadline,
                "no totem confchg within {WAIT:?}"
            );
            h.dispatch_timeout(Duration::from_millis(100)).unwrap();
        };
        assert_eq!(
            totem,
            (ring, vec![1]),
            "CPG's ring and the quorum node list's"
        );

        // Nothing else is pending.
        assert_eq!(
            q.dispatch(DispatchMode::All),
            Ok(Dispatched::NothingPending)
        );
        q.close().unwrap();
    });
}

#[test]
fn tracking_is_started_once_and_stopped_once() {
    on_shared(|| {
        let log = Log::new("quorum");
        let q = recording_quorum(&log).unwrap();
        assert_eq!(
            q.track_start(Track::empty()),
            Err(Error::InvalidArgument(
                "track_start needs Track::CURRENT, CHANGES or CHANGES_ONLY"
            ))
        );
        let not_tracking = Error::Cs {
            op: Operation::QuorumTrackStop,
            code: CsError::NotExist,
        };
        assert_eq!(q.track_stop(), Err(not_tracking.clone()));

        q.track_start(Track::CHANGES).unwrap();
        pump_until_len(&q, &log, 2);
        // A second start while tracking is refused, and queues nothing (corosync 3.1.7
        // would queue the current state again before refusing).
        let again = q.track_start(Track::CURRENT).unwrap_err();
        assert_eq!(
            again,
            Error::Cs {
                op: Operation::QuorumTrackStart,
                code: CsError::Exist
            }
        );
        assert!(
            again.to_string().contains("tracks quorum changes already"),
            "{again}"
        );
        assert_eq!(
            q.dispatch_timeout(Duration::from_millis(300)),
            Ok(Dispatched::NothingPending)
        );
        q.track_stop().unwrap();
        assert_eq!(q.track_stop(), Err(not_tracking.clone()));

        // CURRENT alone: the state once, and the connection does not track.
        q.track_start(Track::CURRENT).unwrap();
        pump_until_len(&q, &log, 4);
        assert_current_state_without_provider(&quorum_events(&log)[2..]);
        assert_eq!(q.track_stop(), Err(not_tracking));
        q.track_start(Track::CURRENT).unwrap();
        pump_until_len(&q, &log, 6);
        assert_eq!(log.len(), 6);
    });
}

#[test]
fn changes_only_starts_without_the_current_state() {
    on_shared(|| {
        let quiet = Log::new("changes-only");
        let q = recording_quorum(&quiet).unwrap();
        q.track_start(Track::CHANGES_ONLY).unwrap();
        // Another handle asks for the current state: once the daemon has answered it,
        // anything it queued for the first would be there too.
        let control = Log::new("control");
        let c = recording_quorum(&control).unwrap();
        c.track_start(Track::CURRENT).unwrap();
        pump_until_len(&c, &control, 2);
        assert_eq!(
            q.dispatch_timeout(Duration::from_millis(300)),
            Ok(Dispatched::NothingPending)
        );
        assert_eq!(quiet.len(), 0);
        // It tracks: stopping succeeds.
        q.track_stop().unwrap();
    });
}

#[test]
fn dispatch_modes_deliver_one_or_all_and_bounded() {
    on_shared(|| {
        let log = Log::new("quorum");
        let q = recording_quorum(&log).unwrap();
        q.track_start(Track::CURRENT).unwrap();
        // `One` waits for one notification and delivers it.
        assert_eq!(q.dispatch(DispatchMode::One), Ok(Dispatched::Callbacks(1)));
        assert_eq!(q.dispatch(DispatchMode::One), Ok(Dispatched::Callbacks(1)));
        assert_eq!(
            q.dispatch(DispatchMode::OneNonblocking),
            Ok(Dispatched::NothingPending)
        );
        assert_eq!(log.len(), 2);
        assert_eq!(
            q.dispatch_at_most(0),
            Err(Error::InvalidArgument(
                "dispatch_at_most needs max_events of at least 1"
            ))
        );
        q.track_start(Track::CURRENT).unwrap();
        // Wait until both are pending, then take them one, then the rest.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&q);
        assert!(fd >= 0);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(q.dispatch_at_most(1), Ok(Dispatched::Callbacks(1)));
        assert_eq!(q.dispatch_at_most(10), Ok(Dispatched::Callbacks(1)));
        assert_eq!(q.dispatch_at_most(10), Ok(Dispatched::NothingPending));
        assert_eq!(log.len(), 4);
    });
}

#[test]
fn a_panicking_callback_poisons_the_handle_and_resumes_in_dispatch() {
    on_shared(|| {
        let quorum_calls = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&quorum_calls);
        let q = Quorum::builder()
            .on_nodelist(|_| panic!("boom in the node list callback"))
            .on_quorum(move |_| *counted.lock().unwrap() += 1)
            .build()
            .unwrap();
        q.track_start(Track::CURRENT).unwrap();
        // Even the blocking mode ends: the panic resumes once libquorum has returned.
        let panic = catch_unwind(AssertUnwindSafe(|| q.dispatch(DispatchMode::Blocking)))
            .expect_err("the callback's panic resumes in dispatch");
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"boom in the node list callback")
        );
        assert_eq!(*quorum_calls.lock().unwrap(), 0, "nothing after the panic");
        assert_eq!(q.dispatch(DispatchMode::All), Err(Error::Poisoned));
        assert_eq!(q.is_quorate(), Err(Error::Poisoned));
        assert_eq!(q.track_stop(), Err(Error::Poisoned));
        assert_eq!(q.track_start(Track::CHANGES), Err(Error::Poisoned));
        drop(q);
        // The process is fine: a new handle works.
        assert_eq!(Quorum::new(Nothing).unwrap().is_quorate(), Ok(true));
    });
}

thread_local! {
    /// Where the re-entry test leaves its handle, for its own callback to find.
    static LEAKED: RefCell<Option<Quorum>> = const { RefCell::new(None) };
}

#[test]
fn a_callback_cannot_dispatch_its_own_handle_but_may_ask_it() {
    on_shared(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Arc::clone(&seen);
        let q = Quorum::builder()
            .on_nodelist(move |_| {
                LEAKED.with(|leaked| {
                    let leaked = leaked.borrow();
                    let q = leaked.as_ref().expect("the handle is there");
                    let mut seen = inner.lock().unwrap();
                    seen.push(format!("{:?}", q.dispatch(DispatchMode::OneNonblocking)));
                    seen.push(format!("{:?}", q.is_quorate()));
                });
            })
            .build()
            .unwrap();
        q.track_start(Track::CURRENT).unwrap();
        LEAKED.with(|leaked| *leaked.borrow_mut() = Some(q));
        let ran = LEAKED.with(|leaked| {
            leaked
                .borrow()
                .as_ref()
                .unwrap()
                .dispatch(DispatchMode::One)
        });
        assert_eq!(ran, Ok(Dispatched::Callbacks(1)));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("{:?}", Err::<(), _>(Error::ReentrantDispatch)),
                "Ok(true)".to_string()
            ]
        );
        let q = LEAKED.with(|leaked| leaked.borrow_mut().take()).unwrap();
        // The handle goes on after the refused re-entry: the quorum notification (to
        // the unset callback) is next.
        assert_eq!(q.dispatch(DispatchMode::One), Ok(Dispatched::Callbacks(1)));
        assert_eq!(
            q.dispatch(DispatchMode::OneNonblocking),
            Ok(Dispatched::NothingPending)
        );
    });
}

#[test]
fn a_small_stack_is_refused_before_libquorum_and_nothing_is_lost() {
    let log = Log::new("quorum");
    let q = {
        let log = log.clone();
        on_shared(move || {
            let q = recording_quorum(&log).unwrap();
            q.track_start(Track::CURRENT).unwrap();
            q
        })
    };
    // On a small stack: refused, with both figures; requests with small frames work.
    let q = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            for result in [
                q.dispatch(DispatchMode::All),
                q.dispatch_timeout(Duration::from_secs(5)),
            ] {
                match result {
                    Err(Error::StackTooSmall {
                        op: Operation::QuorumDispatch,
                        needed,
                        available,
                    }) => assert!(needed == DISPATCH_STACK && available < 256 << 10),
                    other => panic!("expected StackTooSmall, got {other:?}"),
                }
            }
            assert_eq!(q.is_quorate(), Ok(true));
            q
        })
        .unwrap()
        .join()
        .unwrap();
    // On a big stack the notifications are all there.
    let q = big_stack(move || {
        pump_until_len(&q, &log, 2);
        assert_current_state_without_provider(&quorum_events(&log));
        q
    });
    // Dropped on a small stack: libqb's close runs on a helper thread with room.
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || drop(q))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        on_shared(|| Quorum::new(Nothing).unwrap().is_quorate()),
        Ok(true)
    );
}

#[test]
fn handles_made_and_dropped_on_many_threads_at_once() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 40;
    // One handle made here and dropped by another thread.
    let q = on_shared(|| {
        let q = Quorum::new(Nothing).unwrap();
        q.track_start(Track::CHANGES).unwrap();
        q
    });
    let node = cpg_testkit::shared();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::Builder::new()
                .stack_size(support::BIG_STACK)
                .spawn(move || {
                    node.enter(|| {
                        for round in 0..ROUNDS {
                            let log = Log::new("worker");
                            let q = recording_quorum(&log)
                                .unwrap_or_else(|e| panic!("thread {t} round {round}: {e}"));
                            assert_eq!(q.is_quorate(), Ok(true));
                            q.track_start(Track::CURRENT).unwrap();
                            pump_until_len(&q, &log, 2);
                            if round % 2 == 0 {
                                q.close().unwrap();
                            }
                        }
                    })
                })
                .unwrap()
        })
        .collect();
    std::thread::spawn(move || drop(q)).join().unwrap();
    for w in workers {
        w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
}

#[cfg(feature = "tokio")]
mod stream {
    use super::*;
    use cpg::quorum::AsyncQuorum;

    #[test]
    fn the_stream_yields_the_current_state_then_waits() {
        support::stream::run(WAIT * 2, || async {
            let node = cpg_testkit::shared();
            let mut q = node.enter(AsyncQuorum::new).expect("connect");
            assert_eq!(q.quorum_type(), QuorumType::NoProvider);
            assert_eq!(q.is_quorate(), Ok(true));
            q.track_start(Track::CURRENT | Track::CHANGES).unwrap();
            let mut events = Vec::new();
            for _ in 0..2 {
                let event = tokio::time::timeout(WAIT, q.next_event())
                    .await
                    .expect("an event within WAIT")
                    .expect("the stream is open")
                    .expect("no error");
                events.push(event);
            }
            assert_current_state_without_provider(&events);
            // Nothing more comes on a single node.
            assert!(
                tokio::time::timeout(Duration::from_millis(300), q.next_event())
                    .await
                    .is_err()
            );
            q.track_stop().unwrap();
            q.close().unwrap();
        });
    }

    #[test]
    fn outside_a_runtime_it_says_so() {
        let panic = catch_unwind(AsyncQuorum::new).expect_err("needs a runtime");
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("inside a tokio runtime context"), "{text}");
    }
}
