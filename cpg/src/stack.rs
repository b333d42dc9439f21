//! Stack room for calls into libcpg: how much the current thread has left, checked
//! before every call whose C frames could jump over the guard page.
//!
//! libcpg and libqb are compiled without stack probes. `cpg_dispatch` puts its 1 MiB
//! receive buffer on the stack (a 1,053,016-byte frame in corosync 3.1.7), and a few
//! other calls have frames of 4 to 13 KiB (`cpg_membership_get`, `cpg_zcb_alloc`,
//! libqb's connect and close). A frame larger than the guard page below a thread's
//! stack does not fault on the guard: on a thread with too little stack left it writes
//! into whatever memory lies below, typically another thread's stack. So before such a
//! call this module compares the room left on the current thread's stack with what
//! the call needs, and the call fails with [`Error::StackTooSmall`] instead.
//!
//! The other services' dispatch calls are the same kind (corosync 3.1.7:
//! `quorum_dispatch`, `votequorum_dispatch`, `cmap_dispatch` and `corosync_cfg_dispatch`
//! reserve 1,048,608 to 1,048,696 bytes of stack, and `corosync_cfg_get_node_addrs`
//! 1,048,808: a 1 MiB buffer each), so [`DISPATCH_STACK`] covers them too.
//!
//! The bounds of the thread's stack come from `pthread_getattr_np`, once per thread
//! (cached in a thread-local); a check is then one subtraction. If the bounds cannot
//! be read, the needed room is touched page by page from Rust ([`probe`]), whose
//! stack probes turn a too-small stack into Rust's clean stack-overflow abort rather
//! than silent corruption.

use std::cell::Cell;

use crate::error::{Error, Operation, Result};

/// The stack a thread needs left, at the call, to dispatch: the frame of
/// `cpg_dispatch` (1,053,016 bytes in corosync 3.1.7, almost all of it the 1 MiB
/// receive buffer) plus 64 KiB for the libqb functions it calls and the trampolines.
///
/// Dispatching on a thread with less room left fails with [`Error::StackTooSmall`].
/// Threads that dispatch (or poll an `AsyncHandle`, feature `tokio`) therefore
/// need a stack of this plus whatever their own frames above the call use:
/// `std::thread::Builder::stack_size(4 << 20)` is comfortable; the main thread (8 MiB)
/// and tokio's default workers (2 MiB) have enough.
pub const DISPATCH_STACK: usize = (1 << 20) + (64 << 10);

/// The stack a thread needs left for the other calls whose frames exceed a page
/// (membership, zero-copy allocation, connect, finalize): 64 KiB.
pub(crate) const CALL_STACK: usize = 64 << 10;

/// The bounds of the current thread's stack, as read by `pthread_getattr_np`.
#[derive(Clone, Copy)]
enum Bounds {
    /// Not read yet on this thread.
    Unknown,
    /// The lowest usable address (above the guard page) and the end of the stack.
    Known { low: usize, high: usize },
    /// The bounds cannot be read on this thread: probe instead.
    Unreadable,
}

thread_local! {
    static BOUNDS: Cell<Bounds> = const { Cell::new(Bounds::Unknown) };
}

/// Reads the bounds of the calling thread's stack.
fn read_bounds() -> Option<(usize, usize)> {
    // SAFETY: `pthread_attr_t` is plain data that `pthread_getattr_np` initializes;
    // a zeroed value is only a placeholder until then.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pthread_self()` is the calling thread, alive for the call; `attr` is a
    // valid out pointer.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialized by `pthread_getattr_np` just above; both out
    // pointers are valid.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialized by `pthread_getattr_np` and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    (rc == 0 && !addr.is_null() && size > 0).then(|| (addr as usize, addr as usize + size))
}

/// How much stack the caller has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// Bytes left below the caller on the thread's own stack.
    Left(usize),
    /// The caller runs on a stack segment that is not the thread's own (one made by a
    /// crate such as `stacker`, or a coroutine's): its room cannot be known.
    Elsewhere,
    /// The thread's bounds cannot be read.
    Unknown,
}

/// The stack left below the caller's frame on the current thread.
#[inline]
pub(crate) fn room() -> Room {
    let here = {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    };
    let bounds = match BOUNDS.try_with(Cell::get) {
        Ok(Bounds::Unknown) | Err(_) => {
            let bounds = read_bounds().map_or(Bounds::Unreadable, |(low, high)| Bounds::Known {
                low,
                high,
            });
            let _ = BOUNDS.try_with(|b| b.set(bounds));
            bounds
        }
        Ok(bounds) => bounds,
    };
    match bounds {
        Bounds::Known { low, high } if (low..high).contains(&here) => Room::Left(here - low),
        Bounds::Known { .. } => Room::Elsewhere,
        Bounds::Unknown | Bounds::Unreadable => Room::Unknown,
    }
}

/// The stack left below the caller, counting a foreign segment as none.
#[inline]
pub(crate) fn remaining() -> Option<usize> {
    match room() {
        Room::Left(n) => Some(n),
        Room::Elsewhere => Some(0),
        Room::Unknown => None,
    }
}

/// Fails with [`Error::StackTooSmall`] unless the current thread has `needed` bytes of
/// stack left for `op`. On a stack segment that is not the thread's own, whose room
/// cannot be known, it fails too (with `available: 0`).
#[inline]
pub(crate) fn ensure(op: Operation, needed: usize) -> Result<()> {
    match remaining() {
        Some(available) if available >= needed => Ok(()),
        Some(available) => Err(Error::StackTooSmall {
            op,
            needed,
            available,
        }),
        None => {
            probe(needed);
            Ok(())
        }
    }
}

/// Touches `needed` bytes of stack below the caller from Rust code, whose stack probes
/// fault on the guard page: on a too-small stack the process ends with Rust's
/// "stack overflow" message instead of a C frame writing past the guard.
#[inline(never)]
fn probe(needed: usize) {
    const PAGE: usize = 4096;
    fn touch<const N: usize>() {
        let mut page = [0u8; N];
        std::hint::black_box(&mut page);
    }
    // Recursion one page at a time: each frame is probed by the compiler.
    fn down(left: usize) {
        touch::<PAGE>();
        if left > PAGE {
            down(left - PAGE);
        }
        std::hint::black_box(());
    }
    down(needed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_thread<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn remaining_is_close_to_the_thread_stack_size() {
        // glibc may hand a new thread a cached stack larger than requested (up to 4x),
        // so compare with the size the thread really got.
        let (left, size) = on_thread(512 << 10, || {
            // SAFETY: plain data, initialized by pthread_getattr_np below.
            let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            // SAFETY: as in `read_low`.
            unsafe {
                assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
                assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
                libc::pthread_attr_destroy(&mut attr);
            }
            (remaining().unwrap(), size)
        });
        assert!(size >= 512 << 10, "{size}");
        // The thread's own frames and TLS take a few KiB; the guard is excluded.
        assert!(left <= size, "{left} {size}");
        assert!(left > size - (64 << 10), "{left} {size}");
    }

    #[test]
    fn a_small_stack_is_refused_with_both_figures() {
        let err = on_thread(128 << 10, || ensure(Operation::Dispatch, DISPATCH_STACK)).unwrap_err();
        match err {
            Error::StackTooSmall {
                op,
                needed,
                available,
            } => {
                assert_eq!(op, Operation::Dispatch);
                assert_eq!(needed, DISPATCH_STACK);
                assert!(available < 128 << 10, "{available}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_large_enough_stack_passes() {
        on_thread(DISPATCH_STACK + (128 << 10), || {
            ensure(Operation::Dispatch, DISPATCH_STACK)
        })
        .unwrap();
    }

    #[test]
    fn remaining_shrinks_with_depth() {
        fn deeper(n: usize) -> usize {
            let pad = [0u8; 8192];
            std::hint::black_box(&pad);
            if n == 0 {
                remaining().unwrap()
            } else {
                deeper(n - 1)
            }
        }
        on_thread(1 << 20, || {
            let top = remaining().unwrap();
            let deep = deeper(8);
            assert!(top - deep >= 8 * 8192, "{top} {deep}");
        });
    }

    #[test]
    fn probing_room_that_exists_returns() {
        on_thread(256 << 10, || probe(128 << 10));
    }
}
