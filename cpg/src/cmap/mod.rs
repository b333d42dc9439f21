//! corosync's configuration and runtime database, cmap (feature **`cmap`**): what
//! corosync.conf says and what the daemon knows now, as typed keys and values, with
//! notifications of every change.
//!
//! - [`Cmap`] owns a connection to one of the two maps ([`Map::Main`]: configuration
//!   and runtime keys; [`Map::Stats`]: statistics) and finalizes it on drop.
//! - Typed reads and writes: [`get`](Cmap::get) (`u32`, `String`, ...: the key's type
//!   is checked, never converted), [`get_value`](Cmap::get_value) (a [`Value`] of any
//!   type, for tools), [`set`](Cmap::set), [`delete`](Cmap::delete),
//!   [`inc`](Cmap::inc) / [`dec`](Cmap::dec).
//! - [`iter`](Cmap::iter) / [`keys`](Cmap::keys): the keys under a prefix, as an
//!   iterator that borrows the handle and finalizes on drop.
//! - Tracking ([`track_key`](Cmap::track_key), [`track_prefix`](Cmap::track_prefix)):
//!   each addition, change and deletion, with the old and the new value, to a closure
//!   run by [`dispatch`](Cmap::dispatch); or (feature `tokio`) as a stream of owned
//!   [`Change`]s from `AsyncCmap`.
//! - [`NodeNames`]: the node list's names for node ids, kept up to date.
//!
//! # Keys that matter to a service
//!
//! | key | type | what |
//! |---|---|---|
//! | `totem.cluster_name` | str | the cluster's name |
//! | `totem.config_version` | u64 | raised by whoever edits corosync.conf (pmxcfs tracks it to reload) |
//! | `nodelist.node.N.nodeid` | u32 | the node id of the node list's entry N |
//! | `nodelist.node.N.name` | str | its name (optional; corosync falls back to `ring0_addr`) |
//! | `nodelist.node.N.ring0_addr` | str | its first link's address (or host name) |
//! | `nodelist.local_node_pos` | u32 | N of this node's entry |
//! | `runtime.members.ID.status` | str | `joined` or `left`, per node id seen |
//! | `config.reload_in_progress` | u8 | 1 while `corosync-cfgtool -R` reloads corosync.conf |
//! | `stats.ipcs.serviceS.PID.CONN.*` (stats map) | | one client connection: S the service (0 cmap, 1 cfg, 2 cpg, 3 quorum), PID the client |
//!
//! # Errors a caller matches on
//!
//! - A key that is not set: [`Error::Cs`] with [`CsError::NotExist`]
//!   ([`Error::is_not_found`]).
//! - A key of another type than asked: [`CmapError::TypeMismatch`] (key, stored type,
//!   asked type), inside [`Error::Cmap`].
//! - A key that may not be written: [`CsError::Access`]. corosync refuses changes to
//!   the keys it fixes at startup (`totem.cluster_name`, `totem.crypto_*`,
//!   `totem.transport`, ...), to the whole node list (`nodelist.*`: it changes only
//!   when corosync.conf is reloaded, `corosync-cfgtool -R`), to `runtime.totem.*`,
//!   `runtime.config.*`, `runtime.services.*`, `runtime.connections.*`,
//!   `internal_configuration.*`, `uidgid.config.*`, and to every key of the stats map
//!   (measured on 3.1.7); it answers the same to every user. A user the daemon does not let in at all (no
//!   `uidgid` entry) gets [`CsError::Access`] from [`Cmap::new`] already; a user it
//!   lets in may write every other key, as root may (measured on corosync 3.1.7).
//! - A key name corosync would refuse (length, characters) or a value it would refuse
//!   (too long, a NUL in a string): [`CmapError`], before anything is sent.
//!
//! # Example
//!
//! ```no_run
//! use cpg::cmap::{Cmap, TrackType};
//! use cpg::DispatchMode;
//!
//! let cmap = Cmap::new()?;
//! let name: String = cmap.get("totem.cluster_name")?;
//! for entry in cmap.iter("nodelist.node.")? {
//!     let (key, value) = entry?;
//!     println!("{key} = {value}");
//! }
//! cmap.track_key("totem.config_version", TrackType::ALL, |_cmap, change| {
//!     println!("{}: {:?} -> {:?}", change.key, change.old, change.new);
//! })?;
//! loop {
//!     cmap.dispatch(DispatchMode::One)?;
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # Threads, stacks, processes
//!
//! As for [`Handle`](crate::Handle): a [`Cmap`] is `Send`, not `Sync`; the thread that
//! dispatches needs [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left
//! (`cmap_dispatch` keeps a 1 MiB buffer on its stack: a 1,048,696-byte frame in
//! 3.1.7, without stack probes); a callback that panics poisons the handle and the
//! panic resumes in `dispatch`; a handle inherited through `fork` refuses every call.
//! At most [`MAX_HANDLES`](crate::MAX_HANDLES) cmap handles are open at once in a
//! process, and at most [`MAX_TRACKS`] tracks are registered on all of them together:
//! libcmap keeps both in libqb handle tables of its own, which every call and every
//! dispatch reads without a lock, and which must not grow while they do (see
//! [`MAX_HANDLES`](crate::MAX_HANDLES)). Iterations are kept by the daemon, not in a
//! table of this process, and need no bound here.

mod error;
mod iter;
mod key;
mod names;
mod track;
mod value;

#[cfg(feature = "tokio")]
mod async_cmap;

use std::ffi::{c_int, CStr};
use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use corosync_sys as sys;

use crate::error::{CsError, Error, Operation, Result, Service};
use crate::process::HandleSlots;
use crate::service::{Library, ServiceHandle};
use crate::types::{DispatchMode, Dispatched};

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_cmap::AsyncCmap;
pub use error::CmapError;
pub use iter::{Iter, KeyInfo, Keys};
pub use key::{check_key, MAX_KEY_LEN, MIN_KEY_LEN};
pub use names::{NodeLabel, NodeNames};
pub use track::{Change, ChangeKind, TrackContext, TrackId, TrackType, MAX_TRACKS};
pub use value::{CmapValue, Value, ValueType, MAX_VALUE_LEN};

use key::{key_cstring, prefix_cstring};
use track::Shared;

/// Which of corosync's two maps a [`Cmap`] handle reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Map {
    /// The main map (`CMAP_MAP_ICMAP`): corosync.conf's keys and the daemon's runtime
    /// keys (`totem.*`, `nodelist.*`, `runtime.*`, ...). Most keys may be written.
    Main,
    /// The statistics map (`CMAP_MAP_STATS`, corosync 3): `stats.knet.*`,
    /// `stats.ipcs.*`, `stats.srp.*`, `stats.pg.*`, computed when read. Read-only:
    /// every write gets [`CsError::Access`]. Its notifications are not exact: an
    /// addition or deletion carries the value as both old and new, and a modification
    /// may carry the same value twice (corosync 3.1.7).
    Stats,
}

impl Map {
    fn to_raw(self) -> sys::cmap_map_t {
        match self {
            Map::Main => sys::CMAP_MAP_ICMAP,
            Map::Stats => sys::CMAP_MAP_STATS,
        }
    }
}

impl fmt::Display for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names `corosync-cmapctl -m` takes.
        f.write_str(match self {
            Map::Main => "icmap",
            Map::Stats => "stats",
        })
    }
}

/// libcmap, as the service core drives it.
pub(crate) struct CmapLibrary;

/// libcmap's open handles (its handle table is its own).
static CMAP_HANDLES: HandleSlots = HandleSlots::new();

impl Library for CmapLibrary {
    const SERVICE: Service = Service::Cmap;
    const INITIALIZE: Operation = Operation::CmapInitialize;
    const FINALIZE: Operation = Operation::CmapFinalize;
    const FD_GET: Operation = Operation::CmapFdGet;
    const DISPATCH: Operation = Operation::CmapDispatch;

    fn slots() -> &'static HandleSlots {
        &CMAP_HANDLES
    }

    unsafe fn finalize(raw: u64) -> sys::cs_error_t {
        // SAFETY: per the trait's contract. cmap_finalize also destroys the entries of
        // this connection's tracks in libcmap's track table (a table change: the
        // library lock is held).
        unsafe { sys::cmap_finalize(raw) }
    }

    unsafe fn fd_get(raw: u64, fd: *mut c_int) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::cmap_fd_get(raw, fd) }
    }

    unsafe fn dispatch(raw: u64, flags: sys::cs_dispatch_flags_t) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::cmap_dispatch(raw, flags) }
    }
}

/// How a request reaches libcmap: through the handle's core, which checks first that
/// the handle is usable, or from a callback's [`TrackContext`], inside a dispatch of
/// that very handle.
pub(crate) trait Requests {
    /// Runs `f(raw)` for `op` and converts its result.
    fn request(&self, op: Operation, f: &mut dyn FnMut(u64) -> sys::cs_error_t) -> Result<()>;
}

impl Requests for ServiceHandle<CmapLibrary> {
    fn request(&self, op: Operation, f: &mut dyn FnMut(u64) -> sys::cs_error_t) -> Result<()> {
        // Every cmap request has frames well below a page (measured on 3.1.7: at most
        // 424 bytes), plus libqb's send and receive.
        self.call(op, f)
    }
}

/// A connection to one of the local corosync daemon's cmap maps, with its tracks.
///
/// Made with [`Cmap::new`] (the main map), [`Cmap::stats`] or [`Cmap::connect`].
/// Reads and writes are requests to the local daemon (a round trip each). Changes of
/// tracked keys are delivered by [`dispatch`](Self::dispatch) on the calling thread;
/// the descriptor ([`AsFd`]) becomes readable when some wait. Dropping the handle
/// finalizes the connection (which ends its tracks and iterations in the daemon), then
/// frees the tracks' closures; [`close`](Self::close) does the same and reports an
/// error. See the [module docs](self).
pub struct Cmap {
    /// Finalized exactly once: by `close` or by `Drop` (see `finalize`).
    core: ManuallyDrop<ServiceHandle<CmapLibrary>>,
    /// The tracks' closures, shared with the callback state the trampolines see.
    tracks: Shared,
    map: Map,
}

impl fmt::Debug for Cmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmap")
            .field("map", &self.map)
            .field("core", &*self.core)
            .field("tracks", &track::lock(&self.tracks).len())
            .finish()
    }
}

impl Cmap {
    /// Connects to the main map ([`Map::Main`]) of the local daemon.
    ///
    /// Fails with [`CsError::Library`] when no daemon is running (or is reachable from
    /// this network namespace), [`CsError::Access`] when it refuses this user, and
    /// [`Error::TooManyServiceHandles`] when [`MAX_HANDLES`](crate::MAX_HANDLES) cmap
    /// handles are open in this process.
    pub fn new() -> Result<Cmap> {
        Cmap::connect(Map::Main, Some(0))
    }

    /// Connects to the statistics map ([`Map::Stats`]) of the local daemon.
    pub fn stats() -> Result<Cmap> {
        Cmap::connect(Map::Stats, Some(0))
    }

    /// Connects to `map`, checking that the daemon runs as `daemon_uid` (`None`: no
    /// check); see [`Options::daemon_uid`](crate::Options::daemon_uid) for why.
    pub fn connect(map: Map, daemon_uid: Option<u32>) -> Result<Cmap> {
        let tracks: Shared = Arc::default();
        let state = Arc::clone(&tracks);
        let core = ServiceHandle::<CmapLibrary>::connect(state, daemon_uid, |_context| {
            let mut raw: sys::cmap_handle_t = 0;
            // SAFETY: `raw` is a valid out pointer. The caller holds the library lock
            // and checked the stack. (cmap has a context pointer, which the trampolines
            // do not need: they find their state through the dispatch scope.)
            let rc = unsafe { sys::cmap_initialize_map(&mut raw, map.to_raw()) };
            (rc, raw)
        })?;
        Ok(Cmap {
            core: ManuallyDrop::new(core),
            tracks,
            map,
        })
    }

    /// The map this handle reads.
    pub fn map(&self) -> Map {
        self.map
    }

    /// The value of `key`, which must have `T`'s type ([`CmapValue`]): `u8` for a
    /// `u8` key, `String` for a string, `Vec<u8>` for binary.
    ///
    /// ```no_run
    /// # let cmap = cpg::cmap::Cmap::new()?;
    /// let name: String = cmap.get("totem.cluster_name")?;
    /// let version = match cmap.get::<u64>("totem.config_version") {
    ///     Err(e) if e.is_not_found() => 0,
    ///     other => other?,
    /// };
    /// # Ok::<(), cpg::Error>(())
    /// ```
    ///
    /// Fails with [`CsError::NotExist`] ([`Error::is_not_found`]) when the key is not
    /// set, [`CmapError::TypeMismatch`] when it holds another type (no conversion, not
    /// even between integer widths), [`CmapError::InvalidKey`] for a name corosync
    /// never accepts.
    pub fn get<T: CmapValue>(&self, key: &str) -> Result<T> {
        ops::get(&*self.core, key)
    }

    /// The value of `key`, of whatever type it has.
    pub fn get_value(&self, key: &str) -> Result<Value> {
        ops::get_value(&*self.core, key, None)
    }

    /// Sets `key` to `value`, with `value`'s type (creating the key, or replacing its
    /// value and type). `cmap.set("my.key", 5u32)`, `cmap.set("my.key", "text")`,
    /// `cmap.set("my.key", Value::U8(1))`. Setting the value a key has changes nothing
    /// and notifies no one.
    ///
    /// Fails with [`CsError::Access`] for a read-only key (see the
    /// [module docs](self)), [`CmapError::ValueTooLong`] beyond
    /// [`MAX_VALUE_LEN`] bytes, [`CmapError::NulInString`] for a string with a NUL
    /// inside, [`CmapError::InvalidKey`] for a name corosync refuses.
    pub fn set(&self, key: &str, value: impl Into<Value>) -> Result<()> {
        ops::set(&*self.core, key, &value.into())
    }

    /// Deletes `key`. Fails with [`CsError::NotExist`] when it is not set, and
    /// [`CsError::Access`] for a read-only key.
    pub fn delete(&self, key: &str) -> Result<()> {
        ops::adjust(&*self.core, Operation::CmapDelete, key)
    }

    /// Adds 1 to the integer `key`, wrapping around at its type's end (a `u8` of 255
    /// becomes 0). Fails with [`CsError::NotExist`] when it is not set and
    /// [`CsError::InvalidParam`] when it is no integer.
    pub fn inc(&self, key: &str) -> Result<()> {
        ops::adjust(&*self.core, Operation::CmapInc, key)
    }

    /// Subtracts 1 from the integer `key`, wrapping around (an `i8` of -128 becomes
    /// 127). Fails like [`inc`](Self::inc).
    pub fn dec(&self, key: &str) -> Result<()> {
        ops::adjust(&*self.core, Operation::CmapDec, key)
    }

    /// The keys that start with `prefix` (all keys for `""`), in key order, each with
    /// its value: what `corosync-cmapctl PREFIX` lists. See [`Iter`].
    pub fn iter(&self, prefix: &str) -> Result<Iter<'_>> {
        Iter::start(self, prefix)
    }

    /// The keys that start with `prefix`, with their types and lengths but without
    /// their values (one round trip per key instead of two). See [`Keys`].
    pub fn keys(&self, prefix: &str) -> Result<Keys<'_>> {
        Keys::start(self, prefix)
    }

    /// Tracks `key`: every change of the kinds in `types` runs `callback` (inside
    /// [`dispatch`](Self::dispatch)) with the key, the kind, and the old and new
    /// values. The key need not exist yet ([`TrackType::ADD`] reports its creation).
    /// Returns the track's id, for [`delete_track`](Self::delete_track).
    ///
    /// The callback gets a [`TrackContext`] through which it may read and write keys
    /// and delete tracks (its own too); it cannot reach this handle. It is freed once:
    /// when its track is deleted (after it returns, if it deleted itself) or when the
    /// handle is finalized.
    ///
    /// Fails with [`CmapError::TooManyTracks`] when [`MAX_TRACKS`] tracks are
    /// registered in this process, and [`Error::InvalidArgument`] for an empty
    /// `types`.
    pub fn track_key<F>(&self, key: &str, types: TrackType, callback: F) -> Result<TrackId>
    where
        F: FnMut(&TrackContext<'_>, Change) + Send + 'static,
    {
        let name = key_cstring(key)?;
        self.track_add(&name, types, false, Box::new(callback))
    }

    /// Tracks every key that starts with `prefix` (`"nodelist."`), as
    /// [`track_key`](Self::track_key) tracks one.
    pub fn track_prefix<F>(&self, prefix: &str, types: TrackType, callback: F) -> Result<TrackId>
    where
        F: FnMut(&TrackContext<'_>, Change) + Send + 'static,
    {
        let name = prefix_cstring(prefix)?;
        self.track_add(&name, types, true, Box::new(callback))
    }

    fn track_add(
        &self,
        name: &CStr,
        types: TrackType,
        prefix: bool,
        callback: track::Callback,
    ) -> Result<TrackId> {
        track::add(&self.core, &self.tracks, name, types, prefix, callback)
    }

    /// Deletes a track of this handle: no more notifications reach its closure, which
    /// is freed. Notifications already read by libcmap for it are dropped. Fails with
    /// [`CsError::NotExist`] for a track this handle does not have (deleted already).
    pub fn delete_track(&self, track: TrackId) -> Result<()> {
        self.core.usable(Operation::CmapTrackDelete)?;
        track::delete(&*self.core, &self.tracks, track)
    }

    /// The tracks of this handle, in the order they were added.
    pub fn tracks(&self) -> Vec<TrackId> {
        track::lock(&self.tracks).ids()
    }

    /// Delivers pending notifications to the tracks' closures, waiting or not
    /// according to `mode`, as [`Handle::dispatch`](crate::Handle::dispatch) does:
    /// [`Dispatched::NothingPending`] when a non-blocking mode found nothing, else the
    /// number of callbacks that ran. A lost daemon is an error for which
    /// [`Error::is_daemon_lost`] holds, and every later call fails the same way.
    ///
    /// If a callback panics, delivery stops, the panic resumes here once libcmap has
    /// returned, and the handle is poisoned: every later call fails with
    /// [`Error::Poisoned`]. On a thread with less than
    /// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left it fails with
    /// [`Error::StackTooSmall`].
    pub fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        self.core.dispatch(mode)
    }

    /// Delivers pending notifications one at a time, stopping when nothing is pending
    /// or after `max_events` (at least 1), like
    /// [`Handle::dispatch_at_most`](crate::Handle::dispatch_at_most).
    pub fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
        self.core.dispatch_at_most(max_events)
    }

    /// Waits up to `timeout` for notifications, then delivers all pending ones;
    /// [`Dispatched::NothingPending`] on timeout.
    pub fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        self.core.dispatch_timeout(timeout)
    }

    /// Finalizes the connection and frees the tracks' closures, reporting a failure of
    /// `cmap_finalize` (dropping does the same and ignores it).
    pub fn close(self) -> Result<()> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `finalize` runs once, and nothing uses
        // `core` after it.
        let result = unsafe { this.finalize() };
        // SAFETY: `tracks` is the only other field that owns something; it is dropped
        // once, here, and `this` (never dropped) is not used again.
        unsafe { std::ptr::drop_in_place(&mut this.tracks) };
        result
    }

    /// Finalizes the connection, then gives back the process's track slots the
    /// connection held (its tracks' entries in libcmap's table are gone with it).
    ///
    /// # Safety
    /// Called once; `core` is not used after.
    unsafe fn finalize(&mut self) -> Result<()> {
        // SAFETY: per the contract, this is the one take of `core`.
        let core = unsafe { ManuallyDrop::take(&mut self.core) };
        let result = core.close();
        // A child of fork keeps the parent's entries; a finalize that could not run
        // (no thread to run it on) leaves them: their slots stay counted.
        if !matches!(result, Err(Error::Forked) | Err(Error::Os { .. })) {
            track::lock(&self.tracks).release_all();
        }
        result
    }

    pub(crate) fn core(&self) -> &ServiceHandle<CmapLibrary> {
        &self.core
    }
}

impl Drop for Cmap {
    fn drop(&mut self) {
        // SAFETY: Drop runs once and `close` suppresses it; nothing uses `core` after.
        let _ = unsafe { self.finalize() };
    }
}

/// The descriptor is for polling only (register it with `poll`, epoll or a reactor,
/// then [`dispatch`](Cmap::dispatch)); reading from it or writing to it breaks the
/// connection.
impl AsFd for Cmap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
    }
}

impl AsRawFd for Cmap {
    fn as_raw_fd(&self) -> RawFd {
        self.core.as_raw_fd()
    }
}

/// The requests every way of talking to libcmap shares: the handle and a callback's
/// context.
pub(crate) mod ops {
    use super::*;

    /// How many times a read is retried when the value grew between asking for its
    /// size and reading it.
    const READ_ATTEMPTS: usize = 4;

    /// The buffer a first read tries: most values (numbers, names, addresses) fit.
    const FIRST_READ: usize = 256;

    pub(crate) fn get<T: CmapValue>(r: &impl Requests, key: &str) -> Result<T> {
        let value = get_value(r, key, Some(T::TYPE))?;
        let stored = value.value_type();
        T::from_value(value).ok_or_else(|| {
            Error::Cmap(CmapError::TypeMismatch {
                key: key.into(),
                stored,
                asked: T::TYPE,
            })
        })
    }

    /// Reads `key`. With `asked`, a value found (by its size) to be of another type is
    /// not fetched: the caller reports the mismatch.
    pub(crate) fn get_value(
        r: &impl Requests,
        key: &str,
        asked: Option<ValueType>,
    ) -> Result<Value> {
        let name = key_cstring(key)?;
        let mut capacity = asked.and_then(ValueType::fixed_len).unwrap_or(FIRST_READ);
        let mut last = None;
        for _ in 0..READ_ATTEMPTS {
            // Never empty: libcmap copies the daemon's length of bytes into a non-NULL
            // buffer whose given length is 0 (the daemon then reports the size instead
            // of refusing), which would write past it.
            let mut buffer = vec![0u8; capacity.max(1)];
            let mut len = buffer.len();
            let mut raw_type: sys::cmap_value_types_t = 0;
            let read = r.request(Operation::CmapGet, &mut |raw| {
                // SAFETY: the handle is live; `name` is a checked, NUL-terminated key of
                // at most 255 bytes; `buffer` has `len` (> 0) writable bytes, and the
                // daemon refuses (CS_ERR_INVALID_PARAM) rather than send more;
                // `len` and `raw_type` are valid out pointers.
                unsafe {
                    sys::cmap_get(
                        raw,
                        name.as_ptr(),
                        buffer.as_mut_ptr().cast(),
                        &mut len,
                        &mut raw_type,
                    )
                }
            });
            match read {
                Ok(()) => {
                    let bytes = buffer.get(..len).ok_or_else(|| {
                        Error::Cmap(CmapError::Malformed {
                            key: key.into(),
                            value_type: raw_type,
                            len,
                            reason: "longer than the buffer it was read into",
                        })
                    })?;
                    return Ok(Value::decode(key, raw_type, bytes)?);
                }
                // The buffer is too small: ask for the size (and type), then read again.
                Err(
                    e @ Error::Cs {
                        code: CsError::InvalidParam,
                        ..
                    },
                ) => {
                    let (size, raw_type) = size_of(r, &name)?;
                    if let Some(asked) = asked {
                        match ValueType::from_raw(raw_type) {
                            Some(stored) if stored != asked => {
                                return Err(Error::Cmap(CmapError::TypeMismatch {
                                    key: key.into(),
                                    stored,
                                    asked,
                                }))
                            }
                            _ => {}
                        }
                    }
                    capacity = size;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Cs {
            op: Operation::CmapGet,
            code: CsError::InvalidParam,
        }))
    }

    /// The size and raw type of `name`'s value (a read without a buffer).
    fn size_of(r: &impl Requests, name: &CStr) -> Result<(usize, sys::cmap_value_types_t)> {
        let mut len = 0usize;
        let mut raw_type: sys::cmap_value_types_t = 0;
        r.request(Operation::CmapGet, &mut |raw| {
            // SAFETY: the handle is live; `name` is a checked key; a NULL value asks for
            // the length and type only, written to the two valid out pointers.
            unsafe {
                sys::cmap_get(
                    raw,
                    name.as_ptr(),
                    std::ptr::null_mut(),
                    &mut len,
                    &mut raw_type,
                )
            }
        })?;
        Ok((len, raw_type))
    }

    pub(crate) fn set(r: &impl Requests, key: &str, value: &Value) -> Result<()> {
        let name = key_cstring(key)?;
        let bytes = value.encode(key)?;
        let raw_type = value.value_type().to_raw();
        r.request(Operation::CmapSet, &mut |raw| {
            // SAFETY: the handle is live; `name` is a checked key; `bytes` holds
            // `bytes.len()` readable bytes (at most MAX_VALUE_LEN, a string with its
            // NUL), which libcmap only sends.
            unsafe {
                sys::cmap_set(
                    raw,
                    name.as_ptr(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    raw_type,
                )
            }
        })
    }

    /// `cmap_delete`, `cmap_inc` or `cmap_dec` of `key`.
    pub(crate) fn adjust(r: &impl Requests, op: Operation, key: &str) -> Result<()> {
        let name = key_cstring(key)?;
        r.request(op, &mut |raw| {
            // SAFETY: the handle is live; `name` is a checked, NUL-terminated key of
            // at most 255 bytes.
            unsafe {
                match op {
                    Operation::CmapInc => sys::cmap_inc(raw, name.as_ptr()),
                    Operation::CmapDec => sys::cmap_dec(raw, name.as_ptr()),
                    _ => sys::cmap_delete(raw, name.as_ptr()),
                }
            }
        })
    }
}
