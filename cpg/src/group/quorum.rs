//! The agreed quorum: what the group layer makes of corosync's quorum, as a
//! deterministic function of the agreed message order ([`AgreedQuorum`]), what this
//! node last heard ([`LocalQuorum`]), what a driver reports ([`QuorumInput`]), and the
//! machine's bookkeeping of it ([`Agreement`]). The rule is in the
//! [module documentation](super)'s "Quorum" section.

use std::fmt;

use crate::types::RingId;

use super::config::QuorumPolicy;

/// The quorum state every member agrees on at a position of the delivery order.
///
/// Members that deliver the same messages in the same view compute the same state at
/// every position, whichever order their node heard of the quorum and of the
/// membership in: it changes only at a view change, at a totem change (a new ring) and
/// at the delivery of a quorum marker for the current ring. Each
/// [`Delivery`](super::Delivery) carries the state at its position;
/// [`Event::Quorum`](super::Event::Quorum) reports every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgreedQuorum {
    /// Nothing to gate: the policy is [`QuorumPolicy::Ignore`], or the daemon has no
    /// quorum provider (every partition calls itself quorate; count members with
    /// [`replica::has_majority`](crate::replica::has_majority) if you must).
    Free,
    /// The view or the ring changed and no marker for the current ring has been
    /// delivered since: the quorum of this partition is not known yet. Treat it as not
    /// quorate.
    Pending,
    /// corosync's quorum provider says this partition (the ring) is quorate.
    Quorate(RingId),
    /// corosync's quorum provider says this partition (the ring) is not quorate.
    NotQuorate(RingId),
}

impl AgreedQuorum {
    /// Whether a message at this position may be acted on: [`Free`](Self::Free) or
    /// [`Quorate`](Self::Quorate). [`Pending`](Self::Pending) does not permit.
    pub fn permits(self) -> bool {
        matches!(self, AgreedQuorum::Free | AgreedQuorum::Quorate(_))
    }

    /// The ring a marker decided on, for [`Quorate`](Self::Quorate) and
    /// [`NotQuorate`](Self::NotQuorate).
    pub fn ring(self) -> Option<RingId> {
        match self {
            AgreedQuorum::Quorate(r) | AgreedQuorum::NotQuorate(r) => Some(r),
            AgreedQuorum::Free | AgreedQuorum::Pending => None,
        }
    }

    fn decided(ring: RingId, quorate: bool) -> AgreedQuorum {
        if quorate {
            AgreedQuorum::Quorate(ring)
        } else {
            AgreedQuorum::NotQuorate(ring)
        }
    }
}

impl fmt::Display for AgreedQuorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgreedQuorum::Free => f.write_str("free (no quorum provider)"),
            AgreedQuorum::Pending => f.write_str("pending"),
            AgreedQuorum::Quorate(r) => write!(f, "quorate in ring {r}"),
            AgreedQuorum::NotQuorate(r) => write!(f, "not quorate in ring {r}"),
        }
    }
}

/// What this node's daemon last said about the quorum, on this process's current
/// connection: for a fast check before a write (a write that this says would be refused
/// need not be sent). It is local knowledge: decide on a delivered message by its
/// [`Delivery::quorum`](super::Delivery::quorum), never by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalQuorum {
    /// Nothing to gate: the policy is [`QuorumPolicy::Ignore`], or the daemon has no
    /// quorum provider.
    Free,
    /// Not known on this connection yet (connecting, reconnecting, or no notification
    /// has come).
    Unknown,
    /// The latest quorum notification.
    Known {
        /// Whether this node's partition is quorate.
        quorate: bool,
        /// The ring the notification was for (it may be older than the current ring:
        /// corosync does not notify every ring).
        ring: RingId,
    },
}

impl LocalQuorum {
    /// Whether the local daemon's latest word lets this node act:
    /// [`Free`](Self::Free), or [`Known`](Self::Known) and quorate.
    pub fn permits(self) -> bool {
        matches!(
            self,
            LocalQuorum::Free | LocalQuorum::Known { quorate: true, .. }
        )
    }
}

/// What a driver's quorum connection reports to
/// [`Machine::handle_quorum`](super::Machine::handle_quorum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuorumInput<'a> {
    /// The connection to the quorum service, made with the CPG connection that
    /// [`Machine::handle_connected`](super::Machine::handle_connected) reported, says
    /// whether the daemon has a quorum provider (`quorum_type`). Report it right after
    /// `handle_connected`, before any event of the new connection.
    Connected {
        /// Whether a quorum provider decides quorum (`QUORUM_SET`).
        provider: bool,
    },
    /// A quorum notification (libquorum's v1 model: `quorate`, the ring id, the nodes
    /// the provider counts).
    Notification {
        /// Whether this node's partition is quorate.
        quorate: bool,
        /// The ring the decision is for.
        ring: RingId,
        /// The node ids of the ring.
        members: &'a [u32],
    },
}

/// The latest notification of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Latest {
    quorate: bool,
    ring: RingId,
    /// Sorted.
    members: Vec<u32>,
}

/// The machine's quorum bookkeeping: the agreed state of the current view, the latest
/// notification of the current connection, and which marker this member announced.
#[derive(Debug)]
pub(super) struct Agreement {
    policy: QuorumPolicy,
    /// Whether the current connection's daemon has a provider; `None` until the driver
    /// says (then the state is never [`AgreedQuorum::Free`]).
    provider: Option<bool>,
    latest: Option<Latest>,
    agreed: AgreedQuorum,
    /// The last (ring, quorate) this member handed out as a marker in the current
    /// view, if any.
    announced: Option<(RingId, bool)>,
}

impl Agreement {
    pub(super) fn new(policy: QuorumPolicy) -> Agreement {
        let mut a = Agreement {
            policy,
            provider: None,
            latest: None,
            agreed: AgreedQuorum::Pending,
            announced: None,
        };
        a.agreed = a.initial();
        a
    }

    /// Nothing to agree on: the policy ignores corosync's quorum, or the daemon has no
    /// provider.
    pub(super) fn is_free(&self) -> bool {
        self.policy == QuorumPolicy::Ignore || self.provider == Some(false)
    }

    fn initial(&self) -> AgreedQuorum {
        if self.is_free() {
            AgreedQuorum::Free
        } else {
            AgreedQuorum::Pending
        }
    }

    pub(super) fn agreed(&self) -> AgreedQuorum {
        self.agreed
    }

    pub(super) fn local(&self) -> LocalQuorum {
        match &self.latest {
            _ if self.is_free() => LocalQuorum::Free,
            None => LocalQuorum::Unknown,
            Some(l) => LocalQuorum::Known {
                quorate: l.quorate,
                ring: l.ring,
            },
        }
    }

    /// A new connection: what the old one knew is gone.
    pub(super) fn new_connection(&mut self) {
        self.provider = None;
        self.latest = None;
        self.announced = None;
        self.agreed = self.initial();
    }

    /// What the driver's quorum connection reported. Returns the new agreed state if
    /// it changed (a provider that turns out to be missing frees it).
    pub(super) fn input(&mut self, input: QuorumInput<'_>) -> Option<AgreedQuorum> {
        if self.policy == QuorumPolicy::Ignore {
            return None;
        }
        match input {
            QuorumInput::Connected { provider } => {
                self.provider = Some(provider);
                let free = !provider && self.agreed != AgreedQuorum::Free;
                free.then(|| {
                    self.agreed = AgreedQuorum::Free;
                    self.agreed
                })
            }
            QuorumInput::Notification {
                quorate,
                ring,
                members,
            } => {
                let mut members = members.to_vec();
                members.sort_unstable();
                members.dedup();
                // News: what this member announced before no longer covers what it
                // knows (it may have to announce the same pair again, after another
                // member's marker said otherwise).
                if self.latest.as_ref().map(|l| (l.ring, l.quorate)) != Some((ring, quorate)) {
                    self.announced = None;
                }
                self.latest = Some(Latest {
                    quorate,
                    ring,
                    members,
                });
                None
            }
        }
    }

    /// A view or a ring change: the state goes back to pending (unless free), and this
    /// member has announced nothing in it yet. Returns the new state.
    pub(super) fn reset(&mut self) -> AgreedQuorum {
        self.announced = None;
        self.agreed = self.initial();
        self.agreed
    }

    /// A delivered marker for `ring`, in the receiver's `current` ring. Returns the new
    /// state if it changed; a marker of another ring is stale and changes nothing.
    pub(super) fn marker(
        &mut self,
        ring: RingId,
        quorate: bool,
        current: Option<RingId>,
    ) -> Option<AgreedQuorum> {
        if self.is_free() || current != Some(ring) {
            return None;
        }
        let state = AgreedQuorum::decided(ring, quorate);
        (state != self.agreed).then(|| {
            self.agreed = state;
            state
        })
    }

    /// The marker this member should send now, in its `current` ring whose nodes are
    /// `nodes` (sorted), if any: when it knows the local quorum for that ring, the
    /// agreed state says otherwise, and it has not announced that already in this view.
    ///
    /// It knows the quorum for the ring when the latest notification is for it, or when
    /// the latest notification is for an older ring with the same nodes (corosync does
    /// not notify a ring whose nodes and quorum equal the previous ring's; a later
    /// notification for the ring overrides with a new marker).
    pub(super) fn due(&self, current: RingId, nodes: &[u32]) -> Option<(RingId, bool)> {
        if self.is_free() || self.provider != Some(true) {
            return None;
        }
        let latest = self.latest.as_ref()?;
        let for_current = same_ring(latest.ring, current)
            || (latest.ring.seq < current.seq && latest.members == nodes);
        if !for_current {
            return None;
        }
        let pair = (current, latest.quorate);
        if self.announced == Some(pair) || self.agreed == AgreedQuorum::decided(current, pair.1) {
            return None;
        }
        Some(pair)
    }

    /// The marker `pair` was handed to the driver.
    pub(super) fn announce(&mut self, pair: (RingId, bool)) {
        self.announced = Some(pair);
    }

    /// The marker `pair` was not sent after all (back-pressure): it may be due again.
    pub(super) fn unannounce(&mut self, pair: (RingId, bool)) {
        if self.announced == Some(pair) {
            self.announced = None;
        }
    }
}

/// Whether a quorum notification's `ring` is CPG's `cpg` ring: the same id, or, from
/// libquorum's older model that carries no representative (node id 0), the same
/// sequence number.
fn same_ring(ring: RingId, cpg: RingId) -> bool {
    ring == cpg || (ring.nodeid == 0 && ring.seq == cpg.seq)
}
