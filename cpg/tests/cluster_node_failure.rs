//! Node failure on a real 3-node cluster: while members on all three nodes send, node
//! 3's daemon is SIGKILLed. The members on nodes 1 and 2 must see node 3's member leave
//! with reason NODEDOWN and a totem change without node 3, and (virtual synchrony)
//! deliver exactly the same stream of messages and membership changes.

mod support;

use std::time::{Duration, Instant};

use cpg::{GroupName, Reason};
use cpg_testkit::Cluster;
use support::cluster::{
    assert_fifo_complete, assert_intact, assert_same_stream, group_stream, join_every_node,
    messages,
};
use support::event::{sorted, Event};
use support::message::HEADER;
use support::peer::{Peer, Stream};
use support::WAIT;

/// Messages per sender; paced so the stream lasts a few seconds and the kill lands in
/// the middle of it.
const PER_SENDER: u64 = 1500;

#[test]
fn killed_node_leaves_with_nodedown_and_survivors_agree() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("cluster-node-failure").unwrap();
    let peers = join_every_node(&cluster, &group);
    let all: Vec<_> = peers.iter().map(Peer::member).collect();
    // Compare the survivors from here on: everything before is their own joins.
    let marks: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();

    for (i, p) in peers.iter().enumerate() {
        p.stream(Stream {
            sender: i as u32 + 1,
            count: PER_SENDER,
            size: Box::new(|seq| HEADER + (seq as usize * 53) % 1500),
            pace: Some((10, Duration::from_millis(2))),
        });
    }
    // Mid-stream: once node 1 has delivered a good part of every sender's messages.
    peers[0]
        .log()
        .wait_for("100 messages from every sender", WAIT, |ev| {
            let msgs = messages(ev);
            (1..=3)
                .all(|s| msgs.iter().filter(|m| m.0 == s).count() >= 100)
                .then_some(())
        });
    let killed_at = Instant::now();
    cluster.kill_daemon(2);

    let survivors = &peers[..2];
    let gone = peers[2].member();
    for p in survivors {
        p.log().wait_members(&all[..2], WAIT);
        p.log()
            .wait_for("a totem change without node 3", WAIT, |ev| {
                ev.iter()
                    .any(|e| matches!(e, Event::Totem { nodes, .. } if sorted(nodes) == [1, 2]))
                    .then_some(())
            });
    }
    let noticed = killed_at.elapsed();
    // Node 3's member lost its daemon: its stream or its dispatch says so.
    peers[2]
        .log()
        .wait_for("node 3's handle to report the lost daemon", WAIT, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::DispatchFailed(err) if err.is_daemon_lost()))
                .then_some(())
        });
    match peers[2].wait_stream(WAIT * 2) {
        Err(e) => assert!(e.is_daemon_lost(), "node 3's send failed with {e}"),
        Ok(n) => assert_eq!(n, PER_SENDER, "node 3's stream ended without error"),
    }
    for p in survivors {
        let sent = p
            .wait_stream(WAIT * 4)
            .unwrap_or_else(|e| panic!("{}: sending failed: {e}", p.name()));
        assert_eq!(sent, PER_SENDER);
        for q in survivors {
            p.log()
                .wait_message(q.member().nodeid, PER_SENDER - 1, WAIT * 2);
        }
    }

    let streams: Vec<Vec<Event>> = survivors
        .iter()
        .zip(&marks)
        .map(|(p, &mark)| group_stream(&p.log().since(mark)))
        .collect();
    for (p, stream) in survivors.iter().zip(&streams) {
        assert_intact(p.log());
        let changes: Vec<&Event> = stream
            .iter()
            .filter(|e| matches!(e, Event::Conf { .. }))
            .collect();
        assert_eq!(
            changes,
            [&Event::Conf {
                group,
                members: all[..2].to_vec(),
                left: vec![(gone, Reason::NodeDown)],
                joined: vec![],
            }],
            "{}: the only membership change is node 3's member leaving with NODEDOWN",
            p.name()
        );
        let msgs = messages(stream);
        for sender in 1..=2 {
            assert_fifo_complete(p.name(), &msgs, sender, PER_SENDER);
        }
        // Node 3's messages that got through: a gap-free prefix of what it sent.
        let from3 = msgs.iter().filter(|(s, _)| *s == 3).count() as u64;
        assert_fifo_complete(p.name(), &msgs, 3, from3);
    }
    assert_same_stream(
        (survivors[0].name(), &streams[0]),
        (survivors[1].name(), &streams[1]),
    );
    let from3 = messages(&streams[0])
        .iter()
        .filter(|(s, _)| *s == 3)
        .count();
    let pos = streams[0]
        .iter()
        .position(|e| matches!(e, Event::Conf { .. }))
        .unwrap();
    assert!(
        messages(&streams[0][pos..]).iter().all(|(s, _)| *s != 3),
        "a message of node 3 was delivered after its NODEDOWN"
    );
    eprintln!(
        "node failure: noticed in {noticed:.2?}; nodes 1 and 2 delivered the same {} events \
         ({} messages, {from3} of them from node 3 before it went down, which had sent {}); \
         the NODEDOWN change at the same position #{pos}",
        streams[0].len(),
        messages(&streams[0]).len(),
        peers[2]
            .stats()
            .sent
            .load(std::sync::atomic::Ordering::SeqCst),
    );
}
