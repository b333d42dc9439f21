//! Replicated state that converges after every membership change: catch-up of new
//! members, state transfer, and merge after a partition or a daemon restart.
//!
//! (Documentation in progress.)

mod app;
mod blocking;
mod machine;
#[cfg(test)]
mod machine_tests;
mod wire;

pub use app::{
    choose_highest_version, has_majority, Candidate, OpInfo, Replicated, RestoreError, Summary,
};
pub use blocking::{Replica, ReplicaBuilder, ReplicaError, Ticket};
pub use machine::{Config, Discarded, Effect, Event, Failure, Machine, Phase, Stats, VERSION};
pub use wire::{fnv, fnv_start, RoundId, PROTOCOL_VERSION};
