//! [`GroupBuilder`]: the settings a group starts with, whichever driver runs it
//! ([`start`](GroupBuilder::start) for a [`Group`](super::Group), `start_async` for an
//! `AsyncGroup`).

use crate::error::Error;
use crate::name::GroupName;
use crate::retry::Backoff;

use super::config::{Config, OnDisconnect, OnEviction, QuorumPolicy, MAX_BATCH_BYTES};
use super::error::GroupError;

/// Settings for a [`Group`](super::Group) or an `AsyncGroup`; made by
/// [`Group::builder`](super::Group::builder).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start()"]
pub struct GroupBuilder {
    pub(super) name: GroupName,
    pub(super) config: Config,
}

impl GroupBuilder {
    /// All settings at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The send queue's bound ([`Config::queue_limit`]).
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.config.queue_limit = limit;
        self
    }

    /// What to do when evicted ([`Config::on_eviction`]).
    pub fn on_eviction(mut self, policy: OnEviction) -> Self {
        self.config.on_eviction = policy;
        self
    }

    /// What happens to queued messages when the daemon is lost
    /// ([`Config::on_disconnect`]).
    pub fn on_disconnect(mut self, policy: OnDisconnect) -> Self {
        self.config.on_disconnect = policy;
        self
    }

    /// Reconnect pauses and budget ([`Config::reconnect`]).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Whether to read corosync's quorum ([`Config::quorum`]).
    pub fn quorum(mut self, policy: QuorumPolicy) -> Self {
        self.config.quorum = policy;
        self
    }

    /// The largest batch, 0 for none ([`Config::batch_bytes`]).
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.config.batch_bytes = bytes;
        self
    }

    /// Frames in flight at which the queue holds and batches
    /// ([`Config::batch_window`]).
    pub fn batch_window(mut self, frames: usize) -> Self {
        self.config.batch_window = frames;
        self
    }

    /// Whether messages queued together below the batch window go out as one batch
    /// ([`Config::batch_eager`]).
    pub fn batch_eager(mut self, eager: bool) -> Self {
        self.config.batch_eager = eager;
        self
    }

    /// Refuses settings the drivers cannot work with, before anything is started.
    pub(super) fn check(&self) -> Result<(), GroupError> {
        if self.config.queue_limit == 0 {
            return Err(GroupError::Connect(Error::InvalidArgument(
                "the group layer's queue_limit must be at least 1",
            )));
        }
        if self.config.quorum == QuorumPolicy::Corosync && !cfg!(feature = "quorum") {
            return Err(GroupError::Connect(Error::InvalidArgument(
                "QuorumPolicy::Corosync needs the cpg crate's `quorum` feature",
            )));
        }
        if self.config.batch_bytes > MAX_BATCH_BYTES {
            return Err(GroupError::Connect(Error::InvalidArgument(
                "the group layer's batch_bytes must be at most 1 MiB",
            )));
        }
        if self.config.batch_bytes > 0 && self.config.batch_window == 0 {
            return Err(GroupError::Connect(Error::InvalidArgument(
                "the group layer's batch_window must be at least 1 with batching on",
            )));
        }
        Ok(())
    }
}
