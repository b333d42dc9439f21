//! Checks of the group-layer clients' histories (`group_client.rs`), which share a
//! CPG group of their own:
//!
//! - **integrity**: every delivered payload decodes and its checksum matches; the
//!   sender CPG names is the incarnation the payload names, which recorded the intent
//!   to send this sequence number with these bytes.
//! - **duplicate**: no receiver delivers a message twice.
//! - **fifo**: from one sender, a receiver delivers increasing sequence numbers.
//! - **confirmation**: a confirmation resolves at most once per channel (event
//!   stream, receipt), both channels name the same position, and the sender delivered
//!   its own message at exactly that position (view, index).
//! - **agreed position**: clients that installed the same view (the same member list
//!   in the same totem ring) and moved on from it to the same next view (member list
//!   and ring), or both ended in it, deliver the same message at every index both
//!   reached. Clients that parted (a partition) may not: one side stops delivering the
//!   other's messages before its view change comes (CPG's delivery is agreed only
//!   among members that move together; a side can also deliver its own messages in a
//!   ring the others never see), so the indices after the first missing message
//!   differ. A view a client installed twice with the same key is ambiguous and
//!   skipped. A difference that is only messages of a node that failed in the
//!   transition, missing at a client on a node where the plain clients showed the
//!   same loss in the same ring ([`Check::LostInRecovery`], corosync's recovery), is
//!   reported as that anomaly instead.
//! - **leader agreement**: every client that installed a member list named the same
//!   leader for it, a member of it.
//!
//! And of the replica clients' histories (`replica_client.rs`):
//!
//! - **convergence**: the replicas that finished (recorded their final state) were
//!   ready and hold one state: the same version (length of the state's history) and
//!   the same digest. (Their views then can differ: the first to finish leaves while
//!   the others wait; the coordinator has seen them all in one view before it stopped
//!   them, and nothing is submitted after the stop.)

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checker::{Check, RecoveryLoss, Report, UnannouncedSplit, Violation};
use crate::history::{History, Member, Record};

/// (members, ring) of a view, and of the next view (`None`: the history ends in it):
/// what identifies a view and a transition across clients.
type Key = (
    Vec<Member>,
    (u32, u64),
    Option<(Vec<Member>, Option<(u32, u64)>)>,
);

/// A local view id: (connection, counter).
type ViewId = (u64, u64);

/// A message: (incarnation, sequence number).
type Msg = (u32, u64);

/// What one client delivered in one view (with its next view): its name, its node,
/// and the message at each index.
type Positions = (String, u32, BTreeMap<u64, Msg>);

/// Checks the group clients' histories; adds to `report`.
pub fn check(histories: &[History], report: &mut Report) {
    let mut v =
        |check: Check, evidence: String| report.violations.push(Violation { check, evidence });
    // Who is who, and what each intended to send.
    let mut members: HashMap<u32, Member> = HashMap::new();
    let mut intents: HashMap<(u32, u64), u64> = HashMap::new();
    for h in histories {
        let Some(Record::Start { inc, node, pid, .. }) = h.records.first() else {
            continue;
        };
        members.insert(*inc, (*node, *pid));
        for r in &h.records {
            if let Record::Send { seq, hash, .. } = r {
                intents.insert((*inc, *seq), *hash);
            }
        }
    }
    let mut messages: HashSet<(u32, u64)> = HashSet::new();
    let mut leaders: HashMap<Vec<Member>, (Option<Member>, String)> = HashMap::new();
    let mut positions: HashMap<Key, Vec<Positions>> = HashMap::new();
    // Which messages the group clients of each node delivered, in any view.
    let mut by_node: HashMap<u32, HashSet<Msg>> = HashMap::new();
    let (mut confirmations, mut compared, mut reconnects) = (0usize, 0usize, 0usize);
    for h in histories {
        let Some(Record::Start { inc, node, pid, .. }) = h.records.first() else {
            continue;
        };
        let name = format!("{} (group inc {inc}, node {node} pid {pid})", h.name);
        report.clients += 1;
        // A node id of 0 in a start record: not known yet then; its views name it.
        let my_node = if *node != 0 {
            *node
        } else {
            h.records
                .iter()
                .find_map(|r| match r {
                    Record::GView { members: m, .. } => m.iter().find(|x| x.1 == *pid).map(|x| x.0),
                    _ => None,
                })
                .unwrap_or(0)
        };
        let mut views: HashMap<(u64, u64), Vec<Member>> = HashMap::new();
        let mut rings: HashMap<(u64, u64), (u32, u64)> = HashMap::new();
        let mut own: HashMap<((u64, u64), u64), (u32, u64)> = HashMap::new();
        let mut seen: HashSet<(u32, u64)> = HashSet::new();
        let mut last: HashMap<u32, u64> = HashMap::new();
        let mut confirmed: HashMap<(u64, bool), ((u64, u64), u64)> = HashMap::new();
        let mut delivered: Vec<(ViewId, u64, Msg)> = Vec::new();
        let mut positions_confirmed: Vec<(u64, ViewId, u64, &str)> = Vec::new();
        for r in &h.records {
            match r {
                Record::Sent {
                    seq, error: None, ..
                } => {
                    messages.insert((*inc, *seq));
                }
                Record::Reconnected { .. } => reconnects += 1,
                Record::GView {
                    members: m,
                    leader,
                    view,
                    ..
                } => {
                    report.views += 1;
                    views.insert(*view, m.clone());
                    if leader.is_some_and(|l| !m.contains(&l))
                        || (leader.is_none() && !m.is_empty())
                    {
                        v(
                            Check::LeaderAgreement,
                            format!("{name} named leader {leader:?} of view {m:?}, not a member"),
                        );
                    }
                    match leaders.get(m) {
                        Some((l, who)) if l != leader => v(
                            Check::LeaderAgreement,
                            format!(
                                "{name} named leader {leader:?} of member list {m:?}; {who} named {l:?}"
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            leaders.insert(m.clone(), (*leader, name.clone()));
                        }
                    }
                }
                Record::GSettled { view, ring, .. } => {
                    rings.insert(*view, *ring);
                }
                Record::GDeliver {
                    from,
                    inc: sinc,
                    seq,
                    hash,
                    valid,
                    view,
                    index,
                    ..
                } => {
                    report.deliveries += 1;
                    if !valid {
                        v(
                            Check::Integrity,
                            format!("{name} delivered a corrupt message from {from:?} at {view:?}#{index}"),
                        );
                        continue;
                    }
                    messages.insert((*sinc, *seq));
                    // A node id of 0 in a start record: not known yet then.
                    if members
                        .get(sinc)
                        .is_some_and(|m| m.1 != from.1 || (m.0 != 0 && m.0 != from.0))
                    {
                        v(
                            Check::Integrity,
                            format!(
                                "{name} delivered inc {sinc} seq {seq} from {from:?}, but inc {sinc} is {:?}",
                                members.get(sinc)
                            ),
                        );
                    }
                    if intents.get(&(*sinc, *seq)) != Some(hash) {
                        v(
                            Check::Integrity,
                            format!(
                                "{name} delivered inc {sinc} seq {seq} (hash {hash:016x}), which \
                                 inc {sinc} never recorded sending with these bytes"
                            ),
                        );
                    }
                    if !seen.insert((*sinc, *seq)) {
                        v(
                            Check::Duplicate,
                            format!("{name} delivered inc {sinc} seq {seq} twice"),
                        );
                    }
                    if let Some(prev) = last.insert(*sinc, *seq) {
                        if prev >= *seq {
                            v(
                                Check::Fifo,
                                format!("{name} delivered inc {sinc} seq {seq} after seq {prev}"),
                            );
                        }
                    }
                    if *sinc == *inc {
                        own.insert((*view, *index), (*sinc, *seq));
                    }
                    delivered.push((*view, *index, (*sinc, *seq)));
                }
                Record::Confirm {
                    seq,
                    view,
                    index,
                    receipt,
                    ..
                } => {
                    confirmations += 1;
                    let channel = if *receipt { "receipt" } else { "event" };
                    if confirmed
                        .insert((*seq, *receipt), (*view, *index))
                        .is_some()
                    {
                        v(
                            Check::Confirmation,
                            format!("{name}: seq {seq} was confirmed twice ({channel})"),
                        );
                    }
                    if let Some(other) = confirmed.get(&(*seq, !receipt)) {
                        if *other != (*view, *index) {
                            v(
                                Check::Confirmation,
                                format!(
                                    "{name}: seq {seq} confirmed at {view:?}#{index} ({channel}) \
                                     and at {other:?} (the other channel)"
                                ),
                            );
                        }
                    }
                    // Checked at the end: a receipt is resolved on the layer's
                    // thread, not in the event stream's order, and can be recorded
                    // before the delivery is read from the stream.
                    positions_confirmed.push((*seq, *view, *index, channel));
                }
                _ => {}
            }
        }
        for (seq, view, index, channel) in positions_confirmed {
            if own.get(&(view, index)) != Some(&(*inc, seq)) {
                v(
                    Check::Confirmation,
                    format!(
                        "{name}: seq {seq} confirmed at {view:?}#{index} ({channel}), but it \
                         delivered {:?} there",
                        own.get(&(view, index))
                    ),
                );
            }
        }
        // Agreed positions: per view (and its next view) this client installed once.
        let mut order: Vec<ViewId> = views.keys().copied().collect();
        order.sort_unstable();
        let key_of = |k: usize| -> Option<Key> {
            let id = order[k];
            let next = order
                .get(k + 1)
                .map(|n| (views[n].clone(), rings.get(n).copied()));
            Some((views[&id].clone(), *rings.get(&id)?, next))
        };
        let mut keys: HashMap<Key, usize> = HashMap::new();
        let mut key_at: HashMap<ViewId, Key> = HashMap::new();
        for (k, id) in order.iter().enumerate() {
            if let Some(key) = key_of(k) {
                *keys.entry(key.clone()).or_default() += 1;
                key_at.insert(*id, key);
            }
        }
        let mine = by_node.entry(my_node).or_default();
        let mut in_views: HashMap<Key, BTreeMap<u64, Msg>> = HashMap::new();
        for (view, index, msg) in delivered {
            mine.insert(msg);
            let Some(key) = key_at.get(&view).cloned() else {
                continue;
            };
            if keys.get(&key) != Some(&1) {
                continue;
            }
            in_views.entry(key).or_default().insert(index, msg);
        }
        for (key, at) in in_views {
            positions
                .entry(key)
                .or_default()
                .push((name.clone(), my_node, at));
        }
    }
    let mut keys: Vec<_> = positions.into_iter().collect();
    keys.sort_by(|a, b| a.1[0].0.cmp(&b.1[0].0));
    for (key, clients) in keys {
        for (j, b) in clients.iter().enumerate() {
            for a in &clients[..j] {
                compared += agreed_positions(&key, a, b, &by_node, &members, report);
            }
        }
    }
    report.messages += messages.len();
    report.notes.push(format!(
        "group layer: {} clients, {confirmations} confirmations, {compared} positions agreed \
         between clients, {reconnects} reconnections, {} member lists with one leader",
        histories.len(),
        leaders.len()
    ));
}

/// Compares what clients `a` and `b` delivered at each index of the view `key`;
/// reports each index where they differ, or, if the difference is a loss in corosync's
/// recovery that the plain clients showed too, one anomaly. Returns the number of
/// indices where they agree.
fn agreed_positions(
    key: &Key,
    a: &Positions,
    b: &Positions,
    by_node: &HashMap<u32, HashSet<Msg>>,
    members: &HashMap<u32, Member>,
    report: &mut Report,
) -> usize {
    let (m, ring) = (&key.0, key.1);
    let mut agreed = 0;
    let mut differ = Vec::new();
    for (index, msg) in &a.2 {
        match b.2.get(index) {
            Some(other) if other == msg => agreed += 1,
            Some(other) => differ.push((*index, *msg, *other)),
            None => {}
        }
    }
    if differ.is_empty() {
        return agreed;
    }
    if let Some(loss) = lost_in_recovery(key, a, b, by_node, members, &report.recovery_losses) {
        report.anomalies.push(Violation {
            check: Check::LostInRecovery,
            evidence: format!(
                "in view {m:?} ring {ring:?} (both moved on to {:?}), {} and {} deliver \
                 different messages from index {} on: {} on node {} never delivered {} \
                 message(s) of node(s) {:?} (which left), the rest is the same in the same \
                 order; the plain clients of these nodes lost messages of the same node(s) \
                 in this ring ({} anomaly)",
                key.2,
                a.0,
                b.0,
                differ[0].0,
                if loss.0 { &b.0 } else { &a.0 },
                loss.1.missing_on,
                loss.2,
                loss.1.senders,
                Check::LostInRecovery
            ),
        });
        return agreed;
    }
    if unannounced_split(key, a, b, differ[0].0, by_node, &report.unannounced_splits) {
        report.anomalies.push(Violation {
            check: Check::UnannouncedMembership,
            evidence: format!(
                "in view {m:?} ring {ring:?} (both moved on to {:?}), {} and {} deliver \
                 different messages from index {} on: what one delivered from there and \
                 the other did not, no group client on the other's node ever delivered, \
                 and what both delivered is in the same order; the plain clients of these \
                 nodes split the same way in this ring, across rings nobody was told \
                 about ({} anomaly)",
                key.2,
                a.0,
                b.0,
                differ[0].0,
                Check::UnannouncedMembership
            ),
        });
        return agreed;
    }
    for (index, msg, other) in differ {
        report.violations.push(Violation {
            check: Check::AgreedPosition,
            evidence: format!(
                "in view {m:?} ring {ring:?} (both moved on to {:?}) at index {index}: {} \
                 delivered inc {} seq {}, {} delivered inc {} seq {}",
                key.2, b.0, other.0, other.1, a.0, msg.0, msg.1
            ),
        });
    }
    agreed
}

/// Whether `a` and `b` differ in view `key` only by messages one of them never
/// delivered (in the same order otherwise), all sent from nodes that are not in the
/// next view, never delivered by any group client of the node that lacks them, and
/// the plain clients showed a [`RecoveryLoss`] of the same nodes in the same ring.
/// Returns (whether `b` is the one that lacks them, that loss, how many).
fn lost_in_recovery<'r>(
    key: &Key,
    a: &Positions,
    b: &Positions,
    by_node: &HashMap<u32, HashSet<Msg>>,
    members: &HashMap<u32, Member>,
    losses: &'r [RecoveryLoss],
) -> Option<(bool, &'r RecoveryLoss, usize)> {
    if a.1 == b.1 || a.1 == 0 || b.1 == 0 {
        return None;
    }
    let (la, lb): (Vec<Msg>, Vec<Msg>) = (
        a.2.values().copied().collect(),
        b.2.values().copied().collect(),
    );
    let (sa, sb): (HashSet<Msg>, HashSet<Msg>) =
        (la.iter().copied().collect(), lb.iter().copied().collect());
    let only_a: Vec<Msg> = la.iter().copied().filter(|x| !sb.contains(x)).collect();
    let only_b: Vec<Msg> = lb.iter().copied().filter(|x| !sa.contains(x)).collect();
    // (b lacks them?, the list with them, the list without, the messages)
    let (b_lacks, with, without, only) = match (only_a.is_empty(), only_b.is_empty()) {
        (false, true) => (true, &la, &lb, only_a),
        (true, false) => (false, &lb, &la, only_b),
        _ => return None,
    };
    let (having, lacking) = if b_lacks { (a.1, b.1) } else { (b.1, a.1) };
    let lost: HashSet<Msg> = only.iter().copied().collect();
    let rest: Vec<Msg> = with.iter().copied().filter(|x| !lost.contains(x)).collect();
    if rest.iter().zip(without.iter()).any(|(x, y)| x != y) {
        return None;
    }
    if by_node
        .get(&lacking)
        .is_some_and(|d| only.iter().any(|x| d.contains(x)))
    {
        return None;
    }
    let mut senders: Vec<u32> = only
        .iter()
        .map(|x| members.get(&x.0).map(|m| m.0))
        .collect::<Option<Vec<u32>>>()?;
    senders.sort_unstable();
    senders.dedup();
    if senders.iter().any(|n| {
        key.2
            .as_ref()
            .is_some_and(|next| next.0.iter().any(|m| m.0 == *n))
    }) {
        return None;
    }
    losses
        .iter()
        .find(|l| {
            l.ring == Some(key.1)
                && l.missing_on == lacking
                && l.delivered_on == having
                && senders.iter().all(|n| l.senders.contains(n))
        })
        .map(|l| (b_lacks, l, only.len()))
}

/// Whether the difference between `a` and `b` in the view `key`, from index `from`
/// on, has the signature of corosync's unannounced rings: the plain clients of the
/// two nodes split the same way in this ring ([`Check::UnannouncedMembership`]); from
/// `from` on (before it they agree), what one side delivered and the other did not,
/// no group client on the other's node ever delivered; and what both delivered, they
/// delivered in the same relative order.
fn unannounced_split(
    key: &Key,
    a: &Positions,
    b: &Positions,
    from: u64,
    by_node: &HashMap<u32, HashSet<Msg>>,
    splits: &[UnannouncedSplit],
) -> bool {
    if a.1 == b.1 || a.1 == 0 || b.1 == 0 {
        return false;
    }
    let nodes = (a.1.min(b.1), a.1.max(b.1));
    if !splits
        .iter()
        .any(|s| s.ring == Some(key.1) && s.nodes == nodes)
    {
        return false;
    }
    let tail = |p: &Positions| -> Vec<Msg> { p.2.range(from..).map(|(_, m)| *m).collect() };
    let (ta, tb) = (tail(a), tail(b));
    let (sa, sb): (HashSet<Msg>, HashSet<Msg>) =
        (ta.iter().copied().collect(), tb.iter().copied().collect());
    // What `mine` delivered and `theirs` did not: never delivered on `node`.
    let never_on = |mine: &[Msg], theirs: &HashSet<Msg>, node: u32| {
        let seen = by_node.get(&node);
        mine.iter()
            .filter(|m| !theirs.contains(m))
            .all(|m| !seen.is_some_and(|d| d.contains(m)))
    };
    let node_level = never_on(&ta, &sb, b.1) && never_on(&tb, &sa, a.1);
    let common_a = ta.iter().filter(|m| sb.contains(m));
    let common_b = tb.iter().filter(|m| sa.contains(m));
    node_level && common_a.eq(common_b)
}

/// Checks the replica clients' histories; adds to `report`.
pub fn check_replicas(histories: &[History], report: &mut Report) {
    let mut finals: Vec<(String, Member, u64, u64, Vec<Member>, bool)> = Vec::new();
    let mut submitted = 0u64;
    // Per round: the first member to learn its view, at which version, with whom.
    let mut views: HashMap<&str, (String, u64, &[Member])> = HashMap::new();
    let mut views_compared = 0usize;
    let outcomes_compared = check_outcomes(histories, report);
    let (gated, refused) = check_quorum_gate(histories, report);
    for h in histories {
        let Some(Record::Start { inc, node, pid, .. }) = h.records.first() else {
            continue;
        };
        report.clients += 1;
        let who = format!("{} (replica inc {inc}, node {node} pid {pid})", h.name);
        for r in &h.records {
            match r {
                Record::GView { .. } => report.views += 1,
                Record::RView {
                    round,
                    members,
                    version,
                    ..
                } => match views.get(round.as_str()) {
                    None => {
                        views.insert(round, (who.clone(), *version, members));
                    }
                    Some((first, v, m)) => {
                        views_compared += 1;
                        if (*v, *m) != (*version, &members[..]) {
                            report.violations.push(Violation {
                                check: Check::ReplicaView,
                                evidence: format!(
                                    "{first} learned the view of {round} at version {v} with \
                                     members {m:?}, {who} at version {version} with {members:?}"
                                ),
                            });
                        }
                    }
                },
                Record::RFinal {
                    version,
                    digest,
                    members,
                    ready,
                    submitted: n,
                    disorder,
                    own_last,
                    confirmed,
                    ..
                } => {
                    submitted += n;
                    let who = format!("{} (replica inc {inc}, node {node} pid {pid})", h.name);
                    if *disorder > 0 {
                        report.violations.push(Violation {
                            check: Check::AppliedOnce,
                            evidence: format!(
                                "{who}: its final state's history applied {disorder} \
                                 operation(s) twice or out of their origin's order"
                            ),
                        });
                    }
                    if confirmed > own_last {
                        report.violations.push(Violation {
                            check: Check::AppliedOnce,
                            evidence: format!(
                                "{who}: its operation {confirmed} was confirmed and never \
                                 reported discarded, but the final history holds its \
                                 operations only up to {own_last}"
                            ),
                        });
                    }
                    finals.push((
                        format!("{} (replica inc {inc}, node {node} pid {pid})", h.name),
                        (*node, *pid),
                        *version,
                        *digest,
                        members.clone(),
                        *ready,
                    ));
                }
                _ => {}
            }
        }
    }
    let mut v = |evidence: String| {
        report.violations.push(Violation {
            check: Check::Convergence,
            evidence,
        });
    };
    let show = |f: &(String, Member, u64, u64, Vec<Member>, bool)| {
        format!("{} at v{} #{:016x} in view {:?}", f.0, f.2, f.3, f.4)
    };
    for f in &finals {
        if !f.5 {
            v(format!("{} was not in a ready state at the end", show(f)));
        }
    }
    if let Some(first) = finals.first() {
        for f in &finals[1..] {
            if (f.2, f.3) != (first.2, first.3) {
                v(format!("diverged: {} but {}", show(f), show(first)));
            }
        }
    }
    report.notes.push(format!(
        "replica layer: {} clients, {} finished, {submitted} operations submitted by the finished ones \
         ({refused} refused for want of quorum), {gated} applied operations checked against the \
         agreed quorum, {views_compared} view changes and {outcomes_compared} outcomes compared \
         between members, final states {:?}",
        histories.len(),
        finals.len(),
        finals
            .iter()
            .map(|f| format!("v{} #{:016x}", f.2, f.3))
            .collect::<std::collections::BTreeSet<_>>()
    ));
}

/// Quorum gate: no replica applied an operation where the quorum its view agreed on
/// (its `Event::Quorum` records, in the order of its history) did not permit writes.
/// Every `apply` record of an operation on the agreed state comes after the latest
/// quorum record; before any (a cluster without a provider) everything is permitted.
/// (That no quorate write is lost after a heal is the applied-once check: every
/// operation confirmed to its origin, and not reported discarded, is in the final
/// history; result agreement compares the epochs at which members applied an
/// operation.) Returns the operations checked and the refusals counted.
fn check_quorum_gate(histories: &[History], report: &mut Report) -> (usize, u64) {
    let (mut checked, mut refused) = (0, 0);
    for h in histories {
        let Some(Record::Start { inc, node, pid, .. }) = h.records.first() else {
            continue;
        };
        let who = format!("{} (replica inc {inc}, node {node} pid {pid})", h.name);
        let mut quorum: Option<(bool, &str)> = None;
        for r in &h.records {
            match r {
                Record::RQuorum { permits, state, .. } => quorum = Some((*permits, state)),
                Record::ROp {
                    origin,
                    seq,
                    own: false,
                    ..
                } => {
                    checked += 1;
                    if let Some((false, state)) = quorum {
                        report.violations.push(Violation {
                            check: Check::QuorumGate,
                            evidence: format!(
                                "{who} applied operation {seq} of {origin:?} where the agreed \
                                 quorum was {state}"
                            ),
                        });
                    }
                }
                Record::RFinal { refused: n, .. } => refused += n,
                _ => {}
            }
        }
    }
    (checked, refused)
}

/// Result agreement: the records of one operation's outcome agree where the layer
/// promises they do. CPG's agreed order (and virtual synchrony) holds among members
/// that move on together from a view to the next: so two replicas' `apply` records
/// of an operation are compared when each made it in its current view with the same
/// member list and each moved on to a next view with the same member list (which then
/// holds both), or both finished in that view. Members that part at the next view
/// change can deliver the view's last messages differently (a partition; a daemon
/// that missed messages while the ring re-formed), and their outcomes may differ. A
/// ticket's outcome is compared with its own replica's `apply` record of the
/// operation (the one the ticket reports). Returns how many pairs were compared.
///
/// Two members that moved on together but whose outcomes differ because corosync's
/// recovery never gave one of them a departed node's last messages, which the plain
/// clients showed as the same loss at the same transition ([`Check::LostInRecovery`]),
/// are reported as that anomaly (once per pair of views), not as a violation: see
/// [`replica_recovery_loss`].
fn check_outcomes(histories: &[History], report: &mut Report) -> usize {
    /// An `apply` record: who (history, view index there), in which view (members),
    /// moving on to which (`None`: finished in it), the version, the output and the
    /// quorum epoch.
    type Applied = (ReplicaView, Vec<Member>, Option<Vec<Member>>, u64, i64, u64);
    let mut applied: HashMap<(Member, u64), Vec<Applied>> = HashMap::new();
    let mut compared = 0;
    let mut seen = ReplicaViews::default();
    for (hi, h) in histories.iter().enumerate() {
        let Some(Record::Start { inc, node, pid, .. }) = h.records.first() else {
            continue;
        };
        let who = format!("{} (replica inc {inc}, node {node} pid {pid})", h.name);
        seen.names.insert(hi, (who.clone(), *node));
        let views: Vec<(&[Member], u64)> = h
            .records
            .iter()
            .filter_map(|r| match r {
                Record::GView { members, t, .. } => Some((&members[..], *t)),
                _ => None,
            })
            .collect();
        let finished_in = h.records.iter().find_map(|r| match r {
            Record::RFinal { members, .. } => Some(&members[..]),
            _ => None,
        });
        let mut current: Option<usize> = None;
        let mut count = 0;
        let mut mine: HashMap<(Member, u64), (u64, i64)> = HashMap::new();
        let mut tickets = Vec::new();
        for r in &h.records {
            match r {
                Record::GView { .. } => {
                    current = Some(count);
                    count += 1;
                }
                Record::ROp {
                    origin,
                    seq,
                    version,
                    output,
                    epoch,
                    own: false,
                    ..
                } => {
                    mine.insert((*origin, *seq), (*version, *output));
                    seen.on_node
                        .entry(*node)
                        .or_default()
                        .insert((*origin, *seq));
                    let Some(i) = current else { continue };
                    seen.ops.entry((hi, i)).or_default().push((*origin, *seq));
                    let next = views.get(i + 1).map(|v| v.0.to_vec());
                    if let Some(&(_, t)) = views.get(i + 1) {
                        seen.next_t.insert((hi, i), t);
                    }
                    if next.is_none() && finished_in != Some(views[i].0) {
                        continue;
                    }
                    applied.entry((*origin, *seq)).or_default().push((
                        (hi, i),
                        views[i].0.to_vec(),
                        next,
                        *version,
                        *output,
                        *epoch,
                    ));
                }
                Record::ROp {
                    origin,
                    seq,
                    version,
                    output,
                    own: true,
                    ..
                } => tickets.push(((*origin, *seq), *version, *output)),
                _ => {}
            }
        }
        for ((origin, seq), version, output) in tickets {
            let Some(&(v, o)) = mine.get(&(origin, seq)) else {
                continue;
            };
            compared += 1;
            if (v, o) != (version, output) {
                report.violations.push(Violation {
                    check: Check::ResultAgreement,
                    evidence: format!(
                        "operation {seq} of {origin:?}: {who}'s ticket says version {version} \
                         output {output}, its own apply version {v} output {o}"
                    ),
                });
            }
        }
    }
    let mut ops: Vec<_> = applied.into_iter().collect();
    ops.sort();
    // Per pair of views whose outcomes differ: whether a recovery loss explains it.
    let mut excused: HashMap<(ReplicaView, ReplicaView), bool> = HashMap::new();
    for ((origin, seq), records) in ops {
        for (k, a) in records.iter().enumerate() {
            let Some(b) = records[..k].iter().find(|b| (&b.1, &b.2) == (&a.1, &a.2)) else {
                continue;
            };
            compared += 1;
            if (a.3, a.4, a.5) == (b.3, b.4, b.5) {
                continue;
            }
            let pair = (a.0.min(b.0), a.0.max(b.0));
            let explained = *excused.entry(pair).or_insert_with(|| {
                let Some(anomaly) = replica_recovery_loss(pair, &a.1, &a.2, &seen, report)
                    .or_else(|| replica_unannounced_split(pair, &a.1, &a.2, &seen, report))
                else {
                    return false;
                };
                report.anomalies.push(anomaly);
                true
            });
            if explained {
                continue;
            }
            let next = a.2.as_ref().map_or("the end".into(), |n| format!("{n:?}"));
            report.violations.push(Violation {
                check: Check::ResultAgreement,
                evidence: format!(
                    "operation {seq} of {origin:?}, applied in view {:?} by members that \
                     moved on together to {next}: {} says version {} output {} epoch {}, \
                     {} version {} output {} epoch {}",
                    a.1, seen.names[&b.0 .0].0, b.3, b.4, b.5, seen.names[&a.0 .0].0, a.3, a.4, a.5
                ),
            });
        }
    }
    compared
}

/// One view of one replica client: (its history's index, the view's index there).
type ReplicaView = (usize, usize);

/// What [`check_outcomes`] gathers for [`replica_recovery_loss`].
#[derive(Default)]
struct ReplicaViews {
    /// Per history: its name and node.
    names: HashMap<usize, (String, u32)>,
    /// The operations applied in each view, in order.
    ops: HashMap<ReplicaView, Vec<(Member, u64)>>,
    /// When the client installed the view after each view.
    next_t: HashMap<ReplicaView, u64>,
    /// Per node: every operation a replica client there applied, in any view.
    on_node: HashMap<u32, HashSet<(Member, u64)>>,
}

impl ReplicaViews {
    /// The nodes of the two views' clients and what each applied in its view, if the
    /// two are on different known nodes (a daemon's anomaly is between nodes).
    #[allow(clippy::type_complexity)]
    fn on_two_nodes(
        &self,
        (a, b): (ReplicaView, ReplicaView),
    ) -> Option<((u32, &[(Member, u64)]), (u32, &[(Member, u64)]))> {
        let (node_a, node_b) = (self.names.get(&a.0)?.1, self.names.get(&b.0)?.1);
        if node_a == node_b || node_a == 0 || node_b == 0 {
            return None;
        }
        let ops = |v| self.ops.get(&v).map_or(&[][..], |o| &o[..]);
        Some(((node_a, ops(a)), (node_b, ops(b))))
    }
}

/// How far apart (ms) a replica client's transition and the plain clients' one on the
/// same node may be to count as the same transition of their daemon.
const SAME_TRANSITION_MS: u64 = 2_000;

/// Whether two replica clients' views `pair` (members `members`, both moving on to
/// `next`), whose outcomes differ, differ only as corosync's recovery made them: one
/// applied operations the other never did, all from nodes that left in this
/// transition (not in `next`), no replica client on the lacking node ever applied
/// them, everything else both applied in the same order; and the plain clients showed
/// a [`RecoveryLoss`] of the same nodes' messages at this transition (the lacking
/// node's plain clients installed the next view within [`SAME_TRANSITION_MS`] of its
/// replica client). Returns that anomaly.
fn replica_recovery_loss(
    pair: (ReplicaView, ReplicaView),
    members: &[Member],
    next: &Option<Vec<Member>>,
    seen: &ReplicaViews,
    report: &Report,
) -> Option<Violation> {
    let next = next.as_ref()?;
    let (a, b) = pair;
    let ((node_a, la), (node_b, lb)) = seen.on_two_nodes(pair)?;
    let (sa, sb): (HashSet<_>, HashSet<_>) = (la.iter().collect(), lb.iter().collect());
    let only_a: Vec<_> = la.iter().filter(|x| !sb.contains(x)).copied().collect();
    let only_b: Vec<_> = lb.iter().filter(|x| !sa.contains(x)).copied().collect();
    // (the view that lacks them, its node, the other's node, the lost operations)
    let (lacking, lacking_node, having_node, lost) = match (only_a.is_empty(), only_b.is_empty()) {
        (false, true) => (b, node_b, node_a, only_a),
        (true, false) => (a, node_a, node_b, only_b),
        _ => return None,
    };
    let with = if lacking == b { la } else { lb };
    let without = if lacking == b { lb } else { la };
    let gone: HashSet<_> = lost.iter().collect();
    if !with.iter().filter(|x| !gone.contains(x)).eq(without.iter()) {
        return None;
    }
    if seen
        .on_node
        .get(&lacking_node)
        .is_some_and(|d| lost.iter().any(|x| d.contains(x)))
    {
        return None;
    }
    let mut senders: Vec<u32> = lost.iter().map(|(origin, _)| origin.0).collect();
    senders.sort_unstable();
    senders.dedup();
    if senders
        .iter()
        .any(|n| *n == lacking_node || *n == having_node || next.iter().any(|m| m.0 == *n))
    {
        return None;
    }
    let at = *seen.next_t.get(&lacking)?;
    let loss = report.recovery_losses.iter().find(|l| {
        l.missing_on == lacking_node
            && l.delivered_on == having_node
            && senders.iter().all(|n| l.senders.contains(n))
            && at + SAME_TRANSITION_MS >= l.next_t.0
            && at <= l.next_t.1 + SAME_TRANSITION_MS
    })?;
    let (name_a, name_b) = (&seen.names[&a.0].0, &seen.names[&b.0].0);
    Some(Violation {
        check: Check::LostInRecovery,
        evidence: format!(
            "in view {members:?} (both moved on to {next:?}), {name_a} and {name_b} report \
             different outcomes: the replica on node {lacking_node} never applied {} \
             operation(s) of node(s) {senders:?} (which left), the rest is the same in the \
             same order; the plain clients of these nodes lost messages of the same node(s) \
             in ring {:?} at this transition ({} anomaly)",
            lost.len(),
            loss.ring,
            Check::LostInRecovery
        ),
    })
}

/// Whether two replica clients' views `pair` (members `members`, both moving on to
/// `next`), whose outcomes differ, differ as corosync's unannounced rings made the
/// plain clients of their nodes differ: the plain clients split the same way
/// ([`UnannouncedSplit`], both replicas installing the next view within
/// [`SAME_TRANSITION_MS`] of them); from the first operation where the two differ on,
/// what one applied and the other did not, no replica client on the other's node ever
/// applied; and what both applied from there, they applied in the same relative order.
/// Returns that anomaly.
fn replica_unannounced_split(
    pair: (ReplicaView, ReplicaView),
    members: &[Member],
    next: &Option<Vec<Member>>,
    seen: &ReplicaViews,
    report: &Report,
) -> Option<Violation> {
    let next = next.as_ref()?;
    let (a, b) = pair;
    let ((node_a, la), (node_b, lb)) = seen.on_two_nodes(pair)?;
    let (at_a, at_b) = (*seen.next_t.get(&a)?, *seen.next_t.get(&b)?);
    let nodes = (node_a.min(node_b), node_a.max(node_b));
    let split = report.unannounced_splits.iter().find(|s| {
        s.nodes == nodes
            && [at_a, at_b].iter().all(|&at| {
                at + SAME_TRANSITION_MS >= s.next_t.0 && at <= s.next_t.1 + SAME_TRANSITION_MS
            })
    })?;
    let from = la.iter().zip(lb.iter()).take_while(|(x, y)| x == y).count();
    let (ta, tb) = (&la[from..], &lb[from..]);
    let (sa, sb): (HashSet<_>, HashSet<_>) = (ta.iter().collect(), tb.iter().collect());
    // What `mine` applied and `theirs` did not: never applied on `node`.
    let never_on = |mine: &[(Member, u64)], theirs: &HashSet<&(Member, u64)>, node: u32| {
        let applied = seen.on_node.get(&node);
        mine.iter()
            .filter(|x| !theirs.contains(x))
            .all(|x| !applied.is_some_and(|d| d.contains(x)))
    };
    let node_level = never_on(ta, &sb, node_b) && never_on(tb, &sa, node_a);
    let common_a = ta.iter().filter(|x| sb.contains(x));
    let common_b = tb.iter().filter(|x| sa.contains(x));
    if !(node_level && common_a.eq(common_b)) {
        return None;
    }
    let (name_a, name_b) = (&seen.names[&a.0].0, &seen.names[&b.0].0);
    Some(Violation {
        check: Check::UnannouncedMembership,
        evidence: format!(
            "in view {members:?} (both moved on to {next:?}), {name_a} and {name_b} report \
             different outcomes from operation {} of the view on: what one applied and the \
             other did not, no replica on the other's node ever applied, and what both \
             applied is in the same order; the plain clients of these nodes split the same \
             way in ring {:?} at this transition, across rings nobody was told about ({} \
             anomaly)",
            from + 1,
            split.ring,
            Check::UnannouncedMembership
        ),
    })
}

/// What [`synthetic_replicas`] plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaPlant {
    /// Three finished replicas in one state.
    Nothing,
    /// One of them in another state.
    Diverged,
    /// The common state applied an operation twice.
    Duplicate,
    /// One replica's confirmed operation is missing from the common state.
    LostConfirmed,
    /// One replica learned a view change at another version than the others.
    ViewVersion,
    /// One replica's `apply` returned another output for an operation than the others
    /// that moved on with it.
    OutputDiffers,
    /// A ticket reported another output than its own replica's `apply`.
    TicketDiffers,
    /// One replica applied operations after its agreed quorum said not quorate.
    AppliedNotQuorate,
}

/// Synthetic replica-client histories, with `plant`; for the unit tests and
/// `--self-test`.
pub fn synthetic_replicas(plant: ReplicaPlant) -> Vec<History> {
    let members: Vec<Member> = vec![(1, 601), (2, 602), (3, 603)];
    members
        .iter()
        .enumerate()
        .map(|(i, &(node, pid))| {
            let inc = 21 + i as u32;
            // Two view changes every member learned, at versions 0 and 60; the first
            // member's operations 1 to 3, as its tickets and the others' apply saw
            // them.
            let mut learned = vec![
                Record::RView {
                    round: "round 1:601@1.1#0".into(),
                    members: members.clone(),
                    version: 0,
                    t: 2001,
                },
                Record::RView {
                    round: "round 1:601@1.2#1".into(),
                    members: members.clone(),
                    version: 60 + u64::from(plant == ReplicaPlant::ViewVersion && i == 2),
                    t: 2001,
                },
            ];
            let output = |seq: u64, differs: bool| if differs { 999 } else { -7 * seq as i64 };
            // Quorate from the start; the second member's agreed quorum is lost before
            // the operations where that is planted.
            learned.push(Record::RQuorum {
                permits: true,
                state: "quorate in ring 1.4".into(),
                epoch: 1,
                t: 2001,
            });
            if plant == ReplicaPlant::AppliedNotQuorate && i == 1 {
                learned.push(Record::RQuorum {
                    permits: false,
                    state: "not quorate in ring 2.8".into(),
                    epoch: 1,
                    t: 2001,
                });
            }
            for seq in 1..=3 {
                learned.push(Record::ROp {
                    origin: members[0],
                    seq,
                    version: 60 + seq,
                    output: output(
                        seq,
                        plant == ReplicaPlant::OutputDiffers && i == 1 && seq == 2,
                    ),
                    epoch: 1,
                    own: false,
                    t: 2001,
                });
                if i == 0 {
                    learned.push(Record::ROp {
                        origin: members[0],
                        seq,
                        version: 60 + seq,
                        output: output(seq, plant == ReplicaPlant::TicketDiffers && seq == 3),
                        epoch: 0,
                        own: true,
                        t: 2001,
                    });
                }
            }
            let mut records = vec![
                Record::Start {
                    inc,
                    node,
                    pid,
                    api: crate::history::Api::Replica,
                    t: 2000,
                },
                Record::GView {
                    members: members.clone(),
                    leader: Some(members[0]),
                    view: (1, 1),
                    t: 2001,
                },
            ];
            records.extend(learned);
            History {
                name: format!("client-{inc}-{node}-{pid}"),
                records: records
                    .into_iter()
                    .chain([
                        Record::RFinal {
                            version: 120,
                            digest: if plant == ReplicaPlant::Diverged && i == 2 {
                                0xbad
                            } else {
                                0x600d
                            },
                            members: members.clone(),
                            ready: true,
                            submitted: 40,
                            disorder: u64::from(plant == ReplicaPlant::Duplicate),
                            own_last: 40,
                            confirmed: if plant == ReplicaPlant::LostConfirmed && i == 1 {
                                41
                            } else {
                                40
                            },
                            refused: 0,
                            t: 2002,
                        },
                        Record::Drained {
                            complete: true,
                            t: 2003,
                        },
                        Record::Closed {
                            events: 5,
                            dispatched: None,
                            freed: None,
                            t: 2004,
                        },
                    ])
                    .collect(),
            }
        })
        .collect()
}

/// Synthetic group-client histories: used by the unit tests and by `--self-test`.
pub mod synthetic {
    use crate::checker::Check;
    use crate::history::{encode, fnv1a, Api, History, Member, Record};

    /// One simulated client: (member, inc, records, next seq, current local view id).
    type SimClient = (Member, u32, Vec<Record>, u64, (u64, u64));

    /// A small run of three group clients, as a correct layer would record it.
    struct Sim {
        clients: Vec<SimClient>,
        t: u64,
        /// Messages delivered in the current view of each client.
        index: Vec<u64>,
    }

    impl Sim {
        /// Group clients inc 11, 12 and 13 on nodes 1, 2 and 3 (pids 501-503).
        fn three() -> Sim {
            let mut s = Sim {
                clients: Vec::new(),
                t: 1000,
                index: vec![0; 3],
            };
            for (i, m) in [(1, 501), (2, 502), (3, 503)].into_iter().enumerate() {
                let inc = 11 + i as u32;
                let start = Record::Start {
                    inc,
                    node: m.0,
                    pid: m.1,
                    api: Api::Group,
                    t: 1000,
                };
                s.clients.push((m, inc, vec![start], 1, (1, 0)));
            }
            s
        }

        fn histories(self) -> Vec<History> {
            self.clients
                .into_iter()
                .map(|(m, inc, records, _, _)| History {
                    name: format!("client-{inc}-{}-{}", m.0, m.1),
                    records,
                })
                .collect()
        }

        fn tick(&mut self) -> u64 {
            self.t += 1;
            self.t
        }

        fn view(&mut self, at: &[usize], members: &[usize], ring: (u32, u64)) {
            let mut list: Vec<Member> = members.iter().map(|&c| self.clients[c].0).collect();
            list.sort_unstable();
            for &c in at {
                let t = self.tick();
                let cl = &mut self.clients[c];
                cl.4 = (cl.4 .0, cl.4 .1 + 1);
                let view = cl.4;
                cl.2.push(Record::GView {
                    members: list.clone(),
                    leader: list.first().copied(),
                    view,
                    t,
                });
                cl.2.push(Record::GSettled { view, ring, t });
                self.index[c] = 0;
            }
        }

        fn send(&mut self, from: usize, to: &[usize]) {
            let t = self.tick();
            let (member, inc) = (self.clients[from].0, self.clients[from].1);
            let seq = self.clients[from].3;
            self.clients[from].3 += 1;
            let msg = encode(inc, seq, false, 16);
            let hash = fnv1a(&msg);
            let r = &mut self.clients[from].2;
            r.push(Record::Send {
                seq,
                hash,
                fin: false,
                t,
            });
            r.push(Record::Sent {
                seq,
                error: None,
                t,
            });
            for &c in to {
                let index = self.index[c];
                self.index[c] += 1;
                let view = self.clients[c].4;
                self.clients[c].2.push(Record::GDeliver {
                    from: member,
                    inc,
                    seq,
                    hash,
                    valid: true,
                    view,
                    index,
                    t,
                });
                if c == from {
                    for receipt in [false, true] {
                        self.clients[c].2.push(Record::Confirm {
                            seq,
                            view,
                            index,
                            receipt,
                            t,
                        });
                    }
                }
            }
        }
    }

    /// A clean run: three clients in one view; one loses its daemon, the others go
    /// on; it reconnects; everyone finishes.
    pub fn clean() -> Vec<History> {
        let mut s = Sim::three();
        let all = [0, 1, 2];
        s.view(&all, &all, (1, 4));
        for _ in 0..3 {
            for x in all {
                s.send(x, &all);
            }
        }
        let t = s.tick();
        s.clients[2].2.push(Record::Disconnected {
            error: "CS_ERR_LIBRARY".into(),
            t,
        });
        s.view(&[0, 1], &[0, 1], (1, 4));
        s.send(0, &[0, 1]);
        s.send(1, &[0, 1]);
        s.clients[2].4 = (2, s.clients[2].4 .1);
        s.clients[2]
            .2
            .push(Record::Reconnected { incarnation: 2, t });
        s.view(&all, &all, (1, 8));
        for x in all {
            s.send(x, &all);
        }
        for c in all {
            let t = s.tick();
            s.clients[c].2.push(Record::Drained { complete: true, t });
            s.clients[c].2.push(Record::Closed {
                events: 0,
                dispatched: None,
                freed: None,
                t,
            });
        }
        s.histories()
    }

    /// The group clients' side of `checker::synthetic::recovery_loss`: in ring 1.8 the
    /// client on node 2 sends two messages that the client on node 3 delivers and the
    /// one on node 1 never does; node 2 fails and the others move on to ring 1.c.
    pub fn recovery_loss() -> Vec<History> {
        let mut s = Sim::three();
        let all = [0, 1, 2];
        s.view(&all, &all, (1, 8));
        for x in all {
            s.send(x, &all);
        }
        s.send(1, &[1, 2]);
        s.send(1, &[1, 2]);
        s.send(2, &[0, 2]);
        s.send(0, &[0, 2]);
        s.view(&[0, 2], &[0, 2], (1, 12));
        s.send(0, &[0, 2]);
        s.histories()
    }

    /// The group clients' side of `checker::synthetic::hidden_split`: in ring 1.8 the
    /// clients on nodes 1 and 2 each deliver a message of their own that the other
    /// never gets, then two messages both deliver; the client on node 3 is gone and
    /// the two move on together. With `swap`, node 2's client delivers those two in
    /// the other order: not what a split does.
    pub fn hidden_split(swap: bool) -> Vec<History> {
        let mut s = Sim::three();
        let all = [0, 1, 2];
        s.view(&all, &all, (1, 8));
        for x in all {
            s.send(x, &all);
        }
        s.send(0, &[0]);
        s.send(0, &[0]);
        s.send(1, &[1]);
        s.send(0, &[0, 1]);
        s.send(1, &[0, 1]);
        if swap {
            let at: Vec<usize> = s.clients[1]
                .2
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Record::GDeliver { .. }))
                .map(|(k, _)| k)
                .collect();
            let (x, y) = (at[at.len() - 2], at[at.len() - 1]);
            let index_of = |r: &Record| match r {
                Record::GDeliver { index, .. } => *index,
                _ => unreachable!(),
            };
            let (ix, iy) = (index_of(&s.clients[1].2[x]), index_of(&s.clients[1].2[y]));
            for (k, to) in [(x, iy), (y, ix)] {
                if let Record::GDeliver { index, .. } = &mut s.clients[1].2[k] {
                    *index = to;
                }
            }
        }
        s.view(&[0, 1], &[0, 1], (1, 24));
        s.send(0, &[0, 1]);
        s.histories()
    }

    /// Planted defects of the group layer: (name, the check that must catch it, the
    /// histories).
    pub fn defects() -> Vec<(&'static str, Check, Vec<History>)> {
        let mut all = Vec::new();

        // A confirmation resolved twice.
        let mut h = clean();
        let i = h[0]
            .records
            .iter()
            .position(|r| matches!(r, Record::Confirm { receipt: true, .. }))
            .expect("a confirmation");
        let again = h[0].records[i].clone();
        h[0].records.insert(i + 1, again);
        all.push(("a double confirmation", Check::Confirmation, h));

        // A confirmation at a position where the sender delivered something else.
        let mut h = clean();
        if let Some(Record::Confirm { index, .. }) = h[1]
            .records
            .iter_mut()
            .find(|r| matches!(r, Record::Confirm { .. }))
        {
            *index += 1;
        }
        all.push((
            "a confirmation at the wrong position",
            Check::Confirmation,
            h,
        ));

        // A client names another leader for the same member list.
        let mut h = clean();
        if let Some(Record::GView {
            members, leader, ..
        }) = h[2]
            .records
            .iter_mut()
            .find(|r| matches!(r, Record::GView { .. }))
        {
            *leader = members.last().copied();
        }
        all.push(("a disagreeing leader", Check::LeaderAgreement, h));

        // Two deliveries swapped at one client: another message at the same index.
        let mut h = clean();
        let d: Vec<usize> = h[1]
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Record::GDeliver { .. }))
            .map(|(k, _)| k)
            .take(2)
            .collect();
        if let [x, y] = d[..] {
            let (a, b) = (h[1].records[x].clone(), h[1].records[y].clone());
            if let (Record::GDeliver { index: ia, .. }, Record::GDeliver { index: ib, .. }) =
                (&a, &b)
            {
                let (ia, ib) = (*ia, *ib);
                let mut a2 = a;
                let mut b2 = b;
                if let Record::GDeliver { index, .. } = &mut a2 {
                    *index = ib;
                }
                if let Record::GDeliver { index, .. } = &mut b2 {
                    *index = ia;
                }
                h[1].records[x] = b2;
                h[1].records[y] = a2;
            }
        }
        all.push(("a message at another index", Check::AgreedPosition, h));

        all.push((
            "a diverged replica digest",
            Check::Convergence,
            super::synthetic_replicas(super::ReplicaPlant::Diverged),
        ));
        all.push((
            "a replicated operation applied twice",
            Check::AppliedOnce,
            super::synthetic_replicas(super::ReplicaPlant::Duplicate),
        ));
        all.push((
            "a confirmed operation missing from the final state",
            Check::AppliedOnce,
            super::synthetic_replicas(super::ReplicaPlant::LostConfirmed),
        ));
        all.push((
            "a replica that learned a view at another version",
            Check::ReplicaView,
            super::synthetic_replicas(super::ReplicaPlant::ViewVersion),
        ));
        all.push((
            "a replicated operation's output that differs between members",
            Check::ResultAgreement,
            super::synthetic_replicas(super::ReplicaPlant::OutputDiffers),
        ));
        all.push((
            "a ticket with another output than its apply",
            Check::ResultAgreement,
            super::synthetic_replicas(super::ReplicaPlant::TicketDiffers),
        ));
        all.push((
            "a replicated operation applied where the agreed quorum was lost",
            Check::QuorumGate,
            super::synthetic_replicas(super::ReplicaPlant::AppliedNotQuorate),
        ));

        all
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{clean, defects};
    use crate::checker::{check, Check};
    use crate::history::{Member, Record};

    #[test]
    fn clean_group_histories_pass() {
        let mut h = crate::checker::synthetic::clean();
        h.extend(clean());
        h.extend(super::synthetic_replicas(super::ReplicaPlant::Nothing));
        let r = check(&h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.clients, 10);
        assert!(
            r.notes.iter().any(|n| n.contains("group layer: 3 clients")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn every_planted_group_defect_is_caught() {
        for (name, expected, h) in defects() {
            let r = check(&h);
            assert!(
                r.violations.iter().any(|v| v.check == expected),
                "{name}: expected {expected}, got {:#?}",
                r.violations
            );
        }
    }

    #[test]
    fn a_group_difference_the_plain_clients_show_as_a_recovery_loss_is_that_anomaly() {
        let mut h = crate::checker::synthetic::recovery_loss(false);
        h.extend(super::synthetic::recovery_loss());
        let r = check(&h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(
            r.anomalies.iter().any(|a| a.check == Check::LostInRecovery
                && a.evidence.contains("group inc 11")
                && a.evidence
                    .contains("never delivered 2 message(s) of node(s) [2]")),
            "{:#?}",
            r.anomalies
        );
        // Without the plain clients' evidence, the same difference is a violation.
        let r = check(&super::synthetic::recovery_loss());
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::AgreedPosition),
            "{:#?}",
            r.violations
        );
        assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
    }

    #[test]
    fn a_group_split_the_plain_clients_show_across_unannounced_rings_is_that_anomaly() {
        let mut h = crate::checker::synthetic::hidden_split(24);
        h.extend(super::synthetic::hidden_split(false));
        let r = check(&h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        let group: Vec<_> = r
            .anomalies
            .iter()
            .filter(|a| a.check == Check::UnannouncedMembership && a.evidence.contains("index 3"))
            .collect();
        assert_eq!(group.len(), 1, "{:#?}", r.anomalies);
        // Without the plain clients' evidence (announced rings: no split of theirs), the
        // same group difference is a violation.
        let mut h = crate::checker::synthetic::hidden_split(12);
        h.extend(super::synthetic::hidden_split(false));
        let r = check(&h);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::AgreedPosition),
            "{:#?}",
            r.violations
        );
        // Two messages both delivered, in other orders: not that split, a violation.
        let mut h = crate::checker::synthetic::hidden_split(24);
        h.extend(super::synthetic::hidden_split(true));
        let r = check(&h);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::AgreedPosition),
            "{:#?}",
            r.violations
        );
    }

    #[test]
    fn a_diverged_replica_names_both_states() {
        let r = check(&super::synthetic_replicas(super::ReplicaPlant::Diverged));
        let d: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.check == Check::Convergence)
            .collect();
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].evidence.contains("#0000000000000bad"),
            "{}",
            d[0].evidence
        );
    }

    #[test]
    fn replica_views_and_outputs_are_compared_between_members() {
        let r = check(&super::synthetic_replicas(super::ReplicaPlant::Nothing));
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("4 view changes and 9 outcomes compared")),
            "{:?}",
            r.notes
        );
        let r = check(&super::synthetic_replicas(super::ReplicaPlant::ViewVersion));
        let v: Vec<_> = r.violations.iter().map(|v| v.check).collect();
        assert_eq!(v, vec![Check::ReplicaView], "{:#?}", r.violations);
        assert!(r.violations[0].evidence.contains("round 1:601@1.2#1"));
        assert!(r.violations[0].evidence.contains("version 61"));
        let r = check(&super::synthetic_replicas(
            super::ReplicaPlant::OutputDiffers,
        ));
        let v: Vec<_> = r.violations.iter().map(|v| v.check).collect();
        assert_eq!(v, vec![Check::ResultAgreement], "{:#?}", r.violations);
        assert!(r.violations[0].evidence.contains("operation 2 of (1, 601)"));
        assert!(r.violations[0].evidence.contains("output 999"));
        assert!(r.violations[0]
            .evidence
            .contains("moved on together to the end"));
        let r = check(&super::synthetic_replicas(
            super::ReplicaPlant::TicketDiffers,
        ));
        let v: Vec<_> = r.violations.iter().map(|v| v.check).collect();
        assert_eq!(v, vec![Check::ResultAgreement], "{:#?}", r.violations);
        assert!(r.violations[0]
            .evidence
            .contains("ticket says version 63 output 999"));
    }

    /// Replicas that part at the next view change may have applied the end of the
    /// view differently (CPG orders a view's messages alike only for members that move
    /// on together): their outputs are not compared; those that move on together are.
    #[test]
    fn outputs_of_replicas_that_part_are_not_compared() {
        let with_next = |next_of_second: Vec<Member>| {
            let mut h = super::synthetic_replicas(super::ReplicaPlant::OutputDiffers);
            let all = vec![(1, 601), (2, 602), (3, 603)];
            for (i, c) in h.iter_mut().enumerate() {
                let next = if i == 1 {
                    next_of_second.clone()
                } else {
                    all.clone()
                };
                let at = c
                    .records
                    .iter()
                    .position(|r| matches!(r, Record::RFinal { .. }))
                    .unwrap();
                c.records.insert(
                    at,
                    Record::GView {
                        members: next,
                        leader: None,
                        view: (1, 2),
                        t: 2002,
                    },
                );
            }
            check(&h)
        };
        // The second replica went on alone: its different output is not compared.
        let r = with_next(vec![(2, 602)]);
        assert!(
            r.violations
                .iter()
                .all(|v| v.check != Check::ResultAgreement),
            "{:#?}",
            r.violations
        );
        // It moved on with the others: compared, and caught.
        let r = with_next(vec![(1, 601), (2, 602), (3, 603)]);
        assert!(
            r.violations
                .iter()
                .any(|v| v.check == Check::ResultAgreement),
            "{:#?}",
            r.violations
        );
    }

    /// A replica client's view record: `members`, installed at `t` (its id is `t`).
    fn gview(members: Vec<Member>, t: u64) -> Record {
        Record::GView {
            leader: members.first().copied(),
            members,
            view: (1, t),
            t,
        }
    }

    /// An `apply` record of another member's operation, in quorum epoch 1.
    fn applied(origin: Member, seq: u64, version: u64, output: i64) -> Record {
        Record::ROp {
            origin,
            seq,
            version,
            output,
            epoch: 1,
            own: false,
            t: 4000,
        }
    }

    /// A replica client's start record.
    fn replica_start(inc: u32, (node, pid): Member) -> Record {
        Record::Start {
            inc,
            node,
            pid,
            api: crate::history::Api::Replica,
            t: 1000,
        }
    }

    /// Histories from (file name, records).
    fn named(h: Vec<(&str, Vec<Record>)>) -> Vec<crate::history::History> {
        h.into_iter()
            .map(|(name, records)| crate::history::History {
                name: name.into(),
                records,
            })
            .collect()
    }

    /// Two replicas on nodes 1 and 3, in view [1, 2, 3], both moving on to [1, 3]:
    /// node 3's applies node 2's operation 1 and then node 3's operation 1, node 1's
    /// only node 3's (with `extra`, also an operation of its own that node 3's never
    /// applied), so their outcomes of node 3's operation differ. Node 1's replica
    /// installs the next view at t = 5000.
    fn replicas_after_a_recovery_loss(extra: bool) -> Vec<crate::history::History> {
        let (one, two, three) = ((1, 601), (2, 602), (3, 603));
        let mut node1 = vec![
            replica_start(21, one),
            gview(vec![one, two, three], 3000),
            applied(three, 1, 11, 5),
        ];
        if extra {
            node1.push(applied(one, 1, 12, 6));
        }
        node1.push(gview(vec![one, three], 5000));
        let node3 = vec![
            replica_start(23, three),
            gview(vec![one, two, three], 3000),
            applied(two, 1, 11, 4),
            applied(three, 1, 12, 9),
            gview(vec![one, three], 5010),
        ];
        named(vec![
            ("client-0021.jsonl", node1),
            ("client-0023.jsonl", node3),
        ])
    }

    /// The plain clients' loss of node 2's messages on node 1 (node 3 had them), at a
    /// transition node 1's plain clients made at `t`.
    fn loss_at(t: u64) -> crate::checker::RecoveryLoss {
        crate::checker::RecoveryLoss {
            ring: Some((1, 42)),
            missing_on: 1,
            delivered_on: 3,
            senders: vec![2],
            next_t: (t, t + 3),
        }
    }

    fn check_replicas_with(
        h: &[crate::history::History],
        losses: Vec<crate::checker::RecoveryLoss>,
    ) -> crate::checker::Report {
        let mut r = crate::checker::Report {
            recovery_losses: losses,
            ..Default::default()
        };
        super::check_replicas(h, &mut r);
        r
    }

    fn result_disagreements(r: &crate::checker::Report) -> usize {
        r.violations
            .iter()
            .filter(|v| v.check == Check::ResultAgreement)
            .count()
    }

    /// A departed node's operations that corosync's recovery never gave one replica
    /// (the plain clients on its node lost that node's messages at the same
    /// transition) change the outcomes after them: that daemon anomaly, not a
    /// violation; anything else about the difference keeps it a violation.
    #[test]
    fn replica_outcomes_parted_by_a_recovery_loss_are_that_anomaly() {
        let r = check_replicas_with(&replicas_after_a_recovery_loss(false), vec![loss_at(4900)]);
        assert_eq!(result_disagreements(&r), 0, "{:#?}", r.violations);
        let [a] = &r.anomalies[..] else {
            panic!("{:#?}", r.anomalies)
        };
        assert_eq!(a.check, Check::LostInRecovery);
        assert!(
            a.evidence
                .contains("the replica on node 1 never applied 1 operation(s) of node(s) [2]"),
            "{}",
            a.evidence
        );
        // No loss the plain clients showed: a violation.
        let r = check_replicas_with(&replicas_after_a_recovery_loss(false), vec![]);
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
        assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
        // A loss at another transition (node 1's plain clients moved 10 s later).
        let r = check_replicas_with(
            &replicas_after_a_recovery_loss(false),
            vec![loss_at(15_000)],
        );
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
        // A loss of other senders' messages, or on the other node.
        let mut other = loss_at(4900);
        other.senders = vec![4];
        let mut reversed = loss_at(4900);
        (reversed.missing_on, reversed.delivered_on) = (3, 1);
        for loss in [other, reversed] {
            let r = check_replicas_with(&replicas_after_a_recovery_loss(false), vec![loss]);
            assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
        }
        // The lacking replica also applied something the other never did.
        let r = check_replicas_with(&replicas_after_a_recovery_loss(true), vec![loss_at(4900)]);
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
    }

    /// Two replicas on nodes 1 and 3 in view [1, 3], both moving on to [1, 3] again:
    /// after operation 1 of node 1 each applies one operation of its own node that the
    /// other never does (with `leak`, node 3's replica on another process applies node
    /// 1's too), then both node 1's operation 2, at the same version with another
    /// outcome. They install the next view at t = 5000 and 5010.
    fn replicas_after_a_hidden_split(leak: bool) -> Vec<crate::history::History> {
        let (one, three) = ((1, 601), (3, 603));
        let both = || vec![one, three];
        let mut h = vec![
            (
                "client-0021.jsonl",
                vec![
                    replica_start(21, one),
                    gview(both(), 3000),
                    applied(one, 1, 11, 1),
                    applied(one, 2, 12, 3),
                    applied(one, 3, 13, 6),
                    gview(both(), 5000),
                ],
            ),
            (
                "client-0023.jsonl",
                vec![
                    replica_start(23, three),
                    gview(both(), 3000),
                    applied(one, 1, 11, 1),
                    applied(three, 1, 12, 10),
                    applied(one, 3, 13, 13),
                    gview(both(), 5010),
                ],
            ),
        ];
        if leak {
            h.push((
                "client-0024.jsonl",
                vec![
                    replica_start(24, (3, 604)),
                    gview(both(), 3000),
                    applied(one, 2, 12, 3),
                ],
            ));
        }
        named(h)
    }

    /// Replica outcomes that part where the plain clients of the same two nodes split
    /// across rings nobody was told about, at the same transition, are that anomaly;
    /// without that split, or with what one side applied seen on the other's node, a
    /// violation.
    #[test]
    fn replica_outcomes_parted_by_unannounced_rings_are_that_anomaly() {
        let split = |t: u64| {
            let mut r = crate::checker::Report::default();
            r.unannounced_splits.push(crate::checker::UnannouncedSplit {
                ring: Some((1, 40)),
                nodes: (1, 3),
                next_t: (t, t + 5),
            });
            r
        };
        let run = |h: &[crate::history::History], mut r: crate::checker::Report| {
            super::check_replicas(h, &mut r);
            r
        };
        let r = run(&replicas_after_a_hidden_split(false), split(4990));
        assert_eq!(result_disagreements(&r), 0, "{:#?}", r.violations);
        let [a] = &r.anomalies[..] else {
            panic!("{:#?}", r.anomalies)
        };
        assert_eq!(a.check, Check::UnannouncedMembership);
        assert!(
            a.evidence.contains("from operation 2 of the view on"),
            "{}",
            a.evidence
        );
        let r = run(&replicas_after_a_hidden_split(false), Default::default());
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
        let r = run(&replicas_after_a_hidden_split(false), split(20_000));
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
        let r = run(&replicas_after_a_hidden_split(true), split(4990));
        assert_eq!(result_disagreements(&r), 1, "{:#?}", r.violations);
    }

    #[test]
    fn a_confirmation_twice_is_reported_as_such() {
        let (_, _, h) = defects().remove(0);
        let r = check(&h);
        assert!(r
            .violations
            .iter()
            .any(|v| v.check == Check::Confirmation && v.evidence.contains("twice")));
    }
}
