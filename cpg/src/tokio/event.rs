//! [`Event`]: what an [`AsyncHandle`](super::AsyncHandle)'s stream yields, owning its
//! data; [`EventRef`]: what [`read_with`](super::AsyncHandle::read_with) lends, borrowed.

use crate::name::GroupName;
use crate::types::{Confchg, ListedMember, Member, Message, RingId, TotemConfchg};

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

/// An event of an [`AsyncHandle`](super::AsyncHandle), borrowed: what
/// [`read_with`](super::AsyncHandle::read_with) hands to its closure. The variants are
/// the borrowed types the blocking [`Callbacks`](crate::Callbacks) get, and are valid
/// for the duration of the call only: a message's bytes point into libcpg's receive
/// buffer (or into an [`Event`] the stream had already queued). Copy what you keep
/// ([`to_event`](Self::to_event) makes the owned [`Event`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum EventRef<'a> {
    /// A message was delivered to a joined group.
    Deliver(Message<'a>),
    /// The membership of a joined group changed, including this process's own join.
    Confchg(Confchg<'a>),
    /// The cluster's node membership (totem ring) changed.
    TotemConfchg(TotemConfchg<'a>),
}

impl EventRef<'_> {
    /// The owned event, as [`next_event`](super::AsyncHandle::next_event) would have
    /// yielded it (copies the message bytes and the lists).
    pub fn to_event(&self) -> Event {
        match *self {
            EventRef::Deliver(message) => Event::Deliver {
                group: *message.group,
                nodeid: message.nodeid,
                pid: message.pid,
                data: message.data.to_vec(),
            },
            EventRef::Confchg(change) => Event::Confchg {
                group: *change.group,
                members: change.members.to_vec(),
                left: change.left.to_vec(),
                joined: change.joined.to_vec(),
            },
            EventRef::TotemConfchg(change) => Event::TotemConfchg {
                ring_id: change.ring_id,
                members: change.members.to_vec(),
            },
        }
    }

    /// The sender of a delivered message; `None` for membership events.
    pub fn sender(&self) -> Option<Member> {
        match self {
            EventRef::Deliver(message) => Some(message.sender()),
            _ => None,
        }
    }
}

impl<'a> From<&'a Event> for EventRef<'a> {
    /// The event, borrowed.
    fn from(event: &'a Event) -> EventRef<'a> {
        match event {
            Event::Deliver {
                group,
                nodeid,
                pid,
                data,
            } => EventRef::Deliver(Message {
                group,
                nodeid: *nodeid,
                pid: *pid,
                data,
            }),
            Event::Confchg {
                group,
                members,
                left,
                joined,
            } => EventRef::Confchg(Confchg {
                group,
                members,
                left,
                joined,
            }),
            Event::TotemConfchg { ring_id, members } => EventRef::TotemConfchg(TotemConfchg {
                ring_id: *ring_id,
                members,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Reason;

    /// An owned event, borrowed and copied back, is the same event, for every variant.
    #[test]
    fn an_event_borrowed_and_copied_back_is_the_same() {
        let group = GroupName::new("g").unwrap();
        let entry = |nodeid, pid, reason| ListedMember::new(Member::new(nodeid, pid), reason);
        let events = [
            Event::deliver(group, Member::new(2, 7), b"bytes".to_vec()),
            Event::deliver(group, Member::new(1, 1), Vec::new()),
            Event::confchg(
                group,
                vec![entry(1, 10, Reason::Join), entry(2, 20, Reason::NodeUp)],
                vec![entry(3, 30, Reason::NodeDown)],
                vec![entry(1, 10, Reason::Join)],
            ),
            Event::totem_confchg(RingId { nodeid: 4, seq: 88 }, vec![1, 2, 4]),
        ];
        for event in &events {
            let borrowed = EventRef::from(event);
            assert_eq!(borrowed.sender(), event.sender());
            assert_eq!(borrowed.to_event(), *event);
        }
        match EventRef::from(&events[0]) {
            EventRef::Deliver(m) => {
                assert_eq!(
                    (m.group, m.nodeid, m.pid, m.data),
                    (&group, 2, 7, &b"bytes"[..])
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
