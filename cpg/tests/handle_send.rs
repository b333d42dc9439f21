//! Sending through a [`cpg::Handle`] on a real two-node cluster (shared by these
//! tests): messages of every size byte-exact and in one order on both members, up to
//! 63 buffers in one vectored send (the 64th refused before C), and the retrying sends,
//! which deliver everything under load and read events while they wait out
//! back-pressure.

mod support;

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::retry::Backoff;
use cpg::{DispatchMode, Error, Guarantee, Handle, MAX_SEND_BUFFERS};
use support::event::Event;
use support::peer::{join_waiting, joined_pair, pump_for, pump_until, Peer};
use support::{big_stack, pid, shared_cluster, unique_group, WAIT};

#[test]
fn messages_of_every_size_arrive_byte_exact_in_the_same_order_on_both() {
    big_stack(|| {
        let group = unique_group("sizes");
        let (a, b) = joined_pair(shared_cluster(), &group);
        let pattern = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        // 3 MiB is above the atomic size (about 1 MiB): libcpg fragments it.
        let sizes = [0usize, 1, 64 << 10, 3 << 20];
        assert!(3 << 20 > a.handle().max_message_size().unwrap() as usize);
        let mut sent = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let from_a = pattern(len, i as u8);
            let from_b = pattern(len, 100 + i as u8);
            // The other tests of this file load the same daemons at the same time: the
            // daemon may push back (`TryAgain`), which is not what this test is about.
            let backoff = Backoff::default();
            a.handle()
                .send_with_retry(&from_a, &backoff)
                .expect("send from a");
            b.handle()
                .send_with_retry(&from_b, &backoff)
                .expect("send from b");
            sent.push((1, from_a));
            sent.push((2, from_b));
        }
        pump_until(&[&a, &b], WAIT, "all 8 messages on both", || {
            a.messages(&group).len() == sent.len() && b.messages(&group).len() == sent.len()
        });
        let (on_a, on_b) = (a.messages(&group), b.messages(&group));
        assert_eq!(on_a, on_b, "both members must deliver the same sequence");
        for sender in [1, 2] {
            let expected: Vec<_> = sent.iter().filter(|(n, _)| *n == sender).collect();
            let got: Vec<_> = on_a.iter().filter(|(n, _)| *n == sender).collect();
            assert_eq!(
                got, expected,
                "node {sender}'s messages, byte-exact, in send order"
            );
        }
        // Every delivery names the sender's pid.
        for e in a.events() {
            if let Event::Msg { from, .. } = e {
                assert_eq!(from.pid, pid());
            }
        }
    });
}

#[test]
fn sixty_three_buffers_work_and_sixty_four_are_refused_before_c() {
    big_stack(|| {
        let group = unique_group("iovecs");
        let a = Peer::pumped(shared_cluster(), 0);
        join_waiting(a.handle(), &group).unwrap();
        let parts: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; i as usize + 1]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();

        // The load test of this file shares the daemon: a retryable refusal
        // (back-pressure) is waited out, any other error fails.
        let backoff = Backoff::default();
        a.handle()
            .send_vectored_with_retry(&slices[..MAX_SEND_BUFFERS], &backoff)
            .expect("63 buffers are allowed");
        assert_eq!(
            a.handle().send_vectored(&slices).unwrap_err(),
            Error::TooManyBuffers { count: 64, max: 63 }
        );
        assert_eq!(
            a.handle().send_with(Guarantee::Fifo, &slices).unwrap_err(),
            Error::TooManyBuffers { count: 64, max: 63 }
        );
        cpg::retry::retry(&backoff, || {
            a.handle()
                .send_with(Guarantee::Fifo, &[IoSlice::new(b"fi"), IoSlice::new(b"fo")])
        })
        .unwrap();

        pump_until(&[&a], WAIT, "the vectored messages", || {
            a.messages(&group).len() == 2
        });
        pump_for(&[&a], Duration::from_millis(200));
        let got = a.messages(&group);
        assert_eq!(
            got.len(),
            2,
            "the refused send must not have reached the daemon"
        );
        assert_eq!(
            got[0].1,
            parts[..63].concat(),
            "63 buffers concatenated in order"
        );
        assert_eq!(got[1].1, b"fifo");
    });
}

#[test]
fn send_with_retry_delivers_everything_under_load() {
    big_stack(|| {
        let group = unique_group("retry");
        let a = Peer::pumped(shared_cluster(), 0);
        join_waiting(a.handle(), &group).unwrap();
        let backoff = Backoff::default();
        let payload = vec![7u8; 100 << 10];
        for i in 0..200u32 {
            let mut m = payload.clone();
            m[..4].copy_from_slice(&i.to_be_bytes());
            a.handle()
                .send_with_retry(&m, &backoff)
                .expect("send with retry");
        }
        pump_until(&[&a], Duration::from_secs(60), "200 messages", || {
            a.messages(&group).len() == 200
        });
        let seqs: Vec<u32> = a
            .messages(&group)
            .iter()
            .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..200).collect::<Vec<_>>());
    });
}

/// A retrying send reads events while it waits out back-pressure: the daemon keeps
/// what a client has not read, without limit, and the pauses are where a sender that
/// does nothing else reads. Here a client floods its group without dispatching until
/// the daemon pushes back, then sends once more with `send_with_retry`: by the time
/// that returns, callbacks have run (its own messages came back), although nothing
/// else dispatched.
#[test]
fn send_with_retry_delivers_events_while_it_waits_out_back_pressure() {
    big_stack(|| {
        let group = unique_group("pressure");
        let delivered = Arc::new(AtomicUsize::new(0));
        let counter = delivered.clone();
        let handle = shared_cluster()
            .node(0)
            .enter(|| {
                Handle::builder()
                    .on_deliver(move |_, _| {
                        counter.fetch_add(1, Ordering::SeqCst);
                    })
                    .build()
            })
            .unwrap();
        join_waiting(&handle, &group).unwrap();
        let payload = vec![5u8; 64 << 10];
        // Each round floods until the daemon pushes back, then sends once more with
        // retries. Pressure can lift before the retrying send's first attempt, which then
        // succeeds without a pause; so rounds go on until one pause has happened. With
        // pauses that only sleep, no round ever delivers anything.
        let mut pushbacks = 0;
        for round in 0..200 {
            let mut sent = 0u32;
            loop {
                match handle.send(&payload) {
                    Ok(()) => sent += 1,
                    Err(e) if e.is_retryable() => break,
                    Err(e) => panic!("round {round}, send {sent}: {e}"),
                }
                assert!(sent < 100_000, "the daemon never pushed back");
            }
            pushbacks += 1;
            assert_eq!(
                delivered.load(Ordering::SeqCst),
                0,
                "nothing dispatched yet"
            );
            handle
                .send_with_retry(&payload, &Backoff::default())
                .expect("send with retry");
            if delivered.load(Ordering::SeqCst) > 0 {
                break;
            }
        }
        eprintln!(
            "{} callbacks ran inside send_with_retry after {pushbacks} pushbacks",
            delivered.load(Ordering::SeqCst)
        );
        assert!(
            delivered.load(Ordering::SeqCst) > 0,
            "send_with_retry waited out back-pressure without reading events"
        );
    });
}

fn pattern(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

/// Messages of odd sizes through every send path: empty, one byte, around the atomic
/// size (where libcpg starts to fragment), and several times it. Each must arrive
/// once, whole, in order: nothing silently dropped.
#[test]
fn every_size_arrives_whole_once_and_in_order() {
    let group = unique_group("odd-sizes");
    big_stack(move || {
        cpg_testkit::shared().enter(|| {
            let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
            let g = Arc::clone(&got);
            let h = Handle::builder()
                .on_deliver(move |_, m| g.lock().unwrap().push(m.data.to_vec()))
                .build()
                .unwrap();
            h.join(&group).unwrap();
            let max = h.max_message_size().unwrap() as usize;
            let sizes = [
                0,
                1,
                max - 1,
                max,
                max + 1,
                (1 << 20) - 1,
                1 << 20,
                (1 << 20) + 1,
                3 * max + 7,
            ];
            let mut sent = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                let data = pattern(len, i as u8);
                h.send_with_retry(&data, &Default::default())
                    .unwrap_or_else(|e| panic!("send of {len}: {e}"));
                sent.push(data);
            }
            // Vectored: 63 buffers, some empty, totalling just over the atomic size.
            let parts: Vec<Vec<u8>> = (0..63)
                .map(|i| {
                    if i % 2 == 0 {
                        Vec::new()
                    } else {
                        pattern(max / 31, i)
                    }
                })
                .collect();
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            h.send_vectored_with_retry(&slices, &Default::default())
                .unwrap();
            sent.push(parts.concat());
            // Through a sender too.
            let s = h.sender();
            let data = pattern(max, 99);
            s.send_with_retry(&data, &Default::default()).unwrap();
            sent.push(data);

            let deadline = Instant::now() + WAIT;
            while got.lock().unwrap().len() < sent.len() && Instant::now() < deadline {
                h.dispatch_timeout(Duration::from_millis(200)).unwrap();
            }
            h.dispatch(DispatchMode::All).unwrap();
            let got = got.lock().unwrap();
            let lens: Vec<usize> = got.iter().map(Vec::len).collect();
            let want: Vec<usize> = sent.iter().map(Vec::len).collect();
            assert_eq!(lens, want, "max_message_size {max}");
            assert!(got.iter().zip(&sent).all(|(a, b)| a == b), "contents");
        })
    });
}
