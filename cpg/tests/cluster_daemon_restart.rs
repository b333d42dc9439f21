//! A daemon restart on a real 3-node cluster: node 1's corosync is stopped and started
//! again. Node 1's client must get the lost-daemon error from dispatch and from a send
//! (promptly: no hang, no crash); the members on nodes 2 and 3 see it leave with
//! PROCDOWN; once the daemon is back, a new handle on node 1 joins, the others see it
//! join with JOIN, and messages flow both ways again.

mod support;

use std::time::Instant;

use cpg::{GroupName, Reason};
use cpg_testkit::Cluster;
use support::cluster::{assert_intact, joined_in, left_in, messages, with_reason};
use support::event::Event;
use support::message::message;
use support::peer::Peer;
use support::WAIT;

#[test]
fn restarted_daemon_loses_its_clients_and_a_new_handle_rejoins() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("cluster-daemon-restart").unwrap();
    let old = Peer::threaded(cluster.node(0), "node1-old", &group);
    let others = [
        Peer::threaded(cluster.node(1), "node2", &group),
        Peer::threaded(cluster.node(2), "node3", &group),
    ];
    let (m1, m2, m3) = (old.member(), others[0].member(), others[1].member());
    for p in others.iter().chain([&old]) {
        p.log().wait_members(&[m1, m2, m3], WAIT);
    }

    // Stop node 1's daemon (SIGTERM, as a service restart does).
    let marks: Vec<usize> = others.iter().map(|p| p.log().len()).collect();
    let stopped_at = Instant::now();
    cluster.stop_daemon(0);
    let lost = old
        .log()
        .wait_for("dispatch to report the lost daemon", WAIT, |ev| {
            ev.iter().find_map(|e| match e {
                Event::DispatchFailed(err) => Some(err.clone()),
                _ => None,
            })
        });
    let noticed = stopped_at.elapsed();
    assert!(
        lost.is_daemon_lost(),
        "dispatch failed with {lost}, not a lost daemon"
    );
    let send = old.send(message(1, 0, 64));
    assert!(
        send.as_ref().is_err_and(cpg::Error::is_daemon_lost),
        "a send on the dead handle returned {send:?}"
    );
    // A graceful stop disconnects the daemon's clients before the node leaves the
    // ring: the others see node 1's member go with PROCDOWN (a SIGKILLed daemon gives
    // NODEDOWN instead; see cluster_node_failure).
    for (p, &mark) in others.iter().zip(&marks) {
        p.log().wait_members(&[m2, m3], WAIT);
        assert_eq!(
            left_in(&p.log().since(mark)),
            with_reason(&[m1], Reason::ProcDown),
            "{}: who left when node 1's daemon stopped, and why",
            p.name()
        );
    }

    // Start it again; a new handle joins.
    let marks: Vec<usize> = others.iter().map(|p| p.log().len()).collect();
    let restarted_at = Instant::now();
    cluster.restart_daemon(0);
    for i in 0..3 {
        cluster.wait_members(i, &[1, 2, 3], WAIT).unwrap();
    }
    let new = Peer::threaded(cluster.node(0), "node1-new", &group);
    assert_eq!(new.member(), m1, "same node, same process");
    new.log().wait_members(&[m1, m2, m3], WAIT);
    for (p, &mark) in others.iter().zip(&marks) {
        p.log().wait_members(&[m1, m2, m3], WAIT);
        let since = p.log().since(mark);
        assert_eq!(
            joined_in(&since),
            with_reason(&[m1], Reason::Join),
            "{}: who joined after the restart, and why",
            p.name()
        );
        assert!(left_in(&since).is_empty(), "{}: nobody leaves", p.name());
    }
    let rejoined = restarted_at.elapsed();

    // Messages flow both ways.
    new.send(message(1, 1, 64)).unwrap();
    others[0].send(message(2, 1, 64)).unwrap();
    for p in others.iter().chain([&new]) {
        p.log().wait_message(1, 1, WAIT);
        p.log().wait_message(2, 1, WAIT);
        assert_intact(p.log());
    }
    for p in &others {
        assert!(
            !messages(&p.log().events()).contains(&(1, 0)),
            "{}: got the message the dead handle could not send",
            p.name()
        );
    }
    eprintln!(
        "daemon restart: the old handle got {lost} after {noticed:.2?}; the others saw it \
         leave with PROCDOWN; a new handle rejoined (JOIN seen) {rejoined:.2?} after the \
         restart began"
    );
}
