//! Members of the replica layer on a cluster: a test state that records every applied
//! operation ([`OpLog`]), replicas ([`cpg::replica::Replica`]) started on the nodes of
//! a real [`cpg_testkit::Cluster`] with a thread that records their events, writers
//! that submit operations and record each outcome, and the end-of-scenario check:
//! every replica holds the same history, each operation in it once, and every
//! operation confirmed and not reported discarded is in it.
//!
//! A round of the replica layer (a state transfer, a verification) spans several
//! membership changes: every wait here is `WAIT * 2`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::replica::{
    fnv, fnv_start, Config, Event, OpInfo, Outcome, Replica, ReplicaError, Replicated,
    RestoreError, RoundId, Summary, ViewChange,
};
use cpg::{GroupName, Member};
use cpg_testkit::Node;

use super::WAIT;

/// The test state: every applied operation (origin, seq, bytes) in order, every view
/// change the state learned (the version it came at, the members), a padding blob to
/// make the state large (set by an operation `pad <bytes>`) and a merge hint (set by an
/// operation `hint <n>`).
#[derive(Debug, Default)]
pub struct OpLog {
    pub ops: Vec<(Member, u64, Vec<u8>)>,
    pub views: Vec<(u64, Vec<Member>)>,
    pub pad: Vec<u8>,
    pub hint: u64,
}

impl Replicated for OpLog {
    /// The operation's place in the history: how many the history holds with it.
    type Output = usize;

    fn apply(&mut self, op: &[u8], info: &OpInfo) -> usize {
        if let Some(n) = op.strip_prefix(b"pad ") {
            let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
            self.pad = (0..n).map(|i| (i % 251) as u8).collect();
        }
        if let Some(n) = op.strip_prefix(b"hint ") {
            self.hint = std::str::from_utf8(n).unwrap().parse().unwrap();
        }
        self.ops.push((info.origin, info.seq, op.to_vec()));
        self.ops.len()
    }

    fn apply_view(&mut self, view: &ViewChange<'_>) {
        self.views.push((view.version, view.members.to_vec()));
    }

    fn merge_hint(&self) -> u64 {
        self.hint
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.pad.len() + self.ops.len() * 40 + 16);
        b.extend_from_slice(&(self.pad.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.pad);
        b.extend_from_slice(&self.hint.to_le_bytes());
        b.extend_from_slice(&(self.views.len() as u32).to_le_bytes());
        for (version, members) in &self.views {
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&(members.len() as u32).to_le_bytes());
            for m in members {
                b.extend_from_slice(&m.nodeid.to_le_bytes());
                b.extend_from_slice(&m.pid.to_le_bytes());
            }
        }
        for (m, seq, op) in &self.ops {
            b.extend_from_slice(&m.nodeid.to_le_bytes());
            b.extend_from_slice(&m.pid.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&(op.len() as u32).to_le_bytes());
            b.extend_from_slice(op);
        }
        b
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        let u32_at = |i: usize| -> Result<u32, RestoreError> {
            Ok(u32::from_le_bytes(
                s.get(i..i + 4).ok_or("short")?.try_into()?,
            ))
        };
        let u64_at = |i: usize| -> Result<u64, RestoreError> {
            Ok(u64::from_le_bytes(
                s.get(i..i + 8).ok_or("short")?.try_into()?,
            ))
        };
        let pad = u64_at(0)? as usize;
        let mut at = 8 + pad;
        let padding = s.get(8..at).ok_or("short")?.to_vec();
        let hint = u64_at(at)?;
        let n = u32_at(at + 8)?;
        at += 12;
        let mut views = Vec::new();
        for _ in 0..n {
            let version = u64_at(at)?;
            let k = u32_at(at + 8)?;
            at += 12;
            let mut members = Vec::new();
            for _ in 0..k {
                members.push(Member {
                    nodeid: u32_at(at)?,
                    pid: u32_at(at + 4)?,
                });
                at += 8;
            }
            views.push((version, members));
        }
        let mut ops = Vec::new();
        while at < s.len() {
            let m = Member {
                nodeid: u32_at(at)?,
                pid: u32_at(at + 4)?,
            };
            let seq = u64_at(at + 8)?;
            let len = u32_at(at + 16)? as usize;
            at += 20;
            ops.push((m, seq, s.get(at..at + len).ok_or("short")?.to_vec()));
            at += len;
        }
        self.ops = ops;
        self.views = views;
        self.pad = padding;
        self.hint = hint;
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = fnv(fnv_start(), &(self.pad.len() as u64).to_le_bytes());
        h = fnv(h, &self.hint.to_le_bytes());
        for (version, members) in &self.views {
            h = fnv(h, &version.to_le_bytes());
            for m in members {
                h = fnv(h, &m.nodeid.to_le_bytes());
                h = fnv(h, &m.pid.to_le_bytes());
            }
        }
        for (m, seq, op) in &self.ops {
            h = fnv(h, &m.nodeid.to_le_bytes());
            h = fnv(h, &m.pid.to_le_bytes());
            h = fnv(h, &seq.to_le_bytes());
            h = fnv(h, op);
        }
        h
    }
}

/// A replica on a node, its events recorded by a thread of its own.
pub struct Rep {
    pub name: String,
    pub replica: Arc<Replica<OpLog>>,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    /// How many times the recording thread found the replica's event queue empty (see
    /// [`caught_up`](Self::caught_up)).
    idle: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Settings for the tests: a shorter round deadline, verification every 5 s.
pub fn config() -> Config {
    let mut c = Config::default();
    c.round_timeout = Duration::from_secs(10);
    c.verify_interval = Some(Duration::from_secs(5));
    c
}

impl Rep {
    /// Starts a replica of `group` on `node`.
    pub fn start(node: &Node, name: &str, group: &GroupName) -> Rep {
        Rep::start_with(node, name, group, config())
    }

    /// Starts a replica of `group` on `node` with `config`.
    pub fn start_with(node: &Node, name: &str, group: &GroupName, config: Config) -> Rep {
        let replica = node
            .enter(|| {
                Replica::builder(*group, OpLog::default())
                    .config(config)
                    .start()
            })
            .unwrap_or_else(|e| panic!("{name}: cannot start on node {}: {e}", node.nodeid()));
        let replica = Arc::new(replica);
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicU64::new(0));
        let thread = {
            let (r, ev, stop, idle) = (
                Arc::clone(&replica),
                Arc::clone(&events),
                Arc::clone(&stop),
                Arc::clone(&idle),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match r.next_event(Duration::from_millis(50)) {
                        Some(e) => ev.lock().unwrap().push((Instant::now(), e)),
                        // The queue was empty (for 50 ms, or the replica ended with
                        // it empty): every event taken before this call is recorded.
                        None => {
                            idle.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        };
        Rep {
            name: name.to_string(),
            replica,
            events,
            idle,
            stop,
            thread: Some(thread),
        }
    }

    /// The events recorded so far: a moment behind the replica (call
    /// [`caught_up`](Self::caught_up) first for every event it produced before).
    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until every event the replica produced before the call is recorded. The
    /// recording thread takes them one at a time, at its own pace: a replica is ready
    /// ([`wait_ready`](Self::wait_ready)) in the same pass of its driver that
    /// produced the [`Event::Restored`] of its round, and a check right after can run
    /// before the thread has recorded it (on a loaded machine it did: a discarded
    /// write looked "confirmed but missing"). The second time the thread finds the
    /// replica's queue empty after the call began, it found it empty in a wait that
    /// began after the call, so it had taken, and recorded, every event before.
    pub fn caught_up(&self) {
        let start = self.idle.load(Ordering::SeqCst);
        let limit = WAIT * 2;
        let deadline = Instant::now() + limit;
        while self.idle.load(Ordering::SeqCst) < start + 2 {
            assert!(
                Instant::now() < deadline,
                "{}: events kept coming for {limit:?}: cannot tell they are all recorded",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until an event satisfies `find` (events are recorded a moment after the
    /// replica produces them); returns what `find` returned for the latest such.
    pub fn wait_event<T>(&self, what: &str, mut find: impl FnMut(&Event) -> Option<T>) -> T {
        let limit = WAIT * 2;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = self.events().iter().rev().find_map(|(_, e)| find(e)) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// This member, once in a view.
    pub fn member(&self) -> Member {
        self.replica
            .view()
            .and_then(|v| v.me())
            .unwrap_or_else(|| panic!("{}: not in a view", self.name))
    }

    /// Waits until in sync in a view of `n` members; returns when.
    pub fn wait_ready(&self, n: usize) -> Instant {
        let limit = WAIT * 2;
        self.replica
            .wait_ready(limit, |v| v.len() == n)
            .unwrap_or_else(|| {
                panic!(
                    "{}: not ready in a view of {n} within {limit:?}; phase {:?}, view {:?}, \
                     last events {:?}",
                    self.name,
                    self.replica.phase(),
                    self.replica.view(),
                    self.events().iter().rev().take(8).collect::<Vec<_>>()
                )
            });
        Instant::now()
    }

    /// The view changes the state learned here ([`Event::ViewApplied`]), in order:
    /// (round, members, version); all of them up to the call.
    pub fn views_applied(&self) -> Vec<(RoundId, Vec<Member>, u64)> {
        self.caught_up();
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::ViewApplied {
                    round,
                    members,
                    version,
                } => Some((round, members, version)),
                _ => None,
            })
            .collect()
    }

    /// The own operations this replica was told were discarded, up to the call.
    pub fn discarded(&self) -> BTreeSet<u64> {
        self.caught_up();
        self.events()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Restored { discarded, .. } => Some(discarded.iter().map(|d| d.seq)),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl Drop for Rep {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Each submitted operation's sequence number and outcome (the version after it, and
/// its place in the history).
pub type Outcomes = Vec<(u64, Result<Outcome<usize>, ReplicaError>)>;

/// A thread submitting operations to one replica, one at a time, recording each
/// outcome, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Outcomes>>,
}

impl Writer {
    /// Starts writing `w<tag>:<n>` operations to `rep`, pausing `pause` between them.
    pub fn start(rep: &Rep, tag: &str, pause: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&rep.replica);
        let (s, tag) = (Arc::clone(&stop), tag.to_string());
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                match r.submit(format!("w{tag}:{n}")) {
                    Ok(t) => out.push((t.seq(), t.wait(WAIT * 2))),
                    Err(e) => panic!("writer {tag}: submit: {e}"),
                }
                std::thread::sleep(pause);
            }
            out
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns every outcome: (seq, version or error).
    pub fn finish(mut self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("writer panicked")
    }
}

/// Waits until all `reps` are ready in a view of all of them with the same summary;
/// then checks their histories: the same operations in the same order, each once,
/// per origin in submission order; every confirmed operation (in `confirmed`, per
/// replica index) that its replica was not told was discarded is in the history, and
/// no discarded one is. Returns the common summary.
pub fn assert_converged(what: &str, reps: &[&Rep], confirmed: &[Vec<u64>]) -> Summary {
    assert_converged_in(what, reps.len(), reps, confirmed)
}

/// [`assert_converged`] for replicas in a view of `n` members (some of them not in
/// `reps`).
pub fn assert_converged_in(what: &str, n: usize, reps: &[&Rep], confirmed: &[Vec<u64>]) -> Summary {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        for r in reps {
            r.wait_ready(n);
        }
        let summaries: Vec<Summary> = reps.iter().map(|r| r.replica.summary()).collect();
        if summaries.iter().all(|s| *s == summaries[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: summaries differ: {summaries:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let histories: Vec<Vec<(Member, u64)>> = reps
        .iter()
        .map(|r| {
            r.replica
                .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect())
        })
        .collect();
    for (r, h) in reps.iter().zip(&histories) {
        assert_eq!(h, &histories[0], "{what}: {}'s history differs", r.name);
    }
    let history = &histories[0];
    let unique: BTreeSet<&(Member, u64)> = history.iter().collect();
    assert_eq!(
        unique.len(),
        history.len(),
        "{what}: an operation applied twice"
    );
    let mut last: BTreeMap<Member, u64> = BTreeMap::new();
    for (m, q) in history {
        let prev = last.insert(*m, *q).unwrap_or(0);
        assert!(
            *q > prev,
            "{what}: {m}'s operations out of order ({prev} then {q})"
        );
    }
    for (i, r) in reps.iter().enumerate() {
        let me = r.member();
        let discarded = r.discarded();
        for seq in confirmed.get(i).into_iter().flatten() {
            let present = unique.contains(&(me, *seq));
            if discarded.contains(seq) {
                assert!(
                    !present,
                    "{what}: {} op {seq} reported discarded but kept",
                    r.name
                );
            } else {
                assert!(present, "{what}: {} op {seq} confirmed but missing", r.name);
            }
        }
    }
    reps[0].replica.summary()
}

/// Checks that every member that applied a view change reported it at the same
/// version, with the same members, as every other member that reported the same
/// round; returns how many rounds more than one member reported.
pub fn assert_views_agree(what: &str, reps: &[&Rep]) -> usize {
    let mut seen: BTreeMap<String, (String, Vec<Member>, u64)> = BTreeMap::new();
    let mut shared = BTreeSet::new();
    for r in reps {
        for (round, members, version) in r.views_applied() {
            let key = round.to_string();
            match seen.get(&key) {
                None => {
                    seen.insert(key, (r.name.clone(), members, version));
                }
                Some((first, m, v)) => {
                    assert_eq!(
                        (m, *v),
                        (&members, version),
                        "{what}: {first} and {} applied {key} differently",
                        r.name
                    );
                    shared.insert(key);
                }
            }
        }
    }
    shared.len()
}

/// Checks each confirmed operation's output against the common history (after
/// [`assert_converged`]): an operation's output is its place in the history, as
/// every member computed it, so one that was kept sits where its output says, and its
/// version is that place. Returns how many outputs were checked.
pub fn assert_outputs(what: &str, reps: &[&Rep], outcomes: &[&Outcomes]) -> usize {
    let history: Vec<(Member, u64)> = reps[0]
        .replica
        .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
    let mut checked = 0;
    for (r, outcomes) in reps.iter().zip(outcomes) {
        let (me, discarded) = (r.member(), r.discarded());
        for (seq, result) in outcomes.iter() {
            let Ok(done) = result else { continue };
            if discarded.contains(seq) {
                continue;
            }
            assert_eq!(
                history.get(done.output - 1),
                Some(&(me, *seq)),
                "{what}: {}'s op {seq} resolved with output {}, not its place",
                r.name,
                done.output
            );
            assert_eq!(done.version, done.output as u64, "{what}: {}", r.name);
            checked += 1;
        }
    }
    checked
}

/// The sequence numbers of the operations confirmed applied.
pub fn confirmed(outcomes: &[(u64, Result<Outcome<usize>, ReplicaError>)]) -> Vec<u64> {
    outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(s, _)| *s)
        .collect()
}

/// A replicated counter of applied operations: the smallest [`Replicated`] state.
#[derive(Default)]
pub struct Count(pub u64);

impl Replicated for Count {
    type Output = ();

    fn apply(&mut self, _op: &[u8], _info: &OpInfo) {
        self.0 += 1;
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        self.0 = u64::from_le_bytes(s.try_into()?);
        Ok(())
    }
    fn digest(&self) -> u64 {
        self.0
    }
}
