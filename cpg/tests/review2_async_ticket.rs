//! An `AsyncTicket` awaited by two tasks at once (it is `Sync`, and `wait` takes
//! `&self`): both must wake when the operation is applied, not only the last one
//! that polled.
#![cfg(feature = "tokio")]

mod support;

use std::sync::Arc;

use cpg::replica::{OpInfo, Replica, Replicated, RestoreError};
use support::{big_stack, unique_group, WAIT};
use tokio::time::timeout;

#[derive(Default)]
struct Count(u64);

impl Replicated for Count {
    fn apply(&mut self, _op: &[u8], _info: &OpInfo) {
        self.0 += 1;
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        self.0 = u64::from_le_bytes(s.try_into()?);
        Ok(())
    }
    fn digest(&self) -> u64 {
        self.0
    }
}

#[test]
fn two_tasks_waiting_on_one_ticket_both_wake() {
    let group = unique_group("review2-ticket");
    big_stack(move || {
        cpg_testkit::shared().enter(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
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
                        assert_eq!(v, round + 1);
                    }
                }
            })
        })
    });
}
