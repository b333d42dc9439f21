//! `AsyncSender`: many tasks send through clones while one task reads the stream; a
//! cancelled send has sent nothing; sends wake when the handle is dropped.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cpg::{Error, Event};
use support::stream::*;
use support::{unique_group, WAIT};

/// Task number and sequence number, then `len - 8` filler bytes.
fn message(task: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len.max(8));
    m.extend_from_slice(&task.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.resize(len.max(8), (task ^ seq) as u8);
    m
}

fn decode(m: &[u8]) -> (u32, u32) {
    let task = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(m[4..8].try_into().unwrap());
    assert!(
        m[8..].iter().all(|b| *b == (task ^ seq) as u8),
        "task {task} seq {seq}: corrupt"
    );
    (task, seq)
}

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
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let sender = h.sender();
                tokio::spawn(async move {
                    for seq in 0..EACH {
                        // Every fourth message is large enough to meet back-pressure.
                        let len = if seq % 4 == 0 { 200 << 10 } else { 64 };
                        sender.send(&message(t, seq, len)).await.unwrap();
                    }
                })
            })
            .collect();
        let mut next_seq = BTreeMap::new();
        let mut got = 0;
        while got < TASKS * EACH {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                let (task, seq) = decode(&data);
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

/// SIGCONTs a daemon stopped with SIGSTOP when dropped (also when the test fails).
struct Paused(u32);

impl Paused {
    fn pause(pid: u32) -> Paused {
        // SAFETY: signals a daemon this test's cluster started (its pid, alive).
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `pause`.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn a_cancelled_send_sent_nothing_and_a_completed_one_exactly_once() {
    const MAX_SENDS: u32 = 2_000;
    const MIN_CANCELLED: u32 = 10;
    // Back-pressure on demand: with another node's daemon stopped, the ring cannot
    // order anything until the token times out, so the local daemon's queue fills and
    // it answers sends with CS_ERR_TRY_AGAIN.
    let cluster = std::sync::Arc::new(
        cpg_testkit::Cluster::builder()
            .nodes(2)
            .token_ms(3000)
            .start()
            .expect("cluster"),
    );
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
            let m = message(1, seq, 64 << 10);
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
        let end = message(9, 0, 8);
        tokio::time::timeout(WAIT, sender.send(&end))
            .await
            .unwrap()
            .unwrap();
        let delivered = completed.len();
        loop {
            if let Event::Deliver { data, .. } = next(&mut h).await {
                let (task, seq) = decode(&data);
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
