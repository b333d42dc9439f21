//! The application's side of a replica: the [`Replicated`] trait and what it is
//! told.

use std::fmt;

use crate::group::View;
use crate::types::Member;

use super::wire::RoundId;

/// What a member's state looks like, for choosing whose state wins a round.
///
/// `version` is kept by the replica layer: the number of operations applied along the
/// state's history (a restored state takes the source's version; a view change
/// applied with [`Replicated::apply_view`] does not count). `epoch` is kept by the
/// layer too: how many times the state's history became quorate (see the
/// [module documentation](super#quorum)). `digest` is [`Replicated::digest`], `hint`
/// is [`Replicated::merge_hint`].
///
/// Non-exhaustive: build one with [`Summary::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Summary {
    /// The state's quorum epoch: the number of times its history went from a
    /// position where corosync's agreed quorum did not permit writes (pending, not
    /// quorate) to one where it does. 0 without a quorum provider.
    pub epoch: u64,
    /// Operations applied along this state's history.
    pub version: u64,
    /// The application's digest of the state.
    pub digest: u64,
    /// The application's merge hint for the state ([`Replicated::merge_hint`]; 0 by
    /// default).
    pub hint: u64,
}

impl Summary {
    /// A summary of a state at `version` with `digest` and a merge hint of 0.
    pub fn new(version: u64, digest: u64) -> Summary {
        Summary {
            epoch: 0,
            version,
            digest,
            hint: 0,
        }
    }

    /// The same summary with merge hint `hint`.
    pub fn with_hint(self, hint: u64) -> Summary {
        Summary { hint, ..self }
    }

    /// The same summary with quorum epoch `epoch`.
    pub fn with_epoch(self, epoch: u64) -> Summary {
        Summary { epoch, ..self }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "e{} ", self.epoch)?;
        }
        write!(f, "v{} #{:016x}", self.version, self.digest)?;
        if self.hint != 0 {
            write!(f, " hint {}", self.hint)?;
        }
        Ok(())
    }
}

/// One member's summary in a round, as every member received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The member.
    pub member: Member,
    /// Its state's summary.
    pub summary: Summary,
}

/// The choice by version alone: the highest version, ties broken by the lowest
/// (node id, pid); quorum epochs and merge hints are not looked at. `candidates` is
/// never empty.
pub fn choose_highest_version(candidates: &[Candidate]) -> usize {
    choose_by(candidates, |s| (0, 0, s.version))
}

/// The choice by [merge hint](Replicated::merge_hint): the highest hint, then the
/// highest version, ties broken by the lowest (node id, pid); quorum epochs are not
/// looked at. With every hint 0 (the default) it is [`choose_highest_version`].
/// `candidates` is never empty.
pub fn choose_highest_hint(candidates: &[Candidate]) -> usize {
    choose_by(candidates, |s| (0, s.hint, s.version))
}

/// The default choice ([`Replicated::choose`]): the highest
/// [quorum epoch](Summary::epoch), then [`choose_highest_hint`]'s rule (the highest
/// merge hint, then the highest version), ties broken by the lowest (node id, pid).
/// So a history that became quorate during a partition wins over one that did not,
/// however long the other's. The epoch counts a history's moves to quorate, not when
/// they happened: after a sequence of partitions in which both sides were quorate in
/// turn (say {1,2}|{3}, then {1}|{2,3}, with members on nodes 1 and 3 only), the side
/// quorate last can tie with the other or trail it, and the hint, then the version
/// decide. Without a quorum provider every epoch is 0 and it is
/// [`choose_highest_hint`].
/// `candidates` is never empty.
pub fn choose_highest_epoch(candidates: &[Candidate]) -> usize {
    choose_by(candidates, |s| (s.epoch, s.hint, s.version))
}

/// The candidate with the highest `key`, the first (the lowest member) of equals.
fn choose_by(candidates: &[Candidate], key: impl Fn(&Summary) -> (u64, u64, u64)) -> usize {
    let mut best = 0;
    for (i, c) in candidates.iter().enumerate().skip(1) {
        let b = &candidates[best];
        let (ck, bk) = (key(&c.summary), key(&b.summary));
        if ck > bk || (ck == bk && c.member < b.member) {
            best = i;
        }
    }
    best
}

/// Whether `view` holds a strict majority of `configured_nodes` distinct nodes: a gate
/// for writes on a cluster without a quorum provider, so that at most one side of a
/// partition accepts them (see the [module documentation](super) on merges). Where
/// corosync has a provider the layer gates on its quorum instead
/// ([`Config::gate_writes`](super::Config::gate_writes)), which counts votes, not the
/// group's members.
pub fn has_majority(view: &View, configured_nodes: usize) -> bool {
    majority(view.members(), configured_nodes)
}

/// Whether the sorted `members` are on more than half of `configured_nodes` nodes.
fn majority(members: &[Member], configured_nodes: usize) -> bool {
    let mut nodes: Vec<u32> = members.iter().map(|m| m.nodeid).collect();
    nodes.dedup(); // sorted by (node id, pid)
    nodes.len() * 2 > configured_nodes
}

/// An application operation as it is applied: its origin and place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The member that submitted it (as CPG reports the sender).
    pub origin: Member,
    /// The origin's sequence number for it (1 for its first operation, one more for
    /// each next one; never reused by a process).
    pub seq: u64,
    /// The state's version once it is applied.
    pub version: u64,
}

/// A view's member list, as the replicated state learns it
/// ([`Replicated::apply_view`]): at the same point of the history on every member of
/// the view (see the [module documentation](super#membership-in-the-state)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewChange<'a> {
    /// The view's members, sorted by (node id, pid): all of them, also those that do
    /// not speak (a stopped process is a member until CPG removes it).
    pub members: &'a [Member],
    /// The round that ended the view's synchronisation (the same on every member).
    pub round: RoundId,
    /// The state's version at the change: the operations applied before it (the
    /// change itself does not count as one).
    pub version: u64,
}

impl ViewChange<'_> {
    /// Whether `member` is in the view.
    pub fn contains(&self, member: Member) -> bool {
        self.members.binary_search(&member).is_ok()
    }

    /// Whether the view holds a strict majority of `configured_nodes` distinct nodes
    /// (as [`has_majority`] for a [`View`]): the same answer on every member.
    pub fn has_majority(&self, configured_nodes: usize) -> bool {
        majority(self.members, configured_nodes)
    }
}

/// What a resolved ticket holds: where the operation landed in the history here, and
/// what [`Replicated::apply`] returned for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome<O> {
    /// The state's version once the operation was applied ([`OpInfo::version`]).
    pub version: u64,
    /// What `apply` returned.
    pub output: O,
}

/// The error [`Replicated::restore`] returns for a snapshot it cannot use.
pub type RestoreError = Box<dyn std::error::Error + Send + Sync>;

/// The replicated state, as the application implements it.
///
/// Every member applies the same operations in the same order (the agreed order of
/// the group), and after every membership change all members of the view adopt one
/// member's state (see the [module documentation](super)). For members to converge the
/// implementation must be deterministic: `apply` (and `apply_view`) the same
/// operations to equal states and get equal states and outputs, `restore(snapshot())`
/// gives an equal state, and `digest` and `merge_hint` depend on the state only (not
/// on, say, a `HashMap`'s iteration order).
///
/// The methods run on the replica's driver under its lock: one that calls a method of
/// its own replica (say, `submit` from `apply`) panics, and a panic in any of them
/// ends the replica (its tickets fail with `Closed`).
pub trait Replicated {
    /// What [`apply`](Self::apply) returns for an operation: the submitter's ticket
    /// resolves with it ([`Outcome`]). `()` for a service that needs none. `Clone`
    /// because several tasks may await one `AsyncTicket` (each gets a copy); an
    /// output that is expensive to copy can be an `Arc`.
    type Output: Clone + Send + 'static;

    /// Applies one operation and returns its outcome. Called in the agreed order;
    /// never for an operation the state already contains. Must not fail: an
    /// operation that makes no sense for the state is a deterministic no-op (its
    /// output can say so). Every member that applies it computes the output; the
    /// submitter's ticket gets the submitter's, computed on the agreed state (see the
    /// [module documentation](super#results)).
    fn apply(&mut self, op: &[u8], info: &OpInfo) -> Self::Output;

    /// Learns a view's member list, at the same point of the history on every member
    /// of the view: right after the round that synchronised the view, before the
    /// operations delivered during that round (see the
    /// [module documentation](super#membership-in-the-state) for exactly which
    /// operations land before and after it). The place to free what departed members
    /// held: every holder not in `view.members` (not only those that left since the
    /// previous call: a view whose round did not end is never shown). Default: nothing.
    fn apply_view(&mut self, view: &ViewChange<'_>) {
        let _ = view;
    }

    /// The whole state as bytes, for a member that needs it.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a [`snapshot`](Self::snapshot) of another member.
    /// On error the state must be left usable; the round is retried.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// A digest of the state: equal states, equal digests. Compared between members to
    /// skip a transfer and to [verify](super::Machine::verify) them.
    fn digest(&self) -> u64;

    /// A number from the state that [`choose`](Self::choose) can choose by, carried in
    /// every [`Summary`]: say, an epoch the state counts up at every view with a
    /// majority ([`apply_view`](Self::apply_view)), so that after a partition heals
    /// the side that had the majority wins, however long the other side's history
    /// (where corosync has a quorum provider the layer's
    /// [quorum epoch](Summary::epoch) does that, ahead of the hint). The default choice ([`choose_highest_epoch`]) prefers the highest, after the
    /// quorum epoch. Default: 0.
    fn merge_hint(&self) -> u64 {
        0
    }

    /// Whose state wins a round, as an index into `candidates` (sorted by member, never
    /// empty). Every member calls it with the same candidates and must return the same
    /// answer. Default: [`choose_highest_epoch`] (the highest quorum epoch, then the
    /// highest merge hint, then the longest history, then the lowest member).
    fn choose(&self, candidates: &[Candidate]) -> usize {
        choose_highest_epoch(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(nodeid: u32, version: u64) -> Candidate {
        Candidate {
            member: Member { nodeid, pid: 1 },
            summary: Summary::new(version, 0),
        }
    }

    #[test]
    fn the_highest_version_wins_and_ties_go_to_the_lowest_member() {
        assert_eq!(choose_highest_version(&[c(1, 3), c(2, 5), c(3, 5)]), 1);
        assert_eq!(choose_highest_version(&[c(3, 5), c(2, 5), c(1, 4)]), 1);
        assert_eq!(choose_highest_version(&[c(1, 0)]), 0);
        // Without hints the default is the same choice.
        assert_eq!(choose_highest_hint(&[c(1, 3), c(2, 5), c(3, 5)]), 1);
    }

    #[test]
    fn the_highest_hint_wins_over_a_longer_history() {
        let mut cs = [c(1, 9), c(2, 5), c(3, 7)];
        cs[1].summary = cs[1].summary.with_hint(2);
        cs[2].summary = cs[2].summary.with_hint(2);
        assert_eq!(choose_highest_hint(&cs), 2, "hint 2, then version 7");
        assert_eq!(choose_highest_version(&cs), 0, "hints ignored");
        cs[2].summary.version = 5;
        assert_eq!(choose_highest_hint(&cs), 1, "a tie: the lowest member");
    }

    #[test]
    fn the_highest_epoch_wins_over_hints_and_longer_histories() {
        let mut cs = [c(1, 9), c(2, 5), c(3, 7)];
        cs[0].summary = cs[0].summary.with_hint(5);
        cs[1].summary = cs[1].summary.with_epoch(4);
        cs[2].summary = cs[2].summary.with_epoch(4).with_hint(1);
        assert_eq!(choose_highest_epoch(&cs), 2, "epoch 4, then hint 1");
        assert_eq!(choose_highest_hint(&cs), 0, "epochs ignored");
        assert_eq!(choose_highest_version(&cs), 0, "epochs and hints ignored");
        cs[2].summary.hint = 0;
        assert_eq!(choose_highest_epoch(&cs), 2, "epoch 4, then version 7");
        cs[1].summary.version = 7;
        assert_eq!(choose_highest_epoch(&cs), 1, "a tie: the lowest member");
        // Without a provider every epoch is 0: the rule is the hint's.
        let plain = [c(1, 3), c(2, 5)];
        assert_eq!(choose_highest_epoch(&plain), choose_highest_hint(&plain));
        assert_eq!(
            Summary::new(3, 0xab).with_epoch(2).to_string(),
            "e2 v3 #00000000000000ab"
        );
    }

    #[test]
    fn a_view_change_answers_membership_and_majority() {
        let members = [
            Member { nodeid: 1, pid: 5 },
            Member { nodeid: 1, pid: 6 },
            Member { nodeid: 2, pid: 5 },
        ];
        let round = RoundId {
            coordinator: members[0],
            view: crate::group::ViewId {
                incarnation: 1,
                counter: 1,
            },
            attempt: 0,
        };
        let v = ViewChange {
            members: &members,
            round,
            version: 3,
        };
        assert!(v.contains(Member { nodeid: 1, pid: 6 }));
        assert!(!v.contains(Member { nodeid: 3, pid: 5 }));
        // Two nodes (three processes) of three: a majority; of four: not.
        assert!(v.has_majority(3));
        assert!(!v.has_majority(4));
    }
}
