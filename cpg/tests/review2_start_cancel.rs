//! `start_async` cancelled before it returned (dropped by a `select!` or a timeout)
//! must not leave its driver task behind, joined to the group for good: the process
//! could then never join that group again (a process joins a group once per node).
#![cfg(feature = "tokio")]

mod support;

use std::time::Duration;

use cpg::group::Group;
use cpg::replica::{OpInfo, Replica, Replicated, RestoreError};
use cpg::{Handle, Member};
use support::{big_stack, unique_group, NoCallbacks, WAIT};

#[derive(Default)]
struct Nothing;

impl Replicated for Nothing {
    fn apply(&mut self, _op: &[u8], _info: &OpInfo) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _s: &[u8]) -> Result<(), RestoreError> {
        Ok(())
    }
    fn digest(&self) -> u64 {
        0
    }
}

fn members(name: &cpg::GroupName) -> Vec<Member> {
    Handle::new(NoCallbacks).unwrap().members(name).unwrap()
}

#[test]
fn a_cancelled_start_async_leaves_no_member_behind() {
    let group = unique_group("review2-cancel-g");
    let replica = unique_group("review2-cancel-r");
    big_stack(move || {
        cpg_testkit::shared().enter(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                // Polled once (it spawns the driver and waits for the join), then
                // dropped.
                tokio::select! {
                    biased;
                    _ = Group::builder(group).start_async() => panic!("started in one poll"),
                    _ = std::future::ready(()) => {}
                }
                tokio::select! {
                    biased;
                    _ = Replica::builder(replica, Nothing).start_async() => panic!("started in one poll"),
                    _ = std::future::ready(()) => {}
                }
                // Time for a leftover driver to connect and join.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert_eq!(members(&group), [], "a ghost member of the group");
                assert_eq!(members(&replica), [], "a ghost member of the replica's group");
                let g = tokio::time::timeout(WAIT, Group::builder(group).start_async())
                    .await
                    .unwrap()
                    .expect("the group can be joined again");
                g.leave().await.unwrap();
            })
        })
    });
}
