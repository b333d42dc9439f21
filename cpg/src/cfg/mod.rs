//! corosync's administration service, cfg (feature **`cfg`**): the local node id, the
//! state of each node's links, config reload, and shutdown requests a service can
//! answer (`corosync-cfgtool`).
//!
//! - [`Cfg`] owns a connection to the cfg service and finalizes it on drop:
//!   [`local_node_id`](Cfg::local_node_id), [`node_status`](Cfg::node_status) (links,
//!   as `corosync-cfgtool -s` and `-n` show them), [`node_addrs`](Cfg::node_addrs)
//!   (`-a`), [`reload_config`](Cfg::reload_config) (`-R`),
//!   [`reopen_log_files`](Cfg::reopen_log_files) (`-L`),
//!   [`try_shutdown`](Cfg::try_shutdown) (`-H`), [`kill_node`](Cfg::kill_node) (`-k`),
//!   and shutdown tracking.
//! - `AsyncCfg` (feature `tokio` too): shutdown requests as a stream.
//!
//! # Shutdown tracking: leave cleanly before corosync stops
//!
//! A service that must finish something before corosync goes away (leave its CPG
//! groups so that the others see a clean leave, flush state, stop its own clients)
//! registers as a tracker ([`Cfg::track_start`]). When someone asks corosync to shut
//! down (`corosync-cfgtool -H`, [`Cfg::try_shutdown`]; systemd's `corosync.service`
//! stops it with `corosync-cfgtool -H --force`), corosync asks every tracker of that
//! node: the request is delivered by [`dispatch`](Cfg::dispatch) to the callback
//! ([`CfgCallbacks::shutdown_requested`], with the [`ShutdownMode`]). The service does
//! its clean-up, then answers with [`Cfg::reply_to_shutdown`]:
//!
//! - [`ShutdownReply::Yes`] from every tracker: corosync stops at once (measured on
//!   3.1.7: the daemon exited within a second of the last yes); every connection then
//!   fails with `CS_ERR_LIBRARY`.
//! - [`ShutdownReply::No`] from one tracker, to a [`ShutdownMode::Request`]: corosync
//!   keeps running and the requester gets `CS_ERR_BUSY` (`corosync-cfgtool -H` prints
//!   "Could not shutdown (error = 10)"), as soon as that answer comes.
//! - No answer: corosync waits `cfg.shutdown_timeout` milliseconds (a cmap key; 5000
//!   when not set: measured 5.0 s), then counts every missing answer as no. The
//!   tracker is not told: its request simply lapses.
//! - [`ShutdownMode::Regardless`] (`-H --force`): trackers are asked all the same and
//!   corosync waits for their answers (or the timeout), then stops whatever they said.
//!   [`ShutdownMode::Immediate`]: trackers are not asked.
//! - A tracker whose connection closes (its process exits, or it drops its [`Cfg`])
//!   counts as yes.
//!
//! corosync counts answers, not trackers: on 3.1.7 one tracker that answered yes twice
//! let the shutdown through without another tracker's answer. So this crate lets a
//! handle answer once per request it received (see [`Cfg::reply_to_shutdown`]).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use cpg::cfg::{Cfg, ShutdownReply};
//! use cpg::DispatchMode;
//!
//! let asked = Arc::new(AtomicBool::new(false));
//! let flag = Arc::clone(&asked);
//! let cfg = Cfg::builder()
//!     .on_shutdown(move |request| {
//!         println!("corosync wants to stop ({})", request.mode);
//!         flag.store(true, Ordering::SeqCst);
//!     })
//!     .build()?;
//! println!("this is node {}", cfg.local_node_id()?);
//! cfg.track_start()?;
//! loop {
//!     cfg.dispatch(DispatchMode::One)?;
//!     if asked.swap(false, Ordering::SeqCst) {
//!         // ... leave the CPG groups, flush, stop ...
//!         cfg.reply_to_shutdown(ShutdownReply::Yes)?;
//!     }
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # Threads, stacks, processes
//!
//! As for [`Handle`](crate::Handle): a [`Cfg`] is `Send`, not `Sync`; dispatching and
//! [`node_addrs`](Cfg::node_addrs) need [`DISPATCH_STACK`] of
//! stack left (`corosync_cfg_dispatch` and `corosync_cfg_get_node_addrs` keep a 1 MiB
//! buffer on their stacks: frames of 1,048,608 and 1,048,808 bytes in 3.1.7, without
//! stack probes), [`node_status`](Cfg::node_status) 64 KiB (a 4,272-byte frame); a
//! smaller stack gets [`Error::StackTooSmall`]. A callback that panics poisons the
//! handle; a handle inherited through `fork` refuses every call. At most
//! [`MAX_HANDLES`](crate::MAX_HANDLES) cfg handles are open at once in a process.

mod status;

#[cfg(feature = "tokio")]
mod async_cfg;

use std::cell::Cell;
use std::ffi::{c_int, CString};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corosync_sys as sys;

use crate::callbacks::Unset;
use crate::error::{CsError, Error, Operation, Result, Service};
use crate::process::HandleSlots;
use crate::service::dispatch::deliver;
use crate::service::{Library, ServiceHandle};
use crate::stack::DISPATCH_STACK;
use crate::types::{DispatchMode, Dispatched};

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_cfg::AsyncCfg;
pub use status::{LinkStatus, NodeStatus};

/// How a shutdown was asked for (`corosync_cfg_shutdown_flags_t`): what
/// [`Cfg::try_shutdown`] takes and what a tracker is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownMode {
    /// Ask the trackers; any no (or missing answer) keeps corosync running
    /// (`COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST`, `corosync-cfgtool -H`).
    Request,
    /// Ask the trackers, wait for their answers, then stop whatever they said
    /// (`COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS`, `corosync-cfgtool -H --force`).
    Regardless,
    /// Stop without asking (`COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE`).
    Immediate,
    /// A value this crate does not know.
    Unknown(u32),
}

impl ShutdownMode {
    /// Maps the raw flags.
    pub fn from_raw(raw: u32) -> ShutdownMode {
        match raw {
            sys::COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST => ShutdownMode::Request,
            sys::COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS => ShutdownMode::Regardless,
            sys::COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE => ShutdownMode::Immediate,
            other => ShutdownMode::Unknown(other),
        }
    }

    /// The raw flags.
    pub fn to_raw(self) -> u32 {
        match self {
            ShutdownMode::Request => sys::COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST,
            ShutdownMode::Regardless => sys::COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
            ShutdownMode::Immediate => sys::COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE,
            ShutdownMode::Unknown(raw) => raw,
        }
    }

    /// Whether a tracker's answer can stop the shutdown ([`ShutdownMode::Request`]).
    pub fn can_refuse(self) -> bool {
        self == ShutdownMode::Request
    }
}

impl fmt::Display for ShutdownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownMode::Request => f.write_str("request"),
            ShutdownMode::Regardless => f.write_str("regardless"),
            ShutdownMode::Immediate => f.write_str("immediate"),
            ShutdownMode::Unknown(raw) => write!(f, "shutdown flags {raw}"),
        }
    }
}

/// A tracker's answer to a shutdown request
/// (`corosync_cfg_shutdown_reply_flags_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownReply {
    /// Go ahead (`COROSYNC_CFG_SHUTDOWN_FLAG_YES`).
    Yes,
    /// Keep running (`COROSYNC_CFG_SHUTDOWN_FLAG_NO`); only a
    /// [`ShutdownMode::Request`] is stopped by it.
    No,
}

impl ShutdownReply {
    fn to_raw(self) -> sys::corosync_cfg_shutdown_reply_flags_t {
        match self {
            ShutdownReply::Yes => sys::COROSYNC_CFG_SHUTDOWN_FLAG_YES,
            ShutdownReply::No => sys::COROSYNC_CFG_SHUTDOWN_FLAG_NO,
        }
    }
}

/// A shutdown request, as a tracker receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShutdownRequest {
    /// How it was asked for: whether an answer of no can stop it.
    pub mode: ShutdownMode,
}

/// What a [`Cfg`] handle does with shutdown requests (they come only while tracking:
/// [`Cfg::track_start`]). The method has an empty default.
///
/// It runs on the thread that calls [`Cfg::dispatch`]. A panic is caught before it
/// reaches C, poisons the handle, and resumes in `dispatch`. Callbacks are
/// `Send + 'static` and a [`Cfg`] is not `Sync`, so a callback cannot reach its own
/// handle: it notes the request, and the code that dispatches answers once it has
/// cleaned up.
pub trait CfgCallbacks: Send + 'static {
    /// corosync is about to shut down and asks this tracker: answer with
    /// [`Cfg::reply_to_shutdown`] (within `cfg.shutdown_timeout`, 5 s by default).
    fn shutdown_requested(&mut self, request: ShutdownRequest) {
        let _ = request;
    }
}

impl CfgCallbacks for Unset {}

/// A shutdown callback of a [`CfgBuilder`]: a closure, or [`Unset`].
pub trait OnShutdown: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, request: ShutdownRequest);
}

impl OnShutdown for Unset {
    fn call(&mut self, _: ShutdownRequest) {}
}

impl<F: FnMut(ShutdownRequest) + Send + 'static> OnShutdown for F {
    fn call(&mut self, request: ShutdownRequest) {
        self(request)
    }
}

/// The closure of a [`CfgBuilder`], as [`CfgCallbacks`].
#[derive(Debug, Default)]
pub struct CfgClosures<S> {
    shutdown: S,
}

impl<S: OnShutdown> CfgCallbacks for CfgClosures<S> {
    fn shutdown_requested(&mut self, request: ShutdownRequest) {
        self.shutdown.call(request)
    }
}

/// Builds a [`Cfg`] handle from a closure; made by [`Cfg::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct CfgBuilder<S> {
    callbacks: CfgClosures<S>,
    daemon_uid: Option<u32>,
}

impl<S: OnShutdown> CfgBuilder<S> {
    /// Called with every shutdown request (while tracking).
    pub fn on_shutdown<F>(self, f: F) -> CfgBuilder<F>
    where
        F: FnMut(ShutdownRequest) + Send + 'static,
    {
        CfgBuilder {
            callbacks: CfgClosures { shutdown: f },
            daemon_uid: self.daemon_uid,
        }
    }

    /// The user id the daemon must run as, checked on the connection (`SO_PEERCRED`)
    /// right after connecting, or `None` for no check; default `Some(0)`. See
    /// [`Options::daemon_uid`](crate::Options::daemon_uid) for why.
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.daemon_uid = uid;
        self
    }

    /// Connects to the local daemon's cfg service.
    pub fn build(self) -> Result<Cfg> {
        Cfg::with_daemon_uid(self.callbacks, self.daemon_uid)
    }
}

/// The callback state: the application's callbacks, and whether a request came that
/// this handle has not answered.
struct CfgState<C> {
    callbacks: C,
    unanswered: Arc<AtomicBool>,
}

/// libcfg, as the service core drives it.
struct CfgLibrary;

/// libcfg's open handles (its handle table is its own).
static CFG_HANDLES: HandleSlots = HandleSlots::new();

impl Library for CfgLibrary {
    const SERVICE: Service = Service::Cfg;
    const INITIALIZE: Operation = Operation::CfgInitialize;
    const FINALIZE: Operation = Operation::CfgFinalize;
    const FD_GET: Operation = Operation::CfgFdGet;
    const DISPATCH: Operation = Operation::CfgDispatch;

    fn slots() -> &'static HandleSlots {
        &CFG_HANDLES
    }

    unsafe fn finalize(raw: u64) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::corosync_cfg_finalize(raw) }
    }

    unsafe fn fd_get(raw: u64, fd: *mut c_int) -> sys::cs_error_t {
        // SAFETY: per the trait's contract (libcfg's descriptor is an `int32_t`).
        unsafe { sys::corosync_cfg_fd_get(raw, fd) }
    }

    unsafe fn dispatch(raw: u64, flags: sys::cs_dispatch_flags_t) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::corosync_cfg_dispatch(raw, flags) }
    }
}

/// The longest reason [`Cfg::kill_node`] takes: libcfg copies it into a
/// `CS_MAX_NAME_LENGTH` field with its NUL.
pub const MAX_KILL_REASON: usize = 255;

/// A connection to the local corosync daemon's cfg service, with its shutdown
/// callback.
///
/// Made with [`Cfg::new`] (no callback: queries and commands only), [`Cfg::builder`]
/// (a closure) or [`Cfg::with_daemon_uid`] (a [`CfgCallbacks`] value). See the
/// [module docs](self) for shutdown tracking. Dropping the handle finalizes the
/// connection (a pending shutdown request then counts as answered yes), then frees the
/// callbacks; [`close`](Self::close) does the same and reports an error.
#[derive(Debug)]
pub struct Cfg {
    core: ServiceHandle<CfgLibrary>,
    /// The daemon lists this connection among its trackers.
    tracking: Cell<bool>,
    /// A request came and this handle has not answered it (set by the callback state).
    unanswered: Arc<AtomicBool>,
}

impl Cfg {
    /// Connects to the local daemon's cfg service without a callback.
    ///
    /// Fails with [`CsError::Library`] when no daemon is running (or is reachable from
    /// this network namespace), [`CsError::Access`] when it refuses this user, and
    /// [`Error::TooManyServiceHandles`] when [`MAX_HANDLES`](crate::MAX_HANDLES) cfg
    /// handles are open in this process.
    pub fn new() -> Result<Cfg> {
        Cfg::with_daemon_uid(Unset, Some(0))
    }

    /// A builder that takes a closure for shutdown requests.
    pub fn builder() -> CfgBuilder<Unset> {
        CfgBuilder {
            callbacks: CfgClosures::default(),
            daemon_uid: Some(0),
        }
    }

    /// Connects with these callbacks, checking that the daemon runs as `daemon_uid`
    /// (`None`: no check; see [`CfgBuilder::daemon_uid`]).
    pub fn with_daemon_uid<C: CfgCallbacks>(callbacks: C, daemon_uid: Option<u32>) -> Result<Cfg> {
        let unanswered = Arc::new(AtomicBool::new(false));
        let state = CfgState {
            callbacks,
            unanswered: Arc::clone(&unanswered),
        };
        let core = ServiceHandle::<CfgLibrary>::connect(state, daemon_uid, |_context| {
            let callbacks = sys::corosync_cfg_callbacks_t {
                corosync_cfg_shutdown_callback: Some(shutdown_trampoline::<C>),
            };
            let mut raw: sys::corosync_cfg_handle_t = 0;
            // SAFETY: valid pointers; libcfg copies the callbacks. The caller holds the
            // library lock and checked the stack. (libcfg has no context pointer: the
            // trampoline finds its state through the dispatch scope.)
            let rc = unsafe { sys::corosync_cfg_initialize(&mut raw, &callbacks) };
            (rc, raw)
        })?;
        Ok(Cfg {
            core,
            tracking: Cell::new(false),
            unanswered,
        })
    }

    /// The local node's id (`corosync_cfg_local_get`).
    pub fn local_node_id(&self) -> Result<u32> {
        let mut nodeid: std::ffi::c_uint = 0;
        self.core.call(Operation::CfgLocalNodeId, |raw| {
            // SAFETY: the handle is live; `nodeid` is a valid out pointer.
            unsafe { sys::corosync_cfg_local_get(raw, &mut nodeid) }
        })?;
        Ok(nodeid)
    }

    /// How the local daemon's knet sees node `nodeid` (the local node included):
    /// reachable or not, and each link's state and addresses, what
    /// `corosync-cfgtool -s` and `-n` print. Only with corosync 3.1 headers
    /// (`corosync_cfg_node_status_get`); older ones have no per-link status in cfg.
    ///
    /// Fails with [`CsError::FailedOperation`] for a node knet does not know (not in
    /// the node list; 0 is not the local node here).
    #[cfg(corosync_has_cfg_node_status)]
    pub fn node_status(&self, nodeid: u32) -> Result<NodeStatus> {
        let mut raw_status = sys::corosync_cfg_node_status_v1::default();
        // A 4,272-byte frame (corosync 3.1.7): more than a page.
        self.core
            .call_with_stack(Operation::CfgNodeStatus, crate::stack::CALL_STACK, |raw| {
                // SAFETY: the handle is live; `raw_status` is a zeroed
                // corosync_cfg_node_status_v1, the struct libcfg fills for
                // CFG_NODE_STATUS_V1; the stack has room for the call.
                unsafe {
                    sys::corosync_cfg_node_status_get(
                        raw,
                        nodeid,
                        sys::CFG_NODE_STATUS_V1,
                        (&mut raw_status as *mut sys::corosync_cfg_node_status_v1).cast(),
                    )
                }
            })?;
        let links = status::links(raw_status.link_status.iter().map(|l| status::RawLink {
            enabled: l.enabled,
            connected: l.connected,
            dynconnected: l.dynconnected,
            mtu: l.mtu,
            source: &l.src_ipaddr,
            remote: &l.dst_ipaddr,
        }));
        Ok(NodeStatus {
            nodeid: raw_status.nodeid,
            reachable: raw_status.reachable != 0,
            remote: raw_status.remote != 0,
            external: raw_status.external != 0,
            onwire: (
                raw_status.onwire_min,
                raw_status.onwire_max,
                raw_status.onwire_ver,
            ),
            links,
        })
    }

    /// The addresses of node `nodeid` (0: the local node), one per link, as
    /// `corosync-cfgtool -a` prints them (`corosync_cfg_get_node_addrs`: at most 8, the
    /// links corosync supports). Fails with [`CsError::NotExist`] for a node not in the
    /// node list.
    pub fn node_addrs(&self, nodeid: u32) -> Result<Vec<IpAddr>> {
        const MAX: usize = sys::CFG_MAX_LINKS as usize;
        let mut addrs = [sys::corosync_cfg_node_address_t::default(); MAX];
        let mut count: c_int = 0;
        // A 1 MiB buffer on its stack (1,048,808 bytes in 3.1.7).
        self.core
            .call_with_stack(Operation::CfgNodeAddrs, DISPATCH_STACK, |raw| {
                // SAFETY: the handle is live; `addrs` has room for MAX entries and
                // libcfg writes at most `max_addrs`; `count` is a valid out pointer; the
                // stack has room for the call.
                unsafe {
                    sys::corosync_cfg_get_node_addrs(
                        raw,
                        nodeid,
                        MAX,
                        &mut count,
                        addrs.as_mut_ptr(),
                    )
                }
            })?;
        let filled = usize::try_from(count).unwrap_or(0).min(MAX);
        Ok(addrs[..filled]
            .iter()
            .filter_map(|a| status::node_address(a.address_length, &a.address))
            .collect())
    }

    /// Tells every node's corosync to read its corosync.conf again
    /// (`corosync-cfgtool -R`); returns once the local daemon did. Keys that cannot
    /// change at run time (`totem.cluster_name`, the crypto settings, ...) keep their
    /// values; `config.reload_in_progress` is 1 during the reload.
    pub fn reload_config(&self) -> Result<()> {
        self.core.call(Operation::CfgReloadConfig, |raw| {
            // SAFETY: the handle is live.
            unsafe { sys::corosync_cfg_reload_config(raw) }
        })
    }

    /// Tells the local daemon to reopen its log files (`corosync-cfgtool -L`), after
    /// they were rotated.
    pub fn reopen_log_files(&self) -> Result<()> {
        self.core.call(Operation::CfgReopenLogFiles, |raw| {
            // SAFETY: the handle is live.
            unsafe { sys::corosync_cfg_reopen_log_files(raw) }
        })
    }

    /// Registers this connection as a shutdown tracker: shutdown requests of the local
    /// daemon come to [`CfgCallbacks::shutdown_requested`] (through
    /// [`dispatch`](Self::dispatch)) and wait for [`reply_to_shutdown`](Self::reply_to_shutdown).
    ///
    /// Fails with [`CsError::Exist`] while this handle tracks already (corosync 3.1.7
    /// accepts a second start; this crate refuses it before asking).
    /// [`CsError::TryAgain`] can come while the daemon is busy (Pacemaker retries it).
    pub fn track_start(&self) -> Result<()> {
        let op = Operation::CfgTrackStart;
        self.core.usable(op)?;
        if self.tracking.get() {
            return Err(Error::Cs {
                op,
                code: CsError::Exist,
            });
        }
        self.core.call(op, |raw| {
            // SAFETY: the handle is live; the flags are unused by corosync (0).
            unsafe { sys::corosync_cfg_trackstart(raw, 0) }
        })?;
        self.tracking.set(true);
        Ok(())
    }

    /// Stops tracking shutdown requests. Fails with [`CsError::NotExist`] when this
    /// handle does not track (corosync answers success then; this crate refuses).
    pub fn track_stop(&self) -> Result<()> {
        let op = Operation::CfgTrackStop;
        self.core.usable(op)?;
        if !self.tracking.get() {
            return Err(Error::Cs {
                op,
                code: CsError::NotExist,
            });
        }
        self.core.call(op, |raw| {
            // SAFETY: the handle is live.
            unsafe { sys::corosync_cfg_trackstop(raw) }
        })?;
        self.tracking.set(false);
        Ok(())
    }

    /// Whether this handle tracks shutdown requests.
    pub fn is_tracking(&self) -> bool {
        self.tracking.get()
    }

    /// Whether a shutdown request was delivered to this handle and not answered yet.
    pub fn shutdown_pending(&self) -> bool {
        self.unanswered.load(Ordering::SeqCst)
    }

    /// Answers the shutdown request this handle received
    /// (`corosync_cfg_replyto_shutdown`): call it once the service has done what it
    /// must before corosync stops. After the last tracker's yes the daemon stops (and
    /// this connection fails with `CS_ERR_LIBRARY`).
    ///
    /// Fails with [`CsError::NotExist`] when no request was delivered to this handle
    /// since its last answer: corosync counts answers, not trackers (on 3.1.7 a second
    /// yes from one tracker counted for another that had not answered), so this crate
    /// sends one answer per request received. A request that lapsed (no answer within
    /// `cfg.shutdown_timeout`) may still be answered; corosync ignores it.
    pub fn reply_to_shutdown(&self, reply: ShutdownReply) -> Result<()> {
        let op = Operation::CfgReplyToShutdown;
        self.core.usable(op)?;
        if !self.unanswered.swap(false, Ordering::SeqCst) {
            return Err(Error::Cs {
                op,
                code: CsError::NotExist,
            });
        }
        let result = self.core.call(op, |raw| {
            // SAFETY: the handle is live; the reply is one of the two C values.
            unsafe { sys::corosync_cfg_replyto_shutdown(raw, reply.to_raw()) }
        });
        if result.is_err() {
            // Not answered: it may be answered again.
            self.unanswered.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Asks the local daemon to shut down (`corosync_cfg_try_shutdown`; what
    /// `corosync-cfgtool -H` does with [`ShutdownMode::Request`], and `-H --force`
    /// with [`ShutdownMode::Regardless`]). Blocks until corosync decides: at once when
    /// no other connection tracks, else until every tracker answered or
    /// `cfg.shutdown_timeout` (5 s by default) passed. `Ok` means corosync stops now
    /// (every connection, this one too, then fails with `CS_ERR_LIBRARY`);
    /// [`CsError::Busy`] that a tracker said no or did not answer (to a
    /// [`ShutdownMode::Request`]).
    ///
    /// This handle's own tracking does not count. Other trackers of this process must
    /// be dispatched by other threads meanwhile, or they cannot answer before the
    /// timeout.
    pub fn try_shutdown(&self, mode: ShutdownMode) -> Result<()> {
        self.core.call(Operation::CfgTryShutdown, |raw| {
            // SAFETY: the handle is live; the flags are a plain value the daemon checks.
            unsafe { sys::corosync_cfg_try_shutdown(raw, mode.to_raw()) }
        })
    }

    /// Makes node `nodeid`'s corosync exit (`corosync-cfgtool -k`), logging `reason`
    /// there (corosync 3.1.7: `Killed by node 1 : REASON`, then an exit with status
    /// -1).
    ///
    /// **This stops another machine's cluster stack.** The request goes to every node
    /// through the cluster; the node with that id (this one too, if named) ends its
    /// corosync at once with a fatal-error exit, without asking its trackers, without
    /// its services leaving their groups cleanly: the others see it leave as if it had
    /// crashed, and on a Pacemaker cluster such a node is typically fenced. There is
    /// no confirmation: `Ok` only means the request was sent, also for a node id that
    /// does not exist. Any process the local daemon lets connect may call it.
    ///
    /// Fails with [`Error::InvalidArgument`] for a reason longer than
    /// [`MAX_KILL_REASON`] bytes or with a NUL byte.
    pub fn kill_node(&self, nodeid: u32, reason: &str) -> Result<()> {
        if reason.len() > MAX_KILL_REASON {
            return Err(Error::InvalidArgument(
                "kill_node takes a reason of at most 255 bytes",
            ));
        }
        let reason = CString::new(reason)
            .map_err(|_| Error::InvalidArgument("kill_node's reason must not contain NUL"))?;
        self.core.call(Operation::CfgKillNode, |raw| {
            // SAFETY: the handle is live; `reason` is NUL-terminated and fits libcfg's
            // 256-byte field with its NUL.
            unsafe { sys::corosync_cfg_kill_node(raw, nodeid, reason.as_ptr()) }
        })
    }

    /// Delivers pending shutdown requests to the callback, waiting or not according to
    /// `mode`, as [`Handle::dispatch`](crate::Handle::dispatch) does. A lost daemon (it
    /// stopped) is an error for which [`Error::is_daemon_lost`] holds.
    ///
    /// If the callback panics, the panic resumes here and the handle is poisoned. On a
    /// thread with less than [`DISPATCH_STACK`] of stack left it
    /// fails with [`Error::StackTooSmall`].
    pub fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        self.core.dispatch(mode)
    }

    /// Delivers pending requests one at a time, at most `max_events` (at least 1).
    pub fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
        self.core.dispatch_at_most(max_events)
    }

    /// Waits up to `timeout` for requests, then delivers all pending ones;
    /// [`Dispatched::NothingPending`] on timeout.
    pub fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        self.core.dispatch_timeout(timeout)
    }

    /// Finalizes the connection and frees the callbacks, reporting a failure of
    /// `corosync_cfg_finalize` (dropping does the same and ignores it). A pending
    /// shutdown request counts as answered yes.
    pub fn close(self) -> Result<()> {
        self.core.close()
    }
}

/// The descriptor is for polling only (register it with `poll`, epoll or a reactor,
/// then [`dispatch`](Cfg::dispatch)); reading from it or writing to it breaks the
/// connection.
impl AsFd for Cfg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
    }
}

impl AsRawFd for Cfg {
    fn as_raw_fd(&self) -> RawFd {
        self.core.as_raw_fd()
    }
}

extern "C" fn shutdown_trampoline<C: CfgCallbacks>(
    handle: sys::corosync_cfg_handle_t,
    flags: sys::corosync_cfg_shutdown_flags_t,
) {
    let request = ShutdownRequest {
        mode: ShutdownMode::from_raw(flags),
    };
    // SAFETY: libcfg calls this trampoline only from inside corosync_cfg_dispatch on
    // `handle`, which `with_daemon_uid::<C>` registered with a `CfgState<C>`.
    unsafe {
        deliver::<CfgLibrary, CfgState<C>>(handle, |state| {
            state.unanswered.store(true, Ordering::SeqCst);
            state.callbacks.shutdown_requested(request);
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_modes_and_replies_have_the_c_values() {
        for (mode, raw) in [
            (ShutdownMode::Request, 0),
            (ShutdownMode::Regardless, 1),
            (ShutdownMode::Immediate, 2),
            (ShutdownMode::Unknown(9), 9),
        ] {
            assert_eq!(mode.to_raw(), raw);
            assert_eq!(ShutdownMode::from_raw(raw), mode);
        }
        assert!(ShutdownMode::Request.can_refuse());
        assert!(!ShutdownMode::Regardless.can_refuse());
        assert_eq!(ShutdownReply::Yes.to_raw(), 1);
        assert_eq!(ShutdownReply::No.to_raw(), 0);
        assert_eq!(ShutdownMode::Regardless.to_string(), "regardless");
    }

    #[test]
    fn cfg_errors_explain_the_codes_that_mean_something_particular() {
        let text = |op, code| Error::Cs { op, code }.to_string();
        let busy = text(Operation::CfgTryShutdown, CsError::Busy);
        assert!(
            busy.starts_with("corosync_cfg_try_shutdown failed: "),
            "{busy}"
        );
        assert!(busy.contains("cfg.shutdown_timeout"), "{busy}");
        let reply = text(Operation::CfgReplyToShutdown, CsError::NotExist);
        assert!(reply.contains("no shutdown request came"), "{reply}");
        let status = text(Operation::CfgNodeStatus, CsError::FailedOperation);
        assert!(status.contains("knet knows no such node"), "{status}");
        assert_eq!(Operation::CfgKillNode.service(), Service::Cfg);
    }
}
