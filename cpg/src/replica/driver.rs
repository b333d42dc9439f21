//! What the blocking and the tokio drivers share: the machine with its ticket table,
//! fed from group-layer events and flushed into a group-layer sender.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::group::{self, GroupError, SendId};

use super::app::Replicated;
use super::machine::{Effect, Event, Machine};
use super::wire::op_seq;

/// Why an operation or a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The replica stopped (dropped, left, or the group layer gave up).
    #[error("the replica has stopped")]
    Closed,
    /// The group layer did not send the operation, or lost track of it
    /// ([`GroupError::Unknown`]: the daemon was lost before the operation came back; it
    /// may or may not have been applied).
    #[error("operation not sent: {0}")]
    NotSent(GroupError),
    /// Joining the group failed.
    #[error("cannot join: {0}")]
    Join(GroupError),
    /// A wait timed out (the operation may still be applied later).
    #[error("timed out")]
    Timeout,
}

/// Most replica messages handed to the group layer's queue at a time: the rest wait
/// in the machine, so that a view change can still drop stale state chunks.
const IN_FLIGHT: usize = 16;

/// Where replica messages go: the group layer, blocking or async.
pub(super) trait Sink {
    /// Messages in the group layer's send queue.
    fn queued(&self) -> usize;
    /// Queues a message; with `confirm`, the group layer reports its outcome.
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError>;
}

impl Sink for group::Group {
    fn queued(&self) -> usize {
        self.stats().queued
    }
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if confirm {
            self.send_confirmed(bytes).map(|r| r.id())
        } else {
            group::Group::send(self, bytes)
        }
    }
}

#[cfg(feature = "tokio")]
impl Sink for group::AsyncGroup {
    fn queued(&self) -> usize {
        self.stats().queued
    }
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if confirm {
            self.send_confirmed(bytes).map(|r| r.id())
        } else {
            group::AsyncGroup::send(self, bytes)
        }
    }
}

/// Resolves one ticket.
pub(super) type Resolver = Box<dyn FnOnce(Result<u64, ReplicaError>) + Send>;

/// The machine and its bookkeeping, behind the driver's lock.
pub(super) struct Inner<A, G> {
    pub(super) machine: Machine<A>,
    pub(super) group: Option<std::sync::Arc<G>>,
    pub(super) events: VecDeque<Event>,
    tickets: HashMap<u64, Resolver>,
    /// Group-layer send ids of operations, to tell a ticket when its op was not sent.
    sent_ops: HashMap<SendId, u64>,
    /// The machine asked to leave and join again.
    pub(super) rejoin: bool,
    pub(super) ended: bool,
}

impl<A: Replicated, G: Sink> Inner<A, G> {
    pub(super) fn new(machine: Machine<A>, group: G) -> Self {
        Inner {
            machine,
            group: Some(std::sync::Arc::new(group)),
            events: VecDeque::new(),
            tickets: HashMap::new(),
            sent_ops: HashMap::new(),
            rejoin: false,
            ended: false,
        }
    }

    /// Submits an operation whose outcome goes to `resolve`.
    pub(super) fn submit(&mut self, op: Vec<u8>, resolve: Resolver) -> Result<u64, ReplicaError> {
        if self.ended {
            return Err(ReplicaError::Closed);
        }
        let seq = self.machine.submit(op);
        self.tickets.insert(seq, resolve);
        self.flush();
        Ok(seq)
    }

    /// Hands the machine's sends to the group layer (up to [`IN_FLIGHT`] queued there)
    /// and its events to the application; notes a request to rejoin.
    pub(super) fn flush(&mut self) {
        while let Some(group) = self.group.clone() {
            if group.queued() >= IN_FLIGHT {
                break;
            }
            match self.machine.poll_effect() {
                None => break,
                Some(Effect::Rejoin) => self.rejoin = true,
                Some(Effect::Send(bytes)) => {
                    let op_seq = op_seq(&bytes);
                    // Operations go confirmed: the group layer then reports one whose
                    // outcome the loss of the daemon made unknown.
                    match group.send(bytes.clone(), op_seq.is_some()) {
                        Ok(id) => {
                            if let Some(seq) = op_seq {
                                self.sent_ops.insert(id, seq);
                            }
                        }
                        Err(GroupError::QueueFull { .. }) => {
                            self.machine.unpoll_send(bytes);
                            break;
                        }
                        Err(e) => {
                            if let Some(r) = op_seq.and_then(|s| self.tickets.remove(&s)) {
                                r(Err(ReplicaError::NotSent(e)));
                            }
                        }
                    }
                }
            }
        }
        while let Some(e) = self.machine.poll_event() {
            if let Event::Applied { seq, version } = e {
                if let Some(r) = self.tickets.remove(&seq) {
                    r(Ok(version));
                }
            }
            self.events.push_back(e);
        }
    }

    /// Feeds one group-layer event (`None`: only time passed) and flushes.
    pub(super) fn handle(&mut self, event: Option<group::Event>) {
        let now = Instant::now();
        match event {
            Some(group::Event::View(v)) => self.machine.handle_view(now, &v),
            Some(group::Event::Message(d)) => self.machine.handle_message(now, d.from, &d.data),
            Some(group::Event::Disconnected { .. } | group::Event::Evicted { .. }) => {
                self.machine.handle_disconnected()
            }
            Some(group::Event::NotSent { id, error }) => {
                if let Some(r) = self
                    .sent_ops
                    .remove(&id)
                    .and_then(|seq| self.tickets.remove(&seq))
                {
                    r(Err(ReplicaError::NotSent(error)));
                }
            }
            Some(group::Event::Confirmed { id, .. }) => {
                self.sent_ops.remove(&id);
            }
            Some(group::Event::Left | group::Event::Stopped(_)) => self.end(),
            _ => {}
        }
        self.machine.handle_timeout(now);
        self.flush();
    }

    /// The driver ended, however it ended (returned, panicked in the application's
    /// [`Replicated`] code, or was dropped with its runtime): ends the replica unless it
    /// has ended already, so that no ticket or waiter waits for a driver that is gone.
    /// Runs in `Drop`, maybe while unwinding: the application's code is not trusted
    /// here (a second panic would abort), so if ending panics, the tickets still fail.
    pub(super) fn end_after_driver(&mut self) {
        if self.ended {
            return;
        }
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.end()));
        if ended.is_err() {
            self.ended = true;
            for (_, r) in self.tickets.drain() {
                r(Err(ReplicaError::Closed));
            }
        }
    }

    /// The group is gone for good: no more events, every ticket fails.
    pub(super) fn end(&mut self) {
        self.machine.handle_disconnected();
        self.flush();
        self.ended = true;
        for (_, r) in self.tickets.drain() {
            r(Err(ReplicaError::Closed));
        }
    }
}
