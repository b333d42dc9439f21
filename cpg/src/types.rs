//! The values callbacks receive and calls return: members, reasons, ring ids, modes.

use std::fmt;

use corosync_sys as sys;

use crate::name::GroupName;

/// Why a process appears in a configuration change (`cpg_reason_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// 0: no reason given (members lists carry this).
    Undefined,
    /// 1: the process called join.
    Join,
    /// 2: the process called leave.
    Leave,
    /// 3: the process's node left the membership (daemon died, or partition).
    NodeDown,
    /// 4: the process's node joined the membership (start, or partition healed).
    NodeUp,
    /// 5: the process ended (or its connection to the daemon closed) without leaving.
    ProcDown,
    /// A value this crate does not know.
    Unknown(u32),
}

impl Reason {
    /// Maps a raw `cpg_reason_t`.
    pub fn from_raw(raw: u32) -> Reason {
        // The numbers are fixed by the protocol; CPG_REASON_UNDEFINED is missing from
        // some headers, so none of these depend on the sys constants.
        match raw {
            0 => Reason::Undefined,
            1 => Reason::Join,
            2 => Reason::Leave,
            3 => Reason::NodeDown,
            4 => Reason::NodeUp,
            5 => Reason::ProcDown,
            other => Reason::Unknown(other),
        }
    }

    /// The raw `cpg_reason_t` value.
    pub fn to_raw(self) -> u32 {
        match self {
            Reason::Undefined => 0,
            Reason::Join => 1,
            Reason::Leave => 2,
            Reason::NodeDown => 3,
            Reason::NodeUp => 4,
            Reason::ProcDown => 5,
            Reason::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Undefined => f.write_str("undefined"),
            Reason::Join => f.write_str("join"),
            Reason::Leave => f.write_str("leave"),
            Reason::NodeDown => f.write_str("node down"),
            Reason::NodeUp => f.write_str("node up"),
            Reason::ProcDown => f.write_str("process down"),
            Reason::Unknown(raw) => write!(f, "unknown reason {raw}"),
        }
    }
}

/// A process in a group: its node and process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Corosync node id.
    pub nodeid: u32,
    /// Process id on that node.
    pub pid: u32,
}

impl Member {
    /// A member from its node id and process id.
    pub const fn new(nodeid: u32, pid: u32) -> Member {
        Member { nodeid, pid }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} pid {}", self.nodeid, self.pid)
    }
}

/// A member as a configuration change lists it: the process ([`member`](Self::member))
/// and the reason it is listed ([`reason`](Self::reason)). The entries of
/// [`Confchg`]'s `members`, `left` and `joined` lists.
///
/// Has the layout of C's `struct cpg_address`; lists of them are borrowed from libcpg.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct ListedMember(sys::cpg_address);

impl ListedMember {
    /// An entry for `member`, listed for `reason`: for building a
    /// [`Confchg`] (or an async `Event`) in tests of code that handles them.
    ///
    /// ```
    /// use cpg::{ListedMember, Confchg, GroupName, Member, Reason};
    ///
    /// let group = GroupName::new("jobs").unwrap();
    /// let me = ListedMember::new(Member::new(1, 4242), Reason::Join);
    /// let change = Confchg { group: &group, members: &[me], left: &[], joined: &[me] };
    /// assert_eq!(change.joined[0].member(), Member::new(1, 4242));
    /// assert_eq!(change.joined[0].reason(), Reason::Join);
    /// ```
    pub fn new(member: Member, reason: Reason) -> ListedMember {
        ListedMember(sys::cpg_address {
            nodeid: member.nodeid,
            pid: member.pid,
            reason: reason.to_raw(),
        })
    }

    /// Corosync node id.
    pub fn nodeid(&self) -> u32 {
        self.0.nodeid
    }

    /// Process id on that node.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Why the process is listed.
    pub fn reason(&self) -> Reason {
        Reason::from_raw(self.0.reason)
    }

    /// The process, without the reason.
    pub fn member(&self) -> Member {
        Member {
            nodeid: self.0.nodeid,
            pid: self.0.pid,
        }
    }
}

impl fmt::Debug for ListedMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListedMember")
            .field("nodeid", &self.nodeid())
            .field("pid", &self.pid())
            .field("reason", &self.reason())
            .finish()
    }
}

impl PartialEq for ListedMember {
    fn eq(&self, other: &Self) -> bool {
        self.member() == other.member() && self.reason() == other.reason()
    }
}

impl Eq for ListedMember {}

/// A message delivered to a group, borrowed for the duration of the callback.
///
/// The bytes point into libcpg's receive buffer; copy what you want to keep.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The group the message was sent to.
    pub group: &'a GroupName,
    /// The sender's node id.
    pub nodeid: u32,
    /// The sender's process id.
    pub pid: u32,
    /// The message bytes.
    pub data: &'a [u8],
}

impl Message<'_> {
    /// The sender.
    pub fn sender(&self) -> Member {
        Member {
            nodeid: self.nodeid,
            pid: self.pid,
        }
    }
}

/// A change of a group's membership, borrowed for the duration of the callback.
#[derive(Debug, Clone, Copy)]
pub struct Confchg<'a> {
    /// The group that changed.
    pub group: &'a GroupName,
    /// The members after the change.
    pub members: &'a [ListedMember],
    /// The processes that left, with the reason.
    pub left: &'a [ListedMember],
    /// The processes that joined, with the reason.
    pub joined: &'a [ListedMember],
}

/// Identifies one totem membership (ring): the node that formed it and a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingId {
    /// Node id of the ring's representative.
    pub nodeid: u32,
    /// Sequence number, increasing with every membership change.
    pub seq: u64,
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.nodeid, self.seq)
    }
}

/// A change of the cluster's (totem) membership: which nodes are up.
#[derive(Debug, Clone, Copy)]
pub struct TotemConfchg<'a> {
    /// The new ring.
    pub ring_id: RingId,
    /// Node ids of the nodes in the ring.
    pub members: &'a [u32],
}

/// How `dispatch` waits for and handles events (`cs_dispatch_flags_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DispatchMode {
    /// Wait for one event and handle it (`CS_DISPATCH_ONE`).
    One,
    /// Handle every pending event, then return without waiting (`CS_DISPATCH_ALL`).
    ///
    /// libcpg keeps going for as long as events keep arriving, so under a steady
    /// inflow one call can run for long; [`Handle::dispatch_at_most`](crate::Handle::dispatch_at_most)
    /// bounds the work of one call.
    All,
    /// Handle events forever; returns only with an error, such as a lost daemon
    /// (`CS_DISPATCH_BLOCKING`).
    Blocking,
    /// Handle one event if one is pending, without waiting
    /// (`CS_DISPATCH_ONE_NONBLOCKING`).
    OneNonblocking,
}

impl DispatchMode {
    pub(crate) fn to_raw(self) -> sys::cs_dispatch_flags_t {
        match self {
            DispatchMode::One => sys::CS_DISPATCH_ONE,
            DispatchMode::All => sys::CS_DISPATCH_ALL,
            DispatchMode::Blocking => sys::CS_DISPATCH_BLOCKING,
            DispatchMode::OneNonblocking => sys::CS_DISPATCH_ONE_NONBLOCKING,
        }
    }
}

/// What a `dispatch` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dispatched {
    /// Events were read, and this many callbacks ran. It can be 0 when the event was a
    /// fragment of a larger message, which is delivered once complete.
    Callbacks(usize),
    /// Nothing was pending (non-blocking modes, or a timeout).
    NothingPending,
}

impl Dispatched {
    /// Number of callbacks that ran (0 when nothing was pending).
    pub fn callbacks(self) -> usize {
        match self {
            Dispatched::Callbacks(n) => n,
            Dispatched::NothingPending => 0,
        }
    }
}

/// The delivery guarantee requested for a send (`cpg_guarantee_t`).
///
/// Corosync 2.x and 3.x deliver every message in agreed (total) order whatever is
/// requested; the header marks `UNORDERED` and `SAFE` as not implemented, so this crate
/// offers only the two levels that mean what they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Guarantee {
    /// Total order: every member delivers every message in the same order
    /// (`CPG_TYPE_AGREED`).
    #[default]
    Agreed,
    /// Per-sender order (`CPG_TYPE_FIFO`); corosync delivers it in agreed order too.
    Fifo,
}

impl Guarantee {
    pub(crate) fn to_raw(self) -> sys::cpg_guarantee_t {
        match self {
            Guarantee::Agreed => sys::CPG_TYPE_AGREED,
            Guarantee::Fifo => sys::CPG_TYPE_FIFO,
        }
    }
}

/// What `cpg_flow_control_state_get` reports.
///
/// libcpg 2.x and 3.x always report [`FlowControl::Disabled`]: the call is a stub.
/// Back-pressure shows up as [`CsError::TryAgain`](crate::CsError::TryAgain) or
/// [`CsError::QueueFull`](crate::CsError::QueueFull) from sends; see
/// [`retry`](crate::retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlowControl {
    /// New messages may be sent.
    Disabled,
    /// New messages should not be sent.
    Enabled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_both_ways_and_print_readably() {
        assert_eq!(Reason::from_raw(5), Reason::ProcDown);
        assert_eq!(Reason::from_raw(77), Reason::Unknown(77));
        assert_eq!(Reason::NodeDown.to_raw(), 3);
        for raw in 0..8 {
            assert_eq!(Reason::from_raw(raw).to_raw(), raw);
        }
        assert_eq!(Reason::NodeDown.to_string(), "node down");
        assert_eq!(Reason::Unknown(9).to_string(), "unknown reason 9");
    }

    #[test]
    fn members_print_as_node_and_pid() {
        let m = Member { nodeid: 3, pid: 42 };
        assert_eq!(m.to_string(), "node 3 pid 42");
    }

    #[test]
    fn an_address_built_for_a_test_reads_back_its_member_and_reason() {
        for reason in [Reason::Join, Reason::ProcDown, Reason::Unknown(99)] {
            let a = ListedMember::new(Member::new(4, 77), reason);
            assert_eq!(
                (a.nodeid(), a.pid(), a.member()),
                (4, 77, Member::new(4, 77))
            );
            assert_eq!(a.reason(), reason);
        }
        assert_ne!(
            ListedMember::new(Member::new(4, 77), Reason::Join),
            ListedMember::new(Member::new(4, 77), Reason::Leave)
        );
    }
}
