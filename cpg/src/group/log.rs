//! What the group layer logs through `tracing` (feature `tracing`, target
//! `cpg::group`): the machine's events as the drivers route them, the outcome of each
//! send (summarized back-pressure), connection attempts and the local quorum, in the
//! group's span. Messages and confirmations, the deliver path, log nothing.
//!
//! | level | what |
//! |---|---|
//! | info | a view, reconnected, the agreed quorum changed (at most [`BURST`] per [`INTERVAL`], then one summary with the count suppressed), the own leave |
//! | warn | daemon lost, evicted, stopped after an eviction, a malformed message (at most [`BURST`] per [`INTERVAL`], then one summary with the count suppressed) |
//! | error | gave up reconnecting, stopped on a failure |
//! | debug | settled (a view's ring), back-pressure (one summary per second while sends are refused), a failed reconnect attempt, the local daemon's quorum |

use std::time::Instant;

use tracing::Span;

use crate::error::Error;
use crate::name::GroupName;
use crate::trace::{
    group_span, in_span, record_node, Pauses, RateLimit, BURST, INTERVAL, PAUSE_SUMMARY,
};

use super::event::{Event, StopReason};

/// The group's span, and what the logging remembers between events.
#[derive(Debug)]
pub(super) struct Log {
    span: Span,
    malformed: RateLimit,
    /// Agreed-quorum changes: a peer's markers can flip the agreed state as often as it
    /// sends them, so their lines are limited like malformed messages.
    quorum: RateLimit,
    pauses: Pauses,
    /// The node id recorded in the span.
    node: Option<u32>,
}

impl Log {
    /// The logging of a member of `name`.
    pub(super) fn new(name: &GroupName) -> Self {
        Log {
            span: group_span(name),
            malformed: RateLimit::new(BURST, INTERVAL),
            quorum: RateLimit::new(BURST, INTERVAL),
            pauses: Pauses::new(PAUSE_SUMMARY),
            node: None,
        }
    }

    /// The group's span, for the driver's thread or task.
    pub(super) fn span(&self) -> Span {
        self.span.clone()
    }

    /// An event of the machine, as it is routed to the application.
    pub(super) fn event(&mut self, event: &Event) {
        if matches!(
            event,
            Event::Message(_) | Event::Confirmed { .. } | Event::NotSent { .. }
        ) {
            // The deliver path (and each message's outcome): nothing above trace.
            return;
        }
        let Log {
            span,
            malformed,
            quorum,
            ..
        } = self;
        in_span(span, || match event {
            Event::View(v) => tracing::info!(
                target: "cpg::group",
                view = %v.id(),
                members = v.len(),
                leader = v.is_leader(),
                joined = v.joined().len(),
                left = v.left().len(),
                "installed {v}"
            ),
            Event::Settled { view, ring } => {
                tracing::debug!(target: "cpg::group", %view, %ring, "view settled in its ring")
            }
            Event::Quorum { view, state, index } => {
                let admit = quorum.admit(Instant::now());
                if let Some(suppressed) = admit.suppressed {
                    quorum_summary(suppressed);
                }
                if admit.log {
                    tracing::info!(
                        target: "cpg::group",
                        %view,
                        index,
                        quorate = state.permits(),
                        "agreed quorum: {state}"
                    );
                }
            }
            Event::Evicted { view } => tracing::warn!(
                target: "cpg::group",
                view = %view.id(),
                "evicted: the daemon reports this process gone in {view}"
            ),
            Event::Disconnected { error } => {
                tracing::warn!(target: "cpg::group", %error, "daemon lost; reconnecting")
            }
            Event::Reconnected { incarnation, view } => tracing::info!(
                target: "cpg::group",
                incarnation,
                view = %view.id(),
                members = view.len(),
                "reconnected: {view}"
            ),
            Event::Left => tracing::info!(target: "cpg::group", "left the group"),
            Event::Stopped(StopReason::Evicted) => {
                tracing::warn!(target: "cpg::group", "stopped: evicted, and told not to rejoin")
            }
            Event::Stopped(StopReason::GaveUp(error)) => tracing::error!(
                target: "cpg::group",
                %error,
                "stopped: gave up reconnecting"
            ),
            Event::Stopped(StopReason::Failed(error)) => {
                tracing::error!(target: "cpg::group", %error, "stopped: failed")
            }
            Event::Malformed { from, len } => {
                let admit = malformed.admit(Instant::now());
                if let Some(suppressed) = admit.suppressed {
                    suppressed_summary(suppressed);
                }
                if admit.log {
                    tracing::warn!(
                        target: "cpg::group",
                        %from,
                        len,
                        "malformed message: not of this layer (or of an unknown version)"
                    );
                }
            }
            _ => {}
        });
        if let Event::View(v) | Event::Reconnected { view: v, .. } = event {
            self.record_node(v.me().map(|m| m.nodeid));
        }
    }

    /// Whenever events are routed: the summaries that are due.
    pub(super) fn tick(&mut self) {
        if !self.malformed.owes() && !self.quorum.owes() && !self.pauses.open() {
            return;
        }
        let now = Instant::now();
        let suppressed = self.malformed.due(now);
        let quorum = self.quorum.due(now);
        let pauses = self.pauses.due(now);
        in_span(&self.span, || {
            if let Some(suppressed) = suppressed {
                suppressed_summary(suppressed);
            }
            if let Some(suppressed) = quorum {
                quorum_summary(suppressed);
            }
            if let Some(p) = pauses {
                tracing::debug!(
                    target: "cpg::group",
                    pauses = p.pauses,
                    refused = p.refused,
                    total_ms = p.total.as_millis() as u64,
                    longest_ms = p.longest.as_millis() as u64,
                    ongoing_ms = p.ongoing.as_millis() as u64,
                    "back-pressure: sends waited for the daemon"
                );
            }
        });
    }

    /// The outcome of one send: a refusal for back-pressure pauses the queue. Reads
    /// the clock only in and at the end of a pause.
    pub(super) fn sent(&mut self, result: &Result<(), Error>) {
        match result {
            Err(e) if e.is_retryable() => self.pauses.refused(Instant::now()),
            _ if self.pauses.paused() => self.pauses.resumed(Instant::now()),
            _ => {}
        }
    }

    /// The outcome of a connection attempt (the local node id, or why not).
    pub(super) fn connected(&mut self, result: &Result<u32, Error>) {
        match result {
            Ok(nodeid) => self.record_node(Some(*nodeid)),
            Err(error) => in_span(
                &self.span,
                || tracing::debug!(target: "cpg::group", %error, "connection attempt failed"),
            ),
        }
    }

    /// A quorum notification of the local daemon.
    #[cfg(feature = "quorum")]
    pub(super) fn local_quorum(&self, quorate: bool, ring: crate::types::RingId, nodes: usize) {
        in_span(
            &self.span,
            || tracing::debug!(target: "cpg::group", quorate, %ring, nodes, "local quorum notification"),
        );
    }

    fn record_node(&mut self, nodeid: Option<u32>) {
        if let Some(n) = nodeid.filter(|&n| self.node != Some(n)) {
            record_node(&self.span, n);
            self.node = Some(n);
        }
    }
}

/// The summary of the agreed-quorum limit's interval.
fn quorum_summary(suppressed: u64) {
    tracing::info!(
        target: "cpg::group",
        suppressed,
        "agreed quorum: {suppressed} more changes not logged in the last {}s",
        INTERVAL.as_secs()
    );
}

/// The summary of a rate limit's interval.
fn suppressed_summary(suppressed: u64) {
    tracing::warn!(
        target: "cpg::group",
        suppressed,
        "malformed messages: {suppressed} more not logged in the last {}s",
        INTERVAL.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tracing::field::{Field, Visit};
    use tracing::{Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;
    use crate::group::config::{Config, OnEviction, QuorumPolicy};
    use crate::group::machine::Machine;
    use crate::group::AgreedQuorum;
    use crate::types::{Member, Reason};

    /// (level, message, the fields as `name=value`) of every event.
    type Records = Arc<Mutex<Vec<(Level, String, Vec<String>)>>>;

    struct Capture(Records);

    struct Fields<'a>(&'a mut String, &'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                *self.0 = format!("{value:?}");
            } else {
                self.1.push(format!("{}={value:?}", field.name()));
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let (mut message, mut fields) = (String::new(), Vec::new());
            event.record(&mut Fields(&mut message, &mut fields));
            let level = *event.metadata().level();
            self.0.lock().unwrap().push((level, message, fields));
        }
    }

    /// An eviction as the machine reports it (listed as left without leaving, with
    /// `OnEviction::Stop`): the events routed through the log, captured.
    #[test]
    fn an_eviction_is_a_warning_with_the_view_and_the_stop_follows() {
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&records)));
        tracing::subscriber::with_default(subscriber, || {
            let me = Member { nodeid: 1, pid: 10 };
            let config = Config {
                quorum: QuorumPolicy::Ignore,
                on_eviction: OnEviction::Stop,
                ..Config::default()
            };
            let now = Instant::now();
            let mut machine = Machine::new(config, me.pid, 1);
            let mut log = Log::new(&GroupName::new("evict").unwrap());
            machine.start(now);
            machine.handle_connected(now, Ok(me.nodeid));
            machine.handle_confchg(now, &[me], &[], &[(me, Reason::Join)]);
            machine.send(b"queued".to_vec(), true).unwrap();
            machine.handle_confchg(now, &[me], &[(me, Reason::ProcDown)], &[]);
            while let Some(event) = machine.poll_event() {
                log.event(&event);
            }
        });
        let records = records.lock().unwrap();
        let levels: Vec<(Level, &str)> = records
            .iter()
            .map(|(l, m, _)| (*l, m.split([':', '[']).next().unwrap()))
            .collect();
        assert_eq!(
            levels,
            [
                (Level::INFO, "installed view 1.1 "),
                (Level::WARN, "evicted"),
                (Level::WARN, "stopped"),
            ],
            "the message that was not sent logs nothing: {records:?}"
        );
        assert!(
            records[1].2.contains(&"view=1.2".to_string()),
            "{records:?}"
        );
    }
    /// A peer flipping the agreed quorum with its markers: at most `BURST` lines per
    /// interval, however many changes.
    #[test]
    fn agreed_quorum_changes_are_rate_limited() {
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&records)));
        tracing::subscriber::with_default(subscriber, || {
            let mut log = Log::new(&GroupName::new("flips").unwrap());
            let view = crate::group::ViewId {
                incarnation: 1,
                counter: 1,
            };
            let ring = crate::types::RingId { nodeid: 1, seq: 4 };
            for index in 0..1000u64 {
                let state = if index % 2 == 0 {
                    AgreedQuorum::Quorate(ring)
                } else {
                    AgreedQuorum::NotQuorate(ring)
                };
                log.event(&Event::Quorum { view, state, index });
            }
        });
        let records = records.lock().unwrap();
        assert_eq!(records.len(), BURST as usize, "{records:?}");
        assert!(records
            .iter()
            .all(|(l, m, _)| *l == Level::INFO && m.starts_with("agreed quorum: ")));
    }
}
