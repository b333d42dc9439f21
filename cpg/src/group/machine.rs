//! The group layer's rules as a state machine without I/O or clock: [`Machine`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::layer::deadline::later;
use crate::types::{Member, Reason, RingId};

use super::config::{Config, OnDisconnect, OnEviction};
use super::error::GroupError;
use super::event::{Delivery, Effect, Event, Position, SendId, Stats, StopReason};
use super::quorum::{AgreedQuorum, Agreement, LocalQuorum, QuorumInput};
use super::view::{View, ViewId};
use super::wire::{
    batch_entry_len, parse, write_batch, write_marker, write_message, Entries, Frame,
    BATCH_HEADER_LEN, MAX_BATCH_MESSAGES,
};

/// Least size of a new receive buffer: the delivered frames are copied one after the
/// other into it, and each delivered message is a slice of it, until it is full; once
/// every slice of a buffer is dropped, it is used again (no allocation).
const RX_CHUNK: usize = 64 << 10;

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

/// The send whose result the driver has not reported yet.
#[derive(Debug)]
enum InFlight {
    /// The first `count` messages of the queue (one sent alone, or a batch), the
    /// first with sequence number `seq`. They stay at the queue's front until the
    /// result comes.
    Messages { count: usize, seq: u64 },
    /// A quorum marker for (ring, quorate).
    Marker((RingId, bool)),
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
///    and, with [`QuorumPolicy::Corosync`](super::QuorumPolicy::Corosync), what
///    libquorum reported ([`handle_quorum`](Machine::handle_quorum)); a lost daemon
///    (`CS_ERR_LIBRARY` from dispatch or any call, on either connection) as
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
/// The driver sends one [`Effect::Send`], [`Effect::SendBatch`] or
/// [`Effect::SendControl`] at a time (the
/// machine hands out the next only after the result of the previous), which is also
/// what libcpg needs: two concurrent sends on one handle are not safe.
///
/// With [`QuorumPolicy::Corosync`](super::QuorumPolicy::Corosync) (the default with
/// the `quorum` feature) the driver must report its quorum connection
/// ([`QuorumInput::Connected`], then every notification): until it does, the agreed
/// quorum is [`AgreedQuorum::Pending`]. A driver without one configures
/// [`QuorumPolicy::Ignore`](super::QuorumPolicy::Ignore).
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
    /// The nodes of `ring`, sorted.
    ring_nodes: Vec<u32>,
    ring_this_incarnation: bool,
    unsettled: bool,
    agreement: Agreement,
    queue: VecDeque<Outgoing>,
    in_flight: Option<InFlight>,
    next_seq: u64,
    /// Frames of application messages the daemon accepted on this connection.
    frames_out: u64,
    /// Of those, the ones delivered back to this process.
    frames_back: u64,
    /// The queue held (a full window, or back-pressure) since it was last empty: what
    /// waits goes out packed.
    pressed: bool,
    /// Where delivered frames are copied (see [`RX_CHUNK`]).
    rx: BytesMut,
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
        let agreement = Agreement::new(config.quorum);
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
            ring_nodes: Vec::new(),
            ring_this_incarnation: false,
            unsettled: false,
            agreement,
            queue: VecDeque::new(),
            in_flight: None,
            next_seq: 0,
            frames_out: 0,
            frames_back: 0,
            pressed: false,
            rx: BytesMut::new(),
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
            queued: self.queue.len(),
            ..self.stats
        }
    }

    /// The agreed quorum after the last frame delivered to the machine (the state the
    /// next delivery will carry unless a change comes first). The application reads
    /// events behind the machine: for a decision on a message, use its
    /// [`Delivery::quorum`].
    pub fn agreed_quorum(&self) -> AgreedQuorum {
        self.agreement.agreed()
    }

    /// What this node's daemon last said about the quorum on the current connection.
    pub fn local_quorum(&self) -> LocalQuorum {
        self.agreement.local()
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
        self.note_pressure();
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
            // A marker goes ahead of queued messages: the sooner it is delivered, the
            // shorter the window in which messages are judged by an older state.
            if let Some(pair) = self.marker_due() {
                self.send_not_before = None;
                write_marker(buf, self.nonce, pair.0, pair.1);
                self.agreement.announce(pair);
                self.in_flight = Some(InFlight::Marker(pair));
                return Some(Effect::SendControl);
            }
            if let Some(effect) = self.next_send(buf) {
                self.send_not_before = None;
                return Some(effect);
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

    /// The next send of queued messages, if the window lets one go: as many as fit in
    /// a batch (the front message alone when it is the only one, or too large to
    /// share one); without [`Config::batch_eager`], the front message alone unless
    /// the queue is under pressure.
    fn next_send(&mut self, buf: &mut Vec<u8>) -> Option<Effect> {
        let first = self.queue.front()?;
        let batching = self.config.batch_bytes > 0;
        if batching && self.outstanding() >= self.config.batch_window as u64 {
            // Held until an own frame comes back; meanwhile the queue fills a batch.
            self.pressed = true;
            return None;
        }
        // A message too large to share a batch (a count of 0) goes alone too. Eagerly,
        // what waits goes now, packed: sent one by one, the messages behind the first
        // would each wait for the sends before them (a call to the daemon each) and
        // take a place in the window, where the messages queued after them would then
        // wait for a frame to come back.
        let count = if batching && (self.pressed || self.config.batch_eager) {
            self.batch_len().max(1)
        } else {
            1
        };
        let seq = self.next_seq;
        let id = first.id;
        self.in_flight = Some(InFlight::Messages { count, seq });
        if count <= 1 {
            write_message(buf, self.nonce, seq, &first.payload);
            Some(Effect::Send(id))
        } else {
            let payloads = self.queue.iter().take(count).map(|o| o.payload.as_slice());
            write_batch(buf, self.nonce, seq, payloads);
            Some(Effect::SendBatch { first: id, count })
        }
    }

    /// How many messages from the queue's front fit in one batch.
    fn batch_len(&self) -> usize {
        let mut len = BATCH_HEADER_LEN;
        let mut count = 0;
        for out in self.queue.iter().take(MAX_BATCH_MESSAGES) {
            len = len.saturating_add(batch_entry_len(out.payload.len()));
            if len > self.config.batch_bytes || out.payload.len() > u32::MAX as usize {
                break;
            }
            count += 1;
        }
        count
    }

    /// Messages wait while the window is full: from here on, until the queue is empty,
    /// they go out packed.
    fn note_pressure(&mut self) {
        if self.config.batch_bytes > 0
            && !self.queue.is_empty()
            && self.outstanding() >= self.config.batch_window as u64
        {
            self.pressed = true;
        }
    }

    /// Frames of application messages the daemon accepted on this connection and did
    /// not deliver back yet.
    fn outstanding(&self) -> u64 {
        self.frames_out.saturating_sub(self.frames_back)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next (a reconnect, or a
    /// send waiting out back-pressure).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Joined | State::Leaving { issued: false }
                if !self.queue.is_empty() || self.marker_due().is_some() =>
            {
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
                self.frames_out = 0;
                self.frames_back = 0;
                self.pressed = false;
                self.local_nodeid = Some(nodeid);
                self.me = None;
                self.ring_this_incarnation = false;
                self.agreement.new_connection();
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

    /// The result of [`Effect::Send`], [`Effect::SendBatch`] or [`Effect::SendControl`].
    pub fn handle_send_result(&mut self, now: Instant, result: Result<(), Error>) {
        let (count, seq) = match self.in_flight.take() {
            None => return,
            Some(InFlight::Messages { count, seq }) => (count, seq),
            Some(InFlight::Marker(pair)) => {
                match result {
                    Ok(()) => {
                        self.stats.markers_sent += 1;
                        self.send_delay = self.config.send_retry_initial;
                    }
                    Err(e) if e.is_retryable() => {
                        self.agreement.unannounce(pair);
                        self.back_off(now);
                    }
                    Err(e) if e.is_daemon_lost() => self.handle_daemon_lost(now, e),
                    // Refused (it cannot be for 32 bytes on a working connection): not
                    // retried, so as not to loop; the next change of the quorum or of
                    // the view sends a new marker.
                    Err(_) => {}
                }
                return;
            }
        };
        match result {
            Ok(()) => {
                self.next_seq += count as u64;
                self.stats.sent += count as u64;
                self.frames_out += 1;
                if count > 1 {
                    self.stats.batches_sent += 1;
                }
                self.send_delay = self.config.send_retry_initial;
                for (i, out) in self.queue.drain(..count.min(self.queue.len())).enumerate() {
                    if out.confirm {
                        self.awaiting.push_back((seq + i as u64, out.id));
                    }
                }
                if self.queue.is_empty() {
                    self.pressed = false;
                }
                self.note_pressure();
            }
            // The messages are still at the queue's front: sent again later (packed
            // with what queues meanwhile), or after reconnecting.
            Err(e) if e.is_retryable() => self.back_off(now),
            Err(e) if e.is_daemon_lost() => self.handle_daemon_lost(now, e),
            Err(e) => {
                for _ in 0..count {
                    if let Some(out) = self.queue.pop_front() {
                        self.not_sent(out.id, GroupError::Rejected(e.clone()));
                    }
                }
            }
        }
    }

    /// Back-pressure: the next send waits, for a pause that doubles up to its maximum.
    fn back_off(&mut self, now: Instant) {
        self.stats.pushbacks += 1;
        self.pressed = true;
        self.send_not_before = Some(later(now, self.send_delay));
        self.send_delay = self
            .send_delay
            .saturating_mul(2)
            .min(self.config.send_retry_max);
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

    /// A totem (node membership) change: the new ring and its nodes.
    pub fn handle_totem(&mut self, now: Instant, ring: RingId, nodes: &[u32]) {
        let _ = now;
        if !matches!(
            self.state,
            State::Joining | State::Joined | State::Leaving { .. }
        ) {
            return;
        }
        let new_ring = !self.ring_this_incarnation || self.ring != Some(ring);
        self.ring = Some(ring);
        self.ring_nodes = nodes.to_vec();
        self.ring_nodes.sort_unstable();
        self.ring_nodes.dedup();
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
        // A new ring is a new partition: its quorum is not known until a marker for it
        // is delivered. Every member of the ring gets this change at the same point of
        // the delivery order (after the ring's group changes, before its messages).
        if new_ring && self.view.is_some() {
            let before = self.agreement.agreed();
            let state = self.agreement.reset();
            if state != before {
                self.quorum_event(state);
            }
        }
    }

    /// What the driver's quorum connection reported (see [`QuorumInput`]).
    pub fn handle_quorum(&mut self, now: Instant, input: QuorumInput<'_>) {
        let _ = now;
        if !matches!(
            self.state,
            State::Joining | State::Joined | State::Leaving { .. }
        ) {
            return;
        }
        if let Some(state) = self.agreement.input(input) {
            // A provider found missing after the view was installed (a driver that
            // reports late): from here on nothing is gated.
            if self.view.is_some() {
                self.push_quorum_event(state);
            }
        }
    }

    /// Reports a change of the agreed quorum at the current point of the delivery
    /// order, unless the state is free (nothing to gate, nothing to report).
    fn quorum_event(&mut self, state: AgreedQuorum) {
        if state != AgreedQuorum::Free {
            self.push_quorum_event(state);
        }
    }

    fn push_quorum_event(&mut self, state: AgreedQuorum) {
        if let Some(view) = &self.view {
            self.events.push_back(Event::Quorum {
                view: view.id,
                state,
                index: self.index_in_view,
            });
        }
    }

    /// The marker this member should send now, if any: it is in the group, its view's
    /// ring is known on this connection, and it knows the local quorum for that ring.
    fn marker_due(&self) -> Option<(RingId, bool)> {
        if self.state != State::Joined
            || self.view.is_none()
            || self.unsettled
            || !self.ring_this_incarnation
        {
            return None;
        }
        self.agreement.due(self.ring?, &self.ring_nodes)
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
        // A new view: its quorum is agreed anew (the same point on every member).
        let state = self.agreement.reset();
        self.quorum_event(state);
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

    /// A message delivered to the group, as CPG reports it (sender and bytes). A batch
    /// becomes one [`Event::Message`] per message it holds, at consecutive positions.
    pub fn handle_deliver(&mut self, now: Instant, from: Member, data: &[u8]) {
        let _ = now;
        if !matches!(self.state, State::Joined | State::Leaving { .. }) {
            return;
        }
        let Some(view) = self.view.as_ref().map(|v| v.id) else {
            return;
        };
        match parse(data) {
            Frame::Message {
                nonce,
                seq,
                payload,
            } => {
                let at = data.len() - payload.len();
                let frame = self.copy_in(data);
                self.own_frame(from, nonce);
                self.deliver_message(view, from, nonce, seq, frame.slice(at..));
            }
            Frame::Batch {
                nonce,
                first_seq,
                count,
            } => {
                let frame = self.copy_in(data);
                self.stats.batches_delivered += 1;
                self.own_frame(from, nonce);
                for (i, range) in Entries::new(data).take(count).enumerate() {
                    let seq = first_seq.wrapping_add(i as u64);
                    self.deliver_message(view, from, nonce, seq, frame.slice(range));
                }
            }
            Frame::Marker { ring, quorate, .. } => {
                self.next_position(view);
                self.stats.markers += 1;
                // Only a marker for the ring this member is in counts: every member of
                // the view is in the same ring at this point, so all decide alike.
                let current = self.ring.filter(|_| self.ring_this_incarnation);
                if let Some(state) = self.agreement.marker(ring, quorate, current) {
                    self.quorum_event(state);
                }
            }
            Frame::Malformed => {
                self.next_position(view);
                self.stats.malformed += 1;
                self.events.push_back(Event::Malformed {
                    from,
                    len: data.len(),
                });
            }
        }
    }

    /// The position of the next delivery, taken.
    fn next_position(&mut self, view: ViewId) -> Position {
        let position = Position {
            view,
            index: self.index_in_view,
            total: self.stats.delivered,
        };
        self.index_in_view += 1;
        self.stats.delivered += 1;
        position
    }

    /// A copy of a delivered frame in the receive buffer, whose slices the messages'
    /// data are: one allocation per [`RX_CHUNK`] of frames at most, none once the
    /// application has dropped the messages of the previous buffer.
    fn copy_in(&mut self, data: &[u8]) -> Bytes {
        if self.rx.capacity() < data.len() {
            // Takes the whole buffer back if no slice of it is alive.
            self.rx.reserve(data.len().max(RX_CHUNK));
        }
        self.rx.extend_from_slice(data);
        self.rx.split().freeze()
    }

    /// A frame of application messages came back: if this connection sent it, one
    /// less in flight (by nonce and node: the own entry need not be known yet).
    fn own_frame(&mut self, from: Member, nonce: u64) {
        if nonce == self.nonce && Some(from.nodeid) == self.local_nodeid {
            self.frames_back += 1;
        }
    }

    /// One application message, sent alone or in a batch, with its sender's sequence
    /// number.
    fn deliver_message(&mut self, view: ViewId, from: Member, nonce: u64, seq: u64, data: Bytes) {
        let position = self.next_position(view);
        // Our own nonce from our own node while our entry is unknown (a daemon that
        // listed us under another pid): that is us.
        if self.me.is_none() && nonce == self.nonce && Some(from.nodeid) == self.local_nodeid {
            self.me = Some(from);
        }
        let own = self.me == Some(from) && nonce == self.nonce;
        self.events.push_back(Event::Message(Delivery {
            from,
            data,
            position,
            own,
            quorum: self.agreement.agreed(),
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
        self.agreement.new_connection();
        // A send without its result yet: its messages are still queued (sent again
        // after reconnecting, or dropped below).
        self.in_flight = None;
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
        if let Some(InFlight::Messages { count, .. }) = self.in_flight.take() {
            for _ in 0..count {
                if let Some(out) = self.queue.pop_front() {
                    self.not_sent(out.id, GroupError::Unknown);
                }
            }
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
