//! The votequorum handle against single-node daemons: without a provider (the shared
//! node) the typed "no provider" error, not "daemon lost"; with a provider what the
//! node's info and the current state say (and that the node list's ring is CPG's), the
//! rules of tracking and its context, the requests refused before the daemon or by it
//! with their hints, a panicking callback, a small stack; the async stream (feature
//! `tokio`); and a user that corosync.conf does not allow.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cpg::votequorum::{
    InfoFlags, NodeState, NodeStatus, QdeviceName, Track, VoteQuorum, VoteQuorumCallbacks,
    VoteQuorumEvent,
};
use cpg::{CsError, DispatchMode, Dispatched, Error, Operation, RingId, DISPATCH_STACK};
use cpg_testkit::{Cluster, Node};
use support::log::Log;
use support::quorum::{recording_cpg, Record, Seen, Source};
use support::votequorum::{events_of, quorumtool, recording_votequorum};
use support::{big_stack, unique_group, WAIT};

/// Callbacks that do nothing.
struct Nothing;

impl VoteQuorumCallbacks for Nothing {}

/// A single node that runs votequorum (expected votes 1), shared by the tests of this
/// binary that only read from it.
fn provider() -> &'static Cluster {
    static NODE: OnceLock<Cluster> = OnceLock::new();
    NODE.get_or_init(|| {
        Cluster::builder()
            .nodes(1)
            .quorum(cpg_testkit::Quorum::votequorum())
            .start()
            .unwrap_or_else(|e| panic!("cannot start a votequorum node:\n{e}"))
    })
}

/// Runs `f` on a big stack inside the provider node's namespace.
fn on_provider<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let node = provider().node(0);
    big_stack(move || node.enter(f))
}

/// Dispatches `vq` until `log` holds `n` records, failing after [`WAIT`].
fn pump_until_len(vq: &VoteQuorum, log: &Log<Record>, n: usize) {
    let deadline = Instant::now() + WAIT;
    while log.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {:?} after {WAIT:?}",
            log.events()
        );
        vq.dispatch_timeout(Duration::from_millis(100))
            .expect("dispatch");
    }
}

/// The current state of the single node: its node list (itself), then quorate with
/// itself a member, both with `context`. Returns the node list's ring.
fn assert_current_state(events: &[VoteQuorumEvent], context: u64) -> RingId {
    let [VoteQuorumEvent::NodeList {
        context: c1,
        ring_id,
        members,
    }, VoteQuorumEvent::Quorum {
        context: c2,
        quorate,
        nodes,
    }] = events
    else {
        panic!("expected a node list then a quorum notification: {events:?}");
    };
    assert_eq!((*c1, *c2), (context, context), "the tracking context");
    assert_eq!(members, &[1], "the node list of the single node");
    assert_eq!(ring_id.nodeid, 1, "the single node forms its ring");
    assert!(*quorate, "one vote of one expected is quorate");
    assert_eq!(nodes, &[NodeStatus::new(1, NodeState::Member)]);
    *ring_id
}

#[test]
fn without_a_provider_the_error_says_so_and_without_a_daemon_it_is_daemon_lost() {
    let node = cpg_testkit::shared();
    let e = big_stack(move || node.enter(|| VoteQuorum::new(Nothing).unwrap_err()));
    assert_eq!(e, Error::NoQuorumProvider);
    assert!(!e.is_daemon_lost() && !e.is_retryable(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("no quorum provider configured: add `quorum { provider: corosync_votequorum }` to corosync.conf"),
        "{text}"
    );
    // The probe left no quorum handle behind, and votequorum's slot was given back:
    // the same works again, and the shared node still answers.
    let again = big_stack(move || node.enter(|| VoteQuorum::new(Nothing).unwrap_err()));
    assert_eq!(again, Error::NoQuorumProvider);

    // Without a daemon: the lost-daemon error of the initialize, as before.
    let stopped = Cluster::builder()
        .nodes(1)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("a votequorum node to stop");
    stopped.stop_daemon(0);
    let e = stopped
        .node(0)
        .enter(|| VoteQuorum::new(Nothing).unwrap_err());
    assert_eq!(
        e,
        Error::Cs {
            op: Operation::VoteQuorumInitialize,
            code: CsError::Library
        }
    );
    assert!(e.is_daemon_lost(), "{e}");
}

#[test]
fn the_local_node_info_is_what_quorumtool_prints_and_the_current_state_comes_with_cpgs_ring() {
    let cluster = provider();
    let tool = quorumtool(cluster.node(0), &["-s"]);
    let (info, by_id, log) = on_provider(|| {
        let log = Log::new("votequorum");
        let vq = recording_votequorum(&log).expect("connect to votequorum");
        let info = vq.local_info().expect("local_info");
        let by_id = vq.node_info(1).expect("node_info(1)");
        // The current state, with a context.
        vq.track_start_with_context(Track::CURRENT, 42).unwrap();
        pump_until_len(&vq, &log, 2);
        assert_eq!(
            vq.dispatch(DispatchMode::OneNonblocking),
            Ok(Dispatched::NothingPending),
            "nothing else: expected votes notifications come only on a change"
        );
        (info, by_id, log)
    });
    assert_eq!(info, by_id, "node_info(1) on node 1 is local_info");
    assert_eq!(
        (
            info.node_id,
            info.state,
            info.votes,
            info.expected_votes,
            info.highest_expected,
            info.total_votes,
            info.quorum
        ),
        (1, NodeState::Member, 1, 1, 1, 1, 1)
    );
    assert_eq!(info.flags, InfoFlags::QUORATE);
    assert!(info.is_quorate());
    assert_eq!((info.qdevice_votes, info.qdevice_name.clone()), (0, None));
    // corosync-quorumtool -s prints the same numbers.
    assert_eq!(tool.word("Quorum provider"), "corosync_votequorum");
    assert_eq!(tool.word("Quorate"), "Yes");
    assert_eq!(tool.number("Node ID"), info.node_id);
    assert_eq!(tool.number("Expected votes"), info.expected_votes);
    assert_eq!(tool.number("Highest expected"), info.highest_expected);
    assert_eq!(tool.number("Total votes"), info.total_votes);
    assert_eq!(tool.number("Quorum"), info.quorum);
    assert_eq!(tool.flags(), info.flags);
    // ... and names the flags as InfoFlags::quorumtool_names does.
    assert_eq!(
        info.flags.quorumtool_names().collect::<Vec<_>>(),
        tool.fields["Flags"].split_whitespace().collect::<Vec<_>>()
    );
    assert_eq!(tool.votes_of(1), Some(info.votes), "{}", tool.text);

    let events = events_of(&log.events(), 0, Source::Callback);
    let ring = assert_current_state(&events, 42);
    // CPG reports the same ring for the same membership.
    let cpg_ring = on_provider(|| {
        let cpg_log = Log::new("cpg");
        let h = recording_cpg(&cpg_log).unwrap();
        h.join(&unique_group("votequorum-ring")).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
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
        }
    });
    assert_eq!(
        cpg_ring,
        (ring, vec![1]),
        "CPG's ring and votequorum's node list's"
    );
}

#[test]
fn requests_the_daemon_cannot_serve_are_refused_with_their_reason() {
    on_provider(|| {
        let vq = VoteQuorum::new(Nothing).unwrap();
        // Refused before the daemon: node id 0 means the local node to libvotequorum
        // but the quorum device in notifications; expected votes of 0.
        assert!(matches!(vq.node_info(0), Err(Error::InvalidArgument(_))));
        assert_eq!(
            vq.set_expected(0),
            Err(Error::InvalidArgument("set_expected needs at least 1 vote"))
        );
        // Refused by the daemon, with what it means there.
        let unknown = vq.node_info(7).unwrap_err();
        assert_eq!(
            unknown,
            Error::Cs {
                op: Operation::VoteQuorumGetInfo,
                code: CsError::NotExist
            }
        );
        assert!(
            unknown
                .to_string()
                .contains("votequorum knows no node with this id"),
            "{unknown}"
        );
        let unknown = vq.set_votes(7, 1).unwrap_err();
        assert_eq!(unknown.code(), Some(CsError::NameNotFound));
        assert!(unknown.to_string().contains("knows no node"), "{unknown}");
        // One vote present: expected votes of 2 would need a quorum of 2.
        let too_many = vq.set_expected(2).unwrap_err();
        assert_eq!(
            too_many,
            Error::Cs {
                op: Operation::VoteQuorumSetExpected,
                code: CsError::InvalidParam
            }
        );
        assert!(
            too_many.to_string().contains("at most 2 x total votes - 1"),
            "{too_many}"
        );
        // No device is registered on this node.
        let name = QdeviceName::new("nobody-registered-me").unwrap();
        for (op, result) in [
            (
                Operation::VoteQuorumQdevicePoll,
                vq.qdevice_poll(&name, true, RingId { nodeid: 1, seq: 1 }),
            ),
            (
                Operation::VoteQuorumQdeviceUnregister,
                vq.qdevice_unregister(&name),
            ),
            (
                Operation::VoteQuorumQdeviceMasterWins,
                vq.qdevice_master_wins(&name, true),
            ),
            (
                Operation::VoteQuorumQdeviceUpdate,
                vq.qdevice_update(&name, &name),
            ),
        ] {
            let e = result.unwrap_err();
            assert_eq!(
                e,
                Error::Cs {
                    op,
                    code: CsError::NotExist
                }
            );
            assert!(
                e.to_string().contains("no quorum device is registered"),
                "{e}"
            );
        }
        // Nothing changed.
        let info = vq.local_info().unwrap();
        assert_eq!((info.votes, info.expected_votes, info.quorum), (1, 1, 1));
        assert!(!info.flags.contains(InfoFlags::QDEVICE_REGISTERED));
    });
}

#[test]
fn tracking_is_started_once_and_stopped_once_and_carries_its_context() {
    on_provider(|| {
        let log = Log::new("votequorum");
        let vq = recording_votequorum(&log).unwrap();
        assert_eq!(
            vq.track_start(Track::empty()),
            Err(Error::InvalidArgument(
                "track_start needs Track::CURRENT, CHANGES or CHANGES_ONLY"
            ))
        );
        let not_tracking = Error::Cs {
            op: Operation::VoteQuorumTrackStop,
            code: CsError::NotExist,
        };
        assert_eq!(vq.track_stop(), Err(not_tracking.clone()));

        vq.track_start_with_context(Track::CHANGES, 7).unwrap();
        pump_until_len(&vq, &log, 2);
        assert_current_state(&events_of(&log.events(), 0, Source::Callback), 7);
        // A second start while tracking is refused and queues nothing (corosync 3.1.7
        // would queue the current state again before refusing).
        let again = vq.track_start(Track::CURRENT).unwrap_err();
        assert_eq!(
            again,
            Error::Cs {
                op: Operation::VoteQuorumTrackStart,
                code: CsError::Exist
            }
        );
        assert!(
            again
                .to_string()
                .contains("tracks votequorum changes already"),
            "{again}"
        );
        assert_eq!(
            vq.dispatch_timeout(Duration::from_millis(300)),
            Ok(Dispatched::NothingPending)
        );
        vq.track_stop().unwrap();
        assert_eq!(vq.track_stop(), Err(not_tracking.clone()));

        // CURRENT alone: the state once with this call's context; the connection does
        // not track.
        vq.track_start_with_context(Track::CURRENT, u64::MAX)
            .unwrap();
        pump_until_len(&vq, &log, 4);
        assert_current_state(&events_of(&log.events(), 2, Source::Callback), u64::MAX);
        assert_eq!(vq.track_stop(), Err(not_tracking));
        // CHANGES_ONLY: nothing at once, and it tracks.
        vq.track_start(Track::CHANGES_ONLY).unwrap();
        assert_eq!(
            vq.dispatch_timeout(Duration::from_millis(300)),
            Ok(Dispatched::NothingPending)
        );
        vq.track_stop().unwrap();
        assert_eq!(log.len(), 4);
    });
}

#[test]
fn a_panicking_callback_poisons_the_handle_and_resumes_in_dispatch() {
    on_provider(|| {
        let vq = VoteQuorum::builder()
            .on_nodelist(|_| panic!("boom in the node list callback"))
            .on_quorum(|_| unreachable!("nothing runs after the panic"))
            .build()
            .unwrap();
        vq.track_start(Track::CURRENT).unwrap();
        let panic = catch_unwind(AssertUnwindSafe(|| vq.dispatch(DispatchMode::Blocking)))
            .expect_err("the callback's panic resumes in dispatch");
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"boom in the node list callback")
        );
        assert_eq!(vq.dispatch(DispatchMode::All), Err(Error::Poisoned));
        assert_eq!(vq.local_info(), Err(Error::Poisoned));
        assert_eq!(vq.track_stop(), Err(Error::Poisoned));
        let name = QdeviceName::new("x").unwrap();
        assert_eq!(vq.qdevice_register(&name), Err(Error::Poisoned));
        drop(vq);
        assert!(VoteQuorum::new(Nothing).unwrap().local_info().is_ok());
    });
}

#[test]
fn a_small_stack_is_refused_before_libvotequorum_and_nothing_is_lost() {
    let log = Log::new("votequorum");
    let vq = {
        let log = log.clone();
        on_provider(move || {
            let vq = recording_votequorum(&log).unwrap();
            vq.track_start(Track::CURRENT).unwrap();
            vq
        })
    };
    let vq = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            match vq.dispatch(DispatchMode::All) {
                Err(Error::StackTooSmall {
                    op: Operation::VoteQuorumDispatch,
                    needed,
                    available,
                }) => assert!(needed == DISPATCH_STACK && available < 256 << 10),
                other => panic!("expected StackTooSmall, got {other:?}"),
            }
            // Requests have small frames.
            assert_eq!(vq.local_info().map(|i| i.votes), Ok(1));
            vq
        })
        .unwrap()
        .join()
        .unwrap();
    let vq = big_stack(move || {
        pump_until_len(&vq, &log, 2);
        assert_current_state(&events_of(&log.events(), 0, Source::Callback), 0);
        vq
    });
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || drop(vq))
        .unwrap()
        .join()
        .unwrap();
}

#[cfg(feature = "tokio")]
mod stream {
    use super::*;
    use cpg::votequorum::AsyncVoteQuorum;

    #[test]
    fn the_stream_yields_the_current_state_then_waits() {
        support::stream::run(WAIT * 2, || async {
            let node = provider().node(0);
            let mut vq = node.enter(AsyncVoteQuorum::new).expect("connect");
            assert_eq!(vq.local_info().map(|i| i.quorum), Ok(1));
            vq.track_start_with_context(Track::CURRENT | Track::CHANGES, 5)
                .unwrap();
            let mut events = Vec::new();
            for _ in 0..2 {
                let event = tokio::time::timeout(WAIT, vq.next_event())
                    .await
                    .expect("an event within WAIT")
                    .expect("the stream is open")
                    .expect("no error");
                events.push(event);
            }
            assert_current_state(&events, 5);
            assert!(
                tokio::time::timeout(Duration::from_millis(300), vq.next_event())
                    .await
                    .is_err()
            );
            vq.track_stop().unwrap();
            vq.close().unwrap();
        });
    }

    #[test]
    fn without_a_provider_the_async_handle_says_so_too() {
        support::stream::run(WAIT, || async {
            let node = cpg_testkit::shared();
            let e = node.enter(AsyncVoteQuorum::new).unwrap_err();
            assert_eq!(e, Error::NoQuorumProvider);
        });
    }
}

/// Set in the child, which drops to `nobody` before connecting.
const UNPRIVILEGED: &str = "CPG_TEST_VOTEQUORUM_UNPRIVILEGED";
const NOBODY: u32 = 65534;

/// In the child: become `nobody`, connect, ask for the local node's votes; print the
/// outcome on one line.
fn as_nobody() {
    // SAFETY: plain system calls on this process's credentials; order: groups, gid,
    // then uid (after which the others can no longer be changed).
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(NOBODY), 0);
        assert_eq!(libc::setuid(NOBODY), 0);
    }
    let outcome = big_stack(|| VoteQuorum::new(Nothing).and_then(|vq| vq.local_info()));
    match outcome {
        // On a line of its own: libtest's "test ... " has no newline yet.
        Ok(info) => println!("\nOUTCOME votes {}", info.votes),
        Err(e) => println!("\nOUTCOME {e:?} | {e}"),
    }
}

fn run_as_nobody(node: &Node) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = node
        .command(exe)
        .args([
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "an_unlisted_user_is_refused_with_the_uidgid_hint_and_a_listed_one_connects",
        ])
        .env(UNPRIVILEGED, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the unprivileged child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOME "))
        .unwrap_or_else(|| {
            panic!(
                "no outcome from the child:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[test]
fn an_unlisted_user_is_refused_with_the_uidgid_hint_and_a_listed_one_connects() {
    if std::env::var_os(UNPRIVILEGED).is_some() {
        as_nobody();
        return;
    }
    // Without a provider the quorum service, asked which error it is, refuses too.
    let refused = run_as_nobody(cpg_testkit::shared());
    let expected = Error::Cs {
        op: Operation::QuorumInitialize,
        code: CsError::Access,
    };
    assert!(refused.starts_with(&format!("{expected:?}")), "{refused}");
    assert!(refused.contains("uidgid { uid: 65534 }"), "{refused}");

    let closed = Cluster::builder()
        .nodes(1)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("cluster");
    let refused = run_as_nobody(closed.node(0));
    let expected = Error::Cs {
        op: Operation::VoteQuorumInitialize,
        code: CsError::Access,
    };
    assert!(refused.starts_with(&format!("{expected:?}")), "{refused}");
    assert!(
        refused.contains("uid 65534") && refused.contains("uidgid { uid: 65534 }"),
        "the text says what to change: {refused}"
    );
    drop(closed);

    let open = Cluster::builder()
        .nodes(1)
        .quorum(cpg_testkit::Quorum::votequorum())
        .allow_uid(NOBODY)
        .start()
        .expect("cluster allowing nobody");
    assert_eq!(run_as_nobody(open.node(0)), "votes 1");
}
