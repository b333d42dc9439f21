//! The tokio driver ([`AsyncReplica`]) on a real 3-node cluster, beside blocking
//! replicas on nodes 2 and 3: it catches up, its operations are applied once each in
//! the agreed order everywhere, and after its daemon is killed and restarted (while
//! the others keep writing) it converges on the same history.
#![cfg(feature = "tokio")]

mod support;

use std::sync::mpsc;
use std::time::Duration;

use cpg::replica::{AsyncReplica, Replica, Summary};
use cpg::{GroupName, Member};
use cpg_testkit::Cluster;
use support::replica::*;
use support::{serial, WAIT};

type History = Vec<(Member, u64)>;

async fn async_member(
    group: GroupName,
    steps: mpsc::Sender<(Vec<u64>, Member)>,
    mut report: tokio::sync::mpsc::UnboundedReceiver<mpsc::Sender<(Summary, History)>>,
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
    let mut confirmed = Vec::new();
    for n in 0..200 {
        let t = r.submit(format!("async:{n}")).unwrap();
        tokio::time::timeout(WAIT * 2, t.wait())
            .await
            .expect("applied within WAIT")
            .expect("applied");
        confirmed.push(t.seq());
    }
    steps.send((confirmed, v.me().unwrap())).unwrap();
    // Events are read meanwhile so that the queue stays small.
    loop {
        tokio::select! {
            e = r.next_event() => { if e.is_none() { break } }
            answer = report.recv() => {
                let Some(answer) = answer else { break };
                tokio::time::timeout(WAIT * 2, r.wait_ready(|v| v.len() == 3)).await.expect("ready");
                let history = r.read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
                answer.send((r.summary(), history)).unwrap();
            }
        }
    }
}

#[test]
fn an_async_replica_converges_with_blocking_ones_through_a_daemon_restart() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-tokio").unwrap();
    let b = Rep::start(cluster.node(1), "node2", &group);
    let c = Rep::start(cluster.node(2), "node3", &group);
    b.replica
        .submit("pad 1000000")
        .unwrap()
        .wait(WAIT * 2)
        .unwrap();
    let (steps_tx, steps) = mpsc::channel();
    let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::scope(|s| {
        let node1 = cluster.node(0);
        s.spawn(move || {
            node1.enter(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async_member(group, steps_tx, report_rx))
            })
        });
        let (mine, me) = steps.recv_timeout(WAIT * 4).expect("async writes done");
        let wb = Writer::start(&b, "b", Duration::from_millis(5));
        cluster.kill_daemon(0);
        cluster.restart_daemon(0);
        std::thread::sleep(Duration::from_secs(2));
        let outcomes_b = wb.finish();
        let summary = assert_converged_in(
            "blocking replicas",
            3,
            &[&b, &c],
            &[confirmed(&outcomes_b), vec![]],
        );
        let deadline = std::time::Instant::now() + WAIT * 2;
        let (async_summary, history) = loop {
            let (tx, rx) = mpsc::channel();
            report_tx.send(tx).unwrap();
            let got = rx
                .recv_timeout(WAIT * 2)
                .expect("a report from the async replica");
            let now = b.replica.summary();
            if got.0 == now || std::time::Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let blocking_history: History = b
            .replica
            .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
        assert_eq!(
            async_summary,
            b.replica.summary(),
            "the async replica's state (was {summary})"
        );
        assert_eq!(history, blocking_history, "the same history");
        for seq in mine {
            assert_eq!(
                history
                    .iter()
                    .filter(|(m, q)| *m == me && *q == seq)
                    .count(),
                1,
                "async op {seq} applied once"
            );
        }
        drop(report_tx);
    });
}

/// The runtime that runs the driver tasks shuts down while the replica lives on: its
/// events end, a ticket already handed out resolves with an error instead of waiting
/// forever, and later submissions are refused.
#[test]
fn a_replica_whose_runtime_shut_down_ends() {
    // Not beside this binary's cluster test: one daemon set at a time on 2 cores.
    let _serial = support::serial();
    let start = || async {
        let group = GroupName::new("replica-runtime-gone").unwrap();
        let r: AsyncReplica<OpLog> = Replica::builder(group, OpLog::default())
            .config(config())
            .start_async()
            .await
            .expect("start_async");
        tokio::time::timeout(WAIT, r.wait_ready(|v| v.len() == 1))
            .await
            .expect("ready in a view of 1")
            .unwrap();
        // Handed out with the drivers unable to run again before the end.
        let ticket = r.submit("never").unwrap();
        (r, ticket)
    };
    let then = |(r, ticket): (AsyncReplica<OpLog>, cpg::replica::AsyncTicket<usize>)| async move {
        while tokio::time::timeout(WAIT, r.next_event())
            .await
            .expect("the events to go on or end within WAIT, not hang")
            .is_some()
        {}
        let result = tokio::time::timeout(WAIT, ticket.wait())
            .await
            .expect("the ticket to resolve within WAIT");
        assert!(result.is_err(), "applied without a driver: {result:?}");
        assert!(r.submit("late").is_err(), "a submission after the end");
    };
    support::stream::after_runtime_shutdown(cpg_testkit::shared(), start, then);
}
