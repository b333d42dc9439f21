//! The one event type that handle callbacks record, [`Event`], and the handle that
//! records them ([`recording_handle`]).
//!
//! Events hold what the callback was given, members in the daemon's order; checks
//! that compare memberships as sets sort first ([`sorted`]).

use cpg::{Error, GroupName, Handle, Member, Reason, RingId};

use super::log::{Log, Observed};
use super::message::decode;

/// One thing a member observed, copied out of its callback (or, for
/// [`Event::DispatchFailed`], out of its dispatch loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message, with a copy of its bytes ([`Keep::Bytes`]).
    Msg {
        /// The group it was sent to.
        group: GroupName,
        /// Who libcpg says sent it.
        from: Member,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A test message ([`super::message`]), checked byte for byte ([`Keep::Checked`]).
    TestMsg {
        /// Sender number in the message.
        sender: u32,
        /// Sequence number in the message.
        seq: u64,
        /// Who libcpg says sent it.
        from: Member,
        /// Length in bytes.
        len: usize,
    },
    /// A test message whose bytes were not what was sent ([`Keep::Checked`]).
    Corrupt {
        /// Who libcpg says sent it.
        from: Member,
        /// What was wrong.
        why: String,
    },
    /// A group membership change.
    Conf {
        /// The group that changed.
        group: GroupName,
        /// Members after the change, in the daemon's order.
        members: Vec<Member>,
        /// Who left, and why.
        left: Vec<(Member, Reason)>,
        /// Who joined, and why.
        joined: Vec<(Member, Reason)>,
    },
    /// A totem (node) membership change.
    Totem {
        /// The new ring.
        ring: RingId,
        /// Node ids in the new ring, in the daemon's order.
        nodes: Vec<u32>,
    },
    /// Dispatch failed; the member stopped dispatching.
    DispatchFailed(Error),
}

impl Event {
    /// The (sender, seq) of a test message.
    pub fn test_msg(&self) -> Option<(u32, u64)> {
        match self {
            Event::TestMsg { sender, seq, .. } => Some((*sender, *seq)),
            _ => None,
        }
    }
}

impl Observed for Event {
    fn is_message(&self) -> bool {
        matches!(self, Event::Msg { .. } | Event::TestMsg { .. })
    }
}

/// What a recording handle keeps of each delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// A copy of its bytes ([`Event::Msg`]), for tests that compare them.
    Bytes,
    /// Only the header of a test message, after checking every byte
    /// ([`Event::TestMsg`], or [`Event::Corrupt`]): members that stream thousands of
    /// messages of up to megabytes keep no copies.
    Checked,
}

/// A handle (in the calling thread's namespace) whose callbacks record every event
/// into `log`, keeping of each message what `keep` says; `initial_totem` asks for the
/// totem configuration current at the join.
pub fn recording_handle(log: &Log<Event>, keep: Keep, initial_totem: bool) -> cpg::Result<Handle> {
    let (d, c, t) = (log.clone(), log.clone(), log.clone());
    Handle::builder()
        .on_deliver(move |_cpg, m| {
            let from = m.sender();
            d.push(match keep {
                Keep::Bytes => Event::Msg {
                    group: *m.group,
                    from,
                    data: m.data.to_vec(),
                },
                Keep::Checked => match decode(m.data) {
                    Ok((sender, seq)) => Event::TestMsg {
                        sender,
                        seq,
                        from,
                        len: m.data.len(),
                    },
                    Err(why) => Event::Corrupt { from, why },
                },
            })
        })
        .on_confchg(move |_cpg, change| {
            let pair = |a: &cpg::ListedMember| (a.member(), a.reason());
            c.push(Event::Conf {
                group: *change.group,
                members: change.members.iter().map(|a| a.member()).collect(),
                left: change.left.iter().map(pair).collect(),
                joined: change.joined.iter().map(pair).collect(),
            })
        })
        .on_totem_confchg(move |_cpg, change| {
            t.push(Event::Totem {
                ring: change.ring_id,
                nodes: change.members.to_vec(),
            })
        })
        .initial_totem_conf(initial_totem)
        .build()
}

impl Log<Event> {
    /// Messages delivered in `group` ([`Keep::Bytes`]), as (node id, data).
    pub fn messages_in(&self, group: &GroupName) -> Vec<(u32, Vec<u8>)> {
        self.with(|events| {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Msg {
                        group: g,
                        from,
                        data,
                    } if g == group => Some((from.nodeid, data.clone())),
                    _ => None,
                })
                .collect()
        })
    }

    /// Configuration changes of `group`.
    pub fn confchgs(&self, group: &GroupName) -> Vec<Event> {
        self.with(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Conf { group: g, .. } if g == group))
                .cloned()
                .collect()
        })
    }

    /// The members reported by the last configuration change of `group`.
    pub fn last_members(&self, group: &GroupName) -> Option<Vec<Member>> {
        self.confchgs(group)
            .into_iter()
            .rev()
            .find_map(|e| match e {
                Event::Conf { members, .. } => Some(members),
                _ => None,
            })
    }

    /// Waits until the latest membership change lists exactly `members` (in any
    /// order).
    pub fn wait_members(&self, members: &[Member], timeout: std::time::Duration) {
        let want = sorted(members);
        self.wait_for(&format!("group members {want:?}"), timeout, |events| {
            (latest_members(events).map(sorted).as_deref() == Some(&want[..])).then_some(())
        })
    }

    /// Waits until test message `(sender, seq)` has been delivered.
    pub fn wait_message(&self, sender: u32, seq: u64, timeout: std::time::Duration) {
        self.wait_for(
            &format!("message {seq} of sender {sender}"),
            timeout,
            |events| {
                events
                    .iter()
                    .any(|e| e.test_msg() == Some((sender, seq)))
                    .then_some(())
            },
        )
    }
}

/// The members listed by the latest membership change in `events`, in the daemon's
/// order.
pub fn latest_members(events: &[Event]) -> Option<&[Member]> {
    events.iter().rev().find_map(|e| match e {
        Event::Conf { members, .. } => Some(&members[..]),
        _ => None,
    })
}

/// A sorted copy of `items`, for comparing memberships as sets.
pub fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v
}
