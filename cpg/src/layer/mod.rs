//! What the protocol layers ([`group`](crate::group), [`replica`](crate::replica)) are
//! built with, below both of them and above nothing of theirs.
//!
//! - [`deadline`]: instants for the machines' timers that a huge duration cannot
//!   overflow;
//! - [`lock`]: the mutex behind the drivers' client calls, which refuses re-entry;
//! - [`wait`]: waiting under that lock until a value is ready or a deadline passes.

pub(crate) mod deadline;
pub(crate) mod lock;
pub(crate) mod wait;
