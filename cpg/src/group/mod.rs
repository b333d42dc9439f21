//! Group layer (placeholder doc, replaced below).

mod machine;
#[cfg(test)]
mod machine_tests;
mod view;

pub use machine::{
    Config, Delivery, Effect, Event, GroupError, Machine, OnDisconnect, OnEviction, Position,
    SendId, Stats, StopReason, HEADER_LEN,
};
pub use view::{View, ViewId};
mod blocking;
pub use blocking::{Group, GroupBuilder, Receipt};
#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tokio")]
pub use self::tokio::{AsyncGroup, Confirmation};
