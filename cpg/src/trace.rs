//! What the layers need to report through `tracing` (feature `tracing`): macros that
//! compile to nothing without the feature, so that call sites stay one line and a
//! build without it has neither the dependency nor the code; the spans that name a
//! group; a rate limit for what a peer can make us log ([`RateLimit`]); and the
//! summary of back-pressure pauses ([`Pauses`]).
//!
//! The pure parts take the time as an argument, like the machines, and are tested
//! without a clock. What each layer logs is in its own module (`group::log`,
//! `replica::log`): the machines stay free of it, their drivers log the events and
//! results the machines hand out.

/// Runs its statements with the feature `tracing`; without it they are not compiled.
#[cfg(feature = "tracing")]
macro_rules! traced {
    ($($body:tt)*) => {{
        $($body)*
    }};
}
#[cfg(not(feature = "tracing"))]
macro_rules! traced {
    ($($body:tt)*) => {};
}
pub(crate) use traced;

/// Enters a span for the rest of the scope (`let _span = entered!(span);`); without the
/// feature the span's expression is not compiled and this is `()`.
#[cfg(feature = "tracing")]
macro_rules! entered {
    ($span:expr) => {
        $span.entered()
    };
}
#[cfg(not(feature = "tracing"))]
macro_rules! entered {
    ($span:expr) => {
        ()
    };
}
pub(crate) use entered;

/// A future that runs in a span (a driver task); without the feature the future
/// itself, and the span's expression is not compiled.
#[cfg(all(feature = "tracing", feature = "tokio"))]
macro_rules! instrumented {
    ($future:expr, $span:expr) => {
        ::tracing::Instrument::instrument($future, $span)
    };
}
#[cfg(all(not(feature = "tracing"), feature = "tokio"))]
macro_rules! instrumented {
    ($future:expr, $span:expr) => {
        $future
    };
}
#[cfg(feature = "tokio")]
pub(crate) use instrumented;

#[cfg(feature = "tracing")]
pub(crate) use imp::*;

#[cfg(feature = "tracing")]
mod imp {
    use std::time::{Duration, Instant};

    use tracing::field::Empty;
    use tracing::Span;

    use crate::name::GroupName;

    /// Events of a [`RateLimit`] logged in full per interval.
    pub(crate) const BURST: u32 = 10;
    /// A [`RateLimit`]'s interval: one summary of what it suppressed per interval.
    pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
    /// How often back-pressure is summarized while it lasts.
    pub(crate) const PAUSE_SUMMARY: Duration = Duration::from_secs(1);

    /// The span of a group driver (`cpg_group`, target `cpg::group`), or a replica's
    /// (`cpg_replica`, target `cpg::replica`): the group's name and this process's
    /// pid, and the node id once the first view shows it ([`record_node`]). Spans are
    /// at level ERROR, so that whatever the filter lets through of the layer's events
    /// comes with the group that logged it.
    pub(crate) fn group_span(name: &GroupName) -> Span {
        tracing::error_span!(target: "cpg::group", "cpg_group", group = %name, node = Empty, pid = std::process::id())
    }

    /// The span of a replica driver (see [`group_span`]).
    pub(crate) fn replica_span(name: &GroupName) -> Span {
        tracing::error_span!(target: "cpg::replica", "cpg_replica", group = %name, node = Empty, pid = std::process::id())
    }

    /// Records the local node id in a span of [`group_span`] or [`replica_span`].
    pub(crate) fn record_node(span: &Span, nodeid: u32) {
        span.record("node", nodeid);
    }

    /// Runs `f` in `span`, unless `span` is already the current one (a driver's thread
    /// is in its span; a client's call that routes events is not).
    pub(crate) fn in_span<R>(span: &Span, f: impl FnOnce() -> R) -> R {
        if Span::current().id() == span.id() {
            f()
        } else {
            span.in_scope(f)
        }
    }

    /// What [`RateLimit::admit`] decides for one event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Admit {
        /// Log this event.
        pub(crate) log: bool,
        /// Events suppressed in the interval that just ended: log this count first.
        pub(crate) suppressed: Option<u64>,
    }

    /// Lets `burst` events per interval through and counts the rest, for one summary
    /// when the interval is over: what a flooding peer makes us log is bounded by
    /// `burst + 1` lines per interval. The interval starts at the first event after a
    /// quiet one.
    #[derive(Debug)]
    pub(crate) struct RateLimit {
        burst: u32,
        interval: Duration,
        /// The start of the current interval, if one is open.
        since: Option<Instant>,
        /// Events logged in it.
        logged: u32,
        /// Events suppressed in it.
        suppressed: u64,
    }

    impl RateLimit {
        /// `burst` events per `interval`.
        pub(crate) fn new(burst: u32, interval: Duration) -> Self {
            RateLimit {
                burst,
                interval,
                since: None,
                logged: 0,
                suppressed: 0,
            }
        }

        /// Decides for an event at `now`.
        pub(crate) fn admit(&mut self, now: Instant) -> Admit {
            let suppressed = self.due(now);
            if self.since.is_none() {
                self.since = Some(now);
                self.logged = 0;
            }
            let log = self.logged < self.burst;
            if log {
                self.logged += 1;
            } else {
                self.suppressed += 1;
            }
            Admit { log, suppressed }
        }

        /// Whether a summary is owed (events were suppressed): only then does a tick
        /// need the time for [`due`](Self::due).
        pub(crate) fn owes(&self) -> bool {
            self.suppressed > 0
        }

        /// Closes the interval if it is over at `now`: the count it suppressed, if any.
        pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
            let since = self.since?;
            if now.saturating_duration_since(since) < self.interval {
                return None;
            }
            self.since = None;
            Some(std::mem::take(&mut self.suppressed)).filter(|&n| n > 0)
        }
    }

    /// Back-pressure over an interval: how often sends were refused for it, how many
    /// pauses that made and how long they lasted. A pause begins at a refused send and
    /// ends at the next send with another outcome.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct PauseSummary {
        /// Pauses that ended in the interval.
        pub(crate) pauses: u64,
        /// Sends refused for back-pressure (the retries) in the interval.
        pub(crate) refused: u64,
        /// The ended pauses' total length.
        pub(crate) total: Duration,
        /// The longest of them.
        pub(crate) longest: Duration,
        /// How long the pause still going on has lasted (zero if none is).
        pub(crate) ongoing: Duration,
    }

    /// Collects back-pressure pauses into one [`PauseSummary`] per interval, so that a
    /// sender that is refused thousands of times a second logs one line per interval.
    #[derive(Debug)]
    pub(crate) struct Pauses {
        interval: Duration,
        /// The start of the pause going on.
        current: Option<Instant>,
        /// The start of the interval being summarized, once something happened.
        since: Option<Instant>,
        sum: PauseSummary,
    }

    impl Pauses {
        /// One summary per `interval` at most.
        pub(crate) fn new(interval: Duration) -> Self {
            Pauses {
                interval,
                current: None,
                since: None,
                sum: PauseSummary {
                    pauses: 0,
                    refused: 0,
                    total: Duration::ZERO,
                    longest: Duration::ZERO,
                    ongoing: Duration::ZERO,
                },
            }
        }

        /// A send was refused for back-pressure at `now`.
        pub(crate) fn refused(&mut self, now: Instant) {
            self.current.get_or_insert(now);
            self.since.get_or_insert(now);
            self.sum.refused += 1;
        }

        /// A send had another outcome at `now`: the pause, if any, is over.
        pub(crate) fn resumed(&mut self, now: Instant) {
            if let Some(start) = self.current.take() {
                let length = now.saturating_duration_since(start);
                self.sum.pauses += 1;
                self.sum.total += length;
                self.sum.longest = self.sum.longest.max(length);
            }
        }

        /// The summary of the interval, once it is over at `now` and had back-pressure;
        /// a new interval starts.
        pub(crate) fn due(&mut self, now: Instant) -> Option<PauseSummary> {
            let since = self.since?;
            if now.saturating_duration_since(since) < self.interval {
                return None;
            }
            let mut sum = self.sum;
            sum.ongoing = self
                .current
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            self.sum = Pauses::new(self.interval).sum;
            // A pause going on is summarized again in the next interval.
            self.since = self.current.map(|_| now);
            Some(sum)
        }

        /// Whether a pause is going on.
        pub(crate) fn paused(&self) -> bool {
            self.current.is_some()
        }

        /// Whether an interval with back-pressure is open (a tick then needs the time
        /// for [`due`](Self::due)).
        pub(crate) fn open(&self) -> bool {
            self.since.is_some()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn at(t0: Instant, ms: u64) -> Instant {
            t0 + Duration::from_millis(ms)
        }

        #[test]
        fn a_flood_logs_the_burst_then_one_summary_per_interval() {
            let t0 = Instant::now();
            let mut limit = RateLimit::new(3, Duration::from_secs(5));
            let mut logged = 0;
            for i in 0..1000 {
                let a = limit.admit(at(t0, i));
                assert_eq!(a.suppressed, None, "no summary inside the interval");
                logged += u32::from(a.log);
            }
            assert_eq!(logged, 3);
            assert!(limit.owes());
            assert_eq!(limit.due(at(t0, 4999)), None);
            assert_eq!(limit.due(at(t0, 5000)), Some(997));
            assert!(!limit.owes());
            // A quiet interval owes nothing, and the next event opens a new one.
            assert_eq!(limit.due(at(t0, 20_000)), None);
            let a = limit.admit(at(t0, 20_000));
            assert_eq!(
                a,
                Admit {
                    log: true,
                    suppressed: None
                }
            );
        }

        #[test]
        fn the_summary_comes_with_the_first_event_after_the_interval() {
            let t0 = Instant::now();
            let mut limit = RateLimit::new(1, Duration::from_secs(1));
            assert!(limit.admit(t0).log);
            assert!(!limit.admit(at(t0, 10)).log);
            assert!(!limit.admit(at(t0, 20)).log);
            let a = limit.admit(at(t0, 1500));
            assert_eq!(
                a,
                Admit {
                    log: true,
                    suppressed: Some(2)
                }
            );
            assert!(!limit.owes());
        }

        #[test]
        fn events_below_the_burst_owe_no_summary() {
            let t0 = Instant::now();
            let mut limit = RateLimit::new(5, Duration::from_secs(1));
            for i in 0..5 {
                assert!(limit.admit(at(t0, i)).log);
            }
            assert!(!limit.owes());
            assert_eq!(limit.due(at(t0, 2000)), None);
        }

        #[test]
        fn pauses_are_summarized_per_interval_not_per_retry() {
            let t0 = Instant::now();
            let mut p = Pauses::new(Duration::from_secs(1));
            assert!(!p.open());
            assert_eq!(p.due(at(t0, 5000)), None, "no back-pressure, no summary");
            // Two pauses: 30 ms over 4 retries, 100 ms over 2.
            for ms in [0, 10, 20, 25] {
                p.refused(at(t0, ms));
            }
            assert!(p.paused());
            p.resumed(at(t0, 30));
            assert!(!p.paused());
            p.resumed(at(t0, 31)); // a send without a pause before it
            p.refused(at(t0, 200));
            p.refused(at(t0, 250));
            p.resumed(at(t0, 300));
            assert!(p.open());
            assert_eq!(p.due(at(t0, 999)), None);
            let s = p.due(at(t0, 1000)).expect("the interval is over");
            assert_eq!(s.pauses, 2);
            assert_eq!(s.refused, 6);
            assert_eq!(s.total, Duration::from_millis(130));
            assert_eq!(s.longest, Duration::from_millis(100));
            assert_eq!(s.ongoing, Duration::ZERO);
            assert!(!p.open());
            assert_eq!(p.due(at(t0, 9000)), None);
        }

        #[test]
        fn a_long_pause_is_reported_while_it_lasts_and_when_it_ends() {
            let t0 = Instant::now();
            let mut p = Pauses::new(Duration::from_secs(1));
            p.refused(t0);
            let s = p.due(at(t0, 1000)).expect("summary while paused");
            assert_eq!((s.pauses, s.refused), (0, 1));
            assert_eq!(s.ongoing, Duration::from_secs(1));
            p.refused(at(t0, 1500));
            p.resumed(at(t0, 1800));
            let s = p.due(at(t0, 2000)).expect("the next interval");
            assert_eq!((s.pauses, s.refused), (1, 1));
            assert_eq!(s.total, Duration::from_millis(1800), "the whole pause");
            assert_eq!(s.ongoing, Duration::ZERO);
        }
    }
}
