//! A panic inside the application's `Replicated` code must end the blocking replica
//! (as it ends the async one): tickets resolve with an error (`NotSent(Unknown)` for
//! those the daemon had, `Closed` for the others) and `next_event` reports
//! the end, instead of waiting forever for a driver thread that is gone.

mod support;

use std::time::Instant;

use cpg::group::GroupError;
use cpg::replica::{OpInfo, Replica, ReplicaError, Replicated, RestoreError};
use support::{unique_group, WAIT};

/// The outcome of an operation delivered to the group but not applied here.
fn in_doubt() -> ReplicaError {
    ReplicaError::NotSent(GroupError::Unknown)
}

#[derive(Default)]
struct Boom(u64);

impl Replicated for Boom {
    type Output = ();

    fn apply(&mut self, op: &[u8], _info: &OpInfo) {
        if op == b"boom" {
            panic!("the application's apply panics");
        }
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
fn a_panicking_apply_ends_the_replica_instead_of_hanging_its_tickets() {
    let node = cpg_testkit::shared();
    let group = unique_group("apply-panic");
    let replica = node
        .enter(|| Replica::start(group, Boom::default()))
        .unwrap();
    assert!(replica.wait_ready(WAIT, |_| true).is_some());
    replica.submit("ok").unwrap().wait(WAIT).unwrap();
    let boom = replica.submit("boom").unwrap();
    // "boom" may already have been delivered and have ended the replica by now, so a
    // submit can be refused at once; if it is taken, its ticket must not hang.
    let later = replica.submit("after");
    let start = Instant::now();
    // "boom" was in the daemon's hands (the replica stops on delivering it): the
    // others may have applied it.
    assert_eq!(boom.wait(WAIT), Err(in_doubt()));
    match later {
        Ok(ticket) => assert!(matches!(
            ticket.wait(WAIT),
            Err(ReplicaError::Closed | ReplicaError::NotSent(GroupError::Unknown))
        )),
        Err(e) => assert_eq!(e, ReplicaError::Closed),
    }
    assert!(start.elapsed() < WAIT);
    // The end is reported: next_event drains and then says None without waiting out
    // its timeout.
    let start = Instant::now();
    while replica.next_event(WAIT).is_some() {}
    assert!(start.elapsed() < WAIT, "next_event waited out its timeout");
    assert_eq!(
        replica.submit("more").map(|t| t.seq()),
        Err(ReplicaError::Closed)
    );
    drop(replica);
}

#[cfg(feature = "tokio")]
#[test]
fn a_panicking_apply_ends_the_async_replica_too() {
    let group = unique_group("apply-panic-async");
    support::big_stack(move || {
        cpg_testkit::shared().enter(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(8 << 20)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r = Replica::builder(group, Boom::default())
                    .start_async()
                    .await
                    .unwrap();
                tokio::time::timeout(WAIT, r.wait_ready(|_| true))
                    .await
                    .unwrap()
                    .unwrap();
                let boom = r.submit("boom").unwrap();
                let out = tokio::time::timeout(WAIT, boom.wait()).await;
                assert_eq!(out, Ok(Err(in_doubt())));
                assert!(tokio::time::timeout(WAIT, async {
                    while r.next_event().await.is_some() {}
                })
                .await
                .is_ok());
            })
        })
    });
}
