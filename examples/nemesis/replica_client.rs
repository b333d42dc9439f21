//! The fourth client kind: `cpg::replica::Replica` with a tiny application (a map of
//! counters), so that replicated state runs under the faults and its convergence is
//! checked at the end of every run.
//!
//! It joins a CPG group of its own, submits an operation ("add `delta` to counter
//! `key`", drawn from the run's seed) at the workload's rate, and records its views.
//! Asked to stop, it stops submitting, waits for its operations' outcomes and for the
//! others' last operations to be applied (a quiet period in a ready state), records
//! its final state's version and digest and its view ([`Record::RFinal`]), leaves,
//! and exits 0. Like the group-layer clients it survives a daemon kill: the layer
//! reconnects and the state is synced again. Same control protocol and exit codes as
//! the plain clients (`client.rs`).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpg::replica::{fnv, fnv_start, Event, OpInfo, Replica, Replicated, RestoreError, Ticket};
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

/// The replicated state: counters by key, in a sorted map (deterministic digest).
#[derive(Debug, Default)]
pub struct Counters {
    map: BTreeMap<u8, i64>,
}

/// Encodes an operation: key, then the delta (little-endian).
fn op(key: u8, delta: i64) -> Vec<u8> {
    let mut b = vec![key];
    b.extend_from_slice(&delta.to_le_bytes());
    b
}

impl Replicated for Counters {
    fn apply(&mut self, op: &[u8], _info: &OpInfo) {
        if let (Some(&key), Some(delta)) = (op.first(), op.get(1..9)) {
            let delta = i64::from_le_bytes(delta.try_into().unwrap_or([0; 8]));
            let c = self.map.entry(key).or_default();
            *c = c.wrapping_add(delta);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.map.len() * 9);
        for (k, v) in &self.map {
            b.extend_from_slice(&op(*k, *v));
        }
        b
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.len() % 9 != 0 {
            return Err("snapshot length is not a multiple of 9".into());
        }
        let mut map = BTreeMap::new();
        for chunk in snapshot.chunks_exact(9) {
            let v = i64::from_le_bytes(chunk[1..9].try_into()?);
            map.insert(chunk[0], v);
        }
        self.map = map;
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = fnv_start();
        for (k, v) in &self.map {
            h = fnv(h, &[*k]);
            h = fnv(h, &v.to_le_bytes());
        }
        h
    }
}

fn members_of(v: &cpg::group::View) -> Vec<Member> {
    v.members().iter().map(|m| (m.nodeid, m.pid)).collect()
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
    let replica = match Replica::start(name, Counters::default()) {
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
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.01));
    let mut rng = Rng::new(config.seed ^ u64::from(config.inc).rotate_left(17) ^ 0x5eed);
    let mut tickets: Vec<Ticket> = Vec::new();
    let mut next = Instant::now();
    let mut events = 0u64;
    let mut submitted = 0u64;
    loop {
        match ctl.try_recv() {
            Ok(Command::Stop) => break,
            Ok(Command::Orphaned) | Err(mpsc::TryRecvError::Disconnected) => return EXIT_ORPHANED,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= next && tickets.len() < MAX_PENDING && replica.view().is_some() {
            let key = rng.below(KEYS) as u8;
            let delta = rng.below(1000) as i64 - 500;
            if let Ok(t) = replica.submit(op(key, delta)) {
                tickets.push(t);
                submitted += 1;
            }
            next = (next + interval).max(now);
        }
        tickets.retain(|t| {
            matches!(
                t.wait(Duration::ZERO),
                Err(cpg::replica::ReplicaError::Timeout)
            )
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
            events += 1;
            if let Event::View(v) = &e {
                let m = members_of(v);
                let shown: Vec<String> = m.iter().map(|(n, p)| format!("{n}:{p}")).collect();
                println!("view {}", shown.join(","));
                rec.record(&Record::GView {
                    members: m,
                    leader: v.leader().map(|l| (l.nodeid, l.pid)),
                    view: (v.id().incarnation, v.id().counter),
                    t: now_ms(),
                });
            }
        }
    }
    // Stopping: the outcomes of the own operations, then a quiet, ready state.
    let end = Instant::now() + TICKET_TIMEOUT;
    for t in &tickets {
        let _ = t.wait(end.saturating_duration_since(Instant::now()));
    }
    let ready = replica.wait_ready(READY_TIMEOUT, |_| true).is_some();
    std::thread::sleep(QUIET);
    let ready = ready && replica.wait_ready(READY_TIMEOUT, |_| true).is_some();
    let summary = replica.summary();
    rec.record(&Record::RFinal {
        version: summary.version,
        digest: summary.digest,
        members: replica.view().map_or_else(Vec::new, |v| members_of(&v)),
        ready,
        submitted,
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
