//! The hand-off from an [`AsyncHandle`](super::AsyncHandle)'s callbacks to its reader:
//! the callbacks ([`Enqueue`]) copy every event into a thread-local mailbox during
//! `cpg_dispatch`, and [`drain`] moves them into the handle's queue as soon as the
//! dispatch returns; or, during [`drain_to`] (what
//! [`read_with`](super::AsyncHandle::read_with) runs), they lend each event, borrowed,
//! to the reader's closure through a thread-local [`Sink`]. Why a thread-local: see the
//! [module documentation](super).

#![deny(clippy::multiple_unsafe_ops_per_block)]

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use corosync_sys as sys;

use crate::callbacks::Callbacks;
use crate::connection::ConnectionRef;
use crate::error::Error;
use crate::handle::Handle;
use crate::types::{Confchg, DispatchMode, Dispatched, Message, TotemConfchg};

use super::event::{Event, EventRef};

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

    /// The [`Sink`] of the innermost drain running on this thread, when that drain lends
    /// events ([`drain_to`]); null during a drain that copies them (and between
    /// drains). Set and put back by [`Collect`] only. The lifetime is erased: see
    /// [`lend`] for why the pointer is valid whenever it is not null. Tagged with the
    /// libcpg handle whose drain set it: a callback lends only to the sink of a drain
    /// of its own handle.
    static SINK: Cell<Slot> = const { Cell::new(Slot::EMPTY) };
}

/// What [`SINK`] holds: the innermost drain's sink and the handle it dispatches.
#[derive(Clone, Copy)]
struct Slot {
    /// The libcpg handle of the drain that set the slot.
    handle: sys::cpg_handle_t,
    /// Its sink, the lifetime erased; null when that drain copies.
    sink: *const Sink<'static>,
}

impl Slot {
    /// No sink: events are copied into the mailbox.
    const EMPTY: Slot = Slot {
        handle: 0,
        sink: ptr::null(),
    };
}

/// Puts an event copied out by a callback into this thread's mailbox.
fn post(event: Event) {
    if let Event::Deliver { data, .. } = &event {
        POSTED_BYTES.set(POSTED_BYTES.get() + data.len());
    }
    MAILBOX.with_borrow_mut(|mailbox| mailbox.push_back(event));
}

/// Where a callback's event goes: lent to the sink of the drain that runs, if it lends,
/// or else copied into the mailbox.
fn receive(handle: sys::cpg_handle_t, event: EventRef<'_>) {
    if !lend(handle, event) {
        post(event.to_event());
    }
}

/// Lends `event`, read by a dispatch of `handle`, to the innermost drain's [`Sink`],
/// if that drain dispatches `handle`, has a sink, and the sink can take it; false if
/// the event is to be copied into the mailbox instead.
fn lend(handle: sys::cpg_handle_t, event: EventRef<'_>) -> bool {
    // (`try_with`: no sink once the thread's locals are going away.)
    let slot = SINK.try_with(Cell::get).unwrap_or(Slot::EMPTY);
    // The handle check is defence in depth for the nesting the SAFETY comment relies
    // on: should it ever not hold, a stale slot of another handle is not dereferenced.
    if slot.sink.is_null() || slot.handle != handle {
        return false;
    }
    // SAFETY: a non-null sink in `SINK` was set by `Collect::begin` from a shared
    // borrow of a `Sink` that the `Collect` keeps for as long as it lives; its drop
    // puts the previous slot back (also when it unwinds), on this thread, before that
    // borrow ends. The `Collect`s nest last in, first out: they are locals of
    // synchronous functions, with only `cpg_dispatch` between setting and restoring
    // the slot, on the same stack (`stack::ensure` refuses a dispatch on another), and
    // every dispatch of an `Enqueue` handle runs inside one. So the `Sink` is alive
    // here. Only shared references to it exist (every field is a `Cell`), and its
    // closure is taken out while it runs (`Sink::lend`), never run re-entrantly. The
    // `'static` is not the real lifetime: the reference made here ends with this call.
    let sink = unsafe { &*slot.sink };
    sink.lend(event)
}

/// The callbacks of an [`AsyncHandle`]: lend every event to the reader, or copy it out
/// to the mailbox.
pub(super) struct Enqueue;

impl Callbacks for Enqueue {
    fn deliver(&mut self, cpg: &ConnectionRef, message: Message<'_>) {
        receive(cpg.as_raw(), EventRef::Deliver(message));
    }

    fn confchg(&mut self, cpg: &ConnectionRef, change: Confchg<'_>) {
        receive(cpg.as_raw(), EventRef::Confchg(change));
    }

    fn totem_confchg(&mut self, cpg: &ConnectionRef, change: TotemConfchg<'_>) {
        receive(cpg.as_raw(), EventRef::TotemConfchg(change));
    }
}

/// The reader's closure of a [`drain_to`], lent the events that its dispatches read.
///
/// A panic of the closure is caught where it runs (inside `cpg_dispatch`, which it must
/// not unwind into) and kept here; from then on the sink takes nothing, so events read
/// after it are copied into the handle's queue, behind the one the closure was given
/// when it panicked, and the drain stops. The reader re-raises the panic once the drain
/// has ended. The handle is not poisoned: the closure is the reader's code, run after
/// its event was taken, like code that panics after `next_event` returned.
pub(super) struct Sink<'f> {
    /// Taken out while it runs: never called re-entrantly.
    f: Cell<Option<Reader<'f>>>,
    /// Events lent so far.
    lent: Cell<usize>,
    /// The closure's panic.
    panic: Cell<Option<Box<dyn Any + Send + 'static>>>,
    /// The closure panicked (the payload may have been taken already).
    panicked: Cell<bool>,
}

/// The reader's closure, as a [`Sink`] holds it.
type Reader<'f> = &'f mut dyn FnMut(EventRef<'_>);

impl<'f> Sink<'f> {
    /// A sink that lends events to `f`.
    pub(super) fn new(f: Reader<'f>) -> Sink<'f> {
        Sink {
            f: Cell::new(Some(f)),
            lent: Cell::new(0),
            panic: Cell::new(None),
            panicked: Cell::new(false),
        }
    }

    /// Events lent so far.
    pub(super) fn lent(&self) -> usize {
        self.lent.get()
    }

    /// The closure's panic, if it panicked (once).
    pub(super) fn take_panic(&self) -> Option<Box<dyn Any + Send + 'static>> {
        self.panic.take()
    }

    /// Runs the closure with `event`; false if the sink takes no more events.
    fn lend(&self, event: EventRef<'_>) -> bool {
        if self.panicked.get() {
            return false;
        }
        let Some(f) = self.f.take() else {
            // Running already (not reachable: a handle's dispatch does not nest).
            return false;
        };
        self.lent.set(self.lent.get() + 1);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(event))) {
            self.panicked.set(true);
            self.panic.set(Some(payload));
        }
        self.f.set(Some(f));
        true
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
/// The same for the [`SINK`]: each drain sets its own (none, for a drain that copies)
/// and puts the outer one back, so B's events never reach A's reader.
struct Collect<'a, 's> {
    ready: &'a mut VecDeque<Event>,
    /// The outer drain's events, set aside while this one runs (`None` when the mailbox
    /// was empty).
    outer: Option<VecDeque<Event>>,
    /// The outer drain's [`POSTED_BYTES`].
    outer_bytes: usize,
    /// The outer drain's [`SINK`].
    outer_sink: Slot,
    /// This drain's sink stays borrowed for as long as [`SINK`] may point to it.
    _sink: PhantomData<&'s ()>,
}

impl<'a, 's> Collect<'a, 's> {
    /// Starts collecting this thread's posts for `ready`, and lending the events that
    /// dispatches of `handle` read to `sink` if there is one.
    fn begin<'f>(
        ready: &'a mut VecDeque<Event>,
        handle: sys::cpg_handle_t,
        sink: Option<&'s Sink<'f>>,
    ) -> Collect<'a, 's> {
        let outer = MAILBOX
            .try_with(|mailbox| {
                let mut mailbox = mailbox.try_borrow_mut().ok()?;
                (!mailbox.is_empty()).then(|| std::mem::take(&mut *mailbox))
            })
            .ok()
            .flatten();
        // Lifetime erased: see `lend`.
        let this_slot = Slot {
            handle,
            sink: sink.map_or(ptr::null(), |s| ptr::from_ref(s).cast::<Sink<'static>>()),
        };
        Collect {
            ready,
            outer,
            outer_bytes: POSTED_BYTES.try_with(|b| b.replace(0)).unwrap_or(0),
            outer_sink: SINK
                .try_with(|s| s.replace(this_slot))
                .unwrap_or(Slot::EMPTY),
            _sink: PhantomData,
        }
    }
}

impl Drop for Collect<'_, '_> {
    fn drop(&mut self) {
        // First: from here on nothing may reach this drain's sink.
        let _ = SINK.try_with(|s| s.set(self.outer_sink));
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
    if MAILBOX.try_with(|_| ()).is_err() {
        return drain_without_mailbox(handle, ready, max_events);
    }
    let _collect = Collect::begin(ready, handle.as_raw(), None);
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

/// [`drain`] on a thread whose mailbox has been destroyed already: a read from a
/// thread-local's destructor that runs after the mailbox's. The callbacks could not
/// post (the access would panic inside the dispatch, which poisons the handle), so the
/// events are lent to a sink that copies them into `ready` instead (the sink's slot has
/// no destructor). Without the byte budget, which only keeps the batches of the usual
/// path small.
#[cold]
fn drain_without_mailbox(
    handle: &Handle,
    ready: &mut VecDeque<Event>,
    max_events: usize,
) -> Drained {
    let mut copy = |event: EventRef<'_>| ready.push_back(event.to_event());
    let sink = Sink::new(&mut copy);
    // Nothing is posted (the copy does not panic, and the drain stops at a panic): the
    // queue given to `drain_to` stays empty.
    let (drained, _) = drain_to(handle, &mut VecDeque::new(), &sink, max_events, max_events);
    if let Some(panic) = sink.take_panic() {
        std::panic::resume_unwind(panic);
    }
    drained
}

/// Dispatches one event at a time without waiting, at most `max_dispatches` times and
/// until `sink` has been lent `max_lent` events in all, lending every event to `sink`.
/// Once the sink's closure has panicked, the drain stops; an event read after the
/// panic (none, as libcpg runs one callback per non-blocking dispatch) would go to the
/// end of `ready`. `ready` must be empty: what it holds comes before anything read here.
/// Returns what it found and how many dispatches it ran.
pub(super) fn drain_to(
    handle: &Handle,
    ready: &mut VecDeque<Event>,
    sink: &Sink<'_>,
    max_dispatches: usize,
    max_lent: usize,
) -> (Drained, usize) {
    debug_assert!(ready.is_empty(), "events queued before a lending drain");
    let _collect = Collect::begin(ready, handle.as_raw(), Some(sink));
    for dispatches in 0..max_dispatches {
        if sink.lent() >= max_lent || sink.panicked.get() {
            return (Drained::Budget, dispatches);
        }
        match handle.dispatch(DispatchMode::OneNonblocking) {
            Ok(Dispatched::NothingPending) => return (Drained::Empty, dispatches + 1),
            Ok(Dispatched::Callbacks(_)) => {}
            Err(e) => return (Drained::Failed(e), dispatches + 1),
        }
    }
    (Drained::Budget, max_dispatches)
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
            let _a = Collect::begin(&mut a, TEST_HANDLE, None);
            post(message("a1"));
            {
                let _b = Collect::begin(&mut b, TEST_HANDLE, None);
                assert!(mailbox_is_empty(), "A's event visible to B's drain");
                post(message("b1"));
                {
                    let _c = Collect::begin(&mut c, TEST_HANDLE, None);
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

    /// What a callback hands over: `text` as a message of group "g".
    /// The libcpg handle the simulated drains and callbacks below stand for.
    const TEST_HANDLE: sys::cpg_handle_t = 7;

    fn deliver_text(text: &str) {
        deliver_text_of(TEST_HANDLE, text);
    }

    /// What `Enqueue`'s callback does with a message that a dispatch of `handle` read.
    fn deliver_text_of(handle: sys::cpg_handle_t, text: &str) {
        let group = GroupName::new("g").unwrap();
        receive(
            handle,
            EventRef::Deliver(Message {
                group: &group,
                nodeid: 1,
                pid: 1,
                data: text.as_bytes(),
            }),
        );
    }

    /// A callback of another handle than the one whose drain set the sink slot is never
    /// lent to that drain's reader (were the drains' nesting ever broken, a stale slot
    /// would not be dereferenced): its event is copied, like in a drain that copies.
    #[test]
    fn a_callback_of_another_handle_is_not_lent_to_this_drains_reader() {
        let mut ready = VecDeque::new();
        let mut seen = Vec::new();
        {
            let mut read = |e: EventRef<'_>| seen.push(text_of(e));
            let sink = Sink::new(&mut read);
            {
                let _a = Collect::begin(&mut ready, TEST_HANDLE, Some(&sink));
                deliver_text("mine");
                deliver_text_of(TEST_HANDLE + 1, "other");
            }
            assert_eq!(sink.lent(), 1);
        }
        assert_eq!(seen, ["mine"]);
        assert_eq!(texts(&ready), ["other"]);
        assert!(mailbox_is_empty() && no_sink());
    }

    fn text_of(event: EventRef<'_>) -> String {
        match event {
            EventRef::Deliver(m) => String::from_utf8(m.data.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn no_sink() -> bool {
        SINK.with(Cell::get).sink.is_null()
    }

    /// A lending drain lends its own events to its reader and copies nothing; a drain
    /// nested in its dispatch (a waker reading handle B) gets B's events, copied or
    /// lent to B's reader, and A's reader none of them; A's reader gets A's events
    /// after the nested drain again. Nothing is left in the mailbox or the sink slot.
    #[test]
    fn nested_drains_keep_their_own_sinks() {
        let (mut a, mut b, mut c) = (VecDeque::new(), VecDeque::new(), VecDeque::new());
        let (mut seen_a, mut seen_c) = (Vec::new(), Vec::new());
        {
            let mut read_a = |e: EventRef<'_>| seen_a.push(text_of(e));
            let sink_a = Sink::new(&mut read_a);
            {
                let _a = Collect::begin(&mut a, TEST_HANDLE, Some(&sink_a));
                deliver_text("a1");
                {
                    let _b = Collect::begin(&mut b, TEST_HANDLE, None);
                    deliver_text("b1");
                    {
                        let mut read_c = |e: EventRef<'_>| seen_c.push(text_of(e));
                        let sink_c = Sink::new(&mut read_c);
                        let _c = Collect::begin(&mut c, TEST_HANDLE, Some(&sink_c));
                        deliver_text("c1");
                    }
                    deliver_text("b2");
                }
                deliver_text("a2");
            }
            assert_eq!(sink_a.lent(), 2);
            assert!(sink_a.take_panic().is_none());
        }
        assert!(mailbox_is_empty() && no_sink());
        assert_eq!(seen_a, ["a1", "a2"]);
        assert!(a.is_empty(), "A's events copied: {:?}", texts(&a));
        assert_eq!(texts(&b), ["b1", "b2"]);
        assert_eq!(seen_c, ["c1"]);
        assert!(c.is_empty());
    }

    /// A drain nested inside the reader's own closure (the closure polls another
    /// handle) has its own sink or none, and A's is back afterwards.
    #[test]
    fn a_drain_nested_in_the_readers_closure_keeps_its_own_events() {
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        let mut seen_a = Vec::new();
        {
            let mut read_a = |e: EventRef<'_>| {
                let text = text_of(e);
                if text == "a1" {
                    let _b = Collect::begin(&mut b, TEST_HANDLE, None);
                    deliver_text("b1");
                }
                seen_a.push(text);
            };
            let sink_a = Sink::new(&mut read_a);
            let _a = Collect::begin(&mut a, TEST_HANDLE, Some(&sink_a));
            deliver_text("a1");
            deliver_text("a2");
        }
        assert!(mailbox_is_empty() && no_sink());
        assert_eq!(seen_a, ["a1", "a2"]);
        assert!(a.is_empty());
        assert_eq!(texts(&b), ["b1"]);
    }

    /// A reader's panic is caught where it runs (inside the dispatch) and kept for the
    /// drain to re-raise; the sink takes nothing after it, so later events are copied
    /// into the handle's queue, in order, and none is lost or seen twice.
    #[test]
    fn after_the_reader_panics_events_are_queued() {
        let mut a = VecDeque::new();
        let mut seen = Vec::new();
        {
            let mut read = |e: EventRef<'_>| {
                let text = text_of(e);
                seen.push(text.clone());
                if text == "x1" {
                    panic!("the reader panicked");
                }
            };
            let sink = Sink::new(&mut read);
            {
                let _a = Collect::begin(&mut a, TEST_HANDLE, Some(&sink));
                deliver_text("x0");
                deliver_text("x1");
                deliver_text("x2");
            }
            assert_eq!(sink.lent(), 2);
            let panic = sink.take_panic().expect("the reader's panic, kept");
            assert_eq!(panic.downcast_ref::<&str>(), Some(&"the reader panicked"));
        }
        assert!(mailbox_is_empty() && no_sink());
        assert_eq!(seen, ["x0", "x1"]);
        assert_eq!(texts(&a), ["x2"]);
    }

    /// A nested lending drain that unwinds puts the outer drain's sink back.
    #[test]
    fn a_nested_lending_drain_that_unwinds_gives_back_the_outer_sink() {
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
        {
            let mut read_a = |e: EventRef<'_>| seen_a.push(text_of(e));
            let sink_a = Sink::new(&mut read_a);
            let _a = Collect::begin(&mut a, TEST_HANDLE, Some(&sink_a));
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut read_b = |e: EventRef<'_>| seen_b.push(text_of(e));
                let sink_b = Sink::new(&mut read_b);
                let _b = Collect::begin(&mut b, TEST_HANDLE, Some(&sink_b));
                deliver_text("b1");
                panic!("a waker panicked");
            }));
            assert!(unwound.is_err());
            deliver_text("a1");
        }
        assert!(mailbox_is_empty() && no_sink());
        assert_eq!(seen_a, ["a1"]);
        assert_eq!(seen_b, ["b1"]);
        assert!(a.is_empty() && b.is_empty());
    }

    /// A nested drain that unwinds (a callback or a waker panicked) still hands its
    /// events to its own queue and the outer drain's back to the mailbox.
    #[test]
    fn a_nested_drain_that_unwinds_gives_back_the_outer_events() {
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        {
            let _a = Collect::begin(&mut a, TEST_HANDLE, None);
            post(message("a1"));
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _b = Collect::begin(&mut b, TEST_HANDLE, None);
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
