//! Unit tests of the replica protocol from synthetic event sequences: a small
//! simulator plays CPG (per partition, one agreed order of deliveries and views) for
//! several [`Machine`]s, without a daemon.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::{
    choose_highest_epoch, choose_highest_version, Candidate, OpInfo, Replicated, RestoreError,
    ViewChange,
};
use super::config::Config;
use super::event::{Effect, Event, Failure, Phase};
use super::machine::Machine;
use super::wire::{fnv, fnv_start, Msg};
use crate::group::{View, ViewId};
use crate::types::Member;

/// The test state: every applied operation, in order, every view change applied (the
/// version it was applied at, and the members), plus padding to make it big.
#[derive(Debug, Default)]
struct Log {
    ops: Vec<(Member, u64, Vec<u8>)>,
    views: Vec<(u64, Vec<Member>)>,
    pad: usize,
    /// The merge hint: set by an operation `hint N`.
    hint: u64,
    /// Added to the digest: a planted divergence (reset by restore).
    salt: Arc<AtomicU64>,
    /// Restores fail while set.
    broken: Arc<AtomicU64>,
    /// Snapshots leave out the last operation while set: they do not restore to this
    /// state's digest (a buggy application).
    lie: Arc<AtomicU64>,
    /// While set, `choose` picks the last candidate (the highest member) whatever its
    /// version: an application's own rule.
    pick_last: Arc<AtomicU64>,
}

impl Replicated for Log {
    /// How many operations the history holds once this one is applied: its place in
    /// the history, which every member computes alike.
    type Output = usize;

    fn apply(&mut self, op: &[u8], info: &OpInfo) -> usize {
        if let Some(h) = op.strip_prefix(b"hint ") {
            self.hint = std::str::from_utf8(h).unwrap().parse().unwrap();
        }
        self.ops.push((info.origin, info.seq, op.to_vec()));
        self.ops.len()
    }

    fn apply_view(&mut self, view: &ViewChange<'_>) {
        self.views.push((view.version, view.members.to_vec()));
    }

    fn snapshot(&self) -> Vec<u8> {
        let lie = usize::from(self.lie.load(Ordering::SeqCst) > 0);
        let ops = &self.ops[..self.ops.len().saturating_sub(lie)];
        let mut b = Vec::new();
        b.extend_from_slice(&(ops.len() as u64).to_le_bytes());
        for (m, seq, op) in ops {
            b.extend_from_slice(&m.nodeid.to_le_bytes());
            b.extend_from_slice(&m.pid.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&(op.len() as u64).to_le_bytes());
            b.extend_from_slice(op);
        }
        b.extend_from_slice(&self.hint.to_le_bytes());
        b.extend_from_slice(&(self.views.len() as u64).to_le_bytes());
        for (version, members) in &self.views {
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&(members.len() as u64).to_le_bytes());
            for m in members {
                b.extend_from_slice(&m.nodeid.to_le_bytes());
                b.extend_from_slice(&m.pid.to_le_bytes());
            }
        }
        b.resize(b.len() + self.pad, 0xAB);
        b
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        if self.broken.load(Ordering::SeqCst) > 0 {
            return Err("broken on purpose".into());
        }
        let bytes = |i: usize, n: usize| s.get(i..i + n).ok_or("short snapshot");
        let word = |i: usize| -> Result<u64, RestoreError> {
            Ok(u64::from_le_bytes(bytes(i, 8)?.try_into()?))
        };
        let half = |i: usize| -> Result<u32, RestoreError> {
            Ok(u32::from_le_bytes(bytes(i, 4)?.try_into()?))
        };
        let n = word(0)?;
        let mut at = 8;
        let mut ops = Vec::new();
        for _ in 0..n {
            let member = Member {
                nodeid: half(at)?,
                pid: half(at + 4)?,
            };
            let seq = word(at + 8)?;
            let len = usize::try_from(word(at + 16)?)?;
            at += 24;
            ops.push((member, seq, bytes(at, len)?.to_vec()));
            at += len;
        }
        let hint = word(at)?;
        let n = word(at + 8)?;
        at += 16;
        let mut views = Vec::new();
        for _ in 0..n {
            let version = word(at)?;
            let k = word(at + 8)?;
            at += 16;
            let mut members = Vec::new();
            for _ in 0..k {
                members.push(Member {
                    nodeid: half(at)?,
                    pid: half(at + 4)?,
                });
                at += 8;
            }
            views.push((version, members));
        }
        self.pad = s.len() - at;
        self.ops = ops;
        self.views = views;
        self.hint = hint;
        self.salt.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = fnv_start();
        for (m, seq, op) in &self.ops {
            h = fnv(h, &m.nodeid.to_le_bytes());
            h = fnv(h, &seq.to_le_bytes());
            h = fnv(h, op);
        }
        for (version, members) in &self.views {
            h = fnv(h, &version.to_le_bytes());
            for m in members {
                h = fnv(h, &m.nodeid.to_le_bytes());
            }
        }
        h ^ self.salt.load(Ordering::SeqCst) ^ (self.pad as u64)
    }

    fn merge_hint(&self) -> u64 {
        self.hint
    }

    fn choose(&self, candidates: &[Candidate]) -> usize {
        match self.pick_last.load(Ordering::SeqCst) {
            0 => choose_highest_epoch(candidates),
            1 => candidates.len() - 1,
            _ => choose_highest_version(candidates),
        }
    }
}

struct Node {
    member: Member,
    machine: Machine<Log>,
    views: u64,
    events: Vec<Event>,
    /// Every own operation reported applied: (seq, version, output).
    outcomes: Vec<(u64, u64, Option<usize>)>,
    /// A ghost: its daemon keeps it in views, but it sends nothing.
    silent: bool,
    salt: Arc<AtomicU64>,
    broken: Arc<AtomicU64>,
    lie: Arc<AtomicU64>,
    pick_last: Arc<AtomicU64>,
}

/// CPG for a few machines: partitions, each with one agreed order.
struct Sim {
    nodes: Vec<Node>,
    /// Which partition each node is in (`None`: dead).
    part: Vec<Option<usize>>,
    /// Per partition: the messages in their agreed order, not yet delivered.
    wire: Vec<VecDeque<(usize, Vec<u8>)>>,
    /// Per partition: every operation delivered, in the agreed order.
    delivered: Vec<Vec<(Member, u64)>>,
    /// Per node: how many times it asked to rejoin.
    rejoins: Vec<usize>,
    now: Instant,
}

fn m(i: usize) -> Member {
    Member {
        nodeid: i as u32 + 1,
        pid: 100 + i as u32,
    }
}

impl Sim {
    fn new(n: usize, config: Config) -> Sim {
        let nodes = (0..n)
            .map(|i| {
                let salt = Arc::new(AtomicU64::new(0));
                let broken = Arc::new(AtomicU64::new(0));
                let lie = Arc::new(AtomicU64::new(0));
                let pick_last = Arc::new(AtomicU64::new(0));
                let app = Log {
                    salt: Arc::clone(&salt),
                    broken: Arc::clone(&broken),
                    lie: Arc::clone(&lie),
                    pick_last: Arc::clone(&pick_last),
                    ..Log::default()
                };
                Node {
                    member: m(i),
                    machine: Machine::new(app, config.clone()),
                    views: 0,
                    events: Vec::new(),
                    outcomes: Vec::new(),
                    silent: false,
                    salt,
                    broken,
                    lie,
                    pick_last,
                }
            })
            .collect();
        Sim {
            nodes,
            part: vec![None; n],
            wire: vec![VecDeque::new(); n],
            delivered: vec![Vec::new(); n],
            rejoins: vec![0; n],
            now: Instant::now(),
        }
    }

    /// Installs a view of `members` (node indexes) at each of them, as partition
    /// `p`, at the current point of `p`'s order, like a confchg: undelivered messages
    /// of `p` follow it.
    fn view(&mut self, p: usize, members: &[usize]) {
        // What was sent before the change is ordered where its sender was.
        self.pump();
        for &i in members {
            self.part[i] = Some(p);
        }
        let list: Vec<Member> = members.iter().map(|&i| m(i)).collect();
        for &i in members {
            let n = &mut self.nodes[i];
            n.views += 1;
            let v = View::new(
                ViewId {
                    incarnation: 1,
                    counter: n.views,
                },
                list.clone(),
                Some(n.member),
                vec![],
                vec![],
                None,
            );
            n.machine.handle_view(self.now, &v);
        }
        self.collect_events();
    }

    /// A node dies: what it had not yet got ordered is lost.
    fn kill(&mut self, i: usize) {
        if let Some(p) = self.part[i].take() {
            self.wire[p].retain(|(from, _)| *from != i);
        }
        while self.nodes[i].machine.poll_effect().is_some() {}
    }

    /// Moves every machine's sends into its partition's order.
    fn pump(&mut self) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            while let Some(e) = n.machine.poll_effect() {
                if e == Effect::Rejoin {
                    self.rejoins[i] += 1;
                }
                let Some(p) = self.part[i] else { continue };
                if n.silent {
                    continue;
                }
                if let Effect::Send(b) = e {
                    self.wire[p].push_back((i, b));
                }
            }
        }
    }

    fn collect_events(&mut self) {
        for n in &mut self.nodes {
            while let Some((e, output)) = n.machine.poll_event_and_output() {
                if let Event::Applied { seq, version } = e {
                    n.outcomes.push((seq, version, output));
                }
                n.events.push(e);
            }
        }
    }

    /// Delivers the next message of partition `p` to its members; false if none.
    fn step(&mut self, p: usize) -> bool {
        self.pump();
        let Some((from, data)) = self.wire[p].pop_front() else {
            return false;
        };
        if let Ok(Msg::Op { seq, .. }) = Msg::decode(&data) {
            self.delivered[p].push((m(from), seq));
        }
        for i in 0..self.nodes.len() {
            if self.part[i] == Some(p) {
                let now = self.now;
                self.nodes[i].machine.handle_message(now, m(from), &data);
            }
        }
        self.collect_events();
        true
    }

    /// Delivers until nothing is left to send or deliver anywhere.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut any = false;
            for p in 0..self.wire.len() {
                any |= self.step(p);
            }
            if !any {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// [`settle`](Self::settle); whether node `i` asked to rejoin meanwhile.
    fn settle_watching_rejoin(&mut self, i: usize) -> bool {
        let before = self.rejoins[i];
        self.settle();
        self.rejoins[i] > before
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for n in &mut self.nodes {
            n.machine.handle_timeout(self.now);
        }
        self.collect_events();
    }

    fn submit(&mut self, i: usize, op: &str) -> u64 {
        self.nodes[i].machine.submit(op.as_bytes().to_vec())
    }

    fn ops(&self, i: usize) -> Vec<(Member, u64)> {
        self.nodes[i]
            .machine
            .app()
            .ops
            .iter()
            .map(|(m, s, _)| (*m, *s))
            .collect()
    }

    /// Every listed node is ready, with the same digest and the same operations, each
    /// once.
    fn assert_converged(&self, nodes: &[usize]) {
        let first = self.nodes[nodes[0]].machine.summary();
        for &i in nodes {
            let n = &self.nodes[i];
            assert_eq!(n.machine.phase(), Phase::Ready, "node {i} ready");
            assert_eq!(n.machine.summary(), first, "node {i} summary");
            assert_eq!(self.ops(i), self.ops(nodes[0]), "node {i} operations");
            let unique: BTreeSet<_> = self.ops(i).into_iter().collect();
            assert_eq!(unique.len(), self.ops(i).len(), "node {i}: an op twice");
        }
    }

    fn restored(&self, i: usize) -> Vec<&Event> {
        self.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Restored { .. }))
            .collect()
    }
}

fn config() -> Config {
    Config {
        verify_interval: None,
        ..Config::default()
    }
}

#[test]
fn a_lone_member_syncs_with_itself_and_applies_its_operations_in_order() {
    let mut sim = Sim::new(1, config());
    sim.view(0, &[0]);
    sim.settle();
    assert_eq!(sim.nodes[0].machine.phase(), Phase::Ready);
    let a = sim.submit(0, "a");
    let b = sim.submit(0, "b");
    sim.settle();
    assert_eq!(sim.ops(0), vec![(m(0), a), (m(0), b)]);
    assert!(sim.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::Synced {
            transferred: false,
            ..
        }
    )));
    assert!(sim.nodes[0]
        .events
        .contains(&Event::Applied { seq: b, version: 2 }));
}

#[test]
fn a_joiner_catches_up_and_writes_during_the_round_are_applied_once_afterwards() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    for i in 0..10 {
        sim.submit(i % 2, &format!("op{i}"));
    }
    sim.settle();
    sim.assert_converged(&[0, 1]);
    // Node 3 joins; writes keep coming before and during the round.
    sim.submit(0, "before");
    sim.view(0, &[0, 1, 2]);
    sim.submit(1, "during");
    sim.step(0);
    sim.submit(2, "from the joiner");
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.ops(2).len(), 13);
    let r = sim.restored(2);
    assert_eq!(r.len(), 1, "the joiner restored once");
    assert!(sim.restored(0).is_empty() && sim.restored(1).is_empty());
    assert_eq!(sim.nodes[0].machine.stats().states_sent, 1);
}

#[test]
fn a_state_larger_than_one_message_is_sent_in_chunks() {
    let cfg = Config {
        chunk_size: 1000,
        ..config()
    };
    let mut sim = Sim::new(2, cfg);
    sim.nodes[0].machine = Machine::new(
        Log {
            pad: 2_500_000,
            ..Log::default()
        },
        config_chunk(1000),
    );
    sim.view(0, &[0]);
    sim.settle();
    sim.submit(0, "x");
    sim.settle();
    sim.view(0, &[0, 1]);
    let mut chunks = 0;
    sim.pump();
    while sim.step(0) {
        chunks += 1;
    }
    assert!(chunks > 2500, "{chunks} messages");
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.nodes[1].machine.app().pad, 2_500_000);
    assert!(sim.nodes[1].machine.stats().bytes_received > 2_500_000);
}

fn config_chunk(size: usize) -> Config {
    Config {
        chunk_size: size,
        ..config()
    }
}

#[test]
fn the_source_dying_mid_transfer_starts_a_new_round_and_the_rest_converge() {
    let mut sim = Sim::new(3, config_chunk(100));
    sim.view(0, &[0, 1]);
    sim.settle();
    for i in 0..50 {
        sim.submit(0, &format!("op{i}"));
    }
    sim.settle();
    // Node 3 joins; node 1 (lowest, highest version) is the source.
    sim.view(0, &[0, 1, 2]);
    for _ in 0..12 {
        sim.step(0);
    }
    assert!(matches!(sim.nodes[2].machine.phase(), Phase::Syncing));
    sim.kill(0);
    sim.view(0, &[1, 2]);
    sim.submit(1, "after");
    sim.settle();
    sim.assert_converged(&[1, 2]);
    assert_eq!(sim.ops(2).len(), 51);
    assert_eq!(sim.nodes[2].machine.stats().restores, 1);
}

#[test]
fn a_view_change_during_a_round_restarts_it_and_queued_operations_survive() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0]);
    sim.settle();
    sim.submit(0, "a");
    sim.settle();
    sim.view(0, &[0, 1]);
    sim.submit(0, "queued");
    sim.step(0); // start
    sim.step(0); // the op, queued
    assert_eq!(sim.nodes[0].machine.stats().queued_ops, 1);
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.ops(2), vec![(m(0), 1), (m(0), 2)]);
}

#[test]
fn messages_of_a_stale_round_are_dropped() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    // The first view's start and summaries are ordered after the second view.
    sim.pump();
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    let stale: u64 = (0..3).map(|i| sim.nodes[i].machine.stats().stale).sum();
    assert!(stale >= 3, "stale messages counted: {stale}");
    // A summary of an old round, replayed later, changes nothing.
    let old = Msg::Summary {
        round: sim.nodes[0].machine.round().unwrap(),
        version: 99,
        digest: 1,
        hint: 0,
        quorum: 0,
    }
    .encode();
    sim.view(0, &[0, 1]);
    sim.settle();
    let before = sim.nodes[0].machine.stats().stale;
    sim.nodes[0].machine.handle_message(sim.now, m(1), &old);
    assert_eq!(sim.nodes[0].machine.stats().stale, before + 1);
    sim.assert_converged(&[0, 1]);
}

#[test]
fn a_silent_member_cannot_stall_the_round_past_its_deadline() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.submit(1, "x");
    sim.settle();
    // Node 3 is in the view but sends nothing (a ghost).
    sim.nodes[2].silent = true;
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    assert_eq!(sim.nodes[0].machine.phase(), Phase::Syncing);
    sim.advance(Duration::from_secs(11));
    sim.settle();
    // Decided without the ghost; the state was sent for it all the same.
    sim.assert_converged(&[0, 1]);
    assert_eq!(
        sim.nodes[2].machine.summary(),
        sim.nodes[0].machine.summary()
    );
}

/// The application's `choose` decides whose state wins, at every member: here each
/// picks the last candidate (the highest member), whose history is the shortest, where
/// the default rule would pick the longest.
#[test]
fn the_applications_choice_of_state_is_honoured_by_every_member() {
    let mut sim = Sim::new(3, config());
    for i in 0..3 {
        sim.nodes[i].pick_last.store(1, Ordering::SeqCst);
        sim.view(i, &[i]);
    }
    sim.settle();
    for (i, ops) in [(0, 5), (1, 3), (2, 1)] {
        for k in 0..ops {
            sim.submit(i, &format!("{i}.{k}"));
        }
    }
    sim.settle();
    let shortest = sim.ops(2);
    assert!(sim.nodes[0].machine.summary().version > sim.nodes[2].machine.summary().version);
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.ops(0), shortest);
    for i in 0..3 {
        assert!(
            sim.nodes[i].events.iter().any(|e| matches!(
                e,
                Event::Synced { source, transferred: true, .. } if *source == m(2)
            )),
            "node {i}: {:?}",
            sim.nodes[i].events
        );
    }
}

#[test]
fn a_silent_coordinator_is_replaced_by_the_next_member_after_the_deadline() {
    let mut sim = Sim::new(3, config());
    sim.nodes[0].silent = true;
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.advance(Duration::from_secs(11));
    sim.settle();
    // Attempt 1: node 2 coordinates; node 1 is silent, so the deadline decides.
    sim.advance(Duration::from_secs(11));
    sim.settle();
    sim.assert_converged(&[1, 2]);
    let failed: Vec<_> = sim.nodes[1]
        .events
        .iter()
        .filter(|e| matches!(e, Event::RoundFailed { .. }))
        .collect();
    assert_eq!(
        failed,
        vec![&Event::RoundFailed {
            attempt: 0,
            why: Failure::Deadline
        }]
    );
    assert_eq!(sim.nodes[1].machine.round().unwrap().coordinator, m(1));
}

#[test]
fn a_failed_restore_makes_the_member_rejoin_while_the_others_go_on() {
    let mut sim = Sim::new(2, config());
    sim.view(0, &[0]);
    sim.settle();
    sim.submit(0, "x");
    sim.settle();
    sim.nodes[1].broken.store(1, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    sim.submit(0, "during");
    // Drive by hand: the rejoin request must not be swallowed by the pump.
    let mut rejoin = false;
    for _ in 0..100 {
        for i in 0..2 {
            while let Some(e) = sim.nodes[i].machine.poll_effect() {
                match e {
                    Effect::Send(b) => sim.wire[0].push_back((i, b)),
                    Effect::Rejoin => rejoin |= i == 1,
                }
            }
        }
        if !sim.step(0) {
            break;
        }
    }
    assert!(rejoin, "node 2 asks to rejoin: {:?}", sim.nodes[1].events);
    assert_eq!(sim.nodes[1].machine.phase(), Phase::Detached);
    assert!(sim.nodes[1].events.contains(&Event::RoundFailed {
        attempt: 0,
        why: Failure::RestoreFailed
    }));
    assert_eq!(sim.nodes[0].machine.phase(), Phase::Ready);
    // It comes back (a new view) and, its restore working again, catches up.
    sim.nodes[1].broken.store(0, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.ops(1).len(), 2);
}

#[test]
fn the_rejoin_effect_is_produced() {
    let mut mach = Machine::new(
        Log::default(),
        Config {
            max_attempts: 1,
            ..config()
        },
    );
    let me = m(0);
    let v = View::new(
        ViewId {
            incarnation: 1,
            counter: 1,
        },
        [me, m(1)],
        Some(me),
        vec![],
        vec![],
        None,
    );
    let now = Instant::now();
    mach.handle_view(now, &v);
    mach.handle_timeout(now + Duration::from_secs(11));
    let mut trouble = None;
    while let Some(Effect::Send(b)) = mach.poll_effect() {
        if matches!(Msg::decode(&b), Ok(Msg::Trouble { .. })) {
            trouble = Some(b);
        }
    }
    mach.handle_message(now, m(1), &trouble.expect("a trouble report"));
    assert_eq!(mach.poll_effect(), Some(Effect::Rejoin));
    assert_eq!(mach.phase(), Phase::Detached);
}

#[test]
fn a_peer_with_a_newer_protocol_version_is_refused_and_left_out() {
    let mut sim = Sim::new(3, config());
    sim.nodes[2].silent = true;
    sim.view(0, &[0, 1, 2]);
    sim.step(0); // start
    let mut newer = Msg::Op {
        seq: 1,
        data: vec![],
    }
    .encode();
    newer[1] = super::wire::PROTOCOL_VERSION + 1;
    sim.wire[0].push_back((2, newer.clone()));
    sim.wire[0].push_back((2, newer));
    sim.settle();
    for i in 0..2 {
        let refused: Vec<_> = sim.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Refused { .. }))
            .collect();
        assert_eq!(
            refused,
            vec![&Event::Refused {
                from: m(2),
                version: super::wire::PROTOCOL_VERSION + 1
            }],
            "reported once"
        );
    }
    // No deadline needed: the refused member is not waited for.
    sim.assert_converged(&[0, 1]);
}

#[test]
fn two_histories_merge_on_the_chosen_one_and_the_loser_learns_what_was_discarded() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.submit(2, "common from 3");
    sim.submit(0, "common from 1");
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    // Partition: {1, 2} and {3}; both sides write, the majority more.
    sim.view(0, &[0, 1]);
    sim.view(1, &[2]);
    sim.settle();
    for i in 0..3 {
        sim.submit(i % 2, &format!("majority {i}"));
    }
    let lost1 = sim.submit(2, "minority a");
    let lost2 = sim.submit(2, "minority b");
    sim.settle();
    assert_eq!(sim.ops(2).len(), 4);
    // Heal: one view of all three.
    sim.view(0, &[0, 1, 2]);
    sim.wire[1].clear();
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.ops(2).len(), 5);
    let r = sim.restored(2);
    assert_eq!(r.len(), 1);
    let Event::Restored {
        discarded,
        source,
        previous,
        current,
        ..
    } = r[0]
    else {
        unreachable!()
    };
    assert_eq!(*source, m(0));
    assert_eq!(previous.version, 4);
    assert_eq!(current.version, 5);
    let seqs: Vec<u64> = discarded.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![lost1, lost2], "only the minority's own writes");
    assert_eq!(discarded[0].op, b"minority a");
    assert!(sim.restored(0).is_empty() && sim.restored(1).is_empty());
}

#[test]
fn verification_reports_a_divergence_and_resyncs() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.submit(0, "a");
    sim.settle();
    sim.nodes[0].machine.verify();
    sim.settle();
    for i in 0..3 {
        assert!(sim.nodes[i]
            .events
            .iter()
            .any(|e| matches!(e, Event::Verified { check: 1, .. })));
    }
    // Plant a divergence on node 3.
    sim.nodes[2].salt.store(7, Ordering::SeqCst);
    sim.nodes[0].machine.verify();
    sim.settle();
    for i in 0..3 {
        assert!(
            sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::Diverged { check: 2, .. })),
            "node {i}"
        );
    }
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.nodes[2].machine.stats().restores, 1);
}

#[test]
fn the_leader_verifies_periodically() {
    let cfg = Config {
        verify_interval: Some(Duration::from_secs(5)),
        ..config()
    };
    let mut sim = Sim::new(2, cfg);
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.advance(Duration::from_secs(6));
    sim.settle();
    for i in 0..2 {
        assert!(sim.nodes[i]
            .events
            .iter()
            .any(|e| matches!(e, Event::Verified { .. })));
    }
}

#[test]
fn a_restarted_member_rejoining_alone_first_then_merging_converges() {
    // Node 1's daemon restarts: it forms a one-node view first and writes there,
    // then the views merge.
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    for i in 0..6 {
        sim.submit(i % 3, &format!("w{i}"));
    }
    sim.settle();
    sim.nodes[0].machine.handle_disconnected();
    sim.view(0, &[1, 2]);
    sim.view(1, &[0]);
    let alone = sim.submit(0, "alone");
    let others = sim.submit(1, "others");
    sim.settle();
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.assert_converged(&[0, 1, 2]);
    // Version tie (7 and 7): the lowest member wins, so node 1's history is kept,
    // with its write made alone; node 2 learns that its write was discarded.
    assert!(sim.ops(1).contains(&(m(0), alone)));
    assert!(sim.restored(0).is_empty());
    let Event::Restored { discarded, .. } = sim.restored(1)[0] else {
        unreachable!()
    };
    assert_eq!(
        discarded.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![others]
    );
    let Event::Restored { discarded, .. } = sim.restored(2)[0] else {
        unreachable!()
    };
    assert!(discarded.is_empty());
}

#[test]
fn a_state_loaded_with_its_version_wins_over_a_shorter_history() {
    let mut sim = Sim::new(2, config());
    // Node 2 resumes a saved state of version 5; node 1 starts empty.
    let mut saved = Log::default();
    saved.ops.push((m(1), 1, b"saved".to_vec()));
    sim.nodes[1].machine = Machine::new(
        saved,
        Config {
            initial_version: 5,
            ..config()
        },
    );
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.nodes[0].machine.summary().version, 5);
    assert_eq!(sim.ops(0), vec![(m(1), 1)]);
}

mod bench;
mod blind_spots;
mod hostile;
mod quorum;
mod service;
mod soak;
mod stale;

/// A member (buggy, or not using this crate) that sends well-formed replica
/// messages with arbitrary field values must not make the machine panic.
#[test]
fn well_formed_messages_with_any_field_values_never_panic() {
    use super::wire::{members_hash, RoundId};
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for run in 0..300 {
        let me = m(0);
        let all = [m(0), m(1), m(2)];
        let mut mach = Machine::new(Log::default(), config());
        let v = View::new(
            ViewId {
                incarnation: 1,
                counter: 1,
            },
            all,
            Some(me),
            vec![],
            vec![],
            None,
        );
        let mut now = Instant::now();
        mach.handle_view(now, &v);
        let hash = members_hash(&all);
        let mut own: Vec<Vec<u8>> = Vec::new();
        let mut views = 1;
        for step in 0..400 {
            let pick = |r: u64, n: u64| r % n;
            let small = |r: u64| match r % 4 {
                0 => 0,
                1 => 1,
                2 => u64::MAX,
                _ => r % 5,
            };
            let from = all[pick(rnd(), 3) as usize];
            let round = RoundId {
                coordinator: all[pick(rnd(), 3) as usize],
                view: ViewId {
                    incarnation: 1,
                    counter: if rnd() % 8 == 0 { rnd() } else { 1 },
                },
                attempt: (rnd() % 3) as u32,
            };
            let members = if rnd() % 8 == 0 { rnd() } else { hash };
            let msg = match rnd() % 9 {
                0 => Msg::Start { members, round },
                1 => Msg::Summary {
                    round,
                    version: small(rnd()),
                    digest: small(rnd()),
                    hint: 0,
                    quorum: 0,
                },
                2 => Msg::StateHeader {
                    round,
                    version: small(rnd()),
                    digest: small(rnd()),
                    hint: 0,
                    epoch: 0,
                    len: small(rnd()),
                    chunks: (rnd() % 4) as u32,
                    applied: (0..rnd() % 3)
                        .map(|_| {
                            let a = small(rnd());
                            let b = small(rnd());
                            (all[pick(rnd(), 3) as usize], vec![(a, b)])
                        })
                        .collect(),
                },
                3 => Msg::Chunk {
                    round,
                    index: (rnd() % 4) as u32,
                    data: vec![0; (rnd() % 40) as usize],
                },
                4 => Msg::Op {
                    seq: small(rnd()),
                    data: vec![1],
                },
                5 => Msg::Trouble {
                    members,
                    attempt: (rnd() % 3) as u32,
                    stage: (rnd() % 4) as u8,
                },
                6 => Msg::Verify {
                    members,
                    check: small(rnd()),
                },
                7 => Msg::Digest {
                    members,
                    issuer: all[pick(rnd(), 3) as usize],
                    check: small(rnd()),
                    version: small(rnd()),
                    digest: small(rnd()),
                    hint: 0,
                    epoch: 0,
                },
                _ => {
                    // Our own messages come back too.
                    if let Some(b) = own.pop() {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            mach.handle_message(now, me, &b)
                        }));
                        assert!(r.is_ok(), "run {run} step {step}: own message");
                    }
                    continue;
                }
            };
            let bytes = msg.encode();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if rnd() % 24 == 0 {
                    // A membership change: any subset, with or without this member.
                    views += 1;
                    let mask = rnd();
                    let members: Vec<Member> = (0..3)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| all[i])
                        .collect();
                    let mine = members.contains(&me).then_some(me);
                    let v = View::new(
                        ViewId {
                            incarnation: 1,
                            counter: views,
                        },
                        members,
                        mine,
                        vec![],
                        vec![],
                        None,
                    );
                    mach.handle_view(now, &v);
                }
                if rnd() % 64 == 0 {
                    mach.handle_disconnected();
                }
                mach.handle_message(now, from, &bytes);
                if rnd() % 16 == 0 {
                    now += Duration::from_secs(11);
                    mach.handle_timeout(now);
                }
                if rnd() % 32 == 0 {
                    let _ = mach.submit(vec![7]);
                }
                while let Some(e) = mach.poll_effect() {
                    if let Effect::Send(b) = e {
                        own.push(b);
                    }
                }
                while mach.poll_event().is_some() {}
            }));
            assert!(r.is_ok(), "run {run} step {step}: {msg:?} from {from:?}");
        }
    }
}

#[test]
fn a_state_at_the_largest_version_still_applies() {
    let mut sim = Sim::new(
        1,
        Config {
            initial_version: u64::MAX - 1,
            ..config()
        },
    );
    sim.view(0, &[0]);
    sim.settle();
    for _ in 0..3 {
        sim.nodes[0].machine.submit(b"op".to_vec());
    }
    sim.settle();
    assert_eq!(sim.nodes[0].machine.phase(), Phase::Ready);
}
