//! The handle that owns a connection to the corosync daemon, and the [`Connection`]
//! operations shared by the handle and its callbacks.

use std::io::IoSlice;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::resume_unwind;
use std::ptr::NonNull;
use std::time::Duration;

use corosync_sys as sys;

use crate::callbacks::{
    Callbacks, Closures, DispatchScope, Header, OnConfchg, OnDeliver, OnTotemConfchg, State, Unset,
};
use crate::error::{CsError, Error, Operation, OsError, Result};
use crate::name::GroupName;
use crate::retry::Backoff;
use crate::types::{
    ConfigChange, DispatchMode, Dispatched, FlowControl, Guarantee, Member, Message, TotemChange,
};

/// The most buffers one vectored send may have.
///
/// libcpg copies the caller's iovecs after its own header into a fixed array of 64
/// entries without checking the count; more than 63 would overflow its stack, so this
/// crate refuses them with [`Error::TooManyBuffers`] before C is called.
pub const MAX_SEND_BUFFERS: usize = 63;

/// The most events [`Handle::send_with_retry`] delivers in one pause.
const EVENTS_PER_RETRY_PAUSE: usize = 1024;

/// The operations on a live libcpg connection: join, leave, send, membership, node id.
///
/// You never own one: [`Handle`] dereferences to it, and callbacks receive a
/// `&Connection` that is valid only while they run. It cannot dispatch or close the
/// connection, which is what makes sending from a callback safe.
///
/// A callback cannot keep it either: the reference is only valid during the call, and
/// callbacks are `'static`:
///
/// ```compile_fail
/// let mut kept: Option<&cpg::Connection> = None;
/// let handle = cpg::Handle::builder()
///     .on_deliver(move |cpg, _msg| kept = Some(cpg))
///     .build();
/// ```
#[derive(Debug)]
pub struct Connection {
    raw: sys::cpg_handle_t,
    /// The handle's callback state (for the join/leave bookkeeping); lives as long as
    /// the handle.
    header: NonNull<Header>,
    /// Neither `Send` nor `Sync`: a `&Connection` given to a callback must stay on the
    /// dispatching thread. [`Handle`] restores `Send` for the owner.
    _not_send: PhantomData<*const ()>,
}

impl Connection {
    /// A view of a handle that is live for as long as the view is used.
    pub(crate) fn borrowed(raw: sys::cpg_handle_t, header: NonNull<Header>) -> Connection {
        Connection {
            raw,
            header,
            _not_send: PhantomData,
        }
    }

    /// The raw libcpg handle, for calls this crate does not wrap. Do not finalize it.
    pub fn as_raw(&self) -> sys::cpg_handle_t {
        self.raw
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the header belongs to the handle this connection is part of (or is
        // dispatching), which outlives every borrow of the connection.
        unsafe { self.header.as_ref() }
    }

    /// Fails before C is called when the handle cannot be used: it was made before
    /// this process forked ([`Error::Forked`]), or an earlier call found the daemon
    /// gone (the same `CS_ERR_LIBRARY` error again, without another round trip, and
    /// without creating resources that nobody would clean up). Two loads.
    #[inline]
    pub(crate) fn usable(&self, op: Operation) -> Result<()> {
        let header = self.header();
        if crate::process::forked_since(header.generation) {
            return Err(Error::Forked);
        }
        if header.lost.get() {
            return Err(Error::Cs {
                op,
                code: CsError::Library,
            });
        }
        Ok(())
    }

    /// Converts a libcpg result, remembering a lost daemon (see [`usable`](Self::usable)).
    #[inline]
    pub(crate) fn check(&self, op: Operation, rc: sys::cs_error_t) -> Result<()> {
        if rc == sys::CS_OK {
            return Ok(());
        }
        self.failed(op, rc)
    }

    #[cold]
    #[inline(never)]
    fn failed(&self, op: Operation, rc: sys::cs_error_t) -> Result<()> {
        let err = Error::check(op, rc);
        if rc == sys::CS_ERR_LIBRARY {
            self.header().lost.set(true);
        }
        err
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
    ///   it with [`Error::JoinAfterLeave`]. Make a new [`Handle`] instead.
    ///
    /// [`CsError::TryAgain`](crate::CsError::TryAgain) means back-pressure.
    pub fn join(&self, group: &GroupName) -> Result<()> {
        self.usable(Operation::Join)?;
        let header = self.header();
        if header.left.get() {
            return Err(Error::JoinAfterLeave);
        }
        if group.is_empty() {
            // Only reachable through names made from raw parts: see GroupName::new.
            return Err(Error::EmptyName);
        }
        // SAFETY: `raw` is live (owned handle or inside its dispatch); libcpg only reads
        // the name struct, which outlives the call.
        let rc = unsafe { sys::cpg_join(self.raw, group.as_raw()) };
        self.check(Operation::Join, rc)?;
        // The first successful join names the handle's group for good: the daemon
        // refuses a second one (EXIST) and a join after leave is refused above.
        let _ = header.joined.set(*group);
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
        self.usable(Operation::Leave)?;
        let header = self.header();
        let joined = match header.joined.get() {
            Some(joined) if !header.left.get() => joined,
            _ => return Err(Error::NotJoined),
        };
        if joined != group {
            return Err(Error::NotJoinedTo {
                joined: Box::new(*joined),
            });
        }
        // SAFETY: as in `join`.
        let rc = unsafe { sys::cpg_leave(self.raw, group.as_raw()) };
        self.check(Operation::Leave, rc)?;
        header.left.set(true);
        Ok(())
    }

    /// The connection's descriptor, once known.
    pub(crate) fn descriptor(&self) -> Option<RawFd> {
        Some(self.header().fd.get()).filter(|fd| *fd >= 0)
    }

    /// The group this handle joined, until it leaves.
    pub fn joined_group(&self) -> Option<&GroupName> {
        let header = self.header();
        header.joined.get().filter(|_| !header.left.get())
    }

    /// Fails with [`Error::NotJoined`] unless the handle is in a group: corosync
    /// (3.1.7) answers a send from a connection that never joined, or has left, with
    /// success and drops the message.
    #[inline]
    pub(crate) fn sendable(&self, op: Operation) -> Result<()> {
        self.usable(op)?;
        let header = self.header();
        if header.joined.get().is_none() || header.left.get() {
            return Err(Error::NotJoined);
        }
        Ok(())
    }

    /// Sends `message` to the group this handle joined, in agreed order.
    ///
    /// Messages above [`max_message_size`](Self::max_message_size) are fragmented by
    /// libcpg (it may block while doing so). Back-pressure shows as a retryable error
    /// ([`Error::is_retryable`]); see [`Handle::send_with_retry`]. A handle that has not
    /// joined (or has left) gets [`Error::NotJoined`].
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
        self.sendable(Operation::Send)?;
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
        // SAFETY: IoSlice is guaranteed ABI-compatible with `struct iovec` on Unix; the
        // slice and the memory it points to outlive the call, which only reads them;
        // the count is at most 63, the bound libcpg's fixed array can hold.
        let rc = unsafe {
            sys::cpg_mcast_joined(
                self.raw,
                guarantee.to_raw(),
                buffers.as_ptr().cast::<sys::iovec>(),
                buffers.len() as std::ffi::c_uint,
            )
        };
        self.check(Operation::Send, rc)
    }

    /// The current members of `group`, as this node's daemon sees them.
    pub fn members(&self, group: &GroupName) -> Result<Vec<Member>> {
        self.usable(Operation::Membership)?;
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
        // SAFETY: `list` has room for the most entries libcpg can copy (above); libcpg
        // only reads the group name (the pointer is not const in the C prototype, but
        // it is never written).
        let rc = unsafe {
            sys::cpg_membership_get(
                self.raw,
                (group.as_raw() as *const sys::cpg_name).cast_mut(),
                list.as_mut_ptr(),
                &mut count,
            )
        };
        self.check(Operation::Membership, rc)?;
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
        self.usable(Operation::LocalNodeId)?;
        let mut nodeid: std::ffi::c_uint = 0;
        // SAFETY: valid handle and out pointer.
        let rc = unsafe { sys::cpg_local_get(self.raw, &mut nodeid) };
        self.check(Operation::LocalNodeId, rc)?;
        Ok(nodeid)
    }

    /// The largest message libcpg sends in one piece (about 1 MiB). Larger messages
    /// sent with [`send`](Self::send) are fragmented; zero-copy sends cannot exceed it.
    pub fn max_message_size(&self) -> Result<u32> {
        self.usable(Operation::MaxMessageSize)?;
        let mut size: u32 = 0;
        // SAFETY: valid handle and out pointer.
        let rc = unsafe { sys::cpg_max_atomic_msgsize_get(self.raw, &mut size) };
        self.check(Operation::MaxMessageSize, rc)?;
        Ok(size)
    }

    /// The flow-control state. libcpg always answers [`FlowControl::Disabled`] (the call
    /// is a stub); real back-pressure shows as a retryable error from a send.
    pub fn flow_control_state(&self) -> Result<FlowControl> {
        self.usable(Operation::FlowControlState)?;
        let mut state: sys::cpg_flow_control_state_t = sys::CPG_FLOW_CONTROL_DISABLED;
        // SAFETY: valid handle and out pointer.
        let rc = unsafe { sys::cpg_flow_control_state_get(self.raw, &mut state) };
        self.check(Operation::FlowControlState, rc)?;
        Ok(if state == sys::CPG_FLOW_CONTROL_ENABLED {
            FlowControl::Enabled
        } else {
            FlowControl::Disabled
        })
    }
}

/// Options for a new [`Handle`] (or [`AsyncHandle`](crate::AsyncHandle)).
///
/// ```
/// let options = cpg::Options::default().initial_totem_conf(true).daemon_uid(Some(0));
/// assert!(options.initial_totem_conf);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Deliver the current totem membership (ring id and nodes) right after join, not
    /// only when it changes (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`). Default: off.
    pub initial_totem_conf: bool,
    /// The user id the daemon must run as, checked on the connection's socket
    /// (`SO_PEERCRED`) right after connecting; `None` skips the check. Default:
    /// `Some(0)` (root, as corosync runs).
    ///
    /// corosync's IPC socket is an abstract Unix socket: any local process can bind
    /// its name before corosync starts and then impersonate it. A connection whose
    /// peer runs as another user fails with [`Error::UntrustedDaemon`].
    pub daemon_uid: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial_totem_conf: false,
            daemon_uid: Some(0),
        }
    }
}

impl Options {
    /// Sets [`initial_totem_conf`](Self#structfield.initial_totem_conf).
    pub fn initial_totem_conf(mut self, yes: bool) -> Self {
        self.initial_totem_conf = yes;
        self
    }

    /// Sets [`daemon_uid`](Self#structfield.daemon_uid).
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.daemon_uid = uid;
        self
    }
}

/// A connection to the local corosync daemon, with its callbacks.
///
/// Created with [`Handle::new`] (a [`Callbacks`] value) or [`Handle::builder`]
/// (closures). It dereferences to [`Connection`] for join, leave, send and queries.
/// Events are delivered to the callbacks by [`dispatch`](Handle::dispatch) on the
/// calling thread; the file descriptor ([`AsFd`]) becomes readable when events wait.
/// Dispatch also in a handle that mostly sends: its own messages come back to it, and
/// the daemon keeps every event a client has not read in its own memory, without limit
/// (it never refuses a send for that).
///
/// Dropping the handle finalizes the connection (the other members see this process
/// leave every group it joined) and then frees the callbacks; [`close`](Handle::close)
/// does the same and reports an error.
///
/// A handle is `Send` but not `Sync`: it can move to another thread, but only one
/// thread at a time may use it, because dispatch runs the `FnMut` callbacks. To send
/// from several threads, give each its own handle, or put one in a `Mutex` and drive
/// dispatch with [`dispatch_timeout`](Handle::dispatch_timeout).
///
/// The thread that dispatches needs a stack well above 1 MiB: libcpg keeps its receive
/// buffer (1 MiB) on the stack of `cpg_dispatch`. The main thread (8 MiB) is fine; give
/// spawned threads `std::thread::Builder::stack_size(4 << 20)` or more.
///
/// A handle is not fork-safe: libcpg records the process id at join.
#[derive(Debug)]
pub struct Handle {
    conn: Connection,
    fd: RawFd,
    state: NonNull<Header>,
    free_state: unsafe fn(*mut Header),
}

// SAFETY: libcpg handles may be used from any thread (one at a time: Handle is not
// Sync); the callback state is `Send` (Callbacks: Send) and only accessed by the thread
// that dispatches.
unsafe impl Send for Handle {}

impl Handle {
    /// Connects to the local corosync daemon with these callbacks.
    ///
    /// Fails with [`CsError::Library`](crate::CsError::Library) when no daemon is
    /// running, and [`CsError::Access`](crate::CsError::Access) when it refuses this
    /// user.
    pub fn new<C: Callbacks>(callbacks: C) -> Result<Handle> {
        Handle::with_options(callbacks, Options::default())
    }

    /// A builder that takes closures for the callbacks.
    ///
    /// ```no_run
    /// let handle = cpg::Handle::builder()
    ///     .on_deliver(|_cpg, msg| println!("{} bytes from {}", msg.data.len(), msg.sender()))
    ///     .on_confchg(|_cpg, change| println!("{} members", change.members.len()))
    ///     .build()?;
    /// # Ok::<(), cpg::Error>(())
    /// ```
    pub fn builder() -> Builder<Unset, Unset, Unset> {
        Builder {
            callbacks: Closures::default(),
            options: Options::default(),
        }
    }

    /// Connects with these callbacks and options.
    pub fn with_options<C: Callbacks>(callbacks: C, options: Options) -> Result<Handle> {
        // libqb's connect has 12 KiB frames (no stack probes).
        crate::stack::ensure(Operation::Initialize, crate::stack::CALL_STACK)?;
        let flags = if options.initial_totem_conf {
            sys::CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
        } else {
            0
        };
        let mut model = State::<C>::model(flags);
        let state = Box::into_raw(State::new(callbacks));
        let mut raw: sys::cpg_handle_t = 0;
        let rc = {
            // Concurrent initializations fail (CS_ERR_LIBRARY) and corrupt libqb's
            // handle table: see `process`.
            let _serialized = crate::process::library_lock();
            // SAFETY: valid out pointer; the model data is a cpg_model_v1_data_t whose
            // first field is the model, as libcpg expects for CPG_MODEL_V1, and libcpg
            // copies it; the context is our state, freed only after cpg_finalize. The
            // handle-table lock is held and the stack has room (checked above).
            unsafe {
                sys::cpg_model_initialize(
                    &mut raw,
                    sys::CPG_MODEL_V1,
                    (&mut model as *mut sys::cpg_model_v1_data_t).cast::<sys::cpg_model_data_t>(),
                    state.cast(),
                )
            }
        };
        // SAFETY: `state` came from Box::into_raw just above (repr(C): header first).
        let header = unsafe { NonNull::new_unchecked(state.cast::<Header>()) };
        if let Err(e) = Error::check(Operation::Initialize, rc) {
            // SAFETY: initialization failed, so libcpg holds no reference to the state.
            unsafe { State::<C>::free(header.as_ptr()) };
            return Err(e);
        }
        let mut handle = Handle {
            conn: Connection::borrowed(raw, header),
            fd: -1,
            state: header,
            free_state: State::<C>::free,
        };
        let mut fd: std::ffi::c_int = -1;
        // SAFETY: valid handle and out pointer.
        let rc = unsafe { sys::cpg_fd_get(raw, &mut fd) };
        // On error, dropping `handle` finalizes and frees.
        Error::check(Operation::FdGet, rc)?;
        handle.fd = fd;
        handle.header().fd.set(fd);
        if let Some(expected) = options.daemon_uid {
            handle.check_peer(expected)?;
        }
        Ok(handle)
    }

    /// Fails with [`Error::UntrustedDaemon`] unless the process at the other end of the
    /// connection runs as `expected`.
    fn check_peer(&self, expected: u32) -> Result<()> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: u32::MAX,
            gid: u32::MAX,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `fd` is libcpg's open socket to the daemon (open until finalize);
        // `cred` and `len` are valid out pointers of the size passed.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(Error::Os {
                op: Operation::PeerCredentials,
                source: OsError(errno),
            });
        }
        if cred.uid != expected {
            return Err(Error::UntrustedDaemon {
                pid: cred.pid as u32,
                uid: cred.uid,
                expected,
            });
        }
        Ok(())
    }

    fn header(&self) -> &Header {
        // SAFETY: the state lives until `finalize_and_free`, which needs `self` by value
        // or in Drop, so it outlives this borrow.
        unsafe { self.state.as_ref() }
    }

    /// Delivers pending events to the callbacks, waiting or not according to `mode`.
    ///
    /// Returns [`Dispatched::NothingPending`] when a non-blocking mode found nothing,
    /// else [`Dispatched::Events`] with the number of callbacks that ran. A lost daemon
    /// is an error for which [`Error::is_daemon_lost`] holds.
    ///
    /// If a callback panics, delivery stops, the panic resumes here once libcpg has
    /// returned, and the handle is poisoned: events libcpg had already read are
    /// discarded, so later dispatches fail with [`Error::Poisoned`] and the handle must
    /// be replaced (its group membership is no longer in step with the others').
    ///
    /// Called from one of this handle's own callbacks (possible only through a
    /// thread-local or leaked reference), it fails with [`Error::ReentrantDispatch`].
    #[inline]
    pub fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        match mode {
            // Driven from Rust, one event at a time, so a panicking callback stops the
            // loop (libcpg's own blocking loop would never return).
            DispatchMode::Blocking => loop {
                self.dispatch_raw(DispatchMode::One)?;
            },
            _ => self.dispatch_raw(mode),
        }
    }

    #[inline]
    fn dispatch_raw(&self, mode: DispatchMode) -> Result<Dispatched> {
        let header = self.header();
        if header.poisoned.get() {
            return Err(Error::Poisoned);
        }
        self.conn.usable(Operation::Dispatch)?;
        // cpg_dispatch's 1 MiB frame has no stack probe: see `stack`.
        crate::stack::ensure(Operation::Dispatch, crate::stack::DISPATCH_STACK)?;
        if header.dispatching.replace(true) {
            return Err(Error::ReentrantDispatch);
        }
        header.callbacks_run.set(0);
        let scope = DispatchScope::enter(self.conn.raw, self.state);
        // SAFETY: the handle is live; the trampolines find their state through the
        // dispatch scope (or the context pointer), and the state outlives this call (it
        // is freed after finalize, which needs the handle by value).
        // The stack has room for its frame (checked above).
        let rc = unsafe { sys::cpg_dispatch(self.conn.raw, mode.to_raw()) };
        drop(scope);
        header.dispatching.set(false);
        if let Some(payload) = header.panic.take() {
            resume_unwind(payload);
        }
        let ran = header.callbacks_run.get();
        match rc {
            sys::CS_OK if ran == 0 && mode == DispatchMode::All => Ok(Dispatched::NothingPending),
            sys::CS_OK => Ok(Dispatched::Events(ran)),
            sys::CS_ERR_TRY_AGAIN if mode == DispatchMode::OneNonblocking => {
                Ok(Dispatched::NothingPending)
            }
            rc => self
                .conn
                .check(Operation::Dispatch, rc)
                .map(|()| Dispatched::Events(ran)),
        }
    }

    /// Delivers pending events, one libcpg event at a time
    /// ([`DispatchMode::OneNonblocking`]), stopping when nothing is pending or after
    /// `max_events` events: the bounded form of [`DispatchMode::All`] for event loops
    /// that must not spend unbounded time on one busy handle.
    ///
    /// `max_events` must be at least 1 ([`Error::InvalidArgument`] otherwise).
    pub fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
        if max_events == 0 {
            return Err(Error::InvalidArgument(
                "dispatch_at_most needs max_events of at least 1",
            ));
        }
        let mut callbacks = 0;
        for read in 0..max_events {
            match self.dispatch_raw(DispatchMode::OneNonblocking)? {
                Dispatched::Events(n) => callbacks += n,
                Dispatched::NothingPending if read == 0 => return Ok(Dispatched::NothingPending),
                Dispatched::NothingPending => break,
            }
        }
        Ok(Dispatched::Events(callbacks))
    }

    /// Waits up to `timeout` for events, then delivers all pending ones
    /// ([`DispatchMode::All`]). Returns [`Dispatched::NothingPending`] on timeout.
    ///
    /// A lost daemon makes the descriptor readable, so this returns the error promptly
    /// rather than waiting out the timeout. Under a steady inflow the delivery part can
    /// run for long (see [`DispatchMode::All`]); poll the descriptor and use
    /// [`dispatch_at_most`](Self::dispatch_at_most) to bound it.
    pub fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        // A handle that cannot dispatch says so now, not after the timeout.
        if self.header().poisoned.get() {
            return Err(Error::Poisoned);
        }
        self.conn.usable(Operation::Dispatch)?;
        crate::stack::ensure(Operation::Dispatch, crate::stack::DISPATCH_STACK)?;
        if !self.wait_readable(timeout)? {
            return Ok(Dispatched::NothingPending);
        }
        self.dispatch(DispatchMode::All)
    }

    /// Waits up to `timeout` (to the microsecond, not rounded to milliseconds) until
    /// the descriptor is readable; false on timeout or when a signal interrupted the
    /// wait.
    fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Longer than any wait of interest, and within every platform's `time_t`.
        let timeout = timeout.min(Duration::from_secs(i32::MAX as u64));
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: one valid pollfd and a valid timespec for the duration of the call;
        // a null signal mask leaves the thread's mask alone.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EINTR {
                return Ok(false);
            }
            return Err(Error::Os {
                op: Operation::Poll,
                source: OsError(errno),
            });
        }
        Ok(n > 0)
    }

    /// Sends like [`Connection::send`], retrying on back-pressure with `backoff`
    /// between attempts, and delivering events to this handle's callbacks while it
    /// waits: a sender must dispatch anyway (see [`Handle`]; measured with corosync
    /// 3.1.7, 300,000 sends of 1 KiB without a dispatch were all accepted and grew the
    /// daemon by 370 MB), and its pauses are a good time to.
    ///
    /// A pause waits for events for up to the back-off's current delay and ends as soon
    /// as some arrive (the daemon's queue is then moving); those are delivered, at most
    /// 1,024 per pause, so a steady inflow cannot hold the sender in its pause.
    pub fn send_with_retry(&self, message: &[u8], backoff: &Backoff) -> Result<()> {
        self.send_vectored_with_retry(&[IoSlice::new(message)], backoff)
    }

    /// Vectored [`send_with_retry`](Self::send_with_retry).
    pub fn send_vectored_with_retry(
        &self,
        buffers: &[IoSlice<'_>],
        backoff: &Backoff,
    ) -> Result<()> {
        backoff.run_pausing(
            || self.conn.send_vectored(buffers),
            |delay| {
                // Events arriving end the pause early: the daemon's queue is moving.
                if self.wait_readable(delay)? {
                    self.dispatch_at_most(EVENTS_PER_RETRY_PAUSE)?;
                }
                Ok(())
            },
        )
    }

    /// Finalizes the connection and frees the callbacks, reporting a failure of
    /// `cpg_finalize` (dropping the handle does the same and ignores it).
    pub fn close(self) -> Result<()> {
        let mut this = ManuallyDrop::new(self);
        this.finalize_and_free()
    }

    fn finalize_and_free(&mut self) -> Result<()> {
        let result = if crate::process::forked_since(self.header().generation) {
            // In a child of fork the connection is the parent's: finalizing it would
            // end the parent's session. Only Rust's memory is released below.
            Err(Error::Forked)
        } else if crate::stack::remaining().is_some_and(|left| left < crate::stack::CALL_STACK) {
            // libqb's close has 12 KiB frames without stack probes: finalize on a
            // short-lived thread with room (a drop cannot fail or be refused).
            let raw = self.conn.raw;
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || finalize(raw))
                    .map_or_else(
                        |e| {
                            Err(Error::Os {
                                op: Operation::Finalize,
                                source: OsError(e.raw_os_error().unwrap_or(0)),
                            })
                        },
                        |thread| thread.join().unwrap_or(Ok(())),
                    )
            })
        } else {
            finalize(self.conn.raw)
        };
        // SAFETY: after cpg_finalize (or in a child of fork, where this process never
        // dispatches the handle again) no trampoline can run for this handle, so the
        // state made in `with_options` can be freed, once. If the finalize thread
        // could not be started, the handle is leaked in libcpg but never dispatched
        // again either (this is its drop or close).
        unsafe { (self.free_state)(self.state.as_ptr()) };
        result
    }
}

/// Finalizes `raw` under the handle-table lock.
fn finalize(raw: sys::cpg_handle_t) -> Result<()> {
    let _serialized = crate::process::library_lock();
    // SAFETY: `raw` is live and finalized exactly once (reached from either
    // `Handle::close` or `Drop`, never both); the handle-table lock is held; the caller
    // made sure the stack has room.
    let rc = unsafe { sys::cpg_finalize(raw) };
    Error::check(Operation::Finalize, rc)
}

impl Deref for Handle {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.finalize_and_free();
    }
}

impl AsFd for Handle {
    /// The descriptor libcpg owns (closed by finalize): readable when events wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is open from initialization until finalize, which happens after
        // every borrow of `self` has ended.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Builds a [`Handle`] from closures. Unset callbacks do nothing.
///
/// Each closure gets the handle's [`Connection`] (to send, join, leave or query from
/// inside the callback) and the event.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct Builder<D, C, T> {
    callbacks: Closures<D, C, T>,
    options: Options,
}

impl<D: OnDeliver, C: OnConfchg, T: OnTotemConfchg> Builder<D, C, T> {
    /// Called for every message delivered to a joined group.
    pub fn on_deliver<F>(self, f: F) -> Builder<F, C, T>
    where
        F: FnMut(&Connection, Message<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: f,
                confchg: self.callbacks.confchg,
                totem: self.callbacks.totem,
            },
            options: self.options,
        }
    }

    /// Called when the membership of a joined group changes.
    pub fn on_confchg<F>(self, f: F) -> Builder<D, F, T>
    where
        F: FnMut(&Connection, ConfigChange<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: self.callbacks.deliver,
                confchg: f,
                totem: self.callbacks.totem,
            },
            options: self.options,
        }
    }

    /// Called when the cluster's node membership (totem ring) changes.
    pub fn on_totem_confchg<F>(self, f: F) -> Builder<D, C, F>
    where
        F: FnMut(&Connection, TotemChange<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: self.callbacks.deliver,
                confchg: self.callbacks.confchg,
                totem: f,
            },
            options: self.options,
        }
    }

    /// Also deliver the current totem membership right after join
    /// ([`Options::initial_totem_conf`]).
    pub fn initial_totem_conf(mut self, yes: bool) -> Self {
        self.options.initial_totem_conf = yes;
        self
    }

    /// The user id the daemon must run as, or `None` for no check
    /// ([`Options::daemon_uid`]; default root).
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.options.daemon_uid = uid;
        self
    }

    /// All options at once, replacing those set so far.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Connects to the local corosync daemon.
    pub fn build(self) -> Result<Handle> {
        Handle::with_options(self.callbacks, self.options)
    }
}
