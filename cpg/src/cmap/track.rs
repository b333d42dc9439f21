//! Tracking: [`TrackType`], the notifications ([`Change`]), the closures behind each
//! track and who owns them, and the trampoline libcmap calls.
//!
//! # Ownership of the closures
//!
//! libcmap gives every track a `user_data` pointer and a track handle. Here the pointer
//! carries no pointer at all: it is the track's number in this handle's table
//! ([`TrackTable`]), which owns the closures. The table is shared (an `Arc`) by the
//! [`Cmap`](super::Cmap) and by the handle's callback state, which the trampoline
//! reaches through the dispatch scope. A closure is taken out of the table while it
//! runs, so that it may delete tracks (its own too) through its [`TrackContext`]: a
//! deleted track's entry is removed at once; the closure that was running is put back
//! only if its entry is still there, and dropped otherwise, after it returned. A
//! closure therefore ends exactly once: when its track is deleted, or with the table,
//! after the handle is finalized. libcmap itself ignores notifications that arrive for
//! a deleted track.
//!
//! # The process's track table
//!
//! libcmap keeps each track in a libqb handle table of its own, shared by every cmap
//! handle of the process (`cmap_track_add` creates an entry, `cmap_track_delete` and
//! `cmap_finalize` destroy them, `cmap_dispatch` looks one up for every notification).
//! Like the handle tables (see [`MAX_HANDLES`](crate::MAX_HANDLES)), it is read without
//! a lock while it may grow, so its entries are created and destroyed under the
//! library lock and counted: at most [`MAX_TRACKS`] per process. A `cmap_track_add`
//! that fails after creating its entry (the daemon refused, or is gone) leaves the
//! entry in the table until the handle is finalized; its slot stays counted until then.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{BitOr, BitOrAssign};
use std::sync::{Arc, Mutex, MutexGuard};

use corosync_sys as sys;

use crate::error::{CsError, Error, Operation, Result};
use crate::process::HandleSlots;
use crate::service::dispatch::{borrow_c_array, deliver};
use crate::service::ServiceHandle;

use super::{ops, CmapError, CmapLibrary, CmapValue, Requests, Value, ValueType, MAX_KEY_LEN};

/// The most cmap tracks registered at once in a process, on all its cmap handles
/// together: libcmap's table of tracks must not move while other threads read it (the
/// same bound as [`MAX_HANDLES`](crate::MAX_HANDLES), for the same reason).
pub const MAX_TRACKS: usize = crate::MAX_HANDLES;

/// The process's entries in libcmap's table of tracks.
static TRACK_SLOTS: HandleSlots = HandleSlots::new();

/// Which changes a track reports (`CMAP_TRACK_*`), combined with `|`.
///
/// ```
/// use cpg::cmap::TrackType;
///
/// let t = TrackType::ADD | TrackType::DELETE;
/// assert!(t.contains(TrackType::ADD) && !t.contains(TrackType::MODIFY));
/// assert_eq!(TrackType::ALL, TrackType::ADD | TrackType::DELETE | TrackType::MODIFY);
/// assert_eq!(format!("{t:?}"), "TrackType(ADD | DELETE)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TrackType(u32);

impl TrackType {
    /// A key is created (`CMAP_TRACK_ADD`).
    pub const ADD: TrackType = TrackType(sys::CMAP_TRACK_ADD);
    /// A key is deleted (`CMAP_TRACK_DELETE`).
    pub const DELETE: TrackType = TrackType(sys::CMAP_TRACK_DELETE);
    /// A key's value (or type) changes (`CMAP_TRACK_MODIFY`).
    pub const MODIFY: TrackType = TrackType(sys::CMAP_TRACK_MODIFY);
    /// All three.
    pub const ALL: TrackType =
        TrackType(sys::CMAP_TRACK_ADD | sys::CMAP_TRACK_DELETE | sys::CMAP_TRACK_MODIFY);

    /// No type.
    pub const fn empty() -> TrackType {
        TrackType(0)
    }

    /// Whether no type is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every type of `other` is set here.
    pub const fn contains(self, other: TrackType) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw `CMAP_TRACK_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for TrackType {
    type Output = TrackType;

    fn bitor(self, other: TrackType) -> TrackType {
        TrackType(self.0 | other.0)
    }
}

impl BitOrAssign for TrackType {
    fn bitor_assign(&mut self, other: TrackType) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for TrackType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrackType(")?;
        let names = [
            (TrackType::ADD, "ADD"),
            (TrackType::DELETE, "DELETE"),
            (TrackType::MODIFY, "MODIFY"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

/// A track of one [`Cmap`](super::Cmap) handle (numbered from 1 per handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(u64);

impl TrackId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "track {}", self.0)
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// It was created ([`TrackType::ADD`]): [`Change::new`] is its value.
    Added,
    /// Its value or type changed ([`TrackType::MODIFY`]).
    Modified,
    /// It was deleted ([`TrackType::DELETE`]): [`Change::old`] was its value.
    Deleted,
    /// An event code this crate does not know.
    Unknown(i32),
}

impl ChangeKind {
    fn from_raw(event: i32) -> ChangeKind {
        match u32::try_from(event) {
            Ok(sys::CMAP_TRACK_ADD) => ChangeKind::Added,
            Ok(sys::CMAP_TRACK_MODIFY) => ChangeKind::Modified,
            Ok(sys::CMAP_TRACK_DELETE) => ChangeKind::Deleted,
            _ => ChangeKind::Unknown(event),
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeKind::Added => f.write_str("added"),
            ChangeKind::Modified => f.write_str("modified"),
            ChangeKind::Deleted => f.write_str("deleted"),
            ChangeKind::Unknown(raw) => write!(f, "event {raw}"),
        }
    }
}

/// One change of a tracked key, as an owned value: what a track's closure gets, and
/// what `AsyncCmap` yields.
///
/// On the main map, an addition has no old value and a deletion no new one; on the
/// stats map both carry the value twice (see [`Map::Stats`](super::Map::Stats)). A
/// string value that is not UTF-8 comes with U+FFFD in place of the bytes that are not
/// (a notification has no error to report instead); a value of a type this crate does
/// not know (corosync 2.4 to 3.1 has none) comes as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The track that reported it.
    pub track: TrackId,
    /// What happened.
    pub kind: ChangeKind,
    /// The key.
    pub key: String,
    /// The value before the change.
    pub old: Option<Value>,
    /// The value after the change.
    pub new: Option<Value>,
}

/// A track's closure.
pub(crate) type Callback = Box<dyn FnMut(&TrackContext<'_>, Change) + Send + 'static>;

/// One track of a handle.
struct Entry {
    /// libcmap's track handle (what `cmap_track_delete` takes).
    raw: sys::cmap_track_handle_t,
    /// The closure; `None` while it runs.
    callback: Option<Callback>,
}

/// The tracks of one handle, and how many entries of libcmap's track table the handle
/// holds.
#[derive(Default)]
pub(crate) struct TrackTable {
    last: u64,
    entries: BTreeMap<u64, Entry>,
    /// Entries of libcmap's track table that this connection holds: its tracks, and
    /// those whose `cmap_track_add` failed after libcmap made an entry.
    held: usize,
}

/// The tracks as the handle and its callback state share them.
pub(crate) type Shared = Arc<Mutex<TrackTable>>;

pub(crate) fn lock(tracks: &Mutex<TrackTable>) -> MutexGuard<'_, TrackTable> {
    // No closure runs while the lock is held, and every change under it is complete.
    tracks.lock().unwrap_or_else(|e| e.into_inner())
}

impl TrackTable {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn ids(&self) -> Vec<TrackId> {
        self.entries.keys().map(|&id| TrackId(id)).collect()
    }

    /// The connection is finalized: libcmap destroyed its entries.
    pub(crate) fn release_all(&mut self) {
        for _ in 0..std::mem::take(&mut self.held) {
            TRACK_SLOTS.release();
        }
    }
}

/// Adds a track on `core`'s connection, for keys named (or prefixed) by `name`.
pub(crate) fn add(
    core: &ServiceHandle<CmapLibrary>,
    tracks: &Shared,
    name: &CStr,
    types: TrackType,
    prefix: bool,
    callback: Callback,
) -> Result<TrackId> {
    let op = Operation::CmapTrackAdd;
    if types.is_empty() {
        return Err(Error::InvalidArgument(
            "a track needs TrackType::ADD, DELETE or MODIFY",
        ));
    }
    core.usable(op)?;
    TRACK_SLOTS
        .reserve()
        .ok_or(CmapError::TooManyTracks { max: MAX_TRACKS })?;
    let id = {
        let mut table = lock(tracks);
        table.held += 1;
        table.last += 1;
        let id = table.last;
        table.entries.insert(
            id,
            Entry {
                raw: 0,
                callback: Some(callback),
            },
        );
        id
    };
    let flags = types.bits() | if prefix { sys::CMAP_TRACK_PREFIX } else { 0 };
    let mut raw_track: sys::cmap_track_handle_t = 0;
    let result = {
        // It creates an entry in libcmap's track table.
        let _serialized = crate::process::library_lock();
        core.call(op, |raw| {
            // SAFETY: the handle is live; `name` is a checked, NUL-terminated key or
            // prefix of at most 255 bytes; the trampoline fits cmap_notify_fn_t and
            // lives for the program; `user_data` is a number, never dereferenced;
            // `raw_track` is a valid out pointer. The library lock is held.
            unsafe {
                sys::cmap_track_add(
                    raw,
                    name.as_ptr(),
                    flags as i32,
                    Some(notify_trampoline),
                    id as usize as *mut c_void,
                    &mut raw_track,
                )
            }
        })
    };
    match result {
        Ok(()) => {
            if let Some(entry) = lock(tracks).entries.get_mut(&id) {
                entry.raw = raw_track;
            }
            Ok(TrackId(id))
        }
        Err(e) => {
            // The slot stays held (libcmap may keep its entry until finalize); the
            // closure goes, after the lock is released.
            let removed = lock(tracks).entries.remove(&id);
            drop(removed);
            Err(e)
        }
    }
}

/// Deletes track `id` of the handle whose tracks are `tracks`, through `r`.
pub(crate) fn delete(r: &impl Requests, tracks: &Mutex<TrackTable>, id: TrackId) -> Result<()> {
    let op = Operation::CmapTrackDelete;
    let raw_track = lock(tracks)
        .entries
        .get(&id.0)
        .map(|e| e.raw)
        .ok_or(Error::Cs {
            op,
            code: CsError::NotExist,
        })?;
    {
        // It destroys an entry in libcmap's track table.
        let _serialized = crate::process::library_lock();
        r.request(op, &mut |raw| {
            // SAFETY: the handle is live; `raw_track` is one of its tracks (the table
            // holds only tracks whose add succeeded and that were not deleted). The
            // library lock is held.
            unsafe { sys::cmap_track_delete(raw, raw_track) }
        })?;
    }
    let removed = {
        let mut table = lock(tracks);
        table.held -= 1;
        TRACK_SLOTS.release();
        table.entries.remove(&id.0)
    };
    // The closure ends here, outside the lock (or, if it is the one running, after it
    // returns: its entry is gone, so it is not put back).
    drop(removed);
    Ok(())
}

/// What a track's closure gets besides the change: the same map, to read and write
/// keys and to delete tracks of the handle (its own too), from inside the dispatch.
/// It cannot dispatch, close the handle or add tracks.
///
/// It is not `Sync`: its requests go over the handle's one connection, which takes one
/// request at a time (libqb), so it cannot be lent to another thread meanwhile:
///
/// ```compile_fail
/// # fn f(cmap: &cpg::cmap::Cmap) -> cpg::Result<()> {
/// cmap.track_key("a.key", cpg::cmap::TrackType::ALL, |ctx, _| {
///     std::thread::scope(|s| {
///         s.spawn(|| ctx.set("b.key", 1u8)); // &TrackContext is not Send
///     });
/// })?;
/// # Ok(())
/// # }
/// ```
pub struct TrackContext<'a> {
    raw: sys::cmap_handle_t,
    tracks: &'a Mutex<TrackTable>,
    /// One thread at a time: see above.
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for TrackContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackContext")
            .field("raw", &format_args!("{:#x}", self.raw))
            .finish_non_exhaustive()
    }
}

impl Requests for TrackContext<'_> {
    fn request(&self, op: Operation, f: &mut dyn FnMut(u64) -> sys::cs_error_t) -> Result<()> {
        // Inside the handle's own dispatch, which checked it: the handle is live.
        Error::check(op, f(self.raw))
    }
}

impl TrackContext<'_> {
    /// [`Cmap::get`](super::Cmap::get).
    pub fn get<T: CmapValue>(&self, key: &str) -> Result<T> {
        ops::get(self, key)
    }

    /// [`Cmap::get_value`](super::Cmap::get_value).
    pub fn get_value(&self, key: &str) -> Result<Value> {
        ops::get_value(self, key, None)
    }

    /// [`Cmap::set`](super::Cmap::set). A change made here is notified like any
    /// other, after this closure returns.
    pub fn set(&self, key: &str, value: impl Into<Value>) -> Result<()> {
        ops::set(self, key, &value.into())
    }

    /// [`Cmap::delete`](super::Cmap::delete).
    pub fn delete(&self, key: &str) -> Result<()> {
        ops::adjust(self, Operation::CmapDelete, key)
    }

    /// [`Cmap::delete_track`](super::Cmap::delete_track): deleting the track whose
    /// closure runs ends it once it returns; deleting another drops that one's closure
    /// at once.
    pub fn delete_track(&self, track: TrackId) -> Result<()> {
        delete(self, self.tracks, track)
    }
}

/// A value as a notification carries it: `None` when absent (type 0).
fn notified(key: &str, value: &sys::cmap_notify_value) -> Option<Value> {
    if value.type_ == 0 {
        return None;
    }
    // SAFETY: libcmap points `data` at `len` bytes of the notification in its dispatch
    // buffer, valid for this callback; they are copied before it returns.
    let bytes = unsafe { borrow_c_array(value.data.cast::<u8>(), value.len) };
    match Value::decode(key, value.type_, bytes) {
        Ok(v) => Some(v),
        Err(_) if ValueType::from_raw(value.type_) == Some(ValueType::String) => {
            let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
            Some(Value::Str(String::from_utf8_lossy(text).into_owned()))
        }
        Err(_) => None,
    }
}

/// The key of a notification. libcmap points `key_name` at the name field of the
/// notification (`CS_MAX_NAME_LENGTH`, 256 bytes, zero-filled after the name), so the
/// scan for its NUL stops within 256 bytes.
///
/// # Safety
/// `key_name` points to at least `MAX_KEY_LEN + 1` readable bytes.
unsafe fn notified_key(key_name: *const c_char) -> String {
    if key_name.is_null() {
        return String::new();
    }
    // SAFETY: per the contract.
    let field = unsafe { std::slice::from_raw_parts(key_name.cast::<u8>(), MAX_KEY_LEN + 1) };
    let name = field.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

/// Runs the closure of track `id` with `change`, taking it out of the table while it
/// runs.
fn run(raw: sys::cmap_handle_t, tracks: &Shared, id: u64, change: Change) {
    let taken = lock(tracks)
        .entries
        .get_mut(&id)
        .and_then(|entry| entry.callback.take());
    // A track deleted meanwhile: libcmap drops such notifications itself; nothing runs.
    let Some(mut callback) = taken else {
        return;
    };
    let context = TrackContext {
        raw,
        tracks,
        _not_sync: PhantomData,
    };
    callback(&context, change);
    let ended = match lock(tracks).entries.get_mut(&id) {
        Some(entry) => {
            entry.callback = Some(callback);
            None
        }
        // The closure deleted its own track.
        None => Some(callback),
    };
    drop(ended);
}

/// The `cmap_notify_fn_t` of every track.
extern "C" fn notify_trampoline(
    cmap_handle: sys::cmap_handle_t,
    _track_handle: sys::cmap_track_handle_t,
    event: i32,
    key_name: *const c_char,
    new_value: sys::cmap_notify_value,
    old_value: sys::cmap_notify_value,
    user_data: *mut c_void,
) {
    // SAFETY: libcmap passes the name field of the notification (256 bytes).
    let key = unsafe { notified_key(key_name) };
    let new = notified(&key, &new_value);
    let old = notified(&key, &old_value);
    let id = user_data as usize as u64;
    let change = Change {
        track: TrackId(id),
        kind: ChangeKind::from_raw(event),
        key,
        old,
        new,
    };
    // SAFETY: libcmap calls this trampoline only from inside cmap_dispatch on
    // `cmap_handle`, whose callback state is a `Shared` (every Cmap connects so).
    unsafe {
        deliver::<CmapLibrary, Shared>(cmap_handle, |tracks| run(cmap_handle, tracks, id, change))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_types_have_the_c_values_and_combine() {
        assert_eq!(TrackType::DELETE.bits(), 1);
        assert_eq!(TrackType::MODIFY.bits(), 2);
        assert_eq!(TrackType::ADD.bits(), 4);
        assert_eq!(TrackType::ALL.bits(), 7);
        let mut t = TrackType::default();
        assert!(t.is_empty());
        t |= TrackType::MODIFY;
        assert_eq!(format!("{t:?}"), "TrackType(MODIFY)");
        assert_eq!(format!("{:?}", TrackType::empty()), "TrackType(empty)");
        assert_eq!(
            format!("{:?}", TrackType::ALL),
            "TrackType(ADD | DELETE | MODIFY)"
        );
    }

    #[test]
    fn events_map_to_kinds() {
        assert_eq!(ChangeKind::from_raw(4), ChangeKind::Added);
        assert_eq!(ChangeKind::from_raw(2), ChangeKind::Modified);
        assert_eq!(ChangeKind::from_raw(1), ChangeKind::Deleted);
        assert_eq!(ChangeKind::from_raw(-3), ChangeKind::Unknown(-3));
        assert_eq!(ChangeKind::Deleted.to_string(), "deleted");
        assert_eq!(TrackId(3).to_string(), "track 3");
    }

    #[test]
    fn notified_values_are_absent_typed_or_lossy_strings() {
        let absent = sys::cmap_notify_value {
            type_: 0,
            len: 0,
            data: std::ptr::null(),
        };
        assert_eq!(notified("k.k", &absent), None);
        let n = 7u32.to_ne_bytes();
        let num = sys::cmap_notify_value {
            type_: sys::CMAP_VALUETYPE_UINT32,
            len: 4,
            data: n.as_ptr().cast(),
        };
        assert_eq!(notified("k.k", &num), Some(Value::U32(7)));
        let bad = b"a\xffb\0";
        let text = sys::cmap_notify_value {
            type_: sys::CMAP_VALUETYPE_STRING,
            len: bad.len(),
            data: bad.as_ptr().cast(),
        };
        assert_eq!(
            notified("k.k", &text),
            Some(Value::Str("a\u{fffd}b".into()))
        );
        let unknown = sys::cmap_notify_value {
            type_: 99,
            len: 0,
            data: std::ptr::null(),
        };
        assert_eq!(notified("k.k", &unknown), None);
    }

    #[test]
    fn a_notified_key_stops_at_its_nul_within_the_field() {
        let mut field = [0u8; MAX_KEY_LEN + 1];
        field[..9].copy_from_slice(b"nodelist.");
        // SAFETY: `field` has MAX_KEY_LEN + 1 bytes.
        assert_eq!(unsafe { notified_key(field.as_ptr().cast()) }, "nodelist.");
        let full = [b'k'; MAX_KEY_LEN + 1];
        // SAFETY: as above; no NUL at all: the scan ends with the field.
        assert_eq!(unsafe { notified_key(full.as_ptr().cast()) }.len(), 256);
        // SAFETY: NULL is handled before any read.
        assert_eq!(unsafe { notified_key(std::ptr::null()) }, "");
    }
}
