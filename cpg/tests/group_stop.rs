//! What stopping a member does to its confirmed sends, on a real 2-node cluster. A
//! member on node 1 queues 300 confirmed sends and stops while they go out: its
//! blocking `Group` dropped, its `AsyncGroup` dropped, or the runtime under its
//! `AsyncGroup` dropped. Every confirmation resolves, and the member on node 2, which
//! sees the stopped member leave after all of its messages (agreed order), delivered
//! exactly the messages whose confirmations say the daemon had them (a position, or
//! `Unknown`: "may have been delivered"), and none of those reported `Closed` ("never
//! sent"): whoever retries on `Closed` duplicates nothing, and once the drop returns
//! nothing more is sent.

mod support;

use std::time::Duration;

#[cfg(feature = "tokio")]
use cpg::group::Event;
use cpg::group::{Config, Group, GroupError, Position};
use cpg::GroupName;
use cpg_testkit::Node;
use support::group::*;
#[cfg(feature = "tokio")]
use support::BIG_STACK;
use support::{unique_group, WAIT};

/// Confirmed sends queued before the stop.
const SENDS: u64 = 300;

/// Rounds before a test gives up on stopping while the daemon held unconfirmed
/// messages (the first round nearly always does).
const ROUNDS: usize = 5;

/// The outcome of each confirmed send of a round, by sequence number.
type Outcomes = Vec<Result<Position, GroupError>>;

/// Runs rounds of `stop_one` (which starts a member on node 1 in the group, sends
/// [`SENDS`] confirmed messages, stops it, and returns their outcomes) beside an
/// observer on node 2, checking each round against what the observer delivered, until
/// a round stopped while some message was in the daemon's hands but not confirmed.
fn rounds(tag: &str, stop_one: impl Fn(&Node, GroupName) -> Outcomes) {
    let cluster = support::shared_cluster();
    for round in 0..ROUNDS {
        let group = unique_group(tag);
        let observer = Participant::start(cluster.node(1), "observer", &group, Config::default());
        let outcomes = stop_one(cluster.node(0), group);
        assert_eq!(outcomes.len() as u64, SENDS);
        // The stopped member's departure comes after every message it sent.
        let events = observer
            .log()
            .wait_for("the stopped member's departure", WAIT, |e| {
                let v = views(e);
                let joined = v.iter().position(|v| v.len() == 2)?;
                v[joined..].iter().any(|v| v.len() == 1).then(|| e.to_vec())
            });
        let delivered: Vec<u64> = messages(&events)
            .into_iter()
            .filter(|(sender, _)| *sender == 1)
            .map(|(_, seq)| seq)
            .collect();
        assert_eq!(
            delivered,
            (0..delivered.len() as u64).collect::<Vec<_>>(),
            "round {round}: the stopped member's messages, whole, once, in order"
        );
        let (mut confirmed, mut unknown, mut closed) = (0, 0, 0);
        for (seq, outcome) in outcomes.iter().enumerate() {
            let was_delivered = (seq as u64) < delivered.len() as u64;
            match outcome {
                Ok(_) => confirmed += 1,
                Err(GroupError::Unknown) => unknown += 1,
                Err(GroupError::Closed) => closed += 1,
                Err(e) => panic!("round {round}: message {seq}: unexpected outcome {e}"),
            }
            assert_eq!(
                was_delivered,
                !matches!(outcome, Err(GroupError::Closed)),
                "round {round}: message {seq} resolved as {outcome:?}, delivered by the \
                 observer: {was_delivered} ({} of {SENDS} delivered)",
                delivered.len()
            );
        }
        eprintln!(
            "{tag} round {round}: {confirmed} confirmed, {unknown} unknown (delivered), \
             {closed} closed (never sent)"
        );
        if unknown > 0 {
            return;
        }
    }
    panic!(
        "in {ROUNDS} rounds, no stop came while the daemon held unconfirmed messages: \
         this test proved nothing"
    );
}

#[cfg(feature = "tokio")]
/// Runs `f` on a thread with a big stack inside `node`'s namespace, with a
/// current-thread runtime (its tasks run on that thread: they connect to that node's
/// daemon).
fn on_node<T: Send>(node: &Node, f: impl FnOnce(tokio::runtime::Runtime) -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(BIG_STACK)
            .spawn_scoped(s, || {
                node.enter(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    f(rt)
                })
            })
            .expect("spawn")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

#[cfg(feature = "tokio")]
/// An `AsyncGroup` in `group` on the current runtime, in a view with the observer, and
/// the confirmations of [`SENDS`] messages queued, with the driver given turns until
/// it has sent some of them (the first turn may send them all, in batches: then the
/// stop comes before their deliveries confirm them).
async fn start_and_send(
    group: GroupName,
) -> (cpg::group::AsyncGroup, Vec<cpg::group::Confirmation>) {
    let g = Group::builder(group)
        .start_async()
        .await
        .expect("start_async");
    tokio::time::timeout(WAIT, g.wait_view(|v| v.len() == 2))
        .await
        .expect("a view with the observer")
        .expect("not ended");
    let confirmations = (0..SENDS)
        .map(|seq| g.send_confirmed(payload(1, seq, 64)).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    while g.stats().sent == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing sent within {WAIT:?}"
        );
        tokio::task::yield_now().await;
    }
    (g, confirmations)
}

#[test]
fn a_dropped_group_reports_what_the_daemon_had() {
    rounds("stop-drop", |node, group| {
        let g = node.enter(|| Group::join(group)).expect("join");
        g.wait_view(WAIT, |v| v.len() == 2)
            .expect("a view with the observer");
        let mut receipts: Vec<_> = (0..SENDS)
            .map(|seq| g.send_confirmed(payload(1, seq, 64)).unwrap())
            .collect();
        assert!(
            cpg_testkit::wait_until(WAIT, Duration::from_micros(50), || g.stats().sent > 0),
            "nothing sent within {WAIT:?}"
        );
        drop(g);
        receipts
            .iter_mut()
            .map(|r| r.try_get().expect("resolved once the drop returned"))
            .collect()
    });
}

#[cfg(feature = "tokio")]
#[test]
fn a_dropped_async_group_reports_what_the_daemon_had() {
    rounds("stop-drop-async", |node, group| {
        on_node(node, |rt| {
            rt.block_on(async {
                let (g, confirmations) = start_and_send(group).await;
                drop(g);
                let mut outcomes = Vec::new();
                for c in confirmations {
                    let outcome = tokio::time::timeout(Duration::ZERO, c)
                        .await
                        .expect("resolved once the drop returned");
                    outcomes.push(outcome);
                }
                outcomes
            })
        })
    });
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_group_whose_runtime_was_dropped_reports_what_the_daemon_had() {
    rounds("stop-runtime", |node, group| {
        on_node(node, |first| {
            let (g, confirmations) = first.block_on(start_and_send(group));
            // The driver task goes with its runtime; the group lives on.
            drop(first);
            let second = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            second.block_on(async move {
                let mut outcomes = Vec::new();
                for c in confirmations {
                    let outcome = tokio::time::timeout(WAIT, c)
                        .await
                        .expect("a confirmation resolves without its driver");
                    outcomes.push(outcome);
                }
                // The stream ends, with `Stopped`, from the other runtime.
                let mut last = None;
                while let Some(e) = tokio::time::timeout(WAIT, g.next_event())
                    .await
                    .expect("the stream goes on or ends within WAIT")
                {
                    last = Some(e);
                }
                assert!(matches!(last, Some(Event::Stopped(_))), "{last:?}");
                outcomes
            })
        })
    });
}
