//! The async handle on the shared single-node daemon: ordered delivery of thousands of
//! messages through the stream, back-pressure without loss, cancelled sends, vectored
//! sends, and membership events, all on the multi-thread runtime.

mod tokio_common;

use std::io::IoSlice;
use std::time::Duration;

use cpg::{AsyncHandle, Event, Member, Reason};
use tokio_common::*;

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
            let group = group(name);
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
        let group = group("flood");
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
        let group = group("vectored");
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
        let group = group("confchg");
        let mut h = connect(node);
        let me = Member {
            nodeid: h.local_node_id().expect("local node id"),
            pid: std::process::id(),
        };
        h.join(&group).await.expect("join");
        match next(&mut h).await {
            Event::ConfChg {
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
            Event::ConfChg { members, left, .. } => {
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
        let group = group("stream");
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

/// Cancellation: a flood of 64 KiB messages where each send may wait at most 200 µs
/// for back-pressure to lift; a send that takes longer is dropped mid-wait. Exactly the
/// messages whose send completed are delivered, once each, in order; none of the
/// dropped ones, not even in part.
#[test]
fn a_dropped_send_future_sent_nothing() {
    const COUNT: u64 = 3_000;
    const SIZE: usize = 64 << 10;
    run(Duration::from_secs(240), || async {
        let node = cpg_testkit::shared();
        let group = group("cancel");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;

        let mut sent = Vec::new();
        let mut dropped = 0u64;
        let mut msg = vec![0u8; SIZE];
        for seq in 0..COUNT {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            msg[8..].fill(seq as u8);
            match tokio::time::timeout(Duration::from_micros(200), h.send(&msg)).await {
                Ok(result) => {
                    result.expect("send");
                    sent.push(seq);
                }
                Err(_) => dropped += 1,
            }
        }
        h.send(b"end").await.expect("send end marker");
        let mut delivered = Vec::new();
        loop {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                if data == b"end" {
                    break;
                }
                assert_eq!(data.len(), SIZE, "a partial message was delivered");
                let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
                assert!(
                    data[8..].iter().all(|&b| b == seq as u8),
                    "content of {seq}"
                );
                delivered.push(seq);
            }
        }
        eprintln!(
            "cancellation: {} sends completed, {dropped} dropped while waiting",
            sent.len()
        );
        assert_eq!(
            delivered, sent,
            "delivered messages differ from the sends that completed"
        );
        assert!(
            dropped > 0,
            "no send was ever dropped while waiting: this test proved nothing"
        );
    });
}
