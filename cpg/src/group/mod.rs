//! The layer every CPG service writes by hand: views, a leader, eviction, reconnect,
//! an ordered send queue and confirmed sends.
//!
//! The rules are a state machine without I/O or clock ([`Machine`]): libcpg events and
//! call results go in, [`Event`]s for the application and [`Effect`]s for a driver
//! come out, and time is an argument. Two thin drivers run it:
//!
//! - [`Group`]: a dispatch thread of its own (8 MiB stack) and a client API that any
//!   thread may use;
//! - `AsyncGroup` (feature `tokio`): a task over `AsyncHandle`, with the same events.
//!
//! # A whole small service
//!
//! A replicated counter: every member applies the same increments in the same order;
//! only the leader of the current view reports the total, and another member takes
//! over when the leader goes.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use cpg::group::{Event, Group};
//! use cpg::GroupName;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let group = Group::join(GroupName::new("counter")?)?;
//! let mut total: u64 = 0;
//! // Queued at once; sent in order by the dispatch thread, back-pressure included.
//! group.send(7u64.to_le_bytes())?;
//! // Resolves when our own copy is delivered: its place in the agreed order is known.
//! let position = group.send_confirmed(5u64.to_le_bytes())?.wait()?;
//! println!("+5 is message {} of view {}", position.index, position.view);
//! loop {
//!     let Some(event) = group.next_event(Duration::from_secs(1)) else {
//!         if group.end().is_some() {
//!             break;
//!         }
//!         if group.is_leader() {
//!             println!("leader here: total {total}");
//!         }
//!         continue;
//!     };
//!     match event {
//!         Event::View(view) => println!("{view}, leader {:?}", view.leader()),
//!         // `from` is the (node id, pid) CPG reports, never what the payload says.
//!         Event::Message(m) if m.data.len() == 8 => {
//!             total += u64::from_le_bytes(m.data[..].try_into()?);
//!             println!("{} added; total {total}", m.from);
//!         }
//!         Event::Disconnected { error } => eprintln!("daemon lost ({error}); reconnecting"),
//!         Event::Reconnected { incarnation, view } => {
//!             eprintln!("connection {incarnation}: {view}")
//!         }
//!         Event::Left | Event::Stopped(_) => break,
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Views and the leader
//!
//! Each group configuration change becomes a [`View`]: a [`ViewId`] that only grows
//! (incarnation, then a counter never reset), the members sorted by (node id, pid),
//! who joined and left as this node's daemon reported it, and which member is this
//! process. A view is made from the member list only, the part of a change that every
//! member receives alike; the joined and left lists can differ
//! between nodes, so nothing agreed is derived from them. The leader is the lowest
//! (node id, pid) of the list, so every member of a view computes the same leader
//! ([`View::leader`], [`View::is_leader`]). It is a per-view leader, not a quorum:
//! during a partition each side has one.
//!
//! [`Event::Settled`] tells when the totem ring of a view is known: at once for a
//! change of processes, after the totem change for a change of nodes (which comes
//! after the group change). The drivers request the initial totem
//! configuration, so the first view settles too.
//!
//! # Who this process is
//!
//! The daemon identifies a member by (node id, pid), where the pid is what libcpg
//! reports at join: `getpid()` in the process's own pid namespace. Measured with
//! corosync 3.1.7: a process started with `unshare --pid --fork` is listed as pid 1,
//! and a second such process on the same node cannot join the same group
//! (`CS_ERR_EXIST`). The own entry is therefore the one with the local node id and
//! `getpid()`. Should a daemon report another pid, the layer falls back to the only
//! entry of this node in the join's `joined` list, or else to the sender of the first
//! delivered message that carries this connection's random nonce and comes from this
//! node.
//!
//! # Eviction, leave, reconnect
//!
//! This process missing from a view, or listed as left without having left, is
//! [`Event::Evicted`]; [`OnEviction`] says whether to join again with a new connection
//! or stop. [`Group::leave`] sends what is queued, leaves, and waits for the daemon to
//! report the own leave: [`Event::Left`], the last event.
//!
//! When the daemon is lost (`CS_ERR_LIBRARY`), the layer reports
//! [`Event::Disconnected`], drops the connection and makes new ones with back-off
//! ([`Config::reconnect`]) until one joins: [`Event::Reconnected`] with the new
//! incarnation and its first view, or [`Event::Stopped`] when the budget is spent.
//! Queued messages are kept and sent afterwards, or dropped ([`OnDisconnect`]).
//! A restarted daemon may form a ring of its own before it merges with the other
//! nodes: messages sent in such a view reach this node's members only, as during any
//! partition (`cpg/tests/group_reconnect.rs` shows it happening).
//!
//! # The send queue
//!
//! [`Group::send`] queues and returns at once; [`GroupError::QueueFull`] at the bound
//! ([`Config::queue_limit`]). The driver sends one message at a time, in queue order,
//! and waits out back-pressure (`CS_ERR_TRY_AGAIN`, `CS_ERR_QUEUE_FULL`) on a timer
//! that doubles from [`Config::send_retry_initial`] to [`Config::send_retry_max`],
//! reading events meanwhile. [`Stats`] counts queued, sent, pushbacks and more.
//!
//! # Confirmed sends and positions
//!
//! [`Group::send_confirmed`] returns a [`Receipt`] that resolves exactly once: with
//! the message's [`Position`] when this process's own copy is delivered (its place in
//! the agreed order is then fixed), with [`GroupError::Unknown`] if the connection was
//! lost after the daemon accepted it and before it came back (it may or may not have
//! been delivered), or with why it was not sent. The index within the view is agreed
//! among the members that deliver the message in the same view; the view id and the
//! total count are local. A message confirmed in a view that lacks some member never
//! reaches that member.
//!
//! To recognize its own copies the layer puts a 24-byte header before every payload
//! (the format is in [`wire`]: little-endian, magic `CPGl`, version, per-connection
//! nonce, sequence number). Every member of a group used through this layer must use
//! the layer; other messages show up as [`Event::Malformed`].
//!
//! # Threads
//!
//! [`Group`] dispatches on its own thread with an 8 MiB stack; it connects (and
//! reconnects) in the network namespace of the thread that started it. Callbacks of
//! the underlying handle only feed the machine; application code runs on the caller's
//! threads.
//!
//! # Measured
//!
//! On the 3-node test cluster (debug build, 2 shared cores, 6 runs): one confirmed
//! send at a time took 0.36 to 0.56 ms (median), 3.5 to 9.8 ms at worst; a SIGKILLed
//! daemon was noticed within 13 to 16 ms and, once restarted, rejoined 0.9 s after the
//! restart began. The tests print these figures:
//!
//! ```text
//! cargo test -p cpg --features tokio --test group_confirmed --test group_reconnect -- --nocapture
//! ```
//!
//! (A run on 2026-11-30: median 0.36 ms, p90 0.59 ms, max 0.85 ms; loss noticed after
//! 14 ms; reconnected 0.91 s after the restart began, which includes the test kit's
//! wait for the other nodes' links to the killed node to go down, about 0.3 s.)

// The rules: a state machine without I/O, and the values it takes and hands out.
mod config;
mod error;
mod event;
mod machine;
#[cfg(test)]
mod machine_tests;
mod quorum;
#[cfg(test)]
mod quorum_tests;
mod view;
pub mod wire;

// The drivers: what both share, then each one.
mod builder;
mod pump;
mod shared;

mod blocking;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use self::tokio::{AsyncGroup, Confirmation};
pub use blocking::{Group, Receipt};
pub use builder::GroupBuilder;
pub use config::{Config, OnDisconnect, OnEviction, QuorumPolicy};
pub use error::GroupError;
pub use event::{Delivery, Effect, Event, Position, SendId, Stats, StopReason};
pub use machine::Machine;
pub use quorum::{AgreedQuorum, LocalQuorum, QuorumInput};
pub use view::{View, ViewId};
pub use wire::HEADER_LEN;
