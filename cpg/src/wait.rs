//! Waiting on a condition variable until a value is ready or a deadline passes: the
//! client calls of the blocking drivers ([`crate::group::Group`],
//! [`crate::replica::Replica`]).

use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// Calls `ready` with the locked state, first at once and then each time `changed` is
/// notified, until it returns something (returned) or `timeout` has passed (`None`).
/// Poison is ignored: the drivers leave their state consistent.
pub(crate) fn wait_for<S, T>(
    mut state: MutexGuard<'_, S>,
    changed: &Condvar,
    timeout: Duration,
    mut ready: impl FnMut(&mut S) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = ready(&mut state) {
            return Some(t);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        state = changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
