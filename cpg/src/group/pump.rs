//! The pump: the part of a group driver's loop that carries out the machine's effects
//! on the driver's connection ([`Pump`]), a batch at a time ([`Pace`]), until one
//! needs the driver ([`Pumped`]).

use std::time::Instant;

use crate::connection::ConnectionRef;
use crate::error::{Error, Operation};
use crate::trace::traced;

use super::event::Effect;
use super::quorum::QuorumInput;
use super::shared::{lost, Shared, Side};

/// A connection the pump sends on: each driver's CPG handle ([`crate::Handle`],
/// [`crate::AsyncHandle`]), with its quorum handle when the policy reads quorum.
pub(super) trait Connection {
    /// The CPG handle's synchronous calls.
    fn connection(&self) -> &ConnectionRef;

    /// Whether the daemon has a quorum provider, as the quorum handle made with this
    /// connection said; `None` when the policy does not read quorum.
    fn quorum_provider(&self) -> Option<bool>;
}

/// How many sends the pump makes in a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Sends before the pump returns [`Pumped::Busy`], so that the driver reads events
    /// (or yields) in between.
    pub(super) batch: usize,
    /// Sends between two routings of the machine's events (confirmations) meanwhile.
    pub(super) route_every: usize,
}

/// Where [`Pump::next`] stopped.
#[derive(Debug)]
pub(super) enum Pumped {
    /// Connect and report it with [`Pump::connected`] (the old connection is closed).
    Connect,
    /// Leave the group and report it with [`Pump::left`].
    Leave,
    /// A batch of sends went out: read events (or yield), then pump again.
    Busy,
    /// Nothing to do until an event, a client's poke, or this time.
    Idle(Option<Instant>),
    /// The machine ended, or the group was dropped: end the loop, then
    /// [`Finish`](super::shared::Finish).
    Stop,
}

/// The driver's side of the machine: its connection, and the effects it carries out.
pub(super) struct Pump<C> {
    /// The connection, while there is one.
    pub(super) conn: Option<C>,
    /// The encoded message of the current [`Effect::Send`].
    buf: Vec<u8>,
    /// Sends in the current batch.
    sends: usize,
    /// No connection has been made yet.
    first: bool,
    pace: Pace,
}

impl<C: Connection> Pump<C> {
    /// Starts the machine (its first effect is [`Effect::Connect`]).
    pub(super) fn start<S: Side>(shared: &Shared<S>, pace: Pace) -> Self {
        shared.lock().machine.start(Instant::now());
        Pump {
            conn: None,
            buf: Vec::new(),
            sends: 0,
            first: true,
            pace,
        }
    }

    /// Carries out the machine's effects (sends, closes) until one needs the driver,
    /// the batch is full, or nothing is left; routes the events on the way.
    pub(super) fn next<S: Side>(&mut self, shared: &Shared<S>) -> Pumped {
        loop {
            // Held from the choice of the effect until a send's result is recorded: a
            // stop (the group's drop) waits for that, and no send starts after it.
            let sending = shared.sending.lock();
            if shared.stopping() {
                drop(sending);
                return self.settle(shared, false);
            }
            let now = Instant::now();
            let effect = {
                let mut core = shared.lock();
                core.machine.handle_timeout(now);
                core.machine.poll_effect(now, &mut self.buf)
            };
            match effect {
                None => {
                    drop(sending);
                    return self.settle(shared, false);
                }
                Some(Effect::Connect) => {
                    self.conn = None;
                    return Pumped::Connect;
                }
                Some(Effect::Leave) => return Pumped::Leave,
                Some(Effect::Close) => self.conn = None,
                Some(Effect::Send(_) | Effect::SendBatch { .. } | Effect::SendControl) => {
                    let result = match &self.conn {
                        Some(c) => c.connection().send(&self.buf),
                        None => Err(lost(Operation::Send)),
                    };
                    self.sends += 1;
                    let mut core = shared.lock();
                    traced!(core.log.sent(&result));
                    core.machine.handle_send_result(Instant::now(), result);
                    drop(sending);
                    // Receipts resolve and wakers run outside the gate: their code may
                    // drop the group, whose stop takes it.
                    let wake =
                        (self.sends % self.pace.route_every == 0).then(|| shared.routed(&mut core));
                    drop(core);
                    if let Some(wake) = wake {
                        S::wake(wake);
                    }
                    if self.sends >= self.pace.batch {
                        return self.settle(shared, true);
                    }
                }
            }
        }
    }

    /// The end of a batch: routes, then says whether to go on.
    fn settle<S: Side>(&mut self, shared: &Shared<S>, busy: bool) -> Pumped {
        self.sends = 0;
        shared.route();
        let core = shared.lock();
        if core.machine.is_ended() || shared.stopping() {
            Pumped::Stop
        } else if busy {
            Pumped::Busy
        } else {
            Pumped::Idle(core.machine.poll_timeout())
        }
    }

    /// Reports a connection attempt (a connection and the local node id). `false` if
    /// it was the first and it failed: the driver then ends, and `start` returns the
    /// error.
    pub(super) fn connected<S: Side>(
        &mut self,
        shared: &Shared<S>,
        result: Result<(C, u32), Error>,
    ) -> bool {
        let mut provider = None;
        let result = result.map(|(conn, nodeid)| {
            provider = conn.quorum_provider();
            self.conn = Some(conn);
            nodeid
        });
        if std::mem::take(&mut self.first) {
            // The first connection decides what `start` returns.
            shared.started(result.as_ref().map(drop).map_err(Error::clone));
            if result.is_err() {
                return false;
            }
        }
        let mut core = shared.lock();
        traced!(core.log.connected(&result));
        core.machine.handle_connected(Instant::now(), result);
        if let Some(provider) = provider {
            // Under the same lock: before any event of the new connection.
            core.machine
                .handle_quorum(Instant::now(), QuorumInput::Connected { provider });
        }
        true
    }

    /// Reports the outcome of a leave.
    pub(super) fn left<S: Side>(&mut self, shared: &Shared<S>, result: Result<(), Error>) {
        shared
            .lock()
            .machine
            .handle_leave_result(Instant::now(), result);
    }
}
