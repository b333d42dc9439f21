//! The tokio driver: [`AsyncGroup`], a [`Machine`] driven by a task over
//! [`AsyncHandle`](crate::AsyncHandle), with the same rules and events as the blocking
//! [`Group`](super::Group).

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Operation};
use crate::name::GroupName;
use crate::retry::Backoff;
use crate::tokio::{AsyncHandle, Event as CpgEvent};
use crate::types::{ListedMember, Member, Reason};
use crate::Options;

use super::blocking::{lost, nonce_seed, GroupBuilder};
use super::machine::Machine;
use super::types::{Effect, Event, GroupError, Position, SendId, Stats};
use super::view::View;

/// Most sends the driver task makes before it yields to the runtime once.
const SENDS_PER_TURN: usize = 64;

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

/// Adds `waker` to `list` unless a waker there would wake the same task.
fn register(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

fn resolve(slot: &SlotRef, outcome: Result<Position, GroupError>) {
    let waker = {
        let mut s = lock(slot);
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

struct Inner {
    machine: Machine,
    receipts: HashMap<SendId, SlotRef>,
    events: VecDeque<Event>,
    end: Option<Event>,
    view: Option<View>,
    /// Tasks waiting in `next_event`, `wait_view` or `leave`.
    waiters: Vec<Waker>,
    /// The driver task, while it waits.
    driver: Option<Waker>,
    /// A client changed the machine since the driver last looked.
    poked: bool,
    /// The first connection's outcome, for `start`.
    started: Option<Result<(), Error>>,
}

impl Inner {
    /// Moves the machine's events to the application's queue, resolving receipts;
    /// returns the wakers to wake (outside the lock).
    fn route(&mut self) -> Vec<Waker> {
        let mut any = false;
        while let Some(event) = self.machine.poll_event() {
            any = true;
            match &event {
                Event::Confirmed { id, position } => {
                    if let Some(slot) = self.receipts.remove(id) {
                        resolve(&slot, Ok(*position));
                    }
                }
                Event::NotSent { id, error } => {
                    if let Some(slot) = self.receipts.remove(id) {
                        resolve(&slot, Err(error.clone()));
                    }
                }
                Event::View(v) => self.view = Some(v.clone()),
                Event::Left | Event::Stopped(_) => self.end = Some(event.clone()),
                _ => {}
            }
            self.events.push_back(event);
        }
        if self.machine.is_ended() {
            for (_, slot) in self.receipts.drain() {
                resolve(&slot, Err(GroupError::Closed));
            }
        }
        if any || self.end.is_some() {
            std::mem::take(&mut self.waiters)
        } else {
            Vec::new()
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Routes events and wakes their waiters.
    fn route(&self) {
        let wakers = self.lock().route();
        for w in wakers {
            w.wake();
        }
    }

    /// Tells the driver task that the machine changed.
    fn poke(&self) {
        let waker = {
            let mut inner = self.lock();
            inner.poked = true;
            inner.driver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
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
/// tasks. Dropping it stops the driver task, which closes the connection.
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl GroupBuilder {
    /// Connects, joins and spawns the driver task on the current tokio runtime.
    /// Returns once the join succeeded; [`GroupError::Connect`] if the first
    /// connection or join fails.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start_async(self) -> Result<AsyncGroup, GroupError> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine: Machine::new(self.config, std::process::id(), nonce_seed()),
                receipts: HashMap::new(),
                events: VecDeque::new(),
                end: None,
                view: None,
                waiters: Vec::new(),
                driver: None,
                poked: false,
                started: None,
            }),
            stop: AtomicBool::new(false),
        });
        ::tokio::spawn(drive(Arc::clone(&shared), self.name));
        poll_fn(|cx| {
            let mut inner = shared.lock();
            match inner.started.take() {
                Some(result) => Poll::Ready(result),
                None => {
                    register(&mut inner.waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
        .map_err(GroupError::Connect)?;
        Ok(AsyncGroup { shared })
    }
}

impl AsyncGroup {
    /// Queues `payload`; returns at once (see [`Group::send`](super::Group::send)).
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<SendId, GroupError> {
        let id = self.shared.lock().machine.send(payload.into(), false)?;
        self.shared.poke();
        Ok(id)
    }

    /// Queues `payload` and returns a [`Confirmation`] to await: it resolves when this
    /// process's own copy is delivered. The message is queued whole before this
    /// returns, whatever happens to the confirmation.
    pub fn send_confirmed(&self, payload: impl Into<Vec<u8>>) -> Result<Confirmation, GroupError> {
        let slot = SlotRef::default();
        let id = {
            let mut inner = self.shared.lock();
            let id = inner.machine.send(payload.into(), true)?;
            inner.receipts.insert(id, Arc::clone(&slot));
            id
        };
        self.shared.poke();
        Ok(Confirmation { id, slot })
    }

    /// The next event; `None` once the last one ([`Event::Left`] or
    /// [`Event::Stopped`]) has been read. Cancellation-safe: an event is taken only by
    /// the poll that returns it.
    pub async fn next_event(&self) -> Option<Event> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(e) = inner.events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if inner.end.is_some() {
                return Poll::Ready(None);
            }
            register(&mut inner.waiters, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until the latest view satisfies `check`; `None` if the layer ends first.
    pub async fn wait_view(&self, mut check: impl FnMut(&View) -> bool) -> Option<View> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(v) = inner.view.as_ref().filter(|v| check(v)) {
                return Poll::Ready(Some(v.clone()));
            }
            if inner.end.is_some() {
                return Poll::Ready(None);
            }
            register(&mut inner.waiters, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The latest view (kept while reconnecting).
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

    /// Leaves once the queued messages are sent, and waits for the daemon to report
    /// the leave. The leave is requested by the first poll; cancelling the wait after
    /// that does not undo it. [`GroupError::Closed`] if the layer stopped instead.
    pub async fn leave(&self) -> Result<(), GroupError> {
        {
            let mut inner = self.shared.lock();
            inner.machine.leave(Instant::now());
        }
        self.shared.route();
        self.shared.poke();
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            match &inner.end {
                Some(Event::Left) => Poll::Ready(Ok(())),
                Some(_) => Poll::Ready(Err(GroupError::Closed)),
                None => {
                    register(&mut inner.waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Why the layer stopped, once it has.
    pub fn end(&self) -> Option<Event> {
        self.shared.lock().end.clone()
    }
}

impl Drop for AsyncGroup {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.poke();
    }
}

/// What woke the driver. Lives on the stack for one turn: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Woke {
    Cpg(Option<crate::Result<CpgEvent>>),
    Poked,
    Timer,
}

fn pairs(list: &[ListedMember]) -> Vec<(Member, Reason)> {
    list.iter().map(|a| (a.member(), a.reason())).collect()
}

async fn connect(name: &GroupName) -> crate::Result<(AsyncHandle, u32)> {
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
    cpg.join(name).await?;
    Ok((cpg, nodeid))
}

/// The driver task.
async fn drive(shared: Arc<Shared>, name: GroupName) {
    let mut cpg: Option<AsyncHandle> = None;
    let mut buf = Vec::new();
    let mut first = true;
    shared.lock().machine.start(Instant::now());
    loop {
        let mut sends = 0;
        loop {
            let now = Instant::now();
            let effect = {
                let mut inner = shared.lock();
                inner.machine.handle_timeout(now);
                inner.machine.poll_effect(now, &mut buf)
            };
            let Some(effect) = effect else { break };
            match effect {
                Effect::Connect => {
                    drop(cpg.take());
                    let result = connect(&name).await;
                    if first {
                        first = false;
                        let failed = result.as_ref().err().cloned();
                        let wakers = {
                            let mut inner = shared.lock();
                            inner.started = Some(failed.clone().map_or(Ok(()), Err));
                            std::mem::take(&mut inner.waiters)
                        };
                        wakers.into_iter().for_each(Waker::wake);
                        if failed.is_some() {
                            return;
                        }
                    }
                    let result = result.map(|(h, nodeid)| {
                        cpg = Some(h);
                        nodeid
                    });
                    shared
                        .lock()
                        .machine
                        .handle_connected(Instant::now(), result);
                }
                Effect::Send(_) => {
                    let result = match &cpg {
                        Some(h) => h.connection().send(&buf),
                        None => Err(lost(Operation::Send)),
                    };
                    shared
                        .lock()
                        .machine
                        .handle_send_result(Instant::now(), result);
                    sends += 1;
                    if sends % SENDS_PER_TURN == 0 {
                        shared.route();
                        ::tokio::task::yield_now().await;
                    }
                }
                Effect::Leave => {
                    let result = match cpg.as_mut() {
                        Some(h) => h.leave(&name).await,
                        None => Err(lost(Operation::Leave)),
                    };
                    shared
                        .lock()
                        .machine
                        .handle_leave_result(Instant::now(), result);
                }
                Effect::Close => drop(cpg.take()),
            }
        }
        shared.route();
        if shared.lock().machine.is_ended() || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let deadline = shared.lock().machine.poll_timeout();
        let mut sleep = deadline.map(|d| Box::pin(::tokio::time::sleep_until(d.into())));
        let woke = poll_fn(|cx| {
            if let Some(h) = cpg.as_mut() {
                if let Poll::Ready(e) = h.poll_event(cx) {
                    return Poll::Ready(Woke::Cpg(e));
                }
            }
            {
                let mut inner = shared.lock();
                if std::mem::take(&mut inner.poked) {
                    return Poll::Ready(Woke::Poked);
                }
                inner.driver = Some(cx.waker().clone());
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        match woke {
            Woke::Cpg(Some(Ok(event))) => {
                let mut inner = shared.lock();
                match event {
                    CpgEvent::Deliver {
                        nodeid, pid, data, ..
                    } => inner
                        .machine
                        .handle_deliver(now, Member { nodeid, pid }, &data),
                    CpgEvent::Confchg {
                        members,
                        left,
                        joined,
                        ..
                    } => {
                        let members: Vec<Member> =
                            members.iter().map(ListedMember::member).collect();
                        inner
                            .machine
                            .handle_confchg(now, &members, &pairs(&left), &pairs(&joined))
                    }
                    CpgEvent::TotemConfchg { ring_id, members } => {
                        inner.machine.handle_totem(now, ring_id, &members)
                    }
                }
            }
            Woke::Cpg(Some(Err(e))) if e.is_daemon_lost() => {
                shared.lock().machine.handle_daemon_lost(now, e)
            }
            // Not fixed by a new connection (for example a dispatch refused on too
            // small a stack): stop, with the reason.
            Woke::Cpg(Some(Err(e))) => shared.lock().machine.handle_failure(now, e),
            Woke::Cpg(None) => shared
                .lock()
                .machine
                .handle_daemon_lost(now, lost(Operation::Dispatch)),
            Woke::Poked | Woke::Timer => {}
        }
    }
    drop(cpg);
    let wakers = {
        let mut inner = shared.lock();
        let mut wakers = inner.route();
        if inner.end.is_none() {
            inner.end = Some(Event::Stopped(super::StopReason::Failed(lost(
                Operation::Finalize,
            ))));
            for (_, slot) in inner.receipts.drain() {
                resolve(&slot, Err(GroupError::Closed));
            }
            wakers.extend(std::mem::take(&mut inner.waiters));
        }
        wakers
    };
    wakers.into_iter().for_each(Waker::wake);
}
