//! Batching in the group layer's send queue, on a real 3-node cluster: bursts sent
//! faster than the daemons deliver are packed into batches, and every member still
//! delivers each message alone, in one agreed order, at consecutive positions, with a
//! confirmed receipt for each that names the position every member gave it. A member
//! with batching off reads the others' batches and agrees with them.

mod support;

use std::collections::HashMap;

use cpg::group::{Config, Event, Position, QuorumPolicy, Receipt};
use cpg::GroupName;
use cpg_testkit::Cluster;
use support::group::*;
use support::WAIT;

/// Messages each member sends in its burst.
const BURST: u64 = 1500;

/// The layer's defaults (batching on), without quorum markers: every position of the
/// view is then an application message of the test, so the positions of the
/// messages must be exactly 0, 1, 2, ... at every member.
fn config() -> Config {
    let mut config = Config::default();
    config.queue_limit = 2 * BURST as usize;
    config.quorum = QuorumPolicy::Ignore;
    config
}

/// Every member in `senders` queues its burst of confirmed messages at once (sizes
/// varied from 0 to 400 bytes of padding, so batches end on the byte limit and on an
/// empty queue alike), from threads of their own; returns each sender's receipts'
/// positions, in send order.
fn bursts(peers: &[Participant], senders: &[usize]) -> Vec<Vec<Position>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = senders
            .iter()
            .map(|&i| {
                let p = &peers[i];
                s.spawn(move || {
                    let receipts: Vec<Receipt> = (0..BURST)
                        .map(|seq| {
                            let pad = (seq * 37 % 401) as usize;
                            p.group()
                                .send_confirmed(payload(i as u32 + 1, seq, pad))
                                .unwrap_or_else(|e| panic!("{}: send {seq}: {e}", p.name()))
                        })
                        .collect();
                    receipts
                        .into_iter()
                        .enumerate()
                        .map(|(seq, mut r)| {
                            r.wait_timeout(WAIT)
                                .unwrap_or_else(|e| panic!("{}: receipt {seq}: {e}", p.name()))
                        })
                        .collect::<Vec<Position>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// What one member delivered of the test's messages: ((sender, seq), position), in
/// delivery order.
fn delivered(p: &Participant, mark: usize, expected: u64) -> Vec<((u32, u64), Position)> {
    p.log()
        .wait_for("every message of the bursts", WAIT, |events| {
            let got: Vec<_> = events[mark..]
                .iter()
                .filter_map(|e| match e {
                    Event::Message(d) => Some((decode(&d.data), d.position)),
                    _ => None,
                })
                .collect();
            (got.len() as u64 >= expected).then_some(got)
        })
}

/// The checks both tests make once `senders` have sent their bursts and all the
/// receipts resolved: same order everywhere, consecutive positions, each sender's
/// messages in its order, each receipt's position the one every member gave it.
fn check_agreement(
    peers: &[Participant],
    marks: &[usize],
    senders: &[usize],
    receipts: &[Vec<Position>],
) {
    let expected = BURST * senders.len() as u64;
    let streams: Vec<Vec<((u32, u64), Position)>> = peers
        .iter()
        .zip(marks)
        .map(|(p, &m)| delivered(p, m, expected))
        .collect();
    for (p, stream) in peers.iter().zip(&streams) {
        assert_eq!(stream.len() as u64, expected, "{}: messages", p.name());
        // One position each, consecutive: the view holds only the test's messages.
        let indexes: Vec<u64> = stream.iter().map(|(_, pos)| pos.index).collect();
        let first = indexes[0];
        assert_eq!(
            indexes,
            (first..first + expected).collect::<Vec<_>>(),
            "{}: positions not consecutive",
            p.name()
        );
        assert!(
            stream.windows(2).all(|w| w[1].1.total == w[0].1.total + 1),
            "{}: totals not consecutive",
            p.name()
        );
        // Each sender's messages, each once, in the order sent.
        for &i in senders {
            let sender = i as u32 + 1;
            let seqs: Vec<u64> = stream
                .iter()
                .filter(|((s, _), _)| *s == sender)
                .map(|((_, seq), _)| *seq)
                .collect();
            assert_eq!(
                seqs,
                (0..BURST).collect::<Vec<_>>(),
                "{}: from {sender}",
                p.name()
            );
        }
    }
    // The same messages at the same positions everywhere.
    let order = |s: &Vec<((u32, u64), Position)>| -> Vec<((u32, u64), u64)> {
        s.iter().map(|(m, pos)| (*m, pos.index)).collect()
    };
    for (p, s) in peers.iter().zip(&streams).skip(1) {
        assert!(
            order(s) == order(&streams[0]),
            "{} and {} delivered differently",
            p.name(),
            peers[0].name()
        );
    }
    // Each receipt names the index every member gave the message (view ids are each
    // member's own count of its views; the index within the view is agreed).
    let at: HashMap<(u32, u64), Position> = streams[0].iter().copied().collect();
    for (&i, positions) in senders.iter().zip(receipts) {
        assert_eq!(positions.len() as u64, BURST);
        for (seq, pos) in positions.iter().enumerate() {
            let key = (i as u32 + 1, seq as u64);
            assert_eq!(
                at.get(&key).map(|p| p.index),
                Some(pos.index),
                "receipt of {key:?}"
            );
        }
        // The sender's own delivery is its receipt, at its own total.
        let own: Vec<Position> = streams[i]
            .iter()
            .filter(|((s, _), _)| *s == i as u32 + 1)
            .map(|(_, pos)| *pos)
            .collect();
        assert_eq!(&own, positions, "{}: receipts", peers[i].name());
    }
}

#[test]
fn a_burst_is_batched_and_every_member_delivers_each_message_alone_in_one_order() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("group-batch").unwrap();
    let (peers, _all) = start_all(&cluster, &group, &config());
    let marks: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();
    let before: Vec<_> = peers.iter().map(|p| p.group().stats()).collect();

    let senders = [0, 1, 2];
    let receipts = bursts(&peers, &senders);
    check_agreement(&peers, &marks, &senders, &receipts);

    for (p, b) in peers.iter().zip(&before) {
        let s = p.group().stats();
        // The bursts were packed: far fewer CPG messages than application messages,
        // read back as batches by every member.
        assert_eq!(s.sent - b.sent, BURST, "{}: sent", p.name());
        assert!(
            s.batches_sent > b.batches_sent,
            "{}: a burst of {BURST} went out without a batch ({s:?})",
            p.name()
        );
        assert!(
            s.batches_delivered - b.batches_delivered >= 3,
            "{}: batches delivered ({s:?})",
            p.name()
        );
        assert_eq!(
            s.delivered - b.delivered,
            3 * BURST,
            "{}: delivered",
            p.name()
        );
        assert_eq!(s.confirmed - b.confirmed, BURST, "{}: confirmed", p.name());
        assert_eq!((s.malformed, s.not_sent), (0, 0), "{}", p.name());
    }
}

#[test]
fn a_member_with_batching_off_reads_the_batches_of_the_others_and_agrees() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("group-batch-mixed").unwrap();
    let mut peers = start_on(&cluster, 0..2, &group, &config());
    let mut off = config();
    off.batch_bytes = 0;
    peers.push(Participant::start(cluster.node(2), "node3", &group, off));
    let all: Vec<_> = peers.iter().map(Participant::member).collect();
    for p in &peers {
        p.log().wait_view(&all);
    }
    let marks: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();

    let senders = [0, 1, 2];
    let receipts = bursts(&peers, &senders);
    check_agreement(&peers, &marks, &senders, &receipts);

    let stats: Vec<_> = peers.iter().map(|p| p.group().stats()).collect();
    assert_eq!(stats[2].batches_sent, 0, "node3 has batching off");
    for (p, s) in peers.iter().zip(&stats).take(2) {
        assert!(s.batches_sent > 0, "{}: no batch sent ({s:?})", p.name());
    }
    for (p, s) in peers.iter().zip(&stats) {
        assert!(
            s.batches_delivered > 0,
            "{}: no batch read ({s:?})",
            p.name()
        );
        assert_eq!(s.malformed, 0, "{}", p.name());
    }
}
