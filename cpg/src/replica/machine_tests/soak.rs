//! The soak test of the replica protocol: seeded random histories through the
//! simulator of the parent module.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{config_chunk, m, Event, Member, Phase, Sim};

/// A small deterministic generator for the soak test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 1,000 seeded random histories of 4 members: partitions and merges at random points
/// (messages not yet delivered follow the view change), writes anywhere, deadlines
/// expiring at random stages. Whenever a side has delivered everything and its
/// members are synced, they hold the same history; after a final merge every member
/// holds the same history, each operation once, and every own operation that was
/// applied and is missing was reported discarded (no silent loss). Checked to fail on
/// planted defects (queued operations applied before the restore; skipping the
/// transfer when only the own summary equals the chosen one; discards not reported).
#[test]
fn soak_random_partitions_merges_writes_and_deadlines_always_converge() {
    let (mut lost, mut kept_ops) = (0, 0);
    for seed in 1..=1000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let n = 4;
        let mut sim = Sim::new(n, config_chunk(64));
        sim.view(0, &[0, 1, 2, 3]);
        for _ in 0..60 {
            match rng.below(10) {
                0 => {
                    // A new split into one or two sides.
                    let mask = rng.below(16);
                    let a: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                    let b: Vec<usize> = (0..n).filter(|i| mask & (1 << i) == 0).collect();
                    // Sends so far are ordered where their senders were; what a sender
                    // that moves away had not got delivered is lost (CPG delivers
                    // nothing from a sender outside the view, and a sender's messages
                    // in order).
                    sim.pump();
                    for (p, side) in [(0, &a), (1, &b)] {
                        sim.wire[p].retain(|(from, _)| side.contains(from));
                    }
                    for (p, side) in [(0, &a), (1, &b)] {
                        if !side.is_empty() {
                            sim.view(p, side);
                        }
                    }
                }
                1 => sim.advance(Duration::from_secs(11)),
                2..=4 => {
                    let i = rng.below(n as u64) as usize;
                    sim.submit(i, &format!("s{seed}-{}", rng.below(1000)));
                }
                _ => {
                    for _ in 0..rng.below(6) {
                        let p = rng.below(2) as usize;
                        sim.step(p);
                    }
                }
            }
            // Wherever a side has nothing left to deliver and its members are synced,
            // they hold the same history.
            sim.pump();
            for p in 0..2 {
                let side: Vec<usize> = (0..n).filter(|&i| sim.part[i] == Some(p)).collect();
                let ready = side
                    .iter()
                    .all(|&i| sim.nodes[i].machine.phase() == Phase::Ready);
                if sim.wire[p].is_empty() && !side.is_empty() && ready {
                    for &i in &side {
                        assert_eq!(
                            sim.ops(i),
                            sim.ops(side[0]),
                            "seed {seed}: nodes {i} and {} synced apart",
                            side[0]
                        );
                    }
                }
            }
        }
        // Heal: everything still ordered is delivered, then one view of all.
        sim.settle();
        sim.wire[1].clear();
        sim.view(0, &[0, 1, 2, 3]);
        sim.settle();
        sim.assert_converged(&[0, 1, 2, 3]);
        let history: BTreeSet<(Member, u64)> = sim.ops(0).into_iter().collect();
        for i in 0..n {
            let mut applied = BTreeSet::new();
            let mut discarded = BTreeSet::new();
            for e in &sim.nodes[i].events {
                match e {
                    Event::Applied { seq, .. } => {
                        applied.insert(*seq);
                    }
                    Event::Restored { discarded: d, .. } => {
                        discarded.extend(d.iter().map(|d| d.seq));
                    }
                    _ => {}
                }
            }
            // No silent loss: an applied own operation missing at the end was
            // reported discarded.
            for seq in &applied {
                let kept = history.contains(&(m(i), *seq));
                if !kept && !discarded.contains(seq) && std::env::var("SOAK_DEBUG").is_ok() {
                    for (j, node) in sim.nodes.iter().enumerate() {
                        eprintln!("--- node {j}");
                        for e in &node.events {
                            eprintln!("{e:?}");
                        }
                    }
                }
                assert!(
                    kept || discarded.contains(seq),
                    "seed {seed}: node {i} op {seq} lost without a report"
                );
            }
            lost += applied.iter().filter(|s| discarded.contains(s)).count();
            kept_ops += applied.len();
        }
    }
    // The generator does make merges that discard operations.
    assert!(
        lost > 0 && lost < kept_ops,
        "discarded {lost} of {kept_ops}"
    );
}
