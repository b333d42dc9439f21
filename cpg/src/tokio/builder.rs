//! [`AsyncBuilder`]: how an [`AsyncHandle`] is configured, the async counterpart of
//! [`Builder`](crate::Builder).

use crate::error::Result;
use crate::options::Options;
use crate::retry::Backoff;

use super::AsyncHandle;

/// Builds an [`AsyncHandle`]: the same [`Options`] as [`Handle::builder`](crate::Handle::builder)
/// takes, plus the back-off of sends, joins and leaves.
/// There are no callbacks to set: events come out of the stream.
///
/// ```no_run
/// # async fn run() -> Result<(), cpg::Error> {
/// let cpg = cpg::AsyncHandle::builder()
///     .initial_totem_conf(true)
///     .backoff(cpg::retry::Backoff::default())
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until .build()"]
pub struct AsyncBuilder {
    options: Options,
    backoff: Backoff,
}

impl AsyncBuilder {
    /// Also deliver the current totem membership right after join
    /// ([`Options::initial_totem_conf`]).
    pub fn initial_totem_conf(mut self, yes: bool) -> Self {
        self.options.initial_totem_conf = yes;
        self
    }

    /// The user id the daemon must run as, or `None` for no check
    /// ([`Options::daemon_uid`]; default root).
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.options.daemon_uid = uid;
        self
    }

    /// All options at once, replacing those set so far.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// The back-off of sends, joins and leaves under back-pressure (default
    /// [`Backoff::default`]; later [`AsyncHandle::set_backoff`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Connects to the local corosync daemon and registers the connection with the
    /// current tokio runtime; see [`AsyncHandle::new`] for errors and panics.
    pub fn build(self) -> Result<AsyncHandle> {
        let mut handle = AsyncHandle::with_options(self.options)?;
        handle.set_backoff(self.backoff);
        Ok(handle)
    }
}
