//! What a group driver's client calls and its loop share: the [`Machine`] with the
//! application's side of it (events, the latest view, the end, the receipts of
//! confirmed sends) behind the lock ([`Core`], [`Shared`]), the calls that read it, and
//! how a driver plugs in ([`Side`]: how its two sides wake each other; [`Resolve`]:
//! where a confirmed send's outcome goes). A driver adds only its I/O: how it connects
//! and leaves, how it waits for events; the [`pump`](super::pump) carries out the
//! machine's effects.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{CsError, Error, Operation};
use crate::layer::lock::{Guard, Lock};
use crate::name::GroupName;
use crate::trace::traced;
use crate::types::{ListedMember, Member, Reason, RingId};

use super::config::Config;
use super::error::GroupError;
use super::event::{Event, Position, SendId, Stats, StopReason};
use super::machine::Machine;
#[cfg(feature = "quorum")]
use super::quorum::QuorumInput;
use super::quorum::{AgreedQuorum, LocalQuorum};
use super::view::View;

/// Where the outcome of one confirmed send goes.
pub(super) trait Resolve: Send {
    /// Hands over the outcome (once: the receipt is consumed).
    fn resolve(self, outcome: Result<Position, GroupError>);
}

/// How a driver's two sides, the client calls and the driver's loop, wake each other.
pub(super) trait Side: Send + Sync + Sized {
    /// A confirmed send's receipt.
    type Receipt: Resolve;
    /// Kept under the lock beside the machine: who waits (the tokio driver's wakers).
    type Waiting: Default + Send;
    /// Whom to wake once the lock is released.
    type Wake: Default;

    /// The application's side changed (events routed, the first connection's outcome,
    /// the end): takes whom to wake, with the lock held.
    fn app_changed(&self, waiting: &mut Self::Waiting) -> Self::Wake;

    /// Wakes what [`app_changed`](Side::app_changed) took, with the lock released.
    fn wake(wake: Self::Wake);

    /// Tells the driver's loop that a client changed the machine (called without the
    /// lock).
    fn poke(shared: &Shared<Self>);
}

/// The machine and what the application reads of it, behind the driver's lock.
pub(super) struct Core<S: Side> {
    pub(super) machine: Machine,
    /// Confirmed sends waiting for their outcome.
    receipts: HashMap<SendId, S::Receipt>,
    /// Events for the application, in order.
    events: VecDeque<Event>,
    /// The last event ([`Event::Left`] or [`Event::Stopped`]) once the machine ended.
    end: Option<Event>,
    /// The latest view (also kept while reconnecting, unlike the machine's).
    view: Option<View>,
    /// The first connection's outcome, until `start` takes it.
    started: Option<Result<(), Error>>,
    /// The driver's own bookkeeping of who waits.
    pub(super) waiting: S::Waiting,
    /// The group's span and what its logging remembers.
    #[cfg(feature = "tracing")]
    pub(super) log: super::log::Log,
}

impl<S: Side> Core<S> {
    /// Moves the machine's events to the application's queue, resolving receipts;
    /// whether there were any.
    fn route(&mut self) -> bool {
        let mut any = false;
        traced!(self.log.tick());
        while let Some(event) = self.machine.poll_event() {
            any = true;
            traced!(self.log.event(&event));
            match &event {
                Event::Confirmed { id, position } => {
                    if let Some(r) = self.receipts.remove(id) {
                        r.resolve(Ok(*position));
                    }
                }
                Event::NotSent { id, error } => {
                    if let Some(r) = self.receipts.remove(id) {
                        r.resolve(Err(error.clone()));
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
            self.close_receipts();
        }
        any
    }

    /// Ends the machine unless it has ended: the group was dropped, or its driver ended
    /// (panicked, or was dropped with its runtime). The machine reports every message
    /// it was given: [`GroupError::Unknown`] for those the daemon accepted (they may have
    /// been delivered: whoever retries on `Closed` must not get those), `Closed` for
    /// those never sent; routing resolves their receipts.
    fn stop_machine(&mut self) {
        self.route();
        if !self.machine.is_ended() {
            self.machine
                .handle_failure(Instant::now(), lost(Operation::Finalize));
            self.route();
        }
    }

    fn close_receipts(&mut self) {
        for (_, r) in self.receipts.drain() {
            r.resolve(Err(GroupError::Closed));
        }
    }

    /// For `next_event`: `Some(Some(event))`, `Some(None)` once the last event has
    /// been read, `None` while there is nothing yet.
    pub(super) fn take_event(&mut self) -> Option<Option<Event>> {
        match self.events.pop_front() {
            Some(e) => Some(Some(e)),
            None => self.end.as_ref().map(|_| None),
        }
    }

    /// For the replica's driver: moves up to `max` queued events to `into`, oldest
    /// first; `Some(())` if it moved any or the layer has ended, `None` while neither.
    pub(super) fn take_events(&mut self, into: &mut VecDeque<Event>, max: usize) -> Option<()> {
        let n = self.events.len().min(max);
        into.extend(self.events.drain(..n));
        (n > 0 || self.end.is_some()).then_some(())
    }

    /// For `wait_view`: `Some(Some(view))` once the latest view passes `check`,
    /// `Some(None)` once the layer ended, `None` while neither.
    pub(super) fn view_if(&self, check: impl FnOnce(&View) -> bool) -> Option<Option<View>> {
        match self.view.as_ref().filter(|v| check(v)) {
            Some(v) => Some(Some(v.clone())),
            None => self.end.as_ref().map(|_| None),
        }
    }

    /// For `leave`: the outcome once the layer ended (`Ok` if by leaving).
    pub(super) fn left(&self) -> Option<Result<(), GroupError>> {
        match &self.end {
            Some(Event::Left) => Some(Ok(())),
            Some(_) => Some(Err(GroupError::Closed)),
            None => None,
        }
    }

    /// For `start`: the first connection's outcome, once; [`GroupError::Closed`] if the
    /// driver ended without one (it panicked, or its runtime shut down).
    pub(super) fn take_started(&mut self) -> Option<Result<(), GroupError>> {
        match self.started.take() {
            Some(r) => Some(r.map_err(GroupError::Connect)),
            None => self.end.is_some().then_some(Err(GroupError::Closed)),
        }
    }

    /// A message delivered by the daemon.
    pub(super) fn deliver(&mut self, from: Member, data: &[u8]) {
        self.machine.handle_deliver(Instant::now(), from, data);
    }

    /// A configuration change of the group, as libcpg lists it.
    pub(super) fn confchg(
        &mut self,
        members: &[ListedMember],
        left: &[ListedMember],
        joined: &[ListedMember],
    ) {
        let members: Vec<Member> = members.iter().map(ListedMember::member).collect();
        let pairs = |list: &[ListedMember]| -> Vec<(Member, Reason)> {
            list.iter().map(|a| (a.member(), a.reason())).collect()
        };
        self.machine
            .handle_confchg(Instant::now(), &members, &pairs(left), &pairs(joined));
    }

    /// A totem (node membership) change.
    pub(super) fn totem(&mut self, ring: RingId, nodes: &[u32]) {
        self.machine.handle_totem(Instant::now(), ring, nodes);
    }

    /// A quorum notification.
    #[cfg(feature = "quorum")]
    pub(super) fn quorum(&mut self, quorate: bool, ring: RingId, members: &[u32]) {
        traced!(self.log.local_quorum(quorate, ring, members.len()));
        let input = QuorumInput::Notification {
            quorate,
            ring,
            members,
        };
        self.machine.handle_quorum(Instant::now(), input);
    }

    /// Reading events failed. A lost daemon: reconnect with a new handle. Anything
    /// else (for example a dispatch refused on too small a stack) would fail the same
    /// way on a new handle: stop, with the reason.
    pub(super) fn dispatch_failed(&mut self, error: Error) {
        if error.is_daemon_lost() {
            self.machine.handle_daemon_lost(Instant::now(), error);
        } else {
            self.machine.handle_failure(Instant::now(), error);
        }
    }
}

/// What the client calls and the driver's loop share.
pub(super) struct Shared<S: Side> {
    core: Lock<Core<S>>,
    /// Set when the group is dropped: the driver's loop ends.
    stop: AtomicBool,
    /// Test hook: the driver does not read the CPG connection's events while set.
    hold_cpg: AtomicBool,
    /// Test hook: the driver does not read the quorum connection's events while set.
    hold_quorum: AtomicBool,
    /// Held by the pump from the choice of an effect to its result, and by
    /// [`stop`](Shared::stop): once a stop has taken it, no send starts any more.
    pub(super) sending: Lock<()>,
    /// The driver's way of waking.
    pub(super) side: S,
}

impl<S: Side> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl<S: Side> Shared<S> {
    /// A machine for this process with `config` in group `name`, not started yet.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(super) fn new(config: Config, name: &GroupName, side: S) -> Self {
        Shared {
            core: Lock::new(Core {
                machine: Machine::new(config, std::process::id(), nonce_seed()),
                receipts: HashMap::new(),
                events: VecDeque::new(),
                end: None,
                view: None,
                started: None,
                waiting: S::Waiting::default(),
                #[cfg(feature = "tracing")]
                log: super::log::Log::new(name),
            }),
            stop: AtomicBool::new(false),
            hold_cpg: AtomicBool::new(false),
            hold_quorum: AtomicBool::new(false),
            sending: Lock::new(()),
            side,
        }
    }

    /// The lock (a panic while holding it leaves the state consistent: poison is
    /// ignored). Panics when this thread holds it already (see [`Lock`]).
    pub(super) fn lock(&self) -> Guard<'_, Core<S>> {
        self.core.lock()
    }

    /// Whether the group was dropped.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Test hook: holds or releases the reading of each connection's events (see
    /// `hold_dispatch` on the drivers), and wakes the driver so that it looks again.
    pub(super) fn hold(&self, cpg: bool, quorum: bool) {
        self.hold_cpg.store(cpg, Ordering::SeqCst);
        self.hold_quorum.store(quorum, Ordering::SeqCst);
        S::poke(self);
    }

    /// Whether the driver holds the CPG connection's events (test hook).
    pub(super) fn cpg_held(&self) -> bool {
        self.hold_cpg.load(Ordering::SeqCst)
    }

    /// Whether the driver holds the quorum connection's events (test hook).
    pub(super) fn quorum_held(&self) -> bool {
        self.hold_quorum.load(Ordering::SeqCst)
    }

    /// The group was dropped: nothing more is sent once this returns (it waits for a
    /// send in progress, one libcpg call), the machine stops, so that every confirmed
    /// send resolves now (see [`Core::stop_machine`]), and the driver's loop is told to
    /// end (it closes the connection).
    pub(super) fn stop(&self) {
        let wake = {
            let _sending = self.sending.lock();
            self.stop.store(true, Ordering::SeqCst);
            let mut core = self.lock();
            core.stop_machine();
            self.side.app_changed(&mut core.waiting)
        };
        S::wake(wake);
        S::poke(self);
    }

    /// Queues `payload`, confirmed when a receipt is given (registered under the same
    /// lock, so it cannot miss its outcome).
    pub(super) fn send(
        &self,
        payload: Vec<u8>,
        receipt: Option<S::Receipt>,
    ) -> Result<SendId, GroupError> {
        let confirm = receipt.is_some();
        self.send_with(payload, confirm, receipt)
    }

    /// Queues `payload`; with `confirm`, its outcome comes as an event
    /// ([`Event::Confirmed`] or [`Event::NotSent`]) and goes to `receipt` if one is
    /// given (registered under the same lock, so it cannot miss it).
    pub(super) fn send_with(
        &self,
        payload: Vec<u8>,
        confirm: bool,
        receipt: Option<S::Receipt>,
    ) -> Result<SendId, GroupError> {
        let mut core = self.lock();
        // Ended without the machine knowing (see `finish`): nobody would send it, nor
        // resolve its receipt.
        if core.end.is_some() {
            return Err(GroupError::Closed);
        }
        let id = core.machine.send(payload, confirm)?;
        if let Some(r) = receipt {
            core.receipts.insert(id, r);
        }
        drop(core);
        S::poke(self);
        Ok(id)
    }

    /// Asks the machine to leave once the queue is sent.
    pub(super) fn leave(&self) {
        let wake = {
            let mut core = self.lock();
            core.machine.leave(Instant::now());
            self.routed(&mut core)
        };
        S::wake(wake);
        S::poke(self);
    }

    /// The latest view (kept while reconnecting).
    pub(super) fn view(&self) -> Option<View> {
        self.lock().view.clone()
    }

    /// Whether this process leads the machine's current view.
    pub(super) fn is_leader(&self) -> bool {
        self.lock().machine.view().is_some_and(View::is_leader)
    }

    /// This process as the daemon reports it, once known.
    pub(super) fn me(&self) -> Option<Member> {
        self.lock().machine.me()
    }

    /// The machine's counters.
    pub(super) fn stats(&self) -> Stats {
        self.lock().machine.stats()
    }

    /// The machine's agreed quorum.
    pub(super) fn agreed_quorum(&self) -> AgreedQuorum {
        self.lock().machine.agreed_quorum()
    }

    /// What the local daemon last said about the quorum.
    pub(super) fn local_quorum(&self) -> LocalQuorum {
        self.lock().machine.local_quorum()
    }

    /// The last event, once the layer ended.
    pub(super) fn end(&self) -> Option<Event> {
        self.lock().end.clone()
    }

    /// Routes the machine's events and takes whom to wake (with the lock held).
    pub(super) fn routed(&self, core: &mut Core<S>) -> S::Wake {
        if core.route() || core.end.is_some() {
            self.side.app_changed(&mut core.waiting)
        } else {
            S::Wake::default()
        }
    }

    /// Routes the machine's events and wakes whoever waits for them.
    pub(super) fn route(&self) {
        let wake = self.routed(&mut self.lock());
        S::wake(wake);
    }

    /// The first connection's outcome, which `start` returns: wakes whoever waits in
    /// it.
    pub(super) fn started(&self, result: Result<(), Error>) {
        let wake = {
            let mut core = self.lock();
            core.started = Some(result);
            self.side.app_changed(&mut core.waiting)
        };
        S::wake(wake);
    }

    /// The driver's loop ended: routes the last events and, if the machine did not end
    /// (the group was dropped, or the driver panicked or lost its runtime), ends the
    /// queue with [`Event::Stopped`] for anyone still reading.
    fn finish(&self) {
        let wake = {
            let mut core = self.lock();
            core.stop_machine();
            if core.end.is_none() {
                // The machine never started: nothing was sent.
                let end = Event::Stopped(StopReason::Failed(lost(Operation::Finalize)));
                core.events.push_back(end.clone());
                core.end = Some(end);
                core.close_receipts();
            }
            self.side.app_changed(&mut core.waiting)
        };
        S::wake(wake);
    }
}

/// The calls that read the layer's state, word for word the same on
/// [`Group`](super::Group) and [`AsyncGroup`](super::AsyncGroup): expanded in each
/// one's `impl`, over its field `shared`.
macro_rules! state_calls {
    () => {
        /// The latest view (kept while reconnecting; `None` before the first).
        pub fn view(&self) -> Option<$crate::group::View> {
            self.shared.view()
        }

        /// Whether this process leads the current view; false while disconnected (the
        /// view kept by [`view`](Self::view) is then the last one before the loss).
        pub fn is_leader(&self) -> bool {
            self.shared.is_leader()
        }

        /// This process as the daemon reports it, once known.
        pub fn me(&self) -> Option<$crate::Member> {
            self.shared.me()
        }

        /// The counters.
        pub fn stats(&self) -> $crate::group::Stats {
            self.shared.stats()
        }

        /// What this node's daemon last said about the quorum on the current
        /// connection: a fast check before a write (one that would be refused need not
        /// be sent). Local knowledge; decide on a delivered message by its
        /// [`Delivery::quorum`]($crate::group::Delivery::quorum).
        pub fn quorum(&self) -> $crate::group::LocalQuorum {
            self.shared.local_quorum()
        }

        /// The agreed quorum after the last frame the layer delivered: what the next
        /// message will carry unless a change comes first. It runs ahead of the
        /// events the application has read; for a decision on a message, use its
        /// [`Delivery::quorum`]($crate::group::Delivery::quorum).
        pub fn agreed_quorum(&self) -> $crate::group::AgreedQuorum {
            self.shared.agreed_quorum()
        }

        /// Test hook, not part of the API (it may change without notice): while `cpg`
        /// (`quorum`) is set, the driver does not read the events of its CPG (quorum)
        /// connection, so that a test can make the two services' notifications arrive
        /// in the order it wants.
        #[doc(hidden)]
        pub fn hold_dispatch(&self, cpg: bool, quorum: bool) {
            self.shared.hold(cpg, quorum)
        }

        /// Why the layer stopped, once it has ([`Event::Left`] or [`Event::Stopped`]).
        pub fn end(&self) -> Option<$crate::group::Event> {
            self.shared.end()
        }
    };
}
pub(super) use state_calls;

/// Ends the group's queue when dropped (declare it before the
/// [`Pump`](super::pump::Pump), so that the connection closes first): after the driver's loop, and also when the driver
/// panicked or its task was dropped with its runtime, so that nobody waits forever for
/// an event, a confirmation or the first connection.
pub(super) struct Finish<'a, S: Side>(pub(super) &'a Shared<S>);

impl<S: Side> Drop for Finish<'_, S> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A random seed for the wire header's nonces (the standard library's hash keys are
/// random per process and per `RandomState`).
fn nonce_seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((std::process::id(), Instant::now()))
}

/// The error of a call made without a connection: the daemon is lost.
pub(super) fn lost(op: Operation) -> Error {
    Error::Cs {
        op,
        code: CsError::Library,
    }
}
