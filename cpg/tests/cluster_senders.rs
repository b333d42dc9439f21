//! Many threads sending through `Sender`s while each handle's own thread dispatches, on
//! a 3-node cluster: every message arrives once, intact, in its thread's order, and all
//! nodes deliver one and the same order. The large-message round floods the daemons so
//! that senders wait out back-pressure (`CS_ERR_TRY_AGAIN`) while dispatch goes on.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cpg::GroupName;
use cpg_testkit::Cluster;
use support::cluster::{
    assert_fifo_complete, assert_intact, assert_same_stream, join_every_node, messages,
};
use support::message::message;
use support::peer::{backoff, Peer};
use support::WAIT;

/// Sender threads per node.
const THREADS: u32 = 4;

/// Runs `THREADS` sender threads on every peer, each sending `count` messages of
/// `len` bytes with sender id `node * 100 + thread`; returns the pushbacks seen.
fn send_from_threads(peers: &[Peer], count: u64, len: usize) -> u64 {
    let pushbacks = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = peers
        .iter()
        .enumerate()
        .flat_map(|(n, peer)| {
            (0..THREADS).map({
                let pushbacks = pushbacks.clone();
                move |t| {
                    let sender = peer.sender();
                    let pushbacks = pushbacks.clone();
                    let id = (n as u32 + 1) * 100 + t;
                    std::thread::spawn(move || {
                        for seq in 0..count {
                            let m = message(id, seq, len);
                            match sender.send(&m) {
                                Ok(()) => continue,
                                Err(e) if e.is_retryable() => {
                                    pushbacks.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("sender {id} seq {seq}: {e}"),
                            }
                            sender
                                .send_with_retry(&m, &backoff())
                                .unwrap_or_else(|e| panic!("sender {id} seq {seq}: {e}"));
                        }
                    })
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
    pushbacks.load(Ordering::Relaxed)
}

fn check(peers: &[Peer], count: u64) {
    let ids: Vec<u32> = (1..=peers.len() as u32)
        .flat_map(|n| (0..THREADS).map(move |t| n * 100 + t))
        .collect();
    let last = *ids.last().unwrap();
    for p in peers {
        p.log().wait_message(last, count - 1, WAIT * 2);
    }
    // Every sender's last message, at every node.
    for p in peers {
        for &id in &ids {
            p.log().wait_message(id, count - 1, WAIT * 2);
        }
    }
    let streams: Vec<Vec<(u32, u64)>> = peers.iter().map(|p| messages(&p.log().events())).collect();
    for (p, msgs) in peers.iter().zip(&streams) {
        assert_intact(p.log());
        for &id in &ids {
            assert_fifo_complete(p.name(), msgs, id, count);
        }
    }
    for (p, msgs) in peers.iter().zip(&streams).skip(1) {
        assert_same_stream((peers[0].name(), &streams[0]), (p.name(), msgs));
    }
}

#[test]
fn threads_send_while_handles_dispatch_and_every_node_sees_one_order() {
    let cluster = Cluster::start(3);

    // Small messages: senders and dispatch overlap all the time.
    let group = GroupName::new(format!("senders-small-{}", std::process::id())).unwrap();
    let peers = join_every_node(&cluster, &group);
    send_from_threads(&peers, 500, 200);
    check(&peers, 500);
    drop(peers);

    // Large messages: the daemons push back and senders wait on the dispatchers.
    let group = GroupName::new(format!("senders-flood-{}", std::process::id())).unwrap();
    let peers = join_every_node(&cluster, &group);
    let pushbacks = send_from_threads(&peers, 40, 256 << 10);
    check(&peers, 40);
    assert!(
        pushbacks > 0,
        "the flood never met back-pressure: the retry path was not exercised"
    );
    eprintln!("flood: {pushbacks} pushbacks waited out");
}
