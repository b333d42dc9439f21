//! Partition and heal on a real 3-node cluster: node 3's link to the others is cut,
//! then restored. Both sides must see the other side's members leave with NODEDOWN;
//! while cut, each side's messages stay on its side; after the heal every member must
//! see the others join again with NODEUP, and messages flow to all three nodes again,
//! in the same order everywhere.

mod support;

use std::time::Instant;

use cpg::{GroupName, Member, Reason};
use cpg_testkit::Cluster;
use support::cluster::{
    assert_intact, assert_same_stream, join_every_node, joined_in, left_in, messages, with_reason,
};
use support::message::message;
use support::peer::Peer;
use support::WAIT;

/// Message `seq` of the phase `phase` (1: while cut, 2: after the heal) from peer `i`.
fn tag(phase: u64, i: usize) -> (u32, u64) {
    (i as u32 + 1, phase * 100)
}

#[test]
fn partitioned_node_leaves_with_nodedown_and_rejoins_with_nodeup() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("cluster-partition").unwrap();
    let peers = join_every_node(&cluster, &group);
    let all: Vec<Member> = peers.iter().map(Peer::member).collect();
    // Which members each peer should see on its side, and on the other side.
    let sides = |i: usize| -> (Vec<Member>, Vec<Member>) {
        if i == 2 {
            (all[2..].to_vec(), all[..2].to_vec())
        } else {
            (all[..2].to_vec(), all[2..].to_vec())
        }
    };

    // Cut.
    let marks: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();
    let cut_at = Instant::now();
    cluster.partition(2);
    for (i, p) in peers.iter().enumerate() {
        let (mine, other) = sides(i);
        p.log().wait_members(&mine, WAIT);
        let left = left_in(&p.log().since(marks[i]));
        assert_eq!(
            left,
            with_reason(&other, Reason::NodeDown),
            "{}: who left at the partition, and why",
            p.name()
        );
        assert!(
            joined_in(&p.log().since(marks[i])).is_empty(),
            "{}: nobody joins at a partition",
            p.name()
        );
    }
    let split = cut_at.elapsed();

    // While cut, each side's messages reach only that side.
    for (i, p) in peers.iter().enumerate() {
        let (s, q) = tag(1, i);
        p.send(message(s, q, 100))
            .unwrap_or_else(|e| panic!("{}: send while partitioned: {e}", p.name()));
    }
    for (i, p) in peers.iter().enumerate() {
        for j in (0..3).filter(|&j| sides(i).0.contains(&all[j])) {
            let (s, q) = tag(1, j);
            p.log().wait_message(s, q, WAIT);
        }
    }

    // Heal.
    let marks: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();
    let healed_at = Instant::now();
    cluster.heal(2);
    for (i, p) in peers.iter().enumerate() {
        p.log().wait_members(&all, WAIT);
        let after = p.log().since(marks[i]);
        assert_eq!(
            joined_in(&after),
            with_reason(&sides(i).1, Reason::NodeUp),
            "{}: who joined at the heal, and why",
            p.name()
        );
        assert!(
            left_in(&after).is_empty(),
            "{}: nobody leaves at a heal",
            p.name()
        );
    }
    let merged = healed_at.elapsed();

    // Messages flow across all nodes again.
    for (i, p) in peers.iter().enumerate() {
        let (s, q) = tag(2, i);
        p.send(message(s, q, 100))
            .unwrap_or_else(|e| panic!("{}: send after the heal: {e}", p.name()));
    }
    for p in &peers {
        for j in 0..3 {
            let (s, q) = tag(2, j);
            p.log().wait_message(s, q, WAIT);
        }
    }

    let mut after_heal = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        assert_intact(p.log());
        let msgs = messages(&p.log().events());
        let during: Vec<(u32, u64)> = msgs.iter().copied().filter(|m| m.1 == 100).collect();
        let mut expect: Vec<(u32, u64)> = (0..3)
            .filter(|&j| sides(i).0.contains(&all[j]))
            .map(|j| tag(1, j))
            .collect();
        let mut got = during.clone();
        got.sort();
        expect.sort();
        assert_eq!(
            got,
            expect,
            "{}: messages delivered from the partition (only its own side's, once each)",
            p.name()
        );
        let late: Vec<(u32, u64)> = msgs.iter().copied().filter(|m| m.1 == 200).collect();
        assert_eq!(
            late.len(),
            3,
            "{}: messages after the heal: {late:?}",
            p.name()
        );
        after_heal.push(late);
    }
    for i in 1..3 {
        assert_same_stream(
            (peers[0].name(), &after_heal[0]),
            (peers[i].name(), &after_heal[i]),
        );
    }
    eprintln!(
        "partition: both sides saw NODEDOWN within {split:.2?}; after the heal all saw \
         NODEUP within {merged:.2?}; post-heal order on every node: {:?}",
        after_heal[0]
    );
}
