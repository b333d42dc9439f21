//! The harness itself: clusters form, and the faults it injects are seen by corosync.

use std::time::{Duration, Instant};

use cpg_testkit::Cluster;

/// Membership changes need token (1 s) + consensus (1.2 s) + join/sync; leave room.
const CHANGE: Duration = Duration::from_secs(20);

fn all_see(cluster: &Cluster, on: &[usize], expect: &[u32]) {
    for &i in on {
        if let Err(e) = cluster.wait_members(i, expect, CHANGE) {
            panic!("{e}");
        }
    }
}

/// Three nodes form; node 3 is killed, restarted, cut off and reconnected, and the
/// surviving nodes (and node 3 itself) report the matching memberships each time.
#[test]
fn three_nodes_kill_restart_partition_heal() {
    let began = Instant::now();
    let cluster = Cluster::start(3);
    eprintln!("3-node cluster formed in {:?}", cluster.startup_time());
    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(node.nodeid(), i as u32 + 1);
        assert!(node.daemon_pid().is_some());
    }

    let t = Instant::now();
    cluster.kill_daemon(2);
    assert_eq!(cluster.node(2).daemon_pid(), None);
    all_see(&cluster, &[0, 1], &[1, 2]);
    eprintln!("kill noticed in {:?}", t.elapsed());

    let t = Instant::now();
    cluster.restart_daemon(2);
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);
    eprintln!("restart rejoined in {:?}", t.elapsed());

    let t = Instant::now();
    cluster.partition(2);
    all_see(&cluster, &[0, 1], &[1, 2]);
    all_see(&cluster, &[2], &[3]);
    eprintln!("partition noticed in {:?}", t.elapsed());

    let t = Instant::now();
    cluster.heal(2);
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);
    eprintln!("heal merged in {:?}", t.elapsed());

    let t = Instant::now();
    drop(cluster);
    eprintln!(
        "teardown took {:?}; total {:?}",
        t.elapsed(),
        began.elapsed()
    );
}
