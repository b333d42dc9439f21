//! Leader agreement on a real 3-node cluster, through every fault the harness makes:
//! a client process joining and crashing, a node's daemon killed and restarted, a
//! partition and its heal. At every stable point all members in one partition see the
//! same view and the same leader (the lowest (node id, pid)), and exactly the leader
//! says it leads; the member whose daemon died reconnects by itself, and members that
//! stayed connected installed the same sequence of views.

mod support;

use std::io::BufRead as _;

use cpg::group::{Config, Event, Group, View};
use cpg::{GroupName, Member};
use cpg_testkit::{client_role, Client, Cluster};
use support::group::*;
use support::WAIT;

const GROUP: &str = "group-leader";
const TEST: &str = "leader_is_agreed_in_every_view_through_crash_kill_restart_and_partition";

#[test]
fn leader_is_agreed_in_every_view_through_crash_kill_restart_and_partition() {
    if let Some(role) = client_role() {
        return client(&role);
    }
    let cluster = Cluster::start(3);
    let group = GroupName::new(GROUP).unwrap();
    let (peers, all) = start_all(&cluster, &group, &Config::default());
    let refs: Vec<&Participant> = peers.iter().collect();
    assert_eq!(
        assert_agree("start", &refs),
        all[0],
        "node 1's member leads"
    );

    // A client process on node 2 joins, then is SIGKILLed.
    let mut client = Client::spawn_test(cluster.node(1), TEST, "member").unwrap();
    let line = client.expect_line("CLIENT ready ", WAIT).unwrap();
    let f: Vec<u32> = line["CLIENT ready ".len()..]
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    let cm = Member {
        nodeid: f[0],
        pid: f[1],
    };
    assert_eq!(
        cm,
        Member {
            nodeid: 2,
            pid: client.pid()
        }
    );
    let with_client = [all.clone(), vec![cm]].concat();
    for p in &peers {
        p.log().wait_view(&with_client);
    }
    assert_agree("client joined", &refs);
    client.kill();
    for p in &peers {
        p.log().wait_view(&all);
    }
    assert_agree("client crashed", &refs);

    // Node 1's daemon is killed: node 2's member takes over.
    let before_kill: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();
    cluster.kill_daemon(0);
    for p in &peers[1..] {
        p.log().wait_view(&all[1..]);
    }
    let leader = assert_agree("node 1 down", &[&peers[1], &peers[2]]);
    assert_eq!(leader, all[1], "node 2's member leads while node 1 is down");
    // A change of nodes settles once the totem change of the new ring arrives (after
    // the group change): the view still carries the ring before.
    let down = latest_view(&peers[1].log().events()).unwrap();
    let ring = peers[1].log().wait_for("the view to settle", WAIT, |e| {
        e.iter().find_map(|e| match e {
            Event::Settled { view, ring } if *view == down.id() => Some(*ring),
            _ => None,
        })
    });
    assert!(
        down.ring().is_some_and(|before| before.seq < ring.seq),
        "{down:?} settled with {ring}"
    );
    peers[0]
        .log()
        .wait_for("node 1's member to see its daemon lost", WAIT, |e| {
            e.iter()
                .any(|e| matches!(e, Event::Disconnected { .. }))
                .then_some(())
        });

    // The daemon comes back: node 1's member reconnects by itself and leads again.
    cluster.restart_daemon(0);
    for i in 0..3 {
        cluster.wait_members(i, &[1, 2, 3], WAIT).unwrap();
    }
    let reconnected = peers[0].log().wait_for("the reconnect", WAIT, |e| {
        e.iter().find_map(|e| match e {
            Event::Reconnected { incarnation, view } => Some((*incarnation, view.clone())),
            _ => None,
        })
    });
    assert_eq!(reconnected.0, 2, "the second connection");
    for p in &peers {
        p.log().wait_view(&all);
    }
    assert_eq!(assert_agree("node 1 back", &refs), all[0]);
    assert!(peers[0].group().is_leader());

    // Node 3 is cut off: each side agrees on its own view; node 3 leads its own.
    let before_partition: Vec<usize> = peers.iter().map(|p| p.log().len()).collect();
    cluster.partition(2);
    for p in &peers[..2] {
        p.log().wait_view(&all[..2]);
    }
    peers[2].log().wait_view(&all[2..]);
    assert_eq!(
        assert_agree("majority side", &[&peers[0], &peers[1]]),
        all[0]
    );
    assert_eq!(assert_agree("node 3 alone", &[&peers[2]]), all[2]);
    cluster.heal(2);
    for p in &peers {
        p.log().wait_view(&all);
    }
    assert_eq!(assert_agree("healed", &refs), all[0]);

    // Every view every member installed: its leader is its lowest member, and the
    // member says it leads exactly when it is that one.
    for p in &peers {
        for v in views(&p.log().events()) {
            assert_eq!(v.leader(), v.members().first().copied());
            assert_eq!(
                v.is_leader(),
                v.me().is_some() && v.me() == v.leader(),
                "{}: {v}",
                p.name()
            );
        }
    }
    // Nodes 2 and 3 stayed connected from the start to the partition: they installed
    // the same views in the same order.
    let until_partition = |i: usize| -> Vec<Vec<Member>> {
        views(&peers[i].log().events()[..before_partition[i]])
            .iter()
            .map(|v: &View| v.members().to_vec())
            .collect()
    };
    let (v2, v3) = (until_partition(1), until_partition(2));
    // Each started at its own join, so one list may begin later: compare from the
    // first view both have.
    let start = v2.iter().position(|v| v3.first() == Some(v)).unwrap_or(0);
    assert!(
        v2.len() - start >= 5,
        "views before the partition: {v2:?} / {v3:?}"
    );
    assert_eq!(
        v2[start..],
        v3[..],
        "nodes 2 and 3 installed different views"
    );
    eprintln!(
        "leader: {} views on node 2, agreement checked at 7 stable points; node 1's member \
         reconnected (incarnation 2) after its daemon's restart; {} events on node 1 since \
         the kill",
        views(&peers[1].log().events()).len(),
        peers[0].log().len() - before_kill[0],
    );
}

/// The client process: a member that reports itself and waits for EOF on stdin.
fn client(role: &str) {
    assert_eq!(role, "member");
    let g = Group::join(GroupName::new(GROUP).unwrap()).expect("client joins");
    let me = g
        .wait_view(WAIT, |v| v.me().is_some())
        .and_then(|v| v.me())
        .expect("client's first view");
    println!("CLIENT ready {} {}", me.nodeid, me.pid);
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
}
