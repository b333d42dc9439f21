//! The checker: reads every client's history and decides whether CPG kept its
//! guarantees. Pure logic, no I/O: unit-tested here, and `nemesis --self-test` runs
//! it on histories with planted defects.
//!
//! # Definitions
//!
//! A *message* is identified by the incarnation its payload names and its sequence
//! number. A *view* is a group membership change as one client installed it: the
//! sorted member list, plus the totem ring the client had seen last before it (its
//! *ring before*). Only the member list of a change is agreed between nodes; the
//! joined and left lists can differ, so they are recorded but never compared.
//!
//! A *transition* of a client is a pair of consecutive views V1 → V2 in its
//! history; its key is (V1's member list, V2's member list, V2's ring before). V1 is
//! compared by member list only: after a merge, the clients of the two sides install
//! the same merged view with different rings before it (each side's old ring), yet
//! they move on from it together.
//!
//! The checks:
//!
//! - **integrity**: every delivered payload decodes and its checksum matches; the
//!   (node id, pid) CPG names is the incarnation the payload names; that incarnation
//!   recorded the intent to send this sequence number with exactly these bytes.
//! - **duplicate**: no receiver delivers a message twice.
//! - **fifo**: from one sender, a receiver delivers increasing sequence numbers, and
//!   within one of its views without gaps (a gap across a view change can be a
//!   partition: the missing messages went to the other side).
//! - **agreed order**: any two clients deliver the messages both delivered in the
//!   same relative order.
//! - **virtual synchrony**: clients with the same transition (they moved together
//!   from V1 to V2) delivered the same set of messages in V1.
//! - **self-delivery**: a message whose send returned Ok reaches its sender; for a
//!   sender that was killed or lost its daemon, every such message older than the
//!   last of its own messages it delivered.
//! - **view agreement**: two clients in the same V1 whose next views (with the same
//!   ring before) contain each other installed the same member list.
//! - **liveness**: the clients that finished (closed cleanly) all ended in one view
//!   whose members are exactly them, and each delivered the final message of every
//!   member of it.
//! - **binding**: no callback after close; no record after the close; the events a
//!   blocking client's callbacks saw equal what `dispatch` reported; `close` freed
//!   the callbacks; and the clients that finished delivered the same set of messages
//!   in their final view (no event lost between the daemon and the application).
//!
//! Two kinds of virtual-synchrony difference are the daemons', not the binding's, and
//! are reported as *anomalies* with their evidence (counted only under `--strict`):
//! differences across totem rings that were never announced to the clients
//! ([`Check::UnannouncedMembership`]), and messages of a node that failed which the
//! clients of one surviving node delivered and those of another never did, although
//! both moved on together ([`Check::LostInRecovery`]: corosync's ring recovery lost
//! them; see this package's README, "What the runs showed about corosync"). Both are
//! recognised only when the difference is the same at every client of a node (a
//! daemon serves all its clients alike; a binding that lost a message would lose it
//! at one client).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::history::{History, Member, Record};

/// A kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// Content and sender of delivered messages.
    Integrity,
    /// A message delivered twice to one receiver.
    Duplicate,
    /// Per-sender order and gaps.
    Fifo,
    /// Relative order of common messages.
    AgreedOrder,
    /// Same messages between the same two views.
    VirtualSynchrony,
    /// A sender's own messages.
    SelfDelivery,
    /// Member lists of the same view.
    ViewAgreement,
    /// One final view with every live client.
    Liveness,
    /// The binding's own guarantees.
    Binding,
    /// A virtual-synchrony difference across totem rings that corosync never
    /// announced to the clients (neither as a totem change nor as a view): a daemon
    /// behaviour, documented in this package's README ("What the runs showed about
    /// corosync").
    UnannouncedMembership,
    /// Group layer: a confirmation resolved more than once, or at a position where
    /// its sender did not deliver it.
    Confirmation,
    /// Group layer: two clients that installed the same view delivered different
    /// messages at the same index.
    AgreedPosition,
    /// Group layer: two clients with the same member list named different leaders.
    LeaderAgreement,
    /// Replica layer: the replicas that finished did not end with one state.
    Convergence,
    /// Replica layer: an operation was applied twice or out of its origin's order, or
    /// an operation confirmed to its origin (and not reported discarded) is missing
    /// from the final history.
    AppliedOnce,
    /// Replica layer: members that learned the same view change (the same round)
    /// learned it at different versions of the history, or with different members.
    ReplicaView,
    /// Replica layer: two records of one operation's outcome (its submitter's ticket,
    /// other members' `apply` on the agreed state) differ, or members applied it at
    /// different quorum epochs.
    ResultAgreement,
    /// Replica layer: an operation was applied where the quorum the replica's view
    /// agreed on did not permit writes (not quorate, or pending after a change).
    QuorumGate,
    /// A virtual-synchrony difference in which the clients of one node delivered
    /// messages of a node that failed in the transition and the clients of another
    /// node, moving on with them, never did: corosync's ring recovery could not give
    /// the second node messages the first had already delivered (a daemon behaviour,
    /// documented in this package's README, "messages lost in corosync's recovery").
    LostInRecovery,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Integrity => "integrity",
            Check::Duplicate => "duplicate",
            Check::Fifo => "fifo",
            Check::AgreedOrder => "agreed-order",
            Check::VirtualSynchrony => "virtual-synchrony",
            Check::SelfDelivery => "self-delivery",
            Check::ViewAgreement => "view-agreement",
            Check::Liveness => "liveness",
            Check::Binding => "binding",
            Check::UnannouncedMembership => "unannounced-membership",
            Check::Confirmation => "confirmation",
            Check::AgreedPosition => "agreed-position",
            Check::LeaderAgreement => "leader-agreement",
            Check::Convergence => "convergence",
            Check::AppliedOnce => "applied-once",
            Check::ReplicaView => "replica-view",
            Check::ResultAgreement => "result-agreement",
            Check::QuorumGate => "quorum-gate",
            Check::LostInRecovery => "lost-in-recovery",
        })
    }
}

/// One violation and its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which check failed.
    pub check: Check,
    /// What happened, naming the histories, messages and views involved.
    pub evidence: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.evidence)
    }
}

/// What the checker looked at and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Distinct messages sent with Ok or delivered.
    pub messages: usize,
    /// Deliveries checked (all receivers).
    pub deliveries: usize,
    /// View installations checked (all clients).
    pub views: usize,
    /// Client incarnations.
    pub clients: usize,
    /// Pairs of clients whose messages in a view were compared because they moved
    /// together to the same next view (virtual synchrony).
    pub transitions: usize,
    /// Everything that failed.
    pub violations: Vec<Violation>,
    /// What was left unchecked, and why.
    pub notes: Vec<String>,
    /// Virtual-synchrony differences that corosync's unannounced membership changes
    /// explain (see [`Check::UnannouncedMembership`]): reported with their evidence,
    /// and counted as violations only under `--strict`.
    pub anomalies: Vec<Violation>,
    /// The [`Check::LostInRecovery`] anomalies of the plain clients, for the group
    /// checks to recognise the same loss in their group.
    pub recovery_losses: Vec<RecoveryLoss>,
    /// The [`Check::UnannouncedMembership`] anomalies of the plain clients, for the
    /// group checks to recognise the same split in their group.
    pub unannounced_splits: Vec<UnannouncedSplit>,
}

/// Two nodes whose plain clients moved on together from a view in which, after rings
/// nobody was told about, each delivered messages the other never did (see
/// [`Check::UnannouncedMembership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnannouncedSplit {
    /// The last totem ring the clients were told about before the next view.
    pub ring: Option<(u32, u64)>,
    /// The two nodes, lower node id first.
    pub nodes: (u32, u32),
    /// When their clients installed the next view (earliest, latest; ms): what ties a
    /// replica client's transition to this split (replica histories name no ring).
    pub next_t: (u64, u64),
}

/// Messages of failed nodes that one surviving node's clients delivered in a view and
/// another surviving node's never did, though both moved on to the same next view (see
/// [`Check::LostInRecovery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryLoss {
    /// The totem ring of the view the messages belong to (the ring the clients saw
    /// last before the next view).
    pub ring: Option<(u32, u64)>,
    /// The node whose clients never delivered them.
    pub missing_on: u32,
    /// The node whose clients delivered them.
    pub delivered_on: u32,
    /// The nodes of their senders (none of them in the next view).
    pub senders: Vec<u32>,
    /// When the clients of `missing_on` installed the next view (earliest, latest; ms):
    /// what ties a replica client's transition to this loss (replica histories name no
    /// ring).
    pub next_t: (u64, u64),
}

type Ring = Option<(u32, u64)>;

/// A view as one client installed it, with what it delivered in it.
struct View {
    members: Vec<Member>,
    ring_before: Ring,
    /// When the client got the totem change of `ring_before`.
    ring_before_t: u64,
    /// The first totem ring the client got after installing this view.
    ring_after: Ring,
    /// Message ids delivered while this was the client's current view.
    msgs: Vec<u32>,
    t: u64,
}

/// One client incarnation, digested.
struct Client<'a> {
    name: &'a str,
    inc: u32,
    me: Member,
    blocking: bool,
    views: Vec<View>,
    /// Intents: sequence number → message hash.
    intents: HashMap<u64, u64>,
    sent_ok: Vec<u64>,
    /// Own messages delivered back.
    self_delivered: HashSet<u64>,
    /// Delivery order of valid messages (first delivery only).
    order: Vec<u32>,
    closed: Option<(u64, Option<u64>, Option<bool>)>,
    drained: Option<bool>,
    lost: bool,
    /// Index of the view in which it delivered its own final message.
    fin_view: Option<usize>,
    /// When each message was delivered.
    delivered_at: HashMap<u32, u64>,
}

impl Client<'_> {
    fn label(&self) -> String {
        format!(
            "{} (inc {}, node {} pid {})",
            self.name, self.inc, self.me.0, self.me.1
        )
    }
}

fn show(members: &[Member]) -> String {
    let v: Vec<String> = members.iter().map(|(n, p)| format!("{n}:{p}")).collect();
    format!("[{}]", v.join(","))
}

fn show_ring(r: Ring) -> String {
    r.map_or_else(|| "none".into(), |(n, s)| format!("{n:x}.{s:x}"))
}

/// Checks the histories of one run: the plain clients', the group-layer clients' and
/// the replica clients' (three CPG groups), each against its own.
pub fn check(histories: &[History]) -> Report {
    use crate::history::Api;
    let api = |h: &History| match h.records.first() {
        Some(Record::Start { api, .. }) => Some(*api),
        _ => None,
    };
    let of = |want: Api| -> Vec<History> {
        histories
            .iter()
            .filter(|h| api(h) == Some(want))
            .cloned()
            .collect()
    };
    let (group, replicas) = (of(Api::Group), of(Api::Replica));
    if group.is_empty() && replicas.is_empty() {
        return check_plain(histories);
    }
    let plain: Vec<History> = histories
        .iter()
        .filter(|h| !matches!(api(h), Some(Api::Group | Api::Replica)))
        .cloned()
        .collect();
    let mut report = check_plain(&plain);
    if !group.is_empty() {
        crate::group_check::check(&group, &mut report);
    }
    if !replicas.is_empty() {
        crate::group_check::check_replicas(&replicas, &mut report);
    }
    report
}

/// Checks the plain (`Handle`, `AsyncHandle`) clients' histories.
fn check_plain(histories: &[History]) -> Report {
    let mut report = Report::default();
    let mut out = Vec::new();
    let mut v = |check: Check, evidence: String| out.push(Violation { check, evidence });

    // Pass 1: who is who, and what each intended to send.
    let mut clients: Vec<Client<'_>> = Vec::new();
    for h in histories {
        let Some(Record::Start {
            inc,
            node,
            pid,
            api,
            ..
        }) = h.records.first()
        else {
            continue;
        };
        let mut c = Client {
            name: &h.name,
            inc: *inc,
            me: (*node, *pid),
            blocking: *api == crate::history::Api::Blocking,
            views: Vec::new(),
            intents: HashMap::new(),
            sent_ok: Vec::new(),
            self_delivered: HashSet::new(),
            order: Vec::new(),
            closed: None,
            drained: None,
            lost: false,
            fin_view: None,
            delivered_at: HashMap::new(),
        };
        for r in &h.records {
            match r {
                Record::Send { seq, hash, .. } => {
                    c.intents.insert(*seq, *hash);
                }
                Record::Sent {
                    seq, error: None, ..
                } => c.sent_ok.push(*seq),
                _ => {}
            }
        }
        clients.push(c);
    }
    let by_member: HashMap<Member, usize> =
        clients.iter().enumerate().map(|(i, c)| (c.me, i)).collect();
    let by_inc: HashMap<u32, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.inc, i))
        .collect();
    let sent_ok: Vec<HashSet<u64>> = clients
        .iter()
        .map(|c| c.sent_ok.iter().copied().collect())
        .collect();
    let mut ids: HashMap<(u32, u64), u32> = HashMap::new();
    let mut names: Vec<(u32, u64)> = Vec::new();
    let mut intern = |key: (u32, u64)| -> u32 {
        *ids.entry(key).or_insert_with(|| {
            names.push(key);
            (names.len() - 1) as u32
        })
    };
    for c in &clients {
        for &seq in &c.sent_ok {
            intern((c.inc, seq));
        }
    }

    // Pass 2: deliveries and views, per client.
    let histories_by_client: Vec<&History> = histories
        .iter()
        .filter(|h| matches!(h.records.first(), Some(Record::Start { .. })))
        .collect();
    for (ci, h) in histories_by_client.iter().enumerate() {
        let mut ring: Ring = None;
        let mut ring_t = 0;
        let mut seen: HashSet<u32> = HashSet::new();
        // Per sender incarnation: last sequence delivered and the view it came in.
        let mut last: HashMap<u32, (u64, usize)> = HashMap::new();
        let mut after_close = 0usize;
        for r in &h.records {
            if clients[ci].closed.is_some() {
                after_close += 1;
            }
            match r {
                Record::Totem { ring: id, t, .. } => {
                    ring = Some(*id);
                    ring_t = *t;
                    for view in clients[ci].views.iter_mut().rev() {
                        if view.ring_after.is_some() {
                            break;
                        }
                        view.ring_after = ring;
                    }
                }
                Record::View { members, t, .. } => {
                    report.views += 1;
                    clients[ci].views.push(View {
                        members: members.clone(),
                        ring_before: ring,
                        ring_before_t: ring_t,
                        ring_after: None,
                        msgs: Vec::new(),
                        t: *t,
                    });
                }
                Record::Deliver {
                    from,
                    inc,
                    seq,
                    hash,
                    valid,
                    fin,
                    t,
                } => {
                    report.deliveries += 1;
                    let label = clients[ci].label();
                    if !valid {
                        v(
                            Check::Integrity,
                            format!(
                                "{label} delivered a corrupted message from {}:{} at t={t} \
                                 (payload does not decode or its checksum is wrong; hash {hash:016x})",
                                from.0, from.1
                            ),
                        );
                        continue;
                    }
                    match by_member.get(from) {
                        None => v(
                            Check::Integrity,
                            format!(
                                "{label} delivered seq {seq} (inc {inc}) from {}:{}, which no \
                                 client of this run was",
                                from.0, from.1
                            ),
                        ),
                        Some(&si) if clients[si].inc != *inc => v(
                            Check::Integrity,
                            format!(
                                "{label} delivered a message from {}:{} (inc {}) whose payload \
                                 names inc {inc}",
                                from.0, from.1, clients[si].inc
                            ),
                        ),
                        Some(&si) => match clients[si].intents.get(seq) {
                            None => v(
                                Check::Integrity,
                                format!(
                                    "{label} delivered seq {seq} from {}, which never sent it",
                                    clients[si].label()
                                ),
                            ),
                            Some(h0) if h0 != hash => v(
                                Check::Integrity,
                                format!(
                                    "{label} delivered seq {seq} from {} with content hash \
                                     {hash:016x}; sent was {h0:016x}",
                                    clients[si].label()
                                ),
                            ),
                            Some(_) => {}
                        },
                    }
                    let id = intern((*inc, *seq));
                    if !seen.insert(id) {
                        v(
                            Check::Duplicate,
                            format!(
                                "{label} delivered seq {seq} of inc {inc} twice (again at t={t})"
                            ),
                        );
                        continue;
                    }
                    if *inc == clients[ci].inc {
                        clients[ci].self_delivered.insert(*seq);
                        if *fin {
                            clients[ci].fin_view = clients[ci].views.len().checked_sub(1);
                        }
                    }
                    let view_index = clients[ci].views.len();
                    let Some(view) = clients[ci].views.last_mut() else {
                        v(
                            Check::VirtualSynchrony,
                            format!("{label} delivered seq {seq} of inc {inc} before any view"),
                        );
                        continue;
                    };
                    view.msgs.push(id);
                    clients[ci].order.push(id);
                    clients[ci].delivered_at.insert(id, *t);
                    if let Some(&(prev, prev_view)) = last.get(inc) {
                        if *seq < prev {
                            v(
                                Check::Fifo,
                                format!(
                                    "{label} delivered seq {seq} of inc {inc} after seq {prev}"
                                ),
                            );
                        } else if prev_view == view_index && *seq > prev + 1 {
                            let sender = by_inc.get(inc).copied();
                            let missing: Vec<u64> = (prev + 1..*seq)
                                .filter(|s| sender.is_some_and(|si| sent_ok[si].contains(s)))
                                .collect();
                            if !missing.is_empty() {
                                v(
                                    Check::Fifo,
                                    format!(
                                        "{label} delivered seq {prev} then {seq} of inc {inc} in \
                                         one view {}: missing {} message(s) sent with Ok \
                                         (first {})",
                                        show(&clients[ci].views[view_index - 1].members),
                                        missing.len(),
                                        missing[0]
                                    ),
                                );
                            }
                        }
                    }
                    last.insert(*inc, (*seq, view_index));
                }
                Record::Lost { .. } => clients[ci].lost = true,
                Record::Drained { complete, .. } => clients[ci].drained = Some(*complete),
                Record::Closed {
                    events,
                    dispatched,
                    freed,
                    ..
                } => clients[ci].closed = Some((*events, *dispatched, *freed)),
                Record::AfterClose { what, t } => v(
                    Check::Binding,
                    format!(
                        "{}: callback `{what}` ran after close (t={t})",
                        clients[ci].label()
                    ),
                ),
                _ => {}
            }
        }
        if after_close > 0 {
            v(
                Check::Binding,
                format!(
                    "{}: {after_close} record(s) after the handle was closed",
                    clients[ci].label()
                ),
            );
        }
    }
    report.clients = clients.len();
    report.messages = names.len();

    agreed_order(&clients, names.len(), &names, &mut v);
    report.transitions = virtual_synchrony(
        &clients,
        &names,
        &mut v,
        &mut report.notes,
        &mut report.anomalies,
        &mut report.recovery_losses,
        &mut report.unannounced_splits,
    );
    view_agreement(&clients, &mut v, &mut report.notes);
    self_delivery(&clients, &mut v);
    finish(&clients, &names, &mut v);
    report.violations = out;
    report
}

fn agreed_order(
    clients: &[Client<'_>],
    n: usize,
    names: &[(u32, u64)],
    v: &mut impl FnMut(Check, String),
) {
    const NONE: u32 = u32::MAX;
    let positions: Vec<Vec<u32>> = clients
        .iter()
        .map(|c| {
            let mut pos = vec![NONE; n];
            for (i, &m) in c.order.iter().enumerate() {
                pos[m as usize] = i as u32;
            }
            pos
        })
        .collect();
    for a in 0..clients.len() {
        for b in a + 1..clients.len() {
            let mut prev: Option<(u32, u32)> = None;
            for &m in &clients[a].order {
                let p = positions[b][m as usize];
                if p == NONE {
                    continue;
                }
                if let Some((pm, pp)) = prev {
                    if p < pp {
                        let (x, y) = (names[pm as usize], names[m as usize]);
                        v(
                            Check::AgreedOrder,
                            format!(
                                "{} delivered inc {} seq {} before inc {} seq {}; {} delivered \
                                 them the other way round",
                                clients[a].label(),
                                x.0,
                                x.1,
                                y.0,
                                y.1,
                                clients[b].label()
                            ),
                        );
                        break;
                    }
                }
                prev = Some((m, p));
            }
        }
    }
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

fn examples(names: &[(u32, u64)], set: &[u32]) -> String {
    let shown: Vec<String> = set
        .iter()
        .take(3)
        .map(|&m| format!("inc {} seq {}", names[m as usize].0, names[m as usize].1))
        .collect();
    let more = if set.len() > 3 { ", ..." } else { "" };
    format!("{} ({}{more})", set.len(), shown.join(", "))
}

fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let bs: HashSet<u32> = b.iter().copied().collect();
    a.iter().copied().filter(|m| !bs.contains(m)).collect()
}

/// Removes the keys under which one client appears more than once: which of its
/// transitions matches which of another client's is then unknown, so none is
/// compared. Returns how many keys were dropped, and the first one's description.
fn drop_ambiguous<K: std::hash::Hash + Eq>(
    groups: &mut HashMap<K, Vec<(usize, usize)>>,
    clients: &[Client<'_>],
) -> (usize, Option<String>) {
    let mut example = None;
    let before = groups.len();
    groups.retain(|_, members| {
        let mut seen = HashSet::new();
        let repeated = members.iter().find(|&&(c, _)| !seen.insert(c)).map(|m| m.0);
        let unique = repeated.is_none();
        if let Some(c) = repeated.filter(|_| example.is_none()) {
            let twice: Vec<usize> = members.iter().filter(|m| m.0 == c).map(|m| m.1).collect();
            let views = &clients[c].views;
            let shown: Vec<String> = (twice[0].saturating_sub(1)
                ..(twice[twice.len() - 1] + 2).min(views.len()))
                .map(|k| {
                    format!(
                        "#{k} {} (ring before {}, t={})",
                        show(&views[k].members),
                        show_ring(views[k].ring_before),
                        views[k].t
                    )
                })
                .collect();
            example = Some(format!(
                "{} has transitions at view #{twice:?} that look alike; its views: {}",
                clients[c].label(),
                shown.join(" -> ")
            ));
        }
        unique
    });
    (before - groups.len(), example)
}

/// Whether client `c`'s move into view `v2` went through totem membership changes it
/// was never told about, with the messages in `only` (those only it delivered)
/// delivered after the last ring it was told about. Returns the evidence.
///
/// Corosync numbers rings in steps of 4 (a little more after a merge with a node that
/// formed rings alone); a jump of 8 or more between the ring before a view and the next
/// ring the client gets means that totem formed (or tried to form) memberships that
/// CPG announced neither as a totem change nor as a view: its synchronization did not
/// complete in them (the daemon's log shows "A new membership (...) was formed" for
/// them, and "Completed service synchronization" only for the last).
fn unannounced_rings(c: &Client<'_>, v2: &View, only: &[u32]) -> Option<String> {
    let (before, after) = (v2.ring_before?, v2.ring_after?);
    if after.1 < before.1 + UNANNOUNCED_RING_GAP {
        return None;
    }
    let late = only.iter().all(|m| {
        c.delivered_at
            .get(m)
            .is_some_and(|&t| t >= v2.ring_before_t)
    });
    late.then(|| {
        format!(
            "{}: ring {} (t={}) then ring {}",
            c.label(),
            show_ring(Some(before)),
            v2.ring_before_t,
            show_ring(Some(after))
        )
    })
}

/// The smallest jump in ring sequence numbers that is taken as rings nobody was told
/// about (see [`unannounced_rings`]).
const UNANNOUNCED_RING_GAP: u64 = 8;

/// Returns the number of client pairs compared.
fn virtual_synchrony(
    clients: &[Client<'_>],
    names: &[(u32, u64)],
    v: &mut impl FnMut(Check, String),
    notes: &mut Vec<String>,
    anomalies: &mut Vec<Violation>,
    losses: &mut Vec<RecoveryLoss>,
    splits: &mut Vec<UnannouncedSplit>,
) -> usize {
    let mut compared = 0;
    let node_of_inc: HashMap<u32, u32> = clients.iter().map(|c| (c.inc, c.me.0)).collect();
    type Key<'k> = (&'k [Member], &'k [Member], Ring);
    let mut groups: HashMap<Key<'_>, Vec<(usize, usize)>> = HashMap::new();
    for (ci, c) in clients.iter().enumerate() {
        for (i, w) in c.views.windows(2).enumerate() {
            let key = (&w[0].members[..], &w[1].members[..], w[1].ring_before);
            groups.entry(key).or_default().push((ci, i));
        }
    }
    let (dropped, example) = drop_ambiguous(&mut groups, clients);
    if let Some(e) = example {
        notes.push(format!(
            "virtual synchrony: {dropped} ambiguous transition(s) not compared; e.g. {e}"
        ));
    }
    // Which messages some client on each node delivered: a difference between two
    // daemons shows at every client of the node, one a binding could cause would not.
    let mut by_node: HashMap<u32, HashSet<u32>> = HashMap::new();
    for c in clients {
        by_node
            .entry(c.me.0)
            .or_default()
            .extend(c.order.iter().copied());
    }
    let delivered_on = |node: u32, m: u32| by_node.get(&node).is_some_and(|s| s.contains(&m));
    let node_of = |c: usize| clients[c].me.0;
    let mut keys: Vec<_> = groups.into_iter().collect();
    keys.sort_by_key(|(_, members)| members[0]);
    for ((v1, v2, ring), members) in keys {
        let (c0, i0) = members[0];
        let first = sorted(&clients[c0].views[i0].msgs);
        for &(c1, i1) in &members[1..] {
            compared += 1;
            let other = sorted(&clients[c1].views[i1].msgs);
            if other != first {
                let only_a = difference(&first, &other);
                let only_b = difference(&other, &first);
                let (va2, vb2) = (&clients[c0].views[i0 + 1], &clients[c1].views[i1 + 1]);
                // Every client of a node that made this transition delivered all of
                // them or none: the same at every client of the node.
                let uniform = |only: &[u32], node: u32, present: bool| {
                    members
                        .iter()
                        .filter(|&&(cx, _)| node_of(cx) == node)
                        .all(|&(cx, ix)| {
                            let got = &clients[cx].views[ix].msgs;
                            only.iter().all(|m| got.contains(m) == present)
                        })
                };
                let node_level = only_a.iter().all(|m| !delivered_on(node_of(c1), *m))
                    && only_b.iter().all(|m| !delivered_on(node_of(c0), *m))
                    && uniform(&only_a, node_of(c0), true)
                    && uniform(&only_a, node_of(c1), false)
                    && uniform(&only_b, node_of(c1), true)
                    && uniform(&only_b, node_of(c0), false);
                let unannounced = unannounced_rings(&clients[c0], va2, &only_a)
                    .zip(unannounced_rings(&clients[c1], vb2, &only_b))
                    .filter(|_| node_level);
                let evidence = format!(
                    "{} and {} both moved from view {} (installed at t={} / t={}) to view {} \
                     (ring before {}) but delivered different messages in it: only the \
                     first {}, only the second {}",
                    clients[c0].label(),
                    clients[c1].label(),
                    show(v1),
                    clients[c0].views[i0].t,
                    clients[c1].views[i1].t,
                    show(v2),
                    show_ring(ring),
                    examples(names, &only_a),
                    examples(names, &only_b)
                );
                let lost = if unannounced.is_none() && node_level {
                    lost_in_recovery(
                        (node_of(c0), &only_a),
                        (node_of(c1), &only_b),
                        v2,
                        names,
                        &node_of_inc,
                    )
                    .map(|loss| {
                        // The next view's install time at the client that lacks them.
                        let (c, i) = if loss.missing_on == node_of(c0) {
                            (c0, i0)
                        } else {
                            (c1, i1)
                        };
                        let t = clients[c].views[i + 1].t;
                        RecoveryLoss {
                            ring,
                            next_t: (t, t),
                            ..loss
                        }
                    })
                } else {
                    None
                };
                match (unannounced, lost) {
                    (Some((a, b)), _) => {
                        anomalies.push(Violation {
                            check: Check::UnannouncedMembership,
                            evidence: format!(
                                "{evidence}; no client on the other's node ever delivered \
                                 the differing messages, they were delivered after the last \
                                 totem change the clients got, and the next one skips ring \
                                 numbers never announced to them ({a}; {b})"
                            ),
                        });
                        let (x, y) = (node_of(c0), node_of(c1));
                        let (t0, t1) = (clients[c0].views[i0 + 1].t, clients[c1].views[i1 + 1].t);
                        let (lo, hi) = (t0.min(t1), t0.max(t1));
                        let nodes = (x.min(y), x.max(y));
                        // One entry per split; its clients' install times widen it.
                        match splits
                            .iter_mut()
                            .find(|s| (s.ring, s.nodes) == (ring, nodes))
                        {
                            Some(s) => s.next_t = (s.next_t.0.min(lo), s.next_t.1.max(hi)),
                            None => splits.push(UnannouncedSplit {
                                ring,
                                nodes,
                                next_t: (lo, hi),
                            }),
                        }
                    }
                    (None, Some(loss)) => {
                        anomalies.push(Violation {
                            check: Check::LostInRecovery,
                            evidence: format!(
                                "{evidence}; they were sent from node(s) {:?}, which left in \
                                 this transition, and no client on node {} ever delivered \
                                 them: corosync's recovery of ring {} could not give node {} \
                                 messages node {} had delivered (build-support/nemesis/README.md, \
                                 \"messages lost in corosync's recovery\")",
                                loss.senders,
                                loss.missing_on,
                                show_ring(loss.ring),
                                loss.missing_on,
                                loss.delivered_on
                            ),
                        });
                        // One entry per loss; its clients' install times widen it.
                        match losses.iter_mut().find(|l| {
                            (l.ring, l.missing_on, l.delivered_on, &l.senders)
                                == (loss.ring, loss.missing_on, loss.delivered_on, &loss.senders)
                        }) {
                            Some(l) => {
                                l.next_t =
                                    (l.next_t.0.min(loss.next_t.0), l.next_t.1.max(loss.next_t.1));
                            }
                            None => losses.push(loss),
                        }
                    }
                    (None, None) => v(Check::VirtualSynchrony, evidence),
                }
            }
        }
    }
    compared
}

/// Whether a virtual-synchrony difference between a client on node `a.0` (which
/// alone delivered the messages `a.1`) and one on node `b.0` (alone delivered `b.1`),
/// both moving on to the view of members `v2`, has the signature of messages lost in
/// corosync's ring recovery: the two are on different nodes, only one side has extra
/// messages, and all of them were sent from nodes with no member in `v2` (they left in
/// this transition). The caller has checked that no client on the other node ever
/// delivered them.
fn lost_in_recovery(
    a: (u32, &[u32]),
    b: (u32, &[u32]),
    v2: &[Member],
    names: &[(u32, u64)],
    node_of_inc: &HashMap<u32, u32>,
) -> Option<RecoveryLoss> {
    if a.0 == b.0 {
        return None;
    }
    let ((delivered_on, only), (missing_on, none)) = if b.1.is_empty() { (a, b) } else { (b, a) };
    if only.is_empty() || !none.is_empty() {
        return None;
    }
    let mut senders: Vec<u32> = only
        .iter()
        .map(|&m| node_of_inc.get(&names[m as usize].0).copied())
        .collect::<Option<Vec<u32>>>()?;
    senders.sort_unstable();
    senders.dedup();
    let left = senders
        .iter()
        .all(|n| *n != delivered_on && *n != missing_on && !v2.iter().any(|m| m.0 == *n));
    left.then_some(RecoveryLoss {
        ring: None,
        missing_on,
        delivered_on,
        senders,
        next_t: (0, 0),
    })
}

fn view_agreement(
    clients: &[Client<'_>],
    v: &mut impl FnMut(Check, String),
    notes: &mut Vec<String>,
) {
    // (V1's member list, V1's ring before, V2's ring before) → (client, index of V2).
    type Key<'k> = (&'k [Member], Ring, Ring);
    let mut groups: HashMap<Key<'_>, Vec<(usize, usize)>> = HashMap::new();
    for (ci, c) in clients.iter().enumerate() {
        for (i, w) in c.views.windows(2).enumerate() {
            groups
                .entry((&w[0].members[..], w[0].ring_before, w[1].ring_before))
                .or_default()
                .push((ci, i + 1));
        }
    }
    let (dropped, example) = drop_ambiguous(&mut groups, clients);
    if let Some(e) = example {
        notes.push(format!(
            "view agreement: {dropped} ambiguous transition(s) not compared; e.g. {e}"
        ));
    }
    let mut keys: Vec<_> = groups.into_iter().collect();
    keys.sort_by_key(|(_, members)| members[0]);
    for ((v1, _, ring), members) in keys {
        for (x, &(a, ia)) in members.iter().enumerate() {
            for &(b, ib) in &members[x + 1..] {
                let (va, vb) = (&clients[a].views[ia], &clients[b].views[ib]);
                if va.members.contains(&clients[b].me)
                    && vb.members.contains(&clients[a].me)
                    && va.members != vb.members
                {
                    v(
                        Check::ViewAgreement,
                        format!(
                            "after view {} (ring before {}), {} installed {} and {} installed {}",
                            show(v1),
                            show_ring(ring),
                            clients[a].label(),
                            show(&va.members),
                            clients[b].label(),
                            show(&vb.members)
                        ),
                    );
                }
            }
        }
    }
}

fn self_delivery(clients: &[Client<'_>], v: &mut impl FnMut(Check, String)) {
    for c in clients {
        let finished = c.closed.is_some();
        let newest = c.self_delivered.iter().copied().max().unwrap_or(0);
        let missing: Vec<u64> = c
            .sent_ok
            .iter()
            .copied()
            .filter(|s| !c.self_delivered.contains(s) && (finished || *s < newest))
            .collect();
        if let Some(first) = missing.first() {
            let how = if finished {
                "finished cleanly"
            } else if c.lost {
                "lost its daemon, but delivered a later own message"
            } else {
                "was killed, but delivered a later own message"
            };
            v(
                Check::SelfDelivery,
                format!(
                    "{} sent {} message(s) with Ok that never came back to it (first seq \
                     {first}); it {how}",
                    c.label(),
                    missing.len()
                ),
            );
        }
    }
}

fn finish(clients: &[Client<'_>], names: &[(u32, u64)], v: &mut impl FnMut(Check, String)) {
    let finished: Vec<&Client<'_>> = clients.iter().filter(|c| c.closed.is_some()).collect();
    let mut live: Vec<Member> = finished.iter().map(|c| c.me).collect();
    live.sort_unstable();
    for c in &finished {
        let (events, dispatched, freed) = c.closed.unwrap_or_default();
        if c.blocking && dispatched != Some(events) {
            v(
                Check::Binding,
                format!(
                    "{}: its callbacks saw {events} events, dispatch reported {dispatched:?}",
                    c.label()
                ),
            );
        }
        if freed == Some(false) {
            v(
                Check::Binding,
                format!("{}: close returned with the callbacks not freed", c.label()),
            );
        }
        if c.drained != Some(true) {
            v(
                Check::Liveness,
                format!(
                    "{}: did not deliver the final message of every member of its last view \
                     (drained: {:?})",
                    c.label(),
                    c.drained
                ),
            );
        }
        // The final view: the one its own final message came back in. Every client
        // closes only after all final messages, so no leave precedes any of them.
        match c.fin_view.map(|i| &c.views[i]) {
            Some(last) if last.members == live => {}
            Some(last) => v(
                Check::Liveness,
                format!(
                    "{}: its final message came back in view {}, but the clients that \
                     finished are {}",
                    c.label(),
                    show(&last.members),
                    show(&live)
                ),
            ),
            None => v(
                Check::Liveness,
                format!("{}: its final message never came back", c.label()),
            ),
        }
    }
    // The final view's messages: the same at every client that finished in it.
    let mut reference: Option<(&Client<'_>, Vec<u32>)> = None;
    for c in &finished {
        let Some(last) = c
            .fin_view
            .map(|i| &c.views[i])
            .filter(|l| l.members == live)
        else {
            continue;
        };
        let msgs = sorted(&last.msgs);
        match &reference {
            None => reference = Some((c, msgs)),
            Some((r, rm)) if *rm != msgs => v(
                Check::Binding,
                format!(
                    "{} and {} finished in the same final view {} but delivered different \
                     messages in it: only the first {}, only the second {}",
                    r.label(),
                    c.label(),
                    show(&live),
                    examples(names, &difference(rm, &msgs)),
                    examples(names, &difference(&msgs, rm))
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Building blocks of synthetic histories: used by the unit tests and by
/// `nemesis --self-test`.
pub mod synthetic {
    use crate::history::{encode, fnv1a, Api, History, Member, Record};

    /// A small simulated run: the histories of its clients, written in one global
    /// order, as a correct CPG would produce them.
    #[derive(Debug, Default)]
    pub struct Sim {
        clients: Vec<(Member, u32, Vec<Record>, u64)>,
        t: u64,
    }

    impl Sim {
        fn tick(&mut self) -> u64 {
            self.t += 1;
            self.t
        }

        /// Adds a client (index returned) with its start record.
        pub fn start(&mut self, member: Member, inc: u32) -> usize {
            let t = self.tick();
            self.clients.push((
                member,
                inc,
                vec![Record::Start {
                    inc,
                    node: member.0,
                    pid: member.1,
                    api: if inc % 2 == 0 {
                        Api::Async
                    } else {
                        Api::Blocking
                    },
                    t,
                }],
                1,
            ));
            self.clients.len() - 1
        }

        /// Clients `at` see ring `ring` with nodes `nodes`.
        pub fn totem(&mut self, at: &[usize], ring: (u32, u64), nodes: &[u32]) {
            let t = self.tick();
            for &c in at {
                self.clients[c].2.push(Record::Totem {
                    ring,
                    members: nodes.to_vec(),
                    t,
                });
            }
        }

        /// Clients `at` install the view made of clients `members`.
        pub fn view(&mut self, at: &[usize], members: &[usize]) {
            let t = self.tick();
            let mut list: Vec<Member> = members.iter().map(|&c| self.clients[c].0).collect();
            list.sort_unstable();
            for &c in at {
                self.clients[c].2.push(Record::View {
                    members: list.clone(),
                    joined: Vec::new(),
                    left: Vec::new(),
                    t,
                });
            }
        }

        /// Client `from` sends its next message (final if `fin`), delivered to `to`.
        pub fn send(&mut self, from: usize, to: &[usize], fin: bool) {
            let t = self.tick();
            let (member, inc, _, seq) = self.clients[from];
            let msg = encode(inc, seq, fin, (seq as usize * 7) % 50);
            let hash = fnv1a(&msg);
            let records = &mut self.clients[from].2;
            records.push(Record::Send { seq, hash, fin, t });
            records.push(Record::Sent {
                seq,
                error: None,
                t,
            });
            self.clients[from].3 += 1;
            for &c in to {
                self.clients[c].2.push(Record::Deliver {
                    from: member,
                    inc,
                    seq,
                    hash,
                    valid: true,
                    fin,
                    t,
                });
            }
        }

        /// Client `c` drains and closes.
        pub fn close(&mut self, c: usize) {
            let t = self.tick();
            let events = self.clients[c]
                .2
                .iter()
                .filter(|r| {
                    matches!(
                        r,
                        Record::View { .. } | Record::Deliver { .. } | Record::Totem { .. }
                    )
                })
                .count() as u64;
            let blocking = self.clients[c].1 % 2 == 1;
            let records = &mut self.clients[c].2;
            records.push(Record::Drained { complete: true, t });
            records.push(Record::Closed {
                events,
                dispatched: blocking.then_some(events),
                freed: blocking.then_some(true),
                t,
            });
        }

        /// The histories.
        pub fn histories(self) -> Vec<History> {
            self.clients
                .into_iter()
                .map(|(m, inc, records, _)| History {
                    name: format!("client-{inc}-{}-{}", m.0, m.1),
                    records,
                })
                .collect()
        }
    }

    /// A clean run on 3 nodes: three clients join; messages; a fourth joins; one is
    /// killed; node 2 is partitioned off and merges back; final messages; the rest
    /// finish.
    pub fn clean() -> Vec<History> {
        let mut s = Sim::default();
        let a = s.start((1, 101), 1);
        let b = s.start((2, 202), 2);
        let c = s.start((3, 303), 3);
        s.totem(&[a], (1, 4), &[1, 2, 3]);
        s.view(&[a], &[a]);
        s.totem(&[b], (1, 4), &[1, 2, 3]);
        s.view(&[a, b], &[a, b]);
        s.totem(&[c], (1, 4), &[1, 2, 3]);
        s.view(&[a, b, c], &[a, b, c]);
        for _ in 0..5 {
            for x in [a, b, c] {
                s.send(x, &[a, b, c], false);
            }
        }
        let d = s.start((1, 104), 5);
        s.totem(&[d], (1, 4), &[1, 2, 3]);
        s.view(&[a, b, c, d], &[a, b, c, d]);
        for _ in 0..3 {
            for x in [a, b, c, d] {
                s.send(x, &[a, b, c, d], false);
            }
        }
        // c is killed after sending one more message that it never sees.
        s.send(c, &[a, b, d], false);
        s.view(&[a, b, d], &[a, b, d]);
        s.send(a, &[a, b, d], false);
        // Node 2 is cut off: two sides, each with its own ring.
        s.view(&[a, d], &[a, d]);
        s.view(&[b], &[b]);
        s.totem(&[a, d], (1, 8), &[1, 3]);
        s.totem(&[b], (2, 8), &[2]);
        s.send(a, &[a, d], false);
        s.send(b, &[b], false);
        s.send(d, &[a, d], false);
        // The merge: both sides install the merged view, with different rings before.
        s.view(&[a, b, d], &[a, b, d]);
        s.totem(&[a, b, d], (1, 12), &[1, 2, 3]);
        for _ in 0..3 {
            for x in [a, b, d] {
                s.send(x, &[a, b, d], false);
            }
        }
        for x in [a, b, d] {
            s.send(x, &[a, b, d], true);
        }
        // Each closes in turn; the others see it leave.
        s.close(a);
        s.view(&[b, d], &[b, d]);
        s.close(b);
        s.view(&[d], &[d]);
        s.close(d);
        s.histories()
    }

    /// a and b stay in each other's views but each delivers a message the other never
    /// gets, after the last ring they were told about; the next ring they get is
    /// `next_ring` (sequence). Nodes 1 (a), 2 (b), 3 (c); the split is in ring 1.8.
    pub fn hidden_split(next_ring: u64) -> Vec<History> {
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        let c = s.start((3, 3), 5);
        s.totem(&[a, b, c], (1, 4), &[1, 2, 3]);
        s.view(&[a, b, c], &[a, b, c]);
        s.send(c, &[a, b, c], false);
        s.totem(&[a, b, c], (1, 8), &[1, 2, 3]);
        s.send(a, &[a], false);
        s.send(b, &[b], false);
        s.view(&[a, b], &[a, b]);
        s.totem(&[a, b], (1, next_ring), &[1, 2]);
        s.send(a, &[a, b], true);
        s.send(b, &[a, b], true);
        s.close(a);
        s.close(b);
        s.histories()
    }

    /// Messages lost in corosync's recovery: node 2's client sends two messages that
    /// node 3's clients deliver and node 1's client never does, then node 2 fails
    /// (ring 1.8 to ring 1.c) and nodes 1 and 3 move on together. With `one_client`,
    /// only one of node 3's two clients delivers them (a client-level loss).
    pub fn recovery_loss(one_client: bool) -> Vec<History> {
        let mut s = Sim::default();
        let a = s.start((1, 101), 1);
        let b = s.start((2, 202), 2);
        let c = s.start((3, 303), 3);
        let d = s.start((3, 304), 5);
        let all = [a, b, c, d];
        s.totem(&all, (1, 4), &[1, 2, 3]);
        s.view(&all, &all);
        s.totem(&all, (1, 8), &[1, 2, 3]);
        for x in all {
            s.send(x, &all, false);
        }
        let node3: &[usize] = if one_client { &[b, c] } else { &[b, c, d] };
        s.send(b, node3, false);
        s.send(b, node3, false);
        s.send(c, &[a, c, d], false);
        s.send(a, &[a, c, d], false);
        s.view(&[a, c, d], &[a, c, d]);
        s.totem(&[a, c, d], (1, 12), &[1, 3]);
        for x in [a, c, d] {
            s.send(x, &[a, c, d], true);
        }
        for x in [a, c, d] {
            s.close(x);
        }
        s.histories()
    }

    /// A planted defect: its name, the check that must catch it, and the histories.
    pub type Planted = (&'static str, super::Check, Vec<History>);

    fn client(h: &mut [History], inc: u32) -> &mut Vec<Record> {
        &mut h
            .iter_mut()
            .find(|x| matches!(x.records.first(), Some(Record::Start { inc: i, .. }) if *i == inc))
            .expect("synthetic client exists")
            .records
    }

    fn nth(records: &[Record], n: usize, pred: impl Fn(&Record) -> bool) -> usize {
        records
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .nth(n)
            .expect("synthetic record exists")
            .0
    }

    fn is_deliver(r: &Record) -> bool {
        matches!(r, Record::Deliver { .. })
    }

    /// The defects `--self-test` plants, each in a copy of [`clean`].
    pub fn defects() -> Vec<Planted> {
        let mut all = Vec::new();

        // A message missing at one receiver (inc 2's 5th delivery, in the 3-member view).
        let mut h = clean();
        let r = client(&mut h, 2);
        let i = nth(r, 4, is_deliver);
        r.remove(i);
        all.push(("dropped message", super::Check::VirtualSynchrony, h));

        // A message delivered twice.
        let mut h = clean();
        let r = client(&mut h, 1);
        let i = nth(r, 6, is_deliver);
        let copy = r[i].clone();
        r.insert(i + 1, copy);
        all.push(("duplicate", super::Check::Duplicate, h));

        // Two adjacent deliveries (different senders) swapped at one receiver.
        let mut h = clean();
        let r = client(&mut h, 2);
        let i = nth(r, 7, is_deliver);
        let j = nth(r, 8, is_deliver);
        r.swap(i, j);
        all.push(("swapped pair", super::Check::AgreedOrder, h));

        // A corrupted payload.
        let mut h = clean();
        let r = client(&mut h, 3);
        let i = nth(r, 3, is_deliver);
        if let Record::Deliver { valid, hash, .. } = &mut r[i] {
            *valid = false;
            *hash ^= 1;
        }
        all.push(("corrupted payload", super::Check::Integrity, h));

        // Two members disagree on a view: inc 5 sees a stranger in the view after the
        // kill that the others install without it.
        let mut h = clean();
        let r = client(&mut h, 5);
        let i = nth(r, 1, |r| matches!(r, Record::View { .. }));
        if let Record::View { members, .. } = &mut r[i] {
            members.push((3, 999));
            members.sort_unstable();
        }
        all.push(("members disagree on a view", super::Check::ViewAgreement, h));

        // A message delivered after the view it belongs to: inc 1 delivers the last
        // message of the 3-member view only after the 4-member view.
        let mut h = clean();
        let r = client(&mut h, 1);
        let view4 = nth(r, 3, |r| matches!(r, Record::View { .. }));
        let before = (0..view4)
            .rev()
            .find(|&k| is_deliver(&r[k]))
            .expect("a delivery");
        let moved = r.remove(before);
        r.insert(view4, moved);
        all.push((
            "delivered after its view",
            super::Check::VirtualSynchrony,
            h,
        ));

        all
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{clean, defects, Sim};
    use super::{check, Check};
    use crate::history::Record;

    fn checks(h: &[crate::history::History]) -> Vec<Check> {
        let mut c: Vec<Check> = check(h).violations.iter().map(|v| v.check).collect();
        c.dedup();
        c
    }

    #[test]
    fn a_clean_history_passes_and_is_counted() {
        let r = check(&clean());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.clients, 4);
        assert!(r.messages > 40 && r.views > 10, "{r:?}");
    }

    #[test]
    fn every_planted_defect_is_caught_by_its_check() {
        for (name, expected, h) in defects() {
            let r = check(&h);
            assert!(
                r.violations.iter().any(|v| v.check == expected),
                "{name}: expected a {expected} violation, got {:#?}",
                r.violations
            );
        }
    }

    #[test]
    fn a_message_nobody_sent_is_an_integrity_violation() {
        let mut h = clean();
        let r = &mut h[0].records;
        let i = r
            .iter()
            .rposition(|r| matches!(r, Record::Deliver { .. }))
            .unwrap();
        if let Record::Deliver { seq, .. } = &mut r[i] {
            *seq = 10_000;
        }
        assert!(checks(&h).contains(&Check::Integrity));
    }

    #[test]
    fn a_gap_from_one_sender_inside_one_view_is_a_fifo_violation() {
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        s.view(&[a, b], &[a, b]);
        s.send(a, &[a, b], false);
        s.send(a, &[a], false);
        s.send(a, &[a, b], false);
        let got = checks(&s.histories());
        assert!(got.contains(&Check::Fifo), "{got:?}");
    }

    #[test]
    fn a_lost_own_message_of_a_finished_client_is_a_self_delivery_violation() {
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        s.view(&[a], &[a]);
        s.send(a, &[], false);
        s.send(a, &[a], true);
        s.close(a);
        let got = checks(&s.histories());
        assert!(got.contains(&Check::SelfDelivery), "{got:?}");
    }

    #[test]
    fn a_killed_sender_may_lose_its_last_messages() {
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        s.view(&[a, b], &[a, b]);
        s.send(a, &[a, b], false);
        s.send(a, &[], false); // a is killed before this comes back
        s.view(&[b], &[b]);
        s.send(b, &[b], true);
        s.close(b);
        let r = check(&s.histories());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
    }

    #[test]
    fn partitioned_sides_may_deliver_different_messages() {
        // clean() has a partition; a gap across views is no FIFO violation either.
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        s.view(&[a, b], &[a, b]);
        s.send(a, &[a, b], false);
        s.view(&[a], &[a]);
        s.view(&[b], &[b]);
        s.totem(&[a], (1, 8), &[1]);
        s.totem(&[b], (2, 8), &[2]);
        s.send(a, &[a], false);
        s.view(&[a, b], &[a, b]);
        s.totem(&[a, b], (1, 12), &[1, 2]);
        s.send(a, &[a, b], false);
        s.send(a, &[a, b], true);
        s.send(b, &[a, b], true);
        s.close(a);
        s.close(b);
        let r = check(&s.histories());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
    }

    #[test]
    fn a_member_list_seen_twice_in_one_ring_is_not_compared_blindly() {
        // One ring change reports b leaving and joining again before the new ring's
        // totem change: a moves away from [a] twice with the same ring before.
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        s.totem(&[a], (1, 4), &[1, 2]);
        s.view(&[a], &[a]);
        s.totem(&[a], (1, 8), &[1, 2]);
        s.view(&[a, b], &[a, b]);
        s.totem(&[b], (1, 8), &[1, 2]);
        s.view(&[a], &[a]);
        s.view(&[a, b], &[a, b]);
        s.send(a, &[a, b], true);
        s.send(b, &[a, b], true);
        s.close(a);
        s.close(b);
        let r = check(&s.histories());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(
            r.notes.iter().any(|n| n.contains("ambiguous")),
            "{:?}",
            r.notes
        );
    }

    fn hidden_split(next_ring: u64) -> super::Report {
        check(&super::synthetic::hidden_split(next_ring))
    }

    #[test]
    fn a_split_across_unannounced_rings_is_an_anomaly_not_a_violation() {
        let r = hidden_split(24);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.anomalies.len(), 1, "{:#?}", r.anomalies);
        assert_eq!(r.anomalies[0].check, Check::UnannouncedMembership);
    }

    #[test]
    fn the_same_split_across_announced_rings_is_a_violation() {
        let r = hidden_split(12);
        assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::VirtualSynchrony),
            "{:#?}",
            r.violations
        );
    }

    #[test]
    fn a_message_missing_at_one_client_of_a_node_is_a_violation_even_across_hidden_rings() {
        // a1 and a2 share node 1; a2 misses a message that a1 and b delivered: a
        // daemon does not do that to one of its clients, a binding could.
        let mut s = Sim::default();
        let a1 = s.start((1, 1), 1);
        let a2 = s.start((1, 2), 3);
        let b = s.start((2, 3), 5);
        let c = s.start((3, 4), 7);
        s.totem(&[a1, a2, b, c], (1, 4), &[1, 2, 3]);
        s.view(&[a1, a2, b, c], &[a1, a2, b, c]);
        s.totem(&[a1, a2, b, c], (1, 8), &[1, 2, 3]);
        s.send(b, &[a1, b, c], false);
        s.view(&[a1, a2, b], &[a1, a2, b]);
        s.totem(&[a1, a2, b], (1, 24), &[1, 2]);
        for x in [a1, a2, b] {
            s.send(x, &[a1, a2, b], true);
        }
        for x in [a1, a2, b] {
            s.close(x);
        }
        let r = check(&s.histories());
        assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::VirtualSynchrony),
            "{:#?}",
            r.violations
        );
    }

    #[test]
    fn messages_of_a_failed_node_one_surviving_node_lacks_are_a_recovery_loss() {
        let r = check(&super::synthetic::recovery_loss(false));
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(!r.anomalies.is_empty(), "{r:?}");
        assert!(
            r.anomalies.iter().all(|a| a.check == Check::LostInRecovery),
            "{:#?}",
            r.anomalies
        );
        let [loss] = &r.recovery_losses[..] else {
            panic!("{:?}", r.recovery_losses)
        };
        // The next view's install time at node 1's client: the only one that lacks them.
        let next_t = super::synthetic::recovery_loss(false)[0]
            .records
            .iter()
            .filter_map(|x| match x {
                Record::View { t, .. } => Some(*t),
                _ => None,
            })
            .nth(1)
            .expect("client a installed two views");
        assert_eq!(
            *loss,
            super::RecoveryLoss {
                ring: Some((1, 8)),
                missing_on: 1,
                delivered_on: 3,
                senders: vec![2],
                next_t: (next_t, next_t),
            }
        );
    }

    #[test]
    fn the_same_loss_at_one_client_of_a_node_is_a_violation() {
        let r = check(&super::synthetic::recovery_loss(true));
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::VirtualSynchrony),
            "{:#?}",
            r.violations
        );
        assert!(r.recovery_losses.is_empty(), "{:?}", r.recovery_losses);
    }

    #[test]
    fn a_loss_of_messages_whose_sender_stays_is_a_violation() {
        // Node 2's client sends a message that node 3 delivers and node 1 does not;
        // node 4 fails, node 2 stays: no failed sender explains the difference.
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        let c = s.start((3, 3), 5);
        let d = s.start((4, 4), 7);
        let all = [a, b, c, d];
        s.totem(&all, (1, 8), &[1, 2, 3, 4]);
        s.view(&all, &all);
        s.send(b, &[b, c], false);
        s.send(c, &[a, b, c], false);
        s.view(&[a, b, c], &[a, b, c]);
        s.totem(&[a, b, c], (1, 12), &[1, 2, 3]);
        for x in [a, b, c] {
            s.send(x, &[a, b, c], true);
        }
        for x in [a, b, c] {
            s.close(x);
        }
        let r = check(&s.histories());
        assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::VirtualSynchrony),
            "{:#?}",
            r.violations
        );
    }

    #[test]
    fn a_finished_client_outside_the_final_view_fails_liveness() {
        let mut s = Sim::default();
        let a = s.start((1, 1), 1);
        let b = s.start((2, 2), 3);
        s.view(&[a], &[a]);
        s.view(&[b], &[b]);
        s.send(a, &[a], true);
        s.send(b, &[b], true);
        s.close(a);
        s.close(b);
        assert!(checks(&s.histories()).contains(&Check::Liveness));
    }

    #[test]
    fn a_callback_after_close_or_a_count_mismatch_is_a_binding_violation() {
        let mut h = clean();
        h[0].records.push(Record::AfterClose {
            what: "deliver".into(),
            t: 0,
        });
        assert!(checks(&h).contains(&Check::Binding));
        let mut h = clean();
        let last = h[0].records.last_mut().unwrap();
        if let Record::Closed { dispatched, .. } = last {
            *dispatched = Some(1);
        }
        assert!(checks(&h).contains(&Check::Binding));
    }
}
