//! [`Lock`]: the mutex behind the group and replica layers' client calls, which
//! refuses re-entry from the thread that holds it.
//!
//! Some user code runs while such a lock is held: the closures given to
//! `wait_view`, `wait_ready` and `read`, and the application's
//! [`Replicated`](crate::replica::Replicated) methods. Calling a method of the same
//! group or replica from there would take the lock again on the same thread, which a
//! standard mutex answers with a deadlock. [`Lock::lock`] notices and panics with a
//! message that says what happened instead.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A mutex that remembers which thread holds it (see the module docs). Poison is
/// ignored: the layers keep their state consistent between calls.
#[derive(Debug, Default)]
pub(crate) struct Lock<T> {
    mutex: Mutex<T>,
    /// The [`token`] of the thread holding the mutex, 0 when none does.
    owner: AtomicUsize,
}

/// An address unique to the calling thread among the threads alive (a thread-local's),
/// never 0.
fn token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| t as *const u8 as usize)
}

impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Lock<T> {
        Lock {
            mutex: Mutex::new(value),
            owner: AtomicUsize::new(0),
        }
    }

    /// Takes the lock. Panics if this thread holds it already: a method of a group or
    /// replica was called from code that runs under its lock.
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let me = token();
        // Only this thread stores its own token (and clears it before unlocking), so a
        // stale value from another thread can never compare equal.
        if self.owner.load(Ordering::Relaxed) == me {
            panic!(
                "re-entrant call into a cpg group or replica: one of its methods was called \
                 from code that runs under its lock (a closure given to wait_view, \
                 wait_ready or read, or the Replicated application's methods), which \
                 would deadlock; call it after that code has returned"
            );
        }
        let guard = self.mutex.lock().unwrap_or_else(|p| p.into_inner());
        self.owner.store(me, Ordering::Relaxed);
        Guard {
            guard: Some(guard),
            owner: &self.owner,
        }
    }
}

/// The lock, held; derefs to the value.
pub(crate) struct Guard<'a, T> {
    /// Always `Some` outside [`Guard::wait_timeout`].
    guard: Option<MutexGuard<'a, T>>,
    owner: &'a AtomicUsize,
}

impl<'a, T> Guard<'a, T> {
    /// Releases the lock while waiting on `changed` for up to `timeout`, and takes it
    /// again.
    pub(crate) fn wait_timeout(mut self, changed: &Condvar, timeout: Duration) -> Self {
        let owner = self.owner;
        let guard = self.guard.take().expect("a guard holds its lock");
        // No owner while the wait releases the mutex (the emptied guard's `Drop`
        // leaves the owner alone).
        owner.store(0, Ordering::Relaxed);
        drop(self);
        let guard = changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        owner.store(token(), Ordering::Relaxed);
        Guard {
            guard: Some(guard),
            owner,
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_deref().expect("a guard holds its lock")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("a guard holds its lock")
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Before the mutex is released (the field is dropped after this).
        if self.guard.is_some() {
            self.owner.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_entry_panics_and_other_threads_wait() {
        let lock = std::sync::Arc::new(Lock::new(1));
        {
            let g = lock.lock();
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = lock.lock();
            }));
            assert!(again.is_err());
            assert_eq!(*g, 1);
        }
        // Released: taken again, also on another thread.
        *lock.lock() += 1;
        let other = std::sync::Arc::clone(&lock);
        assert_eq!(std::thread::spawn(move || *other.lock()).join().unwrap(), 2);
        // Waiting releases it for the others and takes it back.
        let cv = Condvar::new();
        let g = lock.lock().wait_timeout(&cv, Duration::from_millis(1));
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lock.lock();
        }));
        assert!(again.is_err());
        drop(g);
        assert_eq!(*lock.lock(), 2);
    }
}
