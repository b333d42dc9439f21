//! A group layer with a send queue of 0 can send nothing: a replica over it never
//! synced and its tickets never resolved. Such settings are refused at start.

mod support;

use std::time::Duration;

use cpg::group::{self, GroupError};
use cpg::replica::{OpInfo, Replica, ReplicaError, Replicated, RestoreError};
use support::unique_group;

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

#[test]
fn a_queue_limit_of_zero_is_refused_at_start() {
    let mut config = group::Config::default();
    config.queue_limit = 0;
    let r = cpg_testkit::shared().enter(|| {
        Replica::builder(unique_group("review2-q0"), Nothing)
            .group_config(config.clone())
            .start()
    });
    match r {
        Err(ReplicaError::Join(GroupError::Connect(cpg::Error::InvalidArgument(_)))) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(r) => {
            let ready = r.wait_ready(Duration::from_secs(5), |_| true).is_some();
            let t = r.submit("x").unwrap().wait(Duration::from_secs(5));
            panic!("started; ready: {ready}, ticket: {t:?}");
        }
    }
    let g = cpg_testkit::shared().enter(|| {
        group::Group::builder(unique_group("review2-q0g"))
            .config(config)
            .start()
    });
    assert!(matches!(
        g,
        Err(GroupError::Connect(cpg::Error::InvalidArgument(_)))
    ));
}
