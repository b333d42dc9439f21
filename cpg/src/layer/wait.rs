//! Waiting on a condition variable until a value is ready or a deadline passes: the
//! client calls of the blocking drivers ([`crate::group::Group`],
//! [`crate::replica::Replica`]).

use std::sync::Condvar;
use std::time::{Duration, Instant};

use super::deadline::later;
use super::lock::Guard;

/// Calls `ready` with the locked state, first at once and then each time `changed` is
/// notified, until it returns something (returned) or `timeout` has passed (`None`).
/// Poison is ignored: the drivers leave their state consistent. (A
/// [`Lock`](super::lock::Lock) guard, so that `ready` cannot re-enter it on this
/// thread.)
pub(crate) fn wait_for<S, T>(
    mut state: Guard<'_, S>,
    changed: &Condvar,
    timeout: Duration,
    mut ready: impl FnMut(&mut S) -> Option<T>,
) -> Option<T> {
    let deadline = later(Instant::now(), timeout);
    loop {
        if let Some(t) = ready(&mut state) {
            return Some(t);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        state = state.wait_timeout(changed, deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_value_returns_at_once_even_without_bound() {
        let m = super::super::lock::Lock::new(0u8);
        let c = Condvar::new();
        assert_eq!(wait_for(m.lock(), &c, Duration::MAX, |_| Some(7)), Some(7));
    }
}
