//! The fourth client kind: `cpg::replica::Replica` with a tiny application (a map of
//! counters), so that replicated state runs under the faults and its convergence is
//! checked at the end of every run.
//!
//! It joins a CPG group of its own, submits an operation ("add `delta` to counter
//! `key`", drawn from the run's seed) at the workload's rate, and records its views,
//! every view change its state learned and at which version ([`Record::RView`]), and
//! every operation's outcome ([`Record::ROp`]): its own from their tickets, and every
//! operation's as its `apply` computed it on the state its view agreed on (the layer's
//! `Event::Changed`, paired with what `apply` returned). Asked to stop, it stops
//! submitting, waits for its operations' outcomes and for the others' last operations
//! to be applied (a quiet period in a ready state), records its final state's version
//! and digest and its view ([`Record::RFinal`]), leaves, and exits 0. Like the
//! group-layer clients it survives a daemon kill: the layer reconnects and the state
//! is synced again. Same control protocol and exit codes as the plain clients
//! (`client.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::replica::{
    fnv, fnv_start, Config, Event, OpInfo, Replica, Replicated, RestoreError, Ticket,
};
use cpg::GroupName;

use crate::client::{control, fail, ClientConfig, Command, EXIT_LOST, EXIT_ORPHANED};
use crate::history::{now_ms, Api, Member, Record, Recorder};
use crate::rng::Rng;

/// Most operations awaiting their outcome at once.
const MAX_PENDING: usize = 32;
/// How long a stopping client waits for its operations' outcomes.
const TICKET_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it waits for a ready state before and after the quiet period.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The quiet period: every client stops submitting at about the same time; by its
/// end the last operations of all are applied everywhere.
const QUIET: Duration = Duration::from_secs(2);
/// Counters in the map.
const KEYS: u64 = 8;

/// What `apply` returned for each operation applied, in order: (origin, sequence,
/// version, output).
type Outputs = Arc<Mutex<VecDeque<(Member, u64, u64, i64)>>>;

/// The replicated state: counters by key, in a sorted map (deterministic digest), and
/// what lets the checker see exactly-once and agreed order: the highest sequence
/// number applied per origin, how many operations came at or below it (a duplicate or
/// a reordering), and a hash chained over every applied (origin, sequence) in order, so
/// that equal digests mean the same history. (View changes are not in it: the
/// replicas record their final states one after the other, while the first to leave
/// changes the others' views; the checker compares the views learned by round.)
#[derive(Debug, Default)]
pub struct Counters {
    map: BTreeMap<u8, i64>,
    last: BTreeMap<Member, u64>,
    disorder: u64,
    trace: u64,
    /// Not replicated: what `apply` returned for each operation applied here, in
    /// order (origin, sequence, version, output), for the client to pair with the
    /// layer's `Event::Changed`.
    outputs: Outputs,
}

impl Counters {
    /// The highest sequence number applied from `origin` (0: none).
    fn last_of(&self, origin: Member) -> u64 {
        self.last.get(&origin).copied().unwrap_or(0)
    }
}

/// Encodes an operation: key, then the delta (little-endian).
fn op(key: u8, delta: i64) -> Vec<u8> {
    let mut b = vec![key];
    b.extend_from_slice(&delta.to_le_bytes());
    b
}

impl Replicated for Counters {
    /// The counter's value after the operation (0 for an operation that is not one).
    type Output = i64;

    fn apply(&mut self, op: &[u8], info: &OpInfo) -> i64 {
        let origin = (info.origin.nodeid, info.origin.pid);
        if info.seq <= self.last_of(origin) {
            self.disorder += 1;
        } else {
            self.last.insert(origin, info.seq);
        }
        self.trace = fnv(self.trace, &origin_seq(origin, info.seq));
        let output = if let (Some(&key), Some(delta)) = (op.first(), op.get(1..9)) {
            let delta = i64::from_le_bytes(delta.try_into().unwrap_or([0; 8]));
            let c = self.map.entry(key).or_default();
            *c = c.wrapping_add(delta);
            *c
        } else {
            0
        };
        if let Ok(mut o) = self.outputs.lock() {
            o.push_back((origin, info.seq, info.version, output));
        }
        output
    }

    /// disorder, trace, the number of origins, each origin's (node, pid, last), then
    /// the counters (key, value); little-endian.
    fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + self.last.len() * 16 + self.map.len() * 9);
        b.extend_from_slice(&self.disorder.to_le_bytes());
        b.extend_from_slice(&self.trace.to_le_bytes());
        b.extend_from_slice(&(self.last.len() as u32).to_le_bytes());
        for (&origin, &seq) in &self.last {
            b.extend_from_slice(&origin_seq(origin, seq));
        }
        for (k, v) in &self.map {
            b.extend_from_slice(&op(*k, *v));
        }
        b
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let u64_at = |at: usize| -> Result<u64, RestoreError> {
            let bytes = snapshot.get(at..at + 8).ok_or("snapshot too short")?;
            Ok(u64::from_le_bytes(bytes.try_into()?))
        };
        let disorder = u64_at(0)?;
        let trace = u64_at(8)?;
        let origins = snapshot.get(16..20).ok_or("snapshot too short")?;
        let origins = u32::from_le_bytes(origins.try_into()?) as usize;
        let counters_at = origins
            .checked_mul(16)
            .and_then(|n| n.checked_add(20))
            .filter(|&at| at <= snapshot.len())
            .ok_or("snapshot too short for its origins")?;
        let mut last = BTreeMap::new();
        for entry in snapshot[20..counters_at].chunks_exact(16) {
            let node = u32::from_le_bytes(entry[0..4].try_into()?);
            let pid = u32::from_le_bytes(entry[4..8].try_into()?);
            last.insert((node, pid), u64::from_le_bytes(entry[8..16].try_into()?));
        }
        let counters = &snapshot[counters_at..];
        if counters.len() % 9 != 0 {
            return Err("counters' length is not a multiple of 9".into());
        }
        let mut map = BTreeMap::new();
        for chunk in counters.chunks_exact(9) {
            let v = i64::from_le_bytes(chunk[1..9].try_into()?);
            map.insert(chunk[0], v);
        }
        *self = Counters {
            map,
            last,
            disorder,
            trace,
            outputs: Arc::clone(&self.outputs),
        };
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = fnv_start();
        h = fnv(h, &self.disorder.to_le_bytes());
        h = fnv(h, &self.trace.to_le_bytes());
        for (&origin, &seq) in &self.last {
            h = fnv(h, &origin_seq(origin, seq));
        }
        for (k, v) in &self.map {
            h = fnv(h, &[*k]);
            h = fnv(h, &v.to_le_bytes());
        }
        h
    }
}

/// An origin and a sequence number as 16 bytes (node, pid, seq; little-endian).
fn origin_seq((node, pid): Member, seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&node.to_le_bytes());
    b[4..8].copy_from_slice(&pid.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b
}

fn members_of(v: &cpg::group::View) -> Vec<Member> {
    v.members().iter().map(|m| (m.nodeid, m.pid)).collect()
}

/// Follows the layer's events: records views, view changes and the outcomes of the
/// operations applied here on the state the view agreed on (own and others').
struct Observer<'a> {
    rec: &'a Recorder,
    me: Member,
    /// What `apply` returned, in order (shared with the state).
    outputs: Outputs,
    /// Between a round's end (`Synced`) and the next view: operations are applied to
    /// the state the view agreed on. (Those applied when a view changes during a
    /// round are reported before the new view, while this is false.)
    synced: bool,
    discarded: BTreeSet<u64>,
    /// The state's quorum epoch at this point of the events.
    epoch: u64,
    events: u64,
}

impl Observer<'_> {
    fn event(&mut self, e: &Event) {
        self.events += 1;
        match e {
            Event::Restored {
                discarded: d,
                current,
                ..
            } => {
                self.discarded.extend(d.iter().map(|d| d.seq));
                self.epoch = current.epoch;
            }
            Event::Quorum { state, epoch } => {
                self.epoch = *epoch;
                self.rec.record(&Record::RQuorum {
                    permits: state.permits(),
                    state: state.to_string(),
                    epoch: *epoch,
                    t: now_ms(),
                });
            }
            Event::View(v) => {
                self.synced = false;
                let m = members_of(v);
                let shown: Vec<String> = m.iter().map(|(n, p)| format!("{n}:{p}")).collect();
                println!("view {}", shown.join(","));
                self.rec.record(&Record::GView {
                    members: m,
                    leader: v.leader().map(|l| (l.nodeid, l.pid)),
                    view: (v.id().incarnation, v.id().counter),
                    t: now_ms(),
                });
            }
            Event::Synced { summary, .. } => {
                self.synced = true;
                self.epoch = summary.epoch;
            }
            Event::ViewApplied {
                round,
                members,
                version,
            } => self.rec.record(&Record::RView {
                round: round.to_string(),
                members: members.iter().map(|m| (m.nodeid, m.pid)).collect(),
                version: *version,
                t: now_ms(),
            }),
            Event::Changed {
                origin,
                seq,
                version,
            } => {
                // The output `apply` returned for it: the next one in line.
                let origin = (origin.nodeid, origin.pid);
                let next = self.outputs.lock().ok().and_then(|mut o| o.pop_front());
                let Some((o, q, v, output)) = next else {
                    return;
                };
                if self.synced && (o, q, v) == (origin, *seq, *version) {
                    self.rec.record(&Record::ROp {
                        origin,
                        seq: *seq,
                        version: *version,
                        output,
                        epoch: self.epoch,
                        own: false,
                        t: now_ms(),
                    });
                }
            }
            _ => {}
        }
    }

    /// An own operation's ticket resolved with `done`.
    fn outcome(&self, seq: u64, done: &cpg::replica::Outcome<i64>) {
        self.rec.record(&Record::ROp {
            origin: self.me,
            seq,
            version: done.version,
            output: done.output,
            epoch: 0,
            own: true,
            t: now_ms(),
        });
    }
}

/// Runs a replica client to its end; returns the exit code.
pub fn run(config: &ClientConfig) -> i32 {
    let ctl = control();
    let rec = match Recorder::create(&config.history) {
        Ok(r) => r,
        Err(e) => return fail(&format!("{}: {e}", config.history.display())),
    };
    let name = match GroupName::new(&config.group) {
        Ok(g) => g,
        Err(e) => return fail(&format!("group name: {e}")),
    };
    let state = Counters::default();
    let outputs = Arc::clone(&state.outputs);
    let mut layer = Config::default();
    layer.report_changes = true;
    let replica = match Replica::builder(name, state).config(layer).start() {
        Ok(r) => r,
        Err(e) => {
            rec.record(&Record::Lost {
                error: e.to_string(),
                t: now_ms(),
            });
            return EXIT_LOST;
        }
    };
    // The node id: from the first view (0 if none came in time).
    let node = replica
        .wait_ready(Duration::from_secs(30), |v| v.me().is_some())
        .and_then(|v| v.me())
        .map_or(0, |m| m.nodeid);
    rec.record(&Record::Start {
        inc: config.inc,
        node,
        pid: std::process::id(),
        api: Api::Replica,
        t: now_ms(),
    });
    let interval = Duration::from_secs_f64(f64::from(config.burst.max(1)) / config.rate.max(0.01));
    let mut rng = Rng::new(config.seed ^ u64::from(config.inc).rotate_left(17) ^ 0x5eed);
    let mut tickets: Vec<Ticket<i64>> = Vec::new();
    let mut next = Instant::now();
    let mut submitted = 0u64;
    // Own operations confirmed (and own operations a state transfer reported
    // discarded, in the observer).
    let mut confirmed = BTreeSet::new();
    let mut seen = Observer {
        rec: &rec,
        me: (node, std::process::id()),
        outputs,
        synced: false,
        discarded: BTreeSet::new(),
        epoch: 0,
        events: 0,
    };
    // Own operations refused for want of quorum.
    let mut refused = 0u64;
    loop {
        match ctl.try_recv() {
            Ok(Command::Stop) => break,
            Ok(Command::Orphaned) | Err(mpsc::TryRecvError::Disconnected) => return EXIT_ORPHANED,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        // A burst of `config.burst` operations per tick, `rate` per second on average.
        let mut burst = 0;
        while now >= next
            && burst < config.burst
            && tickets.len() < MAX_PENDING
            && replica.view().is_some()
        {
            burst += 1;
            let key = rng.below(KEYS) as u8;
            let delta = rng.below(1000) as i64 - 500;
            match replica.submit(op(key, delta)) {
                Ok(t) => {
                    tickets.push(t);
                    submitted += 1;
                }
                Err(cpg::replica::ReplicaError::NotQuorate) => refused += 1,
                Err(_) => {}
            }
        }
        if burst > 0 {
            next = (next + interval).max(now);
        }
        tickets.retain(|t| match t.wait(Duration::ZERO) {
            Err(cpg::replica::ReplicaError::Timeout) => true,
            Ok(done) => {
                seen.outcome(t.seq(), &done);
                confirmed.insert(t.seq());
                false
            }
            Err(cpg::replica::ReplicaError::NotQuorate) => {
                refused += 1;
                false
            }
            Err(_) => false,
        });
        let wait = next
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        let mut timeout = wait;
        for _ in 0..1000 {
            let Some(e) = replica.next_event(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            seen.event(&e);
        }
    }
    // Stopping: the outcomes of the own operations, then a quiet, ready state.
    let end = Instant::now() + TICKET_TIMEOUT;
    for t in &tickets {
        match t.wait(end.saturating_duration_since(Instant::now())) {
            Ok(done) => {
                seen.outcome(t.seq(), &done);
                confirmed.insert(t.seq());
            }
            Err(cpg::replica::ReplicaError::NotQuorate) => refused += 1,
            Err(_) => {}
        }
    }
    let ready = replica.wait_ready(READY_TIMEOUT, |_| true).is_some();
    std::thread::sleep(QUIET);
    let ready = ready && replica.wait_ready(READY_TIMEOUT, |_| true).is_some();
    // Discards reported while stopping count too.
    while let Some(e) = replica.next_event(Duration::ZERO) {
        seen.event(&e);
    }
    let (events, discarded) = (seen.events, std::mem::take(&mut seen.discarded));
    let summary = replica.summary();
    let me = replica
        .view()
        .and_then(|v| v.me())
        .map(|m| (m.nodeid, m.pid));
    let (disorder, own_last) = replica.read(|s| (s.disorder, me.map_or(0, |m| s.last_of(m))));
    rec.record(&Record::RFinal {
        version: summary.version,
        digest: summary.digest,
        members: replica.view().map_or_else(Vec::new, |v| members_of(&v)),
        ready,
        submitted,
        disorder,
        own_last,
        confirmed: confirmed.difference(&discarded).max().copied().unwrap_or(0),
        refused,
        t: now_ms(),
    });
    let left = replica.leave(Duration::from_secs(5));
    rec.record(&Record::Drained {
        complete: ready && left.is_ok(),
        t: now_ms(),
    });
    rec.record(&Record::Closed {
        events,
        dispatched: None,
        freed: None,
        t: now_ms(),
    });
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(nodeid: u32, pid: u32, seq: u64) -> OpInfo {
        OpInfo {
            origin: cpg::Member::new(nodeid, pid),
            seq,
            version: 0,
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_digest() {
        let mut a = Counters::default();
        a.apply(&op(1, 5), &info(1, 10, 1));
        a.apply(&op(2, -3), &info(2, 20, 1));
        a.apply(&op(1, 7), &info(1, 10, 2));
        let mut b = Counters::default();
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(b.digest(), a.digest());
        assert_eq!(
            (b.last_of((1, 10)), b.last_of((2, 20)), b.disorder),
            (2, 1, 0)
        );
        assert!(b.restore(&a.snapshot()[..30]).is_err());
    }

    #[test]
    fn a_duplicate_or_a_reordering_is_counted_and_changes_the_digest() {
        let mut once = Counters::default();
        once.apply(&op(1, 5), &info(1, 10, 1));
        let mut twice = Counters::default();
        twice.apply(&op(1, 5), &info(1, 10, 1));
        twice.apply(&op(1, 0), &info(1, 10, 1));
        assert_eq!((once.disorder, twice.disorder), (0, 1));
        assert_ne!(once.digest(), twice.digest());
        // The same operations in another order: same counters, another digest.
        let (mut ab, mut ba) = (Counters::default(), Counters::default());
        ab.apply(&op(1, 1), &info(1, 10, 1));
        ab.apply(&op(2, 1), &info(2, 20, 1));
        ba.apply(&op(2, 1), &info(2, 20, 1));
        ba.apply(&op(1, 1), &info(1, 10, 1));
        assert_eq!(ab.map, ba.map);
        assert_ne!(ab.digest(), ba.digest());
    }
}
