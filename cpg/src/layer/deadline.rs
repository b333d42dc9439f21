//! Deadlines that a huge duration cannot overflow: [`later`], the instant `now + after`
//! for the machines' timers and the drivers' waits.

use std::time::{Duration, Instant};

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
    }
}
