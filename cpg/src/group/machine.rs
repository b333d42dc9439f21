//! The group layer's rules as a state machine without I/O or clock: [`Machine`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::layer::deadline::later;
use crate::types::{Member, Reason, RingId};

use super::config::{Config, OnDisconnect, OnEviction};
use super::error::GroupError;
use super::event::{Delivery, Effect, Event, Position, SendId, Stats, StopReason};
use super::view::{View, ViewId};
use super::wire::{parse_header, write_message, HEADER_LEN};

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// [`Machine::start`] not called yet.
    Idle,
    /// [`Effect::Connect`] handed out, result pending.
    Connecting,
    /// Waiting until `at` to connect again.
    Waiting { at: Instant },
    /// Connected and joined; waiting for the first view.
    Joining,
    /// In the group.
    Joined,
    /// Leaving: the queue drains, then [`Effect::Leave`], then the own leave change.
    Leaving { issued: bool },
    /// Left or stopped.
    Ended,
}

#[derive(Debug)]
struct Outgoing {
    id: SendId,
    payload: Vec<u8>,
    confirm: bool,
}

/// The group layer's rules as a state machine without I/O: libcpg events and call
/// results go in, [`Event`]s for the application and [`Effect`]s for the driver come
/// out. Time is an argument; the machine reads no clock.
///
/// A driver ([`Group`](super::Group), `AsyncGroup` (feature `tokio`), or your own)
/// owns the libcpg handle and loops:
///
/// 1. feed what libcpg reported: [`handle_confchg`](Machine::handle_confchg),
///    [`handle_deliver`](Machine::handle_deliver), [`handle_totem`](Machine::handle_totem),
///    a lost daemon (`CS_ERR_LIBRARY` from dispatch or any call) as
///    [`handle_daemon_lost`](Machine::handle_daemon_lost), any other dispatch failure
///    as [`handle_failure`](Machine::handle_failure);
/// 2. carry out every [`poll_effect`](Machine::poll_effect) and report its result
///    ([`handle_connected`](Machine::handle_connected),
///    [`handle_send_result`](Machine::handle_send_result),
///    [`handle_leave_result`](Machine::handle_leave_result));
/// 3. hand every [`poll_event`](Machine::poll_event) to the application;
/// 4. wait for the handle's descriptor or until [`poll_timeout`](Machine::poll_timeout),
///    then call [`handle_timeout`](Machine::handle_timeout).
///
/// The driver sends one [`Effect::Send`] at a time (the machine hands out the next only
/// after the result of the previous), which is also what libcpg needs: two concurrent
/// sends on one handle are not safe.
///
/// Every message the machine sends starts with the layer's header; see
/// [`wire`](super::wire) for the format.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    state: State,
    /// getpid() of this process: libcpg reports it at join, and the daemon lists the
    /// member with it (also inside a pid namespace, where it is the namespace's pid).
    pid: u32,
    nonce_seed: u64,
    nonce: u64,
    local_nodeid: Option<u32>,
    me: Option<Member>,
    incarnation: u64,
    views: u64,
    view: Option<View>,
    index_in_view: u64,
    ring: Option<RingId>,
    ring_this_incarnation: bool,
    unsettled: bool,
    queue: VecDeque<Outgoing>,
    in_flight: Option<(Outgoing, u64)>,
    next_seq: u64,
    awaiting: VecDeque<(u64, SendId)>,
    next_id: u64,
    send_not_before: Option<Instant>,
    send_delay: Duration,
    lost_at: Option<Instant>,
    attempts: u32,
    reconnect_delay: Duration,
    leave_requested: bool,
    events: VecDeque<Event>,
    effects: VecDeque<Effect>,
    stats: Stats,
}

impl Machine {
    /// A machine for a process whose `getpid()` is `pid`. `nonce_seed` should be
    /// random (the drivers take it from the standard library's hash seed): it makes
    /// the per-connection nonces of the wire header.
    pub fn new(config: Config, pid: u32, nonce_seed: u64) -> Machine {
        let send_delay = config.send_retry_initial;
        let reconnect_delay = config.reconnect.initial;
        Machine {
            config,
            state: State::Idle,
            pid,
            nonce_seed,
            nonce: 0,
            local_nodeid: None,
            me: None,
            incarnation: 0,
            views: 0,
            view: None,
            index_in_view: 0,
            ring: None,
            ring_this_incarnation: false,
            unsettled: false,
            queue: VecDeque::new(),
            in_flight: None,
            next_seq: 0,
            awaiting: VecDeque::new(),
            next_id: 0,
            send_not_before: None,
            send_delay,
            lost_at: None,
            attempts: 0,
            reconnect_delay,
            leave_requested: false,
            events: VecDeque::new(),
            effects: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Starts: the first effect is [`Effect::Connect`].
    pub fn start(&mut self, now: Instant) {
        let _ = now;
        if self.state == State::Idle {
            self.state = State::Connecting;
            self.effects.push_back(Effect::Connect);
        }
    }

    /// The current view, once joined.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// This process as the daemon reports it, once known.
    pub fn me(&self) -> Option<Member> {
        self.me
    }

    /// The current connection's number (0 before the first).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            queued: self.queue.len() + usize::from(self.in_flight.is_some()),
            ..self.stats
        }
    }

    /// Whether the machine has ended ([`Event::Left`] or [`Event::Stopped`] was
    /// produced).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Whether the machine is in the group (joined, not leaving).
    pub fn is_joined(&self) -> bool {
        self.state == State::Joined
    }

    /// Queues `payload` for sending; returns at once. With `confirm`, an
    /// [`Event::Confirmed`] follows when this process's own copy is delivered (or an
    /// [`Event::NotSent`]); without, only a failure is reported.
    ///
    /// Messages go out in the order they were queued, while connected, once this
    /// process has its first view. While reconnecting they wait in the queue, unless
    /// the policy is [`OnDisconnect::Drop`]: then this fails with
    /// [`GroupError::Disconnected`].
    pub fn send(&mut self, payload: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if self.state == State::Ended || self.leave_requested {
            return Err(GroupError::Closed);
        }
        let disconnected = matches!(self.state, State::Waiting { .. } | State::Connecting);
        if disconnected && self.incarnation > 0 && self.config.on_disconnect == OnDisconnect::Drop {
            return Err(GroupError::Disconnected);
        }
        if self.stats().queued >= self.config.queue_limit {
            return Err(GroupError::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        let id = SendId(self.next_id);
        self.next_id += 1;
        self.queue.push_back(Outgoing {
            id,
            payload,
            confirm,
        });
        Ok(id)
    }

    /// Leaves the group once the messages queued so far are sent. [`Event::Left`]
    /// follows when the daemon reports this process's leave (or at once when not
    /// connected). Later sends fail with [`GroupError::Closed`].
    pub fn leave(&mut self, now: Instant) {
        let _ = now;
        if self.state == State::Ended || self.leave_requested {
            return;
        }
        self.leave_requested = true;
        match self.state {
            State::Joining | State::Joined => self.state = State::Leaving { issued: false },
            _ => self.finish_left(),
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next thing the driver must do. For [`Effect::Send`], the bytes to send are
    /// written into `buf` (cleared first).
    pub fn poll_effect(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Effect> {
        if let Some(e) = self.effects.pop_front() {
            return Some(e);
        }
        let sending = matches!(self.state, State::Joined | State::Leaving { issued: false });
        if sending && self.in_flight.is_none() && self.send_not_before.is_none_or(|t| now >= t) {
            if let Some(out) = self.queue.pop_front() {
                self.send_not_before = None;
                write_message(buf, self.nonce, self.next_seq, &out.payload);
                let id = out.id;
                self.in_flight = Some((out, self.next_seq));
                return Some(Effect::Send(id));
            }
        }
        if self.state == (State::Leaving { issued: false })
            && self.queue.is_empty()
            && self.in_flight.is_none()
        {
            self.state = State::Leaving { issued: true };
            return Some(Effect::Leave);
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next (a reconnect, or a
    /// send waiting out back-pressure).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Joined | State::Leaving { issued: false } if !self.queue.is_empty() => {
                self.send_not_before
            }
            _ => None,
        }
    }

    /// Time has passed: starts a due reconnect. (A send that waited out back-pressure
    /// becomes ready by itself; poll effects after this.)
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Waiting { at } = self.state {
            if now >= at {
                self.state = State::Connecting;
                self.effects.push_back(Effect::Connect);
            }
        }
    }

    /// The result of [`Effect::Connect`]: the local node id, or why connecting or
    /// joining failed.
    pub fn handle_connected(&mut self, now: Instant, result: Result<u32, Error>) {
        if self.state != State::Connecting {
            return;
        }
        match result {
            Ok(nodeid) => {
                self.incarnation += 1;
                self.nonce = splitmix64(self.nonce_seed ^ self.incarnation.rotate_left(32));
                self.next_seq = 0;
                self.local_nodeid = Some(nodeid);
                self.me = None;
                self.ring_this_incarnation = false;
                self.send_not_before = None;
                self.send_delay = self.config.send_retry_initial;
                self.lost_at = None;
                self.attempts = 0;
                self.reconnect_delay = self.config.reconnect.initial;
                self.state = State::Joining;
            }
            Err(error) => {
                self.effects.push_back(Effect::Close);
                if error.is_retryable() || error.is_daemon_lost() {
                    self.schedule_reconnect(now, error);
                } else {
                    self.stop(StopReason::Failed(error), GroupError::Closed);
                }
            }
        }
    }

    /// The result of [`Effect::Send`].
    pub fn handle_send_result(&mut self, now: Instant, result: Result<(), Error>) {
        let Some((out, seq)) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.next_seq += 1;
                self.stats.sent += 1;
                self.send_delay = self.config.send_retry_initial;
                if out.confirm {
                    self.awaiting.push_back((seq, out.id));
                }
            }
            Err(e) if e.is_retryable() => {
                self.stats.pushbacks += 1;
                self.queue.push_front(out);
                self.send_not_before = Some(later(now, self.send_delay));
                self.send_delay = self
                    .send_delay
                    .saturating_mul(2)
                    .min(self.config.send_retry_max);
            }
            Err(e) if e.is_daemon_lost() => {
                self.queue.push_front(out);
                self.handle_daemon_lost(now, e);
            }
            Err(e) => self.not_sent(out.id, GroupError::Rejected(e)),
        }
    }

    /// The result of [`Effect::Leave`].
    pub fn handle_leave_result(&mut self, now: Instant, result: Result<(), Error>) {
        if self.state == State::Ended {
            // Stopped while the leave was under way: nothing more to report.
            return;
        }
        match result {
            Ok(()) => {}
            Err(e) if e.is_daemon_lost() => self.handle_daemon_lost(now, e),
            Err(e) => self.stop(StopReason::Failed(e), GroupError::Left),
        }
    }

    /// The connection to the daemon is lost (`CS_ERR_LIBRARY` from dispatch or any
    /// call).
    pub fn handle_daemon_lost(&mut self, now: Instant, error: Error) {
        match self.state {
            State::Ended | State::Idle | State::Waiting { .. } => return,
            State::Leaving { .. } => {
                // Gone from the group with the connection: the leave is done.
                self.effects.push_back(Effect::Close);
                self.finish_left();
                return;
            }
            _ => {}
        }
        self.effects.push_back(Effect::Close);
        self.events.push_back(Event::Disconnected {
            error: error.clone(),
        });
        self.lose_connection();
        self.lost_at = Some(now);
        self.attempts = 0;
        self.reconnect_delay = self.config.reconnect.initial;
        self.schedule_reconnect(now, error);
    }

    /// The connection failed in a way a new connection would not fix (for example a
    /// dispatch refused for too small a stack), or the driver stops for good (its
    /// owner dropped it): stops with [`StopReason::Failed`]. A lost daemon is
    /// [`handle_daemon_lost`](Self::handle_daemon_lost) instead.
    ///
    /// As with every stop, each message the daemon accepted whose own copy has not come
    /// back is reported [`GroupError::Unknown`] (it may have been delivered), and so is
    /// a [`Effect::Send`] whose result the driver has not reported; each message still
    /// queued is reported [`GroupError::Closed`] (never sent).
    pub fn handle_failure(&mut self, now: Instant, error: Error) {
        let _ = now;
        if matches!(self.state, State::Ended | State::Idle) {
            return;
        }
        self.effects.push_back(Effect::Close);
        self.stop(StopReason::Failed(error), GroupError::Closed);
    }

    /// A totem (node membership) change.
    pub fn handle_totem(&mut self, now: Instant, ring: RingId, nodes: &[u32]) {
        let _ = (now, nodes);
        if !matches!(
            self.state,
            State::Joining | State::Joined | State::Leaving { .. }
        ) {
            return;
        }
        self.ring = Some(ring);
        self.ring_this_incarnation = true;
        if self.unsettled {
            self.unsettled = false;
            if let Some(view) = &self.view {
                self.events.push_back(Event::Settled {
                    view: view.id,
                    ring,
                });
            }
        }
    }

    /// A configuration change of the group: its member list, and who left and joined
    /// as this node's daemon reports them.
    pub fn handle_confchg(
        &mut self,
        now: Instant,
        members: &[Member],
        left: &[(Member, Reason)],
        joined: &[(Member, Reason)],
    ) {
        let _ = now;
        if !matches!(
            self.state,
            State::Joining | State::Joined | State::Leaving { .. }
        ) {
            return;
        }
        if self.me.is_none() {
            self.me = self.identify(members, joined);
        }
        let leaving = matches!(self.state, State::Leaving { .. });
        let gone = self.own_departure(members, left);
        if leaving && gone.is_some() {
            self.effects.push_back(Effect::Close);
            self.finish_left();
            return;
        }
        self.views += 1;
        let view = View::new(
            ViewId {
                incarnation: self.incarnation,
                counter: self.views,
            },
            members.iter().copied(),
            self.me,
            joined.to_vec(),
            left.to_vec(),
            self.ring,
        );
        self.index_in_view = 0;
        let node_change = left
            .iter()
            .chain(joined)
            .any(|(_, r)| matches!(r, Reason::NodeDown | Reason::NodeUp));
        self.unsettled = !self.ring_this_incarnation || node_change;
        self.view = Some(view.clone());
        if self.state == State::Joined && gone.is_some() {
            self.events.push_back(Event::Evicted { view });
            match self.config.on_eviction {
                OnEviction::Rejoin => {
                    self.lose_connection();
                    self.effects.push_back(Effect::Close);
                    self.state = State::Connecting;
                    self.effects.push_back(Effect::Connect);
                }
                OnEviction::Stop => {
                    self.effects.push_back(Effect::Close);
                    self.stop(StopReason::Evicted, GroupError::Closed);
                }
            }
            return;
        }
        let first = self.state == State::Joining;
        if first {
            self.state = State::Joined;
        }
        self.events.push_back(Event::View(view.clone()));
        if !self.unsettled {
            if let Some(ring) = self.ring {
                self.events.push_back(Event::Settled {
                    view: view.id,
                    ring,
                });
            }
        }
        if first && self.incarnation > 1 {
            self.stats.reconnects += 1;
            self.events.push_back(Event::Reconnected {
                incarnation: self.incarnation,
                view,
            });
        }
    }

    /// A message delivered to the group, as CPG reports it (sender and bytes).
    pub fn handle_deliver(&mut self, now: Instant, from: Member, data: &[u8]) {
        let _ = now;
        if !matches!(self.state, State::Joined | State::Leaving { .. }) {
            return;
        }
        let Some(view) = &self.view else {
            return;
        };
        let position = Position {
            view: view.id,
            index: self.index_in_view,
            total: self.stats.delivered,
        };
        self.index_in_view += 1;
        self.stats.delivered += 1;
        let Some((nonce, seq)) = parse_header(data) else {
            self.stats.malformed += 1;
            self.events.push_back(Event::Malformed {
                from,
                len: data.len(),
            });
            return;
        };
        // Our own nonce from our own node while our entry is unknown (a daemon that
        // listed us under another pid): that is us.
        if self.me.is_none() && nonce == self.nonce && Some(from.nodeid) == self.local_nodeid {
            self.me = Some(from);
        }
        let own = self.me == Some(from) && nonce == self.nonce;
        self.events.push_back(Event::Message(Delivery {
            from,
            data: data[HEADER_LEN..].to_vec(),
            position,
            own,
        }));
        if own {
            // Own messages come back in the order sent; unconfirmed ones in between
            // are simply not awaited.
            while let Some(&(awaited, id)) = self.awaiting.front() {
                if awaited > seq {
                    break;
                }
                self.awaiting.pop_front();
                if awaited == seq {
                    self.stats.confirmed += 1;
                    self.events.push_back(Event::Confirmed { id, position });
                } else {
                    // Sent before this one, yet never delivered: not in the agreed
                    // order (cannot happen with a correct daemon).
                    self.not_sent(id, GroupError::Unknown);
                }
            }
        }
    }

    /// Which member of the first change after joining is this process: the one with
    /// this node id and this pid, else the only process of this node that joined.
    fn identify(&self, members: &[Member], joined: &[(Member, Reason)]) -> Option<Member> {
        let nodeid = self.local_nodeid?;
        let exact = Member {
            nodeid,
            pid: self.pid,
        };
        if members.contains(&exact) {
            return Some(exact);
        }
        if self.state != State::Joining {
            return None;
        }
        let mut ours = joined
            .iter()
            .filter(|(m, r)| m.nodeid == nodeid && *r == Reason::Join && members.contains(m));
        match (ours.next(), ours.next()) {
            (Some((m, _)), None) => Some(*m),
            _ => None,
        }
    }

    /// Whether this change removes this process: listed as left, or missing from the
    /// member list. `Some(reason)` (Undefined when just missing).
    fn own_departure(&self, members: &[Member], left: &[(Member, Reason)]) -> Option<Reason> {
        match self.me {
            Some(me) => left
                .iter()
                .find(|(m, _)| *m == me)
                .map(|(_, r)| *r)
                .or((!members.contains(&me)).then_some(Reason::Undefined)),
            // Identity unknown: only a leave of this node's process while leaving.
            None => {
                let nodeid = self.local_nodeid?;
                let leaving = matches!(self.state, State::Leaving { .. });
                left.iter()
                    .find(|(m, r)| leaving && m.nodeid == nodeid && *r == Reason::Leave)
                    .map(|(_, r)| *r)
            }
        }
    }

    /// The connection is gone (lost, or closed for a rejoin): what was in the daemon's
    /// hands has an unknown outcome; the queue is kept or dropped per policy.
    fn lose_connection(&mut self) {
        self.view = None;
        self.unsettled = false;
        if let Some((out, _)) = self.in_flight.take() {
            self.queue.push_front(out);
        }
        while let Some((_, id)) = self.awaiting.pop_front() {
            self.not_sent(id, GroupError::Unknown);
        }
        if self.config.on_disconnect == OnDisconnect::Drop {
            while let Some(out) = self.queue.pop_front() {
                self.not_sent(out.id, GroupError::Disconnected);
            }
        }
    }

    fn schedule_reconnect(&mut self, now: Instant, error: Error) {
        let budget = &self.config.reconnect;
        let lost_at = *self.lost_at.get_or_insert(now);
        self.attempts += 1;
        let delay = self.reconnect_delay;
        if self.attempts >= budget.max_attempts
            || now.saturating_duration_since(lost_at).saturating_add(delay) >= budget.timeout
        {
            self.stop(StopReason::GaveUp(error), GroupError::Closed);
            return;
        }
        self.reconnect_delay = delay.saturating_mul(2).min(budget.max_delay);
        self.state = State::Waiting {
            at: later(now, delay),
        };
        let _ = error;
    }

    fn not_sent(&mut self, id: SendId, error: GroupError) {
        self.stats.not_sent += 1;
        self.events.push_back(Event::NotSent { id, error });
    }

    /// Reports every message not yet resolved: the daemon may have delivered the ones it
    /// accepted and the one whose send has no result yet ([`GroupError::Unknown`]), and
    /// never got the queued ones (`error`).
    fn fail_all(&mut self, error: GroupError) {
        if let Some((out, _)) = self.in_flight.take() {
            self.not_sent(out.id, GroupError::Unknown);
        }
        while let Some(out) = self.queue.pop_front() {
            self.not_sent(out.id, error.clone());
        }
        while let Some((_, id)) = self.awaiting.pop_front() {
            self.not_sent(id, GroupError::Unknown);
        }
    }

    fn finish_left(&mut self) {
        self.fail_all(GroupError::Left);
        self.view = None;
        self.state = State::Ended;
        self.events.push_back(Event::Left);
    }

    fn stop(&mut self, reason: StopReason, error: GroupError) {
        self.fail_all(error);
        self.view = None;
        self.state = State::Ended;
        self.events.push_back(Event::Stopped(reason));
    }
}

/// A 64-bit mix (splitmix64's finalizer), to derive per-connection nonces.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
