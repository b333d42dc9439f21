//! Back-pressure on a real 3-node cluster: one member floods the group with large
//! messages, back to back, far faster than the cluster delivers them. Its plain sends
//! must hit back-pressure (`CS_ERR_TRY_AGAIN` / `CS_ERR_QUEUE_FULL`) at least once; the
//! retry helper (`Handle::send_with_retry`) must still get every message out; and every
//! member, on every node, must receive every message exactly once, in order, intact.

mod support;

use std::sync::atomic::Ordering;
use std::time::Instant;

use cpg::GroupName;
use cpg_testkit::Cluster;
use support::cluster::{assert_fifo_complete, assert_intact, join_every_node, messages};
use support::peer::Stream;
use support::WAIT;

/// Messages in the flood.
const COUNT: u64 = 300;

/// Large, varied sizes, from 256 KiB up to the atomic message size `max`: no
/// fragmentation, so each send is one request the daemon accepts or refuses, and a few
/// of them fill the daemon's totem send queue (about 4 MB).
fn size(seq: u64, max: usize) -> usize {
    let min = 256 << 10;
    min + (seq as usize * 104_729) % (max - min)
}

#[test]
fn flooding_sender_sees_back_pressure_and_every_message_arrives_once_in_order() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("cluster-flood").unwrap();
    let peers = join_every_node(&cluster, &group);
    let max = peers[0].max_message_size() as usize;

    let flooder = &peers[0];
    let began = Instant::now();
    flooder.stream(Stream {
        sender: 1,
        count: COUNT,
        size: Box::new(move |seq| size(seq, max)),
        pace: None,
    });
    let sent = flooder
        .wait_stream(WAIT * 4)
        .unwrap_or_else(|e| panic!("the retry helper gave up: {e}"));
    assert_eq!(sent, COUNT, "messages the retry helper got out");
    let stats = flooder.stats();
    let try_again = stats.try_again.load(Ordering::SeqCst);
    let queue_full = stats.queue_full.load(Ordering::SeqCst);
    assert!(
        try_again + queue_full > 0,
        "{COUNT} back-to-back sends of up to {max} bytes never met back-pressure"
    );
    for p in &peers {
        p.log().wait_message(1, COUNT - 1, WAIT * 2);
    }
    let elapsed = began.elapsed();
    for p in &peers {
        assert_intact(p.log());
        assert_fifo_complete(p.name(), &messages(&p.log().events()), 1, COUNT);
    }
    let bytes = stats.bytes.load(Ordering::SeqCst);
    eprintln!(
        "flood: {COUNT} messages, {:.1} MB from node 1 in {elapsed:.2?} ({:.1} MB/s); \
         plain sends refused {try_again}x TRY_AGAIN, {queue_full}x QUEUE_FULL; all 3 \
         members got all of them once, in order",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
    );
}
