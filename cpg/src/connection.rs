//! [`ConnectionRef`]: the operations on a live libcpg connection (join, leave, send,
//! membership, node id), shared by the owning [`Handle`](crate::Handle) and the
//! callbacks it runs.

use std::io::IoSlice;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use corosync_sys as sys;

use crate::error::{Error, Operation, Result};
use crate::link::{Link, RequestGuard};
use crate::name::GroupName;
use crate::types::{FlowControl, Guarantee, Member};

/// The most buffers one vectored send may have.
///
/// libcpg copies the caller's iovecs after its own header into a fixed array of 64
/// entries without checking the count; more than 63 would overflow its stack, so this
/// crate refuses them with [`Error::TooManyBuffers`] before C is called.
pub const MAX_SEND_BUFFERS: usize = 63;

/// A borrowed view of a live libcpg connection, for its operations: join, leave, send,
/// membership, node id. (The owner is [`Handle`](crate::Handle), or the async handle.)
///
/// You never own one: [`Handle`](crate::Handle) dereferences to it, and callbacks
/// receive a `&ConnectionRef` that is valid only while they run. It cannot dispatch or
/// close the connection, which is what makes sending from a callback safe. To send from
/// other threads, make a [`Sender`](crate::Sender) ([`sender`](Self::sender)).
///
/// A callback cannot keep it either: the reference is only valid during the call, and
/// callbacks are `'static`:
///
/// ```compile_fail
/// let mut kept: Option<&cpg::ConnectionRef> = None;
/// let handle = cpg::Handle::builder()
///     .on_deliver(move |cpg, _msg| kept = Some(cpg))
///     .build();
/// ```
#[derive(Debug)]
pub struct ConnectionRef {
    /// The handle's shared state; lives as long as the handle (an `Arc` the handle
    /// holds).
    link: NonNull<Link>,
    /// Neither `Send` nor `Sync`: a `&ConnectionRef` given to a callback must stay on the
    /// dispatching thread. [`Handle`](crate::Handle) restores `Send` for the owner.
    _not_send: PhantomData<*const ()>,
}

impl ConnectionRef {
    /// A view of a handle's link, usable for as long as the handle lives.
    pub(crate) fn borrowed(link: NonNull<Link>) -> ConnectionRef {
        ConnectionRef {
            link,
            _not_send: PhantomData,
        }
    }

    /// The link's pointer as the owning handle got it from `Arc::into_raw`.
    pub(crate) fn link_ptr(&self) -> *const Link {
        self.link.as_ptr().cast_const()
    }

    #[inline]
    pub(crate) fn link(&self) -> &Link {
        // SAFETY: the link belongs to the handle this connection is part of (or is
        // dispatching), which keeps it alive (`Arc`) for longer than any borrow of the
        // connection.
        unsafe { self.link.as_ref() }
    }

    /// The raw libcpg handle, for calls this crate does not wrap. Do not finalize it,
    /// and do not call into it from other threads while this one is used (see
    /// [`Sender`](crate::Sender)).
    pub fn as_raw(&self) -> sys::cpg_handle_t {
        self.link().raw
    }

    /// The connection's descriptor, once known.
    pub(crate) fn descriptor(&self) -> Option<RawFd> {
        Some(self.link().fd).filter(|fd| *fd >= 0)
    }

    /// Joins `group`: this process becomes a member, receives its messages and
    /// membership changes, and may send to it.
    ///
    /// The daemon identifies a member by (node id, pid) and gives each connection one
    /// group, so:
    /// - a handle is in at most one group; joining a second one fails with
    ///   [`CsError::Exist`](crate::CsError::Exist), as does joining the same group again;
    /// - a process joins a given group once per node: a second handle of the same
    ///   process joining it gets [`CsError::Exist`](crate::CsError::Exist) too (use one
    ///   handle per group, or separate processes);
    /// - a handle that has left a group cannot join again: corosync (3.1.7, measured)
    ///   never answers such a join, which would block forever, so this crate refuses
    ///   it with [`Error::JoinAfterLeave`]. Make a new [`Handle`](crate::Handle) instead.
    ///
    /// [`CsError::TryAgain`](crate::CsError::TryAgain) means back-pressure.
    pub fn join(&self, group: &GroupName) -> Result<()> {
        let request = self.link().request(Operation::Join)?;
        self.join_holding(&request, group)
    }

    /// [`join`](Self::join), for a caller that holds this connection's request lock.
    pub(crate) fn join_holding(&self, request: &RequestGuard<'_>, group: &GroupName) -> Result<()> {
        let link = self.link();
        request.check_for(link, Operation::Join)?;
        if link.has_left() {
            return Err(Error::JoinAfterLeave);
        }
        if group.is_empty() {
            return Err(Error::EmptyName);
        }
        // SAFETY: the handle is live (owned handle or inside its dispatch) and this is
        // the only request in flight on it (the request guard); libcpg only reads the
        // name struct, which outlives the call.
        let rc = unsafe { sys::cpg_join(link.raw, group.as_raw()) };
        link.check(Operation::Join, rc)?;
        // The first successful join names the handle's group for good: the daemon
        // refuses a second one (EXIST) and a join after leave is refused above.
        link.set_joined(*group);
        Ok(())
    }

    /// Leaves the group this handle joined. The other members see this process leave
    /// with [`Reason::Leave`](crate::Reason::Leave). The handle cannot join again (see
    /// [`join`](Self::join)).
    ///
    /// `group` must be the joined group: corosync (3.1.7) answers a leave of any other
    /// name with success, changes the connection's state anyway, and then keeps the
    /// process listed in the joined group for good (even after it exits). So a leave
    /// of another name fails with [`Error::NotJoinedTo`], and a leave before any join
    /// or after a leave with [`Error::NotJoined`], before C is called.
    pub fn leave(&self, group: &GroupName) -> Result<()> {
        let request = self.link().request(Operation::Leave)?;
        self.leave_holding(&request, group)
    }

    /// [`leave`](Self::leave), for a caller that holds this connection's request lock.
    pub(crate) fn leave_holding(
        &self,
        request: &RequestGuard<'_>,
        group: &GroupName,
    ) -> Result<()> {
        let link = self.link();
        request.check_for(link, Operation::Leave)?;
        let joined = link.joined().ok_or(Error::NotJoined)?;
        if joined != group {
            return Err(Error::NotJoinedTo {
                joined: Box::new(*joined),
            });
        }
        // SAFETY: as in `join`.
        let rc = unsafe { sys::cpg_leave(link.raw, group.as_raw()) };
        link.check(Operation::Leave, rc)?;
        link.set_left();
        Ok(())
    }

    /// The group this handle joined, until it leaves.
    pub fn joined_group(&self) -> Option<&GroupName> {
        self.link().joined()
    }

    /// Sends `message` to the group this handle joined, in agreed order.
    ///
    /// Messages above [`max_message_size`](Self::max_message_size) are fragmented by
    /// libcpg (it may block while doing so). Back-pressure shows as a retryable error
    /// ([`Error::is_retryable`]); see [`Handle::send_with_retry`](crate::Handle::send_with_retry).
    /// A handle that has not joined (or has left) gets [`Error::NotJoined`].
    #[inline]
    pub fn send(&self, message: &[u8]) -> Result<()> {
        self.send_with(Guarantee::Agreed, &[IoSlice::new(message)])
    }

    /// Sends the concatenation of `buffers` as one message, without copying them first.
    ///
    /// At most [`MAX_SEND_BUFFERS`] (63) buffers, else [`Error::TooManyBuffers`].
    #[inline]
    pub fn send_vectored(&self, buffers: &[IoSlice<'_>]) -> Result<()> {
        self.send_with(Guarantee::Agreed, buffers)
    }

    /// Sends with an explicit delivery [`Guarantee`].
    #[inline]
    pub fn send_with(&self, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
        let request = self.link().request(Operation::Send)?;
        self.send_with_holding(&request, guarantee, buffers)
    }

    /// [`send_with`](Self::send_with), for a caller that holds this connection's
    /// request lock.
    #[inline]
    pub(crate) fn send_with_holding(
        &self,
        request: &RequestGuard<'_>,
        guarantee: Guarantee,
        buffers: &[IoSlice<'_>],
    ) -> Result<()> {
        let link = self.link();
        request.check_for(link, Operation::Send)?;
        mcast(link, guarantee, buffers)
    }

    /// The current members of `group`, as this node's daemon sees them.
    pub fn members(&self, group: &GroupName) -> Result<Vec<Member>> {
        let link = self.link();
        crate::stack::ensure(Operation::Membership, crate::stack::CALL_STACK)?;
        // libcpg copies as many entries as the daemon's answer counts, whatever count
        // is passed in: the answer has room for PROCESSOR_COUNT_MAX (384) entries, so
        // that is the most libcpg can write without first reading past its own
        // buffer; the daemon itself keeps groups to CPG_MEMBERS_MAX (128). So the
        // buffer has room for 384 (a daemon that claims more makes libcpg read out of
        // bounds before anything here can check).
        const ROOM: usize = 384;
        let mut list = vec![sys::cpg_address::default(); ROOM];
        let mut count: std::ffi::c_int = ROOM as std::ffi::c_int;
        let rc = {
            let _request = link.request(Operation::Membership)?;
            // SAFETY: live handle, the only request in flight; `list` has room for the
            // most entries libcpg can copy (above); libcpg only reads the group name
            // (the pointer is not const in the C prototype, but it is never written);
            // the stack has room for the 9.5 KiB frame.
            unsafe {
                sys::cpg_membership_get(
                    link.raw,
                    (group.as_raw() as *const sys::cpg_name).cast_mut(),
                    list.as_mut_ptr(),
                    &mut count,
                )
            }
        };
        link.check(Operation::Membership, rc)?;
        let count = usize::try_from(count).unwrap_or(0).min(ROOM);
        Ok(list[..count]
            .iter()
            .map(|a| Member {
                nodeid: a.nodeid,
                pid: a.pid,
            })
            .collect())
    }

    /// The node id of the local node.
    pub fn local_node_id(&self) -> Result<u32> {
        let link = self.link();
        let mut nodeid: std::ffi::c_uint = 0;
        let rc = {
            let _request = link.request(Operation::LocalNodeId)?;
            // SAFETY: live handle, the only request in flight; valid out pointer.
            unsafe { sys::cpg_local_get(link.raw, &mut nodeid) }
        };
        link.check(Operation::LocalNodeId, rc)?;
        Ok(nodeid)
    }

    /// This process's own identity in group membership: the local node id (asked from
    /// the daemon) and the pid the daemon lists this connection under.
    ///
    /// libcpg reports `getpid()` to the daemon at join, and the daemon lists the member
    /// with that pid (corosync 3.1.7, measured: also inside a pid namespace, where a
    /// process started with `unshare --pid --fork` is listed as pid 1). So the pid here
    /// is this process's pid **in its own pid namespace**, the one that the member
    /// lists, deliveries' senders and other nodes show for it; it is not necessarily
    /// the pid the host sees. Two processes on one node whose namespaces give them the
    /// same pid cannot both join one group (`CS_ERR_EXIST`).
    ///
    /// Compare it with the entries of a confchg to find this process, rather than
    /// building the member by hand from `std::process::id()`.
    pub fn local_member(&self) -> Result<Member> {
        Ok(Member {
            nodeid: self.local_node_id()?,
            pid: std::process::id(),
        })
    }

    /// The largest message libcpg sends in one piece (about 1 MiB). Larger messages
    /// sent with [`send`](Self::send) are fragmented; zero-copy sends cannot exceed it.
    pub fn max_message_size(&self) -> Result<u32> {
        let link = self.link();
        link.usable(Operation::MaxMessageSize)?;
        let mut size: u32 = 0;
        // SAFETY: valid handle and out pointer. libcpg answers from the connection's
        // own record, without a request to the daemon, so no request guard is needed.
        let rc = unsafe { sys::cpg_max_atomic_msgsize_get(link.raw, &mut size) };
        link.check(Operation::MaxMessageSize, rc)?;
        Ok(size)
    }

    /// The flow-control state. libcpg always answers [`FlowControl::Disabled`] (the call
    /// is a stub); real back-pressure shows as a retryable error from a send.
    pub fn flow_control_state(&self) -> Result<FlowControl> {
        let link = self.link();
        link.usable(Operation::FlowControlState)?;
        let mut state: sys::cpg_flow_control_state_t = sys::CPG_FLOW_CONTROL_DISABLED;
        // SAFETY: valid handle and out pointer; a stub without a request.
        let rc = unsafe { sys::cpg_flow_control_state_get(link.raw, &mut state) };
        link.check(Operation::FlowControlState, rc)?;
        Ok(if state == sys::CPG_FLOW_CONTROL_ENABLED {
            FlowControl::Enabled
        } else {
            FlowControl::Disabled
        })
    }
}

/// What [`mcast`] refuses before calling C: not joined, too many buffers, a total
/// length beyond libcpg's 32 bits. Needs no lock (the async sender checks this before
/// it copies a message for the blocking pool).
pub(crate) fn check_mcast(link: &Link, buffers: &[IoSlice<'_>]) -> Result<()> {
    link.check_joined()?;
    if buffers.len() > MAX_SEND_BUFFERS {
        return Err(Error::TooManyBuffers {
            count: buffers.len(),
            max: MAX_SEND_BUFFERS,
        });
    }
    // libcpg carries the total length in 32 bits.
    let total: usize = buffers.iter().map(|b| b.len()).sum();
    if total > u32::MAX as usize {
        return Err(Error::MessageTooBig {
            len: total,
            max: u32::MAX as usize,
        });
    }
    Ok(())
}

/// `cpg_mcast_joined` on `link`, whose request guard the caller holds.
#[inline]
pub(crate) fn mcast(link: &Link, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
    check_mcast(link, buffers)?;
    // SAFETY: the handle is live and the caller holds its request guard (the only
    // request in flight); IoSlice is guaranteed ABI-compatible with `struct iovec` on
    // Unix; the slice and the memory it points to outlive the call, which only reads
    // them; the count is at most 63, the bound libcpg's fixed array can hold.
    let rc = unsafe {
        sys::cpg_mcast_joined(
            link.raw,
            guarantee.to_raw(),
            buffers.as_ptr().cast::<sys::iovec>(),
            buffers.len() as std::ffi::c_uint,
        )
    };
    link.check(Operation::Send, rc)
}
