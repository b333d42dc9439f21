//! What a service built on `cpg::replica` relies on (issue 23, items 1 to 5), on a
//! real 3-node cluster: every member learns each view at the same version of the
//! history through a daemon kill and a partition; every ticket's output is the one
//! the common history computed, on the blocking and the tokio drivers; a read after a
//! barrier sees a write acknowledged on another member (a plain read may not); the
//! application's merge hint decides a partition heal; a member that asks for them is
//! told of every other member's write.
#![cfg(feature = "tokio")]

mod support;

use std::sync::mpsc;
use std::time::Duration;

use cpg::replica::{AsyncReplica, Event, Outcome, Replica};
use cpg::Member;
use cpg_testkit::Cluster;
use support::replica::*;
use support::{serial, unique_group, WAIT};

fn start3(cluster: &Cluster, tag: &str) -> Vec<Rep> {
    let group = unique_group(tag);
    let reps: Vec<Rep> = (0..3)
        .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
        .collect();
    for r in &reps {
        r.wait_ready(3);
    }
    reps
}

/// Item 1 and 2 with the blocking driver: writers on every node while node 3's daemon
/// is killed and restarted and then node 3 is partitioned and healed. Every round's
/// view change was applied at one version with one member list by every member that
/// applied it (nodes 1 and 2 without node 3 after the kill, at the same round); the
/// states end equal, views included; every confirmed operation's output is its place
/// in the common history.
#[test]
fn views_and_outputs_agree_through_a_kill_and_a_partition() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let reps = start3(&cluster, "service-views");
    let members: Vec<Member> = reps.iter().map(Rep::member).collect();
    let writers: Vec<Writer> = reps
        .iter()
        .enumerate()
        .map(|(i, r)| Writer::start(r, &i.to_string(), Duration::from_millis(5)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    cluster.kill_daemon(2);
    let pair = members[..2].to_vec();
    let after_kill: Vec<_> = reps[..2]
        .iter()
        .map(|r| {
            r.wait_event("the view without node 3 applied", |e| match e {
                Event::ViewApplied {
                    round,
                    members,
                    version,
                } if *members == pair => Some((*round, *version)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(after_kill[0], after_kill[1], "one round, one version");
    cluster.restart_daemon(2);
    std::thread::sleep(Duration::from_secs(2));

    cluster.partition(2);
    reps[0].wait_ready(2);
    reps[2].wait_ready(1);
    std::thread::sleep(Duration::from_secs(1));
    cluster.heal(2);
    std::thread::sleep(Duration::from_secs(1));

    let outcomes: Vec<Outcomes> = writers.into_iter().map(Writer::finish).collect();
    let confirmed: Vec<Vec<u64>> = outcomes.iter().map(|o| confirmed(o)).collect();
    let all: Vec<&Rep> = reps.iter().collect();
    assert_converged("after the heal", &all, &confirmed);
    let views: Vec<Vec<(u64, Vec<Member>)>> = reps
        .iter()
        .map(|r| r.replica.read(|s| s.views.clone()))
        .collect();
    assert!(views.iter().all(|v| *v == views[0]), "{views:?}");
    assert_eq!(views[0].last().map(|v| &v.1), Some(&members));
    let shared = assert_views_agree("kill and partition", &all);
    let checked = assert_outputs(
        "kill and partition",
        &all,
        &outcomes.iter().collect::<Vec<_>>(),
    );
    println!(
        "views: {} in the common history, {shared} rounds applied by several members \
         alike; {checked} outputs checked",
        views[0].len()
    );
    assert!(shared >= 2, "{shared}");
    assert!(checked > 100, "{checked}");
}

/// What the async member on node 3 is asked to do.
enum Ask {
    /// Read after a barrier: is this operation in the state?
    Holds(Member, u64, mpsc::Sender<bool>),
    /// Submit operations and report each outcome.
    Write(usize, mpsc::Sender<Vec<(u64, Outcome<usize>)>>),
}

async fn async_member(
    group: cpg::GroupName,
    ready: mpsc::Sender<Member>,
    mut asks: tokio::sync::mpsc::UnboundedReceiver<Ask>,
) {
    let r: AsyncReplica<OpLog> = Replica::builder(group, OpLog::default())
        .config(config())
        .start_async()
        .await
        .expect("start_async");
    let v = tokio::time::timeout(WAIT * 2, r.wait_ready(|v| v.len() == 3))
        .await
        .expect("ready in a view of 3")
        .unwrap();
    ready.send(v.me().unwrap()).unwrap();
    loop {
        tokio::select! {
            e = r.next_event() => { if e.is_none() { break } }
            ask = asks.recv() => match ask {
                None => break,
                Some(Ask::Holds(origin, seq, answer)) => {
                    let holds = tokio::time::timeout(
                        WAIT,
                        r.read_ordered(|s| s.ops.iter().any(|(m, q, _)| *m == origin && *q == seq)),
                    )
                    .await
                    .expect("the barrier passes")
                    .expect("a barrier");
                    answer.send(holds).unwrap();
                }
                Some(Ask::Write(n, answer)) => {
                    let mut out = Vec::new();
                    for k in 0..n {
                        let t = r.submit(format!("async:{k}")).unwrap();
                        let done = tokio::time::timeout(WAIT, t.wait())
                            .await
                            .expect("applied within WAIT")
                            .expect("applied");
                        out.push((t.seq(), done));
                    }
                    answer.send(out).unwrap();
                }
            }
        }
    }
}

/// Item 3 (and 2 and 5): after a write is acknowledged on one member, a read after a
/// barrier on another sees it, every time, on the blocking and the tokio drivers
/// (the bug of issue 23: node 2 answered from its copy after node 1's UNLOCK was
/// acknowledged; the plain read's misses are printed). The async member's outputs are
/// their places in the common history. The member that asked for changes was told of
/// every operation, the others' included, in order; the others of none.
#[test]
fn a_barrier_read_sees_writes_acknowledged_on_other_members() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = unique_group("service-barrier");
    let a = Rep::start(cluster.node(0), "node1", &group);
    let mut changes_config = config();
    changes_config.report_changes = true;
    let b = Rep::start_with(cluster.node(1), "node2", &group, changes_config);
    let (ready_tx, ready) = mpsc::channel();
    let (asks, asks_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::scope(|s| {
        let node3 = cluster.node(2);
        s.spawn(move || {
            node3.enter(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async_member(group, ready_tx, asks_rx))
            })
        });
        let c = ready
            .recv_timeout(WAIT * 2)
            .expect("the async member ready");
        a.wait_ready(3);
        b.wait_ready(3);
        const ROUNDS: usize = 200;
        let mut missed = 0;
        for i in 0..ROUNDS {
            let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let t = w.replica.submit(format!("x{i}")).unwrap();
            t.wait(WAIT).unwrap();
            let key = (w.member(), t.seq());
            let holds = |s: &OpLog| s.ops.iter().any(|(m, q, _)| (*m, *q) == key);
            if !r.replica.read(holds) {
                missed += 1;
            }
            assert!(
                r.replica.read_ordered(WAIT, holds).unwrap(),
                "{}: round {i}: {key:?} acknowledged on {}, not seen after a barrier",
                r.name,
                w.name
            );
            if i % 10 == 0 {
                let (tx, rx) = mpsc::channel();
                asks.send(Ask::Holds(key.0, key.1, tx)).unwrap();
                assert!(rx.recv_timeout(WAIT * 2).unwrap(), "async, round {i}");
            }
        }
        println!(
            "a plain read on the other member missed {missed} of {ROUNDS} writes \
             acknowledged just before; reads after a barrier missed none"
        );
        let (tx, rx) = mpsc::channel();
        asks.send(Ask::Write(50, tx)).unwrap();
        let async_out = rx.recv_timeout(WAIT * 4).expect("the async writes");
        let history = assert_converged_in("after the writes", 3, &[&a, &b], &[vec![], vec![]]);
        let ops: Vec<(Member, u64)> = a
            .replica
            .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
        for (seq, done) in &async_out {
            assert_eq!(ops.get(done.output - 1), Some(&(c, *seq)), "async op {seq}");
            assert_eq!(done.version, done.output as u64);
        }
        // Changes: every operation in b's history, once, in order, with its version.
        let want: Vec<(Member, u64, u64)> =
            ops.iter().zip(1..).map(|(o, v)| (o.0, o.1, v)).collect();
        let changes = |r: &Rep| -> Vec<(Member, u64, u64)> {
            r.events()
                .into_iter()
                .filter_map(|(_, e)| match e {
                    Event::Changed {
                        origin,
                        seq,
                        version,
                    } => Some((origin, seq, version)),
                    _ => None,
                })
                .collect()
        };
        let deadline = std::time::Instant::now() + WAIT;
        while changes(&b).len() < want.len() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(changes(&b), want, "node 2's changes (state {history})");
        assert!(changes(&a).is_empty(), "node 1 did not ask for changes");
        assert!(a.replica.stats().marks_sent > 0);
        drop(asks);
    });
}

/// Item 4: after a partition heals, the side whose state has the higher merge hint
/// wins, though the other side's history is longer; its writes are reported
/// discarded to the majority's members, and every member ends with the winner's
/// history and learns the merged view.
#[test]
fn the_merge_hint_decides_a_partition_heal() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let reps = start3(&cluster, "service-hint");
    reps[0]
        .replica
        .submit("common")
        .unwrap()
        .wait(WAIT)
        .unwrap();
    cluster.partition(2);
    reps[0].wait_ready(2);
    reps[1].wait_ready(2);
    reps[2].wait_ready(1);
    let mut majority = Vec::new();
    for k in 0..10 {
        let t = reps[k % 2].replica.submit(format!("majority {k}")).unwrap();
        majority.push((k % 2, t.seq(), t.wait(WAIT).unwrap()));
    }
    reps[2]
        .replica
        .submit("hint 5")
        .unwrap()
        .wait(WAIT)
        .unwrap();
    let minority: Vec<(Member, u64)> = reps[2]
        .replica
        .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
    assert!(minority.len() < reps[0].replica.summary().version as usize);
    cluster.heal(2);
    let all: Vec<&Rep> = reps.iter().collect();
    let summary = assert_converged("after the heal", &all, &[vec![], vec![], vec![]]);
    assert_eq!(summary.hint, 5);
    let history: Vec<(Member, u64)> = reps[0]
        .replica
        .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
    assert_eq!(
        history, minority,
        "the minority's history, with the higher hint"
    );
    // The events are recorded a moment after the replica produces them: the
    // majority's members report the restore that discarded their writes.
    for r in &reps[..2] {
        r.wait_event("the restore that discarded its writes", |e| match e {
            Event::Restored { discarded, .. } if !discarded.is_empty() => Some(()),
            _ => None,
        });
    }
    for (i, seq, _) in &majority {
        assert!(
            reps[*i].discarded().contains(seq),
            "{}: op {seq} not reported discarded",
            reps[*i].name
        );
    }
    assert!(reps[2].discarded().is_empty());
    let members: Vec<Member> = reps.iter().map(Rep::member).collect();
    for r in &reps {
        let views = r.replica.read(|s| s.views.clone());
        assert_eq!(views.last().map(|v| &v.1), Some(&members), "{}", r.name);
        assert!(
            views.iter().any(|v| v.1 == members[2..]),
            "{}: the minority's view of its own: {views:?}",
            r.name
        );
    }
}
