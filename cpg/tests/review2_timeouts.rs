//! `Duration::MAX` as "wait without bound" (and other huge durations) in the blocking
//! client calls and in the layers' configuration: no arithmetic overflow panics.

mod support;

use std::time::Duration;

use cpg::group::{Config, Event, Group};
use cpg::replica::{self, Replica};
use cpg::retry::Backoff;
use support::replica::Count;
use support::{unique_group, WAIT};

#[test]
fn group_calls_take_duration_max() {
    let node = cpg_testkit::shared();
    let group = node
        .enter(|| Group::join(unique_group("review2-max")))
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
            Group::builder(unique_group("review2-huge"))
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
            Replica::builder(unique_group("review2-rmax"), Count::default())
                .config(config)
                .start()
        })
        .unwrap();
    assert!(r.wait_ready(Duration::MAX, |_| true).is_some());
    let v = r.submit("a").unwrap().wait(WAIT).unwrap();
    assert_eq!(v, 1);
    assert!(r.next_event(Duration::MAX).is_some());
    r.leave(Duration::MAX).unwrap();
}
