//! Agreed order on a real 3-node cluster: one sending member per node, all three
//! sending at once (thousands of messages of mixed sizes, a few above the atomic
//! message size so that libcpg fragments them), and one receive-only member per node
//! in a separate process. Every member must deliver the same sequence, each sender's
//! messages in send order, none missing, none duplicated, every byte intact.

mod support;

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg::retry::retry;
use cpg::{GroupName, Member};
use cpg_testkit::{client_role, Client, Cluster};
use support::cluster::{assert_fifo_complete, assert_intact, assert_same_stream, digest, messages};
use support::event::{recording_handle, Event, Keep};
use support::log::Log;
use support::message::HEADER;
use support::peer::{backoff, Peer, Stream};
use support::{big_stack, WAIT};

const GROUP: &str = "cluster-order";
/// This test's name, for re-running it as a receiver process.
const TEST: &str = "three_senders_agreed_order_fifo_no_loss_no_duplicates";
/// A receiver process gives up after this long.
const RECEIVER_LIFETIME: Duration = Duration::from_secs(180);

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
    if client_role().is_some() {
        return receiver();
    }
    let cluster = Cluster::start(3);
    let group = GroupName::new(GROUP).unwrap();
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer::threaded(cluster.node(i), &format!("node{}", i + 1), &group))
        .collect();
    let mut receivers: Vec<Client> = (0..3)
        .map(|i| Client::spawn_test(cluster.node(i), TEST, "receiver").unwrap())
        .collect();
    let mut all: Vec<Member> = peers.iter().map(Peer::member).collect();
    for (i, r) in receivers.iter_mut().enumerate() {
        let line = r.expect_line("CLIENT ready ", WAIT).unwrap();
        let m = Member {
            nodeid: cluster.node(i).nodeid(),
            pid: r.pid(),
        };
        assert_eq!(line, format!("CLIENT ready {} {}", m.nodeid, m.pid));
        all.push(m);
    }
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
            if let Event::TestMsg { sender, from, .. } = e {
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
    // The receive-only processes report what they delivered: count, digest of the
    // sequence, corrupt messages.
    let expect = format!(
        "CLIENT done {} {:016x} 0",
        streams[0].len(),
        digest(&streams[0])
    );
    for (i, r) in receivers.iter_mut().enumerate() {
        let line = r.expect_line("CLIENT done ", WAIT * 2).unwrap();
        assert_eq!(
            line,
            expect,
            "receiver process on node {} (count, digest, corrupt) differs from node1's \
             sequence",
            i + 1
        );
        r.close_stdin();
        let status = r.wait(WAIT).expect("receiver exits at EOF");
        assert!(
            status.success(),
            "receiver on node {} failed: {status}",
            i + 1
        );
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
        "agreed order: {} members (3 sending, 3 receive-only processes) each delivered the \
         same {} messages ({} per sender, {} \
         above the {max}-byte atomic size), {:.1} MB in {elapsed:.2?} ({:.0} msg/s); \
         first-attempt TRY_AGAIN per sender: {try_again:?}",
        all.len(),
        streams[0].len(),
        PER_SENDER,
        fragmented,
        bytes as f64 / 1e6,
        streams[0].len() as f64 / elapsed.as_secs_f64(),
    );
}

/// The receive-only member (this binary re-run on a node): joins, prints
/// `CLIENT ready NODEID PID`, delivers until it has every sender's last message, then
/// prints `CLIENT done COUNT DIGEST CORRUPT` and exits once its stdin closes.
fn receiver() {
    big_stack(receive);
}

fn receive() {
    let eof = Arc::new(AtomicBool::new(false));
    let eof2 = eof.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        eof2.store(true, Ordering::SeqCst);
    });
    let log = Log::new("receiver");
    let handle = recording_handle(&log, Keep::Checked, false).expect("receiver: connect");
    let group = GroupName::new(GROUP).unwrap();
    retry(&backoff(), || handle.join(&group)).expect("receiver: join");
    let nodeid = handle.local_node_id().unwrap();
    println!("CLIENT ready {nodeid} {}", std::process::id());
    let deadline = Instant::now() + RECEIVER_LIFETIME;
    let complete = |ev: &[Event]| {
        (1..=3).all(|s| {
            ev.iter()
                .rev()
                .any(|e| e.test_msg() == Some((s, PER_SENDER - 1)))
        })
    };
    while !log.with(complete) {
        assert!(!eof.load(Ordering::SeqCst), "receiver: the test went away");
        assert!(Instant::now() < deadline, "receiver: not complete in time");
        handle
            .dispatch_timeout(Duration::from_millis(20))
            .expect("receiver: dispatch");
    }
    let msgs = log.with(messages);
    let corrupt = log.with(|ev| {
        ev.iter()
            .filter(|e| matches!(e, Event::Corrupt { .. }))
            .count()
    });
    println!(
        "CLIENT done {} {:016x} {corrupt}",
        msgs.len(),
        digest(&msgs)
    );
    while !eof.load(Ordering::SeqCst) && Instant::now() < deadline {
        handle
            .dispatch_timeout(Duration::from_millis(20))
            .expect("receiver: dispatch");
    }
}
