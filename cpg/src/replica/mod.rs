//! Replicated state that converges after every membership change: catch-up of new
//! members, chunked state transfer, and merge after a partition or a daemon restart.
//!
//! The application keeps its state in a type that implements [`Replicated`]: apply an
//! operation, take a snapshot, restore one, compute a digest, and (optionally) choose
//! whose state wins. The layer, built on [`group`](crate::group), makes every member
//! apply the same operations in the same order, and after every view change brings all
//! members of the new view to one state. Operations and snapshots are bytes: the core
//! needs no serialization library.
//!
//! The rules are a state machine without I/O or clock ([`Machine`]), in the style of
//! the group layer: group-layer views and deliveries and time go in, sends
//! ([`Effect`]) and [`Event`]s come out, and the application's state is called from
//! inside. Two thin drivers run it:
//!
//! - [`Replica`]: over a [`Group`](crate::group::Group), on a thread of its own;
//! - `AsyncReplica` (feature `tokio`): a task over an `AsyncGroup`, with the same
//!   events.
//!
//! # A whole small service
//!
//! A replicated counter map (`kv`, in `examples/kv.rs`, is the same with a line
//! protocol): writes only while the view holds a majority of the three configured
//! nodes, reads from the local copy.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use cpg::replica::{fnv, fnv_start, has_majority, Event, OpInfo, Replica, Replicated, RestoreError};
//! use cpg::GroupName;
//!
//! #[derive(Default)]
//! struct Counters(BTreeMap<String, u64>);
//!
//! impl Replicated for Counters {
//!     fn apply(&mut self, op: &[u8], _info: &OpInfo) {
//!         // An operation is the name of the counter to increment.
//!         *self.0.entry(String::from_utf8_lossy(op).into_owned()).or_default() += 1;
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         let mut b = Vec::new();
//!         for (k, v) in &self.0 {
//!             b.extend_from_slice(&(k.len() as u32).to_le_bytes());
//!             b.extend_from_slice(k.as_bytes());
//!             b.extend_from_slice(&v.to_le_bytes());
//!         }
//!         b
//!     }
//!     fn restore(&mut self, mut s: &[u8]) -> Result<(), RestoreError> {
//!         let mut map = BTreeMap::new();
//!         while !s.is_empty() {
//!             let n = u32::from_le_bytes(s.get(..4).ok_or("short")?.try_into()?) as usize;
//!             let k = std::str::from_utf8(s.get(4..4 + n).ok_or("short")?)?.to_owned();
//!             let v = u64::from_le_bytes(s.get(4 + n..12 + n).ok_or("short")?.try_into()?);
//!             map.insert(k, v);
//!             s = &s[12 + n..];
//!         }
//!         self.0 = map;
//!         Ok(())
//!     }
//!     fn digest(&self) -> u64 {
//!         // Over the sorted map: the same state gives the same digest everywhere.
//!         self.0.iter().fold(fnv_start(), |h, (k, v)| fnv(fnv(h, k.as_bytes()), &v.to_le_bytes()))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let replica = Replica::start(GroupName::new("counters")?, Counters::default())?;
//! loop {
//!     // Gate writes: only the side of a partition with a majority of the 3 nodes.
//!     if replica.view().is_some_and(|v| has_majority(&v, 3)) {
//!         // Resolves once applied here, in the agreed order.
//!         let version = replica.submit("requests")?.wait(Duration::from_secs(10))?;
//!         let n = replica.read(|c| c.0.get("requests").copied());
//!         println!("v{version}: requests = {n:?}");
//!     }
//!     while let Some(event) = replica.next_event(Duration::from_secs(1)) {
//!         match event {
//!             Event::View(v) => println!("{v}"),
//!             Event::Synced { source, summary, .. } => println!("in sync on {source}'s {summary}"),
//!             Event::Restored { previous, current, discarded, .. } => {
//!                 println!("state replaced: {previous} -> {current}");
//!                 for d in discarded {
//!                     println!("lost own write #{}: {:?}", d.seq, d.op);
//!                 }
//!             }
//!             Event::Diverged { summaries, .. } => eprintln!("divergence: {summaries:?}"),
//!             _ => {}
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # What CPG guarantees, and what the layer derives from it
//!
//! Only three things are agreed between members (DESIGN facts 23 and the group
//! layer's [`View`](crate::group::View)): the member list of each view; the order of
//! the messages delivered in a view; and, for members that move together from one view
//! to the next, the set of messages delivered in it (virtual synchrony). View ids,
//! joined/left lists and clocks are local. So every decision of the protocol is made at
//! a delivery, from the member list and the messages delivered since the view began:
//! every member of the view makes the same decision at the same point of the order.
//!
//! # Rounds
//!
//! Every view starts a round. A round is identified by a [`RoundId`]: the coordinator,
//! the coordinator's own id of the view (unique for it), and the attempt in the view.
//! The coordinator of attempt `k` is member `k mod n` of the sorted member list.
//!
//! 1. The coordinator sends *start* with the hash of the member list. A start with
//!    another list, from another member, or for another attempt is stale and dropped.
//! 2. At the start every member sends its *summary*: [`Summary`] = the state's version
//!    (operations applied along its history, kept by the layer) and
//!    [`digest`](Replicated::digest).
//! 3. At the delivery of the last member's summary every member calls
//!    [`choose`](Replicated::choose) on the same candidates (sorted by member; default
//!    [`choose_highest_version`]: the longest history, ties to the lowest member). If
//!    every summary equals the chosen one, the round ends here: nothing is sent.
//! 4. Otherwise the chosen member (the source) takes a [`snapshot`](Replicated::snapshot)
//!    at exactly that point and sends a header (summary, length, number of chunks, and
//!    per origin member the ranges of its sequence numbers the history holds) and the
//!    chunks ([`Config::chunk_size`], 256 KiB by
//!    default, so states far above the 1 MiB message limit work). At the last chunk,
//!    every member whose summary differs [restores](Replicated::restore) it
//!    ([`Event::Restored`]); the round ends ([`Event::Synced`]).
//!
//! Operations delivered from the view change to the end of the round are queued and
//! applied after it, in the agreed order, on top of the chosen state: no member
//! applies an operation twice or skips one. If the view changes during a round, the
//! queued operations are applied to the local state first (they were delivered to
//! every member that moves on together) and a new round starts. A message of an
//! earlier round or view (a member's sends can be ordered after a view change it had
//! not yet seen) does not match the current round and is dropped
//! ([`Stats::stale`]).
//!
//! # Deadlines
//!
//! A round that makes no progress (no start, summary or chunk) for
//! [`Config::round_timeout`] makes the member send a *trouble* report for its attempt
//! and stage. The first report delivered for the current attempt and stage acts, at
//! the same point for everyone (later ones are stale):
//!
//! - while collecting summaries: the round decides with the summaries delivered so
//!   far. A silent member (a ghost: a stopped process still in the view) cannot stall
//!   the group; it cannot win either, and it receives the state if it wakes up;
//! - while waiting for the start or for the state: the next attempt begins, with the
//!   next coordinator. The source dying mid-transfer needs no deadline: its departure
//!   is a view change, so a new round starts at once without it;
//! - after [`Config::max_attempts`] failed attempts in one view the member gives up
//!   ([`Event::GaveUp`]) and the driver leaves and joins again ([`Effect::Rejoin`]).
//!
//! A member that cannot restore a state leaves and joins again at once.
//!
//! # Merges, and writes in a minority
//!
//! When two histories meet (a healed partition, a daemon restarted that formed a ring
//! alone first), the first round of the merged view picks one of them by
//! [`choose`](Replicated::choose); every member on the other side restores it and is
//! told [`Event::Restored`] with its own operations that the chosen history does not
//! contain ([`Discarded`]), exactly: the source's header lists, per origin member, the
//! ranges of sequence numbers its history holds (one range, unless some of that
//! member's operations were applied only elsewhere), and every own operation (among
//! the last [`Config::own_log_limit`]) that the replaced history held and the new one
//! does not is reported. No own operation leaves the state without being reported; a
//! later merge can bring a discarded one back, when the history that wins has it. Operations of the losing side are not replayed: the application decides
//! what to do with them (submit again, report, drop).
//!
//! Whether to accept writes in a minority is the application's policy. Accepting them
//! keeps every side available and loses the losing side's writes at the merge (the
//! default rule prefers the longest history, so the busier side wins, not necessarily
//! the larger). Gating writes on [`has_majority`] of the configured nodes means at most
//! one side accepts new writes, so an acknowledged write survives the merge; the
//! minority then serves stale reads, or none. Operations in flight when the partition
//! happened can still be applied on the minority side, so a service that must never
//! lose an acknowledged write should also encode its own epoch in the state and choose
//! by it.
//!
//! # Verification
//!
//! [`Replica::verify`] (and, every [`Config::verify_interval`], the leader) sends a
//! *verify* message. At its delivery every member computes its summary (the same point
//! of the agreed order for all) and sends it as a *digest*; once all are delivered,
//! each member reports [`Event::Verified`], or [`Event::Diverged`] and a new round
//! starts that brings everyone to one state. Verification during a round is skipped.
//!
//! # Wire format
//!
//! Inside each group-layer payload: the magic byte `R`, the protocol version
//! ([`PROTOCOL_VERSION`]), the byte order (`1`: little-endian, the only one written or
//! accepted), the kind (1 start, 2 summary, 3 state header, 4 chunk, 5 operation, 6
//! trouble, 7 verify, 8 digest), then the fields, little-endian. A message with a
//! newer version is refused, not misread ([`Event::Refused`]); the member is left out
//! of the view's rounds.
//!
//! # Reads and threads
//!
//! [`Replica::read`] reads the local copy: between rounds it holds every operation
//! applied so far in the agreed order; during a round ([`Phase::Syncing`]) it is the
//! state from before it. [`Replica`] runs the machine on a thread of its own and calls
//! the application's methods there (with the state locked); it connects in the network
//! namespace of the thread that starts it, like [`Group`](crate::group::Group).
//!
//! # Measured
//!
//! On the 3-node test cluster (debug build, 2 cores shared with other builds, four
//! runs): a replica started late caught up with a 4 MB state in 0.06 to 0.30 s while
//! two others wrote (190 to 1,200 writes during the catch-up, all applied once); a
//! 32 MB state went to a joiner in one round of 0.26 to 2.6 s (12 to 123 MB/s,
//! depending on the load of the shared cores); when its first source was SIGKILLed
//! mid-transfer the joiner was in sync 3.0 to 4.8 s after the kill (token timeout
//! included); after a partition with writes on both sides healed, all three were in
//! sync 1.1 to 1.9 s after the heal, the minority told of each of its 315 to 648 lost
//! writes; after a daemon kill and immediate restart, 2.4 to 3.2 s. The tests print
//! these:
//!
//! ```text
//! cargo test -p cpg --features tokio --test replica_catchup --test replica_faults -- --nocapture
//! ```
//!
//! (A run on 2026-11-30 on a quiet machine: 4 MB caught up 54 ms after joining with
//! 1,451 writes meanwhile, a 32 MB round in 0.24 s (131 MB/s), in sync 2.45 s after
//! the source was killed, 0.86 s after a heal with 600 lost writes reported, 2.7 s
//! after a daemon kill and restart.) A copy of the `kv` example stopped with SIGSTOP
//! (a ghost its daemon keeps in the group) held up the next round by its 10 s deadline
//! only (10.1 to 10.2 s), then caught up once continued (`cargo test -p cpg-examples
//! --test replica -- --nocapture`).

mod app;
mod blocking;
mod driver;
mod event;
mod machine;
#[cfg(test)]
mod machine_tests;
#[cfg(feature = "tokio")]
mod tokio;
mod wire;

#[cfg(feature = "tokio")]
pub use self::tokio::{AsyncReplica, AsyncTicket};
pub use app::{
    choose_highest_version, has_majority, Candidate, OpInfo, Replicated, RestoreError, Summary,
};
pub use blocking::{Replica, ReplicaBuilder, Ticket};
pub use driver::ReplicaError;
pub use machine::{Config, Discarded, Effect, Event, Failure, Machine, Phase, Stats};
pub use wire::{fnv, fnv_start, RoundId, PROTOCOL_VERSION};
