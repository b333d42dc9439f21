//! A [`Peer`]: one libcpg handle made on a node, whose callbacks record every
//! [`Event`] into its [`Log`]. It is driven in one of two ways, chosen by constructor:
//!
//! - **pumped** ([`Peer::pumped`]): the test owns the handle ([`Peer::handle`]), calls
//!   it directly and dispatches it with [`pump_until`] / [`pump_for`]; the peer keeps a
//!   copy of every message ([`Keep::Bytes`]). For tests of the handle itself: what a
//!   call returns, which dispatch mode runs which callback, on which thread.
//! - **threaded** ([`Peer::threaded`]): joined to a group and dispatched by a thread of
//!   its own (with a [`BIG_STACK`]) that also runs the test's commands (send, leave,
//!   stream many messages); the peer checks every test message and keeps its header
//!   ([`Keep::Checked`]). For scenarios on a cluster, where members must go on
//!   delivering while the test waits, injects faults or other threads send; the test
//!   waits on the log ([`Log::wait_for`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::retry::{retry, Backoff};
use cpg::{CsError, DispatchMode, Dispatched, Error, GroupName, Handle, Member};
use cpg_testkit::{Cluster, Node};

use super::event::{recording_handle, Event, Keep};
use super::log::Log;
use super::message::message;
use super::{pid, BIG_STACK, WAIT};

/// How long one dispatch of a threaded peer waits before it looks at its commands
/// again.
const TICK: Duration = Duration::from_millis(5);

/// What every send of a threaded peer retries with: the default budget (30 s), so a
/// send that fails has really failed.
pub fn backoff() -> Backoff {
    Backoff::default()
}

/// Joins `handle` to `group`, waiting out back-pressure with [`backoff`]. The tests of
/// one binary share its daemons, and while a sibling floods one of them, that daemon
/// answers every join on it with `TryAgain` (DESIGN fact 9): for a test that needs a
/// member, not back-pressure, that is no failure.
pub fn join_waiting(handle: &Handle, group: &GroupName) -> cpg::Result<()> {
    retry(&backoff(), || handle.join(group))
}

/// Leaves `group` through `handle`, waiting out back-pressure (for the reason
/// [`join_waiting`] does: a leave goes through the ring as a join does).
pub fn leave_waiting(handle: &Handle, group: &GroupName) -> cpg::Result<()> {
    retry(&backoff(), || handle.leave(group))
}

/// Sends `data` through `handle`, waiting out back-pressure with [`backoff`] (for the
/// reason [`join_waiting`] does). Unlike [`Handle::send_with_retry`] it dispatches
/// nothing meanwhile: a pumped peer's events stay for the test to pump.
pub fn send_waiting(handle: &Handle, data: &[u8]) -> cpg::Result<()> {
    retry(&backoff(), || handle.send(data))
}

/// One member: a handle on a node, recording what its callbacks see.
pub struct Peer {
    name: String,
    log: Log<Event>,
    mode: Mode,
}

/// Who dispatches a peer's handle.
enum Mode {
    /// The test, through [`pump_until`] and [`pump_for`].
    Pumped(Handle),
    /// A thread of the peer's own.
    Threaded(Dispatcher),
}

impl Peer {
    /// A pumped peer: connects to node `i` of `cluster` (named `node<i+1>`), recording
    /// events with a copy of every message. The test dispatches it.
    pub fn pumped(cluster: &Cluster, i: usize) -> Peer {
        Peer::connect(cluster, i, false)
    }

    /// [`Peer::pumped`], asking for the totem configuration current at the join.
    pub fn pumped_with_initial_totem(cluster: &Cluster, i: usize) -> Peer {
        Peer::connect(cluster, i, true)
    }

    fn connect(cluster: &Cluster, i: usize, initial_totem: bool) -> Peer {
        let name = format!("node{}", i + 1);
        let log = Log::new(&name);
        let handle = cluster
            .node(i)
            .enter(|| recording_handle(&log, Keep::Bytes, initial_totem))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to node {}: {e}\n{}",
                    i + 1,
                    cluster.node(i).log_tail(20)
                )
            });
        Peer {
            name,
            log,
            mode: Mode::Pumped(handle),
        }
    }

    /// A pumped peer around a handle made with callbacks of its own: its log stays
    /// empty, and [`pump_until`] dispatches it with the others.
    pub fn pumped_from(name: &str, handle: Handle) -> Peer {
        Peer {
            name: name.to_string(),
            log: Log::new(name),
            mode: Mode::Pumped(handle),
        }
    }

    /// A threaded peer: connects to `node`'s daemon, joins `group` (retrying on
    /// back-pressure), and starts dispatching on a thread of its own. Its callbacks
    /// check every test message and record its header.
    ///
    /// # Panics
    ///
    /// If the handle cannot be made or the join fails.
    pub fn threaded(node: &Node, name: &str, group: &GroupName) -> Peer {
        let log = Log::new(name);
        let handle = node
            .enter(|| recording_handle(&log, Keep::Checked, false))
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
                .stack_size(BIG_STACK)
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
            log,
            mode: Mode::Threaded(Dispatcher {
                name: name.to_string(),
                member,
                stats,
                cmds: Some(tx),
                stop,
                thread: Some(thread),
                sender,
            }),
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this peer observed.
    pub fn log(&self) -> &Log<Event> {
        &self.log
    }

    /// A copy of everything it observed so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.events()
    }

    /// Messages delivered in `group`, as (node id, data) (a pumped peer's).
    pub fn messages(&self, group: &GroupName) -> Vec<(u32, Vec<u8>)> {
        self.log.messages_in(group)
    }

    /// Configuration changes of `group`.
    pub fn confchgs(&self, group: &GroupName) -> Vec<Event> {
        self.log.confchgs(group)
    }

    /// The members reported by the last configuration change of `group`.
    pub fn last_members(&self, group: &GroupName) -> Option<Vec<Member>> {
        self.log.last_members(group)
    }

    // ---------------------------------------------------------------------------
    // Pumped peers

    /// The handle of a pumped peer.
    ///
    /// # Panics
    ///
    /// If the peer is threaded: its handle belongs to its thread.
    pub fn handle(&self) -> &Handle {
        match &self.mode {
            Mode::Pumped(handle) => handle,
            Mode::Threaded(_) => panic!(
                "{}: dispatched by its own thread; use its commands, not its handle",
                self.name
            ),
        }
    }

    /// The handle of a pumped peer, for a call that consumes it.
    ///
    /// # Panics
    ///
    /// If the peer is threaded.
    pub fn into_handle(self) -> Handle {
        match self.mode {
            Mode::Pumped(handle) => handle,
            Mode::Threaded(_) => panic!("{}: dispatched by its own thread", self.name),
        }
    }

    // ---------------------------------------------------------------------------
    // Threaded peers

    fn dispatcher(&self) -> &Dispatcher {
        match &self.mode {
            Mode::Threaded(d) => d,
            Mode::Pumped(_) => panic!(
                "{}: pumped by the test; call its handle() directly",
                self.name
            ),
        }
    }

    /// This peer as a group member (node id, this process's pid).
    pub fn member(&self) -> Member {
        self.dispatcher().member
    }

    /// A sender for other threads, while the peer's thread dispatches.
    pub fn sender(&self) -> cpg::Sender {
        self.dispatcher().sender.clone()
    }

    /// The statistics of its stream.
    pub fn stats(&self) -> &Stats {
        &self.dispatcher().stats
    }

    fn call<T>(&self, make: impl FnOnce(Sender<cpg::Result<T>>) -> Cmd) -> cpg::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.dispatcher()
            .cmds
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
        let d = self.dispatcher();
        d.stats.done.store(false, Ordering::SeqCst);
        d.cmds
            .as_ref()
            .expect("peer running")
            .send(Cmd::Stream(stream))
            .unwrap_or_else(|_| panic!("{}: peer thread is gone", self.name));
    }

    /// Waits until the stream has ended; returns the number of messages sent, or the
    /// error that stopped it.
    pub fn wait_stream(&self, timeout: Duration) -> Result<u64, Error> {
        let stats = self.stats();
        let ended = cpg_testkit::wait_until(timeout, Duration::from_millis(20), || {
            stats.done.load(Ordering::SeqCst)
        });
        assert!(
            ended,
            "{}: stream not finished within {timeout:?} ({} sent)",
            self.name,
            stats.sent.load(Ordering::SeqCst)
        );
        match stats.error.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(stats.sent.load(Ordering::SeqCst)),
        }
    }
}

/// Two pumped peers of this process, on node 1 and node 2 of `cluster`, both joined to
/// `group` and seeing each other in it.
pub fn joined_pair(cluster: &Cluster, group: &GroupName) -> (Peer, Peer) {
    let a = Peer::pumped(cluster, 0);
    let b = Peer::pumped(cluster, 1);
    join_waiting(a.handle(), group).expect("join a");
    join_waiting(b.handle(), group).expect("join b");
    let both = vec![Member::new(1, pid()), Member::new(2, pid())];
    pump_until(&[&a, &b], WAIT, "both members in both views", || {
        a.last_members(group).as_ref() == Some(&both)
            && b.last_members(group).as_ref() == Some(&both)
    });
    (a, b)
}

/// Dispatches every (pumped) peer until `done` holds, failing the test after `timeout`.
pub fn pump_until(peers: &[&Peer], timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        for p in peers {
            p.handle()
                .dispatch_timeout(Duration::from_millis(5))
                .unwrap_or_else(|e| panic!("dispatch while waiting for {what}: {e}"));
        }
    }
}

/// Dispatches every (pumped) peer for `period`, for checks that something does *not*
/// arrive.
pub fn pump_for(peers: &[&Peer], period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        for p in peers {
            p.handle()
                .dispatch_timeout(Duration::from_millis(5))
                .expect("dispatch");
        }
    }
}

// ---------------------------------------------------------------------------------
// The thread of a threaded peer

/// Many messages sent back to back by a threaded peer.
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

/// The thread of a threaded peer, and what the test talks to it with. Dropping it
/// stops the thread (and with it the handle).
struct Dispatcher {
    name: String,
    member: Member,
    stats: Arc<Stats>,
    cmds: Option<Sender<Cmd>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sender: cpg::Sender,
}

impl Drop for Dispatcher {
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

/// The peer thread: commands, then dispatch, until stopped. After a dispatch failure
/// (daemon lost) it records the error, stops dispatching and still answers commands,
/// so a test can see what the dead handle returns.
fn run(
    handle: Handle,
    group: &GroupName,
    log: &Log<Event>,
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
