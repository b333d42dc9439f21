//! Waiting on a condition variable until a value is ready or a deadline passes: the
//! client calls of the blocking drivers ([`crate::group::Group`],
//! [`crate::replica::Replica`]).

use std::sync::Condvar;
use std::time::{Duration, Instant};

/// Calls `ready` with the locked state, first at once and then each time `changed` is
/// notified, until it returns something (returned) or `timeout` has passed (`None`).
/// Poison is ignored: the drivers leave their state consistent. (A [`crate::layer::lock::Lock`]
/// guard, so that `ready` cannot re-enter it on this thread.)
pub(crate) fn wait_for<S, T>(
    mut state: crate::layer::lock::Guard<'_, S>,
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

/// `now + after`, or a point decades away when that sum does not fit in an
/// [`Instant`]: `Duration::MAX` (or any huge duration) means "without bound" in
/// timeouts and configuration, never an arithmetic overflow panic.
pub(crate) fn later(now: Instant, after: Duration) -> Instant {
    /// About 30 years: further than any wait of interest, and it fits.
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let m = crate::layer::lock::Lock::new(0u8);
        let c = Condvar::new();
        assert_eq!(wait_for(m.lock(), &c, Duration::MAX, |_| Some(7)), Some(7));
    }
}
