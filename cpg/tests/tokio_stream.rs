//! The async handle on the shared single-node daemon: ordered delivery of thousands of
//! messages through the stream, back-pressure without loss, cancelled sends, vectored
//! sends, membership events (all on the multi-thread runtime), fairness to other
//! tasks on a current-thread runtime, and the end of a handle whose runtime is gone.
//! Reading while a send waits out back-pressure needs back-pressure on demand: a
//! 2-node cluster whose second daemon is stopped.

mod support;

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cpg::{AsyncHandle, Event, Member, Reason};
use support::cluster::{stoppable_pair, Paused};
use support::stream::*;
use support::{big_stack, unique_group, WAIT};

/// Compile-time: a task that owns an `AsyncHandle` (and awaits its futures) can be
/// spawned on the multi-thread runtime.
#[test]
fn async_handle_and_its_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn check(h: &mut AsyncHandle) {
        assert_send(&h.next_event());
        assert_send(&h.send(b"x"));
    }
    let _ = check;
}

/// Corosync admits one member per process and group, so on one node a process hears
/// a group through a single handle: here it sends 5,000 messages and reads them back
/// through the stream, while a second handle does the same in another group on the
/// same runtime. Each gets all of its own messages exactly once, in the order sent,
/// with their bytes, and nothing of the other group. (Agreed order across receivers on
/// several nodes is in `tokio_cluster.rs`.)
#[test]
fn thousands_of_messages_arrive_in_order_through_the_stream() {
    const COUNT: u64 = 5_000;
    run(Duration::from_secs(180), || async {
        let node = cpg_testkit::shared();
        let mut tasks = Vec::new();
        for name in ["order-a", "order-b"] {
            let group = unique_group(name);
            let mut h = connect(node);
            tasks.push(tokio::spawn(async move {
                h.join(&group).await.expect("join");
                let me = wait_members(&mut h, &group, 1).await[0];
                for seq in 0..COUNT {
                    h.send(&payload(seq)).await.expect("send");
                }
                let got = collect(&mut h, COUNT as usize).await;
                for (i, (sender, data)) in got.iter().enumerate() {
                    assert_eq!(*sender, me, "message {i} from a stranger");
                    assert_eq!(
                        check_payload(data),
                        i as u64,
                        "lost, duplicated or reordered"
                    );
                }
                // Nothing more than what was sent: the stream is quiet now.
                let extra = tokio::time::timeout(Duration::from_millis(300), h.next_event()).await;
                assert!(
                    extra.is_err(),
                    "unexpected event after the last message: {extra:?}"
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
}

/// One handle floods 3,000 messages of 64 KiB with async `send` as fast as the daemon
/// takes them, hitting back-pressure, then reads its own copies (read into its queue
/// while it waited). Nothing is lost or duplicated, everything arrives in order, and
/// the sender did have to wait. (Concurrent receivers on other nodes:
/// `tokio_cluster.rs`.)
#[test]
fn a_flood_waits_out_backpressure_without_loss() {
    const COUNT: u64 = 3_000;
    const SIZE: usize = 64 << 10;
    run(Duration::from_secs(240), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("flood");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;

        let mut msg = vec![0u8; SIZE];
        for seq in 0..COUNT {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            msg[8..].fill(seq as u8);
            h.send(&msg).await.expect("send under back-pressure");
        }
        let waits = h.backpressure_waits();
        let mut next_seq = 0u64;
        while next_seq < COUNT {
            match next(&mut h).await {
                Event::Deliver { data, .. } => {
                    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
                    assert_eq!(seq, next_seq, "lost, duplicated or reordered message");
                    assert_eq!(data.len(), SIZE);
                    assert!(
                        data[8..].iter().all(|&b| b == seq as u8),
                        "content of {seq}"
                    );
                    next_seq += 1;
                }
                other => panic!("unexpected event during the flood: {other:?}"),
            }
        }
        assert!(
            waits > 0,
            "the flood never met back-pressure, so this test proved nothing"
        );
        eprintln!("flood of {COUNT}: {waits} back-pressure waits");
    });
}

/// A vectored send arrives as one message: the buffers concatenated.
#[test]
fn vectored_send_arrives_as_one_message() {
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("vectored");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;
        let parts: Vec<Vec<u8>> = (0..63u8).map(|i| vec![i; i as usize + 1]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        h.send_vectored(&slices).await.expect("send_vectored");
        let got = collect(&mut h, 1).await;
        assert_eq!(got[0].1, parts.concat());
        assert_eq!(
            got[0].0,
            Member {
                nodeid: h.local_node_id().unwrap(),
                pid: std::process::id()
            }
        );
        // 64 buffers are refused before C is called, without waiting.
        let too_many: Vec<IoSlice<'_>> = (0..64).map(|_| IoSlice::new(b"x")).collect();
        let err = h.send_vectored(&too_many).await.unwrap_err();
        assert!(
            matches!(err, cpg::Error::TooManyBuffers { count: 64, .. }),
            "{err}"
        );
    });
}

/// Membership changes come through the stream as owned events with the right lists
/// and reasons: this process's own join (Join), then its own leave (Leave); `members`
/// agrees in between. (Other processes joining and leaving: `tokio_cluster.rs`.)
#[test]
fn own_join_and_leave_come_as_confchg_events() {
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("confchg");
        let mut h = connect(node);
        let me = Member {
            nodeid: h.local_node_id().expect("local node id"),
            pid: std::process::id(),
        };
        h.join(&group).await.expect("join");
        match next(&mut h).await {
            Event::Confchg {
                group: g,
                members,
                left,
                joined,
            } => {
                assert_eq!(g, group);
                assert_eq!(members.iter().map(|a| a.member()).collect::<Vec<_>>(), [me]);
                assert!(left.is_empty(), "{left:?}");
                assert_eq!(joined.len(), 1);
                assert_eq!(joined[0].member(), me);
                assert_eq!(joined[0].reason(), Reason::Join);
            }
            other => panic!("expected the join, got {other:?}"),
        }
        assert_eq!(h.members(&group).expect("members"), [me]);
        // A second join of the same group is refused at once (not retried).
        let err = h.join(&group).await.unwrap_err();
        assert_eq!(err.code(), Some(cpg::CsError::Exist), "{err}");

        h.leave(&group).await.expect("leave");
        match next(&mut h).await {
            Event::Confchg { members, left, .. } => {
                assert!(members.is_empty(), "{members:?}");
                assert_eq!(left.len(), 1);
                assert_eq!(left[0].member(), me);
                assert_eq!(left[0].reason(), Reason::Leave);
            }
            other => panic!("expected the leave, got {other:?}"),
        }
    });
}

/// The handle is a `futures_core::Stream` of `Result<Event>`, usable through any
/// Stream combinator; here polled by hand through `poll_next`.
#[test]
fn the_handle_is_a_stream() {
    use futures_core::Stream;
    use std::pin::Pin;

    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("stream");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        h.send(b"via Stream").await.expect("send");
        let data = loop {
            let item = std::future::poll_fn(|cx| Pin::new(&mut h).poll_next(cx)).await;
            if let Some(Ok(Event::Deliver { data, .. })) = item {
                break data;
            }
            assert!(matches!(item, Some(Ok(_))), "{item:?}");
        };
        assert_eq!(data, b"via Stream");
    });
}

/// Cancellation: a flood of 64 KiB messages where a send is dropped the moment it has to
/// wait (a zero timeout: the send is polled once, then dropped if it is pausing on
/// back-pressure). Exactly the messages whose send completed are delivered, once each,
/// in order; none of the dropped ones, not even in part. The flood goes on (bounded)
/// until some sends were dropped, since how soon the daemon pushes back varies.
#[test]
fn a_dropped_send_future_sent_nothing() {
    const MIN_SENDS: u64 = 3_000;
    const MAX_SENDS: u64 = 30_000;
    const MIN_DROPPED: u64 = 10;
    const SIZE: usize = 64 << 10;
    run(Duration::from_secs(240), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("cancel");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;

        // Sequence numbers whose send completed and that have not been delivered yet.
        let mut expected = VecDeque::new();
        let mut completed = 0u64;
        let mut dropped = 0u64;
        let check = |expected: &mut VecDeque<u64>, event: Result<Event, cpg::Error>| {
            let Event::Deliver { data, .. } = event.expect("stream") else {
                return false;
            };
            if data == b"end" {
                return true;
            }
            assert_eq!(data.len(), SIZE, "a partial message was delivered");
            let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
            assert!(
                data[8..].iter().all(|&b| b == seq as u8),
                "content of {seq}"
            );
            assert_eq!(
                expected.pop_front(),
                Some(seq),
                "delivered messages differ from the sends that completed"
            );
            false
        };
        let mut msg = vec![0u8; SIZE];
        let mut seq = 0u64;
        while seq < MAX_SENDS && (seq < MIN_SENDS || dropped < MIN_DROPPED) {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            msg[8..].fill(seq as u8);
            match tokio::time::timeout(Duration::ZERO, h.send(&msg)).await {
                Ok(result) => {
                    result.expect("send");
                    expected.push_back(seq);
                    completed += 1;
                }
                Err(_) => dropped += 1,
            }
            seq += 1;
            // Check what has arrived so far (without waiting) now and then: often
            // enough to bound the queue, rarely enough that the sender outruns the
            // daemon (a client that reads promptly meets back-pressure seldom).
            if seq % 1_000 == 0 {
                for event in ready_now(&mut h).await {
                    assert!(!check(&mut expected, event), "early end marker");
                }
            }
        }
        h.send(b"end").await.expect("send end marker");
        while !check(&mut expected, Ok(next(&mut h).await)) {}
        eprintln!("cancellation: {completed} sends completed, {dropped} dropped while waiting");
        assert!(
            expected.is_empty(),
            "completed sends never delivered: {:?}",
            expected.iter().take(10).collect::<Vec<_>>()
        );
        assert!(
            dropped > 0,
            "no send was ever dropped while waiting in {MAX_SENDS} sends: this test proved nothing"
        );
    });
}

/// Fairness: a task that reads a busy stream in a loop yields to the other tasks of its
/// thread at least every `EVENTS_PER_POLL` events. A backlog of messages is read on a
/// current-thread runtime next to a task that, whenever it runs, records how many events
/// the reader took since its previous turn.
#[test]
fn a_busy_stream_lets_other_tasks_run() {
    const COUNT: u64 = 5_000;
    big_stack(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let node = cpg_testkit::shared();
            let group = unique_group("fair");
            let mut h = connect(node);
            h.join(&group).await.expect("join");
            wait_members(&mut h, &group, 1).await;
            for seq in 0..COUNT {
                h.send(&payload(seq)).await.expect("send");
            }

            let consumed = Arc::new(AtomicU64::new(0));
            let largest_gap = Arc::new(AtomicU64::new(0));
            let turns = Arc::new(AtomicU64::new(0));
            let other = tokio::spawn({
                let (consumed, largest_gap, turns) =
                    (consumed.clone(), largest_gap.clone(), turns.clone());
                async move {
                    let mut seen = 0;
                    loop {
                        let now = consumed.load(Ordering::Relaxed);
                        largest_gap.fetch_max(now - seen, Ordering::Relaxed);
                        seen = now;
                        turns.fetch_add(1, Ordering::Relaxed);
                        yield_now_undeferred().await;
                    }
                }
            });
            let mut next_seq = 0;
            while next_seq < COUNT {
                let data = match tokio::time::timeout(WAIT, h.next_event()).await {
                    Ok(Some(Ok(Event::Deliver { data, .. }))) => data,
                    Ok(Some(Ok(_))) => continue,
                    other => panic!("stream: {other:?}"),
                };
                assert_eq!(check_payload(&data), next_seq, "order");
                next_seq += 1;
                consumed.fetch_add(1, Ordering::Relaxed);
            }
            other.abort();
            let (gap, turns) = (largest_gap.load(Ordering::Relaxed), turns.load(Ordering::Relaxed));
            eprintln!("fairness: {COUNT} events, the other task ran {turns} times, at most {gap} events apart");
            assert!(
                turns >= COUNT / cpg::tokio::EVENTS_PER_POLL as u64,
                "the other task ran only {turns} times while {COUNT} events were read"
            );
            assert!(
                gap <= cpg::tokio::EVENTS_PER_POLL as u64,
                "{gap} events were read between two turns of the other task"
            );
        });
    });
}

/// Returns `Pending` once, waking the task at once (tokio's `yield_now` defers the
/// wake-up to the next time the runtime polls its driver, which would let the reader
/// run several budgets between two turns).
async fn yield_now_undeferred() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// `AsyncHandle::builder` configures like `Handle::builder`: the initial totem
/// configuration comes with the join, and the back-off is the one given. The handle's
/// own identity is the member its join lists.
#[test]
fn the_async_builder_applies_its_options_and_back_off() {
    run(WAIT, || async {
        let node = cpg_testkit::shared();
        let backoff = cpg::retry::Backoff {
            max_attempts: 7,
            ..cpg::retry::Backoff::default()
        };
        let mut h = node
            .enter(|| {
                AsyncHandle::builder()
                    .initial_totem_conf(true)
                    .backoff(backoff)
                    .build()
            })
            .expect("build");
        assert_eq!(h.backoff(), backoff);
        let me = h.local_member().expect("local member");
        assert_eq!(me, Member::new(1, std::process::id()));
        let group = unique_group("builder");
        h.join(&group).await.expect("join");
        let (mut totem, mut joined) = (false, false);
        while !(totem && joined) {
            match next(&mut h).await {
                Event::TotemConfchg { members, .. } => {
                    assert_eq!(members, vec![1]);
                    totem = true;
                }
                Event::Confchg { joined: j, .. } => {
                    assert_eq!(j.iter().map(|a| a.member()).collect::<Vec<_>>(), [me]);
                    joined = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
}

/// An async send reads events while it waits out back-pressure (the daemon would keep
/// them, without limit). The handle has its own earlier messages waiting, unread; with
/// node 2's daemon stopped the ring orders nothing, so a flood through the
/// connection's non-waiting `send` fills the local daemon's queue, and `send().await`
/// must wait. Its first pause reads the waiting events: they are in the stream's queue
/// (its `size_hint`) when the send returns, read while nothing polled the stream, and
/// then come out of the stream with everything after them, in order.
///
/// (It used to flood the shared single-node daemon until it pushed back. Under
/// valgrind the client is so slow that the daemon took 7,000 to 8,000 messages of
/// 64 KiB before it pushed back, 20 s, and the test ran past its 30 s bound.)
#[test]
fn an_async_send_reads_events_while_it_waits_out_back_pressure() {
    use futures_core::Stream as _;
    const WAITING: u64 = 8;
    let cluster = stoppable_pair(10_000);
    run(WAIT * 2, move || async move {
        let group = unique_group("async-pressure");
        let mut h = connect(cluster.node(0));
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;
        for seq in 0..WAITING {
            h.send(&payload(seq)).await.expect("send");
        }
        wait_pending(&h);
        let paused = Paused::pause(cluster.node(1).daemon_pid().expect("node 2's daemon"));
        let flood = vec![5u8; 64 << 10];
        let flooded = fill_queue(|_| h.connection().send(&flood));
        // The ring moves again a second after the send below has begun to wait.
        let resume = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            drop(paused);
        });
        let waits = h.backpressure_waits();
        h.send(b"last").await.expect("send under back-pressure");
        resume.join().unwrap();
        assert!(h.backpressure_waits() > waits, "the send never paused");
        let (queued, _) = h.size_hint();
        eprintln!("{queued} events read while the send waited ({flooded} flood messages)");
        assert!(queued > 0, "the send read nothing while it waited");
        // In order: the waiting ones, the flood, the last.
        let got = collect(&mut h, (WAITING + flooded + 1) as usize).await;
        for (seq, (_, data)) in got.iter().take(WAITING as usize).enumerate() {
            assert_eq!(check_payload(data), seq as u64);
        }
        let flood_got = &got[WAITING as usize..got.len() - 1];
        assert!(flood_got.iter().all(|(_, d)| *d == flood), "the flood");
        assert_eq!(got.last().unwrap().1, b"last");
    });
}

/// A handle is bound to the runtime that registered it. Made and joined on a runtime
/// that is then dropped, and read on another: the stream yields the reactor's error
/// once and ends, and the handle leaves its group (another connection's membership
/// query no longer lists this process) and refuses every later call with `Closed`,
/// its sender's too. (Before, it stayed joined with nobody able to read its events,
/// which the daemon queued without bound.)
#[test]
fn a_handle_whose_runtime_was_dropped_leaves_its_group_when_its_stream_ends() {
    let node = cpg_testkit::shared();
    let group = unique_group("runtime-gone");
    let start = move || async move {
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        let me = wait_members(&mut h, &group, 1).await[0];
        let sender = h.sender();
        (h, sender, me)
    };
    let then = move |(mut h, sender, me): (AsyncHandle, cpg::AsyncSender, Member)| async move {
        let observer = node
            .enter(|| cpg::Handle::new(support::NoCallbacks))
            .expect("observer handle");
        assert_eq!(observer.members(&group).expect("members"), [me]);
        match tokio::time::timeout(WAIT, h.next_event()).await {
            Ok(Some(Err(cpg::Error::Runtime { .. }))) => {}
            other => panic!("expected the reactor's error, got {other:?}"),
        }
        assert!(
            tokio::time::timeout(WAIT, h.next_event())
                .await
                .expect("the end within WAIT")
                .is_none(),
            "the stream ended"
        );
        let left = cpg_testkit::wait_until(WAIT, Duration::from_millis(20), || {
            observer.members(&group).is_ok_and(|m| m.is_empty())
        });
        assert!(
            left,
            "still a member after its stream ended: {:?}",
            observer.members(&group)
        );
        assert_eq!(h.send(b"late").await, Err(cpg::Error::Closed));
        assert_eq!(h.members(&group), Err(cpg::Error::Closed));
        assert!(sender.is_closed());
        assert_eq!(sender.send(b"late").await, Err(cpg::Error::Closed));
        drop(h);
    };
    support::stream::after_runtime_shutdown(node, start, then);
}
