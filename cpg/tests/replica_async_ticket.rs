//! An `AsyncTicket` awaited by two tasks at once (it is `Sync`, and `wait` takes
//! `&self`): both must wake when the operation is applied, not only the last one
//! that polled.
#![cfg(feature = "tokio")]

mod support;

use std::sync::Arc;

use cpg::replica::Replica;
use support::replica::Count;
use support::stream::block_on_node;
use support::{unique_group, WAIT};
use tokio::time::timeout;

#[test]
fn two_tasks_waiting_on_one_ticket_both_wake() {
    let group = unique_group("shared-ticket");
    block_on_node(cpg_testkit::shared(), move || async move {
        let r = Replica::builder(group, Count::default())
            .start_async()
            .await
            .unwrap();
        timeout(WAIT, r.wait_ready(|_| true))
            .await
            .unwrap()
            .unwrap();
        for round in 0..5 {
            let t = Arc::new(r.submit(format!("op {round}")).unwrap());
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let t = Arc::clone(&t);
                    tokio::spawn(async move { t.wait().await })
                })
                .collect();
            for w in waiters {
                let v = timeout(WAIT, w)
                    .await
                    .expect("a waiter of the ticket was never woken")
                    .unwrap()
                    .unwrap();
                assert_eq!(v.version, round + 1);
            }
        }
    });
}

/// `AsyncReplica::submit_many` on the shared node: a batch's tickets come in its
/// order with consecutive sequence numbers, each resolves with its own version (one
/// more than the one before: nothing else writes to this group); once the replica
/// ended, a batch is refused whole with `Closed` and the state does not move.
#[test]
fn an_async_batch_resolves_in_order_and_is_refused_whole_once_ended() {
    let group = unique_group("async-batch");
    block_on_node(cpg_testkit::shared(), move || async move {
        let r = Replica::builder(group, Count::default())
            .start_async()
            .await
            .unwrap();
        timeout(WAIT, r.wait_ready(|_| true))
            .await
            .unwrap()
            .unwrap();
        let base = r.summary().version;
        let tickets = r.submit_many((0..20).map(|n| format!("op {n}"))).unwrap();
        assert_eq!(tickets.len(), 20);
        for (i, t) in tickets.iter().enumerate() {
            assert_eq!(t.seq(), i as u64 + 1);
            let outcome = timeout(WAIT, t.wait()).await.unwrap().unwrap();
            assert_eq!(outcome.version, base + i as u64 + 1, "ticket {}", t.seq());
        }
        assert!(r.submit_many(Vec::<Vec<u8>>::new()).unwrap().is_empty());
        assert_eq!(r.read(|s| s.0), 20);

        timeout(WAIT, r.leave()).await.unwrap().unwrap();
        while timeout(WAIT, r.next_event()).await.unwrap().is_some() {}
        let refused = r.submit_many(["late 1", "late 2"]).map(|t| t.len());
        assert_eq!(refused, Err(cpg::replica::ReplicaError::Closed));
        assert_eq!(r.read(|s| s.0), 20);
    });
}
