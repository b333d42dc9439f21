//! [`Event`]: what an [`AsyncHandle`](super::AsyncHandle)'s stream yields, owning its
//! data.

use crate::name::GroupName;
use crate::types::{ListedMember, Member, RingId};

/// An event of an [`AsyncHandle`](super::AsyncHandle), owning its data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message was delivered to a joined group (see [`Message`](crate::Message)).
    Deliver {
        /// The group the message was sent to.
        group: GroupName,
        /// The sender's node id.
        nodeid: u32,
        /// The sender's process id.
        pid: u32,
        /// The message bytes.
        data: Vec<u8>,
    },
    /// The membership of a joined group changed (see [`Confchg`](crate::Confchg)), including this
    /// process's own join.
    Confchg {
        /// The group that changed.
        group: GroupName,
        /// The members after the change.
        members: Vec<ListedMember>,
        /// The processes that left, with the reason.
        left: Vec<ListedMember>,
        /// The processes that joined, with the reason.
        joined: Vec<ListedMember>,
    },
    /// The cluster's node membership (totem ring) changed (see [`TotemConfchg`](crate::TotemConfchg)).
    TotemConfchg {
        /// The new ring.
        ring_id: RingId,
        /// Node ids of the nodes in the ring.
        members: Vec<u32>,
    },
}

impl Event {
    /// A delivered message, as the stream yields it: for tests of code that handles
    /// events (the enum is `#[non_exhaustive]`, so its variants cannot be built
    /// directly outside this crate).
    ///
    /// ```
    /// use cpg::{Event, GroupName, Member};
    ///
    /// let event = Event::deliver(GroupName::new("jobs").unwrap(), Member::new(2, 7), b"hi".to_vec());
    /// assert_eq!(event.sender(), Some(Member::new(2, 7)));
    /// ```
    pub fn deliver(group: GroupName, sender: Member, data: Vec<u8>) -> Event {
        Event::Deliver {
            group,
            nodeid: sender.nodeid,
            pid: sender.pid,
            data,
        }
    }

    /// A membership change of a group (see [`ListedMember::new`] for the entries).
    pub fn confchg(
        group: GroupName,
        members: Vec<ListedMember>,
        left: Vec<ListedMember>,
        joined: Vec<ListedMember>,
    ) -> Event {
        Event::Confchg {
            group,
            members,
            left,
            joined,
        }
    }

    /// A change of the cluster's node membership.
    pub fn totem_confchg(ring_id: RingId, members: Vec<u32>) -> Event {
        Event::TotemConfchg { ring_id, members }
    }

    /// The sender of a delivered message; `None` for membership events.
    pub fn sender(&self) -> Option<Member> {
        match self {
            Event::Deliver { nodeid, pid, .. } => Some(Member {
                nodeid: *nodeid,
                pid: *pid,
            }),
            _ => None,
        }
    }
}
