//! The hand-off from an [`AsyncHandle`](super::AsyncHandle)'s callbacks to its queue:
//! the callbacks ([`Enqueue`]) copy every event into a thread-local mailbox during
//! `cpg_dispatch`, and [`drain`] moves them into the handle's queue as soon as the
//! dispatch returns. Why a thread-local: see the [module documentation](super).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use crate::callbacks::Callbacks;
use crate::connection::ConnectionRef;
use crate::error::Error;
use crate::handle::Handle;
use crate::types::{Confchg, DispatchMode, Dispatched, Message, TotemConfchg};

use super::event::Event;

thread_local! {
    /// Events that the callbacks of an [`AsyncHandle`] copied out during the drain
    /// running on this thread. `drain` moves them into the handle's own queue as soon
    /// as its dispatches return, so between drains this is empty.
    ///
    /// The callbacks run inside `cpg_dispatch`, synchronously, on the thread that
    /// called it, and no other code runs on that thread between the dispatches of one
    /// drain; so a thread-local hand-off needs no lock. (A `Mutex` shared with the
    /// callbacks cost a lock and an unlock, two atomic operations, per event.)
    static MAILBOX: RefCell<VecDeque<Event>> = const { RefCell::new(VecDeque::new()) };

    /// Message bytes posted to the mailbox since the current drain began.
    static POSTED_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Puts an event copied out by a callback into this thread's mailbox.
fn post(event: Event) {
    if let Event::Deliver { data, .. } = &event {
        POSTED_BYTES.set(POSTED_BYTES.get() + data.len());
    }
    MAILBOX.with_borrow_mut(|mailbox| mailbox.push_back(event));
}

/// The callbacks of an [`AsyncHandle`]: copy every event out to the mailbox.
pub(super) struct Enqueue;

impl Callbacks for Enqueue {
    fn deliver(&mut self, _cpg: &ConnectionRef, message: Message<'_>) {
        post(Event::Deliver {
            group: *message.group,
            nodeid: message.nodeid,
            pid: message.pid,
            data: message.data.to_vec(),
        });
    }

    fn confchg(&mut self, _cpg: &ConnectionRef, change: Confchg<'_>) {
        post(Event::Confchg {
            group: *change.group,
            members: change.members.to_vec(),
            left: change.left.to_vec(),
            joined: change.joined.to_vec(),
        });
    }

    fn totem_confchg(&mut self, _cpg: &ConnectionRef, change: TotemConfchg<'_>) {
        post(Event::TotemConfchg {
            ring_id: change.ring_id,
            members: change.members.to_vec(),
        });
    }
}

/// What a bounded drain of the descriptor found.
pub(super) enum Drained {
    /// libcpg had nothing more pending.
    Empty,
    /// The budget ran out with events possibly still pending.
    Budget,
    /// A dispatch failed (for example, the daemon is gone).
    Failed(Error),
}

/// Moves the mailbox's events to the end of a handle's queue when dropped: after a
/// drain, and also when a dispatch unwinds, so that nothing is left there for another
/// handle on the same thread.
struct Collect<'a>(&'a mut VecDeque<Event>);

impl Drop for Collect<'_> {
    fn drop(&mut self) {
        // Never panics: `try_with`, because the thread's locals may be going away, and
        // `try_borrow_mut`, although no borrow of the mailbox outlives a `post`.
        let _ = MAILBOX.try_with(|mailbox| {
            if let Ok(mut mailbox) = mailbox.try_borrow_mut() {
                if self.0.is_empty() {
                    // The usual case: take the whole batch in O(1).
                    std::mem::swap(self.0, &mut *mailbox);
                } else {
                    self.0.append(&mut mailbox);
                }
            }
        });
    }
}

/// Dispatches one event at a time without waiting, at most `max_events` times and
/// until the messages read total `max_bytes`; the events go to the end of `ready`, in
/// order.
pub(super) fn drain(
    handle: &Handle,
    ready: &mut VecDeque<Event>,
    max_events: usize,
    max_bytes: usize,
) -> Drained {
    let _collect = Collect(ready);
    POSTED_BYTES.set(0);
    for _ in 0..max_events {
        match handle.dispatch(DispatchMode::OneNonblocking) {
            Ok(Dispatched::NothingPending) => return Drained::Empty,
            Ok(Dispatched::Callbacks(_)) if POSTED_BYTES.get() >= max_bytes => break,
            Ok(Dispatched::Callbacks(_)) => {}
            Err(e) => return Drained::Failed(e),
        }
    }
    Drained::Budget
}
