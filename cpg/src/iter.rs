//! Group iteration: the groups that exist in the cluster and their members, as the
//! local daemon knows them (`cpg_iteration_*`).
//!
//! ```no_run
//! # let handle = cpg::Handle::builder().build()?;
//! for group in handle.groups()? {
//!     let group = group?;
//!     for member in handle.iter_members(&group)? {
//!         println!("{group}: {}", member?);
//!     }
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! The daemon takes a snapshot when an iterator is created; later joins and leaves do
//! not show in it. Each item costs a round trip to the daemon.

use std::fmt;
use std::iter::FusedIterator;

use corosync_sys as sys;

use crate::connection::ConnectionRef;
use crate::error::{CsError, Error, Operation, Result};
use crate::name::GroupName;
use crate::types::Member;

/// A process in a group, as reported by [`ConnectionRef::iter_all`]: the group, the node
/// and the process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupMember {
    /// The group the process joined.
    pub group: GroupName,
    /// Corosync node id of the process's node.
    pub nodeid: u32,
    /// Process id on that node.
    pub pid: u32,
}

impl GroupMember {
    /// The process, without the group.
    pub fn member(&self) -> Member {
        Member {
            nodeid: self.nodeid,
            pid: self.pid,
        }
    }
}

impl fmt::Display for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: node {} pid {}", self.group, self.nodeid, self.pid)
    }
}

impl ConnectionRef {
    /// Iterates over the names of all groups that have members anywhere in the cluster,
    /// each once (`CPG_ITERATION_NAME_ONLY`).
    pub fn groups(&self) -> Result<Groups<'_>> {
        Ok(Groups {
            raw: RawIteration::start(self, sys::CPG_ITERATION_NAME_ONLY, None)?,
        })
    }

    /// Iterates over the members of `group` (`CPG_ITERATION_ONE_GROUP`). A group
    /// without members yields nothing.
    ///
    /// [`members`](Self::members) returns the same as a `Vec` in one round trip.
    pub fn iter_members(&self, group: &GroupName) -> Result<GroupMembers<'_>> {
        Ok(GroupMembers {
            raw: RawIteration::start(self, sys::CPG_ITERATION_ONE_GROUP, Some(group))?,
        })
    }

    /// Iterates over every process of every group in the cluster, grouped by group
    /// (`CPG_ITERATION_ALL`).
    pub fn iter_all(&self) -> Result<AllMembers<'_>> {
        Ok(AllMembers {
            raw: RawIteration::start(self, sys::CPG_ITERATION_ALL, None)?,
        })
    }
}

/// One libcpg iteration handle, finalized exactly once: on drop or by `close`.
///
/// Borrows the connection: `cpg_finalize` destroys the iteration handles of a
/// connection, so an iteration must not outlive it. Like the connection, it stays on
/// its thread (the `&ConnectionRef` marker is neither `Send` nor `Sync`).
struct RawIteration<'a> {
    handle: sys::cpg_iteration_handle_t,
    /// The end or an error was reached: `next` yields nothing more.
    done: bool,
    conn: &'a ConnectionRef,
}

impl<'a> RawIteration<'a> {
    fn start(
        conn: &'a ConnectionRef,
        kind: sys::cpg_iteration_type_t,
        group: Option<&GroupName>,
    ) -> Result<RawIteration<'a>> {
        // libcpg wants a group exactly for ONE_GROUP and NULL otherwise (the callers
        // above pair them correctly).
        let group_ptr = group.map_or(std::ptr::null(), |g| g.as_raw() as *const sys::cpg_name);
        let mut handle: sys::cpg_iteration_handle_t = 0;
        let rc = {
            let _request = conn.link().request(Operation::IterationInitialize)?;
            // It creates a handle-table entry: see `process`.
            let _serialized = crate::process::library_lock();
            // SAFETY: the connection is live while borrowed; the group name (if any) is
            // a valid cpg_name of at most CPG_MAX_NAME_LENGTH bytes that libcpg only
            // reads; `handle` is a valid out pointer; it is the only request in flight
            // (the request guard) and the handle-table lock is held.
            unsafe { sys::cpg_iteration_initialize(conn.as_raw(), kind, group_ptr, &mut handle) }
        };
        // On failure there is nothing to finalize: libcpg destroys its record itself
        // when the daemon cannot be reached, and when the daemon reports the error
        // (out of memory) it kept no state; libcpg's own leftover record is freed by
        // cpg_finalize. Finalizing a destroyed handle could hit a record another
        // thread reuses.
        conn.link().check(Operation::IterationInitialize, rc)?;
        Ok(RawIteration {
            handle,
            done: false,
            conn,
        })
    }

    fn next_raw(&mut self) -> Option<Result<sys::cpg_iteration_description_t>> {
        if self.done {
            return None;
        }
        let mut description = sys::cpg_iteration_description_t::default();
        let rc = {
            let _request = match self.conn.link().request(Operation::IterationNext) {
                Ok(request) => request,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // It looks up the iteration table that other threads' iterations change
            // under this lock: take it too (iteration is not a hot path).
            let _serialized = crate::process::library_lock();
            // SAFETY: the iteration handle is live (finalized only by Drop or `close`,
            // both of which end the borrow), and so is its connection (borrowed for
            // 'a); `description` is a valid out pointer; it is the only request in
            // flight (the request guard) and the handle-table lock is held.
            unsafe { sys::cpg_iteration_next(self.handle, &mut description) }
        };
        match self.conn.link().check(Operation::IterationNext, rc) {
            Ok(()) => Some(Ok(description)),
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
        let link = self.conn.link();
        if link.forked() {
            // The iteration belongs to the parent's connection.
            return Err(Error::Forked);
        }
        // No other request beside it, even on a lost connection (the handle cannot
        // be finalized while the iteration borrows it).
        let _request = link.exclusive();
        // It destroys a handle-table entry: see `process`.
        let _serialized = crate::process::library_lock();
        // SAFETY: the handle came from a successful cpg_iteration_initialize on a
        // connection that is still live, and this runs once per iteration (from `close`,
        // which suppresses Drop, or from Drop); it is the only request in flight (the
        // request guard) and the handle-table lock is held.
        let rc = unsafe { sys::cpg_iteration_finalize(self.handle) };
        link.check(Operation::IterationFinalize, rc)
    }
}

impl Drop for RawIteration<'_> {
    fn drop(&mut self) {
        let _ = self.finalize();
    }
}

impl fmt::Debug for RawIteration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iteration")
            .field("handle", &self.handle)
            .field("done", &self.done)
            .finish()
    }
}

fn name_of(description: &sys::cpg_iteration_description_t) -> GroupName {
    *GroupName::from_raw_ref(&description.group)
}

macro_rules! iteration_type {
    ($(#[$doc:meta])* $name:ident, $item:ty, $map:expr) => {
        $(#[$doc])*
        ///
        /// An error from libcpg is yielded once, then the iterator ends. The iteration
        /// is finalized (`cpg_iteration_finalize`) exactly once: when the iterator is
        /// dropped, finished or not, or by [`close`](Self::close). It borrows the
        /// connection, which cannot be closed meanwhile.
        #[derive(Debug)]
        #[must_use = "iterators are lazy and do nothing unless consumed"]
        pub struct $name<'a> {
            raw: RawIteration<'a>,
        }

        impl $name<'_> {
            /// Finalizes the iteration now, reporting a failure of
            /// `cpg_iteration_finalize` that dropping the iterator would ignore.
            pub fn close(self) -> Result<()> {
                self.raw.close()
            }
        }

        impl Iterator for $name<'_> {
            type Item = Result<$item>;

            fn next(&mut self) -> Option<Result<$item>> {
                let map: fn(&sys::cpg_iteration_description_t) -> $item = $map;
                self.raw.next_raw().map(|r| r.map(|d| map(&d)))
            }
        }

        impl FusedIterator for $name<'_> {}
    };
}

iteration_type!(
    /// The names of all groups in the cluster, from [`ConnectionRef::groups`].
    Groups,
    GroupName,
    name_of
);

iteration_type!(
    /// The members of one group, from [`ConnectionRef::iter_members`].
    GroupMembers,
    Member,
    |d| Member {
        nodeid: d.nodeid,
        pid: d.pid,
    }
);

iteration_type!(
    /// Every process of every group, from [`ConnectionRef::iter_all`].
    AllMembers,
    GroupMember,
    |d| GroupMember {
        group: name_of(d),
        nodeid: d.nodeid,
        pid: d.pid,
    }
);
