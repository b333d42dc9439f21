//! The ordered send queue under a flood on a real 3-node cluster: node 1's member
//! queues large messages far faster than the cluster takes them. `send` never blocks:
//! it refuses at the queue's bound with `QueueFull`; the dispatch thread meets
//! back-pressure (`CS_ERR_TRY_AGAIN`) and waits it out without stopping delivery; and
//! every member receives every message exactly once, in the order queued, while the
//! other members' small messages keep flowing; the confirmed sends among them resolve
//! at positions in the order they were queued.

mod support;

use std::time::{Duration, Instant};

use cpg::group::{Config, GroupError};
use cpg::GroupName;
use cpg_testkit::Cluster;
use support::group::*;
use support::WAIT;

const COUNT: u64 = 300;
const LIMIT: usize = 32;

/// 256 KiB to 1 MB: a few fill the daemon's send queue (as in `cluster_flood`).
fn pad(seq: u64) -> usize {
    let min = 256 << 10;
    min + (seq as usize * 104_729) % ((1 << 20) - 64 - min)
}

#[test]
fn a_flood_drains_in_order_through_back_pressure_without_blocking_send() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("group-queue").unwrap();
    let mut config = Config::default();
    config.queue_limit = LIMIT;
    let (peers, _) = start_all(&cluster, &group, &config);

    let began = Instant::now();
    let mut full = 0u64;
    let mut send_times = Vec::new();
    let mut receipts = Vec::new();
    // Payloads are made in batches ahead, so that queueing is as fast as it can be.
    for batch in (0..COUNT).collect::<Vec<_>>().chunks(2 * LIMIT) {
        let ready: Vec<(u64, Vec<u8>)> =
            batch.iter().map(|&q| (q, payload(1, q, pad(q)))).collect();
        for (seq, data) in ready {
            loop {
                let copy = data.clone();
                let t = Instant::now();
                // Every 7th is a confirmed send: its confirmation must come in order too.
                let r = if seq % 7 == 0 {
                    peers[0]
                        .group()
                        .send_confirmed(copy)
                        .map(|receipt| receipts.push((seq, receipt)))
                } else {
                    peers[0].group().send(copy).map(drop)
                };
                send_times.push(t.elapsed());
                match r {
                    Ok(()) => break,
                    Err(GroupError::QueueFull { limit }) => {
                        assert_eq!(limit, LIMIT);
                        full += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("send {seq}: {e}"),
                }
            }
            // The others chat meanwhile.
            if seq % 50 == 0 {
                peers[1].group().send(payload(2, seq, 0)).unwrap();
            }
        }
    }
    for p in &peers {
        p.log().wait_message(1, COUNT - 1);
    }
    let elapsed = began.elapsed();
    let stats = peers[0].group().stats();
    assert!(full > 0, "the bound of {LIMIT} was never reached");
    assert!(stats.pushbacks > 0, "no back-pressure met: {stats:?}");
    assert_eq!((stats.sent, stats.queued, stats.not_sent), (COUNT, 0, 0));
    // Queueing takes a lock and a copy-free move; waiting for the cluster would take
    // hundreds of milliseconds per message under this flood, which the median shows.
    // The slowest send has room for scheduling: under this flood three daemons at
    // real-time priority (SCHED_RR) can keep a normal thread off the 2 cores for most
    // of a second (the kernel's real-time throttling leaves others 5% of each second),
    // and other engineers' benchmarks share what is left.
    send_times.sort();
    let (median, slowest) = (
        send_times[send_times.len() / 2],
        *send_times.last().unwrap(),
    );
    assert!(
        median < Duration::from_millis(20),
        "send took {median:?} (median): it waits for the cluster"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "send blocked for {slowest:?}"
    );
    let mut streams = Vec::new();
    for p in &peers {
        let msgs = messages(&p.log().events());
        let from1: Vec<u64> = msgs.iter().filter(|m| m.0 == 1).map(|m| m.1).collect();
        assert_eq!(
            from1,
            (0..COUNT).collect::<Vec<_>>(),
            "{}: node 1's flood",
            p.name()
        );
        assert!(msgs.iter().any(|m| m.0 == 2), "{}: node 2's chat", p.name());
        streams.push(msgs);
    }
    assert_eq!(streams[0], streams[1]);
    assert_eq!(streams[0], streams[2]);
    // The confirmed ones resolved, once each, at positions in the order they were sent.
    let confirmed = receipts.len();
    let positions: Vec<(u64, cpg::group::Position)> = receipts
        .into_iter()
        .map(|(seq, mut receipt)| {
            let p = receipt
                .wait_timeout(WAIT)
                .unwrap_or_else(|e| panic!("confirmation of {seq}: {e}"));
            (seq, p)
        })
        .collect();
    for w in positions.windows(2) {
        assert!(
            (w[0].1.view, w[0].1.index) < (w[1].1.view, w[1].1.index),
            "confirmed out of order: {w:?}"
        );
    }
    let after = peers[0].group().stats();
    assert_eq!(after.confirmed, confirmed as u64, "{after:?}");
    eprintln!(
        "queue: {COUNT} messages of 256 KiB-1 MB in {elapsed:.2?}; send refused {full}x at \
         the bound of {LIMIT}; send took {median:?} (median), {slowest:?} (max); the driver met \
         {} pushbacks; all 3 members got everything once, in order",
        stats.pushbacks
    );
}
