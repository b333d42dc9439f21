//! `AsyncSender`: many tasks send through clones while one task reads the stream; a
//! cancelled send has sent nothing, one sent from the blocking pool nothing after a
//! later send; a send waiting out back-pressure wakes at the reader's deliveries;
//! sends wake when the handle is dropped.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cpg::{Error, Event};
use support::cluster::{stoppable_pair, Paused};
use support::stream::*;
use support::{unique_group, WAIT};

#[test]
fn many_tasks_send_through_clones_while_one_reads() {
    run(WAIT * 4, || async {
        let node = cpg_testkit::shared();
        let group = unique_group("sender-tasks");
        let mut h = connect(node);
        h.join(&group).await.unwrap();
        wait_members(&mut h, &group, 1).await;
        const TASKS: u32 = 8;
        const EACH: u32 = 200;
        const POOLED: usize = 300 << 10;
        assert!(h.sender().offload_from().is_some_and(|from| POOLED >= from));
        assert!(h
            .sender()
            .offload_from()
            .is_some_and(|from| 200 << 10 < from));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let sender = h.sender();
                tokio::spawn(async move {
                    for seq in 0..EACH {
                        // Every fourth message is large enough to meet back-pressure,
                        // every eighth so large that it is sent from the blocking pool.
                        let len = match seq % 8 {
                            0 => POOLED,
                            4 => 200 << 10,
                            _ => 64,
                        };
                        sender.send(&tagged(t, seq, len)).await.unwrap();
                    }
                })
            })
            .collect();
        let mut next_seq = BTreeMap::new();
        let mut got = 0;
        while got < TASKS * EACH {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                let (task, seq) = decode_tagged(&data);
                let expected = next_seq.entry(task).or_insert(0u32);
                assert_eq!(seq, *expected, "task {task}: out of order");
                *expected += 1;
                got += 1;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(next_seq.values().all(|n| *n == EACH), "{next_seq:?}");
    });
}

#[test]
fn a_cancelled_send_sent_nothing_and_a_completed_one_exactly_once() {
    const MAX_SENDS: u32 = 20_000;
    const MIN_CANCELLED: u32 = 10;
    // Back-pressure on demand: with another node's daemon stopped, the ring cannot
    // order anything until the token times out, so the local daemon's queue fills and
    // it answers sends with CS_ERR_TRY_AGAIN. A 10 s token keeps that window open long
    // enough for a client slowed down by valgrind (with 3 s, it once got only 5 sends
    // in while the ring was stuck, and then none met back-pressure).
    let cluster = stoppable_pair(10_000);
    run(Duration::from_secs(120), move || async move {
        let group = unique_group("sender-cancel");
        let mut h = connect(cluster.node(0));
        h.join(&group).await.unwrap();
        wait_members(&mut h, &group, 1).await;
        let sender = h.sender();
        let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
        let mut completed = std::collections::VecDeque::new();
        let (mut seq, mut cancelled) = (0u32, 0u32);
        while seq < MAX_SENDS && cancelled < MIN_CANCELLED {
            // Cancelled at its first wait: only a send that met back-pressure is.
            let m = tagged(1, seq, 64 << 10);
            match tokio::time::timeout(Duration::ZERO, sender.send(&m)).await {
                Ok(result) => {
                    result.unwrap();
                    completed.push_back(seq);
                }
                Err(_) => cancelled += 1,
            }
            seq += 1;
        }
        drop(paused);
        assert!(
            cancelled >= MIN_CANCELLED,
            "{cancelled} cancelled in {seq} sends"
        );
        // Sent after every cancelled future was dropped: whatever they could have sent
        // would arrive before it.
        let end = tagged(9, 0, 8);
        tokio::time::timeout(WAIT, sender.send(&end))
            .await
            .unwrap()
            .unwrap();
        let delivered = completed.len();
        loop {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                let (task, seq) = decode_tagged(&data);
                if task == 9 {
                    break;
                }
                assert_eq!(
                    completed.pop_front(),
                    Some(seq),
                    "delivered messages differ from the sends that completed"
                );
            }
        }
        assert!(
            completed.is_empty(),
            "completed, never delivered: {completed:?}"
        );
        eprintln!("{seq} sends: {delivered} completed and delivered, {cancelled} cancelled");
    });
}

/// A message of `offload_from` bytes and more is sent from tokio's blocking pool: with
/// the pool's only thread kept busy, such a send cannot be made and gives up at its
/// back-off's timeout with `CS_ERR_TRY_AGAIN`, and is never sent, not even once the
/// thread is free; the same message with the offload turned off, and a small one, go
/// out from the task meanwhile. A message too big for libcpg is refused at once,
/// before anything is copied or queued.
#[test]
fn a_large_send_goes_to_the_blocking_pool_and_gives_up_at_its_timeout_if_none_is_free() {
    // One thread in the blocking pool, which the test keeps busy.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .thread_stack_size(4 << 20)
            .build()
            .expect("build tokio runtime")
    };
    run_on(runtime, WAIT * 2, || async {
        let node = cpg_testkit::shared();
        let group = unique_group("sender-pool");
        let mut h = connect(node);
        h.join(&group).await.unwrap();
        wait_members(&mut h, &group, 1).await;
        let mut sender = h.sender();
        const TIMEOUT: Duration = Duration::from_secs(1);
        sender.set_backoff(cpg::retry::Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
            timeout: TIMEOUT,
            max_attempts: u32::MAX,
        });
        const LARGE: usize = 300 << 10;
        assert!(sender.offload_from().is_some_and(|from| LARGE >= from));
        // The pool's one thread, busy until released.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = tokio::task::spawn_blocking(move || {
            let _ = released.recv();
        });
        let started = Instant::now();
        let refused = sender.send(&tagged(1, 0, LARGE)).await.unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Cs {
                    code: cpg::CsError::TryAgain,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(started.elapsed() >= TIMEOUT, "gave up before its timeout");
        let mut inline = sender.clone();
        inline.set_offload_from(None);
        inline.send(&tagged(1, 1, LARGE)).await.unwrap();
        sender.send(&tagged(1, 2, 64)).await.unwrap();
        // 63 times 70 MiB: beyond libcpg's 32-bit length.
        let chunk = vec![0u8; 70 << 20];
        let slices: Vec<_> = (0..63).map(|_| std::io::IoSlice::new(&chunk)).collect();
        let started = Instant::now();
        let too_big = sender.send_vectored(&slices).await.unwrap_err();
        assert!(
            matches!(too_big, Error::MessageTooBig { .. }),
            "{too_big:?}"
        );
        assert!(
            started.elapsed() < TIMEOUT,
            "refused only after {:?}",
            started.elapsed()
        );
        drop(release);
        busy.await.unwrap();
        sender.send(&tagged(9, 0, 8)).await.unwrap();
        let mut delivered = Vec::new();
        loop {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                match decode_tagged(&data) {
                    (9, _) => break,
                    (_, seq) => delivered.push(seq),
                }
            }
        }
        assert_eq!(delivered, [1, 2], "what was sent, in order");
    });
}

/// A send from the blocking pool cannot be stopped once its attempt has started: a
/// dropped one is sent before every send made after the drop, or never; a completed one
/// exactly once. Node 2's daemon is stopped, so that sends meet back-pressure: every
/// other send is dropped as soon as it was handed to the pool, the others after 20 ms,
/// while they wait (between attempts, or in one).
#[test]
fn a_dropped_send_from_the_pool_is_sent_before_any_later_one_or_never() {
    const MAX_SENDS: u32 = 20_000;
    const MIN_DROPPED_WAITING: u32 = 10;
    // As in the test above: a 10 s token keeps the ring stuck long enough.
    let cluster = stoppable_pair(10_000);
    run(Duration::from_secs(120), move || async move {
        let (mut h, mut sender, _group, paused) =
            joined_with_node_2_stopped(&cluster, "sender-pool-drop").await;
        // Every send from the pool.
        sender.set_offload_from(Some(0));
        let mut completed = BTreeSet::new();
        let (mut seq, mut dropped_waiting, mut dropped_at_once) = (0u32, 0u32, 0u32);
        while seq < MAX_SENDS && dropped_waiting < MIN_DROPPED_WAITING {
            let m = tagged(1, seq, 64 << 10);
            let limit = if seq % 2 == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            match tokio::time::timeout(limit, sender.send(&m)).await {
                Ok(result) => {
                    result.unwrap();
                    completed.insert(seq);
                }
                Err(_) if seq % 2 == 0 => dropped_at_once += 1,
                Err(_) => dropped_waiting += 1,
            }
            seq += 1;
        }
        drop(paused);
        assert!(
            dropped_waiting >= MIN_DROPPED_WAITING,
            "{dropped_waiting} dropped while waiting in {seq} sends"
        );
        // Sent after every dropped future: nothing of theirs may follow it. A second
        // marker two seconds later (the ring moves again by then, and an attempt that a
        // drop failed to stop would retry at the first delivery) shows what does.
        let mut delivered = Vec::new();
        for marker in 0..2 {
            if marker == 1 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            tokio::time::timeout(WAIT, sender.send(&tagged(9, marker, 8)))
                .await
                .unwrap()
                .unwrap();
            loop {
                if let Event::Deliver { data, .. } = next(&mut h).await {
                    let (task, seq) = decode_tagged(&data);
                    if task == 9 {
                        assert_eq!(seq, marker);
                        break;
                    }
                    assert_eq!(marker, 0, "send {seq} delivered after a later send");
                    delivered.push(seq);
                }
            }
        }
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "a send delivered out of order, or twice: {delivered:?}"
        );
        let missing: Vec<_> = completed
            .iter()
            .filter(|seq| delivered.binary_search(seq).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "completed, never delivered: {missing:?}"
        );
        let dropped_delivered = delivered.len() - completed.len();
        eprintln!(
            "{seq} sends: {} completed, {dropped_at_once} dropped at once and \
             {dropped_waiting} while waiting, of which {dropped_delivered} were sent",
            completed.len()
        );
    });
}

/// A send waiting out back-pressure wakes at the next event the stream's reader
/// dispatches, not at the end of its back-off's pause: with a first pause of a minute,
/// it returns within seconds of the ring moving again (node 2's daemon stopped, then
/// continued).
#[test]
fn a_send_waiting_out_back_pressure_wakes_at_a_delivery_not_after_its_pause() {
    let pause = Duration::from_secs(60);
    let cluster = stoppable_pair(10_000);
    run(Duration::from_secs(150), move || async move {
        let (mut h, sender, _group, paused) =
            joined_with_node_2_stopped(&cluster, "sender-woken").await;
        let mut patient = sender.clone();
        patient.set_backoff(cpg::retry::Backoff {
            initial: pause,
            max_delay: pause,
            timeout: Duration::from_secs(3600),
            max_attempts: u32::MAX,
        });
        let m = tagged(1, 0, 64 << 10);
        // Fill node 1's queue: send until every send has met back-pressure for 200 ms
        // (a send cancelled at its first wait met it, and sent nothing; one refusal may
        // be the daemon reading requests more slowly than they come, while a queue
        // that nothing drains refuses them all).
        let mut sent = 0u32;
        let mut refused_since: Option<Instant> = None;
        while refused_since.is_none_or(|t| t.elapsed() < Duration::from_millis(200)) {
            match tokio::time::timeout(Duration::ZERO, patient.send(&m)).await {
                Ok(result) => {
                    result.unwrap();
                    sent += 1;
                    refused_since = None;
                }
                Err(_) => {
                    refused_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            assert!(sent < 20_000, "20,000 sends of 64 KiB, no back-pressure");
        }
        let mut waiting = tokio::spawn(async move {
            let result = patient.send(&m).await;
            (result, Instant::now())
        });
        // The ring is stuck (for a token timeout of 10 s at least, long enough for a
        // loaded machine or valgrind): the send waits in its first pause while the
        // stream is read.
        let stuck = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::timeout_at(stuck, h.next_event()).await.is_ok() {}
        assert!(
            !waiting.is_finished(),
            "the send met no back-pressure ({sent} sent before)"
        );
        let resumed = Instant::now();
        drop(paused);
        let (result, returned) = loop {
            tokio::select! {
                done = &mut waiting => break done.unwrap(),
                event = tokio::time::timeout(pause + WAIT, h.next_event()) => {
                    match event {
                        Ok(Some(Ok(_))) => {}
                        other => panic!("the stream, while the send waits: {other:?}"),
                    }
                }
            }
        };
        result.unwrap();
        let took = returned.saturating_duration_since(resumed);
        assert!(
            took < pause / 3,
            "the send returned {took:?} after the ring moved again: it slept out its \
             {pause:?} pause instead of waking at a delivery"
        );
    });
}

#[test]
fn dropping_the_handle_wakes_waiting_sends_with_closed() {
    run(WAIT * 2, || async {
        let node = cpg_testkit::shared();
        let group = unique_group("sender-drop");
        let mut h = connect(node);
        h.join(&group).await.unwrap();
        wait_members(&mut h, &group, 1).await;
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let sender = h.sender();
                tokio::spawn(async move {
                    let m = vec![1u8; 512 << 10];
                    loop {
                        if let Err(e) = sender.send(&m).await {
                            return e;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sender = h.sender();
        drop(h);
        for s in senders {
            let e = tokio::time::timeout(Duration::from_secs(5), s)
                .await
                .expect("a send still waiting 5 s after the drop")
                .unwrap();
            assert_eq!(e, Error::Closed);
        }
        assert!(sender.is_closed());
        assert_eq!(sender.send(b"x").await.unwrap_err(), Error::Closed);
    });
}

/// Node 1's handle in a fresh group (`tag`), a sender of it, and node 2's daemon
/// stopped until the `Paused` is dropped.
async fn joined_with_node_2_stopped(
    cluster: &cpg_testkit::Cluster,
    tag: &str,
) -> (cpg::AsyncHandle, cpg::AsyncSender, cpg::GroupName, Paused) {
    let group = unique_group(tag);
    let mut h = connect(cluster.node(0));
    h.join(&group).await.unwrap();
    wait_members(&mut h, &group, 1).await;
    let sender = h.sender();
    let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
    (h, sender, group, paused)
}

/// A waker whose `wake` panics, as a broken executor's might.
struct Bomb;

impl std::task::Wake for Bomb {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("the waker panicked");
    }
}

/// Sends 64 KiB messages, polling each send once with `waker`, until one meets
/// back-pressure and waits for progress with that waker registered; returns that send.
/// The sender's pauses are a minute long: tokio's timer never wakes the waker during
/// the test (a panicking waker woken by tokio's own timer would take the runtime down,
/// which is tokio's affair, not this crate's).
async fn park_a_send_with(
    sender: &cpg::AsyncSender,
    waker: &std::task::Waker,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = cpg::Result<()>> + Send>> {
    let mut patient = sender.clone();
    patient.set_backoff(cpg::retry::Backoff {
        initial: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        timeout: Duration::from_secs(3600),
        max_attempts: u32::MAX,
    });
    let m = std::sync::Arc::new(tagged(1, 0, 64 << 10));
    for _ in 0..20_000 {
        let (patient, m) = (patient.clone(), m.clone());
        // Outside tokio's cooperative budget, so that nothing but the wait itself
        // uses the waker.
        let mut send: std::pin::Pin<Box<dyn std::future::Future<Output = cpg::Result<()>> + Send>> =
            Box::pin(tokio::task::unconstrained(
                async move { patient.send(&m).await },
            ));
        match send
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Pending => return send,
            std::task::Poll::Ready(Ok(())) => {}
            std::task::Poll::Ready(Err(e)) => panic!("a send failed: {e}"),
        }
    }
    panic!("20,000 sends of 64 KiB went through without waiting");
}

#[test]
fn a_panicking_waker_woken_by_the_dispatch_is_a_panic_of_the_dispatch_not_an_abort() {
    let cluster = stoppable_pair(3000);
    run(Duration::from_secs(120), move || async move {
        let (mut h, sender, _group, paused) =
            joined_with_node_2_stopped(&cluster, "sender-bomb").await;
        let bomb = std::task::Waker::from(std::sync::Arc::new(Bomb));
        let parked = park_a_send_with(&sender, &bomb).await;
        drop(paused);
        // Reading the stream dispatches; the first delivered event wakes the parked
        // send's waker, inside `cpg_dispatch`. Its panic must come out of the read
        // like a callback's (unwinding into C would abort the whole test binary).
        let reader = tokio::spawn(async move {
            loop {
                match tokio::time::timeout(WAIT, h.next_event()).await {
                    Ok(Some(_)) => {}
                    other => return format!("the stream ended without a panic: {other:?}"),
                }
            }
        });
        let joined = reader.await;
        let panic = match joined {
            Err(e) if e.is_panic() => e.into_panic(),
            other => panic!("expected the reader to panic: {other:?}"),
        };
        assert_eq!(
            panic.downcast_ref::<&str>().copied(),
            Some("the waker panicked")
        );
        // The handle is gone (dropped while the reader unwound): sends say so.
        drop(parked);
        assert!(sender.is_closed());
        assert_eq!(sender.send(b"x").await.unwrap_err(), Error::Closed);
    });
}

#[test]
fn a_panicking_waker_woken_by_the_close_is_raised_after_the_handle_is_released() {
    let cluster = stoppable_pair(3000);
    run(Duration::from_secs(120), move || async move {
        let (h, sender, group, paused) =
            joined_with_node_2_stopped(&cluster, "sender-bomb-close").await;
        let bomb = std::task::Waker::from(std::sync::Arc::new(Bomb));
        let parked = park_a_send_with(&sender, &bomb).await;
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(h)));
        drop(paused);
        assert!(dropped.is_err(), "the waker's panic was swallowed");
        assert!(sender.is_closed());
        drop(parked);
        // The handle was finalized before the panic was raised: the daemon removed it
        // from the group, so a new member finds itself alone there.
        let mut again = connect(cluster.node(0));
        again.join(&group).await.unwrap();
        let members = wait_members(&mut again, &group, 1).await;
        assert_eq!(members.len(), 1);
    });
}

#[test]
fn an_async_send_waiting_for_a_long_request_leaves_its_thread_to_other_tasks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // It measures stalls: not beside this binary's other tests that flood a paused
    // cluster or a dying daemon (under valgrind, which runs one thread at a time).
    let _serial = support::serial();
    let cluster = stoppable_pair(3000);
    support::big_stack(move || {
        // One thread for every task: a send that blocked it on the request lock would
        // stop the ticker too.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut h, sender, _group, paused) =
                joined_with_node_2_stopped(&cluster, "sender-lock").await;
            // A fragmented send on another thread: libcpg retries its fragments under
            // back-pressure, holding the connection's request lock, until the ring
            // re-forms without the stopped node (token 3 s).
            let in_long_send = Arc::new(AtomicBool::new(true));
            let long = {
                let (sender, in_long_send) = (sender.clone(), in_long_send.clone());
                std::thread::Builder::new()
                    .stack_size(4 << 20)
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        let started = std::time::Instant::now();
                        let result = rt.block_on(sender.send(&vec![7u8; 16 << 20]));
                        in_long_send.store(false, Ordering::SeqCst);
                        (result, started.elapsed())
                    })
                    .unwrap()
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                in_long_send.load(Ordering::SeqCst),
                "the fragmented send ended within 300 ms: nothing held the lock"
            );
            // Small sends now wait for the lock; a ticker on the same thread must keep
            // running meanwhile.
            let ticker = {
                let in_long_send = in_long_send.clone();
                tokio::spawn(async move {
                    let (mut last, mut longest) = (std::time::Instant::now(), Duration::ZERO);
                    while in_long_send.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        longest = longest.max(last.elapsed());
                        last = std::time::Instant::now();
                    }
                    longest
                })
            };
            // Through a clone of the sender, and through the handle itself.
            let (small, other) = (tagged(2, 0, 8), tagged(3, 0, 8));
            let (by_sender, by_handle) = tokio::join!(
                tokio::time::timeout(WAIT, sender.send(&small)),
                tokio::time::timeout(WAIT, h.send(&other)),
            );
            by_sender.expect("the sender's send never ended").unwrap();
            by_handle.expect("the handle's send never ended").unwrap();
            let longest = ticker.await.unwrap();
            drop(paused);
            let (result, took) = long.join().unwrap();
            result.unwrap();
            assert!(
                took > Duration::from_secs(1),
                "the fragmented send took only {took:?}: the lock was not held long"
            );
            // Blocked, the thread stalls for as long as one libcpg call of the
            // fragmented send holds the lock (2 s here); free, for scheduling only
            // (up to 0.3 s under valgrind, which runs one thread at a time).
            assert!(
                longest < Duration::from_secs(1),
                "the thread stalled for {longest:?} while sends waited for the lock \
                 (the fragmented send took {took:?})"
            );
            eprintln!("fragmented send {took:?}; longest stall of the ticker {longest:?}");
        });
    });
}

/// The waker of a parked send of A's sender that, whenever it is woken, polls that
/// send again (so it registers again while the back-pressure lasts) and then polls B's
/// stream once: ordinary safe code, run by A's dispatch.
struct PollsB {
    send: std::sync::Mutex<Option<ParkedSend>>,
    /// Whether the parked send completed (its message then went to A's group).
    sent: std::sync::atomic::AtomicBool,
    /// B, until the test takes it back.
    b: std::sync::Mutex<Option<cpg::AsyncHandle>>,
    /// What B's stream yielded inside the wakes.
    seen: std::sync::Mutex<Vec<cpg::Result<Event>>>,
    /// Wakes, and wakes in which B's stream yielded events.
    wakes: std::sync::atomic::AtomicUsize,
    wakes_reading_b: std::sync::atomic::AtomicUsize,
    /// Woken again from inside its own wake: go round once more.
    again: std::sync::atomic::AtomicBool,
}

type ParkedSend = std::pin::Pin<Box<dyn std::future::Future<Output = cpg::Result<()>> + Send>>;

impl std::task::Wake for PollsB {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.wakes.fetch_add(1, SeqCst);
        let Ok(mut send) = self.send.try_lock() else {
            self.again.store(true, SeqCst);
            return;
        };
        let waker = std::task::Waker::from(self.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            self.again.store(false, SeqCst);
            if let Some(parked) = send.as_mut() {
                if let std::task::Poll::Ready(result) = parked.as_mut().poll(&mut cx) {
                    // (Checked by the test: a panic here could be in a destructor.)
                    self.sent.store(result.is_ok(), SeqCst);
                    *send = None;
                }
            }
            if let Some(b) = self.b.try_lock().ok().as_mut().and_then(|b| b.as_mut()) {
                // One poll, as a task reading B would make when woken.
                if let std::task::Poll::Ready(Some(item)) = b.poll_event(&mut cx) {
                    self.seen.lock().unwrap().push(item);
                    self.wakes_reading_b.fetch_add(1, SeqCst);
                }
            }
            if !self.again.load(SeqCst) {
                break;
            }
        }
    }
}

/// Events of `h`'s stream until `count` of `tag`'s messages have come; checks each is
/// of `group`, and returns the (tag, seq) of every delivered message in order.
async fn read_until(
    h: &mut cpg::AsyncHandle,
    group: &cpg::GroupName,
    mut got: Vec<(u32, u32)>,
    tag: u32,
    count: usize,
) -> Vec<(u32, u32)> {
    while got.iter().filter(|(t, _)| *t == tag).count() < count {
        if let Event::Deliver { group: g, data, .. } = next(h).await {
            assert_eq!(
                g,
                *group,
                "{:?} came through the wrong handle",
                decode_tagged(&data)
            );
            got.push(decode_tagged(&data));
        }
    }
    got
}

/// A waker woken by handle A's dispatch may poll another handle B on the same thread,
/// nested in A's read. Here A's send waits out back-pressure and its pause reads A's
/// pending events one dispatch at a time; each dispatch wakes the parked send of A's
/// sender, whose waker polls that send and then B's stream. B's stream yields B's
/// events only, and A's stream every one of A's, once, in order. (Before, B's read
/// took the events A's pause had read so far out of the thread's mailbox: B yielded
/// A's messages, which A never saw.)
#[test]
fn a_waker_that_reads_another_handle_inside_a_read_gets_only_that_handles_events() {
    use std::sync::atomic::Ordering::SeqCst;
    const PENDING: u32 = 16;
    let _serial = support::serial();
    let cluster = stoppable_pair(10_000);
    support::big_stack(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let node = cluster.node(0);
            let (ga, gb) = (unique_group("nested-a"), unique_group("nested-b"));
            // Events waiting, unread, for both handles.
            let (mut a, b) = two_handles_with_pending(node, (&ga, &gb), PENDING).await;

            let sender = a.sender();
            let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
            // The ring is stuck: fill the local daemon's queue.
            let flood =
                fill_queue(|seq| a.connection().send(&tagged(6, seq as u32, 64 << 10))) as u32;
            let polls_b = std::sync::Arc::new(PollsB {
                send: std::sync::Mutex::new(None),
                sent: Default::default(),
                b: std::sync::Mutex::new(Some(b)),
                seen: Default::default(),
                wakes: Default::default(),
                wakes_reading_b: Default::default(),
                again: Default::default(),
            });
            let waker = std::task::Waker::from(polls_b.clone());
            let parked = park_a_send_with(&sender, &waker).await;
            *polls_b.send.lock().unwrap() = Some(parked);
            // The ring moves again a second after A's send has begun to wait.
            let resume = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(1));
                drop(paused);
            });
            let waits = a.backpressure_waits();
            a.send(&tagged(7, 0, 100)).await.expect("A's send");
            resume.join().unwrap();
            assert!(a.backpressure_waits() > waits, "A's send never paused");
            // No more sends from the waker.
            drop(polls_b.send.lock().unwrap().take());
            let parked_sent = polls_b.sent.load(SeqCst);
            let (wakes, reading) = (
                polls_b.wakes.load(SeqCst),
                polls_b.wakes_reading_b.load(SeqCst),
            );

            // B: its own messages, once each, in order, and nothing of A's.
            let mut b = polls_b.b.lock().unwrap().take().unwrap();
            let seen = std::mem::take(&mut *polls_b.seen.lock().unwrap());
            let mut got_b = Vec::new();
            for event in seen {
                if let Event::Deliver { group, data, .. } = event.expect("B's stream") {
                    assert_eq!(
                        group,
                        gb,
                        "B's stream yielded A's message {:?} (read inside A's dispatch)",
                        decode_tagged(&data)
                    );
                    got_b.push(decode_tagged(&data));
                }
            }
            let got_b = read_until(&mut b, &gb, got_b, 8, PENDING as usize).await;
            assert_eq!(seqs_of(&got_b, 8), (0..PENDING).collect::<Vec<_>>());
            assert_eq!(got_b.len(), PENDING as usize, "{got_b:?}");
            // A: every message it and its sender sent, once each, in order.
            let mut got_a = read_until(&mut a, &ga, Vec::new(), 7, 1).await;
            got_a = read_until(&mut a, &ga, got_a, 6, flood as usize).await;
            let parked = usize::from(parked_sent);
            got_a = read_until(&mut a, &ga, got_a, 1, parked).await;
            assert_eq!(
                seqs_of(&got_a, 5),
                (0..PENDING).collect::<Vec<_>>(),
                "A's pending ones"
            );
            assert_eq!(
                seqs_of(&got_a, 6),
                (0..flood).collect::<Vec<_>>(),
                "A's flood"
            );
            assert_eq!(seqs_of(&got_a, 1).len(), parked, "the parked send's");
            eprintln!(
                "nested reads: {wakes} wakes of the parked send, {reading} of them read B; \
                 {flood} flood messages; B read {} events inside the wakes",
                got_b.len()
            );
            // Not vacuous: the waker read B from inside the dispatches of A's pause.
            assert!(
                reading >= 2,
                "the waker read B in only {reading} of {wakes} wakes: this test proved nothing"
            );
        });
    });
}

/// Tasks send through `AsyncSender`s while one task reads the stream, and the daemon
/// is killed under them: the stream ends with a lost-daemon error, every send ends
/// within `WAIT` of the kill with a lost-daemon error, and no send that began after a
/// call had reported the loss says `Ok` (the daemon is gone: such an `Ok` would be a
/// message reported sent that never reached it).
#[test]
fn async_senders_end_on_a_killed_daemon_and_no_later_send_says_ok() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let _serial = support::serial();
    let private = Arc::new(cpg_testkit::Cluster::start(1));
    run(WAIT * 2, move || async move {
        let group = unique_group("sender-killed");
        let mut h = connect(private.node(0));
        h.join(&group).await.unwrap();
        wait_members(&mut h, &group, 1).await;
        // The end of the earliest call that reported the loss.
        let first_loss: Arc<Mutex<Option<Instant>>> = Arc::default();
        let record = |first: &Mutex<Option<Instant>>| {
            let now = Instant::now();
            let mut first = first.lock().unwrap();
            if first.is_none_or(|f| now < f) {
                *first = Some(now);
            }
        };
        let tasks: Vec<_> = (0..4u32)
            .map(|t| {
                let (sender, first_loss) = (h.sender(), first_loss.clone());
                tokio::spawn(async move {
                    let mut began_ok = Vec::new();
                    for seq in 0.. {
                        let began = Instant::now();
                        match sender.send(&tagged(t, seq, 16 << 10)).await {
                            Ok(()) => began_ok.push((seq, began)),
                            Err(e) => {
                                record(&first_loss);
                                return (began_ok, e);
                            }
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        let mut delivered = 0;
        while delivered < 500 {
            if let Event::Deliver { .. } = next(&mut h).await {
                delivered += 1;
            }
        }
        private.kill_daemon(0);
        let killed = Instant::now();
        let error = loop {
            match tokio::time::timeout(WAIT, h.next_event())
                .await
                .expect("the stream saw the loss within WAIT")
            {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        record(&first_loss);
        assert!(error.is_daemon_lost(), "{error:?}");
        assert!(h.next_event().await.is_none(), "the stream ended");
        let mut ok = 0;
        for (t, task) in tasks.into_iter().enumerate() {
            let (began_ok, error) =
                tokio::time::timeout(WAIT.saturating_sub(killed.elapsed()), task)
                    .await
                    .expect("a send still running WAIT after the kill")
                    .unwrap();
            assert!(error.is_daemon_lost(), "task {t}: {error:?}");
            let loss = first_loss.lock().unwrap().unwrap();
            for (seq, began) in &began_ok {
                assert!(
                    *began < loss,
                    "task {t}: message {seq} began {:?} after the loss was reported, and \
                     said Ok",
                    *began - loss
                );
            }
            ok += began_ok.len();
        }
        assert!(
            ok > 0,
            "nothing was sent before the kill: this test proved nothing"
        );
    });
}
