//! votequorum on real clusters, each number cross-checked with `corosync-quorumtool`
//! run on the node:
//!
//! - a 3-node cluster whose node 3 has 2 votes (configured): every node's votes, the
//!   expected and total votes, the quorum and the flags;
//! - `set_votes` and `set_expected` changing the quorum on every node, the expected
//!   votes notifications that follow, and what the daemon refuses;
//! - a 2|1 partition: each side's quorum notification with every node's state, in the
//!   callbacks and in the async stream; the lone node made quorate with
//!   `set_expected(1)` (what `corosync-quorumtool -e 1` does); the heal;
//! - `two_node` with `wait_for_all`: the flags, a survivor that stays quorate when the
//!   other is cut off, and a node started alone that is not quorate until it has seen
//!   the other.
//!
//! The clusters run one at a time ([`serial`]): each needs the machine's 2 cores.

mod support;

use std::time::{Duration, Instant};

use cpg::votequorum::{AsyncVoteQuorum, InfoFlags, NodeState, Track, VoteQuorum};
use cpg::{CsError, Error, Operation};
use cpg_testkit::{Cluster, Quorum};
use support::log::Log;
use support::quorum::{record, Pumped, Record, Seen, Source};
use support::stream::runtime;
use support::votequorum::{
    quorumtool, recording_votequorum, votequorum_step, wait_expected, wait_quorum, wait_ring,
};
use support::{big_stack, serial, WAIT};

use NodeState::{Dead, Member};

/// The most a partition, a heal or a change of votes may take to show in a node's
/// notifications: a cut-off node is declared lost after token + consensus (2.2 ×
/// token), then votequorum exchanges its node information within a few rotations;
/// 10 × token leaves room for a loaded 2-core machine.
fn bound(cluster: &Cluster) -> Duration {
    Duration::from_millis(u64::from(cluster.token_ms()) * 10)
}

/// Everything one node runs: a log, a votequorum handle dispatched by a thread, and
/// (where asked) an async handle read by a task, both tracking changes; and a handle
/// the test asks and changes votes through.
struct NodeUnderTest {
    log: Log<Record>,
    _tracker: Pumped<VoteQuorum>,
    ask: VoteQuorum,
    _stream: Option<tokio::task::JoinHandle<()>>,
}

fn start_node(cluster: &Cluster, i: usize, rt: Option<&tokio::runtime::Runtime>) -> NodeUnderTest {
    let log = Log::new(&format!("node{}", i + 1));
    let (tracker, ask, stream) = cluster.node(i).enter(|| {
        let tracker = recording_votequorum(&log).expect("votequorum handle");
        let ask = VoteQuorum::new(Nothing).expect("votequorum handle to ask");
        let stream = rt.map(|rt| {
            let _runtime = rt.enter();
            AsyncVoteQuorum::new().expect("async votequorum handle")
        });
        (tracker, ask, stream)
    });
    tracker.track_start(Track::CHANGES).unwrap();
    let stream = stream.zip(rt).map(|(mut stream, rt)| {
        stream.track_start(Track::CHANGES).unwrap();
        let log = log.clone();
        rt.spawn(async move {
            while let Some(event) = stream.next_event().await {
                match event {
                    Ok(event) => record(&log, Seen::VoteQuorum(Source::Stream, event)),
                    Err(e) => record(&log, Seen::Ended(Source::Stream, e)),
                }
            }
        })
    });
    NodeUnderTest {
        _tracker: Pumped::start(tracker, &log, Source::Callback, votequorum_step),
        log,
        ask,
        _stream: stream,
    }
}

struct Nothing;

impl cpg::votequorum::VoteQuorumCallbacks for Nothing {}

fn start(builder: cpg_testkit::ClusterBuilder, what: &str) -> Cluster {
    builder
        .start()
        .unwrap_or_else(|e| panic!("cannot start {what}:\n{e}"))
}

#[test]
fn votes_quorum_and_flags_are_what_quorumtool_shows_with_a_node_of_two_votes() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(3)
                .quorum(Quorum::votequorum().node_votes(3, 2)),
            "3 nodes, node 3 with 2 votes",
        );
        let nodes: Vec<NodeUnderTest> = (0..3).map(|i| start_node(&cluster, i, None)).collect();
        let all = [(1, Member), (2, Member), (3, Member)];
        for n in &nodes {
            wait_quorum(&n.log, 0, Source::Callback, true, &all, WAIT);
        }
        for (i, n) in nodes.iter().enumerate() {
            let id = i as u32 + 1;
            let info = n.ask.local_info().unwrap();
            let tool = quorumtool(cluster.node(i), &["-s"]);
            let list = quorumtool(cluster.node(i), &["-l"]);
            let votes = if id == 3 { 2 } else { 1 };
            assert_eq!(
                (info.node_id, info.state, info.votes),
                (id, Member, votes),
                "node {id}"
            );
            // 4 votes configured: expected 4, quorum 3, all present.
            assert_eq!(
                (
                    info.expected_votes,
                    info.highest_expected,
                    info.total_votes,
                    info.quorum
                ),
                (4, 4, 4, 3),
                "node {id}"
            );
            assert_eq!(info.flags, InfoFlags::QUORATE, "node {id}");
            assert_eq!(tool.number("Node ID"), id);
            assert_eq!(tool.word("Quorate"), "Yes");
            assert_eq!(tool.number("Expected votes"), info.expected_votes);
            assert_eq!(tool.number("Highest expected"), info.highest_expected);
            assert_eq!(tool.number("Total votes"), info.total_votes);
            assert_eq!(tool.number("Quorum"), info.quorum);
            assert_eq!(tool.flags(), info.flags, "{}", tool.text);
            // Every node's votes, as any node reports them.
            for other in 1..=3u32 {
                let asked = n.ask.node_info(other).unwrap();
                assert_eq!(asked.node_id, other);
                assert_eq!(asked.state, Member);
                assert_eq!(
                    Some(asked.votes),
                    list.votes_of(other),
                    "node {other}'s votes seen from node {id}:\n{}",
                    list.text
                );
                assert_eq!(asked.votes, if other == 3 { 2 } else { 1 });
            }
        }
    });
}

#[test]
fn set_votes_and_set_expected_change_the_quorum_everywhere_and_notify() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(3)
                .quorum(cpg_testkit::Quorum::votequorum()),
            "3 nodes",
        );
        let within = bound(&cluster);
        let nodes: Vec<NodeUnderTest> = (0..3).map(|i| start_node(&cluster, i, None)).collect();
        let all = [(1, Member), (2, Member), (3, Member)];
        for n in &nodes {
            wait_quorum(&n.log, 0, Source::Callback, true, &all, WAIT);
        }
        let numbers = |i: usize| {
            let tool = quorumtool(cluster.node(i), &["-s"]);
            (
                tool.number("Expected votes"),
                tool.number("Total votes"),
                tool.number("Quorum"),
                tool.word("Quorate").to_string(),
            )
        };
        assert_eq!(numbers(1), (3, 3, 2, "Yes".into()));

        // Node 3 gets 2 votes (asked on node 1): 4 votes present, more than the 3
        // expected, so every node raises its expected votes to 4 and says so.
        let marks: Vec<usize> = nodes.iter().map(|n| n.log.len()).collect();
        nodes[0].ask.set_votes(3, 2).unwrap();
        for (n, mark) in nodes.iter().zip(&marks) {
            wait_expected(&n.log, *mark, Source::Callback, 4, within);
        }
        assert_eq!(numbers(1), (4, 4, 3, "Yes".into()));
        assert_eq!(quorumtool(cluster.node(1), &["-l"]).votes_of(3), Some(2));
        assert_eq!(nodes[1].ask.node_info(3).unwrap().votes, 2);

        // Expected votes of 6 (asked on node 2): quorum 4, still met by the 4 votes.
        let marks: Vec<usize> = nodes.iter().map(|n| n.log.len()).collect();
        nodes[1].ask.set_expected(6).unwrap();
        for (n, mark) in nodes.iter().zip(&marks) {
            wait_expected(&n.log, *mark, Source::Callback, 6, within);
        }
        let deadline = Instant::now() + within;
        while numbers(2) != (6, 4, 4, "Yes".into()) {
            assert!(Instant::now() < deadline, "node 3: {:?}", numbers(2));
            std::thread::sleep(Duration::from_millis(100));
        }
        let info = nodes[2].ask.local_info().unwrap();
        assert_eq!((info.expected_votes, info.quorum), (6, 4));

        // What the daemon refuses, and why: a quorum of 5 with 4 votes present; 2 votes
        // left while the quorum needs 4.
        let too_many = nodes[0].ask.set_expected(8).unwrap_err();
        assert_eq!(
            too_many,
            Error::Cs {
                op: Operation::VoteQuorumSetExpected,
                code: CsError::InvalidParam
            }
        );
        let too_few = nodes[0].ask.set_votes(3, 0).unwrap_err();
        assert_eq!(
            too_few,
            Error::Cs {
                op: Operation::VoteQuorumSetVotes,
                code: CsError::InvalidParam
            }
        );
        assert!(
            too_few
                .to_string()
                .contains("lower the expected votes first"),
            "{too_few}"
        );
        assert_eq!(numbers(0), (6, 4, 4, "Yes".into()), "nothing changed");
        // No quorum notification came: the cluster stayed quorate throughout.
        for n in &nodes {
            let decisions = n.log.with(|records| {
                records
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.seen,
                            Seen::VoteQuorum(_, cpg::votequorum::VoteQuorumEvent::Quorum { .. })
                        )
                    })
                    .count()
            });
            assert_eq!(decisions, 1, "{}: {:?}", n.log.name(), n.log.events());
        }
    });
}

#[test]
fn a_2_1_partition_notifies_each_side_with_every_nodes_state() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(3)
                .quorum(cpg_testkit::Quorum::votequorum()),
            "3 nodes",
        );
        let within = bound(&cluster);
        let rt = runtime();
        let nodes: Vec<NodeUnderTest> =
            (0..3).map(|i| start_node(&cluster, i, Some(&rt))).collect();
        let all = [(1, Member), (2, Member), (3, Member)];
        for n in &nodes {
            for source in [Source::Callback, Source::Stream] {
                wait_quorum(&n.log, 0, source, true, &all, WAIT);
            }
        }

        // Cut node 3 off: nodes 1 and 2 stay quorate and see it dead; node 3 alone is
        // not, and sees them dead.
        let marks: Vec<usize> = nodes.iter().map(|n| n.log.len()).collect();
        let cut = Instant::now();
        cluster.partition(2);
        let majority = [(1, Member), (2, Member), (3, Dead)];
        let minority = [(1, Dead), (2, Dead), (3, Member)];
        let mut rings = Vec::new();
        for (i, (n, mark)) in nodes.iter().zip(&marks).enumerate() {
            let (quorate, states, members): (bool, &[_], &[u32]) = if i == 2 {
                (false, &minority, &[3])
            } else {
                (true, &majority, &[1, 2])
            };
            for source in [Source::Callback, Source::Stream] {
                let at = wait_quorum(&n.log, *mark, source, quorate, states, within + WAIT);
                let took = at - cut;
                assert!(took <= within, "{}: {source:?} took {took:?}", n.log.name());
            }
            rings.push(wait_ring(&n.log, *mark, Source::Callback, members, WAIT));
            let info = n.ask.local_info().unwrap();
            assert_eq!(info.is_quorate(), quorate, "{}", n.log.name());
            assert_eq!(info.total_votes, members.len() as u32, "{}", n.log.name());
        }
        assert_eq!(rings[0], rings[1], "nodes 1 and 2 share a ring");
        assert_ne!(rings[0], rings[2], "the sides' rings differ");
        let tool = quorumtool(cluster.node(2), &["-s"]);
        assert_eq!(
            (
                tool.word("Quorate"),
                tool.number("Total votes"),
                tool.number("Quorum")
            ),
            ("No", 1, 2),
            "{}",
            tool.text
        );
        assert!(tool.text.contains("Activity blocked"), "{}", tool.text);

        // On the lone node, expected votes of 1 make it quorate (what
        // `corosync-quorumtool -e 1` does for a node an administrator knows is alone).
        let mark = nodes[2].log.len();
        nodes[2].ask.set_expected(1).unwrap();
        wait_expected(&nodes[2].log, mark, Source::Callback, 1, within);
        for source in [Source::Callback, Source::Stream] {
            wait_quorum(&nodes[2].log, mark, source, true, &minority, within);
        }
        let tool = quorumtool(cluster.node(2), &["-s"]);
        assert_eq!(
            (
                tool.word("Quorate"),
                tool.number("Expected votes"),
                tool.number("Quorum")
            ),
            ("Yes", 1, 1),
            "{}",
            tool.text
        );

        // Heal: one cluster, every node a member and quorate.
        let marks: Vec<usize> = nodes.iter().map(|n| n.log.len()).collect();
        cluster.heal(2);
        for (n, mark) in nodes.iter().zip(&marks) {
            for source in [Source::Callback, Source::Stream] {
                wait_quorum(&n.log, *mark, source, true, &all, within + WAIT);
            }
            wait_ring(&n.log, *mark, Source::Callback, &[1, 2, 3], WAIT);
        }
    });
}

#[test]
fn two_node_keeps_a_survivor_quorate_and_wait_for_all_holds_a_lone_start() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(2)
                .quorum(Quorum::votequorum().two_node(true).wait_for_all(true)),
            "2 nodes, two_node with wait_for_all",
        );
        let within = bound(&cluster);
        let nodes: Vec<NodeUnderTest> = (0..2).map(|i| start_node(&cluster, i, None)).collect();
        let both = [(1, Member), (2, Member)];
        for n in &nodes {
            wait_quorum(&n.log, 0, Source::Callback, true, &both, WAIT);
        }
        let flags = InfoFlags::TWO_NODE | InfoFlags::QUORATE | InfoFlags::WAIT_FOR_ALL;
        for (i, n) in nodes.iter().enumerate() {
            let info = n.ask.local_info().unwrap();
            assert_eq!(info.flags, flags, "node {}", i + 1);
            // two_node: a quorum of 1.
            assert_eq!(
                (info.expected_votes, info.total_votes, info.quorum),
                (2, 2, 1)
            );
            let tool = quorumtool(cluster.node(i), &["-s"]);
            assert_eq!(tool.flags(), flags, "{}", tool.text);
            assert_eq!(
                info.flags.quorumtool_names().collect::<Vec<_>>(),
                tool.fields["Flags"].split_whitespace().collect::<Vec<_>>()
            );
            assert_eq!(tool.number("Quorum"), 1);
        }

        // Cut node 2 off: node 1 stays quorate (and so does node 2: with two_node,
        // fencing decides which survives).
        let marks: Vec<usize> = nodes.iter().map(|n| n.log.len()).collect();
        cluster.partition(1);
        wait_quorum(
            &nodes[0].log,
            marks[0],
            Source::Callback,
            true,
            &[(1, Member), (2, Dead)],
            within + WAIT,
        );
        wait_quorum(
            &nodes[1].log,
            marks[1],
            Source::Callback,
            true,
            &[(1, Dead), (2, Member)],
            within + WAIT,
        );
        let tool = quorumtool(cluster.node(0), &["-s"]);
        assert_eq!(
            (
                tool.word("Quorate"),
                tool.number("Total votes"),
                tool.number("Quorum")
            ),
            ("Yes", 1, 1),
            "{}",
            tool.text
        );
        drop(nodes);

        // Both daemons stop; node 1 starts alone: wait_for_all keeps it inquorate.
        cluster.stop_daemon(1);
        cluster.stop_daemon(0);
        cluster.heal(1);
        cluster.restart_daemon(0);
        cluster
            .wait_members(0, &[1], WAIT)
            .expect("node 1 forms its ring alone");
        let lone = start_node(&cluster, 0, None);
        wait_quorum(&lone.log, 0, Source::Callback, false, &[(1, Member)], WAIT);
        let info = lone.ask.local_info().unwrap();
        assert_eq!(info.flags, InfoFlags::TWO_NODE | InfoFlags::WAIT_FOR_ALL);
        assert!(!info.is_quorate());
        let tool = quorumtool(cluster.node(0), &["-s"]);
        assert_eq!(tool.word("Quorate"), "No", "{}", tool.text);
        assert_eq!(tool.flags(), InfoFlags::TWO_NODE | InfoFlags::WAIT_FOR_ALL);

        // Once it has seen node 2, it is quorate.
        let mark = lone.log.len();
        cluster.restart_daemon(1);
        wait_quorum(
            &lone.log,
            mark,
            Source::Callback,
            true,
            &both,
            within + WAIT,
        );
        assert_eq!(lone.ask.local_info().unwrap().flags, flags);
    });
}
