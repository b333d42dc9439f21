//! What stopping a replica does to its tickets, on a real 2-node cluster. A replica on
//! node 1 submits an operation, and once it is applied 99 more, which it sends without
//! reading their deliveries, then stops: the blocking `Replica` dropped, the
//! `AsyncReplica` dropped, or the runtime under the `AsyncReplica` dropped. Every ticket resolves, and the replica on
//! node 2 applied exactly the operations whose tickets say the daemon had them (a
//! version, or `NotSent(Unknown)`: "may have been applied"), none of those whose
//! tickets say they were never sent: whoever submits again on those duplicates
//! nothing.

mod support;

use std::time::Duration;

use cpg::group::GroupError;
use cpg::replica::{Replica, ReplicaError};
use cpg::GroupName;
use cpg_testkit::Node;
use support::replica::*;
use support::{unique_group, WAIT};

/// Operations submitted before the stop.
const OPS: usize = 100;

/// Rounds before a test gives up on stopping while the daemon held an operation not
/// yet applied.
const ROUNDS: usize = 5;

/// How long a replica that reads no deliveries (`hold_dispatch`) sends before it is
/// stopped: its group layer hands what it can to the daemon (the first frames; the
/// rest wait for those to come back), none comes back. Without the hold, the
/// operations submitted together are sent in one batch and applied in one pass, and
/// a stop after the first is applied rarely finds one in the daemon's hands.
const SENDING: Duration = Duration::from_millis(100);

/// The outcome of each ticket of a round, in submission order.
type Results = Vec<Result<cpg::replica::Outcome<usize>, ReplicaError>>;

/// The `i`th operation of a round.
fn op(i: usize) -> String {
    format!("op:{i}")
}

/// Runs rounds of `stop_one` (which starts a replica on node 1 in the group, submits
/// [`OPS`] operations, stops it once the first is applied, and returns every ticket's
/// outcome) beside a replica on node 2, checking each round against what that one
/// applied, until a round stopped with an operation in the daemon's hands.
fn rounds(tag: &str, stop_one: impl Fn(&Node, GroupName) -> Results) {
    let cluster = support::shared_cluster();
    for round in 0..ROUNDS {
        let group = unique_group(tag);
        let observer = Rep::start(cluster.node(1), "observer", &group);
        observer.wait_ready(1);
        let results = stop_one(cluster.node(0), group);
        assert_eq!(results.len(), OPS);
        // Ready alone again: the stopped member is gone, after all it sent.
        observer.wait_ready(1);
        let applied: Vec<Vec<u8>> = observer.replica.read(|log| {
            log.ops
                .iter()
                .filter(|(origin, _, _)| origin.nodeid == 1)
                .map(|(_, _, op)| op.clone())
                .collect()
        });
        let (mut ok, mut unknown, mut unsent) = (0, 0, 0);
        for (i, result) in results.iter().enumerate() {
            let was_applied = applied.iter().filter(|a| **a == op(i).as_bytes()).count();
            assert!(was_applied <= 1, "round {round}: {} applied twice", op(i));
            let had_it = match result {
                Ok(_) => {
                    ok += 1;
                    true
                }
                Err(ReplicaError::NotSent(GroupError::Unknown)) => {
                    unknown += 1;
                    true
                }
                Err(ReplicaError::Closed | ReplicaError::NotSent(GroupError::Closed)) => {
                    unsent += 1;
                    false
                }
                Err(e) => panic!("round {round}: {}: unexpected outcome {e}", op(i)),
            };
            assert_eq!(
                was_applied == 1,
                had_it,
                "round {round}: {} resolved as {result:?}; applied on node 2: {}",
                op(i),
                was_applied == 1
            );
        }
        eprintln!(
            "{tag} round {round}: {ok} applied, {unknown} unknown (applied on node 2), \
             {unsent} never sent"
        );
        if unknown > 0 {
            return;
        }
    }
    panic!(
        "in {ROUNDS} rounds, no stop came while the daemon held an operation not yet \
         applied: this test proved nothing"
    );
}

#[test]
fn a_dropped_replica_reports_what_the_daemon_had() {
    rounds("replica-stop", |node, group| {
        let r = node
            .enter(|| {
                Replica::builder(group, OpLog::default())
                    .config(config())
                    .start()
            })
            .expect("start");
        r.wait_ready(WAIT * 2, |v| v.len() == 2)
            .expect("ready beside node 2");
        let mut tickets = vec![r.submit(op(0)).unwrap()];
        // (A ticket hands its outcome out once.)
        let first = tickets[0].wait(WAIT);
        assert!(first.is_ok(), "the first operation: {first:?}");
        r.hold_dispatch(true, false);
        tickets.extend((1..OPS).map(|i| r.submit(op(i)).unwrap()));
        std::thread::sleep(SENDING);
        drop(r);
        std::iter::once(first)
            .chain(tickets[1..].iter().map(|t| {
                let result = t.wait(Duration::ZERO);
                assert_ne!(
                    result,
                    Err(ReplicaError::Timeout),
                    "unresolved after the drop"
                );
                result
            }))
            .collect()
    });
}

#[cfg(feature = "tokio")]
mod async_replica {
    use super::*;
    use cpg::replica::{AsyncReplica, AsyncTicket};

    /// Runs `f` on a thread with a big stack inside `node`'s namespace, with a
    /// current-thread runtime (the drivers run on that thread).
    fn on_node<T: Send>(node: &Node, f: impl FnOnce(tokio::runtime::Runtime) -> T + Send) -> T {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(support::BIG_STACK)
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

    /// An `AsyncReplica` ready beside node 2, with its first operation applied and
    /// [`OPS`] − 1 more submitted while it reads no deliveries (see [`SENDING`]).
    async fn start_and_submit(group: GroupName) -> (AsyncReplica<OpLog>, Vec<AsyncTicket<usize>>) {
        let r = Replica::builder(group, OpLog::default())
            .config(config())
            .start_async()
            .await
            .expect("start_async");
        tokio::time::timeout(WAIT * 2, r.wait_ready(|v| v.len() == 2))
            .await
            .expect("ready beside node 2")
            .expect("not ended");
        let mut tickets = vec![r.submit(op(0)).unwrap()];
        tokio::time::timeout(WAIT, tickets[0].wait())
            .await
            .expect("the first operation within WAIT")
            .expect("the first operation applied");
        r.hold_dispatch(true, false);
        tickets.extend((1..OPS).map(|i| r.submit(op(i)).unwrap()));
        tokio::time::sleep(SENDING).await;
        (r, tickets)
    }

    async fn results(tickets: Vec<AsyncTicket<usize>>) -> Results {
        let mut results = Vec::new();
        for t in tickets {
            results.push(
                tokio::time::timeout(WAIT, t.wait())
                    .await
                    .expect("a ticket resolves once its replica stopped"),
            );
        }
        results
    }

    #[test]
    fn a_dropped_async_replica_reports_what_the_daemon_had() {
        rounds("replica-stop-async", |node, group| {
            on_node(node, |rt| {
                rt.block_on(async {
                    let (r, tickets) = start_and_submit(group).await;
                    drop(r);
                    results(tickets).await
                })
            })
        });
    }

    #[test]
    fn an_async_replica_whose_runtime_was_dropped_reports_what_the_daemon_had() {
        rounds("replica-stop-runtime", |node, group| {
            on_node(node, |first| {
                let (r, tickets) = first.block_on(start_and_submit(group));
                drop(first);
                let second = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let results = second.block_on(results(tickets));
                drop(r);
                results
            })
        });
    }
}
