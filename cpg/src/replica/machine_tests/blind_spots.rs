//! Tests for the blind spots of issue 23 (item 9): bugs planted one at a time in the
//! machine that no other test caught. Each test here failed with its bug planted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::bench::Bench;
use super::{config, config_chunk, m, Config, Event, Failure, Phase, Sim};

/// (a) Operations delivered during a round are applied at its end in the agreed
/// order, once each: several in flight from one origin at once (pipelined, not each
/// awaited), interleaved with other origins'.
#[test]
fn operations_pipelined_during_a_round_are_applied_after_it_in_the_agreed_order() {
    let mut sim = Sim::new(3, config_chunk(64));
    sim.view(0, &[0, 1]);
    sim.settle();
    for i in 0..20 {
        sim.submit(0, &format!("before {i}"));
    }
    sim.settle();
    // Node 3 joins: a round with a transfer. Submits go out while it runs.
    sim.view(0, &[0, 1, 2]);
    for i in 0..5 {
        sim.submit(1, &format!("pipelined {i}a"));
        sim.submit(1, &format!("pipelined {i}b"));
        sim.pump();
        sim.submit(2, &format!("joiner {i}"));
        sim.submit(0, &format!("source {i}"));
        sim.pump();
    }
    let mut queued = 0;
    while sim.step(0) {
        queued = queued.max(sim.nodes[2].machine.stats().queued_ops);
    }
    assert!(
        queued >= 20,
        "the operations were queued during the round: {queued}"
    );
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.nodes[2].machine.stats().restores, 1);
    for i in 0..3 {
        assert_eq!(sim.ops(i), sim.delivered[0], "node {i}: the agreed order");
    }
}

/// (b) After the round deadline fires (a trouble report), it is armed again: one
/// report per deadline, not one per call, and another one a deadline later if the
/// round is still stuck.
#[test]
fn the_round_deadline_is_armed_again_after_it_fires() {
    // Coordinator m(0) never starts the round.
    let mut b = Bench::new(config(), 1, 2);
    let start = b.now;
    b.advance(Duration::from_secs(10));
    assert_eq!(b.troubles(), 1);
    b.advance(Duration::ZERO);
    assert_eq!(b.troubles(), 1, "one report per deadline");
    assert_eq!(b.mach.poll_timeout(), Some(start + Duration::from_secs(20)));
    b.advance(Duration::from_secs(10));
    assert_eq!(b.troubles(), 2, "armed again");
}

/// (c) `poll_timeout` is the earlier of the round deadline and the next periodic
/// verification (the drivers sleep until it), and during a transfer the earlier of
/// the progress and the overall deadline.
#[test]
fn poll_timeout_is_the_earliest_deadline() {
    let secs = Duration::from_secs;
    for (round, verify) in [(10, 5), (3, 5)] {
        let cfg = Config {
            round_timeout: secs(round),
            verify_interval: Some(secs(verify)),
            ..config()
        };
        let b = Bench::new(cfg, 0, 2);
        assert_eq!(
            b.mach.poll_timeout(),
            Some(b.now + secs(round.min(verify))),
            "round {round} s, verify {verify} s"
        );
    }
    // A transfer of 10,000 bytes: a chunk 9 s after the header would move the
    // progress deadline to 19 s; the overall one is at 10 s and some milliseconds.
    let mut b = Bench::new(config(), 1, 2);
    let round = b.transfer_from_m0();
    let start = b.now;
    b.header(round, 10_000, 10);
    b.now += secs(9);
    b.chunk(round, 0, 1000);
    let t = b.mach.poll_timeout().expect("a deadline");
    assert!(
        t > start + secs(10) && t < start + secs(11),
        "{:?} after the header",
        t - start
    );
}

/// (d) A failed restore leaves the member's state as it was: the operations queued
/// during the round, and those delivered until it has left, belong on the chosen
/// state, which it does not have, so none is applied to its old state (not even at
/// the next view). Its own ones among them, applied by the others, are reported
/// applied once the state it catches up with holds them.
#[test]
fn a_failed_restore_applies_nothing_queued_to_the_old_state() {
    let mut sim = Sim::new(2, config());
    sim.view(0, &[0]);
    sim.view(1, &[1]);
    sim.settle();
    for i in 0..3 {
        sim.submit(0, &format!("a{i}"));
    }
    let mine = sim.submit(1, "mine");
    sim.settle();
    // Merge; node 2 cannot restore.
    sim.nodes[1].broken.store(1, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    sim.submit(0, "during 0");
    let during = sim.submit(1, "during 1");
    let rejoin = sim.settle_watching_rejoin(1);
    assert!(rejoin);
    assert!(sim.nodes[1].events.contains(&Event::RoundFailed {
        attempt: 0,
        why: Failure::RestoreFailed
    }));
    // Delivered after the failure, before it has left; one of them its own.
    sim.submit(0, "after 0");
    let after = sim.submit(1, "after 1");
    sim.settle();
    let applied = |sim: &Sim, seq: u64| {
        sim.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Applied { seq: s, .. } if *s == seq))
            .count()
    };
    assert_eq!(sim.nodes[1].machine.phase(), Phase::Detached);
    assert_eq!(sim.ops(1), vec![(m(1), mine)], "the old state, untouched");
    assert_eq!(sim.nodes[1].machine.summary().version, 1);
    assert_eq!(applied(&sim, during) + applied(&sim, after), 0);
    // It joins again (a new view): still nothing applied to the old state.
    sim.nodes[1].broken.store(0, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    assert_eq!(sim.ops(1), vec![(m(1), mine)], "at the next view");
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.ops(1).len(), 7);
    // Its operations applied by the others are applied here now, once each; the one
    // the chosen history does not hold is reported discarded.
    assert_eq!((applied(&sim, during), applied(&sim, after)), (1, 1));
    let discarded: Vec<u64> = sim.nodes[1]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Restored { discarded, .. } => Some(discarded.iter().map(|d| d.seq)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(discarded, vec![mine]);
}
