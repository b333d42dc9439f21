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
