//! Faults on a real 3-node cluster with writers running: a partition with writes on
//! both sides heals and the replicas converge on the majority's history, the
//! minority's replica told exactly which of its operations were discarded; a daemon
//! restarted at once brings its replica back into the same history. After each,
//! every replica holds the same history, each operation once, in agreed order, and
//! every confirmed operation not reported discarded is in it.

mod support;

use std::time::{Duration, Instant};

use cpg::GroupName;
use cpg_testkit::Cluster;
use support::replica::*;
use support::serial;

#[test]
fn a_healed_partition_converges_and_the_minority_learns_what_it_lost() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-partition").unwrap();
    let reps: Vec<Rep> = (0..3)
        .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
        .collect();
    for r in &reps {
        r.wait_ready(3);
    }
    let writers: Vec<Writer> = reps
        .iter()
        .enumerate()
        .map(|(i, r)| Writer::start(r, &i.to_string(), Duration::from_millis(5)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    cluster.partition(2);
    reps[0].wait_ready(2);
    reps[1].wait_ready(2);
    reps[2].wait_ready(1);
    let split_version = reps[2].replica.summary().version;
    std::thread::sleep(Duration::from_secs(3));

    let healed = Instant::now();
    cluster.heal(2);
    for r in &reps {
        r.wait_ready(3);
    }
    let merged = healed.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let outcomes: Vec<_> = writers.into_iter().map(Writer::finish).collect();
    let confirmed: Vec<Vec<u64>> = outcomes.iter().map(|o| confirmed(o)).collect();
    let refs: Vec<&Rep> = reps.iter().collect();
    let summary = assert_converged("after the heal", &refs, &confirmed);

    // Two writers against one: the majority's history wins; node 3 lost what it
    // wrote alone, and was told so.
    let lost = reps[2].discarded();
    assert!(
        !lost.is_empty(),
        "node 3's writes in the minority were discarded"
    );
    assert!(reps[0].discarded().is_empty() && reps[1].discarded().is_empty());
    assert!(summary.version > split_version);
    println!(
        "partition: merged and in sync {merged:?} after the heal; node 3 lost {} \
         operations; final {summary}",
        lost.len()
    );
}

#[test]
fn a_daemon_restarted_at_once_rejoins_the_same_history() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let group = GroupName::new("replica-restart").unwrap();
    let reps: Vec<Rep> = (0..3)
        .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
        .collect();
    for r in &reps {
        r.wait_ready(3);
    }
    let writers: Vec<Writer> = reps
        .iter()
        .enumerate()
        .map(|(i, r)| Writer::start(r, &i.to_string(), Duration::from_millis(5)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    let restarted = Instant::now();
    cluster.kill_daemon(0);
    cluster.restart_daemon(0);
    // The replica reconnects by itself and writes go on meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    for r in &reps {
        r.wait_ready(3);
    }
    let back = restarted.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let outcomes: Vec<_> = writers.into_iter().map(Writer::finish).collect();
    let confirmed: Vec<Vec<u64>> = outcomes.iter().map(|o| confirmed(o)).collect();
    let refs: Vec<&Rep> = reps.iter().collect();
    let summary = assert_converged("after the restart", &refs, &confirmed);
    let unknown = outcomes[0].iter().filter(|(_, r)| r.is_err()).count();
    println!(
        "restart: all three in sync {back:?} after the kill; node 1: {} confirmed, \
         {unknown} unknown/not sent, {} discarded; final {summary}",
        confirmed[0].len(),
        reps[0].discarded().len()
    );
}
