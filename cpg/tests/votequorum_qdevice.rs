//! A quorum device written with `cpg::votequorum` (support's `QuorumDevice`: track the
//! node list, register, poll with the current ring id) breaking the tie of a two-node
//! cluster configured with `quorum { device { model; votes: 1 } }` and no `two_node`:
//! registered and alive it adds its vote (as `corosync-quorumtool` shows); the node
//! it runs on stays quorate when the other is cut off, and loses quorum when the
//! device withholds its vote or stops polling past the timeout, and regains it when
//! the device votes again; a device process that ends leaves its registration, and a
//! new one takes it over; rename and unregister; what the daemon refuses. Also: corosync
//! refuses `two_node` beside a device, and without a `device` section a device
//! registers with 0 votes.

mod support;

use std::time::{Duration, Instant};

use cpg::votequorum::{InfoFlags, NodeInfo, NodeState, QdeviceName, Track, VoteQuorum};
use cpg::{CsError, Error, Operation, RingId};
use cpg_testkit::{Cluster, Quorum};
use support::log::Log;
use support::quorum::{Pumped, Source};
use support::votequorum::{
    quorumtool, recording_votequorum, votequorum_step, wait_quorum, wait_ring, QuorumDevice, Vote,
};
use support::{big_stack, serial, WAIT};

use NodeState::{Dead, Member};

/// `quorum.device.timeout`'s default (corosync 3.1.7): a device silent for longer is
/// declared dead.
const DEVICE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// How often the device polls.
const POLL_EVERY: Duration = Duration::from_millis(1000);

struct Nothing;

impl cpg::votequorum::VoteQuorumCallbacks for Nothing {}

/// Polls `info` (asked anew every 100 ms) until `check` holds, or fails after `within`.
fn wait_info(
    what: &str,
    within: Duration,
    mut info: impl FnMut() -> NodeInfo,
    check: impl Fn(&NodeInfo) -> bool,
) -> NodeInfo {
    let deadline = Instant::now() + within;
    loop {
        let now = info();
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const VOTING: InfoFlags = InfoFlags::from_bits(
    InfoFlags::QDEVICE_REGISTERED.bits()
        | InfoFlags::QDEVICE_ALIVE.bits()
        | InfoFlags::QDEVICE_CAST_VOTE.bits(),
);

#[test]
fn a_device_breaks_the_tie_of_two_nodes_while_it_votes() {
    let _serial = serial();
    big_stack(|| {
        let cluster = Cluster::builder()
            .nodes(2)
            .quorum(
                Quorum::votequorum()
                    .expected_votes(3)
                    .device(cpg_testkit::QuorumDevice::new("cpg_rs_test").votes(1)),
            )
            .start()
            .unwrap_or_else(|e| panic!("cannot start 2 nodes with a device:\n{e}"));
        let within = Duration::from_millis(u64::from(cluster.token_ms()) * 10);
        let name = QdeviceName::new("cpg-rs-device").unwrap();
        let log = Log::new("node1");
        let (tracker, ask1) = cluster.node(0).enter(|| {
            (
                recording_votequorum(&log).unwrap(),
                VoteQuorum::new(Nothing).unwrap(),
            )
        });
        let ask2 = cluster.node(1).enter(|| VoteQuorum::new(Nothing).unwrap());
        tracker.track_start(Track::CHANGES).unwrap();
        let _tracker = Pumped::start(tracker, &log, Source::Callback, votequorum_step);
        wait_quorum(
            &log,
            0,
            Source::Callback,
            true,
            &[(1, Member), (2, Member)],
            WAIT,
        );

        // Configured, not running: 3 votes expected (2 nodes, the device 1), 2 present.
        let info = ask1.local_info().unwrap();
        assert_eq!(
            (
                info.expected_votes,
                info.total_votes,
                info.quorum,
                info.qdevice_votes
            ),
            (3, 2, 2, 1)
        );
        assert_eq!(info.flags, InfoFlags::QUORATE);
        assert_eq!(info.qdevice_name, None);

        // The device registers on node 1 and votes: 3 votes.
        let device = QuorumDevice::start(cluster.node(0), &name, Vote::Cast, POLL_EVERY);
        let info = wait_info(
            "the device voting",
            WAIT,
            || ask1.local_info().unwrap(),
            |i| i.flags.contains(VOTING),
        );
        assert_eq!((info.total_votes, info.quorum), (3, 2));
        assert_eq!(info.qdevice_name.as_ref(), Some(&name));
        // Node 2 sees node 1's device, and its name.
        let seen = wait_info(
            "node 2 seeing it",
            WAIT,
            || ask2.node_info(1).unwrap(),
            |i| i.flags.contains(VOTING),
        );
        assert_eq!(seen.qdevice_name.as_ref(), Some(&name));
        let tool = quorumtool(cluster.node(0), &["-s"]);
        assert_eq!(
            (tool.number("Total votes"), tool.number("Quorum")),
            (3, 2),
            "{}",
            tool.text
        );
        assert!(tool
            .flags()
            .contains(InfoFlags::QDEVICE_REGISTERED | InfoFlags::QUORATE));
        assert_eq!(
            tool.votes_of(0),
            Some(1),
            "the device's row:\n{}",
            tool.text
        );

        // What the daemon refuses while it is registered.
        let other = QdeviceName::new("another-device").unwrap();
        let ring = wait_ring(&log, 0, Source::Callback, &[1, 2], WAIT);
        let refused = [
            (
                ask1.qdevice_register(&other),
                Operation::VoteQuorumQdeviceRegister,
                CsError::Exist,
            ),
            (
                ask1.qdevice_poll(&other, true, ring),
                Operation::VoteQuorumQdevicePoll,
                CsError::InvalidParam,
            ),
            (
                ask1.qdevice_poll(
                    &name,
                    true,
                    RingId {
                        nodeid: ring.nodeid,
                        seq: ring.seq - 1,
                    },
                ),
                Operation::VoteQuorumQdevicePoll,
                CsError::MessageError,
            ),
            (
                ask1.qdevice_unregister(&other),
                Operation::VoteQuorumQdeviceUnregister,
                CsError::InvalidParam,
            ),
            // Node 2 has no device of its own.
            (
                ask2.qdevice_poll(&name, true, ring),
                Operation::VoteQuorumQdevicePoll,
                CsError::NotExist,
            ),
        ];
        for (result, op, code) in refused {
            let e = result.unwrap_err();
            assert_eq!(e, Error::Cs { op, code });
            assert!(!e.to_string().contains("uidgid"), "{e}");
        }
        let stale = ask1
            .qdevice_poll(
                &name,
                true,
                RingId {
                    nodeid: ring.nodeid,
                    seq: ring.seq - 1,
                },
            )
            .unwrap_err();
        assert!(
            stale.to_string().contains("latest node list notification"),
            "{stale}"
        );
        // Master wins is allowed and shows in the flags; then taken back.
        ask1.qdevice_master_wins(&name, true).unwrap();
        assert!(ask1
            .local_info()
            .unwrap()
            .flags
            .contains(InfoFlags::QDEVICE_MASTER_WINS));
        ask1.qdevice_master_wins(&name, false).unwrap();
        assert!(!ask1
            .local_info()
            .unwrap()
            .flags
            .contains(InfoFlags::QDEVICE_MASTER_WINS));

        // Cut node 2 off: node 1 keeps quorum with the device's vote (2 of 3), node 2
        // alone has 1 vote. Node 1's quorum notification lists the device as node id 0
        // (its registration sent no notification: the quorum did not change).
        let mark = log.len();
        cluster.partition(1);
        // corosync 3.1.7 never sets the device's state: it is listed with state 0.
        let alone = [(0, NodeState::Unknown(0)), (1, Member), (2, Dead)];
        wait_quorum(&log, mark, Source::Callback, true, &alone, within + WAIT);
        wait_info(
            "node 2 losing quorum",
            within + WAIT,
            || ask2.local_info().unwrap(),
            |i| !i.is_quorate(),
        );
        let tool = quorumtool(cluster.node(0), &["-s"]);
        assert_eq!(
            (tool.word("Quorate"), tool.number("Total votes")),
            ("Yes", 2),
            "{}",
            tool.text
        );

        // The device withholds its vote: node 1 loses quorum at once; then votes again.
        let mark = log.len();
        device.set(Vote::Withhold);
        wait_quorum(&log, mark, Source::Callback, false, &alone, within);
        let info = ask1.local_info().unwrap();
        assert!(info.flags.contains(InfoFlags::QDEVICE_ALIVE));
        assert!(!info.flags.contains(InfoFlags::QDEVICE_CAST_VOTE));
        assert_eq!(info.total_votes, 1);
        let mark = log.len();
        device.set(Vote::Cast);
        wait_quorum(&log, mark, Source::Callback, true, &alone, within);

        // The device stops polling: after the timeout it is dead, and its vote with it.
        let mark = log.len();
        let silent = Instant::now();
        device.set(Vote::Silent);
        let lost = wait_quorum(
            &log,
            mark,
            Source::Callback,
            false,
            &alone,
            DEVICE_TIMEOUT + WAIT,
        );
        let took = lost - silent;
        assert!(
            took >= DEVICE_TIMEOUT - POLL_EVERY,
            "quorum lost {took:?} after the last poll, before the device's timeout"
        );
        let info = ask1.local_info().unwrap();
        assert!(info.flags.contains(InfoFlags::QDEVICE_REGISTERED));
        assert!(!info.flags.contains(InfoFlags::QDEVICE_ALIVE), "{info:?}");
        eprintln!("a silent device cost the quorum after {took:?} (timeout {DEVICE_TIMEOUT:?})");
        let mark = log.len();
        device.set(Vote::Cast);
        wait_quorum(&log, mark, Source::Callback, true, &alone, within);

        // The device's process ends without unregistering: it stays registered; a new
        // one registers the same name and votes.
        drop(device.stop());
        assert!(ask1
            .local_info()
            .unwrap()
            .flags
            .contains(InfoFlags::QDEVICE_REGISTERED));
        let device = QuorumDevice::start(cluster.node(0), &name, Vote::Cast, POLL_EVERY);
        std::thread::sleep(2 * POLL_EVERY);
        let polls = device.polls.lock().unwrap().clone();
        assert!(
            polls
                .iter()
                .any(|(_, cast, result)| *cast && result.is_ok()),
            "the new device's polls: {polls:?}"
        );

        // Renamed, it polls under its new name.
        let vq = device.stop();
        let renamed = QdeviceName::new("cpg-rs-device-2").unwrap();
        vq.qdevice_update(&name, &renamed).unwrap();
        let info = wait_info(
            "the new name",
            WAIT,
            || ask1.local_info().unwrap(),
            |i| i.qdevice_name.as_ref() == Some(&renamed),
        );
        assert!(info.is_quorate());
        let ring = wait_ring(&log, 0, Source::Callback, &[1], WAIT);
        vq.qdevice_poll(&renamed, true, ring).unwrap();
        assert_eq!(
            vq.qdevice_poll(&name, true, ring).unwrap_err().code(),
            Some(CsError::InvalidParam)
        );

        // Unregistered, its vote is gone at once: node 1 alone is not quorate.
        let mark = log.len();
        vq.qdevice_unregister(&renamed).unwrap();
        wait_quorum(
            &log,
            mark,
            Source::Callback,
            false,
            &[(1, Member), (2, Dead)],
            within,
        );
        let info = ask1.local_info().unwrap();
        assert!(
            !info.flags.contains(InfoFlags::QDEVICE_REGISTERED),
            "{info:?}"
        );
        assert_eq!(
            vq.qdevice_unregister(&renamed).unwrap_err().code(),
            Some(CsError::NotExist)
        );

        // Healed: both nodes quorate again without the device.
        let mark = log.len();
        cluster.heal(1);
        wait_quorum(
            &log,
            mark,
            Source::Callback,
            true,
            &[(1, Member), (2, Member)],
            within + WAIT,
        );
    });
}

#[test]
fn without_a_device_section_a_device_registers_with_no_votes() {
    let _serial = serial();
    big_stack(|| {
        let cluster = Cluster::builder()
            .nodes(1)
            .quorum(cpg_testkit::Quorum::votequorum())
            .start()
            .expect("a votequorum node");
        let name = QdeviceName::new("unconfigured").unwrap();
        let device = QuorumDevice::start(cluster.node(0), &name, Vote::Cast, POLL_EVERY);
        let ask = cluster.node(0).enter(|| VoteQuorum::new(Nothing).unwrap());
        let info = wait_info(
            "the device voting",
            WAIT,
            || ask.local_info().unwrap(),
            |i| i.flags.contains(VOTING),
        );
        assert_eq!(
            (info.qdevice_votes, info.total_votes, info.expected_votes),
            (0, 1, 1),
            "{info:?}"
        );
        drop(device);
    });
}
