//! `AsyncHandle::read_with` against a reader's closure that does what safe code can, on
//! a real daemon: reads another handle itself (lending, with a closure that panics),
//! starts a runtime, and a read made from a thread-local's destructor. Every event once,
//! in order, to the handle whose dispatch read it; panics reach the caller; the handle
//! reads on.

mod support;

use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cpg::{AsyncHandle, EventRef, GroupName};
use support::stream::*;
use support::{unique_group, WAIT};

/// `poll_read_with` with `f`, catching a panic of it: `Err` with the panic's message.
async fn read_catching(
    h: &mut AsyncHandle,
    f: &mut (dyn FnMut(EventRef<'_>) + Send),
) -> Result<usize, String> {
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| h.poll_read_with(cx, f))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(read)) => Poll::Ready(Ok(read.expect("read_with"))),
            Err(panic) => Poll::Ready(Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default())),
        },
    )
    .await
}

/// The sequence number of a delivered message of `group`; `None` for membership
/// events. Fails on a message of another group.
fn seq_of(event: EventRef<'_>, group: &GroupName) -> Option<u64> {
    match event {
        EventRef::Deliver(m) => {
            assert_eq!(m.group, group, "a message of another group");
            Some(check_payload(m.data))
        }
        _ => None,
    }
}

/// Reads `h` with `read_with` until `got` holds `count` messages of `group`.
async fn read_until(h: &mut AsyncHandle, group: &GroupName, got: &mut Vec<u64>, count: usize) {
    while got.len() < count {
        let read = tokio::time::timeout(WAIT, h.read_with(|e| got.extend(seq_of(e, group))))
            .await
            .expect("no event within WAIT")
            .expect("read_with");
        assert!(read > 0, "the stream ended");
    }
}

/// The reader's closure of A reads B itself (lending, through `poll_read_with` with
/// a no-op waker, nested in A's dispatch), and B's closure panics once. The panic
/// goes through B's read (caught where B's closure runs, re-raised after B's
/// dispatch), through A's closure (caught where it runs, inside A's dispatch) to A's
/// caller. Each handle's reader gets its own messages only, each once, in order, and
/// neither handle is poisoned.
#[test]
fn a_reader_that_reads_another_handle_with_a_panicking_reader() {
    const COUNT: u64 = 30;
    const B_PANICS_AT: u64 = 7;
    run(Duration::from_secs(90), || async {
        let node = cpg_testkit::shared();
        let (ga, gb) = (unique_group("hostile-a"), unique_group("hostile-b"));
        let (mut a, mut b) = (connect(node), connect(node));
        a.join(&ga).await.expect("join A");
        b.join(&gb).await.expect("join B");
        let me_a = wait_members(&mut a, &ga, 1).await[0];
        wait_members(&mut b, &gb, 1).await;
        for seq in 0..COUNT {
            a.send(&payload(seq)).await.expect("send A");
            b.send(&payload(seq)).await.expect("send B");
        }
        wait_pending(&a);
        wait_pending(&b);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut nested_reads = 0;
        let mut panics = Vec::new();
        let mut rounds = 0;
        while (got_a.len() as u64) < COUNT {
            rounds += 1;
            assert!(rounds < 1000, "A does not progress");
            let mut f = |e: EventRef<'_>| {
                if let EventRef::Deliver(m) = e {
                    assert_eq!(m.sender(), me_a);
                }
                got_a.extend(seq_of(e, &ga));
                // B, read in A's dispatch; B's reader panics once.
                let mut cx = Context::from_waker(Waker::noop());
                let mut g = |e: EventRef<'_>| {
                    if let Some(seq) = seq_of(e, &gb) {
                        got_b.push(seq);
                        if seq == B_PANICS_AT {
                            panic!("B's reader panicked at {seq}");
                        }
                    }
                };
                if let Poll::Ready(read) = b.poll_read_with(&mut cx, &mut g) {
                    assert!(read.expect("B's read_with, nested") > 0);
                    nested_reads += 1;
                }
            };
            match read_catching(&mut a, &mut f).await {
                Ok(read) => assert!(read > 0),
                Err(panic) => panics.push(panic),
            }
        }
        assert_eq!(
            panics,
            [format!("B's reader panicked at {B_PANICS_AT}")],
            "B's panic reaches A's caller, once"
        );
        assert!(nested_reads > 0, "B was never read inside A's dispatch");
        assert_eq!(
            got_a,
            (0..COUNT).collect::<Vec<_>>(),
            "A: lost, duplicated or reordered"
        );
        // The rest of B, read on its own.
        read_until(&mut b, &gb, &mut got_b, COUNT as usize).await;
        assert_eq!(
            got_b,
            (0..COUNT).collect::<Vec<_>>(),
            "B: lost, duplicated or reordered"
        );
        // Neither is poisoned.
        a.send(&payload(COUNT))
            .await
            .expect("A sends after the panic");
        b.send(&payload(COUNT))
            .await
            .expect("B sends after the panic");
        read_until(&mut a, &ga, &mut got_a, COUNT as usize + 1).await;
        read_until(&mut b, &gb, &mut got_b, COUNT as usize + 1).await;
        assert_eq!((got_a.last(), got_b.last()), (Some(&COUNT), Some(&COUNT)));
    });
}

/// The reader's closure tries to block on a new runtime (inside a task of another
/// one): tokio refuses with a panic, which reaches the caller of `read_with` from
/// inside libcpg's dispatch; the event counts as read, the others come out after it,
/// once each, in order, and the handle reads on.
#[test]
fn a_reader_that_starts_a_runtime_panics_to_its_caller_and_nothing_is_lost() {
    const COUNT: u64 = 10;
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = unique_group("hostile-rt");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;
        for seq in 0..COUNT {
            h.send(&payload(seq)).await.expect("send");
        }
        wait_pending(&h);
        let mut got = Vec::new();
        let mut panicked = None;
        while got.len() < 4 {
            let mut f = |e: EventRef<'_>| {
                if let Some(seq) = seq_of(e, &group) {
                    got.push(seq);
                    if seq == 3 {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .expect("build");
                        rt.block_on(async {});
                        unreachable!("a runtime started inside a runtime");
                    }
                }
            };
            if let Err(panic) = read_catching(&mut h, &mut f).await {
                panicked = Some(panic);
            }
        }
        let panicked = panicked.expect("no panic from the nested runtime");
        assert!(panicked.contains("runtime"), "{panicked}");
        read_until(&mut h, &group, &mut got, COUNT as usize).await;
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
    });
}

/// Reads made from a thread-local's destructor that runs after the hand-off's own
/// locals (the mailbox) were destroyed, while tokio's are still there: `read_with`
/// lends every message, in order (its sink slot has no destructor, and nothing is
/// copied into the mailbox), and the stream, mixed with it, yields the rest, in order,
/// instead of panicking inside the dispatch (which poisoned the handle).
#[test]
fn reads_from_a_thread_locals_destructor_after_the_mailbox_is_gone() {
    const COUNT: u64 = 10;
    struct ReadsOnExit(std::sync::mpsc::Sender<String>);
    impl Drop for ReadsOnExit {
        fn drop(&mut self) {
            // What this test is about: locals registered after this one, like the
            // mailbox, are gone (glibc runs the destructors in reverse order).
            if AFTER.try_with(|_| ()).is_ok() {
                let _ = self.0.send("the later locals are still there".to_string());
                return;
            }
            let node = cpg_testkit::shared();
            let result = catch_unwind(AssertUnwindSafe(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime in a destructor");
                node.enter(|| {
                    rt.block_on(async {
                        let group = unique_group("hostile-tls");
                        let mut h = AsyncHandle::new().expect("connect");
                        h.join(&group).await.expect("join");
                        let mut got = Vec::new();
                        let mut joined = false;
                        while !joined {
                            tokio::time::timeout(
                                WAIT,
                                h.read_with(|e| joined |= matches!(e, EventRef::Confchg(_))),
                            )
                            .await
                            .expect("no join within WAIT")
                            .expect("read_with");
                        }
                        for seq in 0..COUNT {
                            h.send(&payload(seq)).await.expect("send");
                        }
                        read_until(&mut h, &group, &mut got, COUNT as usize).await;
                        // The stream too, which copies events out (the callbacks
                        // cannot post into the destroyed mailbox), mixed with
                        // `read_with`.
                        for seq in COUNT..COUNT + 40 {
                            h.send(&payload(seq)).await.expect("send");
                        }
                        while got.len() < COUNT as usize + 40 {
                            let event = tokio::time::timeout(
                                WAIT,
                                poll_fn(|cx| {
                                    match catch_unwind(AssertUnwindSafe(|| h.poll_event(cx))) {
                                        Ok(Poll::Pending) => Poll::Pending,
                                        Ok(Poll::Ready(item)) => Poll::Ready(item),
                                        Err(panic) => std::panic::resume_unwind(panic),
                                    }
                                }),
                            )
                            .await
                            .expect("no event within WAIT")
                            .expect("the stream ended")
                            .expect("the stream failed");
                            if let cpg::Event::Deliver { data, .. } = &event {
                                got.push(check_payload(data));
                            }
                            let wanted = got.len() + 1;
                            read_until(&mut h, &group, &mut got, wanted.min(COUNT as usize + 40))
                                .await;
                        }
                        format!("{got:?}")
                    })
                })
            }));
            let report = match result {
                Ok(report) => report,
                Err(panic) => format!(
                    "panicked: {:?}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                ),
            };
            let _ = self.0.send(report);
        }
    }
    thread_local! {
        static ON_EXIT: std::cell::RefCell<Option<ReadsOnExit>> =
            const { std::cell::RefCell::new(None) };
        /// Registered after the mailbox: gone before `ON_EXIT` only if the mailbox is.
        static AFTER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(support::BIG_STACK)
        .spawn(move || {
            let node = cpg_testkit::shared();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            node.enter(|| {
                rt.block_on(async {
                    // tokio's locals are in use: registered before this one, destroyed
                    // after it. The mailbox is touched (by a stream's drain) after this
                    // one: destroyed before it.
                    ON_EXIT.with_borrow_mut(|slot| *slot = Some(ReadsOnExit(tx)));
                    let group = unique_group("hostile-tls-first");
                    let mut h = AsyncHandle::new().expect("connect");
                    h.join(&group).await.expect("join");
                    wait_members(&mut h, &group, 1).await;
                })
            });
            AFTER.with_borrow_mut(|v| v.push(1));
        })
        .expect("spawn")
        .join()
        .expect("the thread (and its locals' destructors) panicked");
    let report = rx.recv_timeout(WAIT).expect("the destructor's read");
    eprintln!("{report}");
    assert_eq!(report, format!("{:?}", (0..COUNT + 40).collect::<Vec<_>>()));
}

/// A send of the handle itself waiting out real back-pressure (node 2's daemon is
/// stopped) reads the handle's pending events into the stream's queue while it
/// pauses (copying them); `read_with` afterwards lends those queued ones first, then
/// the rest from libcpg: the handle's pending messages, the flood that filled the
/// daemon's queue, and the waiting send's own message, each once, in order.
#[test]
fn read_with_after_a_send_that_waited_out_backpressure_keeps_the_order() {
    const PENDING: u64 = 200;
    let _serial = support::serial();
    let cluster = support::cluster::stoppable_pair(10_000);
    support::big_stack(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let node = cluster.node(0);
            let group = unique_group("hostile-backpressure");
            let mut a = connect(node);
            a.join(&group).await.expect("join");
            wait_members(&mut a, &group, 1).await;
            // Pending in libcpg, unread.
            for seq in 0..PENDING {
                a.send(&payload(seq)).await.expect("send");
            }
            wait_pending(&a);
            let paused = support::cluster::Paused::pause(
                cluster.node(1).daemon_pid().expect("node 2's daemon"),
            );
            let flood = fill_queue(|seq| a.connection().send(&payload(PENDING + seq)));
            let resume = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(1));
                drop(paused);
            });
            let waits_before = a.backpressure_waits();
            let last = PENDING + flood;
            tokio::time::timeout(WAIT, a.send(&payload(last)))
                .await
                .expect("the send did not complete within WAIT")
                .expect("send under back-pressure");
            resume.join().unwrap();
            assert!(
                a.backpressure_waits() > waits_before,
                "the send never waited: this test proves less"
            );
            let (queued, _) = futures_core::Stream::size_hint(&a);
            assert!(
                queued > 0,
                "the send's pauses queued nothing: this test proves less"
            );
            let mut got = Vec::new();
            read_until(&mut a, &group, &mut got, last as usize + 1).await;
            assert_eq!(
                got,
                (0..=last).collect::<Vec<_>>(),
                "lost, duplicated or reordered ({queued} were queued by the send)"
            );
            eprintln!("{queued} queued by the send's pauses, {flood} in the flood");
        });
    });
}
