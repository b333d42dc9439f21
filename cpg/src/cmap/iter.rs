//! Prefix iteration: [`Iter`] (keys with their values) and [`Keys`] (keys with their
//! types and lengths), over one daemon-side iteration (`cmap_iter_*`) each.
//!
//! The daemon keeps the iteration (libcmap only carries its handle, so no table of
//! this process changes), walks its map in key order at each `cmap_iter_next`, and
//! frees it at `cmap_iter_finalize` or when the connection closes. An iterator here
//! borrows its [`Cmap`]: it cannot outlive the connection its iteration belongs to,
//! and it is finalized exactly once, when dropped (finished or not) or by `close`.

use std::ffi::c_char;
use std::fmt;
use std::iter::FusedIterator;

use corosync_sys as sys;

use crate::error::{CsError, Error, Operation, Result};

use super::{ops, prefix_cstring, Cmap, CmapError, Value, ValueType, MAX_KEY_LEN};

/// A key as an iteration reports it, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// The type of its value.
    pub value_type: ValueType,
    /// The length of its value in bytes, as the daemon reports it (a string's counts
    /// its NUL; the stats map reports 0 for strings).
    pub len: usize,
}

/// One daemon-side iteration, finalized exactly once (on drop or by `close`).
struct RawIter<'a> {
    cmap: &'a Cmap,
    handle: sys::cmap_iter_handle_t,
    /// The end or an error was reached: nothing more is read.
    done: bool,
}

impl<'a> RawIter<'a> {
    fn start(cmap: &'a Cmap, prefix: &str) -> Result<RawIter<'a>> {
        let name = prefix_cstring(prefix)?;
        let mut handle: sys::cmap_iter_handle_t = 0;
        cmap.core().call(Operation::CmapIterInit, |raw| {
            // SAFETY: the handle is live; `name` is a checked, NUL-terminated prefix of
            // at most 255 bytes (an empty one has length 0, which the daemon takes as
            // every key); `handle` is a valid out pointer.
            unsafe { sys::cmap_iter_init(raw, name.as_ptr(), &mut handle) }
        })?;
        Ok(RawIter {
            cmap,
            handle,
            done: false,
        })
    }

    fn next_key(&mut self) -> Option<Result<KeyInfo>> {
        if self.done {
            return None;
        }
        // libcmap copies at most CMAP_KEYNAME_MAXLEN bytes with strncpy, which leaves
        // the last byte of this zeroed buffer as the terminator.
        let mut name = [0 as c_char; MAX_KEY_LEN + 1];
        let mut len = 0usize;
        let mut raw_type: sys::cmap_value_types_t = 0;
        let handle = self.handle;
        let result = self.cmap.core().call(Operation::CmapIterNext, |raw| {
            // SAFETY: the handle is live (borrowed for 'a) and `handle` is one of its
            // iterations, not finalized (that takes `self` by value or in Drop);
            // `name` has MAX_KEY_LEN + 1 writable bytes; `len` and `raw_type` are
            // valid out pointers.
            unsafe { sys::cmap_iter_next(raw, handle, name.as_mut_ptr(), &mut len, &mut raw_type) }
        });
        match result {
            Ok(()) => {
                let bytes: Vec<u8> = name
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                let key = String::from_utf8_lossy(&bytes).into_owned();
                Some(match ValueType::from_raw(raw_type) {
                    Some(value_type) => Ok(KeyInfo {
                        key,
                        value_type,
                        len,
                    }),
                    None => {
                        self.done = true;
                        Err(Error::Cmap(CmapError::Malformed {
                            key: key.into(),
                            value_type: raw_type,
                            len,
                            reason: "unknown type",
                        }))
                    }
                })
            }
            Err(Error::Cs {
                code: CsError::NoSections,
                ..
            }) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn close(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        this.finalize()
    }

    fn finalize(&self) -> Result<()> {
        let handle = self.handle;
        // Refused without a round trip on a handle from before a fork (the iteration
        // is the parent's), a lost daemon or a poisoned handle: the daemon frees the
        // iteration with the connection.
        self.cmap.core().call(Operation::CmapIterFinalize, |raw| {
            // SAFETY: the handle is live (borrowed) and `handle` is its iteration,
            // finalized once (from `close`, which suppresses Drop, or from Drop).
            unsafe { sys::cmap_iter_finalize(raw, handle) }
        })
    }
}

impl Drop for RawIter<'_> {
    fn drop(&mut self) {
        let _ = self.finalize();
    }
}

impl fmt::Debug for RawIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iteration")
            .field("handle", &format_args!("{:#x}", self.handle))
            .field("done", &self.done)
            .finish()
    }
}

/// The keys under a prefix with their values, from [`Cmap::iter`]: `(key, value)` in
/// key order, what `corosync-cmapctl PREFIX` prints.
///
/// Each item is two round trips to the daemon (the next key, then its value). A key
/// deleted between the two is skipped; a value changed in between is read as it is
/// then. An error is yielded once, then the iterator ends. The daemon's iteration is
/// finalized exactly once: when the iterator is dropped, finished or not, or by
/// [`close`](Self::close). It borrows the handle, which cannot be closed meanwhile.
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Iter<'a> {
    raw: RawIter<'a>,
}

impl<'a> Iter<'a> {
    pub(crate) fn start(cmap: &'a Cmap, prefix: &str) -> Result<Iter<'a>> {
        Ok(Iter {
            raw: RawIter::start(cmap, prefix)?,
        })
    }

    /// Finalizes the iteration now, reporting a failure of `cmap_iter_finalize` that
    /// dropping the iterator would ignore.
    pub fn close(self) -> Result<()> {
        self.raw.close()
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<(String, Value)>;

    fn next(&mut self) -> Option<Result<(String, Value)>> {
        loop {
            let info = match self.raw.next_key()? {
                Ok(info) => info,
                Err(e) => return Some(Err(e)),
            };
            match ops::get_value(self.raw.cmap.core(), &info.key, None) {
                Ok(value) => return Some(Ok((info.key, value))),
                // Deleted since the iteration listed it.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    self.raw.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl FusedIterator for Iter<'_> {}

/// The keys under a prefix with their types and lengths, from [`Cmap::keys`]: one
/// round trip per key. Ends, errors and finalizes like [`Iter`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Keys<'a> {
    raw: RawIter<'a>,
}

impl<'a> Keys<'a> {
    pub(crate) fn start(cmap: &'a Cmap, prefix: &str) -> Result<Keys<'a>> {
        Ok(Keys {
            raw: RawIter::start(cmap, prefix)?,
        })
    }

    /// Finalizes the iteration now, reporting a failure of `cmap_iter_finalize`.
    pub fn close(self) -> Result<()> {
        self.raw.close()
    }
}

impl Iterator for Keys<'_> {
    type Item = Result<KeyInfo>;

    fn next(&mut self) -> Option<Result<KeyInfo>> {
        self.raw.next_key()
    }
}

impl FusedIterator for Keys<'_> {}
