//! Async (tokio) integration: [`AsyncHandle`], a connection whose events arrive as a
//! stream of owned [`Event`]s and whose sends wait out back-pressure on a timer.
//!
//! # How it works
//!
//! The handle's callbacks copy every event into a queue. The libcpg descriptor is
//! registered with tokio's reactor ([`AsyncFd`]). When the queue is empty and the
//! descriptor is readable, the stream runs non-blocking dispatches, one per event, for
//! a few small events or one large one; only when a dispatch reports nothing pending
//! does it tell tokio that the descriptor is no longer ready, and then waits for the
//! next readiness edge. After
//! [`EVENTS_PER_POLL`] events in a row it yields to the runtime once, so one busy
//! group cannot starve the other tasks of its thread. No call here ever blocks waiting
//! for events.
//!
//! Sends under back-pressure pause on tokio's timer; a pause ends early once events
//! arrive (the daemon's queue is then moving), and always yields to the runtime at
//! least once.
//!
//! # Threads and stacks
//!
//! Dispatching happens on whatever runtime thread polls the stream (or awaits a send,
//! which keeps reading while it waits). libcpg keeps a 1 MiB receive buffer on the stack
//! of `cpg_dispatch`, so those threads need [`DISPATCH_STACK`](crate::DISPATCH_STACK)
//! left; on a thread with less, the stream yields [`Error::StackTooSmall`] (and stays
//! open: nothing was read) instead of letting libcpg write past the stack.
//! Tokio's default worker stack (2 MiB) and libtest's thread under `#[tokio::test]`
//! (2 MiB) have enough, but leave less than 1 MiB for the frames of the task that
//! polls: give the runtime more when that task is deep.
//!
//! ```no_run
//! let runtime = tokio::runtime::Builder::new_multi_thread()
//!     .enable_all() // the reactor (AsyncFd) and the timer (send back-off)
//!     .thread_stack_size(4 << 20)
//!     .build()
//!     .unwrap();
//! ```
//!
//! `#[tokio::main]` runs its top-level future on the main thread (8 MiB on Linux);
//! tasks it spawns run on workers (2 MiB unless configured as above).
//!
//! The runtime needs both the IO driver and the timer (`enable_all`).
//!
//! # Cost
//!
//! Every event of the stream is copied out of libcpg's buffer into an owned [`Event`]
//! (one allocation per message), every event costs one `cpg_dispatch` call (which takes
//! libcpg's handle lock) instead of sharing one with its neighbours, and the runtime
//! adds its own (reactor wake-ups). [`AsyncHandle::read_with`] reads the same events
//! without the copy: it lends each one, borrowed from libcpg's buffer ([`EventRef`]),
//! to a closure, with no allocation per event (in `bench --async --borrow` against the
//! stream: 0.78–0.99× its CPU per message from 320 B to 1 MB; against the blocking
//! two-thread design on three nodes, 0.96–1.00× its throughput from 8000 B to 200 kB,
//! but not at 1 MB, for a reason that is not the copy: the README's "Fourth pass").
//! Where the rest matters, use [`Handle`] with callbacks on a dedicated thread. The
//! benchmark programs' README (`build-support/bench/README.md`) has the measured
//! figures.
//!
//! Where the stream is read matters on the multi-thread runtime. The thread in
//! `Runtime::block_on` (the body of `#[tokio::main]`) never polls the reactor: a worker
//! does, and when the descriptor becomes readable it wakes that thread (a futex wake
//! and a context switch) to read what arrived. A task spawned on the runtime is polled
//! by the worker that saw the readiness, with no second thread woken. A service that
//! reads a busy stream reads it in a spawned task: in `bench --async` on one node that
//! took 0.76–1.03× (median 0.89) the CPU per message of reading in `block_on` with the
//! same loop (the README's one-node table, its two columns of CPU per message).
//!
//! How many threads share the handle's I/O matters too. A delivery wakes the tasks
//! waiting out back-pressure, and readiness wakes the reading task; on one thread those
//! wake-ups stay on it, on a runtime with more workers they cross threads. A reading
//! task and an [`AsyncSender`] task (`bench --async`, the README's "Fifth pass"):
//!
//! - **on three nodes**, where the daemons set the rate, one worker (or a
//!   current-thread runtime) reached 0.96–1.03× the blocking two-thread design's
//!   throughput from 64 B to 200 kB in two runs, at 0.71–0.97× its CPU per message
//!   (reading with `read_with`; 0.94–1.00× with the stream); two workers reached
//!   0.88–0.96× below 8000 B. At 1 MB a send holds its thread until the daemon answers
//!   (1.1–1.6 ms on average, a third of the time in that benchmark), and nothing read
//!   meanwhile: 0.59–0.85× whatever the workers. An [`AsyncSender`] now sends messages
//!   from [`OFFLOAD_FROM`] (256 KiB) up from tokio's blocking pool, and the same client
//!   (`read_with`, one worker) reached 0.95–1.01× at every size from 64 B to 1 MB in
//!   two runs (0.96 and 0.97× at 1 MB; the README's "Sixth pass");
//! - **on one node**, where one client can saturate its daemon and its own CPU sets the
//!   rate, two workers did better below 8000 B (0.83–1.04× with `read_with`, against
//!   0.69–0.78× with one): they send and read in parallel. There a 1 MB send is taken
//!   in far less time, and the copy and hand-off of an offloaded send cost more than
//!   they save: 0.75–0.78× with them, 0.92–0.97× with
//!   [`set_offload_from(None)`](AsyncSender::set_offload_from).
//!
//! So a service on a cluster of several nodes keeps the tasks that do a handle's I/O on
//! one thread, and sends its large messages through an [`AsyncSender`] (an
//! [`AsyncHandle::send`] of any size is made on the task's thread); one that must push
//! a single daemon to its limit gives them more.
//!
//! Messages of hundreds of kilobytes and more cost extra CPU (not throughput) under
//! glibc's allocator: a send that waits out back-pressure queues the events it reads
//! meanwhile, and each time two large messages have been alive at once and are freed,
//! glibc trims its heap and grows it again (page faults). `bench --async
//! --single-thread` (one task that sends with [`AsyncHandle::send`] and reads) on a
//! 3-node cluster: 1 MB messages at 3× the CPU per message of a blocking client that
//! copies them too, 1.2× with glibc's trim and mmap thresholds both raised, for example
//! `GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432`
//! (raising only the trim threshold fixes glibc's mmap threshold at 128 KiB, and then
//! every large message is a fresh `mmap`: 7× on both paths). The same two settings
//! can be made with `mallopt` at start-up, or another allocator used; this crate
//! leaves the process's allocator alone. A task that only reads, while others send
//! through [`AsyncSender`]s, drops each large event before the stream reads the next
//! and does not trim: in `bench --async` (that design) a 1 MB message costs about what
//! it costs a blocking client that copies it too, 1.6–1.7× one that borrows it, and the
//! difference is the copy itself.
//!
//! # Why events pass through a thread-local mailbox
//!
//! The callbacks that copy events out run inside `cpg_dispatch`, behind libcpg's
//! type-erased context pointer, in the state the [`Handle`] owns; the stream's queue is
//! in the `AsyncHandle`. Owning the handle (`AsyncFd<Handle>`) does not give the driver
//! a way to the callbacks' state while `cpg_dispatch` runs, so the two need a hand-off.
//! A queue shared with the callbacks (`Arc<Mutex<..>>`) costs a lock and an unlock per
//! event; a typed accessor from the handle to its callbacks would be a second path into
//! the state that only the trampolines touch. The dispatch is synchronous on the
//! polling thread, so a thread-local slot that the drain empties into the handle's
//! queue right after its dispatches (also when a callback panics) needs no lock and no
//! unsafe code. A dispatch also wakes the tasks of [`AsyncSender`]s waiting out
//! back-pressure, and a waker may poll another handle on the same thread, nested in
//! this drain: each drain sets aside what the slot holds when it begins and puts it
//! back when it ends, so an event only ever reaches the queue of the handle whose
//! dispatch read it.
//!
//! [`AsyncHandle::read_with`] uses the same hand-off the other way round: for the
//! duration of its dispatches a thread-local slot points to its closure, and the
//! callbacks lend each event to it instead of copying it out (a drain of another handle
//! nested in those dispatches sets the slot aside like the mailbox). The closure
//! borrows the caller's state, so the slot holds a pointer with its lifetime erased:
//! the hand-off's one `unsafe` (in `mailbox`), valid because only this thread reads
//! it, only while the drain that set it runs, and the closure is taken out of it while
//! it runs.
//!
//! # Example
//!
//! ```no_run
//! use cpg::{AsyncHandle, Event, GroupName};
//!
//! # async fn run() -> Result<(), cpg::Error> {
//! let mut cpg = AsyncHandle::new()?;
//! let group = GroupName::new("my-service")?;
//! cpg.join(&group).await?;
//! cpg.send(b"hello").await?;
//! while let Some(event) = cpg.next_event().await {
//!     match event? {
//!         Event::Deliver { nodeid, pid, data, .. } => {
//!             println!("node {nodeid} pid {pid}: {}", data.escape_ascii())
//!         }
//!         Event::Confchg { members, .. } => println!("{} members", members.len()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::connection::ConnectionRef;
use crate::error::{Error, Operation, OsError, Result};
use crate::handle::Handle;
use crate::link::RequestGuard;
use crate::name::GroupName;
use crate::options::Options;
use crate::retry::Backoff;
use crate::types::{Guarantee, Member};

mod builder;
mod event;
mod mailbox;
mod sender;

pub use builder::AsyncBuilder;
pub use event::{Event, EventRef};
pub use sender::{AsyncSender, OFFLOAD_FROM};

use mailbox::{drain, drain_to, Drained, Enqueue, Sink};

/// The most events the stream hands out in a row before it yields to the runtime once
/// (returning `Pending` and waking its task at once, so the next poll goes on), so that
/// a task reading a busy stream in a loop cannot starve the other tasks of its thread.
pub const EVENTS_PER_POLL: usize = 64;

/// The most events the stream reads into its queue at once, when it is empty (at least
/// one event is read), with one dispatch each: reading a few in a row saves the
/// stream's per-read work (a readiness check, the hand-off from the callbacks) for all
/// but the first. A read ends with the message that brings it to [`BYTES_PER_READ`], so
/// a large message is the last of its read and the next event is read only once it has
/// been handed out: each large message is read while libcpg's copy of it is still in
/// the cache, and the previous one has usually been dropped by then, so the allocator
/// hands the same memory back (a batch of 64 large messages made glibc grow and trim
/// its heap every time).
const EVENTS_PER_READ: usize = 16;

/// The most message bytes the stream reads into its queue at once (see
/// [`EVENTS_PER_READ`]).
const BYTES_PER_READ: usize = 16 << 10;

/// The most dispatches a send runs between two attempts while it waits out
/// back-pressure.
const EVENTS_PER_SEND_ATTEMPT: usize = EVENTS_PER_POLL;

/// The most message bytes a send reads into the queue in one pause (at least one
/// message is read). Reading keeps what the daemon holds for this client small;
/// reading more only moves messages from libcpg into the queue ahead of the stream,
/// and a queue of many large messages made glibc grow and trim its heap around every
/// pause (5× the CPU per 1 MB message in `bench --async` with a cap of 1,024 events).
const BYTES_PER_SEND_ATTEMPT: usize = 256 << 10;

/// Where the stream is.
#[derive(Debug)]
enum StreamState {
    /// Events may still come.
    Open,
    /// The connection failed: report this once the queued events are out, then end.
    Failed(Error),
    /// The stream has ended.
    Ended,
}

/// Maps an error of tokio's reactor.
pub(crate) fn reactor_error(op: Operation, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno) => Error::Os {
            op,
            source: OsError(errno),
        },
        None => Error::Runtime {
            op,
            message: e.to_string(),
        },
    }
}

/// The reactor that registered the handle failed (its runtime shut down): nothing can
/// be read any more, so the stream ends, and the handle closes in place (it leaves its
/// group and refuses every later request, see `Handle::close_in_place`) so that the
/// end means what the stream's documentation says. Returns the error to report; re-raises
/// the panic of a sender's waker woken by the close, once the state is consistent.
#[cold]
fn reactor_failed(handle: &Handle, stream: &mut StreamState, e: std::io::Error) -> Error {
    *stream = StreamState::Ended;
    if let Some(panic) = handle.close_in_place() {
        std::panic::resume_unwind(panic);
    }
    reactor_error(Operation::Wait, e)
}

/// A connection to the local corosync daemon for async code (tokio): events come as a
/// stream of owned [`Event`]s, sends wait out back-pressure without blocking.
///
/// Read events with [`next_event`](Self::next_event) or as a
/// [`Stream`](futures_core::Stream) of `Result<Event>`, or without copying them with
/// [`read_with`](Self::read_with) (each one lent, borrowed, to a closure); the two
/// mix, each event coming out once, in order. The stream ends after a
/// connection failure: it yields the error (for a lost daemon one for which
/// [`Error::is_daemon_lost`] holds), then `None` forever. A new handle must be made
/// once the daemon is back.
///
/// # Runtime
///
/// A handle is bound to the tokio runtime that was current when it was made: that
/// runtime's reactor (IO driver) registered its descriptor and tells it when events
/// wait, so its stream and its sends' pauses work on any thread of that runtime, as
/// long as it runs. If that runtime shuts down (is dropped) while the handle lives, the
/// handle can no longer read: the first read (or pause of a send) that finds the
/// reactor gone yields its error ([`Error::Runtime`]) and ends the stream, and the handle
/// leaves its group and refuses every later call, also of its
/// [senders](Self::sender), with [`Error::Closed`] (the other members see it leave,
/// and the daemon stops queueing its events). Make a new handle on a running runtime.
/// Dropping the handle finalizes the connection, on any runtime or none.
///
/// # Reading
///
/// Read the stream, also in a service that mostly sends: every message sent to a joined
/// group comes back to its sender too, and the daemon keeps the events a client has not
/// read in its own memory, without limit and without pushing back on the client's sends
/// (see [`Handle`'s reading section](crate::Handle#reading-is-not-optional)).
///
/// # Sending
///
/// [`send`](Self::send) and [`send_vectored`](Self::send_vectored) retry on
/// back-pressure (`CS_ERR_TRY_AGAIN`, `CS_ERR_QUEUE_FULL`) and on interrupted
/// fragmented sends (`CS_ERR_INTERRUPT`), pausing between attempts on tokio's timer
/// with exponential back-off ([`Backoff`], bounded: [`set_backoff`](Self::set_backoff)).
/// While they pause they keep reading this handle's events into the queue (a bounded
/// amount per pause); those events come out of the stream afterwards, in order (see
/// [Reading](Self#reading) for why). A pause
/// ends early when events have been read (messages are being ordered and delivered, so
/// the daemon's queue is moving), but not before it has yielded to the runtime once, so
/// a long wait never monopolizes the thread.
///
/// **Cancellation:** libcpg sends a message in one synchronous call that either hands
/// the whole message to the daemon or fails, and the future awaits only while it sleeps
/// between failed attempts. So a send future dropped before it completed has sent
/// nothing, and one that completed with `Ok` sent the message exactly once. (Messages
/// above [`max_message_size`](Self::max_message_size) are sent by libcpg in fragments,
/// and a failed attempt may have sent some of them; but receivers' libcpg delivers only
/// complete messages, so no member sees part of one, and a retry sends it whole.)
///
/// # Blocking
///
/// Every call is a quick request to the local daemon over shared memory, which
/// returns in microseconds; a send takes longer the larger its message, until the
/// daemon has taken it in (about a millisecond near 1 MiB on three nodes, and the
/// answer may then be back-pressure). An [`AsyncSender`] sends messages of
/// [`OFFLOAD_FROM`] bytes and more from tokio's blocking pool (see its
/// [Large messages](AsyncSender#large-messages)); this handle's own sends run on the
/// polling task's thread. Two cases can hold a runtime thread longer still: a send above
/// `max_message_size` (libcpg sends the fragments one after the other and, under
/// back-pressure, sleeps inside itself between them), and `join`/`leave`/`members`
/// while the local daemon is busy forming a new membership. Once the handle has
/// [senders](Self::sender), a send, join or leave whose attempt finds another request
/// holding the connection's lock first waits for it as a task (an [`AsyncSender`]'s
/// send always does), so such a long request of a blocking sender on another thread
/// does not hold this runtime thread too.
///
/// # Threads
///
/// The handle is `Send`, so a task that owns it can be spawned on the multi-thread
/// runtime; it is not `Sync`, and every method that touches the connection takes
/// `&mut self`. Use one task per handle: receive in a loop and send from the same task
/// (a `tokio::select!` over `next_event()` and a channel of outgoing messages, then
/// `send(..).await` in the branch), or make one handle per task. The thread that polls
/// needs a stack above 1 MiB; see the [module documentation](crate::tokio).
///
/// Dropping the handle deregisters the descriptor from the reactor, then finalizes
/// the connection (the other members see this process leave) and frees the queue.
#[derive(Debug)]
pub struct AsyncHandle {
    /// The handle, owned by its reactor registration: dropping the `AsyncFd` removes
    /// the registration (epoll) while the descriptor is still open, and only then
    /// drops the handle, whose finalize closes it (tokio's documented pattern for a
    /// descriptor that another object owns).
    fd: AsyncFd<Handle>,
    /// Events dispatched and not yet handed out.
    ready: VecDeque<Event>,
    stream: StreamState,
    /// Events handed out since the stream last returned `Pending`.
    events_in_a_row: usize,
    backoff: Backoff,
    backpressure_waits: u64,
}

impl AsyncHandle {
    /// Connects to the local corosync daemon and registers the connection with the
    /// current tokio runtime.
    ///
    /// Fails with [`CsError::Library`](crate::CsError::Library) when no daemon is
    /// running, and [`CsError::Access`](crate::CsError::Access) when it refuses this
    /// user.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver (like
    /// tokio's own constructors). Inside `Runtime::block_on`, a task, or after
    /// `Runtime::enter` is fine.
    pub fn new() -> Result<AsyncHandle> {
        AsyncHandle::with_options(Options::default())
    }

    /// A builder for the options and the back-off, like [`Handle::builder`].
    pub fn builder() -> AsyncBuilder {
        AsyncBuilder::default()
    }

    /// Like [`new`](Self::new), with [`Options`] (for example
    /// [`initial_totem_conf`](Options::initial_totem_conf)).
    pub fn with_options(options: Options) -> Result<AsyncHandle> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            panic!("cpg::AsyncHandle must be created inside a tokio runtime context");
        }
        let handle = Handle::with_options(Enqueue, options)?;
        // SAFETY: `register_with_interest` needs the descriptor to stay open and the
        // same for the registration's whole life. The `AsyncFd` owns the handle, whose
        // descriptor libcpg opened at initialization and closes only in
        // `cpg_finalize`, which runs when the handle drops: after tokio has removed the
        // registration (its Drop and `into_inner` deregister first). `as_raw_fd`
        // always returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(handle, Interest::READABLE) }
            .map_err(|e| reactor_error(Operation::Register, e.into()))?;
        Ok(AsyncHandle {
            fd,
            ready: VecDeque::new(),
            stream: StreamState::Open,
            events_in_a_row: 0,
            backoff: Backoff::default(),
            backpressure_waits: 0,
        })
    }

    /// The next event: waits (without blocking the thread) until one arrives.
    ///
    /// Returns `None` once the stream has ended (after it reported a connection failure
    /// as `Some(Err(..))`). Cancellation-safe: an event is taken off the queue only in
    /// the poll that returns it.
    pub async fn next_event(&mut self) -> Option<Result<Event>> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next event; the building block of
    /// [`next_event`](Self::next_event) and of the [`Stream`](futures_core::Stream)
    /// implementation.
    ///
    /// After [`EVENTS_PER_POLL`] events in a row without a `Pending`, it returns
    /// `Pending` once (and wakes the task at once), so a task that reads a busy stream
    /// in a loop still lets the runtime run other tasks.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        if self.events_in_a_row >= EVENTS_PER_POLL {
            self.events_in_a_row = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = self.poll_next_event(cx);
        match polled {
            Poll::Ready(Some(Ok(_))) => self.events_in_a_row += 1,
            Poll::Pending => self.events_in_a_row = 0,
            Poll::Ready(_) => {}
        }
        polled
    }

    /// [`poll_event`](Self::poll_event) without the budget.
    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        // Dispatches in this poll that produced no event (fragments of a large
        // message); bounded like the events (to within one read).
        let mut empty_dispatches = 0;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            match std::mem::replace(&mut self.stream, StreamState::Ended) {
                StreamState::Open => self.stream = StreamState::Open,
                StreamState::Failed(e) => return Poll::Ready(Some(Err(e))),
                StreamState::Ended => return Poll::Ready(None),
            }
            if empty_dispatches >= EVENTS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    let error = reactor_failed(self.fd.get_ref(), &mut self.stream, e);
                    return Poll::Ready(Some(Err(error)));
                }
            };
            // Small events in batches, large ones one at a time: see
            // `EVENTS_PER_READ`.
            match drain(
                self.fd.get_ref(),
                &mut self.ready,
                EVENTS_PER_READ,
                BYTES_PER_READ,
            ) {
                // Only now is it known that the descriptor has nothing more: tokio waits
                // for the next edge. (An event that arrived after the last dispatch
                // produced a new edge, which tokio keeps.)
                Drained::Empty => guard.clear_ready(),
                // Events, or fragments of one, were read; readiness is kept. (With the
                // queue still empty, every one of the read's dispatches was a fragment.)
                Drained::Budget if self.ready.is_empty() => empty_dispatches += EVENTS_PER_READ,
                Drained::Budget => {}
                // Nothing was read and the connection is fine: the error is this
                // thread's, so the stream stays open for a poll from a thread with room.
                Drained::Failed(e @ Error::StackTooSmall { .. }) => {
                    return Poll::Ready(Some(Err(e)))
                }
                Drained::Failed(e) => self.stream = StreamState::Failed(e),
            }
        }
    }

    /// Reads events without copying them: waits (without blocking the thread) until at
    /// least one is there, then hands each one that is ready, borrowed, to `f`, in
    /// order, and returns how many it handed out. `Ok(0)` means the stream has ended
    /// (after it reported a connection failure as an error), like
    /// [`next_event`](Self::next_event)'s `None`.
    ///
    /// The events are the [`Event`]s of the stream, lent as [`EventRef`]s: a message's
    /// bytes are in libcpg's receive buffer while `f` runs, and nothing is allocated or
    /// copied for it (the stream copies each one into an owned `Event`: see the
    /// [module's "Cost"](crate::tokio#cost)). Events already read into the stream's
    /// queue (by a send waiting out back-pressure, or by a read of the stream, which
    /// takes several small ones at once) come first, lent from there. `f` runs inside
    /// libcpg's dispatch, on the thread that polls: keep it short, and copy what you
    /// keep.
    ///
    /// At most [`EVENTS_PER_POLL`] events per call; a task that reads in a loop yields
    /// to the runtime once every `EVENTS_PER_POLL` events in a row, counted together
    /// with those of [`poll_event`](Self::poll_event), as the stream does. Reading
    /// with this and with [`next_event`](Self::next_event) (or the stream) can be
    /// mixed: every event comes out once, in order, through one or the other.
    ///
    /// **Cancellation:** events are handed to `f` only in the poll that returns them,
    /// so a future dropped before it completed has handed out nothing.
    ///
    /// **Panics** of `f` propagate to the caller once the dispatch has returned. The
    /// event `f` was given counts as read; the events after it stay in the stream, in
    /// order, and the handle stays usable (unlike a panicking callback of a
    /// [`Handle`], which poisons it: this is the reader's code, running after its event
    /// was taken, like code that panics after `next_event` returned).
    ///
    /// ```no_run
    /// use cpg::{AsyncHandle, EventRef, GroupName};
    ///
    /// # async fn run() -> Result<(), cpg::Error> {
    /// let mut cpg = AsyncHandle::new()?;
    /// cpg.join(&GroupName::new("my-service")?).await?;
    /// let mut bytes = 0;
    /// while cpg
    ///     .read_with(|event| match event {
    ///         EventRef::Deliver(message) => bytes += message.data.len(),
    ///         EventRef::Confchg(change) => println!("{} members", change.members.len()),
    ///         _ => {}
    ///     })
    ///     .await?
    ///     > 0
    /// {}
    /// println!("{bytes} bytes, and the stream ended");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_with<F>(&mut self, mut f: F) -> Result<usize>
    where
        F: FnMut(EventRef<'_>),
    {
        poll_fn(|cx| self.poll_read_with(cx, &mut f)).await
    }

    /// Polls [`read_with`](Self::read_with): `Ready` with the count of events handed to
    /// `f` (at least one, or 0 once the stream has ended) or an error, `Pending` with
    /// none handed out.
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        f: &mut dyn FnMut(EventRef<'_>),
    ) -> Poll<Result<usize>> {
        if self.events_in_a_row >= EVENTS_PER_POLL {
            self.events_in_a_row = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let budget = EVENTS_PER_POLL - self.events_in_a_row;
        let mut handed = 0;
        let polled = self.poll_read_with_budget(cx, f, budget, &mut handed);
        match polled {
            Poll::Pending => self.events_in_a_row = 0,
            Poll::Ready(_) => self.events_in_a_row += handed,
        }
        polled
    }

    /// [`poll_read_with`](Self::poll_read_with) handing out at most `budget` events,
    /// counted in `handed` (also when `f` panics).
    fn poll_read_with_budget(
        &mut self,
        cx: &mut Context<'_>,
        f: &mut dyn FnMut(EventRef<'_>),
        budget: usize,
        handed: &mut usize,
    ) -> Poll<Result<usize>> {
        // Dispatches in this poll (one per event, or per fragment of a large message).
        let mut dispatches = 0;
        loop {
            // What the queue holds comes first.
            while *handed < budget {
                let Some(event) = self.ready.pop_front() else {
                    break;
                };
                *handed += 1;
                f(EventRef::from(&event));
            }
            if *handed >= budget {
                return Poll::Ready(Ok(*handed));
            }
            match std::mem::replace(&mut self.stream, StreamState::Ended) {
                StreamState::Open => self.stream = StreamState::Open,
                // Failed: what was handed out first, then the error.
                StreamState::Failed(e) if *handed > 0 => {
                    self.stream = StreamState::Failed(e);
                    return Poll::Ready(Ok(*handed));
                }
                StreamState::Failed(e) => return Poll::Ready(Err(e)),
                StreamState::Ended => return Poll::Ready(Ok(*handed)),
            }
            if dispatches >= EVENTS_PER_POLL {
                if *handed > 0 {
                    return Poll::Ready(Ok(*handed));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Pending if *handed > 0 => return Poll::Ready(Ok(*handed)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    let error = reactor_failed(self.fd.get_ref(), &mut self.stream, e);
                    if *handed > 0 {
                        self.stream = StreamState::Failed(error);
                        return Poll::Ready(Ok(*handed));
                    }
                    return Poll::Ready(Err(error));
                }
            };
            let sink = Sink::new(&mut *f);
            let (drained, ran) = drain_to(
                self.fd.get_ref(),
                &mut self.ready,
                &sink,
                EVENTS_PER_POLL - dispatches,
                budget - *handed,
            );
            *handed += sink.lent();
            dispatches += ran;
            let panic = sink.take_panic();
            let empty = matches!(drained, Drained::Empty);
            match drained {
                // As in the stream: only now is it known that nothing is pending.
                Drained::Empty => guard.clear_ready(),
                Drained::Budget => {}
                // Nothing was read, and the connection is fine (see the stream).
                Drained::Failed(e @ Error::StackTooSmall { .. }) if *handed == 0 => {
                    return Poll::Ready(Err(e))
                }
                Drained::Failed(Error::StackTooSmall { .. }) => return Poll::Ready(Ok(*handed)),
                Drained::Failed(e) => self.stream = StreamState::Failed(e),
            }
            if let Some(panic) = panic {
                // The rest stays where it is: in libcpg, or in the queue.
                std::panic::resume_unwind(panic);
            }
            if empty && *handed > 0 {
                return Poll::Ready(Ok(*handed));
            }
        }
    }

    /// Sends `message` to every group this handle joined, in agreed order, waiting out
    /// back-pressure (see [Sending](Self#sending), including what a dropped future
    /// has sent).
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        self.send_with(Guarantee::Agreed, &[IoSlice::new(message)])
            .await
    }

    /// Sends the concatenation of `buffers` as one message (at most
    /// [`MAX_SEND_BUFFERS`](crate::MAX_SEND_BUFFERS)), waiting out back-pressure.
    pub async fn send_vectored(&mut self, buffers: &[IoSlice<'_>]) -> Result<()> {
        self.send_with(Guarantee::Agreed, buffers).await
    }

    /// Sends with an explicit delivery [`Guarantee`], waiting out back-pressure.
    pub async fn send_with(&mut self, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
        self.retry(|cpg, held| match held {
            Some(request) => cpg.send_with_holding(request, guarantee, buffers),
            None => cpg.send_with(guarantee, buffers),
        })
        .await
    }

    /// Joins `group`, waiting out back-pressure. The join shows up in the stream as an
    /// [`Event::Confchg`] whose `joined` list has this process.
    pub async fn join(&mut self, group: &GroupName) -> Result<()> {
        self.retry(|cpg, held| match held {
            Some(request) => cpg.join_holding(request, group),
            None => cpg.join(group),
        })
        .await
    }

    /// Leaves `group`, waiting out back-pressure.
    pub async fn leave(&mut self, group: &GroupName) -> Result<()> {
        self.retry(|cpg, held| match held {
            Some(request) => cpg.leave_holding(request, group),
            None => cpg.leave(group),
        })
        .await
    }

    /// The current members of `group`, as this node's daemon sees them. A quick
    /// synchronous request to the local daemon.
    pub fn members(&self, group: &GroupName) -> Result<Vec<Member>> {
        self.fd.get_ref().members(group)
    }

    /// The node id of the local node. A quick synchronous request to the local daemon.
    pub fn local_node_id(&self) -> Result<u32> {
        self.fd.get_ref().local_node_id()
    }

    /// This process's own identity in group membership (see
    /// [`ConnectionRef::local_member`]). A quick synchronous request to the local daemon.
    pub fn local_member(&self) -> Result<Member> {
        self.fd.get_ref().local_member()
    }

    /// The largest message libcpg sends in one piece (about 1 MiB); larger ones are
    /// fragmented (see [Blocking](Self#blocking)).
    pub fn max_message_size(&self) -> Result<u32> {
        self.fd.get_ref().max_message_size()
    }

    /// The connection, for the synchronous calls: for example
    /// [`ConnectionRef::send`] as a "try send" that fails at once with a retryable error
    /// under back-pressure.
    pub fn connection(&self) -> &ConnectionRef {
        self.fd.get_ref()
    }

    /// The back-off that sends, joins and leaves use under back-pressure
    /// (default: [`Backoff::default`]).
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Sets the back-off for sends, joins and leaves. When it is spent, the call
    /// returns the last retryable error.
    pub fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
    }

    /// How many times a send, join or leave of this handle has paused on
    /// back-pressure so far: a measure of how often the daemon pushed back.
    pub fn backpressure_waits(&self) -> u64 {
        self.backpressure_waits
    }

    /// Runs `op` until it succeeds, fails for good, or the back-off is spent; between
    /// attempts, reads pending events into the queue and sleeps on tokio's timer.
    ///
    /// `op` gets the request lock it runs under when this handle has senders (`None`
    /// when it has none: then nothing else makes requests, and `op` takes no lock).
    async fn retry<T>(
        &mut self,
        mut op: impl FnMut(&ConnectionRef, Option<&RequestGuard<'_>>) -> Result<T>,
    ) -> Result<T> {
        // A call that succeeds at once never waits: take part in tokio's cooperative
        // budget, before the attempt (a future dropped here has done nothing), so that
        // a task sending in a loop still lets the others of its thread run.
        ::tokio::task::coop::consume_budget().await;
        let mut retrying = self.backoff.start();
        loop {
            let link = self.fd.get_ref().link();
            let result = if link.is_shared() && !link.forked() {
                // Senders of this handle exist: while one of their requests holds the
                // connection's lock (a fragmented send holds it for as long as libcpg
                // retries its fragments), wait for it as a task rather than block the
                // worker, and make the attempt under the lock so taken. (Released and
                // taken again, it could go to another thread in between, and the
                // attempt would block the worker for that thread's whole request.)
                match sender::request_lock(link).await {
                    Ok(request) => op(self.fd.get_ref(), Some(&request)),
                    Err(e) => Err(e),
                }
            } else {
                op(self.fd.get_ref(), None)
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let delay = retrying.after(e)?;
                    self.backpressure_waits += 1;
                    self.pause(delay).await?;
                }
            }
        }
    }

    /// The pause between two attempts of a send, join or leave: waits until `delay`
    /// has passed or events have been read, whichever comes first (events arriving
    /// mean the daemon's queue is moving, so the next attempt may well succeed), and
    /// returns `Pending` at least once. It reads at most [`EVENTS_PER_SEND_ATTEMPT`]
    /// events and [`BYTES_PER_SEND_ATTEMPT`] bytes into the queue, so that what the
    /// daemon holds for this client stays small (it would not push back, see
    /// [Reading](Self#reading)) while this process's queue grows by a bounded amount
    /// per attempt. Reading stops once the stream has ended (nothing may come out of it
    /// after `None`); then only the timer runs.
    async fn pause(&mut self, delay: std::time::Duration) -> Result<()> {
        let sleep = ::tokio::time::sleep(delay);
        let mut sleep = std::pin::pin!(sleep);
        let AsyncHandle {
            fd, ready, stream, ..
        } = self;
        // Whether this pause has returned `Pending` yet: it always does at least once,
        // so that a send retrying under back-pressure while events keep arriving still
        // lets the runtime run other tasks between attempts.
        let mut yielded = false;
        // Whether this pause has read events (then it ends once it has yielded).
        let mut progressed = false;
        // `move`: the closure owns the `&mut` borrows, so the future stays `Send` (a
        // shared borrow of `handle` held across the await would need `Handle: Sync`).
        poll_fn(move |cx| loop {
            if progressed && yielded {
                return Poll::Ready(Ok(()));
            }
            if !matches!(stream, StreamState::Open) {
                return sleep.as_mut().poll(cx).map(Ok);
            }
            let mut guard = match fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(reactor_failed(fd.get_ref(), stream, e)))
                }
                Poll::Pending => {
                    yielded = true;
                    return sleep.as_mut().poll(cx).map(Ok);
                }
            };
            let before = ready.len();
            let drained = drain(
                guard.get_inner(),
                ready,
                EVENTS_PER_SEND_ATTEMPT,
                BYTES_PER_SEND_ATTEMPT,
            );
            let read_some = ready.len() > before;
            match drained {
                // Nothing pending any more: wait for the next edge (or the timer).
                Drained::Empty => guard.clear_ready(),
                Drained::Budget => {}
                Drained::Failed(e @ Error::StackTooSmall { .. }) => return Poll::Ready(Err(e)),
                Drained::Failed(e) => {
                    *stream = StreamState::Failed(e.clone());
                    return Poll::Ready(Err(e));
                }
            }
            if read_some || matches!(drained, Drained::Budget) {
                progressed = true;
                if !yielded {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Deregisters from the reactor, then finalizes the connection, reporting a failure
    /// of `cpg_finalize` (dropping does the same and ignores it). Queued events are
    /// discarded.
    pub fn close(self) -> Result<()> {
        let AsyncHandle { fd, .. } = self;
        // Deregisters, then hands the still-open handle back.
        fd.into_inner().close()
    }
}

impl futures_core::Stream for AsyncHandle {
    type Item = Result<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.get_mut().poll_event(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.stream {
            StreamState::Ended if self.ready.is_empty() => (0, Some(0)),
            _ => (self.ready.len(), None),
        }
    }
}

impl futures_core::FusedStream for AsyncHandle {
    fn is_terminated(&self) -> bool {
        matches!(self.stream, StreamState::Ended) && self.ready.is_empty()
    }
}
