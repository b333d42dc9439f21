//! What a service author relies on (issue 23, items 1 to 5), on the simulator: the
//! state learns every view at one point of the history; a ticket's output is the one
//! every member computed; a read barrier passes once everything ordered before it is
//! applied to the agreed state; the merge hint decides a heal; every operation can be
//! reported.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{config, m, Config, Event, Member, Phase, Sim};
use crate::replica::RoundId;

/// Node `i`'s view changes as it reported them: (round, members, version).
fn applied_views(sim: &Sim, i: usize) -> Vec<(RoundId, Vec<Member>, u64)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ViewApplied {
                round,
                members,
                version,
            } => Some((*round, members.clone(), *version)),
            _ => None,
        })
        .collect()
}

/// Where operation (`origin`, `seq`) is in node `i`'s history (0 first).
fn position(sim: &Sim, i: usize, origin: Member, seq: u64) -> usize {
    sim.ops(i)
        .iter()
        .position(|o| *o == (origin, seq))
        .unwrap_or_else(|| panic!("node {i}: no operation {seq} of {origin}"))
}

/// The barriers node `i` saw pass: (id, version).
fn barriers(sim: &Sim, i: usize) -> Vec<(u64, u64)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Barrier { id, version } => Some((*id, *version)),
            _ => None,
        })
        .collect()
}

/// Node `i`'s reported outcome of its operation `seq`: (version, output).
fn outcome(sim: &Sim, i: usize, seq: u64) -> (u64, Option<usize>) {
    let found: Vec<_> = sim.nodes[i]
        .outcomes
        .iter()
        .filter(|o| o.0 == seq)
        .map(|o| (o.1, o.2))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "node {i}: operation {seq} reported {found:?}"
    );
    found[0]
}

// Item 1: membership at an agreed point of the history.

/// A view is applied after every operation delivered before the view change (here the
/// last one of the member that fails) and before every one delivered after it (here
/// one its sender sent before it saw the change), at the same version and round on
/// every member.
#[test]
fn every_member_learns_a_view_at_the_same_point_of_the_history() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    for i in 0..6 {
        sim.submit(i % 3, &format!("w{i}"));
    }
    sim.settle();
    let last = sim.submit(2, "last words");
    sim.settle();
    // Sent before the sender sees the change, ordered after it.
    let late = sim.submit(0, "sent before the change was seen");
    sim.kill(2);
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    let reported: Vec<_> = (0..2).map(|i| applied_views(&sim, i)).collect();
    assert_eq!(reported[0], reported[1], "the same rounds and versions");
    let (_, members, at) = reported[0].last().unwrap().clone();
    assert_eq!(members, vec![m(0), m(1)]);
    for i in 0..2 {
        let log = sim.nodes[i].machine.app();
        assert_eq!(log.views.last(), Some(&(at, members.clone())), "node {i}");
        assert!(position(&sim, i, m(2), last) < at as usize, "node {i}");
        assert_eq!(
            position(&sim, i, m(0), late),
            at as usize,
            "node {i}: the first operation after the change"
        );
    }
    assert_eq!(
        sim.nodes[0].machine.app().views,
        sim.nodes[1].machine.app().views
    );
}

/// A member that restores the state learns the view after restoring it: it ends with
/// the state the others have, the views of the history it restored included, and
/// makes the call once.
#[test]
fn a_member_that_restores_learns_the_view_after_the_state_it_restored() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    for i in 0..4 {
        sim.submit(i % 2, &format!("w{i}"));
    }
    sim.settle();
    sim.view(0, &[0, 1, 2]);
    let during = sim.submit(1, "during the round");
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.nodes[2].machine.stats().restores, 1);
    let views = &sim.nodes[2].machine.app().views;
    assert_eq!(views, &sim.nodes[0].machine.app().views);
    assert_eq!(
        views,
        &vec![(0, vec![m(0), m(1)]), (4, vec![m(0), m(1), m(2)])]
    );
    assert_eq!(position(&sim, 2, m(1), during), 4);
    for i in 0..3 {
        let calls = applied_views(&sim, i);
        assert_eq!(calls.last().unwrap().1, vec![m(0), m(1), m(2)], "node {i}");
    }
    assert_eq!(applied_views(&sim, 2).len(), 1, "the joiner's one call");
}

/// Failed attempts and a verification's round in the same view apply the view once.
#[test]
fn a_view_is_applied_once_through_failed_attempts_and_later_rounds() {
    let mut sim = Sim::new(3, config());
    // The first coordinator never speaks: attempt 0 fails at its deadline.
    sim.nodes[0].silent = true;
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.advance(Duration::from_secs(11));
    sim.settle();
    sim.advance(Duration::from_secs(11));
    sim.settle();
    sim.assert_converged(&[1, 2]);
    for i in 1..3 {
        assert!(sim.nodes[i]
            .events
            .iter()
            .any(|e| matches!(e, Event::RoundFailed { attempt: 0, .. })));
        assert_eq!(applied_views(&sim, i).len(), 1, "node {i}");
    }
    // A divergence starts another round in the view: no second call.
    sim.nodes[2].salt.store(5, Ordering::SeqCst);
    sim.nodes[1].machine.verify();
    sim.settle();
    sim.assert_converged(&[1, 2]);
    assert_eq!(sim.nodes[2].machine.stats().restores, 1);
    for i in 1..3 {
        assert_eq!(applied_views(&sim, i).len(), 1, "node {i}");
        assert_eq!(sim.nodes[i].machine.app().views.len(), 1, "node {i}");
    }
}

/// A view whose round never ends (the view changed first, or its members gave up) is
/// never applied; what its members did in it is applied before the next view that
/// is, and a member that came and went in it is not in that view's list.
#[test]
fn views_whose_round_did_not_end_are_never_applied() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.submit(0, "before");
    sim.settle();
    // Node 3 joins and writes; it fails before the round ends.
    sim.view(0, &[0, 1, 2]);
    sim.step(0); // the start
    let brief = sim.submit(2, "from a brief member");
    while !sim.delivered[0].contains(&(m(2), brief)) {
        assert!(sim.step(0));
    }
    assert_eq!(sim.nodes[0].machine.phase(), Phase::Syncing);
    sim.kill(2);
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    for i in 0..2 {
        let views = &sim.nodes[i].machine.app().views;
        assert_eq!(views.len(), 2, "node {i}: {views:?}");
        assert!(views.iter().all(|(_, ms)| !ms.contains(&m(2))), "node {i}");
        let at = views[1].0 as usize;
        assert!(position(&sim, i, m(2), brief) < at, "node {i}");
    }

    // Give-ups: one attempt allowed, a silent coordinator.
    let mut sim = Sim::new(
        2,
        Config {
            max_attempts: 1,
            ..config()
        },
    );
    sim.nodes[0].silent = true;
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.advance(Duration::from_secs(11));
    assert!(sim.settle_watching_rejoin(1), "node 2 gave up");
    assert!(applied_views(&sim, 1).is_empty());
    sim.nodes[0].silent = false;
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(applied_views(&sim, 1).len(), 1);
}

// Item 2: results.

/// Every own operation's output (its place in the history, as `Log::apply` returns
/// it) is the place it has in every member's history: submitted from three members
/// at once, some queued during a round that brings a joiner in.
#[test]
fn every_ticket_resolves_with_the_output_every_member_computed() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    let mut mine: Vec<(usize, u64)> = Vec::new();
    for r in 0..6 {
        for i in 0..2 {
            mine.push((i, sim.submit(i, &format!("{i}.{r}"))));
        }
        sim.step(0);
    }
    sim.view(0, &[0, 1, 2]);
    for r in 0..6 {
        for i in 0..3 {
            mine.push((i, sim.submit(i, &format!("{i}.late{r}"))));
        }
        sim.step(0);
    }
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    for (i, seq) in mine {
        let place = position(&sim, 0, m(i), seq) + 1;
        assert_eq!(
            outcome(&sim, i, seq),
            (place as u64, Some(place)),
            "node {i} op {seq}"
        );
    }
}

/// When a view changes during a round, the members apply what was queued to the
/// states they hold, which the next round may replace: the outcome of an own
/// operation waits for that round. A member whose state was replaced does not report
/// the output it computed on it (here: node 3 would say 5 where the agreed history
/// says 12), but that the operation was applied without an output here; one whose
/// state was the agreed one reports its output.
#[test]
fn an_output_computed_on_a_state_that_is_replaced_is_never_reported() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.view(1, &[2]);
    sim.settle();
    for i in 0..10 {
        sim.submit(i % 2, &format!("majority {i}"));
    }
    for i in 0..3 {
        sim.submit(2, &format!("alone {i}"));
    }
    sim.settle();
    // The sides meet; both write while the round runs.
    sim.view(0, &[0, 1, 2]);
    let x = sim.submit(2, "x");
    let y = sim.submit(0, "y");
    for _ in 0..3 {
        sim.step(0); // the start, y, x
    }
    assert_eq!(sim.nodes[2].machine.stats().queued_ops, 2);
    assert_eq!(sim.nodes[2].machine.phase(), Phase::Syncing);
    // The view changes before the round ends.
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(position(&sim, 0, m(0), y), 10);
    assert_eq!(position(&sim, 0, m(2), x), 11);
    assert_eq!(outcome(&sim, 0, y), (11, Some(11)), "the agreed state's");
    assert_eq!(
        outcome(&sim, 2, x),
        (12, None),
        "no output from the replaced state"
    );
    let Some(Event::Restored { discarded, .. }) = sim.restored(2).last().copied() else {
        panic!("node 3 restored")
    };
    assert_eq!(discarded.len(), 3, "its three writes made alone");
}

// Item 3: read barriers.

/// A barrier passes once everything ordered before it is applied here: another
/// member's operations already ordered (acknowledged or not) and this member's own
/// submitted before it; its version is the state's then. It applies nothing.
#[test]
fn a_barrier_passes_after_everything_ordered_before_it() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    let theirs: Vec<u64> = (0..3).map(|k| sim.submit(1, &format!("t{k}"))).collect();
    sim.pump();
    let own = sim.submit(0, "own");
    let id = sim.nodes[0].machine.barrier();
    let applied = sim.nodes[0].machine.stats().applied;
    while barriers(&sim, 0).is_empty() {
        assert!(sim.step(0), "the barrier passes");
    }
    assert_eq!(barriers(&sim, 0), vec![(id, 4)]);
    for seq in theirs {
        position(&sim, 0, m(1), seq);
    }
    position(&sim, 0, m(0), own);
    sim.settle();
    assert_eq!(sim.nodes[0].machine.stats().applied, applied + 4);
    assert_eq!(sim.nodes[0].machine.summary().version, 4);
    // Another member's barrier is its own.
    let other = sim.nodes[1].machine.barrier();
    sim.settle();
    assert_eq!(barriers(&sim, 0), vec![(id, 4)]);
    assert_eq!(barriers(&sim, 1), vec![(other, 4)]);
}

/// During a round the barrier waits for its end: the state is then the agreed one
/// (here restored from the others) with every operation ordered before the marker.
#[test]
fn a_barrier_during_a_round_passes_on_the_agreed_state() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    for k in 0..5 {
        sim.submit(0, &format!("w{k}"));
    }
    sim.settle();
    sim.view(0, &[0, 1, 2]);
    sim.step(0); // the start
    sim.submit(1, "queued");
    sim.pump();
    let id = sim.nodes[2].machine.barrier();
    while barriers(&sim, 2).is_empty() {
        assert!(sim.step(0), "the barrier passes");
        if barriers(&sim, 2).is_empty() {
            assert_eq!(sim.nodes[2].machine.summary().version, 0, "not yet synced");
        }
    }
    assert_eq!(barriers(&sim, 2), vec![(id, 6)]);
    assert_eq!(sim.ops(2).len(), 6);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
}

/// Barriers called before the marker leaves share it; those called while it travels
/// share the next one, sent when it comes back: two markers for four barriers. A
/// marker reported lost hands its waiters on to a new one.
#[test]
fn concurrent_barriers_share_markers() {
    let mut sim = Sim::new(2, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    let mach = &mut sim.nodes[0].machine;
    let a = mach.barrier();
    assert_eq!(mach.barrier(), a, "not yet sent: shared");
    sim.pump();
    let mach = &mut sim.nodes[0].machine;
    let b = mach.barrier();
    assert_eq!(b, a + 1);
    assert_eq!(mach.barrier(), b, "the next one, shared");
    assert_eq!(mach.stats().marks_sent, 1, "sent when the first comes back");
    sim.settle();
    assert_eq!(sim.nodes[0].machine.stats().marks_sent, 2);
    assert_eq!(barriers(&sim, 0), vec![(a, 0), (b, 0)]);
    assert_eq!(sim.nodes[0].machine.summary().version, 0, "no version");

    // Lost: the driver says so; the barriers waiting for the next one get it.
    let mach = &mut sim.nodes[0].machine;
    let c = mach.barrier();
    while mach.poll_effect().is_some() {}
    let d = mach.barrier();
    assert_eq!(d, c + 1);
    mach.mark_lost(c);
    assert_eq!(mach.stats().marks_sent, 4, "the next one sent at once");
    sim.settle();
    assert_eq!(barriers(&sim, 0).last(), Some(&(d, 0)));
}

/// A barrier whose marker was delivered in a round cut short by a view change does
/// not pass on the state the member held then (the joiner's empty one) but once the
/// next round ends, on the agreed state.
#[test]
fn a_barrier_of_a_round_cut_short_passes_after_the_next_round() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    for k in 0..5 {
        sim.submit(1, &format!("w{k}"));
    }
    sim.settle();
    sim.view(0, &[0, 1, 2]);
    let id = sim.nodes[2].machine.barrier();
    sim.step(0); // the start
    sim.step(0); // the marker
    assert!(barriers(&sim, 2).is_empty());
    sim.view(0, &[0, 1, 2]);
    assert!(
        barriers(&sim, 2).is_empty(),
        "not on the joiner's own state"
    );
    sim.settle();
    assert_eq!(barriers(&sim, 2), vec![(id, 5)]);
    sim.assert_converged(&[0, 1, 2]);
}

// Item 4: merges by the application's hint.

/// After a heal the history with the higher merge hint wins over a longer one, and
/// every member's summary carries the hint; with a choice by version alone the
/// longer one would win. Both sides learned their views; after the heal everyone has
/// the winner's and the merged view.
#[test]
fn the_higher_merge_hint_wins_a_heal_over_a_longer_history() {
    for by_version in [false, true] {
        let mut sim = Sim::new(3, config());
        if by_version {
            for n in &sim.nodes {
                n.pick_last.store(2, Ordering::SeqCst);
            }
        }
        sim.view(0, &[0, 1, 2]);
        sim.settle();
        sim.view(0, &[0, 1]);
        sim.view(1, &[2]);
        sim.settle();
        for k in 0..5 {
            sim.submit(k % 2, &format!("majority {k}"));
        }
        sim.submit(2, "hint 7");
        sim.settle();
        let minority = sim.ops(2);
        sim.view(0, &[0, 1, 2]);
        sim.settle();
        sim.assert_converged(&[0, 1, 2]);
        let winner = if by_version { 0 } else { 2 };
        for i in 0..3 {
            let synced = sim.nodes[i].events.iter().rev().find_map(|e| match e {
                Event::Synced {
                    source, summary, ..
                } => Some((*source, summary.hint)),
                _ => None,
            });
            let hint = if by_version { 0 } else { 7 };
            assert_eq!(synced, Some((m(winner), hint)), "node {i}");
        }
        if !by_version {
            assert_eq!(sim.ops(0), minority);
        }
        let views = &sim.nodes[0].machine.app().views;
        let side = if by_version {
            vec![m(0), m(1)]
        } else {
            vec![m(2)]
        };
        let n = views.len();
        assert_eq!(views[n - 2].1, side, "by version {by_version}");
        assert_eq!(views[n - 1].1, vec![m(0), m(1), m(2)]);
    }
}

// Item 5: every operation reported.

/// With `report_changes`, every member reports every operation as it applies it,
/// in the agreed order, with its version; without it, none.
#[test]
fn changes_are_reported_for_every_operation_when_asked() {
    for report in [true, false] {
        let mut sim = Sim::new(
            3,
            Config {
                report_changes: report,
                ..config()
            },
        );
        sim.view(0, &[0, 1, 2]);
        sim.settle();
        for k in 0..9 {
            sim.submit(k % 3, &format!("w{k}"));
        }
        sim.settle();
        for i in 0..3 {
            let changes: Vec<(Member, u64, u64)> = sim.nodes[i]
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Changed {
                        origin,
                        seq,
                        version,
                    } => Some((*origin, *seq, *version)),
                    _ => None,
                })
                .collect();
            let want: Vec<(Member, u64, u64)> = if report {
                sim.ops(0)
                    .into_iter()
                    .zip(1..)
                    .map(|((o, s), v)| (o, s, v))
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(changes, want, "node {i}, report {report}");
        }
    }
}
