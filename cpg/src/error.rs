//! Errors: every `cs_error_t` the corosync libraries can return, the operation that
//! returned it (and the [`Service`] it belongs to), and the mistakes this crate catches
//! before C is called.

use std::ffi::CStr;
use std::fmt;

use corosync_sys as sys;

use crate::name::GroupName;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A corosync client library, as the services this crate talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// Closed process groups (libcpg): [`Handle`](crate::Handle).
    Cpg,
    /// corosync's configuration and runtime database (libcmap): `cpg::cmap` (feature
    /// `cmap`).
    Cmap,
    /// corosync's administration service (libcfg): `cpg::cfg` (feature `cfg`).
    Cfg,
    /// The cluster's quorum (libquorum): `cpg::quorum` (feature `quorum`).
    Quorum,
    /// Votes, expected votes and quorum devices (libvotequorum): `cpg::votequorum`
    /// (feature `votequorum`).
    VoteQuorum,
}

impl Service {
    /// The client library's name, such as `"libquorum"`.
    pub fn library(self) -> &'static str {
        match self {
            Service::Cpg => "libcpg",
            Service::Cmap => "libcmap",
            Service::Cfg => "libcfg",
            Service::Quorum => "libquorum",
            Service::VoteQuorum => "libvotequorum",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.library())
    }
}

/// The corosync library (or Rust-side) operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `cpg_model_initialize`
    Initialize,
    /// `cpg_finalize`
    Finalize,
    /// `cpg_fd_get`
    FdGet,
    /// `cpg_dispatch`
    Dispatch,
    /// `cpg_join`
    Join,
    /// `cpg_leave`
    Leave,
    /// `cpg_mcast_joined`
    Send,
    /// `cpg_membership_get`
    Membership,
    /// `cpg_local_get`
    LocalNodeId,
    /// `cpg_max_atomic_msgsize_get`
    MaxMessageSize,
    /// `cpg_flow_control_state_get`
    FlowControlState,
    /// `cpg_zcb_alloc`
    ZeroCopyAlloc,
    /// `cpg_zcb_free`
    ZeroCopyFree,
    /// `cpg_zcb_mcast_joined`
    ZeroCopySend,
    /// `cpg_iteration_initialize`
    IterationInitialize,
    /// `cpg_iteration_next`
    IterationNext,
    /// `cpg_iteration_finalize`
    IterationFinalize,
    /// `poll(2)` on the handle's file descriptor (in [`Handle::dispatch_timeout`]).
    ///
    /// [`Handle::dispatch_timeout`]: crate::Handle::dispatch_timeout
    Poll,
    /// Registering the handle's descriptor with an async runtime's reactor
    /// (`epoll_ctl` under tokio's `AsyncFd`).
    Register,
    /// Waiting for the handle's descriptor to become readable in an async runtime
    /// (tokio's reactor, `epoll_wait`).
    Wait,
    /// Reading the daemon connection's peer credentials (`getsockopt(SO_PEERCRED)`).
    PeerCredentials,
    /// `cmap_initialize_map`: connecting to the cmap service.
    CmapInitialize,
    /// `cmap_finalize`
    CmapFinalize,
    /// `cmap_fd_get`
    CmapFdGet,
    /// `cmap_dispatch`
    CmapDispatch,
    /// `cmap_get`
    CmapGet,
    /// `cmap_set`
    CmapSet,
    /// `cmap_delete`
    CmapDelete,
    /// `cmap_inc`
    CmapInc,
    /// `cmap_dec`
    CmapDec,
    /// `cmap_iter_init`
    CmapIterInit,
    /// `cmap_iter_next`
    CmapIterNext,
    /// `cmap_iter_finalize`
    CmapIterFinalize,
    /// `cmap_track_add`
    CmapTrackAdd,
    /// `cmap_track_delete`
    CmapTrackDelete,
    /// `corosync_cfg_initialize`: connecting to the cfg service.
    CfgInitialize,
    /// `corosync_cfg_finalize`
    CfgFinalize,
    /// `corosync_cfg_fd_get`
    CfgFdGet,
    /// `corosync_cfg_dispatch`
    CfgDispatch,
    /// `corosync_cfg_local_get`
    CfgLocalNodeId,
    /// `corosync_cfg_node_status_get`
    CfgNodeStatus,
    /// `corosync_cfg_get_node_addrs`
    CfgNodeAddrs,
    /// `corosync_cfg_reload_config`
    CfgReloadConfig,
    /// `corosync_cfg_reopen_log_files`
    CfgReopenLogFiles,
    /// `corosync_cfg_trackstart`
    CfgTrackStart,
    /// `corosync_cfg_trackstop`
    CfgTrackStop,
    /// `corosync_cfg_try_shutdown`
    CfgTryShutdown,
    /// `corosync_cfg_replyto_shutdown`
    CfgReplyToShutdown,
    /// `corosync_cfg_kill_node`
    CfgKillNode,
    /// `quorum_model_initialize` (`quorum_initialize` where the headers lack the v1
    /// model): connecting to the quorum service.
    QuorumInitialize,
    /// `quorum_finalize`
    QuorumFinalize,
    /// `quorum_fd_get`
    QuorumFdGet,
    /// `quorum_dispatch`
    QuorumDispatch,
    /// `quorum_getquorate`
    QuorumGetQuorate,
    /// `quorum_trackstart`
    QuorumTrackStart,
    /// `quorum_trackstop`
    QuorumTrackStop,
    /// `votequorum_initialize`
    VoteQuorumInitialize,
    /// `votequorum_finalize`
    VoteQuorumFinalize,
    /// `votequorum_fd_get`
    VoteQuorumFdGet,
    /// `votequorum_dispatch`
    VoteQuorumDispatch,
    /// `votequorum_getinfo`
    VoteQuorumGetInfo,
    /// `votequorum_setexpected`
    VoteQuorumSetExpected,
    /// `votequorum_setvotes`
    VoteQuorumSetVotes,
    /// `votequorum_trackstart`
    VoteQuorumTrackStart,
    /// `votequorum_trackstop`
    VoteQuorumTrackStop,
    /// `votequorum_qdevice_register`
    VoteQuorumQdeviceRegister,
    /// `votequorum_qdevice_unregister`
    VoteQuorumQdeviceUnregister,
    /// `votequorum_qdevice_update`
    VoteQuorumQdeviceUpdate,
    /// `votequorum_qdevice_poll`
    VoteQuorumQdevicePoll,
    /// `votequorum_qdevice_master_wins`
    VoteQuorumQdeviceMasterWins,
}

impl Operation {
    /// The C function this operation calls.
    pub fn c_name(self) -> &'static str {
        match self {
            Operation::Initialize => "cpg_model_initialize",
            Operation::Finalize => "cpg_finalize",
            Operation::FdGet => "cpg_fd_get",
            Operation::Dispatch => "cpg_dispatch",
            Operation::Join => "cpg_join",
            Operation::Leave => "cpg_leave",
            Operation::Send => "cpg_mcast_joined",
            Operation::Membership => "cpg_membership_get",
            Operation::LocalNodeId => "cpg_local_get",
            Operation::MaxMessageSize => "cpg_max_atomic_msgsize_get",
            Operation::FlowControlState => "cpg_flow_control_state_get",
            Operation::ZeroCopyAlloc => "cpg_zcb_alloc",
            Operation::ZeroCopyFree => "cpg_zcb_free",
            Operation::ZeroCopySend => "cpg_zcb_mcast_joined",
            Operation::IterationInitialize => "cpg_iteration_initialize",
            Operation::IterationNext => "cpg_iteration_next",
            Operation::IterationFinalize => "cpg_iteration_finalize",
            Operation::Poll => "poll",
            Operation::Register => "epoll_ctl",
            Operation::Wait => "epoll_wait",
            Operation::PeerCredentials => "getsockopt(SO_PEERCRED)",
            Operation::CmapInitialize => "cmap_initialize_map",
            Operation::CmapFinalize => "cmap_finalize",
            Operation::CmapFdGet => "cmap_fd_get",
            Operation::CmapDispatch => "cmap_dispatch",
            Operation::CmapGet => "cmap_get",
            Operation::CmapSet => "cmap_set",
            Operation::CmapDelete => "cmap_delete",
            Operation::CmapInc => "cmap_inc",
            Operation::CmapDec => "cmap_dec",
            Operation::CmapIterInit => "cmap_iter_init",
            Operation::CmapIterNext => "cmap_iter_next",
            Operation::CmapIterFinalize => "cmap_iter_finalize",
            Operation::CmapTrackAdd => "cmap_track_add",
            Operation::CmapTrackDelete => "cmap_track_delete",
            Operation::CfgInitialize => "corosync_cfg_initialize",
            Operation::CfgFinalize => "corosync_cfg_finalize",
            Operation::CfgFdGet => "corosync_cfg_fd_get",
            Operation::CfgDispatch => "corosync_cfg_dispatch",
            Operation::CfgLocalNodeId => "corosync_cfg_local_get",
            Operation::CfgNodeStatus => "corosync_cfg_node_status_get",
            Operation::CfgNodeAddrs => "corosync_cfg_get_node_addrs",
            Operation::CfgReloadConfig => "corosync_cfg_reload_config",
            Operation::CfgReopenLogFiles => "corosync_cfg_reopen_log_files",
            Operation::CfgTrackStart => "corosync_cfg_trackstart",
            Operation::CfgTrackStop => "corosync_cfg_trackstop",
            Operation::CfgTryShutdown => "corosync_cfg_try_shutdown",
            Operation::CfgReplyToShutdown => "corosync_cfg_replyto_shutdown",
            Operation::CfgKillNode => "corosync_cfg_kill_node",
            #[cfg(corosync_has_quorum_model_v1)]
            Operation::QuorumInitialize => "quorum_model_initialize",
            #[cfg(not(corosync_has_quorum_model_v1))]
            Operation::QuorumInitialize => "quorum_initialize",
            Operation::QuorumFinalize => "quorum_finalize",
            Operation::QuorumFdGet => "quorum_fd_get",
            Operation::QuorumDispatch => "quorum_dispatch",
            Operation::QuorumGetQuorate => "quorum_getquorate",
            Operation::QuorumTrackStart => "quorum_trackstart",
            Operation::QuorumTrackStop => "quorum_trackstop",
            Operation::VoteQuorumInitialize => "votequorum_initialize",
            Operation::VoteQuorumFinalize => "votequorum_finalize",
            Operation::VoteQuorumFdGet => "votequorum_fd_get",
            Operation::VoteQuorumDispatch => "votequorum_dispatch",
            Operation::VoteQuorumGetInfo => "votequorum_getinfo",
            Operation::VoteQuorumSetExpected => "votequorum_setexpected",
            Operation::VoteQuorumSetVotes => "votequorum_setvotes",
            Operation::VoteQuorumTrackStart => "votequorum_trackstart",
            Operation::VoteQuorumTrackStop => "votequorum_trackstop",
            Operation::VoteQuorumQdeviceRegister => "votequorum_qdevice_register",
            Operation::VoteQuorumQdeviceUnregister => "votequorum_qdevice_unregister",
            Operation::VoteQuorumQdeviceUpdate => "votequorum_qdevice_update",
            Operation::VoteQuorumQdevicePoll => "votequorum_qdevice_poll",
            Operation::VoteQuorumQdeviceMasterWins => "votequorum_qdevice_master_wins",
        }
    }

    /// The service (client library) the operation belongs to. The Rust-side and
    /// system operations (`poll`, reactor registration, peer credentials) belong to
    /// [`Service::Cpg`] here; the other services' handles report their own.
    pub fn service(self) -> Service {
        match self {
            Operation::CmapInitialize
            | Operation::CmapFinalize
            | Operation::CmapFdGet
            | Operation::CmapDispatch
            | Operation::CmapGet
            | Operation::CmapSet
            | Operation::CmapDelete
            | Operation::CmapInc
            | Operation::CmapDec
            | Operation::CmapIterInit
            | Operation::CmapIterNext
            | Operation::CmapIterFinalize
            | Operation::CmapTrackAdd
            | Operation::CmapTrackDelete => Service::Cmap,
            Operation::CfgInitialize
            | Operation::CfgFinalize
            | Operation::CfgFdGet
            | Operation::CfgDispatch
            | Operation::CfgLocalNodeId
            | Operation::CfgNodeStatus
            | Operation::CfgNodeAddrs
            | Operation::CfgReloadConfig
            | Operation::CfgReopenLogFiles
            | Operation::CfgTrackStart
            | Operation::CfgTrackStop
            | Operation::CfgTryShutdown
            | Operation::CfgReplyToShutdown
            | Operation::CfgKillNode => Service::Cfg,
            Operation::QuorumInitialize
            | Operation::QuorumFinalize
            | Operation::QuorumFdGet
            | Operation::QuorumDispatch
            | Operation::QuorumGetQuorate
            | Operation::QuorumTrackStart
            | Operation::QuorumTrackStop => Service::Quorum,
            Operation::VoteQuorumInitialize
            | Operation::VoteQuorumFinalize
            | Operation::VoteQuorumFdGet
            | Operation::VoteQuorumDispatch
            | Operation::VoteQuorumGetInfo
            | Operation::VoteQuorumSetExpected
            | Operation::VoteQuorumSetVotes
            | Operation::VoteQuorumTrackStart
            | Operation::VoteQuorumTrackStop
            | Operation::VoteQuorumQdeviceRegister
            | Operation::VoteQuorumQdeviceUnregister
            | Operation::VoteQuorumQdeviceUpdate
            | Operation::VoteQuorumQdevicePoll
            | Operation::VoteQuorumQdeviceMasterWins => Service::VoteQuorum,
            _ => Service::Cpg,
        }
    }

    /// What `code` means when this operation returns it, where that differs from the
    /// code's general hint ([`CsError`]'s text).
    fn hint(self, code: CsError) -> Option<&'static str> {
        use Operation::{CmapDec, CmapDelete, CmapGet, CmapInc, CmapSet};
        Some(match (self, code) {
            (CmapGet | CmapDelete | CmapInc | CmapDec, CsError::NotExist) => "no such key",
            (CmapSet | CmapDelete | CmapInc | CmapDec, CsError::Access) => {
                "the key is read-only: corosync refuses changes to the keys it fixes at \
                 startup (totem.cluster_name, totem.crypto_*, ...), to nodelist.* \
                 (reload corosync.conf instead), to runtime.totem.*, runtime.config.*, \
                 runtime.services.*, runtime.connections.*, internal_configuration.* and \
                 uidgid.config.*, and to every key of the stats map"
            }
            (CmapInc | CmapDec, CsError::InvalidParam) => {
                "the key holds no integer (inc and dec change integer keys only)"
            }
            (Operation::CmapTrackDelete, CsError::NotExist) => {
                "this handle has no such track (deleted already?)"
            }
            (Operation::CfgTrackStart, CsError::Exist) => {
                "this handle tracks shutdown requests already; stop tracking first"
            }
            (Operation::CfgTrackStop, CsError::NotExist) => {
                "this handle does not track shutdown requests"
            }
            (Operation::CfgTryShutdown, CsError::Busy) => {
                "a tracking service answered no, or did not answer within \
                 cfg.shutdown_timeout (5000 ms by default): corosync keeps running"
            }
            (Operation::CfgTryShutdown, CsError::Exist) => "a shutdown request is in progress",
            (Operation::CfgReplyToShutdown, CsError::NotExist) => {
                "no shutdown request came to this handle since its last answer"
            }
            (Operation::CfgNodeStatus, CsError::FailedOperation) => {
                "knet knows no such node (node ids are those of the node list; 0 is not \
                 the local node here)"
            }
            (Operation::CfgNodeAddrs, CsError::NotExist) => "no such node in the node list",
            (Operation::QuorumTrackStart, CsError::Exist) => {
                "this handle tracks quorum changes already; stop tracking first"
            }
            (Operation::QuorumTrackStop, CsError::NotExist) => {
                "this handle does not track quorum changes"
            }
            (op, CsError::NotExist) if op.service() == Service::Quorum => {
                "the quorum service has nothing to answer with: is a quorum provider \
                 configured (corosync.conf `quorum { provider: corosync_votequorum }`)?"
            }
            // votequorum: what exec/votequorum.c answers each call with (corosync 3.1).
            (Operation::VoteQuorumTrackStart, CsError::Exist) => {
                "this handle tracks votequorum changes already; stop tracking first"
            }
            (Operation::VoteQuorumTrackStop, CsError::NotExist) => {
                "this handle does not track votequorum changes"
            }
            (Operation::VoteQuorumGetInfo, CsError::NotExist)
            | (Operation::VoteQuorumSetVotes, CsError::NameNotFound) => {
                "votequorum knows no node with this id (it knows the nodes that have been \
                 members since this daemon started)"
            }
            (Operation::VoteQuorumSetExpected, CsError::InvalidParam) => {
                "the quorum for these expected votes (expected / 2 + 1) would be more than \
                 the votes present: at most 2 x total votes - 1 is taken"
            }
            (Operation::VoteQuorumSetVotes, CsError::InvalidParam) => {
                "with these votes the quorum (highest expected votes / 2 + 1) would be more \
                 than the votes present; lower the expected votes first"
            }
            (Operation::VoteQuorumQdeviceRegister, CsError::Exist) => {
                "a quorum device of another name is registered on this node; unregister \
                 it first"
            }
            (Operation::VoteQuorumQdeviceRegister, CsError::TryAgain) => {
                "another registration of a quorum device is in progress; try again"
            }
            (
                Operation::VoteQuorumQdeviceRegister
                | Operation::VoteQuorumQdevicePoll
                | Operation::VoteQuorumQdeviceMasterWins,
                CsError::Access,
            ) => {
                "corosync disabled quorum devices: a configuration reload put the \
                 `quorum.device` beside two_node, last_man_standing, auto_tie_breaker or \
                 allow_downscale, or gave it votes that do not fit expected_votes (the \
                 daemon's log says which)"
            }
            (
                Operation::VoteQuorumQdeviceUnregister
                | Operation::VoteQuorumQdeviceUpdate
                | Operation::VoteQuorumQdevicePoll
                | Operation::VoteQuorumQdeviceMasterWins,
                CsError::NotExist,
            ) => "no quorum device is registered on this node (register it first)",
            (
                Operation::VoteQuorumQdeviceUnregister
                | Operation::VoteQuorumQdeviceUpdate
                | Operation::VoteQuorumQdevicePoll
                | Operation::VoteQuorumQdeviceMasterWins,
                CsError::InvalidParam,
            ) => "the quorum device registered on this node has another name",
            (Operation::VoteQuorumQdevicePoll, CsError::MessageError) => {
                "the ring id is not the current membership's: poll with the ring id of the \
                 latest node list notification"
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.c_name())
    }
}

macro_rules! cs_codes {
    ($( $(#[$doc:meta])* $variant:ident = $c:ident, )*) => {
        /// A `cs_error_t` other than `CS_OK`: every code corosync 2.4–3.1 defines, plus
        /// [`CsError::Unknown`] for codes a newer libcpg may add.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum CsError {
            $( $(#[$doc])* $variant, )*
            /// A code this crate does not know (the raw `cs_error_t` value).
            Unknown(u32),
        }

        impl CsError {
            /// Maps a raw `cs_error_t` (other than `CS_OK`) to its variant.
            pub fn from_raw(code: u32) -> CsError {
                match code {
                    $( sys::$c => CsError::$variant, )*
                    other => CsError::Unknown(other),
                }
            }

            /// The raw `cs_error_t` value.
            pub fn to_raw(self) -> u32 {
                match self {
                    $( CsError::$variant => sys::$c, )*
                    CsError::Unknown(code) => code,
                }
            }

            /// The C name of the code, such as `"CS_ERR_TRY_AGAIN"`; for a code this
            /// crate does not know, the C type's name, `"cs_error_t"` (the raw value is
            /// in [`CsError::Unknown`] and in the error's text).
            pub fn c_name(self) -> &'static str {
                match self {
                    $( CsError::$variant => stringify!($c), )*
                    CsError::Unknown(_) => "cs_error_t",
                }
            }
        }
    };
}

cs_codes! {
    /// `CS_ERR_LIBRARY`: the connection to the daemon is gone (or could not be made).
    Library = CS_ERR_LIBRARY,
    /// `CS_ERR_VERSION`
    Version = CS_ERR_VERSION,
    /// `CS_ERR_INIT`
    Init = CS_ERR_INIT,
    /// `CS_ERR_TIMEOUT`
    Timeout = CS_ERR_TIMEOUT,
    /// `CS_ERR_TRY_AGAIN`: back-pressure, or nothing pending for a non-blocking dispatch.
    TryAgain = CS_ERR_TRY_AGAIN,
    /// `CS_ERR_INVALID_PARAM`
    InvalidParam = CS_ERR_INVALID_PARAM,
    /// `CS_ERR_NO_MEMORY`
    NoMemory = CS_ERR_NO_MEMORY,
    /// `CS_ERR_BAD_HANDLE`
    BadHandle = CS_ERR_BAD_HANDLE,
    /// `CS_ERR_BUSY`
    Busy = CS_ERR_BUSY,
    /// `CS_ERR_ACCESS`: the daemon refused this user (see corosync's `uidgid` config).
    Access = CS_ERR_ACCESS,
    /// `CS_ERR_NOT_EXIST`: for example leaving a group that was not joined.
    NotExist = CS_ERR_NOT_EXIST,
    /// `CS_ERR_NAME_TOO_LONG`
    NameTooLong = CS_ERR_NAME_TOO_LONG,
    /// `CS_ERR_EXIST`: for example joining a group twice.
    Exist = CS_ERR_EXIST,
    /// `CS_ERR_NO_SPACE`
    NoSpace = CS_ERR_NO_SPACE,
    /// `CS_ERR_INTERRUPT`: a fragmented send was cut by a membership change; resend it.
    Interrupt = CS_ERR_INTERRUPT,
    /// `CS_ERR_NAME_NOT_FOUND`
    NameNotFound = CS_ERR_NAME_NOT_FOUND,
    /// `CS_ERR_NO_RESOURCES`
    NoResources = CS_ERR_NO_RESOURCES,
    /// `CS_ERR_NOT_SUPPORTED`
    NotSupported = CS_ERR_NOT_SUPPORTED,
    /// `CS_ERR_BAD_OPERATION`
    BadOperation = CS_ERR_BAD_OPERATION,
    /// `CS_ERR_FAILED_OPERATION`
    FailedOperation = CS_ERR_FAILED_OPERATION,
    /// `CS_ERR_MESSAGE_ERROR`
    MessageError = CS_ERR_MESSAGE_ERROR,
    /// `CS_ERR_QUEUE_FULL`: back-pressure.
    QueueFull = CS_ERR_QUEUE_FULL,
    /// `CS_ERR_QUEUE_NOT_AVAILABLE`
    QueueNotAvailable = CS_ERR_QUEUE_NOT_AVAILABLE,
    /// `CS_ERR_BAD_FLAGS`
    BadFlags = CS_ERR_BAD_FLAGS,
    /// `CS_ERR_TOO_BIG`: for example a zero-copy send above the atomic message size.
    TooBig = CS_ERR_TOO_BIG,
    /// `CS_ERR_NO_SECTIONS`
    NoSections = CS_ERR_NO_SECTIONS,
    /// `CS_ERR_CONTEXT_NOT_FOUND`
    ContextNotFound = CS_ERR_CONTEXT_NOT_FOUND,
    /// `CS_ERR_TOO_MANY_GROUPS`
    TooManyGroups = CS_ERR_TOO_MANY_GROUPS,
    /// `CS_ERR_SECURITY`
    Security = CS_ERR_SECURITY,
}

impl CsError {
    /// The library's own description of the code (`cs_strerror`).
    pub fn description(self) -> &'static str {
        // SAFETY: cs_strerror accepts any value and returns a pointer to a static,
        // NUL-terminated string (a fixed table; unknown codes get a generic text).
        let text = unsafe { sys::cs_strerror(self.to_raw()) };
        if text.is_null() {
            return "unknown error";
        }
        // SAFETY: non-null, NUL-terminated, and static for the life of the process.
        unsafe { CStr::from_ptr(text) }
            .to_str()
            .unwrap_or("unknown error")
    }
}

impl CsError {
    /// What the code usually means for a CPG client, where that is not obvious from
    /// the code's name.
    fn hint(self) -> Option<&'static str> {
        Some(match self {
            CsError::Library => "no connection to the corosync daemon (not running, or lost)",
            CsError::TryAgain => "back-pressure or nothing pending; try again later",
            CsError::QueueFull => "back-pressure; try again later",
            CsError::Exist => "already exists (already joined?)",
            CsError::NotExist => "does not exist (not joined?)",
            CsError::Interrupt => "interrupted by a membership change; send again",
            CsError::TooBig => "message too big",
            CsError::BadHandle => "invalid or finalized handle",
            _ => return None,
        })
    }
}

impl CsError {
    /// Writes the library's text, the code's name where the text is not already that
    /// name, and a hint: `op`'s own for this code if it has one, else the code's.
    fn write(&self, f: &mut fmt::Formatter<'_>, op: Option<Operation>) -> fmt::Result {
        let text = self.description();
        f.write_str(text)?;
        if let CsError::Unknown(code) = self {
            write!(f, " (cs_error_t {code}, not known to this crate)")?;
        } else if text != self.c_name() {
            write!(f, " ({})", self.c_name())?;
        }
        let op_hint = op.and_then(|op| op.hint(*self));
        if *self == CsError::Access && op_hint.is_none() {
            // SAFETY: geteuid cannot fail and has no preconditions.
            let uid = unsafe { libc::geteuid() };
            return write!(
                f,
                ": the daemon refused this user (uid {uid}); allow it in corosync.conf \
                 with `uidgid {{ uid: {uid} }}` (or a gid), or run as root"
            );
        }
        if let Some(hint) = op_hint.or_else(|| self.hint()) {
            write!(f, ": {hint}")?;
        }
        Ok(())
    }
}

/// The library's text (`cs_strerror`), then the code's name where the text is not
/// already that name, then a hint: `CS_ERR_LIBRARY: no connection to the corosync
/// daemon (not running, or lost)`. Inside an [`Error::Cs`] the hint is the operation's
/// where the code means something particular there.
impl fmt::Display for CsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None)
    }
}

/// A code as the failed operation explains it (the text of [`Error::Cs`]).
struct Explained {
    code: CsError,
    op: Operation,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.code.write(f, Some(self.op))
    }
}

/// Everything that can go wrong.
///
/// Errors returned by libcpg (or another corosync library, such as libquorum) are
/// [`Error::Cs`], with the operation and the [`CsError`] code; its text explains the
/// code as that operation means it. Mistakes found on the Rust side, before C is
/// called, have their own variants. Helpers answer the questions a caller usually has:
/// [`is_retryable`](Error::is_retryable) and [`is_daemon_lost`](Error::is_daemon_lost).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A corosync library returned an error code.
    #[error("{op} failed: {}", Explained { code: *.code, op: *.op })]
    Cs {
        /// The operation that failed.
        op: Operation,
        /// The code the library returned.
        code: CsError,
    },
    /// A group name longer than [`GroupName::MAX_LEN`](crate::GroupName::MAX_LEN) bytes.
    #[error("group name is {len} bytes long; the limit is {max}")]
    NameTooLong {
        /// Length of the rejected name, in bytes.
        len: usize,
        /// The limit (128).
        max: usize,
    },
    /// A vectored send with more buffers than libcpg can take.
    #[error("{count} buffers in one send; libcpg takes at most {max}")]
    TooManyBuffers {
        /// Number of buffers passed.
        count: usize,
        /// The limit ([`MAX_SEND_BUFFERS`](crate::MAX_SEND_BUFFERS), 63).
        max: usize,
    },
    /// A message larger than the path it was sent on allows.
    #[error("message of {len} bytes is larger than the {max} bytes allowed here")]
    MessageTooBig {
        /// Length of the message, in bytes.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// `dispatch` was called from inside one of the same handle's callbacks.
    #[error("dispatch called from inside a callback of the same handle")]
    ReentrantDispatch,
    /// `join` on a handle that has left a group. Corosync never answers it (the call
    /// would block forever), so it is refused; make a new handle to join again.
    #[error("this handle has left its group and cannot join again; make a new handle")]
    JoinAfterLeave,
    /// An empty group name. corosync (3.1.7) never removes a member of the empty-named
    /// group when its connection closes, so it would stay listed for good.
    #[error("group names must not be empty")]
    EmptyName,
    /// A send or leave on a handle that has not joined a group, or has left it.
    /// corosync answers such a send with success and drops the message.
    #[error("this handle is not in a group (it has not joined, or has left)")]
    NotJoined,
    /// A leave that names another group than the one this handle joined. corosync
    /// (3.1.7) would answer it with success and keep this process in the joined group
    /// for good.
    #[error("this handle is in group {joined}, not in the group it was asked to leave")]
    NotJoinedTo {
        /// The group the handle is in.
        joined: Box<GroupName>,
    },
    /// The current thread has too little stack left for the call: libcpg's frames
    /// (1 MiB for `cpg_dispatch`) have no stack probes and would write past the guard
    /// page into other memory. See [`DISPATCH_STACK`](crate::DISPATCH_STACK).
    /// `available` is 0 when the caller runs on a stack segment that is not the
    /// thread's own (made by a crate such as `stacker`): its room cannot be known.
    #[error(
        "{op} needs {needed} bytes of stack but this thread has {available} left; \
         run it on a thread with a larger stack (std::thread::Builder::stack_size)"
    )]
    StackTooSmall {
        /// The call that was refused.
        op: Operation,
        /// The stack it needs left, in bytes.
        needed: usize,
        /// The stack the thread had left, in bytes.
        available: usize,
    },
    /// [`MAX_HANDLES`](crate::MAX_HANDLES) handles are open in this process; close one
    /// first.
    #[error(
        "{max} handles are open in this process, the most allowed (libqb's handle table \
         must not move while other threads use it); close one first"
    )]
    TooManyHandles {
        /// The limit.
        max: usize,
    },
    /// [`MAX_HANDLES`](crate::MAX_HANDLES) handles of another corosync library (such
    /// as libquorum) are open in this process; close one first. Each library has a
    /// handle table, and a cap, of its own.
    #[error(
        "{max} handles of {service} are open in this process, the most allowed \
         (libqb's handle table must not move while other threads use it); close one first"
    )]
    TooManyServiceHandles {
        /// The library whose handles are all in use.
        service: Service,
        /// The limit.
        max: usize,
    },
    /// [`MAX_LIVE_BUFFERS`](crate::MAX_LIVE_BUFFERS) zero-copy buffers are alive in this
    /// process; drop one first.
    #[error(
        "{max} zero-copy buffers are alive in this process, the most allowed \
         (each is a mapping in the daemon too); drop one first"
    )]
    TooManyLiveBuffers {
        /// The limit.
        max: usize,
    },
    /// The handle was made before this process forked: it shares the parent's
    /// connection and must not be used (or finalized) in the child. Make a new handle
    /// in the child.
    #[error("this handle belongs to the parent process (it was made before fork); make a new one")]
    Forked,
    /// The process at the other end of the daemon connection does not run as the
    /// expected user, so it may not be corosync (any local process can bind corosync's
    /// socket name before corosync starts). See [`Options::daemon_uid`](crate::Options::daemon_uid).
    #[error(
        "the daemon connection's peer (pid {pid}) runs as uid {uid}, not the expected \
         uid {expected}: it may not be corosync"
    )]
    UntrustedDaemon {
        /// The peer's process id (`SO_PEERCRED`).
        pid: u32,
        /// The peer's user id.
        uid: u32,
        /// The user id the options expected.
        expected: u32,
    },
    /// The handle was closed or dropped: a [`Sender`](crate::Sender) (or other
    /// shared user of the connection) can no longer send through it.
    #[error("the handle was closed")]
    Closed,
    /// An argument that cannot be served, such as `dispatch_at_most(0)`.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The daemon runs no quorum provider, so votequorum is not loaded and
    /// `votequorum_initialize` could not connect (corosync 3.1.7 answers it with
    /// `CS_ERR_LIBRARY`, as for a missing daemon; the quorum service, asked next, said
    /// no provider is configured).
    #[error(
        "no quorum provider configured: add `quorum {{ provider: corosync_votequorum }}` \
         to corosync.conf (votequorum runs only as the quorum provider)"
    )]
    NoQuorumProvider,
    /// A quorum device name that libvotequorum refuses: empty, longer than
    /// `QdeviceName::MAX_LEN` (254) bytes, or with a NUL byte.
    #[error(
        "invalid quorum device name ({len} bytes{}): it takes 1 to {max} bytes, none of them NUL",
        if *.nul { ", with a NUL byte" } else { "" }
    )]
    InvalidQdeviceName {
        /// Length of the rejected name, in bytes.
        len: usize,
        /// The longest name (254 bytes).
        max: usize,
        /// Whether the name has a NUL byte.
        nul: bool,
    },
    /// A callback panicked earlier; the handle stopped delivering and may have
    /// discarded events, so it must be replaced by a new one.
    #[error("a callback of this handle panicked; create a new handle")]
    Poisoned,
    /// A system call failed (for example `poll(2)` in
    /// [`Handle::dispatch_timeout`](crate::Handle::dispatch_timeout)).
    #[error("{op} failed: {source}")]
    Os {
        /// The operation that failed.
        op: Operation,
        /// The `errno` value.
        #[source]
        source: OsError,
    },
    /// The async runtime could not watch the handle's descriptor, for a reason that is
    /// not an `errno` value (for example, the runtime is shutting down).
    #[error("{op} failed: {message}")]
    Runtime {
        /// The operation that failed.
        op: Operation,
        /// What the runtime said.
        message: String,
    },
    /// A cmap key, value or track that cannot be used as asked, found before or after
    /// the C call: a type mismatch, an invalid key name, a value too long, too many
    /// tracks (feature `cmap`).
    #[cfg(feature = "cmap")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cmap")))]
    #[error(transparent)]
    Cmap(#[from] crate::cmap::CmapError),
}

/// An `errno` value, comparable (unlike `std::io::Error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", std::io::Error::from_raw_os_error(*.0))]
pub struct OsError(pub i32);

impl Error {
    /// Converts a `cs_error_t` into `Ok(())` or the error of `op`.
    ///
    /// Inlined (it runs after every send and dispatch); the error path is kept out of
    /// line.
    #[inline]
    pub(crate) fn check(op: Operation, code: sys::cs_error_t) -> Result<()> {
        if code == sys::CS_OK {
            Ok(())
        } else {
            Err(Error::from_code(op, code))
        }
    }

    #[cold]
    #[inline(never)]
    fn from_code(op: Operation, code: sys::cs_error_t) -> Error {
        Error::Cs {
            op,
            code: CsError::from_raw(code),
        }
    }

    /// The libcpg code, when the error came from libcpg.
    pub fn code(&self) -> Option<CsError> {
        match self {
            Error::Cs { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The operation that failed, when the error came from a C call.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Error::Cs { op, .. } | Error::Os { op, .. } | Error::Runtime { op, .. } => Some(*op),
            _ => None,
        }
    }

    /// Whether the same call may succeed later: back-pressure (`CS_ERR_TRY_AGAIN`,
    /// `CS_ERR_QUEUE_FULL`) or a fragmented send interrupted by a membership change
    /// (`CS_ERR_INTERRUPT`, which must be sent again whole).
    ///
    /// [`retry`](crate::retry::retry) retries exactly these.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(CsError::TryAgain | CsError::QueueFull | CsError::Interrupt)
        )
    }

    /// Whether there is no connection to the corosync daemon (`CS_ERR_LIBRARY`): either
    /// it was lost, or it was never made.
    ///
    /// - **Never connected**: [`Handle::new`](crate::Handle::new) (and every other
    ///   constructor) fails this way when no daemon runs on the node, or its socket is
    ///   not reachable from this network namespace. Such an error has
    ///   [`operation`](Self::operation) `Some(Operation::Initialize)`.
    /// - **Lost**: any later call or dispatch of a live handle; the handle is dead, and
    ///   every later call on it fails the same way without reaching C.
    ///
    /// Either way, drop the handle and make a new one once the daemon is back. Nothing
    /// signals that: the way to tell is to try. Until the daemon is back, a new handle
    /// fails fast (about 50 µs with corosync 3.1.7: the socket connect is refused), so
    /// polling `Handle::new` on a back-off (for example [`Backoff`](crate::retry::Backoff)
    /// delays of 100 ms to a few seconds) costs nothing; the `reconnect` example and
    /// [`group`](crate::group) do that.
    pub fn is_daemon_lost(&self) -> bool {
        self.code() == Some(CsError::Library)
    }

    /// Whether the thing asked for does not exist (`CS_ERR_NOT_EXIST`): for example a
    /// cmap key that is not set, or a node the daemon does not know.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(CsError::NotExist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed_and_answer_retryable_and_daemon_lost() {
        let e = Error::Cs {
            op: Operation::Send,
            code: CsError::TryAgain,
        };
        assert!(e.is_retryable());
        assert_eq!(e.operation(), Some(Operation::Send));
        let text = e.to_string();
        assert!(text.starts_with("cpg_mcast_joined failed: "), "{text}");
        assert!(text.contains(CsError::TryAgain.description()), "{text}");
        assert!(!CsError::TryAgain.description().is_empty());
        assert!(Error::Cs {
            op: Operation::Join,
            code: CsError::QueueFull
        }
        .is_retryable());
        assert!(Error::Cs {
            op: Operation::Send,
            code: CsError::Interrupt
        }
        .is_retryable());
        assert!(Error::Cs {
            op: Operation::Dispatch,
            code: CsError::Library
        }
        .is_daemon_lost());
        assert!(!Error::NameTooLong { len: 200, max: 128 }.is_retryable());
        assert_eq!(Operation::Dispatch.to_string(), "cpg_dispatch");
    }

    #[test]
    fn codes_map_both_ways_and_unknown_ones_keep_their_value() {
        for raw in [2u32, 6, 23, 26, 30, 100] {
            assert_eq!(CsError::from_raw(raw).to_raw(), raw);
            assert_ne!(CsError::from_raw(raw), CsError::Unknown(raw));
        }
        assert_eq!(CsError::from_raw(4242), CsError::Unknown(4242));
        assert_eq!(CsError::Unknown(4242).to_raw(), 4242);
    }

    #[test]
    fn an_unknown_code_prints_its_value_and_no_invented_constant() {
        let text = CsError::Unknown(4242).to_string();
        assert!(text.contains("4242"), "{text}");
        assert!(!text.contains("CS_ERR_"), "no such constant exists: {text}");
        assert_eq!(CsError::Unknown(4242).c_name(), "cs_error_t");
    }

    #[test]
    fn errors_print_the_c_names_and_a_hint() {
        assert_eq!(Operation::ZeroCopySend.c_name(), "cpg_zcb_mcast_joined");
        assert_eq!(CsError::Library.c_name(), "CS_ERR_LIBRARY");
        let lost = Error::Cs {
            op: Operation::Dispatch,
            code: CsError::Library,
        };
        assert!(
            lost.to_string()
                .contains("no connection to the corosync daemon"),
            "{lost}"
        );
        assert_eq!(
            Error::TooManyBuffers { count: 64, max: 63 }.to_string(),
            "64 buffers in one send; libcpg takes at most 63"
        );
    }

    #[test]
    fn hints_follow_the_operation_where_a_code_means_something_particular() {
        let text = |op, code| Error::Cs { op, code }.to_string();
        // NOT_EXIST: a CPG leave of a group not joined, a quorum call with no
        // provider, a quorum track_stop without tracking.
        let cpg = text(Operation::Leave, CsError::NotExist);
        assert!(cpg.contains("not joined?"), "{cpg}");
        let quorum = text(Operation::QuorumGetQuorate, CsError::NotExist);
        assert!(quorum.starts_with("quorum_getquorate failed: "), "{quorum}");
        assert!(quorum.contains("quorum provider"), "{quorum}");
        assert!(!quorum.contains("joined"), "{quorum}");
        let stop = text(Operation::QuorumTrackStop, CsError::NotExist);
        assert!(stop.contains("does not track"), "{stop}");
        let start = text(Operation::QuorumTrackStart, CsError::Exist);
        assert!(start.contains("tracks quorum changes already"), "{start}");
        assert!(!start.contains("joined"), "{start}");
        // Codes without an operation's hint keep the general one.
        let lost = text(Operation::QuorumDispatch, CsError::Library);
        assert!(
            lost.contains("no connection to the corosync daemon"),
            "{lost}"
        );
        // CS_ERR_ACCESS keeps its uidgid hint on every service.
        for op in [Operation::Initialize, Operation::QuorumInitialize] {
            let access = text(op, CsError::Access);
            assert!(access.contains("uidgid { uid: "), "{access}");
        }
        // The code alone (outside an Error::Cs) has the general hint.
        assert!(CsError::NotExist.to_string().contains("not joined?"));
    }

    #[test]
    fn votequorum_codes_are_explained_as_each_call_means_them() {
        let text = |op, code| Error::Cs { op, code }.to_string();
        // CS_ERR_ACCESS: refused user at connect; a disabled device on the device calls.
        let connect = text(Operation::VoteQuorumInitialize, CsError::Access);
        assert!(connect.contains("uidgid { uid: "), "{connect}");
        for op in [
            Operation::VoteQuorumQdeviceRegister,
            Operation::VoteQuorumQdevicePoll,
            Operation::VoteQuorumQdeviceMasterWins,
        ] {
            let device = text(op, CsError::Access);
            assert!(
                device.contains("corosync disabled quorum devices"),
                "{device}"
            );
            assert!(!device.contains("uidgid"), "{device}");
        }
        // CS_ERR_NOT_EXIST: an unknown node, no device, not tracking; never "not joined".
        let cases = [
            (
                Operation::VoteQuorumGetInfo,
                CsError::NotExist,
                "knows no node",
            ),
            (
                Operation::VoteQuorumSetVotes,
                CsError::NameNotFound,
                "knows no node",
            ),
            (
                Operation::VoteQuorumQdevicePoll,
                CsError::NotExist,
                "no quorum device is registered",
            ),
            (
                Operation::VoteQuorumQdeviceUpdate,
                CsError::NotExist,
                "no quorum device is registered",
            ),
            (
                Operation::VoteQuorumTrackStop,
                CsError::NotExist,
                "does not track votequorum",
            ),
            (
                Operation::VoteQuorumTrackStart,
                CsError::Exist,
                "tracks votequorum changes already",
            ),
            (
                Operation::VoteQuorumQdeviceRegister,
                CsError::Exist,
                "another name is registered",
            ),
            (
                Operation::VoteQuorumQdeviceUnregister,
                CsError::InvalidParam,
                "has another name",
            ),
            (
                Operation::VoteQuorumQdevicePoll,
                CsError::MessageError,
                "latest node list",
            ),
            (
                Operation::VoteQuorumSetExpected,
                CsError::InvalidParam,
                "2 x total votes - 1",
            ),
            (
                Operation::VoteQuorumSetVotes,
                CsError::InvalidParam,
                "lower the expected votes",
            ),
        ];
        for (op, code, hint) in cases {
            let t = text(op, code);
            assert!(t.starts_with(&format!("{} failed: ", op.c_name())), "{t}");
            assert!(t.contains(hint), "{op:?} {code:?}: {t}");
            assert!(!t.contains("joined"), "{t}");
        }
        // The no-provider error says what to add; it is not a lost daemon.
        let none = Error::NoQuorumProvider;
        assert!(!none.is_daemon_lost() && none.code().is_none());
        assert!(
            none.to_string()
                .contains("add `quorum { provider: corosync_votequorum }` to corosync.conf"),
            "{none}"
        );
    }

    #[test]
    fn operations_name_their_service_and_c_function() {
        assert_eq!(Operation::Dispatch.service(), Service::Cpg);
        assert_eq!(Operation::Poll.service(), Service::Cpg);
        for op in [
            Operation::QuorumInitialize,
            Operation::QuorumFinalize,
            Operation::QuorumFdGet,
            Operation::QuorumDispatch,
            Operation::QuorumGetQuorate,
            Operation::QuorumTrackStart,
            Operation::QuorumTrackStop,
        ] {
            assert_eq!(op.service(), Service::Quorum, "{op:?}");
            assert!(op.c_name().starts_with("quorum_"), "{op:?}");
        }
        assert_eq!(Operation::QuorumTrackStop.c_name(), "quorum_trackstop");
        for op in [
            Operation::VoteQuorumInitialize,
            Operation::VoteQuorumFinalize,
            Operation::VoteQuorumFdGet,
            Operation::VoteQuorumDispatch,
            Operation::VoteQuorumGetInfo,
            Operation::VoteQuorumSetExpected,
            Operation::VoteQuorumSetVotes,
            Operation::VoteQuorumTrackStart,
            Operation::VoteQuorumTrackStop,
            Operation::VoteQuorumQdeviceRegister,
            Operation::VoteQuorumQdeviceUnregister,
            Operation::VoteQuorumQdeviceUpdate,
            Operation::VoteQuorumQdevicePoll,
            Operation::VoteQuorumQdeviceMasterWins,
        ] {
            assert_eq!(op.service(), Service::VoteQuorum, "{op:?}");
            assert!(op.c_name().starts_with("votequorum_"), "{op:?}");
        }
        assert_eq!(Service::VoteQuorum.to_string(), "libvotequorum");
        assert_eq!(Service::Quorum.to_string(), "libquorum");
        let cap = Error::TooManyServiceHandles {
            service: Service::Quorum,
            max: 32,
        }
        .to_string();
        assert!(cap.starts_with("32 handles of libquorum are open"), "{cap}");
    }
}
