//! The application's side of a replica: the [`Replicated`] trait and what it is
//! told.

use std::fmt;

use crate::group::View;
use crate::types::Member;

/// What a member's state looks like, for choosing whose state wins a round.
///
/// `version` is kept by the replica layer: the number of operations applied along the
/// state's history (a restored state takes the source's version). `digest` is
/// [`Replicated::digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Summary {
    /// Operations applied along this state's history.
    pub version: u64,
    /// The application's digest of the state.
    pub digest: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{} #{:016x}", self.version, self.digest)
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

/// The default choice: the highest version, ties broken by the lowest (node id, pid).
/// `candidates` is never empty.
pub fn choose_highest_version(candidates: &[Candidate]) -> usize {
    let mut best = 0;
    for (i, c) in candidates.iter().enumerate().skip(1) {
        let b = &candidates[best];
        if c.summary.version > b.summary.version
            || (c.summary.version == b.summary.version && c.member < b.member)
        {
            best = i;
        }
    }
    best
}

/// Whether `view` holds a strict majority of `configured_nodes` distinct nodes: the
/// usual gate for writes, so that at most one side of a partition accepts them (see
/// the [module documentation](super) on merges).
pub fn has_majority(view: &View, configured_nodes: usize) -> bool {
    let mut nodes: Vec<u32> = view.members().iter().map(|m| m.nodeid).collect();
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

/// The error [`Replicated::restore`] returns for a snapshot it cannot use.
pub type RestoreError = Box<dyn std::error::Error + Send + Sync>;

/// The replicated state, as the application implements it.
///
/// Every member applies the same operations in the same order (the agreed order of
/// the group), and after every membership change all members of the view adopt one
/// member's state (see the [module documentation](super)). For members to converge the
/// implementation must be deterministic: `apply` the same operations to equal states
/// and get equal states, `restore(snapshot())` gives an equal state, and `digest`
/// depends on the state only (not on, say, a `HashMap`'s iteration order).
///
/// The methods run on the replica's driver under its lock: one that calls a method of
/// its own replica (say, `submit` from `apply`) panics, and a panic in any of them
/// ends the replica (its tickets fail with `Closed`).
pub trait Replicated {
    /// Applies one operation. Called in the agreed order; never for an operation the
    /// state already contains. Must not fail: an operation that makes no sense for the
    /// state is a deterministic no-op.
    fn apply(&mut self, op: &[u8], info: &OpInfo);

    /// The whole state as bytes, for a member that needs it.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a [`snapshot`](Self::snapshot) of another member.
    /// On error the state must be left usable; the round is retried.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// A digest of the state: equal states, equal digests. Compared between members to
    /// skip a transfer and to [verify](super::Machine::verify) them.
    fn digest(&self) -> u64;

    /// Whose state wins a round, as an index into `candidates` (sorted by member, never
    /// empty). Every member calls it with the same candidates and must return the same
    /// answer. Default: [`choose_highest_version`].
    fn choose(&self, candidates: &[Candidate]) -> usize {
        choose_highest_version(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(nodeid: u32, version: u64) -> Candidate {
        Candidate {
            member: Member { nodeid, pid: 1 },
            summary: Summary { version, digest: 0 },
        }
    }

    #[test]
    fn the_highest_version_wins_and_ties_go_to_the_lowest_member() {
        assert_eq!(choose_highest_version(&[c(1, 3), c(2, 5), c(3, 5)]), 1);
        assert_eq!(choose_highest_version(&[c(3, 5), c(2, 5), c(1, 4)]), 1);
        assert_eq!(choose_highest_version(&[c(1, 0)]), 0);
    }
}
