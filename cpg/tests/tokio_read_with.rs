//! `AsyncHandle::read_with`: events lent borrowed, on a real daemon. Every message once,
//! in order, with its bytes, queued ones first; mixed with `next_event`; membership
//! events; a panic of the reader's closure; a read of another handle nested in the
//! read (a waker woken by the dispatch, on a 2-node cluster whose second daemon is
//! stopped for back-pressure).

mod support;

use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use cpg::{AsyncHandle, Event, EventRef, GroupName, Member, Reason};
use futures_core::Stream as _;
use support::cluster::{stoppable_pair, Paused};
use support::stream::*;
use support::{big_stack, unique_group, WAIT};

/// Compile-time: the future of a `read_with` whose closure is `Send` is `Send` (a task
/// that reads with it can be spawned on the multi-thread runtime).
#[test]
fn read_with_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn check(h: &mut AsyncHandle) {
        let mut n = 0;
        assert_send(&h.read_with(|_| n += 1));
    }
    let _ = check;
}

/// One `read_with`, bounded by [`WAIT`]; its events copied out, in order.
async fn read_some(h: &mut AsyncHandle) -> Vec<Event> {
    let mut got = Vec::new();
    let handed = tokio::time::timeout(WAIT, h.read_with(|e| got.push(e.to_event())))
        .await
        .expect("no event within WAIT")
        .expect("read_with");
    assert_eq!(
        handed,
        got.len(),
        "the count returned is what was handed out"
    );
    assert!(handed > 0, "the stream ended");
    assert!(
        handed <= cpg::tokio::EVENTS_PER_POLL,
        "{handed} events in one call"
    );
    got
}

/// The sequence numbers of the delivered messages among `events`, checking each one's
/// bytes and sender.
fn seqs(events: &[Event], me: Member) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { data, .. } => {
                assert_eq!(e.sender(), Some(me));
                Some(check_payload(data))
            }
            _ => None,
        })
        .collect()
}

/// Messages waiting in the daemon: one `next_event` reads several of them into the
/// stream's queue (as a send waiting out back-pressure does) and yields the first;
/// `read_with` then lends the queued ones, then reads the rest from libcpg and lends
/// them too, and afterwards `read_with` and `next_event` take turns. Every message
/// comes out once, in order, with its bytes, through one or the other.
#[test]
fn read_with_lends_every_message_once_in_order_queued_ones_first_and_mixes_with_next_event() {
    const COUNT: u64 = 3_000;
    run(Duration::from_secs(180), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("read-with");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        let me = wait_members(&mut h, &group, 1).await[0];
        for seq in 0..40 {
            h.send(&payload(seq)).await.expect("send");
        }
        wait_pending(&h);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = seqs(&[next(&mut h).await], me);
        let (queued, _) = h.size_hint();
        assert!(
            queued >= 8,
            "only {queued} events queued: this test proves less"
        );
        // The queued ones, then more read from libcpg, in one call.
        let first = read_some(&mut h).await;
        assert!(
            first.len() > queued,
            "read_with handed out {} events, no more than the {queued} queued",
            first.len()
        );
        got.extend(seqs(&first, me));
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());

        // The rest, with both ways of reading taking turns while more are sent.
        let (mut through_read_with, mut through_next_event) = (0, 0);
        let mut sent = 40;
        while (got.len() as u64) < COUNT {
            if sent < COUNT {
                for _ in 0..100.min(COUNT - sent) {
                    h.send(&payload(sent)).await.expect("send");
                    sent += 1;
                }
            }
            let before = got.len();
            got.extend(seqs(&read_some(&mut h).await, me));
            through_read_with += got.len() - before;
            if (got.len() as u64) < COUNT {
                got.extend(seqs(&[next(&mut h).await], me));
                through_next_event += 1;
            }
        }
        assert_eq!(
            got,
            (0..COUNT).collect::<Vec<_>>(),
            "lost, duplicated or reordered"
        );
        assert!(through_read_with > 0 && through_next_event > 0);
        let extra = tokio::time::timeout(Duration::from_millis(300), h.read_with(|_| {})).await;
        assert!(extra.is_err(), "an event after the last message: {extra:?}");
        eprintln!("{through_read_with} lent by read_with, {through_next_event} by next_event");
    });
}

/// Membership events come through `read_with` borrowed, with the right lists and
/// reasons: the initial totem configuration and this process's own join, then its own
/// leave.
#[test]
fn membership_events_come_through_read_with() {
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("read-with-confchg");
        let mut h = node
            .enter(|| AsyncHandle::builder().initial_totem_conf(true).build())
            .expect("build");
        let me = h.local_member().expect("local member");
        h.join(&group).await.expect("join");
        let (mut totem, mut joined) = (false, false);
        while !(totem && joined) {
            let mut seen = Vec::new();
            tokio::time::timeout(
                WAIT,
                h.read_with(|event| {
                    seen.push(match event {
                        EventRef::TotemConfchg(change) => {
                            assert_eq!(change.members, [1]);
                            "totem"
                        }
                        EventRef::Confchg(change) => {
                            assert_eq!(*change.group, group);
                            let members: Vec<_> =
                                change.members.iter().map(|a| a.member()).collect();
                            assert_eq!(members, [me]);
                            assert!(change.left.is_empty());
                            assert_eq!(change.joined.len(), 1);
                            assert_eq!(change.joined[0].member(), me);
                            assert_eq!(change.joined[0].reason(), Reason::Join);
                            "join"
                        }
                        other => panic!("unexpected {other:?}"),
                    })
                }),
            )
            .await
            .expect("events within WAIT")
            .expect("read_with");
            for s in seen {
                match s {
                    "totem" => totem = true,
                    _ => joined = true,
                }
            }
        }
        h.leave(&group).await.expect("leave");
        let mut left = None;
        while left.is_none() {
            tokio::time::timeout(
                WAIT,
                h.read_with(|event| {
                    if let EventRef::Confchg(change) = event {
                        left = Some((
                            change.members.len(),
                            change
                                .left
                                .iter()
                                .map(|a| (a.member(), a.reason()))
                                .collect::<Vec<_>>(),
                        ));
                    }
                }),
            )
            .await
            .expect("the leave within WAIT")
            .expect("read_with");
        }
        assert_eq!(left, Some((0, vec![(me, Reason::Leave)])));
    });
}

/// `poll_read_with`, catching a panic of `f`.
async fn read_catching(
    h: &mut AsyncHandle,
    f: &mut (dyn FnMut(EventRef<'_>) + Send),
) -> std::thread::Result<cpg::Result<usize>> {
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| h.poll_read_with(cx, f))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(read)) => Poll::Ready(Ok(read)),
            Err(panic) => Poll::Ready(Err(panic)),
        },
    )
    .await
}

/// A panic of the reader's closure reaches the caller of `read_with`, once for an event
/// lent from the stream's queue and once for one lent inside libcpg's dispatch. The
/// event the closure panicked on counts as read; every other one comes out once, in
/// order, afterwards; and the handle is not poisoned: it is still a member, sends, and
/// reads on.
#[test]
fn a_panic_in_the_readers_closure_propagates_and_the_handle_reads_on() {
    const COUNT: u64 = 40;
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("read-with-panic");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        let me = wait_members(&mut h, &group, 1).await[0];
        for seq in 0..COUNT {
            h.send(&payload(seq)).await.expect("send");
        }
        wait_pending(&h);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = seqs(&[next(&mut h).await], me);
        let (queued, _) = h.size_hint();
        assert!(queued >= 6, "only {queued} queued");
        let queued_last = queued as u64;

        let mut reads = 0;
        for panic_at in [5, queued_last + 10] {
            loop {
                let mut f = |event: EventRef<'_>| {
                    if let EventRef::Deliver(m) = event {
                        let seq = check_payload(m.data);
                        got.push(seq);
                        if seq == panic_at {
                            panic!("the reader panicked at {seq}");
                        }
                    }
                };
                reads += 1;
                match read_catching(&mut h, &mut f).await {
                    Ok(read) => assert!(read.expect("read_with") > 0),
                    Err(panic) => {
                        assert_eq!(
                            panic.downcast_ref::<String>().map(String::as_str),
                            Some(format!("the reader panicked at {panic_at}").as_str())
                        );
                        break;
                    }
                }
                assert!(reads < 100, "no panic at {panic_at}");
            }
            if panic_at == 5 {
                // Lent from the queue: the rest of it is still there.
                assert_eq!(h.size_hint().0 as u64, queued_last - 5);
            } else {
                // Lent inside a dispatch: the ones after it were not read from libcpg.
                assert_eq!(h.size_hint().0, 0);
            }
        }
        while (got.len() as u64) < COUNT {
            got.extend(seqs(&read_some(&mut h).await, me));
        }
        assert_eq!(
            got,
            (0..COUNT).collect::<Vec<_>>(),
            "lost, duplicated or reordered"
        );
        // Not poisoned: still a member, and it sends and reads.
        assert_eq!(h.members(&group).expect("members"), [me]);
        h.send(&payload(COUNT))
            .await
            .expect("send after the panics");
        assert_eq!(seqs(&read_some(&mut h).await, me), [COUNT]);
    });
}

/// The waker of a parked send of A's sender that, whenever it is woken (inside A's
/// dispatch), polls that send again and then reads B: with `poll_event` on odd wakes
/// that find B's events, with `poll_read_with` on even ones.
struct ReadsB {
    send: Mutex<Option<ParkedSend>>,
    sent: AtomicBool,
    b: Mutex<Option<AsyncHandle>>,
    /// What B yielded or lent inside the wakes, copied.
    seen: Mutex<Vec<Event>>,
    wakes: AtomicUsize,
    /// Wakes in which B's stream (`poll_event`), resp. `poll_read_with`, gave events.
    by_stream: AtomicUsize,
    by_read_with: AtomicUsize,
    again: AtomicBool,
}

type ParkedSend = std::pin::Pin<Box<dyn std::future::Future<Output = cpg::Result<()>> + Send>>;

impl Wake for ReadsB {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        let Ok(mut send) = self.send.try_lock() else {
            self.again.store(true, SeqCst);
            return;
        };
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            self.again.store(false, SeqCst);
            if let Some(parked) = send.as_mut() {
                if let Poll::Ready(result) = parked.as_mut().poll(&mut cx) {
                    self.sent.store(result.is_ok(), SeqCst);
                    *send = None;
                }
            }
            if let Some(b) = self.b.try_lock().ok().as_mut().and_then(|b| b.as_mut()) {
                let mut seen = self.seen.lock().unwrap();
                let by_stream = self.by_stream.load(SeqCst);
                if by_stream <= self.by_read_with.load(SeqCst) {
                    if let Poll::Ready(Some(item)) = b.poll_event(&mut cx) {
                        seen.push(item.expect("B's stream"));
                        self.by_stream.fetch_add(1, SeqCst);
                    }
                } else if let Poll::Ready(read) =
                    b.poll_read_with(&mut cx, &mut |e| seen.push(e.to_event()))
                {
                    assert!(read.expect("B's read_with") > 0);
                    self.by_read_with.fetch_add(1, SeqCst);
                }
            }
            if !self.again.load(SeqCst) {
                break;
            }
        }
    }
}

/// A send of `sender` that waits out back-pressure, polled once with `waker` (which the
/// dispatch then wakes), outside tokio's cooperative budget.
fn park_a_send_with(sender: &cpg::AsyncSender, waker: &Waker) -> ParkedSend {
    let mut patient = sender.clone();
    patient.set_backoff(cpg::retry::Backoff {
        initial: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        timeout: Duration::from_secs(3600),
        max_attempts: u32::MAX,
    });
    let m = Arc::new(tagged(1, 0, 64 << 10));
    for _ in 0..20_000 {
        let (patient, m) = (patient.clone(), m.clone());
        let mut send: ParkedSend =
            Box::pin(tokio::task::unconstrained(
                async move { patient.send(&m).await },
            ));
        match send.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Pending => return send,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => panic!("a send failed: {e}"),
        }
    }
    panic!("20,000 sends of 64 KiB went through without waiting");
}

/// A's events, read with `read_with`, until `count` messages of `tag` have come; checks
/// each is of `group`.
async fn read_a_until(
    a: &mut AsyncHandle,
    group: &GroupName,
    got: &mut Vec<(u32, u32)>,
    tag: u32,
    count: usize,
) {
    while got.iter().filter(|(t, _)| *t == tag).count() < count {
        tokio::time::timeout(
            WAIT,
            a.read_with(|event| {
                if let EventRef::Deliver(m) = event {
                    assert_eq!(
                        m.group,
                        group,
                        "A's reader was lent {:?} of another group (read by a nested drain of B)",
                        decode_tagged(m.data)
                    );
                    got.push(decode_tagged(m.data));
                }
            }),
        )
        .await
        .expect("A's events within WAIT")
        .expect("A's read_with");
    }
}

/// A waker woken by handle A's dispatch may read another handle B on the same thread,
/// nested in A's `read_with`, while A's reader is the thread's sink. Here a send of A's
/// sender waits out back-pressure (node 2's daemon is stopped), and A reads its own
/// pending messages with `read_with`: each dispatch wakes the parked send, whose waker
/// polls it again (it waits on) and then reads B, with B's stream and with B's
/// `read_with` in turn. B gets B's events only, once each, in order, and A's reader
/// every one of A's and nothing of B's. (Without a nested drain setting A's sink aside,
/// B's stream lent B's events to A's reader.)
#[test]
fn a_read_of_another_handle_nested_in_read_with_keeps_to_its_own_events() {
    const PENDING: u32 = 200;
    let _serial = support::serial();
    let cluster = stoppable_pair(10_000);
    big_stack(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let node = cluster.node(0);
            let (ga, gb) = (unique_group("nested-rw-a"), unique_group("nested-rw-b"));
            // Events waiting, unread, for both handles.
            let (mut a, b) = two_handles_with_pending(node, (&ga, &gb), PENDING).await;

            let sender = a.sender();
            let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
            // The ring is stuck: fill the local daemon's queue with A's messages.
            let flood =
                fill_queue(|seq| a.connection().send(&tagged(6, seq as u32, 64 << 10))) as u32;
            let reads_b = Arc::new(ReadsB {
                send: Mutex::new(None),
                sent: AtomicBool::new(false),
                b: Mutex::new(Some(b)),
                seen: Mutex::default(),
                wakes: AtomicUsize::new(0),
                by_stream: AtomicUsize::new(0),
                by_read_with: AtomicUsize::new(0),
                again: AtomicBool::new(false),
            });
            let waker = Waker::from(reads_b.clone());
            let parked = park_a_send_with(&sender, &waker);
            *reads_b.send.lock().unwrap() = Some(parked);
            // The ring moves again a second after A has begun to read.
            let resume = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(1));
                drop(paused);
            });

            // A: its pending ones, then the flood, read with read_with.
            let mut got_a = Vec::new();
            read_a_until(&mut a, &ga, &mut got_a, 5, PENDING as usize).await;
            read_a_until(&mut a, &ga, &mut got_a, 6, flood as usize).await;
            resume.join().unwrap();
            // No more sends from the waker; the parked one's message, if it was sent.
            drop(reads_b.send.lock().unwrap().take());
            let parked_sent = usize::from(reads_b.sent.load(SeqCst));
            read_a_until(&mut a, &ga, &mut got_a, 1, parked_sent).await;
            assert_eq!(
                seqs_of(&got_a, 5),
                (0..PENDING).collect::<Vec<_>>(),
                "A's pending"
            );
            assert_eq!(
                seqs_of(&got_a, 6),
                (0..flood).collect::<Vec<_>>(),
                "A's flood"
            );
            assert_eq!(seqs_of(&got_a, 1).len(), parked_sent, "the parked send's");
            assert_eq!(got_a.len(), (PENDING + flood) as usize + parked_sent);

            // B: its own messages, once each, in order, and nothing of A's.
            let mut b = reads_b.b.lock().unwrap().take().unwrap();
            let seen = std::mem::take(&mut *reads_b.seen.lock().unwrap());
            let in_wakes = seen.len();
            let rest = collect_events(
                &mut b,
                &gb,
                PENDING as usize - in_wakes.min(PENDING as usize),
            )
            .await;
            let mut got_b = Vec::new();
            for event in seen.iter().chain(&rest) {
                if let Event::Deliver { group, data, .. } = event {
                    assert_eq!(
                        *group,
                        gb,
                        "B read A's message {:?} (inside A's dispatch)",
                        decode_tagged(data)
                    );
                    got_b.push(decode_tagged(data));
                }
            }
            assert_eq!(seqs_of(&got_b, 8), (0..PENDING).collect::<Vec<_>>());
            assert_eq!(got_b.len(), PENDING as usize);
            let (wakes, by_stream, by_read_with) = (
                reads_b.wakes.load(SeqCst),
                reads_b.by_stream.load(SeqCst),
                reads_b.by_read_with.load(SeqCst),
            );
            eprintln!(
                "nested reads: {wakes} wakes; B read by its stream in {by_stream}, by \
                 read_with in {by_read_with}; {in_wakes} of B's events inside the wakes; \
                 {flood} flood messages"
            );
            // Not vacuous: the waker read B both ways from inside A's dispatches.
            assert!(
                by_stream >= 1 && by_read_with >= 1,
                "the waker read B by its stream in {by_stream} and by read_with in \
                 {by_read_with} of {wakes} wakes: this test proved less"
            );
        });
    });
}

/// `count` more delivered messages of `h` through `next_event` (membership events
/// skipped), as events.
async fn collect_events(h: &mut AsyncHandle, group: &GroupName, count: usize) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < count {
        let event = next(h).await;
        if let Event::Deliver { group: g, .. } = &event {
            assert_eq!(g, group);
            got.push(event);
        }
    }
    got
}

/// Fairness: a task that reads a busy stream with `read_with` in a loop yields to the
/// other tasks of its thread at least every `EVENTS_PER_POLL` events, and no call
/// hands out more. A backlog is read on a current-thread runtime next to a task that,
/// whenever it runs, records how many events the reader took since its previous turn.
#[test]
fn reading_a_busy_stream_with_read_with_lets_other_tasks_run() {
    const COUNT: u64 = 5_000;
    big_stack(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let node = cpg_testkit::shared();
            let group = unique_group("read-with-fair");
            let mut h = connect(node);
            h.join(&group).await.expect("join");
            let me = wait_members(&mut h, &group, 1).await[0];
            for seq in 0..COUNT {
                h.send(&payload(seq)).await.expect("send");
            }

            let consumed = Arc::new(AtomicUsize::new(0));
            let largest_gap = Arc::new(AtomicUsize::new(0));
            let turns = Arc::new(AtomicUsize::new(0));
            let other = tokio::spawn({
                let (consumed, largest_gap, turns) =
                    (consumed.clone(), largest_gap.clone(), turns.clone());
                async move {
                    let mut seen = 0;
                    loop {
                        let now = consumed.load(SeqCst);
                        largest_gap.fetch_max(now - seen, SeqCst);
                        seen = now;
                        turns.fetch_add(1, SeqCst);
                        yield_now_undeferred().await;
                    }
                }
            });
            let mut got = Vec::new();
            while (got.len() as u64) < COUNT {
                let events = read_some(&mut h).await;
                consumed.fetch_add(events.len(), SeqCst);
                got.extend(seqs(&events, me));
            }
            other.abort();
            assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
            let (gap, turns) = (largest_gap.load(SeqCst), turns.load(SeqCst));
            eprintln!("fairness: {COUNT} events, the other task ran {turns} times, at most {gap} events apart");
            let per_poll = cpg::tokio::EVENTS_PER_POLL;
            assert!(
                turns as u64 >= COUNT / per_poll as u64,
                "the other task ran only {turns} times while {COUNT} events were read"
            );
            assert!(gap <= per_poll, "{gap} events were read between two turns of the other task");
        });
    });
}

/// Returns `Pending` once, waking the task at once (tokio's `yield_now` defers the
/// wake-up to the next time the runtime polls its driver).
async fn yield_now_undeferred() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
