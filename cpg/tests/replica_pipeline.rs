//! Pipelined writes on a real 3-node cluster (issue 23, item 9): one replica submits
//! thousands of operations without waiting for any, while another member writes and a
//! third joins (a view change, a round with a state transfer, operations queued during
//! it). Every member ends with the same history, each operation once, every member's
//! operations in submission order, and the pipelining origin's operations all there,
//! contiguous, each ticket resolved with a version that grows with its sequence number.

mod support;

use std::time::Duration;

use cpg::replica::{Event, ReplicaError};
use cpg::GroupName;
use cpg_testkit::Cluster;
use support::replica::*;
use support::{serial, WAIT};

/// Operations submitted before the join, and again after it.
const BATCH: u64 = 2_000;

#[test]
fn operations_pipelined_from_one_origin_through_a_view_change_apply_once_in_order() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-pipeline").unwrap();
    let a = Rep::start(cluster.node(0), "node1", &group);
    let b = Rep::start(cluster.node(1), "node2", &group);
    a.wait_ready(2);
    b.wait_ready(2);
    let wb = Writer::start(&b, "b", Duration::from_millis(2));

    // Node 1 submits without waiting; node 3 joins while they are in flight (the
    // replica hands 16 at a time to the group layer), then node 1 submits as many
    // again, during the round the join starts.
    let mut tickets = Vec::new();
    for n in 0..BATCH {
        tickets.push(a.replica.submit(format!("p:{n}")).unwrap());
    }
    let c = Rep::start(cluster.node(2), "node3", &group);
    for n in BATCH..2 * BATCH {
        tickets.push(a.replica.submit(format!("p:{n}")).unwrap());
    }
    let mut last = 0;
    for (i, t) in tickets.iter().enumerate() {
        assert_eq!(
            t.seq(),
            i as u64 + 1,
            "sequence numbers in submission order"
        );
        let version = t
            .wait(WAIT * 2)
            .unwrap_or_else(|e| panic!("operation {}: {e}", t.seq()))
            .version;
        assert!(
            version > last,
            "operation {} applied at version {version}, after {last}",
            t.seq()
        );
        last = version;
    }
    c.wait_ready(3);
    let outcomes_b = wb.finish();
    let confirmed_a: Vec<u64> = tickets.iter().map(|t| t.seq()).collect();
    let summary = assert_converged(
        "after the pipeline",
        &[&a, &b, &c],
        &[confirmed_a, confirmed(&outcomes_b), vec![]],
    );

    // Node 1's operations: all of them, contiguous in its history, in order.
    let me = a.member();
    let mine: Vec<u64> = a.replica.read(|s| {
        s.ops
            .iter()
            .filter(|(m, _, _)| *m == me)
            .map(|(_, q, _)| *q)
            .collect()
    });
    assert_eq!(mine, (1..=2 * BATCH).collect::<Vec<u64>>());
    // The stream crossed the view change: operations applied before and after it.
    let events = a.events();
    let view3 = events
        .iter()
        .position(|(_, e)| matches!(e, Event::View(v) if v.len() == 3))
        .expect("node 1 saw the view of three");
    let applied = |range: &[(std::time::Instant, Event)]| {
        range
            .iter()
            .filter(|(_, e)| matches!(e, Event::Applied { .. }))
            .count()
    };
    let (before, after) = (applied(&events[..view3]), applied(&events[view3..]));
    assert!(
        before > 0 && after > 0,
        "applied {before} before the join, {after} after"
    );
    assert_eq!(c.replica.stats().restores, 1, "node 3 restored once");
    println!(
        "pipeline: {} operations from node 1 ({before} applied before the join, {after} \
         after), {} from node 2; final {summary}",
        2 * BATCH,
        outcomes_b.len()
    );
}

/// Batches submitted by node 1.
const BATCHES: usize = 40;
/// Operations per batch.
const PER_BATCH: usize = 50;

/// `submit_many` on a real 2-node cluster: node 1 submits batches while node 2 submits
/// one operation at a time. Every member applies the same history; node 1's operations
/// are in it in submission order (consecutive sequence numbers, batch after batch);
/// each ticket resolves with its own outcome (its operation's place in the history,
/// versions strictly increasing). Once node 1's replica ended, a batch is refused
/// whole with `Closed` and nothing of it is applied anywhere.
#[test]
fn batches_from_one_member_apply_in_order_each_ticket_with_its_own_outcome() {
    let _serial = serial();
    let cluster = Cluster::start(2);
    let group = GroupName::new("replica-submit-many").unwrap();
    let a = Rep::start(cluster.node(0), "node1", &group);
    let b = Rep::start(cluster.node(1), "node2", &group);
    a.wait_ready(2);
    b.wait_ready(2);
    let wb = Writer::start(&b, "b", Duration::from_millis(1));

    let mut tickets = Vec::new();
    for k in 0..BATCHES {
        let batch = a
            .replica
            .submit_many((0..PER_BATCH).map(|n| format!("m:{k}:{n}")))
            .unwrap();
        assert_eq!(batch.len(), PER_BATCH);
        tickets.extend(batch);
        std::thread::sleep(Duration::from_millis(2));
    }
    let empty = a.replica.submit_many(Vec::<Vec<u8>>::new()).unwrap();
    assert!(empty.is_empty());

    let mut outcomes = Vec::new();
    let mut last = 0;
    for (i, t) in tickets.iter().enumerate() {
        assert_eq!(t.seq(), i as u64 + 1, "consecutive, in submission order");
        let outcome = t
            .wait(WAIT * 2)
            .unwrap_or_else(|e| panic!("operation {}: {e}", t.seq()));
        assert!(
            outcome.version > last,
            "operation {} applied at version {}, after {last}",
            t.seq(),
            outcome.version
        );
        last = outcome.version;
        outcomes.push(outcome);
    }
    let outcomes_b = wb.finish();
    let confirmed_a: Vec<u64> = tickets.iter().map(|t| t.seq()).collect();
    assert_converged(
        "after the batches",
        &[&a, &b],
        &[confirmed_a, confirmed(&outcomes_b)],
    );

    // Each ticket's output is its own operation's place in the history.
    let me = a.member();
    let history = a.replica.read(|s| s.ops.clone());
    for (i, outcome) in outcomes.iter().enumerate() {
        let (k, n) = (i / PER_BATCH, i % PER_BATCH);
        assert_eq!(
            history[outcome.output - 1],
            (me, i as u64 + 1, format!("m:{k}:{n}").into_bytes()),
            "ticket {}",
            i + 1
        );
    }
    let mine = |(m, _, _): &&(cpg::Member, u64, Vec<u8>)| *m == me;
    let first = history.iter().position(|o| mine(&o)).unwrap();
    let end = history.len() - history.iter().rev().position(|o| mine(&o)).unwrap();
    let between = history[first..end].iter().filter(|o| !mine(o)).count();
    println!(
        "submit_many: {} operations from node 1 in {BATCHES} batches, {} from node 2 \
         ({between} of them between node 1's first and last)",
        BATCHES * PER_BATCH,
        outcomes_b.len()
    );

    // The iterator is read before the replica's lock is taken: it may submit on this
    // replica itself, and that operation comes before the batch's.
    let mut inner = None;
    let nested = a
        .replica
        .submit_many((0..3).map(|n| {
            if n == 1 {
                inner = Some(a.replica.submit("nested:inner").unwrap());
            }
            format!("nested:{n}")
        }))
        .unwrap();
    let inner = inner.expect("the iterator ran");
    assert!(
        nested.iter().all(|t| t.seq() > inner.seq()),
        "{}",
        inner.seq()
    );
    assert!(nested.windows(2).all(|w| w[1].seq() == w[0].seq() + 1));
    let inner_version = inner.wait(WAIT * 2).unwrap().version;
    for t in &nested {
        assert!(t.wait(WAIT * 2).unwrap().version > inner_version);
    }

    // Node 1 leaves; once its replica ended (`wait_ready` returns at once then), a
    // batch is refused whole, and node 2 never applies any of it.
    a.replica.leave(WAIT).unwrap();
    let began = std::time::Instant::now();
    assert!(a.replica.wait_ready(WAIT * 2, |_| false).is_none());
    assert!(began.elapsed() < WAIT * 2, "node 1's replica did not end");
    let applied = a.replica.read(|s| s.ops.len());
    let refused = a
        .replica
        .submit_many((0..PER_BATCH).map(|n| format!("late:{n}")));
    assert_eq!(refused.map(|t| t.len()), Err(ReplicaError::Closed));
    assert_eq!(a.replica.read(|s| s.ops.len()), applied);
    b.wait_ready(1);
    let late = b
        .replica
        .read_ordered(WAIT * 2, |s| {
            s.ops
                .iter()
                .filter(|(_, _, op)| op.starts_with(b"late:"))
                .count()
        })
        .unwrap();
    assert_eq!(late, 0, "node 2 applied operations of the refused batch");
}
