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
    /// Events that the callbacks of an [`AsyncHandle`] copied out during the innermost
    /// drain running on this thread. `drain` moves them into the handle's own queue as
    /// soon as its dispatches return, so between drains this is empty.
    ///
    /// The callbacks run inside `cpg_dispatch`, synchronously, on the thread that
    /// called it; so a thread-local hand-off needs no lock. (A `Mutex` shared with the
    /// callbacks cost a lock and an unlock, two atomic operations, per event.) Other
    /// code can run on the thread during a drain (the wakers a dispatch wakes), and can
    /// drain another handle: see [`Collect`] for how each drain keeps to its own events.
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

/// One drain's hold on this thread's mailbox, from [`begin`](Self::begin) until it is
/// dropped: after the drain, and also when a dispatch unwinds. Dropped, it moves the
/// events its dispatches posted to the end of its handle's queue, and nothing else.
///
/// Drains nest: the dispatch of handle A runs wakers (of senders waiting out
/// back-pressure, see `Link::dispatched_events`), and a waker is ordinary code that may
/// poll another handle B on this thread, whose drain then runs while the mailbox still
/// holds A's events of earlier dispatches of the same drain. So a drain sets aside
/// whatever the mailbox holds when it begins (and the outer drain's byte count) and puts
/// it back when it ends: each drain collects the events of its own dispatches only,
/// however deep the nesting, and whichever of them unwinds. In the usual, unnested case
/// the mailbox is empty at the start and nothing is set aside (no allocation, no copy).
struct Collect<'a> {
    ready: &'a mut VecDeque<Event>,
    /// The outer drain's events, set aside while this one runs (`None` when the mailbox
    /// was empty).
    outer: Option<VecDeque<Event>>,
    /// The outer drain's [`POSTED_BYTES`].
    outer_bytes: usize,
}

impl<'a> Collect<'a> {
    /// Starts collecting this thread's posts for `ready`.
    fn begin(ready: &'a mut VecDeque<Event>) -> Collect<'a> {
        let outer = MAILBOX
            .try_with(|mailbox| {
                let mut mailbox = mailbox.try_borrow_mut().ok()?;
                (!mailbox.is_empty()).then(|| std::mem::take(&mut *mailbox))
            })
            .ok()
            .flatten();
        Collect {
            ready,
            outer,
            outer_bytes: POSTED_BYTES.try_with(|b| b.replace(0)).unwrap_or(0),
        }
    }
}

impl Drop for Collect<'_> {
    fn drop(&mut self) {
        // Never panics: `try_with`, because the thread's locals may be going away, and
        // `try_borrow_mut`, although no borrow of the mailbox outlives a `post`.
        let _ = MAILBOX.try_with(|mailbox| {
            if let Ok(mut mailbox) = mailbox.try_borrow_mut() {
                if self.ready.is_empty() {
                    // The usual case: take the whole batch in O(1).
                    std::mem::swap(self.ready, &mut *mailbox);
                } else {
                    self.ready.append(&mut mailbox);
                }
                if let Some(outer) = self.outer.take() {
                    *mailbox = outer;
                }
            }
        });
        let _ = POSTED_BYTES.try_with(|b| b.set(self.outer_bytes));
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
    let _collect = Collect::begin(ready);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::GroupName;

    fn message(text: &str) -> Event {
        Event::Deliver {
            group: GroupName::new("g").unwrap(),
            nodeid: 1,
            pid: 1,
            data: text.as_bytes().to_vec(),
        }
    }

    fn texts(queue: &VecDeque<Event>) -> Vec<String> {
        queue
            .iter()
            .map(|e| match e {
                Event::Deliver { data, .. } => String::from_utf8(data.clone()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn mailbox_is_empty() -> bool {
        MAILBOX.with_borrow(VecDeque::is_empty)
    }

    /// A drain nested in another one's dispatch (a waker polling handle B while handle
    /// A dispatches) collects only what its own dispatches posted; the outer drain gets
    /// all of its own, before and after, in order; byte counts stay apart.
    #[test]
    fn nested_drains_collect_only_their_own_events() {
        let (mut a, mut b, mut c) = (VecDeque::new(), VecDeque::new(), VecDeque::new());
        a.push_back(message("a0"));
        {
            let _a = Collect::begin(&mut a);
            post(message("a1"));
            {
                let _b = Collect::begin(&mut b);
                assert!(mailbox_is_empty(), "A's event visible to B's drain");
                post(message("b1"));
                {
                    let _c = Collect::begin(&mut c);
                    post(message("c1"));
                    assert_eq!(POSTED_BYTES.get(), 2);
                }
                post(message("b22"));
                assert_eq!(POSTED_BYTES.get(), 2 + 3);
            }
            post(message("a2"));
            assert_eq!(POSTED_BYTES.get(), 2 + 2);
        }
        assert!(mailbox_is_empty());
        assert_eq!(texts(&a), ["a0", "a1", "a2"]);
        assert_eq!(texts(&b), ["b1", "b22"]);
        assert_eq!(texts(&c), ["c1"]);
    }

    /// A nested drain that unwinds (a callback or a waker panicked) still hands its
    /// events to its own queue and the outer drain's back to the mailbox.
    #[test]
    fn a_nested_drain_that_unwinds_gives_back_the_outer_events() {
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        {
            let _a = Collect::begin(&mut a);
            post(message("a1"));
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _b = Collect::begin(&mut b);
                post(message("b1"));
                panic!("a callback panicked");
            }));
            assert!(unwound.is_err());
            post(message("a2"));
        }
        assert!(mailbox_is_empty());
        assert_eq!(texts(&a), ["a1", "a2"]);
        assert_eq!(texts(&b), ["b1"]);
    }
}
