//! What the replica layer logs through `tracing` (feature `tracing`, target
//! `cpg::replica`): the machine's events as the drivers hand them to the application,
//! in the replica's span. Applied operations, changes and barriers (the per-operation
//! path) log nothing.
//!
//! | level | what |
//! |---|---|
//! | info | a round ended (with the state transfer's size and the round's duration), this member's state replaced (catch-up or the losing side of a merge) |
//! | warn | a failed round, a member of a newer protocol refused, a malformed message (at most [`BURST`] per [`INTERVAL`], then one summary with the count suppressed) |
//! | error | own operations discarded by a merge, members that diverged, giving up on a view |
//! | debug | a round starts (a view), a verification passed, the view applied to the state |

use std::time::Instant;

use tracing::Span;

use crate::name::GroupName;
use crate::trace::{in_span, record_node, replica_span, RateLimit, BURST, INTERVAL};

use super::app::Replicated;
use super::event::Event;
use super::machine::Machine;

/// The replica's span, and what the logging remembers between events.
#[derive(Debug)]
pub(super) struct Log {
    span: Span,
    malformed: RateLimit,
    /// When the current view's round started, and the state bytes received by then.
    round: Option<(Instant, u64)>,
    /// The node id recorded in the span.
    node: Option<u32>,
}

impl Log {
    /// The logging of a replica of `name`.
    pub(super) fn new(name: &GroupName) -> Self {
        Log {
            span: replica_span(name),
            malformed: RateLimit::new(BURST, INTERVAL),
            round: None,
            node: None,
        }
    }

    /// The replica's span, for the driver's thread or task.
    pub(super) fn span(&self) -> Span {
        self.span.clone()
    }

    /// An event of the machine, as it is handed to the application.
    pub(super) fn event<A: Replicated>(&mut self, event: &Event, machine: &Machine<A>) {
        if matches!(
            event,
            Event::Applied { .. } | Event::Changed { .. } | Event::Barrier { .. }
        ) {
            // The per-operation path: nothing above trace.
            return;
        }
        let now = Instant::now();
        let received = machine.stats().bytes_received;
        if let Event::View(v) = event {
            self.round = Some((now, received));
            if let Some(n) = v.me().map(|m| m.nodeid).filter(|&n| self.node != Some(n)) {
                record_node(&self.span, n);
                self.node = Some(n);
            }
        }
        let (started, received_before) = self.round.unwrap_or((now, received));
        let Log {
            span, malformed, ..
        } = self;
        in_span(span, || match event {
            Event::View(v) => tracing::debug!(
                target: "cpg::replica",
                view = %v.id(),
                members = v.len(),
                "round starts: bringing the view's members to one state"
            ),
            Event::Synced {
                round,
                source,
                summary,
                transferred,
            } => {
                let elapsed_ms = now.saturating_duration_since(started).as_millis() as u64;
                let own = machine.view().and_then(|v| v.me()) == Some(*source);
                let what = match (transferred, own) {
                    (false, _) => "in sync: every member held the same state",
                    (true, true) => "in sync: this member's state was sent to the others",
                    (true, false) => "in sync: state transferred",
                };
                tracing::info!(
                    target: "cpg::replica",
                    %round,
                    %source,
                    version = summary.version,
                    digest = summary.digest,
                    transferred,
                    bytes = received.saturating_sub(received_before),
                    elapsed_ms,
                    "{what}"
                );
            }
            Event::Restored {
                round,
                source,
                previous,
                current,
                discarded,
            } => {
                tracing::info!(
                    target: "cpg::replica",
                    %round,
                    %source,
                    %previous,
                    %current,
                    discarded = discarded.len(),
                    "state replaced by {source}'s (catch-up, or the losing side of a merge)"
                );
                if !discarded.is_empty() {
                    tracing::error!(
                        target: "cpg::replica",
                        %round,
                        %source,
                        discarded = discarded.len(),
                        first_seq = discarded[0].seq,
                        "own operations discarded: the state taken does not hold them"
                    );
                }
            }
            Event::ViewApplied {
                round,
                members,
                version,
            } => tracing::debug!(
                target: "cpg::replica",
                %round,
                members = members.len(),
                version,
                "view applied to the state"
            ),
            Event::Verified { check, summary } => {
                tracing::debug!(target: "cpg::replica", check, %summary, "verified: all members agree")
            }
            Event::Diverged { check, summaries } => tracing::error!(
                target: "cpg::replica",
                check,
                ?summaries,
                "diverged: members hold different states at the same point; a new round follows"
            ),
            Event::RoundFailed { attempt, why } => {
                tracing::warn!(target: "cpg::replica", attempt, ?why, "round failed; trying again")
            }
            Event::GaveUp { attempts } => tracing::error!(
                target: "cpg::replica",
                attempts,
                "gave up on this view after {attempts} rounds; joining again"
            ),
            Event::Refused { from, version } => tracing::warn!(
                target: "cpg::replica",
                %from,
                version,
                "refused a member of a newer protocol version"
            ),
            Event::Malformed { from, len } => {
                let admit = malformed.admit(now);
                if let Some(suppressed) = admit.suppressed {
                    suppressed_summary(suppressed);
                }
                if admit.log {
                    tracing::warn!(target: "cpg::replica", %from, len, "malformed replica message");
                }
            }
            _ => {}
        });
    }

    /// Whenever events are handed out: the rate limit's summary, when it is due.
    pub(super) fn tick(&mut self) {
        if !self.malformed.owes() {
            return;
        }
        if let Some(suppressed) = self.malformed.due(Instant::now()) {
            in_span(&self.span, || suppressed_summary(suppressed));
        }
    }
}

/// The summary of a rate limit's interval.
fn suppressed_summary(suppressed: u64) {
    tracing::warn!(
        target: "cpg::replica",
        suppressed,
        "malformed replica messages: {suppressed} more not logged in the last {}s",
        INTERVAL.as_secs()
    );
}
