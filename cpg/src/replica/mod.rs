//! Replicated state that converges after every membership change: catch-up of new
//! members, chunked state transfer, and merge after a partition or a daemon restart.
//!
//! The application keeps its state in a type that implements [`Replicated`]: apply an
//! operation (and return its outcome), take a snapshot, restore one, compute a
//! digest, and optionally learn each view's members at an agreed point of the history
//! and choose whose state wins a merge. The layer, built on [`group`](crate::group),
//! makes every member apply the same operations in the same order, and after every
//! view change brings all members of the new view to one state. A submitter's ticket
//! resolves with what `apply` returned; a read can wait for everything acknowledged
//! before it ([reads](#reads)). Operations and snapshots are bytes: the core needs no
//! serialization library.
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
//! protocol): writes only where corosync's quorum permits them (see
//! [Quorum](#quorum)), reads from the local copy.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use cpg::replica::{fnv, fnv_start, Event, OpInfo, Replica, ReplicaError, Replicated, RestoreError};
//! use cpg::GroupName;
//!
//! #[derive(Default)]
//! struct Counters(BTreeMap<String, u64>);
//!
//! impl Replicated for Counters {
//!     /// An increment's outcome: the counter's new value.
//!     type Output = u64;
//!
//!     fn apply(&mut self, op: &[u8], _info: &OpInfo) -> u64 {
//!         // An operation is the name of the counter to increment.
//!         let n = self.0.entry(String::from_utf8_lossy(op).into_owned()).or_default();
//!         *n += 1;
//!         *n
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
//!     // Resolves once applied here, in the agreed order, with what `apply` returned
//!     // for it; refused on a side of a partition that is not quorate.
//!     match replica.submit("requests").and_then(|t| t.wait(Duration::from_secs(10))) {
//!         Ok(done) => println!("v{}: requests = {}", done.version, done.output),
//!         Err(ReplicaError::NotQuorate) => println!("not quorate: not applied, retry later"),
//!         Err(e) => return Err(e.into()),
//!     }
//!     // Sees every increment acknowledged anywhere in the view before the call.
//!     let n = replica.read_ordered(Duration::from_secs(10), |c| c.0.get("requests").copied())?;
//!     println!("requests = {n:?}");
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
//! 2. At the start every member sends its *summary*: [`Summary`] = the state's quorum
//!    epoch and version (both kept by the layer: see [Quorum](#quorum); the version
//!    counts the operations applied along its history),
//!    [`digest`](Replicated::digest) and [`merge_hint`](Replicated::merge_hint).
//! 3. At the delivery of the last member's summary every member calls
//!    [`choose`](Replicated::choose) on the same candidates (sorted by member; default
//!    [`choose_highest_epoch`]: the highest quorum epoch, then the highest merge hint,
//!    then the longest history, ties to the lowest member). If every summary equals
//!    the chosen one, the round ends here: nothing is sent.
//! 4. Otherwise the chosen member (the source) takes a [`snapshot`](Replicated::snapshot)
//!    at exactly that point and sends a header (summary, length, number of chunks, and
//!    per origin member the ranges of its sequence numbers the history holds) and the
//!    chunks ([`Config::chunk_size`], 256 KiB by
//!    default, so states far above the 1 MiB message limit work). Only the members
//!    whose summary differs keep the chunks; every member checks each against the
//!    header (see [Bounds](#bounds)). At the last chunk, every member whose summary
//!    differs [restores](Replicated::restore) it and checks that the restored state
//!    has the announced digest and merge hint ([`Event::Restored`]); the round ends
//!    ([`Event::Synced`]).
//! 5. Every member then applies the view to the state
//!    ([`apply_view`](Replicated::apply_view), [`Event::ViewApplied`]; once per
//!    view: see [Membership in the state](#membership-in-the-state)).
//!
//! Operations delivered from the view change to the end of the round are queued and
//! applied after it, in the agreed order, on top of the chosen state: no member
//! applies an operation twice or skips one. Changes of the agreed quorum delivered
//! meanwhile are queued with them, and take effect in their place. If the view changes during a round, the
//! queued operations are applied to the local state first (they were delivered to
//! every member that moves on together) and a new round starts (the outcomes of
//! own operations among them wait for it: see [Results](#results); a change of the
//! agreed quorum among them takes effect without advancing the quorum epoch: see
//! [Quorum](#quorum)). A message of an
//! earlier round or view (a member's sends can be ordered after a view change it had
//! not yet seen) does not match the current round and is dropped
//! ([`Stats::stale`]).
//!
//! # Membership in the state
//!
//! A lock, lease, session or queue service must free what a departed member held, and
//! every member must do it at the same point of the history, or their states (and
//! the answers they give) part. [`Replicated::apply_view`] is that point: at the end
//! of the round that synchronises a view (step 5 above), every member of the view
//! calls it with the view's sorted member list ([`ViewChange`]), on the same state,
//! at the same version, before any operation delivered after the view change. An
//! implementation frees every holder that is not in the list; the operations it
//! applies after the call see the holders freed. So, exactly:
//!
//! - **before the call**: every operation delivered before the view change, in the
//!   views the history went through. That includes a departed member's last
//!   operations (CPG delivers everything a member sent before its departure before
//!   the change, to all that move on together): what it took just before it failed
//!   is freed by the call too;
//! - **after the call**: every operation delivered after the view change, in the
//!   agreed order, until the next call. That includes the operations a member sent
//!   before it saw the change (its sends are ordered where CPG orders them, which can
//!   be after a change it had not yet seen): a `LOCK` sent while the departed holder
//!   still looked alive is applied once its lock is free, on every member alike. It
//!   also includes the operations of a member that joined in the view;
//! - **not shown**: a view whose round never ended (the view changed again during
//!   it, or its members gave up, [`Event::GaveUp`]). Operations delivered in it are
//!   applied (to the local state, as above) before the next call, which shows the
//!   next synchronised view's list. So the operations applied after a call can come
//!   from a member that is not in its list (it joined in a view that was never shown,
//!   maybe left again): free by "not in the list", never by "left since the previous
//!   call".
//!
//! With a state transfer, the source's snapshot is taken at the decision, before the
//! call; every member that restores it makes the call after restoring, on the state
//! the others make it on, so a restored member ends with the same state as the rest.
//! A round that fails and is tried again makes the call once, at the end of the
//! attempt that succeeds; later rounds in the same view (after a divergence found by
//! a verification) do not make it again: the chosen state already holds it. A member
//! that gives up, or whose restore fails, leaves and joins again; the others see it
//! leave (a view without it: its holdings are freed there, if that view's round ends)
//! and come back (a later view), and it takes their state. Its identity, (node id,
//! pid), stays the same across such a rejoin (and across a reconnect after its daemon
//! restarted): a member that is back before a round ended without it keeps what it
//! held.
//!
//! Every member of the view is in the list, also one that does not speak (a stopped
//! process stays a member until CPG removes it, and so do its holdings). The call
//! does not count as an operation: the version is unchanged (a minority's history
//! cannot grow longer than the majority's by its view changes alone), and
//! [`ViewChange::version`] is the version it came at.
//!
//! Each side of a partition makes the call for its own views: the minority frees, in
//! its copy, what the majority's members held. A service that must not act on a
//! minority's view checks [`ViewChange::has_majority`] in `apply_view` (the same
//! answer on every member) and counts its majority views in a
//! [merge hint](Replicated::merge_hint), so that the majority's history wins the
//! heal (see [Merges](#merges-and-writes-in-a-minority)); the `lock` example does
//! both.
//!
//! # Results
//!
//! [`Replicated::apply`] returns an [`Output`](Replicated::Output); the submitter's
//! ticket ([`Ticket`], or `AsyncTicket` with the feature `tokio`) resolves with an
//! [`Outcome`]: the version after the operation and the output computed here, on the
//! same state every member of the view applies it to, so with the value every member
//! computed. (The machine hands it out with [`Machine::poll_event_and_output`].)
//!
//! One case needs care: when the view changes during a round, the queued operations
//! are applied to the state each member holds, and the next round may replace it (a
//! joiner's, or the losing side's of a merge); an output computed there may not be
//! the one the agreed history computed. So the outcome of an own operation applied
//! then waits for the next round that ends: if this member's state was kept (chosen,
//! or equal to the chosen one), the ticket resolves with it; if it was replaced, the
//! ticket resolves with [`ReplicaError::NoOutput`] when the state taken holds the
//! operation (its effect is there, its output unknown here: read the state) and
//! [`ReplicaError::Discarded`] when it does not. The same two errors end the tickets
//! of own operations delivered while this member could not apply them (a failed
//! restore).
//!
//! What "every member computed" covers: CPG orders a view's messages alike for the
//! members that move on together to the next view, and only for them. When a view
//! ends in a split (a partition; a node whose daemon missed the others' last messages
//! while the ring re-formed, which corosync then skips), each side may deliver the
//! view's last messages differently, the own ones included. An outcome reported on
//! one side is the one its side computed; if that side's history later loses the
//! merge and the winning history holds the operation too, its outcome there can
//! differ (a lock granted here, held by another there), and nothing tells the
//! ticket. (The nemesis saw it: a node cut off from another delivered its own last
//! operations without the other's, which the other side applied in between.) Such an
//! operation was applied just before this member's view changed, and its history
//! then loses the merge: with writes gated on a majority (see
//! [Merges](#merges-and-writes-in-a-minority)), this member is then on the minority
//! side, and a service must treat what it answered just before its view lost the
//! majority as undone (the `lock` example's fencing says how).
//!
//! # Reads
//!
//! [`Replica::read`] reads the local copy at once: between rounds it holds every
//! operation applied here so far in the agreed order, which lags what other members
//! have applied (and acknowledged) by the operations in flight; during a round
//! ([`Phase::Syncing`]) it is the state from before it. [`Replica::read_ordered`] (and
//! [`Replica::barrier`]) first passes a *read barrier*: it waits until everything
//! ordered before the call is applied here, on the state the view agreed on: every
//! operation that any member of the view had applied when the call was made (so
//! every write acknowledged to any client), and this member's own submitted before
//! it. (A message sent after another was delivered anywhere in the ring is ordered
//! after it: the token that orders it has seen the other.)
//!
//! Use `read_ordered` where an answer must reflect what another member's client may
//! just have been told (who holds a lock, whether a name is taken, a balance after a
//! transfer): after `UNLOCK` is acknowledged on one node, a `read` on another node
//! may still see the lock held, a `read_ordered` does not. Use `read` for what may
//! lag (a display, a hint, a read that a write of this member just preceded: a
//! resolved ticket means applied here), and where the answer must come at once
//! (`read_ordered` waits for the end of a round in progress). On the minority side
//! of a partition both read the minority's state.
//!
//! A barrier costs one small message (a *marker*; not applied, no version): this
//! member's marker, delivered back in the agreed order, passes every barrier called
//! before it was sent. Barriers called before the marker leaves share it; those
//! called while it travels share the next, which is sent when it comes back: a
//! member has at most one marker in flight, however many barriers wait
//! ([`Stats::marks_sent`]). A barrier that waits during a round passes when the round
//! ends; one whose marker came in a round cut short by a view change passes at the
//! end of the next round (not on the state this member held meanwhile). If the group
//! layer loses the marker (the daemon was lost with it sent), its barriers fail with
//! [`ReplicaError::NotSent`]: call again.
//!
//! # Changes
//!
//! Own operations are reported [`Event::Applied`], view changes
//! [`Event::ViewApplied`], replaced states [`Event::Restored`]. A front end that
//! reacts to other members' writes sets [`Config::report_changes`]: every operation
//! applied here is then reported [`Event::Changed`] (origin, sequence number,
//! version), in the order applied. It is off by default: one event per operation,
//! kept until read.
//!
//! # Deadlines
//!
//! Each stage of a round has [`Config::round_timeout`] from its start: waiting for the
//! start (from the view change or the failed attempt), collecting summaries (from the
//! first start of the attempt: summaries, and a coordinator starting again, do not
//! extend it), waiting for the state's header (from the decision), and between two
//! chunks. A transfer also has an overall deadline, from its header: the round
//! timeout plus the announced length at [`Config::min_transfer_rate`]; chunks do not
//! extend it. A member whose deadline passes sends a *trouble* report for its
//! attempt and stage. The first report delivered for the current attempt and stage
//! acts, at the same point for everyone (later ones are stale):
//!
//! - while collecting summaries: the round decides with the summaries delivered so
//!   far. A silent member (a ghost: a stopped process still in the view; a member
//!   that does not speak this protocol) cannot stall the group; it cannot win
//!   either, and it receives the state if it wakes up;
//! - while waiting for the start or for the state: the next attempt begins, with the
//!   next coordinator. The source dying mid-transfer needs no deadline: its departure
//!   is a view change, so a new round starts at once without it;
//! - after [`Config::max_attempts`] failed attempts in one view the member gives up
//!   ([`Event::GaveUp`]) and the driver leaves and joins again ([`Effect::Rejoin`]).
//!
//! A member that let a deadline pass without a word (the coordinator that did not
//! start, the members whose summaries were missing at the decision) is *silent* for
//! the rest of the view: later collections and verifications do not wait for it, and
//! it is not the coordinator of a later attempt (it still takes part when it speaks
//! in time, and receives the state). So a member that joined the group and never
//! speaks holds a round for one deadline, even as the coordinator of the first
//! attempt. (Several such members that are the coordinators of consecutive attempts
//! cost one deadline each.)
//!
//! A member that cannot restore a state leaves and joins again at once. So does one
//! whose restored state does not have the digest the source announced
//! ([`Failure::Damaged`]: a chunk damaged on its way, or a [`snapshot`](Replicated::snapshot)
//! that does not restore to the state it was taken from): it does not report
//! [`Event::Synced`], and its state, no one's history, takes version 0 until the retry
//! replaces it. Operations delivered from the round's start until its next view are
//! not applied to its state (they belong on the chosen one); its own among them are
//! reported applied (or discarded) once it has restored a state that holds them (or
//! does not).

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
//! Where corosync has a quorum provider, the layer decides who writes (see
//! [Quorum](#quorum)): only a quorate side applies writes, and its history, with the
//! higher quorum epoch, wins the merge. Without a provider every epoch stays 0 and
//! writes in a minority are the application's policy. Accepting them keeps every side
//! available and loses the losing side's writes at the merge (the default rule then
//! prefers the longest history, so the busier side wins, not necessarily the larger).
//! Gating writes on [`has_majority`] of the configured nodes means at most one side
//! accepts new writes, so an acknowledged write survives the merge; the minority then
//! serves stale reads, or none. Operations in flight when the partition happened can
//! still be applied on the minority side, so a service that must never lose an
//! acknowledged write should also keep an epoch in the state (say, counted up by
//! [`apply_view`](Replicated::apply_view) in every view with a majority, and refuse
//! writes in `apply` after a view without one) and return it as its
//! [`merge_hint`](Replicated::merge_hint): the default choice prefers the highest hint
//! to the longest history (the `lock` example's `--majority-of` does this).
//! [`choose`](Replicated::choose) sees every candidate's epoch, hint, version and
//! digest, for a rule of its own.
//!
//! # Quorum
//!
//! Whether a side of a partition may write is corosync's decision (its quorum
//! provider, votequorum: votes, `expected_votes`, `two_node`, a quorum device), and it
//! reaches each node on another connection than CPG's events, in either order. The
//! group layer agrees on it in the delivery order ([`AgreedQuorum`](crate::group::AgreedQuorum), see
//! [`group`](crate::group#quorum)): every member that delivers a message in a view
//! computes the same quorum state for it. The replica layer builds on that:
//!
//! - **Gating** ([`Config::gate_writes`], on by default). An operation delivered where
//!   the agreed quorum is [`Pending`](crate::group::AgreedQuorum::Pending) (after a view or ring
//!   change, before the quorum of the new ring is agreed) or
//!   [`NotQuorate`](crate::group::AgreedQuorum::NotQuorate) is applied by no member; its submitter's
//!   ticket fails with [`ReplicaError::NotQuorate`] ([`Event::NotQuorate`]; counted in
//!   [`Stats::not_quorate`]). It was discarded at an agreed point: submitting it again
//!   is safe. `submit` fails at once with the same error while the local daemon says
//!   this node is not quorate ([`Replica::quorum`]: local knowledge, a fast check that
//!   spares the round trip). So an operation submitted just before quorum was lost is
//!   either ordered before the change, and applied everywhere the majority is (or, if
//!   the minority alone delivered it as the view split, reported discarded at the
//!   heal: [`Event::Restored`]), or ordered after it and refused: never silently lost.
//!   After every view change writes are refused until the first quorum marker of the
//!   view is delivered (one marker's round trip once a member has heard of its node's
//!   quorum; the group layer documents the window and what was measured).
//! - **The quorum epoch** ([`Summary::epoch`]): a counter in the state's metadata,
//!   kept by the layer like the version, advanced where the agreed quorum becomes
//!   quorate after pending or not quorate: at the same point of the history on every
//!   member ([`Event::Quorum`], which reports every change of the agreed quorum in the
//!   history's order; a change delivered during a round takes effect after it). Only
//!   on a state the view agreed on: where a view change cuts a round short, the
//!   changes queued in it take effect on each member's own state without advancing
//!   its epoch. (A heal in stages can cut one: the minority meets one node of the
//!   quorate side in a quorate ring, which changes again before the round ends. Had
//!   the minority's own history taken that epoch, it would tie the quorate side's at
//!   the next merge and win it by its length.) It travels in summaries, state
//!   headers and digests; a member that restores a state takes its epoch. The default [`choose`](Replicated::choose),
//!   [`choose_highest_epoch`], prefers the highest epoch, then the merge hint, then the
//!   version: a side that never became quorate during a partition keeps its old epoch
//!   and loses the merge, however long its history (also with gating off, where it
//!   applied writes: they are reported discarded). The epoch counts moves to quorate,
//!   not their time: where both sides were quorate in turn across successive
//!   partitions, the epochs can tie (then hint and version decide) or favour the side
//!   quorate earlier ([`choose_highest_epoch`] has an example). Without a quorum provider (or with
//!   the group layer's [`QuorumPolicy::Ignore`](crate::group::QuorumPolicy::Ignore))
//!   the agreed quorum is [`Free`](crate::group::AgreedQuorum::Free): nothing is refused, the epoch
//!   never moves, and the rule is the one before quorum support (hint, then version).
//!   A state loaded from disk starts from its saved epoch
//!   ([`Config::initial_epoch`]).
//! - **What to read.** [`Replica::agreed_quorum`] is the agreed quorum at the latest
//!   delivery (what an operation delivered now is judged by); [`Replica::quorum`] what
//!   the local daemon last said. `two_node` lets both nodes of a cut two-node cluster
//!   stay quorate (fencing decides, not votes): both then write, and the merge takes
//!   one side's history by epoch, then version.
//!
//! Measured on a 3-node votequorum cluster (token 1 s): partitioned 2|1, with writers
//! on every node through the cut, the cut-off node refused its writes at once once its
//! daemon said not quorate and at their agreed point before that, the two others wrote
//! on, and after the heal all three held the majority's history (`cargo test -p cpg
//! --test replica_quorum -- --nocapture`).
//!
//! # Verification
//!
//! [`Replica::verify`] (and, every [`Config::verify_interval`], the leader) sends a
//! *verify* message. At its delivery every member computes its summary (the same point
//! of the agreed order for all) and sends it as a *digest*; once all are delivered
//! (silent members left out), each member reports [`Event::Verified`], or
//! [`Event::Diverged`] and a new round starts that brings everyone to one state.
//! Verification during a round is skipped. One check per issuer is open at a time: a
//! new request replaces the issuer's open check, unless the issuer has not answered
//! that one itself, and then the new request is dropped (by every member, at the same
//! point).
//!
//! # Bounds
//!
//! What a member holds or does on behalf of its peers is bounded, whatever they send
//! (a buggy member, or one that does not use this crate):
//!
//! - a state transfer: a header above [`Config::max_state_size`] (default 256 MiB) is
//!   refused at once ([`Failure::TooLarge`]), and so is one whose number of chunks
//!   cannot carry its length (an empty state is one empty chunk, every chunk of
//!   another holds a byte or more); every chunk must leave enough bytes for the
//!   chunks still to come, and the last must complete the announced length
//!   ([`Failure::BadTransfer`] at the first that does not). So nothing beyond the
//!   announced length is ever buffered, and only by members that restore the state;
//!   the buffer grows with what arrives, up to that length. Every member sees the
//!   same header and chunks, so the round fails at the same point for all and the
//!   next attempt follows. (A member with a lower `max_state_size` than the others
//!   falls out of step with them until it gives up and rejoins: set it alike.)
//! - time: every stage of a round has a deadline that progress cannot extend (see
//!   [Deadlines](#deadlines)), so a source trickling chunks, a member sending its
//!   summary again and again or a coordinator starting over and over holds a round
//!   for a bounded time, and a member that never speaks for one deadline;
//! - verification: one open check per issuer, as above;
//! - read barriers: another member's markers are dropped at delivery, and a member
//!   has at most one of its own in flight, however many barriers wait;
//! - messages to send: the round messages not yet handed to the driver are dropped
//!   when a new attempt or start begins (they would be stale);
//! - reports: a member's malformed messages are reported once per view
//!   ([`Event::Malformed`]; all counted in [`Stats::malformed`]), a newer member once
//!   ([`Event::Refused`]);
//! - the history's sequence-number ranges: at most 1,024 per origin (more only if an
//!   origin's sequence numbers skip, which this crate's do only where merges
//!   discarded operations); beyond, the oldest are forgotten, and a later merge may
//!   then report one of that origin's operations as discarded although it is kept.
//!
//! Not bounded by the layer: operations delivered during a round are queued until it
//! ends (a bounded time, times the group's delivery rate), and own ones applied when
//! a view changed during a round wait for the next round that ends (with their
//! outputs) while rounds keep failing; the history keeps an entry
//! per process that ever submitted an operation; events queue up until the
//! application reads them; and a member that lies (a wrong digest, a state that is not
//! its own) is believed, as the protocol has no way to tell. A source that keeps
//! breaking its transfers is chosen again in each attempt (choosing another would
//! drop its history), until the members give up and rejoin.
//!
//! What a hostile peer cost before these bounds, and costs now (the tests in
//! `machine_tests/hostile.rs` print it: `cargo test -p cpg --lib
//! replica::machine_tests::hostile -- --nocapture --test-threads 1`):
//!
//! | peer | before | now |
//! |---|---|---|
//! | 96 chunks of 1 MiB after a header of 1 MiB | 128 MiB allocated, round never ends | nothing buffered, round fails at the first chunk |
//! | a header of 1 TiB | 1 GiB reserved | nothing, refused at the header |
//! | a chunk every 9 s | no deadline in 30 minutes | trouble report at 18 s |
//! | 400,000 verify requests, never answered by their issuer | 400,000 checks open, 400,000 digests sent | 1 check, 1 digest |
//! | a coordinator starting again every second, sends held up | 100 summaries waiting, no deadline | 2 messages waiting, trouble at 10 s |
//! | a summary again every 9 s, with a silent member | no deadline in 15 minutes | trouble at 18 s |
//! | a silent coordinator of the first attempt | in sync after 20 s | 10 s |
//! | 30,000 garbage messages from the first member | 30,000 events, in sync after 20 s | 1 event, 10 s |
//! | 100,000 operations with every other sequence number | 100,000 ranges | 1,024 |
//! | a 300 kB state sent to one joiner of three | buffered by all three | by the joiner only |
//!
//! # Wire format
//!
//! Inside each group-layer payload: the magic byte `R`, the protocol version
//! ([`PROTOCOL_VERSION`], 3: version 1 had no merge hints and no markers, version 2
//! no quorum epoch in state headers and digests), the byte
//! order (`1`: little-endian, the only one written or accepted), the kind (1 start, 2
//! summary, 3 state header, 4 chunk, 5 operation, 6 trouble, 7 verify, 8 digest, 9
//! marker), then the fields, little-endian. Summaries, state headers and digests
//! carry the merge hint after the digest; a summary ends with the quorum epoch, a
//! state header carries it after the hint, a digest at its end. A message with a
//! newer version is refused, not misread ([`Event::Refused`]); the member is left out
//! of the view's rounds (and, if it was the coordinator awaited, the attempt begins
//! again with the next one). A message of an older version is not read either (it is
//! [`Event::Malformed`]): version 3 added the epoch to state headers and digests. A state of `len` bytes comes in `chunks` chunks in index order: one
//! empty chunk for an empty state, else chunks of a byte or more.
//!
//! # Threads
//!
//! [`Replica`] runs the machine on a thread of its own and calls the application's
//! methods there (with the state locked); it connects in the network namespace of the
//! thread that starts it, like [`Group`](crate::group::Group).
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

// The rules: a state machine without I/O, the application's side of it, and the
// values it takes and hands out.
mod app;
mod config;
mod event;
mod machine;
#[cfg(test)]
mod machine_tests;
mod own_log;
mod wire;

// The drivers: what both share, then each one.
mod builder;
mod error;
#[cfg(feature = "tracing")]
mod log;
mod shared;

mod blocking;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use self::tokio::{AsyncReplica, AsyncTicket};
pub use app::{
    choose_highest_epoch, choose_highest_hint, choose_highest_version, has_majority, Candidate,
    OpInfo, Outcome, Replicated, RestoreError, Summary, ViewChange,
};
pub use blocking::{Replica, Ticket};
pub use builder::ReplicaBuilder;
pub use config::Config;
pub use error::ReplicaError;
pub use event::{Discarded, Effect, Event, Failure, Phase, Stats};
pub use machine::Machine;
pub use wire::{fnv, fnv_start, RoundId, PROTOCOL_VERSION};
