//! What one member observed, in the order it happened: a [`Log`] shared between the
//! member's recorder (its callbacks, or a thread reading its events) and the test,
//! which waits on it with bounded waits that fail with the member's recent history.

use std::fmt::Debug;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An event a [`Log`] can hold.
pub trait Observed: Clone + Debug + Send + 'static {
    /// Whether this is a delivered message (or the confirmation of one). A timed-out
    /// wait prints the latest events that are not: the membership history.
    fn is_message(&self) -> bool;
}

/// The events one member observed, in order.
pub struct Log<E> {
    name: Arc<str>,
    inner: Arc<(Mutex<Vec<E>>, Condvar)>,
}

impl<E> Clone for Log<E> {
    fn clone(&self) -> Self {
        Log {
            name: Arc::clone(&self.name),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: Observed> Log<E> {
    /// An empty log; `name` appears in failure messages.
    pub fn new(name: &str) -> Log<E> {
        Log {
            name: name.into(),
            inner: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
        }
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Vec<E>> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `event` and wakes the waiters.
    pub fn push(&self, event: E) {
        self.lock().push(event);
        self.inner.1.notify_all();
    }

    /// A copy of everything so far.
    pub fn events(&self) -> Vec<E> {
        self.lock().clone()
    }

    /// Number of events so far (a mark for [`Log::since`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// A copy of the events from index `mark` on.
    pub fn since(&self, mark: usize) -> Vec<E> {
        self.lock()[mark..].to_vec()
    }

    /// Runs `f` on the events so far (without copying them).
    pub fn with<T>(&self, f: impl FnOnce(&[E]) -> T) -> T {
        f(&self.lock())
    }

    /// Waits until `check` (given all events so far) returns `Some`, and returns that.
    ///
    /// # Panics
    ///
    /// After `timeout`, with `what` and the last events of the log that are not
    /// messages.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[E]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut events = self.lock();
        loop {
            if let Some(found) = check(&events) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<String> = events
                    .iter()
                    .filter(|e| !e.is_message())
                    .rev()
                    .take(12)
                    .map(|e| format!("  {e:?}"))
                    .collect();
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; {} events, {} \
                     messages; last non-message events (newest first):\n{}",
                    self.name,
                    events.len(),
                    events.iter().filter(|e| e.is_message()).count(),
                    tail.join("\n")
                );
            }
            events = self
                .inner
                .1
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
