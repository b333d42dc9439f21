//! The group and replica layers' settings at their edges: `Duration::MAX` as "wait
//! without bound" (and other huge durations) in the blocking client calls and in the
//! configuration, without an arithmetic overflow panic; and a send queue of 0, which
//! can send nothing (a replica over it never synced and its tickets never resolved),
//! refused at start.

mod support;

use std::time::Duration;

use cpg::group::{self, Config, Event, Group, GroupError};
use cpg::replica::{self, Replica, ReplicaError};
use cpg::retry::Backoff;
use support::replica::Count;
use support::{unique_group, WAIT};

#[test]
fn group_calls_take_duration_max() {
    let node = cpg_testkit::shared();
    let group = node
        .enter(|| Group::join(unique_group("max-durations")))
        .unwrap();
    // The first view is queued already or soon: next_event(MAX) returns it.
    assert!(matches!(
        group.next_event(Duration::MAX),
        Some(Event::View(_))
    ));
    assert!(group.wait_view(Duration::MAX, |_| true).is_some());
    group.leave(Duration::MAX).unwrap();
}

#[test]
fn group_config_with_huge_retry_delays_does_not_panic_its_thread() {
    let node = cpg_testkit::shared();
    let mut config = Config::default();
    config.send_retry_initial = Duration::MAX / 2 + Duration::from_secs(1);
    config.send_retry_max = Duration::MAX;
    config.reconnect = Backoff {
        initial: Duration::MAX,
        max_delay: Duration::MAX,
        timeout: Duration::MAX,
        max_attempts: u32::MAX,
    };
    let group = node
        .enter(|| {
            Group::builder(unique_group("huge-delays"))
                .config(config)
                .start()
        })
        .unwrap();
    assert!(group.wait_view(WAIT, |_| true).is_some());
    let id = group.send_confirmed(b"x".to_vec()).unwrap();
    id.wait().unwrap();
    group.leave(WAIT).unwrap();
}

#[test]
fn replica_with_unbounded_timeouts_works() {
    let node = cpg_testkit::shared();
    let mut config = replica::Config::default();
    config.round_timeout = Duration::MAX;
    config.verify_interval = Some(Duration::MAX);
    let r = node
        .enter(|| {
            Replica::builder(unique_group("max-durations-r"), Count::default())
                .config(config)
                .start()
        })
        .unwrap();
    assert!(r.wait_ready(Duration::MAX, |_| true).is_some());
    let v = r.submit("a").unwrap().wait(WAIT).unwrap();
    assert_eq!(v.version, 1);
    assert!(r.next_event(Duration::MAX).is_some());
    r.leave(Duration::MAX).unwrap();
}

#[test]
fn a_queue_limit_of_zero_is_refused_at_start() {
    let mut config = Config::default();
    config.queue_limit = 0;
    let r = cpg_testkit::shared().enter(|| {
        Replica::builder(unique_group("queue-zero-r"), Count::default())
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
        group::Group::builder(unique_group("queue-zero-g"))
            .config(config)
            .start()
    });
    assert!(matches!(
        g,
        Err(GroupError::Connect(cpg::Error::InvalidArgument(_)))
    ));
}
