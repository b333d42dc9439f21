//! Safe Rust bindings to Corosync's **closed process group** library (libcpg).
//!
//! A closed process group is a named set of processes across a Corosync cluster. Every
//! member receives every message sent to the group in the same (agreed) order, and
//! learns about members that join, leave, crash, or lose their node (virtual
//! synchrony).
//!
//! - [`Handle`] owns a connection to the local daemon and finalizes it on drop.
//! - Callbacks are closures ([`Handle::builder`]) or a [`Callbacks`] value; they run
//!   inside [`Handle::dispatch`], borrow the received data (no copies, no allocation)
//!   and may send, join and leave through their [`ConnectionRef`].
//! - [`GroupName`] keeps names as bytes with a length: `"foo"` and the C convention
//!   `"foo\0"` are different groups, both reachable on purpose.
//! - [`Error`] names the failed operation and the libcpg code, and answers
//!   [`is_retryable`](Error::is_retryable) and [`is_daemon_lost`](Error::is_daemon_lost).
//! - Async code (feature **`tokio`**, off by default): `AsyncHandle` is a stream of
//!   owned `Event`s over tokio's `AsyncFd`, with sends that wait out back-pressure on
//!   tokio's timer and `AsyncSender`s for other tasks; see the `cpg::tokio` module.
//!   Enable it with `cpg = { version = "0.2", features = ["tokio"] }`.
//! - [`group`]: views with a leader, eviction, reconnect, an ordered send queue,
//!   confirmed sends and corosync's quorum agreed in the delivery order, as a state
//!   machine with a blocking and a tokio driver.
//! - [`replica`]: replicated state on top of [`group`] that converges after every
//!   membership change: catch-up, chunked state transfer, merge after a partition.
//! - `quorum` (feature **`quorum`**, on by default): the cluster's quorum from
//!   corosync's quorum service: whether this partition is quorate, and every change,
//!   with callbacks or (with `tokio`) as a stream; see the `cpg::quorum` module. The
//!   [`group`] layer reads it by default. It links libquorum: a program that needs CPG
//!   only sets `cpg = { version = "0.2", default-features = false }` (the group layer
//!   then ignores quorum).
//! - `votequorum` (feature **`votequorum`**, off by default): votes, expected votes,
//!   the quorum's flags and the calls of a quorum device, from corosync's votequorum
//!   service; see the `cpg::votequorum` module.
//! - `cmap` (feature **`cmap`**): corosync's configuration and runtime database: typed
//!   keys (`totem.cluster_name`, the node list), iteration, tracking of changes, and
//!   the node list's names for node ids; see the `cpg::cmap` module.
//! - `cfg` (feature **`cfg`**): corosync's administration service: the local node id,
//!   each node's links, config reload, and shutdown requests a service can answer; see
//!   the `cpg::cfg` module.
//! - Logging (feature **`tracing`**, off by default): the [`group`] and [`replica`]
//!   layers say what they do through `tracing`; see [Logging](#logging).
//!
//! # Example
//!
//! ```no_run
//! use cpg::{DispatchMode, GroupName, Handle};
//!
//! let handle = Handle::builder()
//!     .on_deliver(|_cpg, msg| {
//!         println!("{} from node {} pid {}", msg.data.escape_ascii(), msg.nodeid, msg.pid)
//!     })
//!     .on_confchg(|_cpg, change| {
//!         for gone in change.left {
//!             println!("node {} pid {} left: {}", gone.nodeid(), gone.pid(), gone.reason());
//!         }
//!     })
//!     .build()?;
//!
//! let group = GroupName::new("my-service")?;
//! handle.join(&group)?;
//! handle.send(b"hello")?;
//! loop {
//!     handle.dispatch(DispatchMode::One)?;
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! This example and the others in these docs that talk to corosync are `no_run`:
//! `cargo test --doc` compiles them but does not run them, since they need a running
//! daemon (and most never return). The tests in `cpg/tests` make the same calls against
//! private daemons, and `examples/README.md` says how to start one to try them on.
//!
//! # Threads
//!
//! Callbacks run on the thread that calls `dispatch`, which needs [`DISPATCH_STACK`]
//! (1 MiB + 64 KiB) of stack left: libcpg's receive buffer lives there, in a frame
//! without stack probes, so a dispatch on a smaller stack is refused with
//! [`Error::StackTooSmall`] instead of writing past the guard page. A handle is
//! `Send`, not `Sync`. libcpg's process-global state (its handle tables, the umask
//! that zero-copy allocation changes) is serialized inside this crate, and a handle
//! inherited through `fork` refuses every call in the child ([`Error::Forked`]).
//!
//! # Logging
//!
//! With the feature **`tracing`** (`cpg = { version = "0.2", features = ["tracing"]
//! }`) the [`group`] and [`replica`] layers emit `tracing` events; a program shows them
//! with a subscriber, for example `tracing-subscriber` filtered by `RUST_LOG`
//! (`RUST_LOG=cpg=debug`, or `cpg::replica=info`). Without the feature the crate has
//! neither the dependency nor the code. Without a subscriber the events cost a check of
//! a global level each, and the deliver path logs nothing per message.
//!
//! Every event is inside a span that names its group, so that concurrent groups of one
//! process stay apart: `cpg_group` (target `cpg::group`) for a [`group::Group`] or
//! `AsyncGroup`, `cpg_replica` (target `cpg::replica`) for a replica, each with the
//! fields `group` (the name), `node` (the local node id, once known) and `pid`. The
//! spans are at level ERROR so that every event a filter lets through keeps them.
//!
//! | target | level | what |
//! |---|---|---|
//! | `cpg::group` | info | a view installed (`view`, `members`, `leader`, `joined`, `left`); reconnected (`incarnation`); the agreed quorum changed (`view`, `index`, `quorate`); the own, requested leave |
//! | `cpg::group` | warn | the daemon lost (`error`); evicted (`view`), and stopped after it; a malformed message (`from`, `len`) |
//! | `cpg::group` | error | gave up reconnecting, or stopped on a failure (`error`) |
//! | `cpg::group` | debug | a view settled in its ring; back-pressure, once a second while sends are refused (`pauses`, `refused`, `total_ms`, `longest_ms`, `ongoing_ms`); a failed connection attempt; the local daemon's quorum notifications |
//! | `cpg::replica` | info | a round ended (`round`, `source`, `version`, `digest`, `transferred`, `bytes` of state received, `elapsed_ms` since the view); this member's state replaced by another's, in a catch-up or a merge (`source`, `previous`, `current`, `discarded`) |
//! | `cpg::replica` | warn | a round failed (`attempt`, `why`); a member of a newer protocol refused; a malformed message |
//! | `cpg::replica` | error | own operations discarded by a merge (`discarded`, `first_seq`); members that diverged (`summaries`); a view given up on |
//! | `cpg::replica` | debug | a round starts; a verification passed; the view applied to the state |
//!
//! What a peer can make a member log is bounded: malformed messages are logged 10 per
//! 5 seconds per group and layer, then one warning per 5 seconds with the count of
//! those not logged (`suppressed`); changes of the agreed quorum (which a peer's
//! markers can flip) the same way, at info. Messages, confirmations and applied
//! operations log nothing.
//!
//! # Requirements
//!
//! A running corosync daemon (2.4 or later) that lets this user connect (root, or a
//! `uidgid` entry in corosync's configuration).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod callbacks;
#[cfg(feature = "cfg")]
#[cfg_attr(docsrs, doc(cfg(feature = "cfg")))]
pub mod cfg;
#[cfg(feature = "cmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "cmap")))]
pub mod cmap;
mod connection;
mod dispatch;
mod error;
mod fd;
pub mod group;
mod handle;
mod iter;
mod layer;
mod link;
mod name;
mod options;
mod process;
#[cfg(feature = "quorum")]
#[cfg_attr(docsrs, doc(cfg(feature = "quorum")))]
pub mod quorum;
pub mod replica;
pub mod retry;
mod sender;
// The shared core of the other services' handles; each service's feature is listed.
#[cfg(any(
    feature = "quorum",
    feature = "votequorum",
    feature = "cmap",
    feature = "cfg"
))]
mod service;
mod stack;
// Logging through `tracing` (feature `tracing`): macros that vanish without it.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
mod trace;
mod types;
#[cfg(feature = "votequorum")]
#[cfg_attr(docsrs, doc(cfg(feature = "votequorum")))]
pub mod votequorum;
mod zcb;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use crate::tokio::{AsyncBuilder, AsyncHandle, AsyncSender, Event, EventRef};
pub use callbacks::{Callbacks, Closures, OnConfchg, OnDeliver, OnTotemConfchg, Unset};
pub use connection::{ConnectionRef, MAX_SEND_BUFFERS};
pub use error::{CsError, Error, Operation, OsError, Result, Service};
pub use handle::Handle;
pub use iter::{AllMembers, GroupMember, GroupMembers, Groups};
pub use name::GroupName;
pub use options::{Builder, Options};
pub use process::{MAX_HANDLES, MAX_LIVE_BUFFERS};
pub use sender::Sender;
pub use stack::DISPATCH_STACK;
pub use types::{
    Confchg, DispatchMode, Dispatched, FlowControl, Guarantee, ListedMember, Member, Message,
    Reason, RingId, TotemConfchg,
};
pub use zcb::ZeroCopyBuffer;

/// The raw bindings this crate is built on.
pub use corosync_sys as sys;
