//! The tokio driver ([`AsyncGroup`]) on a real 3-node cluster, beside blocking members
//! on nodes 2 and 3: it agrees with them on the view and the leader; confirmed sends
//! resolve; waits cancelled halfway (a dropped confirmation, timed-out `next_event`s)
//! neither lose nor split nor duplicate anything; after its daemon is killed and
//! restarted it reconnects and delivers again; `leave` ends its event stream, also when
//! its wait is cancelled after the first poll.
#![cfg(feature = "tokio")]

mod support;

use std::future::Future as _;
use std::sync::mpsc;
use std::time::Duration;

use cpg::group::{AsyncGroup, Config, Confirmation, Event, Group};
use cpg::{GroupName, Member};
use cpg_testkit::Cluster;
use support::group::*;
use support::{BIG_STACK, WAIT};

/// What the async member tells the test thread.
#[derive(Debug)]
enum Step {
    Joined {
        members: Vec<Member>,
        leader: Option<Member>,
        is_leader: bool,
        me: Member,
    },
    Sent,
    Disconnected,
    Reconnected {
        incarnation: u64,
    },
    Left,
}

async fn next(g: &AsyncGroup) -> Event {
    tokio::time::timeout(WAIT, g.next_event())
        .await
        .expect("an event within WAIT")
        .expect("the stream has not ended")
}

async fn async_member(
    group: GroupName,
    steps: mpsc::Sender<Step>,
    mut go: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let g = Group::builder(group)
        .start_async()
        .await
        .expect("start_async");
    let v = tokio::time::timeout(WAIT, g.wait_view(|v| v.len() == 3))
        .await
        .expect("a view of 3")
        .unwrap();
    steps
        .send(Step::Joined {
            members: v.members().to_vec(),
            leader: v.leader(),
            is_leader: g.is_leader(),
            me: g.me().unwrap(),
        })
        .unwrap();

    let first = g
        .send_confirmed(payload(1, 0, 100))
        .unwrap()
        .await
        .expect("confirmed");
    // Confirmations dropped before they resolve, some never polled, some polled once.
    for seq in 1..=50 {
        let c = g.send_confirmed(payload(1, seq, 1000)).unwrap();
        if seq % 2 == 0 {
            let _ = tokio::time::timeout(Duration::ZERO, c).await;
        }
    }
    let last = g
        .send_confirmed(payload(1, 51, 100))
        .unwrap()
        .await
        .expect("confirmed");
    assert!(last.total > first.total);
    // Read the events through waits that time out at random points: nothing is lost.
    let mut own = Vec::new();
    let mut confirmed = 0;
    let deadline = std::time::Instant::now() + WAIT;
    // The confirmation of a message follows its delivery.
    while own.last() != Some(&51) || confirmed < 52 {
        assert!(
            std::time::Instant::now() < deadline,
            "own {own:?}, {confirmed} confirmed"
        );
        match tokio::time::timeout(Duration::from_micros(50), g.next_event()).await {
            Ok(Some(Event::Message(d))) if d.own => own.push(decode(&d.data).1),
            Ok(Some(Event::Confirmed { .. })) => confirmed += 1,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("stream ended"),
        }
    }
    assert_eq!(
        own,
        (0..=51).collect::<Vec<_>>(),
        "own messages, once each, in order"
    );
    assert_eq!(
        confirmed, 52,
        "every confirmation is an event too, dropped or not"
    );
    steps.send(Step::Sent).unwrap();

    go.recv().await.unwrap(); // the daemon is being killed
    loop {
        if let Event::Disconnected { error } = next(&g).await {
            assert!(error.is_daemon_lost());
            break;
        }
    }
    steps.send(Step::Disconnected).unwrap();
    let incarnation = loop {
        if let Event::Reconnected { incarnation, .. } = next(&g).await {
            break incarnation;
        }
    };
    tokio::time::timeout(WAIT, g.wait_view(|v| v.len() == 3))
        .await
        .unwrap()
        .unwrap();
    g.send_confirmed(payload(1, 100, 10))
        .unwrap()
        .await
        .expect("confirmed after reconnect");
    steps.send(Step::Reconnected { incarnation }).unwrap();

    go.recv().await.unwrap();
    tokio::time::timeout(WAIT, g.leave())
        .await
        .unwrap()
        .expect("leave");
    let mut rest = Vec::new();
    while let Some(e) = g.next_event().await {
        rest.push(e);
    }
    assert_eq!(rest.last(), Some(&Event::Left), "Left is the last event");
    steps.send(Step::Left).unwrap();
}

#[test]
fn async_group_agrees_confirms_survives_cancellation_and_reconnects() {
    let cluster = Cluster::start(3);
    let group = GroupName::new("group-tokio").unwrap();
    let peers = start_on(&cluster, 1..3, &group, &Config::default());
    let (steps_tx, steps) = mpsc::channel();
    let (go, go_rx) = tokio::sync::mpsc::unbounded_channel();
    let step = || {
        steps
            .recv_timeout(WAIT * 2)
            .expect("the async member's next step")
    };
    std::thread::scope(|s| {
        let node1 = cluster.node(0);
        let member = std::thread::Builder::new()
            .name("async-node1".into())
            .stack_size(BIG_STACK)
            .spawn_scoped(s, move || {
                // A current-thread runtime on this thread, inside node 1's namespace:
                // the driver task (also its reconnects) talks to node 1's daemon.
                node1.enter(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async_member(group, steps_tx, go_rx))
                })
            })
            .unwrap();

        let Step::Joined {
            members,
            leader,
            is_leader,
            me,
        } = step()
        else {
            panic!()
        };
        assert_eq!(me.nodeid, 1);
        let all = [me, peers[0].member(), peers[1].member()];
        for p in &peers {
            let v = p.log().wait_view(&all);
            assert_eq!(v.members(), &members[..], "{}: same members", p.name());
            assert_eq!(v.leader(), leader, "{}: same leader", p.name());
            assert!(!v.is_leader());
        }
        assert!(is_leader, "node 1's member has the lowest node id");

        assert!(matches!(step(), Step::Sent));
        for p in &peers {
            p.log().wait_message(1, 51);
            let from1: Vec<u64> = messages(&p.log().events())
                .into_iter()
                .filter(|m| m.0 == 1)
                .map(|m| m.1)
                .collect();
            assert_eq!(
                from1,
                (0..=51).collect::<Vec<_>>(),
                "{}: whole, once, in order",
                p.name()
            );
        }

        go.send(()).unwrap();
        cluster.kill_daemon(0);
        assert!(matches!(step(), Step::Disconnected));
        cluster.restart_daemon(0);
        let Step::Reconnected { incarnation } = step() else {
            panic!()
        };
        assert_eq!(incarnation, 2);
        for p in &peers {
            p.log().wait_message(1, 100);
        }

        go.send(()).unwrap();
        assert!(matches!(step(), Step::Left));
        for p in &peers {
            p.log().wait_view(&all[1..]);
        }
        member.join().expect("the async member");
    });
}

/// An `AsyncGroup` in group `name`, started and in its first view (of itself alone).
async fn started_alone(name: &str) -> cpg::group::AsyncGroup {
    let g = Group::builder(GroupName::new(name).unwrap())
        .start_async()
        .await
        .expect("start_async");
    tokio::time::timeout(WAIT, g.wait_view(|v| v.len() == 1))
        .await
        .expect("a view of 1")
        .unwrap();
    g
}

/// The runtime that runs the driver task shuts down while the group lives on: the
/// group's stream ends with `Stopped` instead of waiting forever, a confirmation
/// already asked for resolves with an error, and later sends are refused.
#[test]
fn a_group_whose_runtime_shut_down_ends_its_stream() {
    // Not beside this binary's cluster test: one daemon set at a time on 2 cores.
    let _serial = support::serial();
    let start = || async {
        let g = started_alone("tokio-runtime-gone").await;
        // Asked for with the driver unable to run again before the end.
        let confirmed = g.send_confirmed(b"never".to_vec()).unwrap();
        (g, confirmed)
    };
    let then = |(g, confirmed): (AsyncGroup, Confirmation)| async move {
        let mut stopped = false;
        loop {
            let event = tokio::time::timeout(WAIT, g.next_event())
                .await
                .expect("the stream to go on or end within WAIT, not hang");
            match event {
                Some(Event::Stopped(_)) => stopped = true,
                Some(_) => {}
                None => break,
            }
        }
        assert!(stopped, "the last event is Stopped");
        let result = tokio::time::timeout(WAIT, confirmed)
            .await
            .expect("the confirmation to resolve within WAIT");
        assert!(result.is_err(), "confirmed without a driver: {result:?}");
        assert!(g.send(b"late".to_vec()).is_err(), "a send after the end");
    };
    support::stream::after_runtime_shutdown(cpg_testkit::shared(), start, then);
}

/// A `leave` whose wait is cancelled after its first poll still leaves: the request
/// was made by that poll, so the stream goes on to `Left` and ends.
#[test]
fn a_cancelled_leave_still_leaves() {
    // Not beside this binary's cluster test: one daemon set at a time on 2 cores.
    let _serial = support::serial();
    let node = cpg_testkit::shared();
    std::thread::Builder::new()
        .stack_size(BIG_STACK)
        .spawn(move || {
            node.enter(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let g = started_alone("tokio-cancelled-leave").await;
                    // Polled once, then dropped. (The driver task runs on this same
                    // thread, so it cannot have left before that first poll returns.)
                    let mut leave = Box::pin(g.leave());
                    let first =
                        std::future::poll_fn(|cx| std::task::Poll::Ready(leave.as_mut().poll(cx)))
                            .await;
                    assert!(first.is_pending(), "left within one poll: {first:?}");
                    drop(leave);
                    let mut last = None;
                    while let Some(e) = tokio::time::timeout(WAIT, g.next_event())
                        .await
                        .expect("the stream to go on or end within WAIT")
                    {
                        last = Some(e);
                    }
                    assert_eq!(last, Some(Event::Left), "the last event");
                });
            })
        })
        .unwrap()
        .join()
        .unwrap();
}
