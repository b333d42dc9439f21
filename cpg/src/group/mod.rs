//! The layer every CPG service writes by hand: views, a leader, eviction, reconnect,
//! an ordered send queue, confirmed sends, and corosync's quorum agreed in the
//! delivery order.
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
//! A replicated counter: every member applies the same increments in the same order,
//! and skips the same ones (those delivered where the partition was not quorate); only
//! the leader of the current view reports the total, and another member takes over
//! when the leader goes.
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
//!         // `quorum` is the agreed quorum at the message's place: every member
//!         // decides alike (see "Quorum" below).
//!         Event::Message(m) if m.data.len() == 8 && m.quorum.permits() => {
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
//! Under load the queue packs messages into batches ([`Config::batch_bytes`], default
//! 64 KiB; 0 turns it off). While fewer than [`Config::batch_window`] (default 4) of
//! this process's CPG messages are in flight (accepted by the daemon, not yet
//! delivered back), what the queue holds goes out at once: a message alone when it is
//! the only one, as before (no added latency), the messages queued together as one
//! CPG message of up to `batch_bytes` ([`Config::batch_eager`]; a message too large
//! to share one goes alone). At the bound, or after back-pressure, the queue holds,
//! and when an own message comes back what waits goes out packed the same way. Every member delivers
//! a batch's messages one by one at consecutive positions, each an
//! [`Event::Message`] of its own with its own receipt, quorum state and
//! [`Stats`] counts, as if sent alone; CPG delivers a batch whole or not at all, so
//! virtual synchrony holds per message. A delivered message's
//! [`data`](Delivery::data) is a [`Bytes`] slice of the layer's receive buffer
//! (no allocation per message). Quorum markers are never packed: they go alone,
//! ahead of queued messages, as before. Members that run a version of the layer
//! without batches report a batch as [`Event::Malformed`] (one position for the
//! whole batch, so positions differ from there on): run such a group with
//! `batch_bytes` 0 on every member until all are updated.
//!
//! Measured on a 3-node private cluster beside the plain loop (`bench_compare
//! --layers plain,group,replica`, 3 rounds; `build-support/bench/README.md` has the
//! tables and the command): 20.6× the plain loop's messages per second at 64 B
//! (355k/s, 0.43 µs of client CPU per message), 3.9× at 1600 B; with one message in
//! flight a message goes alone, as with batching off (p50 0.80–1.20× of batching off
//! over three runs on a loaded machine); the receive side made 19 allocations for
//! 16,000 messages (`cpg/tests/alloc.rs`).
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
//! the layer; other messages show up as [`Event::Malformed`]. The layer's own control
//! frames (quorum markers) count for positions too, and are never delivered as
//! messages.
//!
//! # Quorum
//!
//! Whether this node's partition may act is corosync's decision (its quorum provider,
//! votequorum: the votes of every node that runs corosync, `expected_votes`,
//! `two_node`, a quorum device, ...), not a count of the group's members. It reaches
//! each node on another connection than the group's events (libquorum), in either
//! order relative to them: gating on "the quorum flag when the message arrived"
//! decides differently on different members for the same message. So the layer agrees
//! on it, in the delivery order:
//!
//! - **The rule.** Each view has an agreed state, [`AgreedQuorum`]: it becomes
//!   [`Pending`](AgreedQuorum::Pending) at every view change and at every totem
//!   change (a new ring), and [`Quorate`](AgreedQuorum::Quorate) or
//!   [`NotQuorate`](AgreedQuorum::NotQuorate) where a *quorum marker* for the current
//!   ring is delivered; markers of another ring are stale and ignored. Every member
//!   of the ring gets its group and totem changes at the same point of the order
//!   (measured: the totem change after the group change and before any message of the
//!   new ring), and the markers in the agreed order, so every member that delivers a
//!   message in a view computes the same state for it, whichever order its node heard
//!   things in. Each [`Delivery`] carries it ([`Delivery::quorum`]); act on a message
//!   only if it [`permits`](AgreedQuorum::permits) (quorate, or free).
//!   [`Event::Quorum`] reports every change with its place (the view and the index
//!   from which it holds): a layer on top can count quorate epochs with it.
//! - **The markers.** Each member's driver keeps a quorum connection beside the CPG
//!   one, tracking changes. When a member knows its node's quorum for its current
//!   ring and the agreed state says otherwise, it sends a marker (ring id and
//!   quorate, a [version-2 control frame](wire)) ahead of its queued messages. It
//!   knows it when the latest notification is for that ring, or for an older ring
//!   with the same nodes: corosync 3.1.7 notifies no ring whose nodes and quorum equal
//!   the previous ring's (measured), and a notification for the ring itself, later,
//!   overrides with a new marker. The first marker delivered decides for everyone;
//!   the others, seeing the state agreed, send nothing.
//! - **The window.** After a view or ring change there is none: the state is
//!   `Pending` from the change itself until the first marker, one marker's round trip
//!   after the first member that has heard of both the change and its node's quorum
//!   (measured on a 3-node cluster with a 1 s token: a 2|1 partition agreed on every
//!   member within 2.3 s of the cut, the heal likewise). A change inside a ring (a new
//!   `expected_votes` or a node's votes set at runtime, a quorum device that stops
//!   voting, `last_man_standing`'s recalculation) has one: messages ordered before
//!   the marker of the new decision still carry the previous state. A ring whose
//!   membership corosync abandons half-synchronized may never be notified; it stays
//!   `Pending` until the next ring, which follows at once.
//! - **What to configure.** corosync.conf's `quorum { provider: corosync_votequorum
//!   }` and its settings; the service's user allowed to connect (the same `uidgid` as
//!   for CPG). Without a provider the state is [`Free`](AgreedQuorum::Free) for good
//!   and nothing is sent: every message permitted, as before this support (count
//!   members with [`replica::has_majority`](crate::replica::has_majority) there if
//!   you must). Every member of a group must use the same [`Config::quorum`] policy;
//!   a member of an older version of this layer reports markers as
//!   [`Event::Malformed`] and takes no part.
//! - **The feature.** [`QuorumPolicy::Corosync`], the default, needs the crate's
//!   `quorum` feature, a default feature (it links libquorum). With
//!   `default-features = false` the default policy is [`QuorumPolicy::Ignore`] (no
//!   quorum connection, everything free) and the drivers refuse `Corosync`.
//! - **Before a write.** [`Group::quorum`] is what the local daemon last said
//!   ([`LocalQuorum`]): a fast check that spares sending what would be refused. It is
//!   local: decide on a message by its `Delivery::quorum`. [`Group::agreed_quorum`]
//!   is the state the layer has reached (ahead of the events the application read).
//!
//! # Threads
//!
//! [`Group`] dispatches on its own thread with an 8 MiB stack, polling the CPG and the
//! quorum connections; it connects (and reconnects, both connections together) in
//! the network namespace of the thread that started it. Callbacks of the underlying
//! handles only feed the machine; application code runs on the caller's threads.
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
//! cargo test -p cpg --features tokio --test group_quorum -- --nocapture
//! ```
//!
//! (A run on 2026-11-30: median 0.36 ms, p90 0.59 ms, max 0.85 ms; loss noticed after
//! 14 ms; reconnected 0.91 s after the restart began, which includes the test kit's
//! wait for the other nodes' links to the killed node to go down, about 0.3 s.)
//!
//! On a 3-node votequorum cluster (token 1 s, 4 runs), a 2|1 partition was agreed on
//! every member (not quorate on the single node, quorate on the two others) 2.22 to
//! 2.23 s after the cut, the heal 1.98 to 2.18 s after it; most of it is corosync's
//! own detection (token plus consensus) and the new ring's sync.

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
#[cfg(feature = "tracing")]
mod log;
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
/// The type of [`Delivery::data`]: a shared, sliceable byte buffer (re-exported from
/// the `bytes` crate).
pub use bytes::Bytes;
pub use config::{Config, OnDisconnect, OnEviction, QuorumPolicy};
pub use error::GroupError;
pub use event::{Delivery, Effect, Event, Position, SendId, Stats, StopReason};
pub use machine::Machine;
pub use quorum::{AgreedQuorum, LocalQuorum, QuorumInput};
pub use view::{View, ViewId};
pub use wire::HEADER_LEN;
