//! The blocking driver: [`Group`], a [`Machine`] driven by a dispatch thread of its own,
//! with a client API that any thread may use (`Send + Sync`).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Operation, OsError};
use crate::handle::Handle;
use crate::name::GroupName;
use crate::retry::{retry, Backoff};
use crate::types::{Member, Reason};

use super::machine::Machine;
use super::types::{
    Config, Effect, Event, GroupError, OnDisconnect, OnEviction, Position, SendId, Stats,
    StopReason,
};
use super::view::View;

/// Stack of the dispatch thread: libcpg keeps a 1 MiB receive buffer on the stack of
/// `cpg_dispatch`.
const DISPATCH_STACK: usize = 8 << 20;

/// Most libcpg events the dispatch thread delivers before it looks at its send queue
/// again, and most sends it makes before it reads events again.
const BATCH: usize = 256;

/// Longest sleep of the dispatch thread when nothing is due (it wakes earlier for
/// events, sends, leave and drop).
const IDLE: Duration = Duration::from_secs(1);

/// What the client side and the dispatch thread share.
struct Inner {
    machine: Machine,
    /// Confirmed sends waiting for their outcome.
    receipts: HashMap<SendId, SyncSender<Result<Position, GroupError>>>,
    /// Events for the application, in order.
    events: VecDeque<Event>,
    /// The last event ([`Event::Left`] or [`Event::Stopped`]) once the machine ended.
    end: Option<Event>,
    /// The latest view (also kept while reconnecting, unlike the machine's).
    view: Option<View>,
}

impl Inner {
    /// Moves the machine's events to the application's queue, resolving receipts.
    fn route(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.machine.poll_event() {
            any = true;
            match &event {
                Event::Confirmed { id, position } => {
                    if let Some(tx) = self.receipts.remove(id) {
                        let _ = tx.try_send(Ok(*position));
                    }
                }
                Event::NotSent { id, error } => {
                    if let Some(tx) = self.receipts.remove(id) {
                        let _ = tx.try_send(Err(error.clone()));
                    }
                }
                Event::View(v) => self.view = Some(v.clone()),
                Event::Left | Event::Stopped(_) => self.end = Some(event.clone()),
                _ => {}
            }
            self.events.push_back(event);
        }
        if self.machine.is_ended() {
            // Receipts of messages the machine never heard of cannot exist; any left
            // are resolved as closed so that no waiter hangs.
            for (_, tx) in self.receipts.drain() {
                let _ = tx.try_send(Err(GroupError::Closed));
            }
        }
        any
    }
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: AtomicBool,
    wake_pending: AtomicBool,
    /// Written by clients to wake the dispatch thread.
    wake_tx: UnixStream,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the machine's events and wakes everyone who waits for them.
    fn route(&self, inner: &mut Inner) {
        if inner.route() || inner.machine.is_ended() {
            self.changed.notify_all();
        }
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // Non-blocking: a full socket buffer means a wake-up is pending anyway.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

/// The outcome of a [`Group::send_confirmed`]: resolves exactly once, to the message's
/// position when this process's own copy is delivered, or to why it was not sent (or
/// [`GroupError::Unknown`] when the connection was lost in between).
#[derive(Debug)]
pub struct Receipt {
    id: SendId,
    rx: Receiver<Result<Position, GroupError>>,
    got: Option<Result<Position, GroupError>>,
}

impl Receipt {
    /// The message's id (as in [`Event::Confirmed`] and [`Event::NotSent`]).
    pub fn id(&self) -> SendId {
        self.id
    }

    /// Waits for the outcome. [`GroupError::Timeout`] if it has not come within
    /// `timeout` (call again to wait longer).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Position, GroupError> {
        if self.got.is_none() {
            self.got = match self.rx.recv_timeout(timeout) {
                Ok(outcome) => Some(outcome),
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(GroupError::Timeout),
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(GroupError::Closed)),
            };
        }
        self.got.clone().unwrap_or(Err(GroupError::Closed))
    }

    /// Waits for the outcome, without a bound (the layer always resolves a receipt:
    /// delivered, not sent, unknown, or closed).
    pub fn wait(mut self) -> Result<Position, GroupError> {
        loop {
            match self.wait_timeout(Duration::from_secs(3600)) {
                Err(GroupError::Timeout) => continue,
                outcome => return outcome,
            }
        }
    }

    /// The outcome if it has come, without waiting.
    pub fn try_get(&mut self) -> Option<Result<Position, GroupError>> {
        if self.got.is_none() {
            self.got = match self.rx.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(GroupError::Closed)),
            };
        }
        self.got.clone()
    }
}

/// Settings for a [`Group`]; made by [`Group::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start()"]
pub struct GroupBuilder {
    pub(super) name: GroupName,
    pub(super) config: Config,
}

impl GroupBuilder {
    /// All settings at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The send queue's bound ([`Config::queue_limit`]).
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.config.queue_limit = limit;
        self
    }

    /// What to do when evicted ([`Config::on_eviction`]).
    pub fn on_eviction(mut self, policy: OnEviction) -> Self {
        self.config.on_eviction = policy;
        self
    }

    /// What happens to queued messages when the daemon is lost
    /// ([`Config::on_disconnect`]).
    pub fn on_disconnect(mut self, policy: OnDisconnect) -> Self {
        self.config.on_disconnect = policy;
        self
    }

    /// Reconnect pauses and budget ([`Config::reconnect`]).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Connects to the local daemon, joins the group and starts the dispatch thread.
    ///
    /// The dispatch thread connects (now, and again to reconnect) in the network
    /// namespace of the thread that calls this. Returns once the join succeeded;
    /// [`GroupError::Connect`] if the first connection or join fails (no daemon,
    /// access refused). The first view follows as an event.
    pub fn start(self) -> Result<Group, GroupError> {
        Group::start(self)
    }
}

/// A member of a CPG group, with views, a leader, reconnect, an ordered send queue and
/// confirmed sends, driven by a dispatch thread of its own.
///
/// See the [module documentation](super) for an example. All methods take `&self`
/// and may be called from any thread; none blocks on the daemon (sends are queued).
/// Dropping the group stops the dispatch thread and closes the connection (the others
/// see this process leave); [`leave`](Group::leave) leaves cleanly first.
///
/// Events (views, messages, confirmations, reconnects) queue up until read with
/// [`next_event`](Group::next_event): read them, or the queue grows without bound.
#[derive(Debug)]
pub struct Group {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Group {
    /// A builder for a member of `name`, with the default [`Config`].
    pub fn builder(name: GroupName) -> GroupBuilder {
        GroupBuilder {
            name,
            config: Config::default(),
        }
    }

    /// Joins `name` with the default [`Config`]: `Group::builder(name).start()`.
    pub fn join(name: GroupName) -> Result<Group, GroupError> {
        Group::builder(name).start()
    }

    fn start(builder: GroupBuilder) -> Result<Group, GroupError> {
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?;
        for s in [&wake_tx, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?;
        }
        let seed = nonce_seed();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine: Machine::new(builder.config, std::process::id(), seed),
                receipts: HashMap::new(),
                events: VecDeque::new(),
                end: None,
                view: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            wake_tx,
        });
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let shared = Arc::clone(&shared);
            let name = builder.name;
            std::thread::Builder::new()
                .name("cpg-group".into())
                .stack_size(DISPATCH_STACK)
                .spawn(move || run(&shared, name, wake_rx, ready_tx))
                .map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Group {
                shared,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(GroupError::Connect(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(GroupError::Closed)
            }
        }
    }

    /// Queues `payload`; returns at once with its id. Sent in queue order once joined;
    /// a failure is reported as [`Event::NotSent`]. [`GroupError::QueueFull`] at the
    /// queue's bound, [`GroupError::Closed`] after leave or stop.
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<SendId, GroupError> {
        let id = self.shared.lock().machine.send(payload.into(), false)?;
        self.shared.wake();
        Ok(id)
    }

    /// Queues `payload` like [`send`](Self::send) and returns a [`Receipt`] that
    /// resolves when this process's own copy is delivered, i.e. when the message has
    /// its place in the agreed order.
    pub fn send_confirmed(&self, payload: impl Into<Vec<u8>>) -> Result<Receipt, GroupError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let id = {
            let mut inner = self.shared.lock();
            let id = inner.machine.send(payload.into(), true)?;
            inner.receipts.insert(id, tx);
            id
        };
        self.shared.wake();
        Ok(Receipt { id, rx, got: None })
    }

    /// The next event, waiting up to `timeout`; `None` on timeout, or once the last
    /// event ([`Event::Left`] or [`Event::Stopped`]) has been read.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        loop {
            if let Some(e) = inner.events.pop_front() {
                return Some(e);
            }
            let now = Instant::now();
            if inner.end.is_some() || now >= deadline {
                return None;
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` until the latest view satisfies `check`; returns it.
    pub fn wait_view(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&View) -> bool,
    ) -> Option<View> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        loop {
            if let Some(v) = inner.view.as_ref().filter(|v| check(v)) {
                return Some(v.clone());
            }
            let now = Instant::now();
            if inner.end.is_some() || now >= deadline {
                return None;
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The latest view (kept while reconnecting; `None` before the first).
    pub fn view(&self) -> Option<View> {
        self.shared.lock().view.clone()
    }

    /// Whether this process leads the current view; false while disconnected (the
    /// view kept by [`view`](Self::view) is then the last one before the loss).
    pub fn is_leader(&self) -> bool {
        self.shared
            .lock()
            .machine
            .view()
            .is_some_and(View::is_leader)
    }

    /// This process as the daemon reports it, once known.
    pub fn me(&self) -> Option<Member> {
        self.shared.lock().machine.me()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().machine.stats()
    }

    /// Leaves the group once the messages queued so far are sent, and waits up to
    /// `timeout` for the daemon to report this process's leave ([`Event::Left`], the
    /// last event, is queued too). [`GroupError::Timeout`] if it has not come yet;
    /// [`GroupError::Closed`] if the layer had stopped instead.
    pub fn leave(&self, timeout: Duration) -> Result<(), GroupError> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        inner.machine.leave(Instant::now());
        self.shared.route(&mut inner);
        self.shared.wake();
        loop {
            match &inner.end {
                Some(Event::Left) => return Ok(()),
                Some(_) => return Err(GroupError::Closed),
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GroupError::Timeout);
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Why the layer stopped, once it has ([`Event::Left`] or [`Event::Stopped`]).
    pub fn end(&self) -> Option<Event> {
        self.shared.lock().end.clone()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A random seed for the wire header's nonces (the standard library's hash keys are
/// random per process and per `RandomState`).
pub(super) fn nonce_seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((std::process::id(), Instant::now()))
}

fn os_error(e: std::io::Error, op: Operation) -> Error {
    Error::Os {
        op,
        source: OsError(e.raw_os_error().unwrap_or(0)),
    }
}

/// How the dispatch thread's connection is made: a handle whose callbacks feed the
/// machine, joined to `name`; returns it with the local node id.
fn connect(shared: &Arc<Shared>, name: &GroupName) -> Result<(Handle, u32), Error> {
    let (d, c, t) = (Arc::clone(shared), Arc::clone(shared), Arc::clone(shared));
    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| {
            d.lock()
                .machine
                .handle_deliver(Instant::now(), msg.sender(), msg.data)
        })
        .on_confchg(move |_cpg, change| {
            let members: Vec<Member> = change.members.iter().map(|a| a.member()).collect();
            let pair = |a: &crate::types::ListedMember| (a.member(), a.reason());
            let left: Vec<(Member, Reason)> = change.left.iter().map(pair).collect();
            let joined: Vec<(Member, Reason)> = change.joined.iter().map(pair).collect();
            c.lock()
                .machine
                .handle_confchg(Instant::now(), &members, &left, &joined)
        })
        .on_totem_confchg(move |_cpg, change| {
            t.lock()
                .machine
                .handle_totem(Instant::now(), change.ring_id, change.members)
        })
        .initial_totem_conf(true)
        .build()?;
    let nodeid = handle.local_node_id()?;
    // Back-pressure on join is short-lived; a longer one is retried by the machine.
    let join_backoff = Backoff {
        timeout: Duration::from_secs(5),
        ..Backoff::default()
    };
    retry(&join_backoff, || handle.join(name))?;
    Ok((handle, nodeid))
}

/// Waits until the handle's descriptor or the wake socket is readable, or `timeout`.
/// Returns whether (the wake socket, the handle's descriptor) are readable.
fn wait(handle: Option<&Handle>, wake: &UnixStream, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: handle.map_or(-1, |h| h.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Round up, so that a due retry is not polled for in a busy loop of 0 ms waits.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of two pollfd entries for the duration of the call
    // (poll ignores the negative fd when there is no handle); the descriptors are open:
    // the wake socket is owned by this thread's caller and the handle's descriptor is
    // open until the handle, borrowed here, is finalized.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    (n > 0 && fds[0].revents != 0, n > 0 && fds[1].revents != 0)
}

/// The dispatch thread.
fn run(
    shared: &Arc<Shared>,
    name: GroupName,
    mut wake_rx: UnixStream,
    ready: SyncSender<Result<(), Error>>,
) {
    let mut handle: Option<Handle> = None;
    let mut buf = Vec::new();
    let mut ready = Some(ready);
    shared.lock().machine.start(Instant::now());
    loop {
        // Effects: connect, leave, close, and up to BATCH sends.
        let mut sends = 0;
        while sends < BATCH {
            let now = Instant::now();
            let effect = {
                let mut inner = shared.lock();
                inner.machine.handle_timeout(now);
                inner.machine.poll_effect(now, &mut buf)
            };
            let Some(effect) = effect else { break };
            match effect {
                Effect::Connect => {
                    drop(handle.take());
                    let result = connect(shared, &name);
                    if let Some(tx) = ready.take() {
                        // The first connection decides what `start` returns.
                        if let Err(e) = &result {
                            let _ = tx.send(Err(e.clone()));
                            return;
                        }
                        let _ = tx.send(Ok(()));
                    }
                    let result = result.map(|(h, nodeid)| {
                        handle = Some(h);
                        nodeid
                    });
                    shared
                        .lock()
                        .machine
                        .handle_connected(Instant::now(), result);
                }
                Effect::Send(_) => {
                    let result = match &handle {
                        Some(h) => h.send(&buf),
                        None => Err(lost(Operation::Send)),
                    };
                    sends += 1;
                    let mut inner = shared.lock();
                    inner.machine.handle_send_result(Instant::now(), result);
                    if sends % 16 == 0 {
                        shared.route(&mut inner);
                    }
                }
                Effect::Leave => {
                    let result = match &handle {
                        Some(h) => h.leave(&name),
                        None => Err(lost(Operation::Leave)),
                    };
                    shared
                        .lock()
                        .machine
                        .handle_leave_result(Instant::now(), result);
                }
                Effect::Close => drop(handle.take()),
            }
        }
        let timeout = {
            let mut inner = shared.lock();
            shared.route(&mut inner);
            if inner.machine.is_ended() {
                break;
            }
            let now = Instant::now();
            if sends >= BATCH {
                Duration::ZERO
            } else {
                inner
                    .machine
                    .poll_timeout()
                    .map_or(IDLE, |t| t.saturating_duration_since(now).min(IDLE))
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (woken, readable) = wait(handle.as_ref(), &wake_rx, timeout);
        if woken {
            // Drained first, then cleared: a client that still saw the flag set (and
            // wrote nothing) changed the machine before this point, and the loop looks
            // at the machine before it sleeps again; a client after it writes again.
            // (Clearing first could drain a newer client's byte with the flag left set,
            // and every later wake-up would be skipped.)
            let mut sink = [0u8; 64];
            while matches!(wake_rx.read(&mut sink), Ok(n) if n > 0) {}
            shared.wake_pending.store(false, Ordering::SeqCst);
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if readable {
            if let Some(h) = &handle {
                if let Err(e) = h.dispatch_at_most(BATCH) {
                    // A lost daemon: reconnect with a new handle. Anything else (a
                    // refused dispatch) would fail the same way on a new handle: stop.
                    let mut inner = shared.lock();
                    if e.is_daemon_lost() {
                        inner.machine.handle_daemon_lost(Instant::now(), e);
                    } else {
                        inner.machine.handle_failure(Instant::now(), e);
                    }
                }
            }
        }
    }
    drop(handle);
    let mut inner = shared.lock();
    shared.route(&mut inner);
    if inner.end.is_none() {
        // Dropped without leaving: end the queue for anyone still waiting.
        inner.end = Some(Event::Stopped(StopReason::Failed(lost(
            Operation::Finalize,
        ))));
        for (_, tx) in inner.receipts.drain() {
            let _ = tx.try_send(Err(GroupError::Closed));
        }
        shared.changed.notify_all();
    }
}

pub(super) fn lost(op: Operation) -> Error {
    Error::Cs {
        op,
        code: crate::error::CsError::Library,
    }
}
