//! The async handle on real clusters: agreed order and back-pressure across three
//! nodes through the stream, membership events from other nodes (join, leave, node
//! down), and a stream that ends with the lost-daemon error when its daemon is killed.

mod support;

use std::time::{Duration, Instant};

use cpg::{AsyncHandle, Event, Member, Reason};
use cpg_testkit::Cluster;
use support::stream::*;
use support::{big_stack, unique_group, WAIT};

/// What a member delivered: (sender, bytes) in delivery order.
type Delivered = Vec<(Member, Vec<u8>)>;

/// Runs `fut` on `rt` with a bounded time.
fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    rt.block_on(async {
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
    })
}

/// Connects one handle per node of `cluster`, each inside its node's namespace, in
/// `rt`'s context.
fn connect_all(rt: &tokio::runtime::Runtime, cluster: &Cluster) -> Vec<AsyncHandle> {
    let _context = rt.enter();
    cluster.nodes().iter().map(connect).collect()
}

/// Three nodes, one async member each, in one cluster:
///
/// 1. all three send 1,500 messages at once; every member's stream delivers the same
///    4,500 messages in the same order, each sender's in send order, bytes intact;
/// 2. node 1 floods 1,500 or more messages of 64 KiB (more until it met back-pressure)
///    while nodes 2 and 3 read concurrently: each delivers every message once, in
///    order; node 1 met back-pressure;
/// 3. node 3's member leaves: the others see it leave with reason Leave;
/// 4. node 2's daemon is killed: node 1 sees node 2's member go with NodeDown, and
///    node 2's stream ends with the lost-daemon error.
#[test]
fn three_nodes_order_flood_leave_and_node_down_through_streams() {
    big_stack(|| {
        let cluster = Cluster::start(3);
        let rt = runtime();
        let group = unique_group("cluster");
        let mut handles = connect_all(&rt, &cluster);
        let nodeids: Vec<u32> = cluster.nodes().iter().map(|n| n.nodeid()).collect();
        let members: Vec<Member> = nodeids
            .iter()
            .map(|&nodeid| Member {
                nodeid,
                pid: std::process::id(),
            })
            .collect();

        // Join and wait until everyone sees all three.
        handles = block_on(&rt, WAIT * 2, async {
            let mut tasks = Vec::new();
            for mut h in handles {
                tasks.push(tokio::spawn(async move {
                    h.join(&group).await.expect("join");
                    wait_members(&mut h, &group, 3).await;
                    h
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("join task"));
            }
            out
        });

        // 1. Agreed order with three concurrent senders.
        const PER_SENDER: u64 = 1_500;
        let began = Instant::now();
        let results: Vec<(AsyncHandle, Delivered)> =
            block_on(&rt, Duration::from_secs(180), async {
                let mut tasks = Vec::new();
                for (i, mut h) in handles.into_iter().enumerate() {
                    tasks.push(tokio::spawn(async move {
                        for seq in 0..PER_SENDER {
                            h.send(&payload(seq | (i as u64) << 32))
                                .await
                                .expect("send");
                        }
                        let got = collect(&mut h, 3 * PER_SENDER as usize).await;
                        (h, got)
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("order task"));
                }
                out
            });
        let elapsed = began.elapsed();
        let sequences: Vec<Vec<(Member, u64)>> = results
            .iter()
            .map(|(_, got)| got.iter().map(|(m, d)| (*m, check_payload(d))).collect())
            .collect();
        for (i, seq) in sequences.iter().enumerate().skip(1) {
            assert!(
                seq == &sequences[0],
                "node {} delivered another sequence than node 1",
                i + 1
            );
        }
        for (i, member) in members.iter().enumerate() {
            let from_i: Vec<u64> = sequences[0]
                .iter()
                .filter(|(_, s)| s >> 32 == i as u64)
                .map(|(m, s)| {
                    assert_eq!(m, member, "message tagged {i} came from {m}");
                    s & 0xffff_ffff
                })
                .collect();
            assert_eq!(
                from_i,
                (0..PER_SENDER).collect::<Vec<_>>(),
                "sender on node {}: lost, duplicated or reordered",
                i + 1
            );
        }
        eprintln!(
            "3 nodes: each delivered the same {} messages in {elapsed:.2?}",
            sequences[0].len()
        );
        let mut handles: Vec<AsyncHandle> = results.into_iter().map(|(h, _)| h).collect();

        // 2. Flood from node 1 with concurrent readers on nodes 2 and 3.
        const FLOOD: u64 = 1_500;
        const SIZE: usize = 64 << 10;
        let readers: Vec<_> = handles
            .drain(1..)
            .map(|mut h| {
                rt.spawn(async move {
                    let mut next_seq = 0u64;
                    loop {
                        if let Event::Deliver { data, .. } = next(&mut h).await {
                            let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
                            if data.len() == 8 {
                                // The end mark, which carries how many were sent.
                                assert_eq!(next_seq, seq, "messages lost before the end");
                                break;
                            }
                            assert_eq!(seq, next_seq, "lost, duplicated or reordered");
                            assert_eq!(data.len(), SIZE);
                            assert!(data[8..].iter().all(|&b| b == seq as u8));
                            next_seq += 1;
                        }
                    }
                    h
                })
            })
            .collect();
        let mut sender = handles.pop().expect("node 1's handle");
        let began = Instant::now();
        let waits = block_on(&rt, Duration::from_secs(240), async {
            let mut msg = vec![0u8; SIZE];
            // FLOOD messages, and more (up to 4 times as many) until the daemon has
            // pushed back: a sender starved of CPU by a loaded machine can send the
            // first FLOOD no faster than the daemons take them.
            let mut seq = 0;
            while seq < FLOOD || (sender.backpressure_waits() == 0 && seq < 4 * FLOOD) {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                msg[8..].fill(seq as u8);
                sender.send(&msg).await.expect("send under back-pressure");
                seq += 1;
            }
            sender
                .send(&seq.to_le_bytes())
                .await
                .expect("send the end mark");
            let waits = sender.backpressure_waits();
            let own = collect(&mut sender, seq as usize + 1).await;
            for (i, (_, data)) in own.iter().enumerate() {
                assert_eq!(u64::from_le_bytes(data[..8].try_into().unwrap()), i as u64);
            }
            assert_eq!(
                own.last().map(|(_, d)| d.len()),
                Some(8),
                "the end mark last"
            );
            waits
        });
        let mut handles = vec![sender];
        for r in readers {
            handles.push(block_on(&rt, WAIT * 4, r).expect("reader task"));
        }
        eprintln!(
            "flood: {FLOOD}+ x {SIZE} B from node 1 delivered on 3 nodes in {:.2?}, {waits} \
             back-pressure waits",
            began.elapsed()
        );
        assert!(waits > 0, "the flood never met back-pressure");

        // 3. Node 3's member leaves.
        let mut third = handles.pop().expect("node 3's handle");
        block_on(&rt, WAIT, third.leave(&group)).expect("leave");
        for h in handles.iter_mut() {
            let left = block_on(&rt, WAIT * 2, async {
                loop {
                    if let Event::Confchg {
                        left, members: now, ..
                    } = next(h).await
                    {
                        assert_eq!(now.len(), 2, "{now:?}");
                        break left;
                    }
                }
            });
            assert_eq!(left.len(), 1, "{left:?}");
            assert_eq!(left[0].member(), members[2]);
            assert_eq!(left[0].reason(), Reason::Leave);
        }

        // 4. Node 2's daemon dies.
        let mut second = handles.pop().expect("node 2's handle");
        let mut first = handles.pop().expect("node 1's handle");
        cluster.kill_daemon(1);
        let lost = block_on(&rt, WAIT, async {
            loop {
                match second.next_event().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e,
                    None => panic!("stream ended without an error"),
                }
            }
        });
        assert!(lost.is_daemon_lost(), "node 2's stream ended with {lost}");
        assert!(block_on(&rt, WAIT, second.next_event()).is_none());
        let left = block_on(&rt, WAIT * 2, async {
            loop {
                if let Event::Confchg { left, .. } = next(&mut first).await {
                    if !left.is_empty() {
                        break left;
                    }
                }
            }
        });
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].member(), members[1]);
        assert_eq!(left[0].reason(), Reason::NodeDown);
        drop((first, second, third));
        drop(rt);
    });
}

/// A private single-node cluster whose daemon is killed under an idle listener: the
/// stream yields the lost-daemon error promptly, then ends (`None`, also when polled
/// again); sends and joins fail at once with the same kind of error instead of
/// retrying; no time is spent spinning meanwhile; dropping the dead handle returns.
#[test]
fn a_killed_daemon_ends_the_stream_with_the_lost_daemon_error() {
    big_stack(|| {
        let cluster = Cluster::start(1);
        let rt = runtime();
        let group = unique_group("lost");
        let mut h = connect_all(&rt, &cluster).pop().unwrap();
        block_on(&rt, WAIT, async {
            h.join(&group).await.expect("join");
            wait_members(&mut h, &group, 1).await;
        });

        let listener = rt.spawn(async move {
            let mut events = 0usize;
            let err = loop {
                match h.next_event().await {
                    Some(Ok(_)) => events += 1,
                    Some(Err(e)) => break e,
                    None => panic!("stream ended without an error after {events} events"),
                }
            };
            let at = Instant::now();
            (h, err, at)
        });
        std::thread::sleep(Duration::from_millis(300));
        let cpu_before = process_cpu();
        let killed = Instant::now();
        cluster.kill_daemon(0);
        let (mut h, err, seen) = block_on(&rt, WAIT, listener).expect("listener task");
        let cpu = process_cpu() - cpu_before;
        let latency = seen.saturating_duration_since(killed);
        eprintln!("lost daemon: {err} after {latency:?}, {cpu:?} CPU meanwhile");
        assert!(
            err.is_daemon_lost(),
            "stream ended with {err}, not a lost daemon"
        );
        assert!(latency < Duration::from_secs(5), "error took {latency:?}");

        block_on(&rt, WAIT, async {
            assert!(
                h.next_event().await.is_none(),
                "stream goes on after the error"
            );
            assert!(
                h.next_event().await.is_none(),
                "stream goes on after the error"
            );
            let started = Instant::now();
            let send = h.send(b"to nobody").await.unwrap_err();
            assert!(send.is_daemon_lost(), "send after daemon loss: {send}");
            let join = h.join(&group).await.unwrap_err();
            assert!(join.is_daemon_lost(), "join after daemon loss: {join}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "send/join retried a dead connection for {:?}",
                started.elapsed()
            );
        });
        drop(h);
        assert!(
            cpu < Duration::from_secs(2),
            "{cpu:?} of CPU between the kill and the error: a busy loop?"
        );
    });
}
