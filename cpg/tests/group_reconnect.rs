//! Reconnect on a real 3-node cluster: node 1's daemon is SIGKILLed and started again.
//! Node 1's member reports `Disconnected`, keeps the messages queued meanwhile (policy
//! `Keep`), reconnects by itself with a new incarnation, and then its queued messages
//! are confirmed exactly once each, in the order they were queued, and reach exactly
//! the members of the view each was confirmed in (the restarted daemon can form a ring
//! of its own before it merges with the others); once merged, messages flow both ways
//! again. A member with policy `Drop` refuses sends
//! while disconnected.

mod support;

use std::time::{Duration, Instant};

use cpg::group::{Config, Event, Group, GroupError, OnDisconnect};
use cpg::{GroupName, Member};
use cpg_testkit::Cluster;
use support::group::*;
use support::WAIT;

#[test]
fn a_member_whose_daemon_restarts_reconnects_and_sends_what_it_queued() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("group-reconnect").unwrap();
    let (peers, all) = start_all(&cluster, &group, &Config::default());
    // A second member on node 1, in another group, that drops instead of keeping.
    let drop_group = GroupName::new("group-reconnect-drop").unwrap();
    let mut config = Config::default();
    config.on_disconnect = OnDisconnect::Drop;
    let dropper = Participant::start(cluster.node(0), "node1-drop", &drop_group, config);

    // Before: a confirmed message goes around.
    let mut r = peers[0].group().send_confirmed(payload(1, 0, 16)).unwrap();
    r.wait_timeout(WAIT).expect("confirmed before the kill");

    let killed_at = Instant::now();
    cluster.kill_daemon(0);
    let error = peers[0].log().wait_for("Disconnected", WAIT, |e| {
        e.iter().find_map(|e| match e {
            Event::Disconnected { error } => Some(error.clone()),
            _ => None,
        })
    });
    assert!(error.is_daemon_lost(), "disconnected by {error}");
    let noticed = killed_at.elapsed();
    dropper.log().wait_for("Disconnected", WAIT, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
            .then_some(())
    });
    assert_eq!(
        dropper.group().send(payload(9, 0, 0)).unwrap_err(),
        GroupError::Disconnected,
        "policy Drop refuses sends while disconnected"
    );

    // A new member cannot start without a daemon: the error says so at once.
    let refused = cluster
        .node(0)
        .enter(|| Group::join(GroupName::new("group-reconnect-late").unwrap()));
    assert!(
        matches!(&refused, Err(GroupError::Connect(e)) if e.is_daemon_lost()),
        "starting without a daemon: {refused:?}"
    );

    // While down: queue 20 confirmed messages; nothing can go out.
    let mut receipts: Vec<_> = (1..=20)
        .map(|seq| {
            peers[0]
                .group()
                .send_confirmed(payload(1, seq, 100))
                .unwrap()
        })
        .collect();
    assert_eq!(peers[0].group().stats().queued, 20);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        receipts.iter_mut().all(|r| r.try_get().is_none()),
        "resolved while down"
    );
    // The others go on meanwhile.
    peers[1].group().send(payload(2, 0, 0)).unwrap();
    for p in &peers[1..] {
        p.log().wait_view(&all[1..]);
        p.log().wait_message(2, 0);
    }

    let restarted_at = Instant::now();
    cluster.restart_daemon(0);
    let (incarnation, view) = peers[0].log().wait_for("Reconnected", WAIT, |e| {
        e.iter().find_map(|e| match e {
            Event::Reconnected { incarnation, view } => Some((*incarnation, view.clone())),
            _ => None,
        })
    });
    let reconnected = restarted_at.elapsed();
    assert_eq!(incarnation, 2);
    assert_eq!(view.me(), Some(all[0]), "same node, same process");

    // Every queued message resolves exactly once, confirmed, in queue order.
    let positions: Vec<_> = receipts
        .iter_mut()
        .map(|r| r.wait_timeout(WAIT).expect("confirmed after the reconnect"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0].total < w[1].total),
        "positions in queue order: {positions:?}"
    );
    assert!(positions.iter().all(|p| p.view.incarnation == 2));
    // The receipts resolved; the recorder may still be reading the events.
    let confirmed = peers[0].log().wait_for("21 confirmations", WAIT, |events| {
        let ids: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Confirmed { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        (ids.len() >= 21).then_some(ids)
    });
    let ids: Vec<_> = [r.id()]
        .into_iter()
        .chain(receipts.iter().map(|r| r.id()))
        .collect();
    assert_eq!(confirmed, ids, "each confirmed exactly once, in order");
    // Where they arrive follows from the view each was confirmed in: the restarted
    // daemon may form a ring of its own before it merges with the others, and a
    // message delivered in such a view reaches nobody else (CPG's virtual synchrony;
    // the layer reports the view in the position, it cannot change this).
    let node1_views = views(&peers[0].log().events());
    let members_of = |id| {
        node1_views
            .iter()
            .find(|v| v.id() == id)
            .map(|v| v.members().to_vec())
            .expect("the view of a position was reported")
    };
    let reach: Vec<Vec<Member>> = positions.iter().map(|p| members_of(p.view)).collect();
    // The merge and a message of node 1's after it, so that everything sent before
    // has been delivered where it will be.
    for p in &peers {
        p.log().wait_view(&all);
    }
    let mut last = peers[0].group().send_confirmed(payload(1, 21, 0)).unwrap();
    last.wait_timeout(WAIT).expect("confirmed after the merge");
    for (i, p) in peers.iter().enumerate() {
        p.log().wait_message(1, 21);
        let got: Vec<u64> = messages(&p.log().events())
            .into_iter()
            .filter(|(s, _)| *s == 1)
            .map(|(_, q)| q)
            .collect();
        let expected: Vec<u64> = std::iter::once(0)
            .chain((1..=20).filter(|&q| reach[q as usize - 1].contains(&all[i])))
            .chain([21])
            .collect();
        assert_eq!(got, expected, "{}: node 1's messages, in order", p.name());
    }
    let alone = reach.iter().filter(|m| m.len() == 1).count();
    // The dropping member reconnected too and sends again.
    dropper.log().wait_for("Reconnected", WAIT, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Reconnected { .. }))
            .then_some(())
    });
    dropper
        .group()
        .send_confirmed(payload(9, 1, 0))
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    let stats = peers[0].group().stats();
    assert_eq!(
        (stats.queued, stats.reconnects, stats.confirmed),
        (0, 1, 22)
    );
    eprintln!(
        "reconnect: daemon loss noticed {noticed:.2?} after SIGKILL; reconnected {reconnected:.2?} \
         after the restart began; 20 queued messages confirmed in order, {alone} of them in \
         node 1's own view before the merge; stats {stats:?}"
    );
}
