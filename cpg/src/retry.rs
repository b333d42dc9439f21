//! Bounded retry with exponential backoff for back-pressure (`CS_ERR_TRY_AGAIN`,
//! `CS_ERR_QUEUE_FULL`) and interrupted fragmented sends (`CS_ERR_INTERRUPT`).
//!
//! libcpg gives no signal when back-pressure lifts (the flow-control query is a stub
//! and the descriptor does not tell), so the only way is to try again after a pause.
//! Events arriving are a good hint, though: the daemon pushes back while its queue of
//! messages to order is full, and that queue drains as messages are delivered, so the
//! connection-level retries ([`Handle::send_with_retry`](crate::Handle::send_with_retry),
//! the async handle's sends) end a pause early when events arrive.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long and how often to retry. The pause doubles from `initial` up to `max_delay`;
/// retrying stops after `max_attempts` attempts or once `timeout` has passed, whichever
/// comes first, returning the last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First pause.
    pub initial: Duration,
    /// Longest pause.
    pub max_delay: Duration,
    /// Time, from the first failed attempt, after which no new attempt starts.
    pub timeout: Duration,
    /// Most attempts, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 100 µs doubling to 50 ms, for at most 30 s or 100,000 attempts.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_micros(100),
            max_delay: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
            max_attempts: 100_000,
        }
    }
}

impl Backoff {
    /// Runs `op` until it succeeds, fails with an error that is not
    /// [retryable](Error::is_retryable), or the budget is spent. Between attempts it
    /// calls `between` (an error from it ends the retry) and sleeps.
    pub fn run<T>(
        &self,
        op: impl FnMut() -> Result<T>,
        mut between: impl FnMut() -> Result<()>,
    ) -> Result<T> {
        self.run_pausing(op, |delay| {
            between()?;
            std::thread::sleep(delay);
            Ok(())
        })
    }

    /// Like [`run`](Self::run), with the pause itself left to `pause`, which is given
    /// the current delay and may end early (for example as soon as events arrive).
    pub(crate) fn run_pausing<T>(
        &self,
        op: impl FnMut() -> Result<T>,
        pause: impl FnMut(Duration) -> Result<()>,
    ) -> Result<T> {
        self.start().run_pausing(op, pause)
    }

    /// The state of one retried call: feed it each failure ([`Retrying::after`]).
    pub(crate) fn start(&self) -> Retrying {
        Retrying {
            backoff: *self,
            start: None,
            delay: self.initial,
            attempts: 0,
        }
    }

    /// [`start`](Self::start) for a call that began at `at` (its timeout counts from
    /// there, not from its first failure).
    #[cfg(feature = "tokio")]
    pub(crate) fn start_at(&self, at: Instant) -> Retrying {
        Retrying {
            start: Some(at),
            ..self.start()
        }
    }

    /// Whether another attempt follows the failed attempt number `attempts` (counting
    /// from 1) of a retry whose first failure was at `start` and that would now pause
    /// for `delay`.
    pub(crate) fn may_retry(
        &self,
        error: &Error,
        attempts: u32,
        start: Instant,
        delay: Duration,
    ) -> bool {
        error.is_retryable()
            && attempts < self.max_attempts
            && start.elapsed().saturating_add(delay) < self.timeout
    }

    /// The pause after `delay`: twice as long, at most `max_delay`.
    pub(crate) fn next_delay(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_delay)
    }
}

/// One retried call under a [`Backoff`]: how many attempts failed, since when, and the
/// next pause. The loops that retry (blocking, async) share it.
#[derive(Debug)]
pub(crate) struct Retrying {
    backoff: Backoff,
    /// When the first attempt failed. The clock is read only once an attempt has
    /// failed: the usual first-try success costs no clock read.
    start: Option<Instant>,
    delay: Duration,
    attempts: u32,
}

impl Retrying {
    /// [`Backoff::run_pausing`] from this state (a clock started elsewhere, say).
    pub(crate) fn run_pausing<T>(
        mut self,
        mut op: impl FnMut() -> Result<T>,
        mut pause: impl FnMut(Duration) -> Result<()>,
    ) -> Result<T> {
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) => pause(self.after(e)?)?,
            }
        }
    }

    /// After a failed attempt: the pause before the next one, or the error back when
    /// it is not retryable or the back-off is spent.
    pub(crate) fn after(&mut self, error: Error) -> Result<Duration> {
        self.attempts += 1;
        let start = *self.start.get_or_insert_with(Instant::now);
        if !self
            .backoff
            .may_retry(&error, self.attempts, start, self.delay)
        {
            return Err(error);
        }
        let delay = self.delay;
        self.delay = self.backoff.next_delay(delay);
        Ok(delay)
    }
}

/// Runs `op` until it succeeds or fails with an error that is not retryable, pausing
/// per `backoff`. For sends on a [`Handle`](crate::Handle) that must keep reading its
/// own events meanwhile, use [`Handle::send_with_retry`](crate::Handle::send_with_retry).
pub fn retry<T>(backoff: &Backoff, op: impl FnMut() -> Result<T>) -> Result<T> {
    backoff.run(op, || Ok::<(), Error>(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CsError, Operation};

    fn try_again() -> Error {
        Error::Cs {
            op: Operation::Send,
            code: CsError::TryAgain,
        }
    }

    /// Runs a retry that always fails with back-pressure, recording its pauses.
    fn pauses(backoff: &Backoff) -> (Vec<Duration>, Result<()>) {
        let mut seen = Vec::new();
        let result = backoff.run_pausing(
            || Err::<(), _>(try_again()),
            |delay| {
                seen.push(delay);
                Ok(())
            },
        );
        (seen, result)
    }

    #[test]
    fn pauses_double_up_to_the_max_delay() {
        let backoff = Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
            timeout: Duration::from_secs(60),
            max_attempts: 7,
        };
        let (seen, result) = pauses(&backoff);
        let ms: Vec<u64> = seen.iter().map(|d| d.as_millis() as u64).collect();
        assert_eq!(ms, [1, 2, 4, 8, 10, 10]);
        assert_eq!(
            result.unwrap_err(),
            try_again(),
            "the last error is returned"
        );
    }

    #[test]
    fn the_timeout_stops_retrying_before_a_pause_would_pass_it() {
        let backoff = Backoff {
            initial: Duration::from_millis(30),
            max_delay: Duration::from_millis(30),
            timeout: Duration::from_millis(100),
            max_attempts: u32::MAX,
        };
        // When each pause would end, counted from the first failure. The wall time of
        // the whole retry is not the measure: on a loaded machine the last sleep may
        // overrun by milliseconds, and that is the scheduler's, not the back-off's.
        let first_failure = std::cell::Cell::new(None::<Instant>);
        let mut planned_ends = Vec::new();
        let mut attempts = 0;
        let result = backoff.run_pausing(
            || {
                attempts += 1;
                if first_failure.get().is_none() {
                    first_failure.set(Some(Instant::now()));
                }
                Err::<(), _>(try_again())
            },
            |delay| {
                let started = first_failure.get().expect("a failure came first").elapsed();
                planned_ends.push(started + delay);
                std::thread::sleep(delay);
                Ok(())
            },
        );
        assert!(result.unwrap_err().is_retryable());
        // Pauses of 30 ms that must end before 100 ms: at most 3 of them, 4 attempts.
        // (A little slack for a thread preempted between the check and the pause.)
        let last = planned_ends.iter().max().copied().unwrap_or_default();
        assert!(
            last <= Duration::from_millis(105),
            "a pause was started that would end at {last:?}, past the 100 ms timeout"
        );
        assert!((2..=4).contains(&attempts), "{attempts}");
    }

    #[test]
    fn errors_that_are_not_back_pressure_are_not_retried() {
        let mut attempts = 0;
        let result = retry(&Backoff::default(), || {
            attempts += 1;
            Err::<(), _>(Error::NotJoined)
        });
        assert_eq!(result.unwrap_err(), Error::NotJoined);
        assert_eq!(attempts, 1);
    }

    #[test]
    fn huge_delays_saturate_instead_of_panicking() {
        let backoff = Backoff {
            initial: Duration::MAX,
            max_delay: Duration::MAX,
            timeout: Duration::MAX,
            max_attempts: 3,
        };
        assert_eq!(backoff.next_delay(Duration::MAX), Duration::MAX);
        // A pause of Duration::MAX can never end before the timeout: no retry.
        let (seen, result) = pauses(&backoff);
        assert!(seen.is_empty(), "{seen:?}");
        assert!(result.is_err());
    }

    #[test]
    fn retry_retries_back_pressure_only_and_gives_up_when_told() {
        let backoff = Backoff {
            initial: Duration::from_micros(10),
            max_delay: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
            max_attempts: 5,
        };
        let mut calls = 0;
        let ok = retry(&backoff, || {
            calls += 1;
            if calls < 4 {
                Err(try_again())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(ok, Ok(4));

        let mut calls = 0;
        let gave_up = retry(&backoff, || -> Result<()> {
            calls += 1;
            Err(try_again())
        });
        assert_eq!(gave_up, Err(try_again()));
        assert_eq!(calls, 5, "max_attempts bounds the attempts");

        let mut calls = 0;
        let fatal = retry(&backoff, || -> Result<()> {
            calls += 1;
            Err(Error::Poisoned)
        });
        assert_eq!(fatal, Err(Error::Poisoned));
        assert_eq!(calls, 1, "non-retryable errors are returned at once");
    }
}
