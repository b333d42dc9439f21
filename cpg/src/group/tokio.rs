//! The tokio driver: [`AsyncGroup`], a [`Machine`] driven by a task over
//! [`AsyncHandle`](crate::AsyncHandle) (and `AsyncQuorum` when the policy reads
//! quorum), with the same rules and events as the blocking [`Group`](super::Group).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::connection::ConnectionRef;
use crate::error::Operation;
use crate::name::GroupName;
#[cfg(feature = "quorum")]
use crate::quorum::{AsyncQuorum, QuorumEvent, QuorumType, Track};
use crate::retry::Backoff;
use crate::tokio::{AsyncHandle, Event as CpgEvent};
use crate::types::Member;
use crate::Options;

use super::builder::GroupBuilder;
use super::config::QuorumPolicy;
use super::error::GroupError;
use super::event::{Event, Position, SendId};
use super::pump::{Connection, Pace, Pump, Pumped};
use super::shared::{lost, state_calls, Core, Finish, Resolve, Shared, Side};
use super::view::View;

/// Most sends the driver task makes before it yields to the runtime once (routing
/// confirmations then).
const PACE: Pace = Pace {
    batch: 64,
    route_every: 64,
};

/// The outcome slot of one confirmed send.
#[derive(Debug, Default)]
struct Slot {
    outcome: Option<Result<Position, GroupError>>,
    waker: Option<Waker>,
}

type SlotRef = Arc<Mutex<Slot>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the waker of the wait `id` in `list` (replacing its earlier one).
fn register(list: &mut Vec<(u64, Waker)>, id: u64, waker: &Waker) {
    match list.iter_mut().find(|(i, _)| *i == id) {
        Some((_, w)) if w.will_wake(waker) => {}
        Some((_, w)) => *w = waker.clone(),
        None => list.push((id, waker.clone())),
    }
}

impl Resolve for SlotRef {
    fn resolve(self, outcome: Result<Position, GroupError>) {
        let waker = {
            let mut s = lock(&self);
            if s.outcome.is_some() {
                return;
            }
            s.outcome = Some(outcome);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// How the tokio driver's sides wake each other: wakers kept under the lock.
#[derive(Debug, Default)]
struct Wakers {
    /// Tasks waiting in `start_async`, `next_event`, `wait_view` or `leave`, by wait
    /// (one task may wait in several at once, and each removes only its own entry
    /// when it ends or is cancelled).
    app: Vec<(u64, Waker)>,
    /// The driver task, while it waits.
    driver: Option<Waker>,
    /// A client changed the machine since the driver last looked.
    poked: bool,
}

/// The tokio driver's [`Side`]: all its state is in [`Wakers`], under the lock.
struct Tasks;

impl Side for Tasks {
    type Receipt = SlotRef;
    type Waiting = Wakers;
    type Wake = Vec<Waker>;

    fn app_changed(&self, waiting: &mut Wakers) -> Vec<Waker> {
        waiting.app.drain(..).map(|(_, w)| w).collect()
    }

    fn wake(wake: Vec<Waker>) {
        wake.into_iter().for_each(Waker::wake);
    }

    fn poke(shared: &Shared<Self>) {
        let waker = {
            let mut core = shared.lock();
            core.waiting.poked = true;
            core.waiting.driver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Waits until `ready` returns something (looked at on every poll; woken whenever the
/// application's side changes). Cancellation-safe when `ready` takes nothing it does
/// not return.
async fn wait_for<T>(
    shared: &Shared<Tasks>,
    mut ready: impl FnMut(&mut Core<Tasks>) -> Option<T>,
) -> T {
    /// Takes this wait's waker out of the list when the wait ends or is cancelled:
    /// on a quiet group nothing else would, and the waker keeps its task alive.
    struct Registered<'a> {
        shared: &'a Shared<Tasks>,
        id: u64,
        registered: bool,
    }
    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            if self.registered {
                let id = self.id;
                self.shared.lock().waiting.app.retain(|(i, _)| *i != id);
            }
        }
    }
    static NEXT_WAIT: AtomicU64 = AtomicU64::new(0);
    let mut wait = Registered {
        shared,
        id: NEXT_WAIT.fetch_add(1, Ordering::Relaxed),
        registered: false,
    };
    poll_fn(|cx| {
        let mut core = shared.lock();
        match ready(&mut core) {
            Some(t) => Poll::Ready(t),
            None => {
                register(&mut core.waiting.app, wait.id, cx.waker());
                wait.registered = true;
                Poll::Pending
            }
        }
    })
    .await
}

/// The outcome of an [`AsyncGroup::send_confirmed`], as a future: the message's
/// position once this process's own copy is delivered, or why it was not sent.
///
/// Dropping it (cancelling the wait) does not cancel the message: it was queued whole
/// by `send_confirmed` and is sent whole, or not at all, either way.
#[derive(Debug)]
#[must_use = "the outcome is only known by awaiting the confirmation"]
pub struct Confirmation {
    id: SendId,
    slot: SlotRef,
}

impl Confirmation {
    /// The message's id.
    pub fn id(&self) -> SendId {
        self.id
    }
}

impl Future for Confirmation {
    type Output = Result<Position, GroupError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot);
        match &s.outcome {
            Some(outcome) => Poll::Ready(outcome.clone()),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A member of a CPG group, like [`Group`](super::Group), driven by a tokio task.
///
/// Made with [`GroupBuilder::start_async`] inside a tokio runtime (with IO and time
/// enabled); the driver task is spawned on it, and connects (also to reconnect) from
/// whichever runtime thread runs it. Its threads need stacks above 1 MiB (see
/// [`crate::tokio`]). Methods take `&self`; the group can be shared (`Arc`) between
/// tasks. Dropping it stops the driver task, which closes the connection: once the drop
/// returns nothing more is sent (it waits for a send in progress, one libcpg call), and
/// every [`Confirmation`] resolves, as a dropped [`Group`](super::Group)'s receipts do
/// ([`GroupError::Unknown`] for messages the daemon had accepted, [`GroupError::Closed`]
/// for those never sent).
///
/// The driver task runs on the runtime that started it. If that runtime shuts down
/// (dropped) while the group lives, the task is dropped with it: the group stops as if
/// dropped (the connection is closed, confirmations resolve the same way), and
/// [`next_event`](Self::next_event) returns the remaining events, then
/// [`Event::Stopped`], then `None`, from any runtime.
///
/// ```no_run
/// use cpg::group::{Event, Group};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let group = Group::builder(cpg::GroupName::new("my-service")?).start_async().await?;
/// let position = group.send_confirmed(b"hello".to_vec())?.await?;
/// println!("delivered as message {} of view {}", position.index, position.view);
/// while let Some(event) = group.next_event().await {
///     match event {
///         Event::View(view) if view.is_leader() => println!("leading {view}"),
///         Event::Message(m) => println!("{}: {:?}", m.from, m.data),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncGroup {
    shared: Arc<Shared<Tasks>>,
}

impl GroupBuilder {
    /// Connects, joins and spawns the driver task on the current tokio runtime.
    /// Returns once the join succeeded; [`GroupError::Connect`] if the first
    /// connection or join fails. Cancelling it (dropping the future) stops the driver
    /// task, which leaves the group if it had joined.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start_async(self) -> Result<AsyncGroup, GroupError> {
        self.check()?;
        let policy = self.config.quorum;
        let shared = Arc::new(Shared::new(self.config, &self.name, Tasks));
        ::tokio::spawn(crate::trace::instrumented!(
            drive(Arc::clone(&shared), self.name, policy),
            shared.lock().log.span()
        ));
        // Until the `AsyncGroup` exists (whose drop stops the driver), a drop of this
        // future (a cancelled start) stops the driver: else it would stay joined to
        // the group for good, and this process could not join it again.
        let unstarted = StopOnDrop(&shared);
        wait_for(&shared, Core::take_started).await?;
        std::mem::forget(unstarted);
        Ok(AsyncGroup { shared })
    }
}

impl AsyncGroup {
    /// Queues `payload`; returns at once (see [`Group::send`](super::Group::send)).
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<SendId, GroupError> {
        self.shared.send(payload.into(), None)
    }

    /// Queues `payload` confirmed, without a receipt: its outcome comes only as an
    /// event ([`Event::Confirmed`] or [`Event::NotSent`]). For the replica layer,
    /// which reads those events anyway.
    pub(crate) fn send_tracked(&self, payload: Vec<u8>) -> Result<SendId, GroupError> {
        self.shared.send_with(payload, true, None)
    }

    /// Queues `payload` and returns a [`Confirmation`] to await: it resolves when this
    /// process's own copy is delivered. The message is queued whole before this
    /// returns, whatever happens to the confirmation.
    pub fn send_confirmed(&self, payload: impl Into<Vec<u8>>) -> Result<Confirmation, GroupError> {
        let slot = SlotRef::default();
        let id = self.shared.send(payload.into(), Some(Arc::clone(&slot)))?;
        Ok(Confirmation { id, slot })
    }

    /// The next event; `None` once the last one ([`Event::Left`] or
    /// [`Event::Stopped`]) has been read. Cancellation-safe: an event is taken only by
    /// the poll that returns it.
    pub async fn next_event(&self) -> Option<Event> {
        wait_for(&self.shared, Core::take_event).await
    }

    /// Waits until the latest view satisfies `check`; `None` if the layer ends first.
    ///
    /// `check` runs under the group's lock: calling a method of this group from it
    /// panics (instead of deadlocking).
    pub async fn wait_view(&self, mut check: impl FnMut(&View) -> bool) -> Option<View> {
        wait_for(&self.shared, |core| core.view_if(&mut check)).await
    }

    state_calls!();

    /// Stops as dropping does, while others (the replica layer) still hold the group.
    pub(crate) fn stop_now(&self) {
        self.shared.stop();
    }

    /// The next event if one is queued, without waiting.
    pub(crate) fn try_next_event(&self) -> Option<Event> {
        self.shared.lock().take_event().flatten()
    }

    /// Leaves once the queued messages are sent, and waits for the daemon to report
    /// the leave. The leave is requested by the first poll; cancelling the wait after
    /// that does not undo it. [`GroupError::Closed`] if the layer stopped instead.
    pub async fn leave(&self) -> Result<(), GroupError> {
        self.shared.leave();
        wait_for(&self.shared, |core| core.left()).await
    }
}

/// Stops the driver when dropped (see [`GroupBuilder::start_async`]).
struct StopOnDrop<'a>(&'a Shared<Tasks>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Drop for AsyncGroup {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// What woke the driver. Lives on the stack for one turn: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Woke {
    Cpg(Option<crate::Result<CpgEvent>>),
    #[cfg(feature = "quorum")]
    Quorum(Option<crate::Result<QuorumEvent>>),
    Poked,
    Timer,
}

/// The driver's connection to the daemon: the CPG handle, and the quorum handle when
/// the policy reads quorum and the daemon has a provider.
struct Link {
    cpg: AsyncHandle,
    #[cfg(feature = "quorum")]
    quorum: Option<AsyncQuorum>,
    /// Whether the daemon has a quorum provider; `None` when the policy ignores quorum.
    provider: Option<bool>,
    /// Which stream the next turn polls first, so that neither starves the other.
    quorum_first: bool,
}

impl Connection for Link {
    fn connection(&self) -> &ConnectionRef {
        self.cpg.connection()
    }

    fn quorum_provider(&self) -> Option<bool> {
        self.provider
    }
}

impl Link {
    /// Polls the CPG stream unless `held`.
    fn poll_cpg(&mut self, cx: &mut Context<'_>, held: bool) -> Poll<Woke> {
        if held {
            return Poll::Pending;
        }
        self.cpg.poll_event(cx).map(Woke::Cpg)
    }

    /// Polls the quorum stream, if any, unless `held`.
    fn poll_quorum(&mut self, cx: &mut Context<'_>, held: bool) -> Poll<Woke> {
        #[cfg(feature = "quorum")]
        if let Some(q) = self.quorum.as_mut().filter(|_| !held) {
            return q.poll_event(cx).map(Woke::Quorum);
        }
        let _ = (cx, held);
        Poll::Pending
    }

    /// Polls both streams, the one that went second last time first.
    fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared<Tasks>) -> Poll<Woke> {
        let (cpg_held, quorum_held) = (shared.cpg_held(), shared.quorum_held());
        self.quorum_first = !self.quorum_first;
        let first = if self.quorum_first {
            self.poll_quorum(cx, quorum_held)
        } else {
            self.poll_cpg(cx, cpg_held)
        };
        if first.is_ready() {
            return first;
        }
        if self.quorum_first {
            self.poll_cpg(cx, cpg_held)
        } else {
            self.poll_quorum(cx, quorum_held)
        }
    }
}

/// Connects the CPG handle and, with [`QuorumPolicy::Corosync`], the quorum handle
/// (tracking changes; none when the daemon has no provider), then joins `name`.
async fn connect(name: &GroupName, policy: QuorumPolicy) -> crate::Result<(Link, u32)> {
    // Set field by field: `Options` may grow (a literal would then stop compiling).
    #[allow(clippy::field_reassign_with_default)]
    let options = {
        let mut options = Options::default();
        options.initial_totem_conf = true;
        options
    };
    let mut cpg = AsyncHandle::with_options(options)?;
    let nodeid = cpg.local_node_id()?;
    cpg.set_backoff(Backoff {
        timeout: Duration::from_secs(5),
        ..Backoff::default()
    });
    // Before the join: a quorum connection that fails leaves the group untouched.
    let mut link = connect_quorum(cpg, policy)?;
    link.cpg.join(name).await?;
    Ok((link, nodeid))
}

/// The quorum part of [`connect`] (see the blocking driver's).
#[cfg(feature = "quorum")]
fn connect_quorum(cpg: AsyncHandle, policy: QuorumPolicy) -> crate::Result<Link> {
    let mut link = Link {
        cpg,
        quorum: None,
        provider: None,
        quorum_first: false,
    };
    if policy == QuorumPolicy::Ignore {
        return Ok(link);
    }
    let quorum = AsyncQuorum::new()?;
    // Anything but "no provider" is taken as one (see the blocking driver).
    if quorum.quorum_type() == QuorumType::NoProvider {
        link.provider = Some(false);
        return Ok(link);
    }
    quorum.track_start(Track::CHANGES)?;
    link.quorum = Some(quorum);
    link.provider = Some(true);
    Ok(link)
}

/// Without the `quorum` feature the builder refuses [`QuorumPolicy::Corosync`].
#[cfg(not(feature = "quorum"))]
fn connect_quorum(cpg: AsyncHandle, _policy: QuorumPolicy) -> crate::Result<Link> {
    Ok(Link {
        cpg,
        provider: None,
        quorum_first: false,
    })
}

/// Feeds one event of the handle's stream to the machine.
fn feed(core: &mut Core<Tasks>, event: CpgEvent) {
    match event {
        CpgEvent::Deliver {
            nodeid, pid, data, ..
        } => core.deliver(Member { nodeid, pid }, &data),
        CpgEvent::Confchg {
            members,
            left,
            joined,
            ..
        } => core.confchg(&members, &left, &joined),
        CpgEvent::TotemConfchg { ring_id, members } => core.totem(ring_id, &members),
    }
}

/// Feeds one quorum event to the machine (node list notifications carry nothing it
/// needs: CPG's totem confchgs give the ring's nodes).
#[cfg(feature = "quorum")]
fn feed_quorum(core: &mut Core<Tasks>, event: QuorumEvent) {
    if let QuorumEvent::Quorum {
        quorate,
        ring_id,
        members,
    } = event
    {
        core.quorum(quorate, ring_id, &members);
    }
}

/// The driver task: the pump's effects, then a wait for the handles' streams, a
/// client's poke or the machine's next timer.
async fn drive(shared: Arc<Shared<Tasks>>, name: GroupName, policy: QuorumPolicy) {
    let _finish = Finish(&shared);
    let mut pump = Pump::start(&shared, PACE);
    loop {
        let due = match pump.next(&shared) {
            Pumped::Connect => {
                if !pump.connected(&shared, connect(&name, policy).await) {
                    return;
                }
                continue;
            }
            Pumped::Leave => {
                let result = match pump.conn.as_mut() {
                    Some(l) => l.cpg.leave(&name).await,
                    None => Err(lost(Operation::Leave)),
                };
                pump.left(&shared, result);
                continue;
            }
            Pumped::Busy => {
                ::tokio::task::yield_now().await;
                continue;
            }
            Pumped::Idle(due) => due,
            Pumped::Stop => break,
        };
        let mut sleep = due.map(|d| Box::pin(::tokio::time::sleep_until(d.into())));
        let woke = poll_fn(|cx| {
            if let Some(link) = pump.conn.as_mut() {
                if let Poll::Ready(woke) = link.poll(cx, &shared) {
                    return Poll::Ready(woke);
                }
            }
            {
                let mut core = shared.lock();
                if std::mem::take(&mut core.waiting.poked) {
                    return Poll::Ready(Woke::Poked);
                }
                core.waiting.driver = Some(cx.waker().clone());
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Cpg(Some(Ok(event))) => feed(&mut shared.lock(), event),
            Woke::Cpg(Some(Err(e))) => shared.lock().dispatch_failed(e),
            // The stream ended: the connection is gone.
            Woke::Cpg(None) => shared.lock().dispatch_failed(lost(Operation::Dispatch)),
            #[cfg(feature = "quorum")]
            Woke::Quorum(Some(Ok(event))) => feed_quorum(&mut shared.lock(), event),
            #[cfg(feature = "quorum")]
            Woke::Quorum(Some(Err(e))) => shared.lock().dispatch_failed(e),
            #[cfg(feature = "quorum")]
            Woke::Quorum(None) => shared
                .lock()
                .dispatch_failed(lost(Operation::QuorumDispatch)),
            Woke::Poked | Woke::Timer => {}
        }
    }
}
