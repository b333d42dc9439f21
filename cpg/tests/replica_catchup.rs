//! Catch-up on a real 3-node cluster: a replica that starts late receives the state
//! while the others keep writing, and a joiner whose source dies in the middle of a
//! large transfer still gets the state, from the member that is left. After each,
//! every replica holds the same history, each operation once, in agreed order, and
//! every confirmed operation is in it.

mod support;

use std::time::{Duration, Instant};

use cpg::replica::Event;
use cpg::GroupName;
use cpg_testkit::Cluster;
use support::replica::*;
use support::{serial, WAIT};

#[test]
fn a_late_joiner_catches_up_under_write_load() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-catchup").unwrap();
    let a = Rep::start(cluster.node(0), "node1", &group);
    let b = Rep::start(cluster.node(1), "node2", &group);
    a.wait_ready(2);
    b.wait_ready(2);
    // A state of a few chunks, then writes on both members.
    let size = 4_000_000;
    a.replica
        .submit(format!("pad {size}"))
        .unwrap()
        .wait(WAIT * 2)
        .unwrap();
    let wa = Writer::start(&a, "a", Duration::from_millis(2));
    let wb = Writer::start(&b, "b", Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let c = Rep::start(cluster.node(2), "node3", &group);
    let joined = Instant::now();
    let ready = c.wait_ready(3);
    let wc = Writer::start(&c, "c", Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(1));
    let outcomes = [wa.finish(), wb.finish(), wc.finish()];
    for (i, o) in outcomes.iter().enumerate() {
        assert!(
            o.iter().all(|(_, r)| r.is_ok()),
            "writer {i}: every operation applied without a fault: {:?}",
            o.iter().find(|(_, r)| r.is_err())
        );
    }
    let confirmed: Vec<Vec<u64>> = outcomes.iter().map(|o| confirmed(o)).collect();
    let summary = assert_converged("after the catch-up", &[&a, &b, &c], &confirmed);
    let stats = c.replica.stats();
    assert!(stats.restores >= 1, "the joiner restored a state");
    assert!(stats.bytes_received >= size as u64);
    assert!(a.discarded().is_empty() && b.discarded().is_empty() && c.discarded().is_empty());
    println!(
        "catch-up: joined in {:?}, in sync {:?} after joining ({} bytes, {} writes \
         meanwhile); final {summary}, {} operations",
        joined - started,
        ready - joined,
        stats.bytes_received,
        confirmed[0].len() + confirmed[1].len(),
        summary.version
    );
}

#[test]
fn the_source_dying_during_a_large_transfer_does_not_strand_the_joiner() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-kill-source").unwrap();
    let a = Rep::start(cluster.node(0), "node1", &group);
    let b = Rep::start(cluster.node(1), "node2", &group);
    a.wait_ready(2);
    b.wait_ready(2);
    let size = 32_000_000;
    a.replica
        .submit(format!("pad {size}"))
        .unwrap()
        .wait(WAIT * 2)
        .unwrap();
    b.wait_ready(2);
    // Node 1's replica, the lowest member with the highest version, is the source.
    let c = Rep::start(cluster.node(2), "node3", &group);
    let deadline = Instant::now() + WAIT * 2;
    while c.replica.view().is_none_or(|v| v.len() < 3) {
        assert!(Instant::now() < deadline, "node3 never saw all three");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Instant::now();
    cluster.kill_daemon(0);
    let mid_transfer = c.replica.stats().restores == 0;
    b.wait_ready(2);
    let ready = c.wait_ready(2);
    assert_converged("after the source died", &[&b, &c], &[vec![], vec![]]);
    let stats = c.replica.stats();
    assert_eq!(stats.restores, 1, "the joiner restored once");
    assert!(stats.bytes_received >= size as u64);
    let source = c.wait_event("a round with a transfer", |e| match e {
        Event::Synced {
            source,
            transferred: true,
            ..
        } => Some(*source),
        _ => None,
    });
    assert_eq!(source, b.member(), "the state came from node 2 in the end");
    // The transfer from node 2: from the view without node 1 to the restore.
    let events = c.events();
    let view_at = events
        .iter()
        .rev()
        .find_map(|(t, e)| matches!(e, Event::View(v) if v.len() == 2).then_some(*t))
        .expect("the view of two");
    c.wait_event("the restore", |e| {
        matches!(e, Event::Restored { .. }).then_some(())
    });
    let restored_at = c
        .events()
        .iter()
        .find_map(|(t, e)| matches!(e, Event::Restored { .. }).then_some(*t))
        .expect("recorded");
    let took = restored_at.saturating_duration_since(view_at);
    println!(
        "kill source: killed {} the transfer, joiner in sync {:?} after the kill; round \
         with a {} byte state took {took:?} ({:.1} MB/s)",
        if mid_transfer { "during" } else { "after" },
        ready - killed,
        stats.bytes_received,
        stats.bytes_received as f64 / took.as_secs_f64() / 1e6
    );

    // Node 1 comes back and converges too.
    cluster.restart_daemon(0);
    assert_converged(
        "after node 1 came back",
        &[&a, &b, &c],
        &[vec![], vec![], vec![]],
    );
}
