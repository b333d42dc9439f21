//! [`ReplicaBuilder`]: the settings a replica starts with, whichever driver runs it
//! ([`start`](ReplicaBuilder::start) for a [`Replica`](super::Replica), `start_async`
//! for an `AsyncReplica`).

use crate::group;
use crate::name::GroupName;

use super::app::Replicated;
use super::config::Config;

/// A builder for a [`Replica`](super::Replica) or an `AsyncReplica`; made by
/// [`Replica::builder`](super::Replica::builder).
#[derive(Debug)]
pub struct ReplicaBuilder<A> {
    pub(super) name: GroupName,
    pub(super) app: A,
    pub(super) config: Config,
    pub(super) group: group::Config,
}

impl<A: Replicated + Send + 'static> ReplicaBuilder<A> {
    /// The protocol's settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The group layer's settings.
    pub fn group_config(mut self, config: group::Config) -> Self {
        self.group = config;
        self
    }
}
