//! Harness instances never see each other: two clusters started at the same time from
//! two threads get their own namespaces, and a fault in one does not reach the other.

use std::collections::HashSet;
use std::time::Duration;

use cpg_testkit::Cluster;

#[test]
fn concurrent_clusters_do_not_collide() {
    let start = || {
        std::thread::spawn(|| {
            Cluster::builder()
                .nodes(2)
                .start()
                .unwrap_or_else(|e| panic!("{e}"))
        })
    };
    let (a, b) = (start(), start());
    let a = a.join().expect("cluster A thread");
    let b = b.join().expect("cluster B thread");
    eprintln!(
        "two 2-node clusters formed concurrently in {:?} and {:?}",
        a.startup_time(),
        b.startup_time()
    );

    let names: HashSet<&str> = a
        .nodes()
        .iter()
        .chain(b.nodes())
        .map(|n| n.netns())
        .collect();
    assert_eq!(names.len(), 4, "namespace names collide: {names:?}");
    for n in a.nodes().iter().chain(b.nodes()) {
        assert!(n.netns().starts_with("cpgt-"), "{}", n.netns());
    }

    // Both clusters use the same addresses; a bridge each keeps them apart.
    for cluster in [&a, &b] {
        for i in 0..2 {
            cluster
                .wait_members(i, &[1, 2], Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    a.kill_daemon(1);
    a.wait_members(0, &[1], Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    // B never noticed: still both members, and not a single membership change.
    for i in 0..2 {
        b.wait_members(i, &[1, 2], Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("cluster B was disturbed: {e}"));
    }
}
