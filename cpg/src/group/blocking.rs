//! The blocking driver: [`Group`], a [`Machine`] driven by a dispatch thread of its own
//! that polls the CPG connection and, when the policy reads quorum, the quorum
//! connection, with a client API that any thread may use (`Send + Sync`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::connection::ConnectionRef;
use crate::error::{Error, Operation, OsError};
use crate::handle::Handle;
use crate::layer::deadline::later;
use crate::name::GroupName;
#[cfg(feature = "quorum")]
use crate::quorum::{Quorum, QuorumType, Track};
use crate::retry::{retry, Backoff};

use super::builder::GroupBuilder;
use super::config::{Config, QuorumPolicy};
use super::error::GroupError;
use super::event::{Event, Position, SendId};
use super::pump::{Connection, Pace, Pump, Pumped};
use super::shared::{lost, state_calls, Core, Finish, Resolve, Shared, Side};
use super::view::View;

/// Stack of the dispatch thread: libcpg keeps a 1 MiB receive buffer on the stack of
/// `cpg_dispatch`.
const DISPATCH_STACK: usize = 8 << 20;

/// Most libcpg events the dispatch thread delivers before it looks at its send queue
/// again, and most sends it makes before it reads events again (routing confirmations
/// every 16).
const BATCH: usize = 256;
const PACE: Pace = Pace {
    batch: BATCH,
    route_every: 16,
};

/// Longest sleep of the dispatch thread when nothing is due (it wakes earlier for
/// events, sends, leave and drop).
const IDLE: Duration = Duration::from_secs(1);

/// How the blocking driver's sides wake each other: clients wait on a condition
/// variable, the dispatch thread on a socket pair beside its libcpg descriptor.
struct Wakeup {
    changed: Condvar,
    wake_pending: AtomicBool,
    /// Written by clients to wake the dispatch thread.
    wake_tx: UnixStream,
}

impl Side for Wakeup {
    type Receipt = SyncSender<Result<Position, GroupError>>;
    type Waiting = ();
    type Wake = ();

    fn app_changed(&self, (): &mut ()) {
        self.changed.notify_all();
    }

    fn wake((): ()) {}

    fn poke(shared: &Shared<Self>) {
        let side = &shared.side;
        if !side.wake_pending.swap(true, Ordering::SeqCst) {
            // Non-blocking: a full socket buffer means a wake-up is pending anyway.
            let _ = (&side.wake_tx).write(&[1]);
        }
    }
}

impl Resolve for SyncSender<Result<Position, GroupError>> {
    fn resolve(self, outcome: Result<Position, GroupError>) {
        let _ = self.try_send(outcome);
    }
}

/// Waits up to `timeout` until `ready` returns something (looked at first, and
/// whenever the application's side changes).
fn wait_for<T>(
    shared: &Shared<Wakeup>,
    timeout: Duration,
    ready: impl FnMut(&mut Core<Wakeup>) -> Option<T>,
) -> Option<T> {
    crate::layer::wait::wait_for(shared.lock(), &shared.side.changed, timeout, ready)
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

impl GroupBuilder {
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
/// see this process leave); [`leave`](Group::leave) leaves cleanly first. Nothing is sent
/// once the drop has begun, and every [`Receipt`] resolves: to its position if its
/// confirmation had come, to [`GroupError::Unknown`] if the daemon had accepted the
/// message (it may have been delivered: do not send it again blindly), and to
/// [`GroupError::Closed`] if it was never sent.
///
/// Events (views, messages, confirmations, reconnects) queue up until read with
/// [`next_event`](Group::next_event): read them, or the queue grows without bound.
#[derive(Debug)]
pub struct Group {
    shared: Arc<Shared<Wakeup>>,
    thread: Option<JoinHandle<()>>,
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
        builder.check()?;
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?;
        for s in [&wake_tx, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?;
        }
        let side = Wakeup {
            changed: Condvar::new(),
            wake_pending: AtomicBool::new(false),
            wake_tx,
        };
        let policy = builder.config.quorum;
        let shared = Arc::new(Shared::new(builder.config, &builder.name, side));
        let thread = {
            let shared = Arc::clone(&shared);
            let name = builder.name;
            std::thread::Builder::new()
                .name("cpg-group".into())
                .stack_size(DISPATCH_STACK)
                .spawn(move || run(&shared, name, policy, wake_rx))
                .map_err(|e| GroupError::Connect(os_error(e, Operation::Poll)))?
        };
        // The driver ends the queue however it ends (see `Finish`), so this returns.
        let started = loop {
            if let Some(r) = wait_for(&shared, Duration::from_millis(100), Core::take_started) {
                break r;
            }
        };
        match started {
            Ok(()) => Ok(Group {
                shared,
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// Queues `payload`; returns at once with its id. Sent in queue order once joined;
    /// a failure is reported as [`Event::NotSent`]. [`GroupError::QueueFull`] at the
    /// queue's bound, [`GroupError::Closed`] after leave or stop.
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<SendId, GroupError> {
        self.shared.send(payload.into(), None)
    }

    /// Queues `payload` confirmed, without a receipt: its outcome comes only as an
    /// event ([`Event::Confirmed`] or [`Event::NotSent`]). For the replica layer,
    /// which reads those events anyway.
    pub(crate) fn send_tracked(&self, payload: Vec<u8>) -> Result<SendId, GroupError> {
        self.shared.send_with(payload, true, None)
    }

    /// Queues `payload` like [`send`](Self::send) and returns a [`Receipt`] that
    /// resolves when this process's own copy is delivered, i.e. when the message has
    /// its place in the agreed order.
    pub fn send_confirmed(&self, payload: impl Into<Vec<u8>>) -> Result<Receipt, GroupError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let id = self.shared.send(payload.into(), Some(tx))?;
        Ok(Receipt { id, rx, got: None })
    }

    /// The next event, waiting up to `timeout`; `None` on timeout, or once the last
    /// event ([`Event::Left`] or [`Event::Stopped`]) has been read.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        wait_for(&self.shared, timeout, Core::take_event).flatten()
    }

    /// Waits up to `timeout` until the latest view satisfies `check`; returns it.
    ///
    /// `check` runs under the group's lock: calling a method of this group from it
    /// panics (instead of deadlocking).
    pub fn wait_view(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&View) -> bool,
    ) -> Option<View> {
        wait_for(&self.shared, timeout, |core| core.view_if(&mut check)).flatten()
    }

    state_calls!();

    /// Stops as dropping does, while others (the replica layer) still hold the group.
    pub(crate) fn stop_now(&self) {
        self.shared.stop();
    }

    /// Waits up to `timeout` for events and moves up to `max` of those queued to
    /// `into`, oldest first, under one hold of the lock (the replica's driver: it
    /// then feeds them under its own lock, which the group's is not taken under).
    /// Nothing moved: the wait timed out, or the layer has ended ([`end`](Self::end)).
    pub(crate) fn next_events(
        &self,
        timeout: Duration,
        into: &mut std::collections::VecDeque<Event>,
        max: usize,
    ) {
        wait_for(&self.shared, timeout, |core| core.take_events(into, max));
    }

    /// The next event if one is queued, without waiting.
    pub(crate) fn try_next_event(&self) -> Option<Event> {
        self.shared.lock().take_event().flatten()
    }

    /// Leaves the group once the messages queued so far are sent, and waits up to
    /// `timeout` for the daemon to report this process's leave ([`Event::Left`], the
    /// last event, is queued too). [`GroupError::Timeout`] if it has not come yet;
    /// [`GroupError::Closed`] if the layer had stopped instead.
    pub fn leave(&self, timeout: Duration) -> Result<(), GroupError> {
        let deadline = later(Instant::now(), timeout);
        self.shared.leave();
        let left = deadline.saturating_duration_since(Instant::now());
        wait_for(&self.shared, left, |core| core.left()).unwrap_or(Err(GroupError::Timeout))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The dispatch thread's connection to the daemon: the CPG handle, and the quorum
/// handle when the policy reads quorum and the daemon has a provider.
struct Link {
    cpg: Handle,
    #[cfg(feature = "quorum")]
    quorum: Option<Quorum>,
    /// Whether the daemon has a quorum provider; `None` when the policy ignores quorum.
    provider: Option<bool>,
}

impl Connection for Link {
    fn connection(&self) -> &ConnectionRef {
        &self.cpg
    }

    fn quorum_provider(&self) -> Option<bool> {
        self.provider
    }
}

impl Link {
    /// The quorum handle's descriptor, if there is one to poll.
    fn quorum_fd(&self) -> Option<std::os::fd::RawFd> {
        #[cfg(feature = "quorum")]
        return self.quorum.as_ref().map(AsRawFd::as_raw_fd);
        #[cfg(not(feature = "quorum"))]
        None
    }

    /// Delivers up to [`BATCH`] pending quorum notifications to the machine.
    fn dispatch_quorum(&self) -> Result<(), Error> {
        #[cfg(feature = "quorum")]
        if let Some(q) = &self.quorum {
            q.dispatch_at_most(BATCH)?;
        }
        Ok(())
    }
}

fn os_error(e: std::io::Error, op: Operation) -> Error {
    Error::Os {
        op,
        source: OsError(e.raw_os_error().unwrap_or(0)),
    }
}

/// How the dispatch thread's connection is made: a CPG handle whose callbacks feed the
/// machine and, with [`QuorumPolicy::Corosync`], a quorum handle whose notifications do,
/// tracking changes; then the join of `name`. Returns them with the local node id.
fn connect(
    shared: &Arc<Shared<Wakeup>>,
    name: &GroupName,
    policy: QuorumPolicy,
) -> Result<(Link, u32), Error> {
    let (d, c, t) = (Arc::clone(shared), Arc::clone(shared), Arc::clone(shared));
    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| d.lock().deliver(msg.sender(), msg.data))
        .on_confchg(move |_cpg, change| {
            c.lock().confchg(change.members, change.left, change.joined)
        })
        .on_totem_confchg(move |_cpg, change| t.lock().totem(change.ring_id, change.members))
        .initial_totem_conf(true)
        .build()?;
    let nodeid = handle.local_node_id()?;
    // Before the join: a quorum connection that fails leaves the group untouched.
    let link = connect_quorum(shared, handle, policy)?;
    // Back-pressure on join is short-lived; a longer one is retried by the machine.
    let join_backoff = Backoff {
        timeout: Duration::from_secs(5),
        ..Backoff::default()
    };
    retry(&join_backoff, || link.cpg.join(name))?;
    Ok((link, nodeid))
}

/// The quorum part of [`connect`]: a handle that tracks changes (its current state is
/// queued at once) when the daemon has a provider; none when it has not (nothing to
/// follow) or the policy ignores quorum.
#[cfg(feature = "quorum")]
fn connect_quorum(
    shared: &Arc<Shared<Wakeup>>,
    cpg: Handle,
    policy: QuorumPolicy,
) -> Result<Link, Error> {
    if policy == QuorumPolicy::Ignore {
        return Ok(Link {
            cpg,
            quorum: None,
            provider: None,
        });
    }
    let q = Arc::clone(shared);
    let quorum = Quorum::builder()
        .on_quorum(move |n| q.lock().quorum(n.quorate, n.ring_id, n.members))
        .build()?;
    // Anything but "no provider" is taken as one: gating by a provider that never
    // notifies is safe, ignoring one is not.
    if quorum.quorum_type() == QuorumType::NoProvider {
        return Ok(Link {
            cpg,
            quorum: None,
            provider: Some(false),
        });
    }
    quorum.track_start(Track::CHANGES)?;
    Ok(Link {
        cpg,
        quorum: Some(quorum),
        provider: Some(true),
    })
}

/// Without the `quorum` feature the builder refuses [`QuorumPolicy::Corosync`].
#[cfg(not(feature = "quorum"))]
fn connect_quorum(
    _shared: &Arc<Shared<Wakeup>>,
    cpg: Handle,
    _policy: QuorumPolicy,
) -> Result<Link, Error> {
    Ok(Link {
        cpg,
        provider: None,
    })
}

/// What [`wait`] found readable.
#[derive(Debug, Clone, Copy, Default)]
struct Readable {
    wake: bool,
    cpg: bool,
    quorum: bool,
}

/// Waits until the wake socket or one of the link's descriptors (those not held) is
/// readable, or `timeout`.
fn wait(
    shared: &Shared<Wakeup>,
    link: Option<&Link>,
    wake: &UnixStream,
    timeout: Duration,
) -> Readable {
    let cpg = link
        .filter(|_| !shared.cpg_held())
        .map(|l| l.cpg.as_raw_fd());
    let quorum = link
        .filter(|_| !shared.quorum_held())
        .and_then(Link::quorum_fd);
    let pollfd = |fd: Option<std::os::fd::RawFd>| libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pollfd(Some(wake.as_raw_fd())), pollfd(cpg), pollfd(quorum)];
    // Round up, so that a due retry is not polled for in a busy loop of 0 ms waits.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of three pollfd entries for the duration of the
    // call (poll ignores the negative fds of what is missing or held); the descriptors
    // are open: the wake socket is owned by this thread's caller, and the handles'
    // descriptors are open until the handles, borrowed here through `link`, are
    // finalized.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) };
    let ready = |i: usize| n > 0 && fds[i].revents != 0;
    Readable {
        wake: ready(0),
        cpg: ready(1),
        quorum: ready(2),
    }
}

/// The dispatch thread: the pump's effects, then a wait for the handle's descriptor,
/// a client's wake-up or the machine's next timer.
fn run(
    shared: &Arc<Shared<Wakeup>>,
    name: GroupName,
    policy: QuorumPolicy,
    mut wake_rx: UnixStream,
) {
    let _span = crate::trace::entered!(shared.lock().log.span());
    let _finish = Finish(shared);
    let mut pump = Pump::start(shared, PACE);
    loop {
        let timeout = match pump.next(shared) {
            Pumped::Connect => {
                if !pump.connected(shared, connect(shared, &name, policy)) {
                    return;
                }
                continue;
            }
            Pumped::Leave => {
                let result = match &pump.conn {
                    Some(l) => l.cpg.leave(&name),
                    None => Err(lost(Operation::Leave)),
                };
                pump.left(shared, result);
                continue;
            }
            Pumped::Busy => Duration::ZERO,
            Pumped::Idle(due) => due.map_or(IDLE, |t| {
                t.saturating_duration_since(Instant::now()).min(IDLE)
            }),
            Pumped::Stop => break,
        };
        let readable = wait(shared, pump.conn.as_ref(), &wake_rx, timeout);
        if readable.wake {
            // Drained first, then cleared: a client that still saw the flag set (and
            // wrote nothing) changed the machine before this point, and the loop looks
            // at the machine before it sleeps again; a client after it writes again.
            // (Clearing first could drain a newer client's byte with the flag left set,
            // and every later wake-up would be skipped.)
            let mut sink = [0u8; 64];
            while matches!(wake_rx.read(&mut sink), Ok(n) if n > 0) {}
            shared.side.wake_pending.store(false, Ordering::SeqCst);
        }
        if shared.stopping() {
            break;
        }
        let Some(link) = &pump.conn else {
            continue;
        };
        // Each notification feeds the machine from its callback, under the lock; a
        // failure of either connection (a lost daemon) makes new ones of both.
        let mut failed = None;
        if readable.cpg {
            failed = link.cpg.dispatch_at_most(BATCH).err();
            // What was delivered goes to the application (the replica's driver) now,
            // not after the pump's sends: each is a call to the daemon, which may take
            // tens of microseconds while the daemon is busy.
            shared.route();
        }
        if readable.quorum && failed.is_none() {
            failed = link.dispatch_quorum().err();
        }
        if let Some(e) = failed {
            shared.lock().dispatch_failed(e);
        }
    }
}
