//! Agreed order on a real 3-node cluster: one member per node, all three sending at
//! once (thousands of messages of mixed sizes, a few above the atomic message size so
//! that libcpg fragments them). Every member must deliver the same sequence, each
//! sender's messages in send order, none missing, none duplicated, every byte intact.

mod cluster_common;

use std::time::Instant;

use cluster_common::*;
use cpg::GroupName;
use cpg_testkit::Cluster;

/// Messages per sender.
const PER_SENDER: u64 = 3000;

/// Mostly small messages (24 B .. ~2 KiB), every 50th 64 KiB, and 3 per sender larger
/// than `max` (fragmented by libcpg).
fn size(seq: u64, max: usize) -> usize {
    if seq % 1000 == 500 {
        max + 100_000 + seq as usize
    } else if seq % 50 == 25 {
        64 << 10
    } else {
        HEADER + (seq as usize * 37) % 2000
    }
}

#[test]
fn three_senders_agreed_order_fifo_no_loss_no_duplicates() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("cluster-order").unwrap();
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer::join(cluster.node(i), &format!("node{}", i + 1), &group))
        .collect();
    let all: Vec<_> = peers.iter().map(Peer::member).collect();
    for p in &peers {
        p.log().wait_members(&all, WAIT);
    }
    let max = peers[0].max_message_size() as usize;

    let began = Instant::now();
    for (i, p) in peers.iter().enumerate() {
        p.stream(Stream {
            sender: i as u32 + 1,
            count: PER_SENDER,
            size: Box::new(move |seq| size(seq, max)),
            pace: None,
        });
    }
    for p in &peers {
        let sent = p
            .wait_stream(WAIT * 4)
            .unwrap_or_else(|e| panic!("{}: sending failed: {e}", p.name()));
        assert_eq!(sent, PER_SENDER, "{}: sent", p.name());
    }
    for p in &peers {
        for sender in 1..=3 {
            p.log().wait_message(sender, PER_SENDER - 1, WAIT * 2);
        }
    }
    let elapsed = began.elapsed();

    let streams: Vec<Vec<(u32, u64)>> = peers.iter().map(|p| messages(&p.log().events())).collect();
    for (p, msgs) in peers.iter().zip(&streams) {
        assert_intact(p.log());
        for sender in 1..=3 {
            assert_fifo_complete(p.name(), msgs, sender, PER_SENDER);
        }
        // libcpg names the sender's node; sender i runs on node i.
        for e in p.log().events() {
            if let Event::Msg { sender, from, .. } = e {
                assert_eq!(
                    from.nodeid,
                    sender,
                    "{}: sender {sender} came from {from}",
                    p.name()
                );
            }
        }
    }
    for (p, msgs) in peers.iter().zip(&streams).skip(1) {
        assert_same_stream((peers[0].name(), &streams[0]), (p.name(), msgs));
    }

    let bytes: u64 = peers
        .iter()
        .map(|p| p.stats().bytes.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    let fragmented = (0..PER_SENDER).filter(|&s| size(s, max) > max).count() * 3;
    let try_again: Vec<u64> = peers
        .iter()
        .map(|p| {
            p.stats()
                .try_again
                .load(std::sync::atomic::Ordering::SeqCst)
        })
        .collect();
    eprintln!(
        "agreed order: {} members each delivered the same {} messages ({} per sender, {} \
         above the {max}-byte atomic size), {:.1} MB in {elapsed:.2?} ({:.0} msg/s); \
         first-attempt TRY_AGAIN per sender: {try_again:?}",
        peers.len(),
        streams[0].len(),
        PER_SENDER,
        fragmented,
        bytes as f64 / 1e6,
        streams[0].len() as f64 / elapsed.as_secs_f64(),
    );
}
