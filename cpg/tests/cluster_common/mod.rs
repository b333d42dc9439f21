//! Shared by the `cluster_*` tests: group members that record everything they observe,
//! in delivery order, and the self-checking message format the tests send.
//!
//! A [`Peer`] is one libcpg handle, created on a given node of a
//! [`cpg_testkit::Cluster`], joined to a group and driven by a thread of its own (8 MiB
//! stack) that dispatches continuously and runs the commands the test gives it (send,
//! leave, stream many messages). Its callbacks append [`Event`]s to a [`Log`], which
//! the test waits on with bounded waits that fail with a clear message.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::retry::{retry, Backoff};
use cpg::{CsError, DispatchMode, Dispatched, Error, GroupName, Handle, Member, Reason};
use cpg_testkit::Node;

/// Bound for every wait on a membership change or a delivery: token (1 s), consensus
/// (1.2 s), sync and the scheduling of a loaded 2-core machine fit well inside.
pub const WAIT: Duration = Duration::from_secs(30);

/// Stack of every thread that dispatches (libcpg keeps a 1 MiB buffer on it).
pub const STACK: usize = 8 << 20;

/// How long one dispatch waits before the peer thread looks at its commands again.
const TICK: Duration = Duration::from_millis(5);

/// What every send retries with: the default budget (30 s), so a send that fails
/// has really failed.
pub fn backoff() -> Backoff {
    Backoff::default()
}

// ---------------------------------------------------------------------------------
// Messages

const MAGIC: u32 = 0x4350_4754;
/// magic u32, sender u32, seq u64, total length u64.
pub const HEADER: usize = 24;
/// The body of a message is a window into this repeating pattern, whose start depends
/// on sender and sequence number: a message delivered with the wrong bytes, or bytes
/// of another message, is detected by one `memcmp`.
const PERIOD: usize = 251;

fn pattern(len: usize) -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = PATTERN.get_or_init(|| {
        (0..(8 << 20) + PERIOD)
            .map(|i| (i % PERIOD) as u8)
            .collect()
    });
    assert!(
        len + PERIOD <= p.len(),
        "message body of {len} bytes is too large"
    );
    p
}

fn body_start(sender: u32, seq: u64) -> usize {
    ((seq.wrapping_mul(7)).wrapping_add(u64::from(sender)) % PERIOD as u64) as usize
}

/// Message number `seq` of sender `sender`, `len` bytes long (at least [`HEADER`]).
pub fn message(sender: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&sender.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u64).to_le_bytes());
    let start = body_start(sender, seq);
    m.extend_from_slice(&pattern(len)[start..start + len - HEADER]);
    m
}

/// Checks a delivered message byte for byte; returns its sender and sequence number.
pub fn decode(data: &[u8]) -> Result<(u32, u64), String> {
    if data.len() < HEADER {
        return Err(format!("{} bytes, shorter than the header", data.len()));
    }
    let word = |at: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&data[at..at + n]);
        u64::from_le_bytes(b)
    };
    if word(0, 4) != u64::from(MAGIC) {
        return Err("bad magic".into());
    }
    let sender = word(4, 4) as u32;
    let seq = word(8, 8);
    let len = word(16, 8);
    if len != data.len() as u64 {
        return Err(format!(
            "sender {sender} seq {seq}: header says {len} bytes, {} delivered",
            data.len()
        ));
    }
    let start = body_start(sender, seq);
    if data[HEADER..] != pattern(data.len())[start..start + data.len() - HEADER] {
        return Err(format!("sender {sender} seq {seq}: body differs"));
    }
    Ok((sender, seq))
}

// ---------------------------------------------------------------------------------
// Events and logs

/// One thing a member observed, in the order its callbacks ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A test message, checked byte for byte.
    Msg {
        /// Sender number in the message.
        sender: u32,
        /// Sequence number in the message.
        seq: u64,
        /// Who libcpg says sent it.
        from: Member,
        /// Length in bytes.
        len: usize,
    },
    /// A message whose bytes were not what was sent.
    Corrupt {
        /// Who libcpg says sent it.
        from: Member,
        /// What was wrong.
        why: String,
    },
    /// A group membership change.
    Conf {
        /// Members after the change (sorted).
        members: Vec<Member>,
        /// Who left, and why.
        left: Vec<(Member, Reason)>,
        /// Who joined, and why.
        joined: Vec<(Member, Reason)>,
    },
    /// A totem (node) membership change.
    Totem {
        /// Node ids in the new ring (sorted).
        nodes: Vec<u32>,
    },
    /// Dispatch failed; the peer stopped dispatching.
    DispatchFailed(Error),
}

impl Event {
    /// The (sender, seq) of a message event.
    pub fn msg(&self) -> Option<(u32, u64)> {
        match self {
            Event::Msg { sender, seq, .. } => Some((*sender, *seq)),
            _ => None,
        }
    }
}

/// The events one member observed; shared between its callbacks and the test.
#[derive(Clone)]
pub struct Log {
    name: Arc<str>,
    inner: Arc<(Mutex<Vec<Event>>, Condvar)>,
}

impl Log {
    /// An empty log; `name` appears in failure messages.
    pub fn new(name: &str) -> Log {
        Log {
            name: name.into(),
            inner: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
        }
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, event: Event) {
        self.lock().push(event);
        self.inner.1.notify_all();
    }

    /// A copy of everything so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// Number of events so far (a mark for [`Log::since`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// A copy of the events from index `mark` on.
    pub fn since(&self, mark: usize) -> Vec<Event> {
        self.lock()[mark..].to_vec()
    }

    /// Runs `f` on the events so far (without copying them).
    pub fn with<T>(&self, f: impl FnOnce(&[Event]) -> T) -> T {
        f(&self.lock())
    }

    /// Waits until `check` (given all events so far) returns `Some`, and returns that.
    ///
    /// # Panics
    ///
    /// After `timeout`, with `what` and the last events of the log.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[Event]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut events = self.lock();
        loop {
            if let Some(found) = check(&events) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<String> = events
                    .iter()
                    .filter(|e| !matches!(e, Event::Msg { .. }))
                    .rev()
                    .take(12)
                    .map(|e| format!("  {e:?}"))
                    .collect();
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; {} events, {} \
                     messages; last non-message events (newest first):\n{}",
                    self.name,
                    events.len(),
                    events.iter().filter(|e| e.msg().is_some()).count(),
                    tail.join("\n")
                );
            }
            events = self
                .inner
                .1
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until the latest membership change of the group lists exactly `members`.
    pub fn wait_members(&self, members: &[Member], timeout: Duration) {
        let want: Vec<Member> = sorted(members.iter().copied());
        self.wait_for(&format!("group members {want:?}"), timeout, |events| {
            (latest_members(events) == Some(&want[..])).then_some(())
        })
    }

    /// Waits until `(sender, seq)` has been delivered.
    pub fn wait_message(&self, sender: u32, seq: u64, timeout: Duration) {
        self.wait_for(
            &format!("message {seq} of sender {sender}"),
            timeout,
            |events| {
                events
                    .iter()
                    .any(|e| e.msg() == Some((sender, seq)))
                    .then_some(())
            },
        )
    }
}

/// The members listed by the latest membership change in `events`.
pub fn latest_members(events: &[Event]) -> Option<&[Member]> {
    events.iter().rev().find_map(|e| match e {
        Event::Conf { members, .. } => Some(&members[..]),
        _ => None,
    })
}

/// Everyone who left in the membership changes of `events`, with the reason.
pub fn left_in(events: &[Event]) -> BTreeSet<(Member, ReasonKey)> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Conf { left, .. } => left.clone(),
            _ => Vec::new(),
        })
        .map(|(m, r)| (m, ReasonKey(r.to_raw())))
        .collect()
}

/// Everyone who joined in the membership changes of `events`, with the reason.
pub fn joined_in(events: &[Event]) -> BTreeSet<(Member, ReasonKey)> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Conf { joined, .. } => joined.clone(),
            _ => Vec::new(),
        })
        .map(|(m, r)| (m, ReasonKey(r.to_raw())))
        .collect()
}

/// A [`Reason`] that can be put in an ordered set (its raw value), printed by name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReasonKey(pub u32);

impl From<Reason> for ReasonKey {
    fn from(r: Reason) -> Self {
        ReasonKey(r.to_raw())
    }
}

impl std::fmt::Debug for ReasonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Reason::from_raw(self.0))
    }
}

/// `members`, each with `reason`, as a set comparable with [`left_in`] / [`joined_in`].
pub fn with_reason(members: &[Member], reason: Reason) -> BTreeSet<(Member, ReasonKey)> {
    members.iter().map(|m| (*m, reason.into())).collect()
}

/// The (sender, seq) of every message in `events`, in delivery order.
pub fn messages(events: &[Event]) -> Vec<(u32, u64)> {
    events.iter().filter_map(Event::msg).collect()
}

/// A digest of a delivery sequence (FNV-1a over the sender and sequence numbers), for
/// comparing sequences recorded in other processes.
pub fn digest(msgs: &[(u32, u64)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (sender, seq) in msgs {
        for b in sender.to_le_bytes().into_iter().chain(seq.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The membership changes and messages of `events` (the stream that virtual synchrony
/// says is the same on every member that stays), without totem changes.
pub fn group_stream(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::Msg { .. } | Event::Conf { .. }))
        .cloned()
        .collect()
}

/// Asserts that no delivered message had wrong bytes.
pub fn assert_intact(log: &Log) {
    let bad: Vec<Event> = log
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Corrupt { .. }))
        .collect();
    assert!(
        bad.is_empty(),
        "{}: corrupt deliveries: {bad:?}",
        log.name()
    );
}

/// Asserts that `sender`'s messages in `msgs` are exactly `0..count`, in order: FIFO,
/// none missing, none duplicated.
pub fn assert_fifo_complete(who: &str, msgs: &[(u32, u64)], sender: u32, count: u64) {
    let got: Vec<u64> = msgs
        .iter()
        .filter(|(s, _)| *s == sender)
        .map(|(_, q)| *q)
        .collect();
    if let Some(i) = got.iter().enumerate().position(|(i, q)| *q != i as u64) {
        panic!(
            "{who}: sender {sender}'s message #{i} is seq {} (expected {i}); around it: {:?}",
            got[i],
            &got[i.saturating_sub(3)..(i + 3).min(got.len())]
        );
    }
    assert_eq!(
        got.len() as u64,
        count,
        "{who}: {} of sender {sender}'s {count} messages delivered",
        got.len()
    );
}

/// Asserts that two delivery streams are identical, naming the first difference.
pub fn assert_same_stream<T: PartialEq + std::fmt::Debug>(a: (&str, &[T]), b: (&str, &[T])) {
    if let Some(i) = a.1.iter().zip(b.1).position(|(x, y)| x != y) {
        panic!(
            "{} and {} differ at delivery #{i}: {:?} vs {:?}",
            a.0, b.0, a.1[i], b.1[i]
        );
    }
    assert_eq!(
        a.1.len(),
        b.1.len(),
        "{} delivered {} events, {} delivered {} (one is a prefix of the other)",
        a.0,
        a.1.len(),
        b.0,
        b.1.len()
    );
}

fn sorted<T: Ord>(it: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.into_iter().collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------
// Peers

/// Many messages sent back to back by a peer.
pub struct Stream {
    /// Sender number written into each message.
    pub sender: u32,
    /// How many messages (sequence numbers `0..count`).
    pub count: u64,
    /// Length of message `seq`.
    pub size: Box<dyn Fn(u64) -> usize + Send>,
    /// After every this many messages, deliver what is pending (bounded) and sleep for
    /// `pause`, to spread the stream over time; `None` sends back to back.
    pub pace: Option<(u64, Duration)>,
}

/// What a peer's stream did; updated while it runs.
#[derive(Default)]
pub struct Stats {
    /// Messages accepted by the daemon.
    pub sent: AtomicU64,
    /// Bytes accepted by the daemon.
    pub bytes: AtomicU64,
    /// First attempts that got `CS_ERR_TRY_AGAIN`.
    pub try_again: AtomicU64,
    /// First attempts that got `CS_ERR_QUEUE_FULL`.
    pub queue_full: AtomicU64,
    /// The stream ended (all sent, or failed).
    pub done: AtomicBool,
    /// Why the stream stopped early.
    pub error: Mutex<Option<Error>>,
}

enum Cmd {
    Send(Vec<u8>, Sender<cpg::Result<()>>),
    Leave(Sender<cpg::Result<()>>),
    MaxSize(Sender<cpg::Result<u32>>),
    Stream(Stream),
}

/// One group member: a handle made on a node, joined, and dispatched by its own thread.
pub struct Peer {
    name: String,
    member: Member,
    log: Log,
    stats: Arc<Stats>,
    cmds: Option<Sender<Cmd>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sender: cpg::Sender,
}

/// One peer per node of `cluster`, named `node1`, `node2`, ..., all joined to `group`;
/// returns once every peer sees all of them as members.
pub fn join_every_node(cluster: &cpg_testkit::Cluster, group: &GroupName) -> Vec<Peer> {
    let peers: Vec<Peer> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| Peer::join(node, &format!("node{}", i + 1), group))
        .collect();
    let all: Vec<Member> = peers.iter().map(Peer::member).collect();
    for p in &peers {
        p.log().wait_members(&all, WAIT);
    }
    peers
}

impl Peer {
    /// Connects to `node`'s daemon, joins `group` (retrying on back-pressure), and
    /// starts dispatching. Callbacks record into the returned peer's log.
    ///
    /// # Panics
    ///
    /// If the handle cannot be made or the join fails.
    pub fn join(node: &Node, name: &str, group: &GroupName) -> Peer {
        let log = Log::new(name);
        let handle = node
            .enter(|| recording_handle(&log))
            .unwrap_or_else(|e| panic!("{name}: cannot connect to node {}: {e}", node.nodeid()));
        let nodeid = handle
            .local_node_id()
            .unwrap_or_else(|e| panic!("{name}: local node id: {e}"));
        assert_eq!(
            nodeid,
            node.nodeid(),
            "{name}: connected to the wrong daemon"
        );
        let member = Member {
            nodeid,
            pid: std::process::id(),
        };
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sender = handle.sender();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (log, stats, stop, group) = (log.clone(), stats.clone(), stop.clone(), *group);
            std::thread::Builder::new()
                .name(name.to_string())
                .stack_size(STACK)
                .spawn(move || {
                    let joined = retry(&backoff(), || handle.join(&group));
                    let ok = joined.is_ok();
                    let _ = ready_tx.send(joined);
                    if ok {
                        run(handle, &group, &log, &stats, &stop, &rx);
                    }
                })
                .expect("spawn a peer thread")
        };
        match ready_rx.recv_timeout(WAIT * 2) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: join failed: {e}"),
            Err(_) => panic!("{name}: join did not return within {:?}", WAIT * 2),
        }
        Peer {
            name: name.to_string(),
            member,
            log,
            stats,
            cmds: Some(tx),
            stop,
            thread: Some(thread),
            sender,
        }
    }

    /// A sender for other threads, while the peer's thread dispatches.
    pub fn sender(&self) -> cpg::Sender {
        self.sender.clone()
    }

    /// This peer as a group member (node id, this process's pid).
    pub fn member(&self) -> Member {
        self.member
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this peer observed.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The statistics of its stream.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn call<T>(&self, make: impl FnOnce(Sender<cpg::Result<T>>) -> Cmd) -> cpg::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.cmds
            .as_ref()
            .expect("peer running")
            .send(make(tx))
            .unwrap_or_else(|_| panic!("{}: peer thread is gone", self.name));
        // A send retries for at most 30 s; a stream in progress delays commands.
        match rx.recv_timeout(WAIT * 4) {
            Ok(r) => r,
            Err(_) => panic!("{}: command not answered within {:?}", self.name, WAIT * 4),
        }
    }

    /// Sends `data` with [`Handle::send_with_retry`], from the peer's thread.
    pub fn send(&self, data: Vec<u8>) -> cpg::Result<()> {
        self.call(|tx| Cmd::Send(data, tx))
    }

    /// Leaves the group.
    pub fn leave(&self) -> cpg::Result<()> {
        self.call(Cmd::Leave)
    }

    /// `max_message_size()` of the peer's handle.
    pub fn max_message_size(&self) -> u32 {
        self.call(Cmd::MaxSize)
            .unwrap_or_else(|e| panic!("{}: max_message_size: {e}", self.name))
    }

    /// Starts sending `stream` from the peer's thread; returns at once.
    pub fn stream(&self, stream: Stream) {
        self.stats.done.store(false, Ordering::SeqCst);
        self.cmds
            .as_ref()
            .expect("peer running")
            .send(Cmd::Stream(stream))
            .unwrap_or_else(|_| panic!("{}: peer thread is gone", self.name));
    }

    /// Waits until the stream has ended; returns the number of messages sent, or the
    /// error that stopped it.
    pub fn wait_stream(&self, timeout: Duration) -> Result<u64, Error> {
        let ended = cpg_testkit::wait_until(timeout, Duration::from_millis(20), || {
            self.stats.done.load(Ordering::SeqCst)
        });
        assert!(
            ended,
            "{}: stream not finished within {timeout:?} ({} sent)",
            self.name,
            self.stats.sent.load(Ordering::SeqCst)
        );
        match self.stats.error.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(self.stats.sent.load(Ordering::SeqCst)),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cmds = None;
        if let Some(t) = self.thread.take() {
            // Propagate a panic of the peer thread only if the test is not already
            // failing.
            if t.join().is_err() && !std::thread::panicking() {
                panic!("{}: peer thread panicked", self.name);
            }
        }
    }
}

/// A handle whose callbacks record into `log`.
pub fn recording_handle(log: &Log) -> cpg::Result<Handle> {
    let (d, c, t) = (log.clone(), log.clone(), log.clone());
    Handle::builder()
        .on_deliver(move |_cpg, m| {
            let from = m.sender();
            d.push(match decode(m.data) {
                Ok((sender, seq)) => Event::Msg {
                    sender,
                    seq,
                    from,
                    len: m.data.len(),
                },
                Err(why) => Event::Corrupt { from, why },
            })
        })
        .on_confchg(move |_cpg, change| {
            let pair = |a: &cpg::ListedMember| (a.member(), a.reason());
            c.push(Event::Conf {
                members: sorted(change.members.iter().map(|a| a.member())),
                left: change.left.iter().map(pair).collect(),
                joined: change.joined.iter().map(pair).collect(),
            })
        })
        .on_totem_confchg(move |_cpg, change| {
            t.push(Event::Totem {
                nodes: sorted(change.members.iter().copied()),
            })
        })
        .build()
}

/// The peer thread: commands, then dispatch, until stopped. After a dispatch failure
/// (daemon lost) it records the error, stops dispatching and still answers commands,
/// so a test can see what the dead handle returns.
fn run(
    handle: Handle,
    group: &GroupName,
    log: &Log,
    stats: &Stats,
    stop: &AtomicBool,
    cmds: &Receiver<Cmd>,
) {
    let mut dispatching = true;
    while !stop.load(Ordering::SeqCst) {
        let cmd = if dispatching {
            match cmds.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match cmds.recv_timeout(TICK) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        match cmd {
            Some(Cmd::Send(data, reply)) => {
                let _ = reply.send(handle.send_with_retry(&data, &backoff()));
            }
            Some(Cmd::Leave(reply)) => {
                let _ = reply.send(handle.leave(group));
            }
            Some(Cmd::MaxSize(reply)) => {
                let _ = reply.send(handle.max_message_size());
            }
            Some(Cmd::Stream(s)) => run_stream(&handle, &s, stats, stop),
            None => {}
        }
        if dispatching {
            if let Err(e) = handle.dispatch_timeout(TICK) {
                log.push(Event::DispatchFailed(e));
                dispatching = false;
            }
        }
    }
}

/// Delivers what is pending, but at most [`DRAIN_MAX`] events: `DispatchMode::All`
/// (what `dispatch_timeout` uses) keeps going for as long as events keep arriving,
/// which under other nodes' streams can starve this peer's own sending.
fn drain_some(handle: &Handle) -> cpg::Result<()> {
    for _ in 0..DRAIN_MAX {
        if handle.dispatch(DispatchMode::OneNonblocking)? == Dispatched::NothingPending {
            break;
        }
    }
    Ok(())
}

/// Most events [`drain_some`] delivers at once.
const DRAIN_MAX: usize = 200;

fn run_stream(handle: &Handle, s: &Stream, stats: &Stats, stop: &AtomicBool) {
    let backoff = backoff();
    for seq in 0..s.count {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let msg = message(s.sender, seq, (s.size)(seq));
        // A plain send first, to count back-pressure; then the retry helper.
        let sent = match handle.send(&msg) {
            Err(e) if e.is_retryable() => {
                match e.code() {
                    Some(CsError::TryAgain) => stats.try_again.fetch_add(1, Ordering::SeqCst),
                    Some(CsError::QueueFull) => stats.queue_full.fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
                handle.send_with_retry(&msg, &backoff)
            }
            other => other,
        };
        if let Err(e) = sent {
            *stats.error.lock().unwrap() = Some(e);
            break;
        }
        stats.sent.fetch_add(1, Ordering::SeqCst);
        stats.bytes.fetch_add(msg.len() as u64, Ordering::SeqCst);
        if let Some((every, pause)) = s.pace {
            if (seq + 1) % every == 0 {
                if let Err(e) = drain_some(handle) {
                    *stats.error.lock().unwrap() = Some(e);
                    break;
                }
                std::thread::sleep(pause);
            }
        }
    }
    stats.done.store(true, Ordering::SeqCst);
}
