//! Views: one membership of the group as this process installed it, with its
//! identifier, its sorted members and its deterministic leader.

use std::fmt;

use crate::types::{Member, Reason, RingId};

/// Identifies a [`View`] of one process. Ids only grow: a later view has a greater id,
/// also across reconnects.
///
/// The id is local to this process: another member numbers its views from its own
/// start. What members agree on is the view's [member list](View::members) (and with it
/// the [leader](View::leader)), not its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewId {
    /// Which connection to the daemon (1 for the first, one more for every reconnect).
    pub incarnation: u64,
    /// Views installed by this process so far, this one included (never reset).
    pub counter: u64,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.incarnation, self.counter)
    }
}

/// One membership of the group, made from one configuration change.
///
/// Built from the change's member list only, which every member that installs the view
/// receives alike; the [`joined`](View::joined) and [`left`](View::left) lists are what
/// *this* node's daemon reported, which can differ between nodes (corosync merges and
/// splits changes per node), so nothing agreed may be derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub(crate) id: ViewId,
    pub(crate) members: Vec<Member>,
    pub(crate) me: Option<usize>,
    pub(crate) joined: Vec<(Member, Reason)>,
    pub(crate) left: Vec<(Member, Reason)>,
    pub(crate) ring: Option<RingId>,
}

impl View {
    /// A view with these members (sorted and deduplicated here) and `me` the own
    /// identity, if known.
    pub(crate) fn new(
        id: ViewId,
        members: impl IntoIterator<Item = Member>,
        me: Option<Member>,
        joined: Vec<(Member, Reason)>,
        left: Vec<(Member, Reason)>,
        ring: Option<RingId>,
    ) -> View {
        let mut members: Vec<Member> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        let me = me.and_then(|m| members.binary_search(&m).ok());
        View {
            id,
            members,
            me,
            joined,
            left,
            ring,
        }
    }

    /// This view's identifier.
    pub fn id(&self) -> ViewId {
        self.id
    }

    /// The members, sorted by (node id, pid), each once.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether `member` is in this view.
    pub fn contains(&self, member: Member) -> bool {
        self.members.binary_search(&member).is_ok()
    }

    /// This process, if it is a member of the view and its identity is known.
    pub fn me(&self) -> Option<Member> {
        self.me.map(|i| self.members[i])
    }

    /// This process's rank: its index in [`members`](Self::members) (0 is the leader).
    pub fn rank(&self) -> Option<usize> {
        self.me
    }

    /// The leader: the member with the lowest (node id, pid). Every member computes
    /// the same leader from the same member list; `None` for an empty view.
    pub fn leader(&self) -> Option<Member> {
        self.members.first().copied()
    }

    /// Whether this process is the leader of the view.
    pub fn is_leader(&self) -> bool {
        self.me == Some(0)
    }

    /// Who joined, as this node's daemon reported it (not agreed between nodes).
    pub fn joined(&self) -> &[(Member, Reason)] {
        &self.joined
    }

    /// Who left and why, as this node's daemon reported it (not agreed between nodes).
    pub fn left(&self) -> &[(Member, Reason)] {
        &self.left
    }

    /// The latest totem ring this process knew of when it installed the view. The
    /// totem change of a ring change comes after the group change it causes, so for
    /// such a change this is the previous ring; see
    /// [`Event::Settled`](super::Event::Settled).
    pub fn ring(&self) -> Option<RingId> {
        self.ring
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the view has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Displays the view as [`Display`](fmt::Display) does, with each node's name from
    /// `name` where it gives one: `view 1.3 [1 (node1):4242 (me), 2:4243]`. The names
    /// come from the caller (for example `cpg::cmap::NodeNames::lookup`, feature
    /// `cmap`), so this layer needs no source of names of its own.
    pub fn display_with<'a>(
        &'a self,
        name: &'a dyn Fn(u32) -> Option<String>,
    ) -> impl fmt::Display + 'a {
        Named { view: self, name }
    }

    fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        name: &dyn Fn(u32) -> Option<String>,
    ) -> fmt::Result {
        write!(f, "view {} [", self.id)?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match name(m.nodeid) {
                Some(n) => write!(f, "{} ({n}):{}", m.nodeid, m.pid)?,
                None => write!(f, "{}:{}", m.nodeid, m.pid)?,
            }
            if self.me == Some(i) {
                f.write_str(" (me)")?;
            }
        }
        f.write_str("]")
    }
}

/// A view displayed with node names ([`View::display_with`]).
struct Named<'a> {
    view: &'a View,
    name: &'a dyn Fn(u32) -> Option<String>,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view.write(f, self.name)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &|_| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(nodeid: u32, pid: u32) -> Member {
        Member { nodeid, pid }
    }

    fn id(counter: u64) -> ViewId {
        ViewId {
            incarnation: 1,
            counter,
        }
    }

    #[test]
    fn members_are_sorted_and_deduplicated_and_the_leader_is_the_lowest() {
        let v = View::new(
            id(1),
            [m(3, 10), m(1, 99), m(1, 7), m(3, 10), m(2, 1)],
            Some(m(1, 7)),
            vec![],
            vec![],
            None,
        );
        assert_eq!(v.members(), &[m(1, 7), m(1, 99), m(2, 1), m(3, 10)]);
        assert_eq!(v.leader(), Some(m(1, 7)));
        assert!(v.is_leader());
        assert_eq!(v.rank(), Some(0));
        assert_eq!(v.me(), Some(m(1, 7)));
    }

    #[test]
    fn the_leader_does_not_depend_on_the_order_of_the_list() {
        let lists = [
            vec![m(2, 5), m(1, 9), m(3, 1)],
            vec![m(3, 1), m(2, 5), m(1, 9)],
            vec![m(1, 9), m(3, 1), m(2, 5), m(2, 5)],
        ];
        for me in [m(1, 9), m(2, 5), m(3, 1)] {
            for list in &lists {
                let v = View::new(id(4), list.clone(), Some(me), vec![], vec![], None);
                assert_eq!(v.leader(), Some(m(1, 9)));
                assert_eq!(v.is_leader(), me == m(1, 9));
            }
        }
    }

    #[test]
    fn an_empty_view_has_no_leader_and_no_me() {
        let v = View::new(id(1), [], Some(m(1, 1)), vec![], vec![], None);
        assert!(v.is_empty());
        assert_eq!(v.leader(), None);
        assert!(!v.is_leader());
        assert_eq!(v.me(), None);
    }

    #[test]
    fn the_same_pid_on_two_nodes_is_two_members() {
        let v = View::new(
            id(1),
            [m(2, 42), m(1, 42)],
            Some(m(2, 42)),
            vec![],
            vec![],
            None,
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v.me(), Some(m(2, 42)));
        assert_eq!(v.rank(), Some(1));
        assert!(!v.is_leader());
    }

    #[test]
    fn ids_order_by_incarnation_then_counter() {
        let a = ViewId {
            incarnation: 1,
            counter: 9,
        };
        let b = ViewId {
            incarnation: 2,
            counter: 10,
        };
        assert!(a < b);
        assert_eq!(b.to_string(), "2.10");
    }

    #[test]
    fn a_view_prints_with_the_names_it_is_given() {
        let v = View::new(
            id(3),
            [m(2, 43), m(1, 42)],
            Some(m(1, 42)),
            vec![],
            vec![],
            None,
        );
        assert_eq!(v.to_string(), "view 1.3 [1:42 (me), 2:43]");
        let names = |n: u32| (n == 1).then(|| "node1".to_string());
        assert_eq!(
            v.display_with(&names).to_string(),
            "view 1.3 [1 (node1):42 (me), 2:43]"
        );
    }
}
