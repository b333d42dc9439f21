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

/// Three nodes form; node 3 is killed, restarted, cut off and reconnected, node 2 is
/// stopped and restarted, and every node reports the matching membership each time.
#[test]
fn three_nodes_kill_restart_partition_heal() {
    let began = Instant::now();
    let cluster = Cluster::start(3);
    eprintln!("3-node cluster formed in {:?}", cluster.startup_time());
    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(node.nodeid(), i as u32 + 1);
        // The launcher execs all the way down: the pid we hold is corosync itself.
        let pid = node.daemon_pid().expect("daemon running");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(
            cmdline.starts_with(b"corosync\0"),
            "pid {pid} is {:?}, not corosync",
            String::from_utf8_lossy(&cmdline)
        );
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
    cluster.stop_daemon(1);
    assert_eq!(cluster.node(1).daemon_pid(), None);
    all_see(&cluster, &[0, 2], &[1, 3]);
    eprintln!("graceful stop noticed in {:?}", t.elapsed());
    cluster.restart_daemon(1);
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);

    let t = Instant::now();
    drop(cluster);
    eprintln!(
        "teardown took {:?}; total {:?}",
        t.elapsed(),
        began.elapsed()
    );
}

/// The faults the nemesis uses: a daemon paused for longer than the token timeout
/// drops out of the others' membership and merges back once resumed; a node that
/// drops every packet from another splits the cluster until its rules are removed;
/// a node that loses every packet on its link is cut off, and the cluster merges again
/// once the loss stops.
#[test]
fn three_nodes_pause_resume_one_way_and_lossy_link() {
    let cluster = Cluster::start(3);

    assert!(cluster.pause_daemon(2));
    all_see(&cluster, &[0, 1], &[1, 2]);
    assert!(cluster.resume_daemon(2));
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);

    // Node 1 stops hearing node 2 (node 2 still hears node 1): 1 and 2 cannot stay
    // in one ring.
    cluster.drop_from(0, 1);
    let split = cpg_testkit::wait_until(CHANGE, Duration::from_millis(100), || {
        cluster.wait_members(0, &[1, 2, 3], Duration::ZERO).is_err()
            && cluster.wait_members(1, &[1, 2, 3], Duration::ZERO).is_err()
    });
    assert!(
        split,
        "one-way loss from node 2 to node 1 did not split the ring"
    );
    cluster.clear_net_faults(0);
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);

    cluster.lossy_link(2, 100);
    all_see(&cluster, &[0, 1], &[1, 2]);
    cluster.clear_net_faults(2);
    // Clearing twice is fine.
    cluster.clear_net_faults(2);
    all_see(&cluster, &[0, 1, 2], &[1, 2, 3]);
}
