//! The deliver path makes no heap allocation: received data is borrowed from libcpg,
//! never copied by the binding. A counting global allocator counts every allocation
//! made on the dispatching thread while messages are delivered.
//!
//! The group layer's receive side allocates nothing per message either: a burst from
//! another member (a child process, see `support::child`) arrives packed in batches,
//! and every message handed out is a slice of a shared receive buffer. There the
//! counter counts every thread of the process (the layer's driver thread included)
//! while the messages in the middle of the burst are read.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg::group::{Config, Event, Group, QuorumPolicy};
use cpg::{GroupName, Handle};
use support::child::{self, ChildProcess};
use support::{big_stack, serial, unique_group, WAIT};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Count the allocations of every thread (the group layer's test).
static COUNTING_ALL: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS_ALL: AtomicUsize = AtomicUsize::new(0);

fn note_allocation() {
    if COUNTING_ALL.load(Ordering::Relaxed) {
        ALLOCATIONS_ALL.fetch_add(1, Ordering::Relaxed);
    }
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: defers every operation to the system allocator unchanged; the counting
// touches only const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn delivering_messages_allocates_nothing() {
    const MESSAGES: usize = 2000;
    let _serial = serial();
    let node = cpg_testkit::shared();
    let (delivered, bytes, allocations) = big_stack(move || {
        let delivered = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (d, b) = (delivered.clone(), bytes.clone());
        let handle = node.enter(|| {
            Handle::builder()
                .on_deliver(move |_, msg| {
                    d.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(msg.data.len() + msg.group.len(), Ordering::Relaxed);
                })
                .on_confchg(|_, change| assert!(!change.members.is_empty()))
                .build()
                .expect("connect to the shared daemon")
        });
        let group = unique_group("alloc");
        handle.join(&group).unwrap();
        let payload = [0x5au8; 200];
        let backoff = cpg::retry::Backoff::default();
        for _ in 0..MESSAGES {
            cpg::retry::retry(&backoff, || handle.send(&payload)).unwrap();
        }

        COUNTING.with(|c| c.set(true));
        let deadline = Instant::now() + WAIT;
        while delivered.load(Ordering::Relaxed) < MESSAGES && Instant::now() < deadline {
            handle
                .dispatch_timeout(Duration::from_millis(10))
                .expect("dispatch");
        }
        COUNTING.with(|c| c.set(false));
        let allocations = ALLOCATIONS.with(|n| n.get());
        (
            delivered.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            allocations,
        )
    });
    assert_eq!(delivered, MESSAGES, "every message delivered");
    assert!(bytes >= MESSAGES * 200);
    println!("{delivered} messages delivered with {allocations} heap allocations");
    assert_eq!(allocations, 0, "allocations on the deliver path");
}

#[test]
fn the_counter_sees_allocations() {
    let _serial = serial();
    // The instrument itself works: an allocation on a counting thread is counted, and
    // one on any thread while every thread is counted.
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(ALLOCATIONS.with(|n| n.get()) >= 1);
    let before = ALLOCATIONS_ALL.load(Ordering::Relaxed);
    COUNTING_ALL.store(true, Ordering::SeqCst);
    let v = std::thread::spawn(|| std::hint::black_box(vec![1u8; 10]))
        .join()
        .unwrap();
    COUNTING_ALL.store(false, Ordering::SeqCst);
    drop(v);
    assert!(ALLOCATIONS_ALL.load(Ordering::Relaxed) > before);
}

/// Messages of the group-layer burst, and how many at each end are not counted (the
/// first ones go alone, before the sender's queue fills; the last ones may be read
/// while the sender finishes).
const BURST: u64 = 20_000;
const UNCOUNTED: u64 = 2_000;
/// Bytes of each message of the burst (its sequence number, then filler).
const SIZE: usize = 64;

fn burst_message(seq: u64) -> Vec<u8> {
    let mut m = vec![(seq % 251) as u8; SIZE];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn group_config() -> Config {
    let mut config = Config::default();
    config.quorum = QuorumPolicy::Ignore;
    config.queue_limit = 4096;
    config
}

/// The child's role: join `group` (its name), wait for the other member, send the
/// burst as fast as the queue takes it, report how many batches carried it, and stay
/// until stdin closes.
fn send_burst(group: &str) {
    let name = GroupName::new(group).expect("group name");
    let g = Group::builder(name)
        .config(group_config())
        .start()
        .expect("child: join");
    child::report_ready();
    g.wait_view(WAIT, |v| v.members().len() == 2)
        .expect("child: the other member");
    for seq in 0..BURST {
        let deadline = Instant::now() + WAIT;
        loop {
            match g.send(burst_message(seq)) {
                Ok(_) => break,
                Err(cpg::group::GroupError::QueueFull { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("child: send {seq}: {e}"),
            }
        }
    }
    child::report("BATCHES", g.stats().batches_sent);
    child::until_stdin_closes(|| {
        let _ = g.next_event(Duration::from_millis(50));
    });
}

#[test]
fn the_group_layer_reads_batched_messages_without_allocating() {
    child::test_on_shared(send_burst, |node| {
        let name = unique_group("alloc-group");
        let g = Group::builder(name)
            .config(group_config())
            .start()
            .expect("join");
        let mut sender = ChildProcess::start(
            node,
            "the_group_layer_reads_batched_messages_without_allocating",
            name.to_str().expect("an ASCII name"),
            "the sending member",
        );
        let deadline = Instant::now() + WAIT;
        let mut next = 0u64;
        let mut bytes = 0usize;
        while next < BURST && Instant::now() < deadline {
            if next == UNCOUNTED {
                COUNTING_ALL.store(true, Ordering::SeqCst);
            }
            if next == BURST - UNCOUNTED {
                COUNTING_ALL.store(false, Ordering::SeqCst);
            }
            match g.next_event(Duration::from_millis(100)) {
                Some(Event::Message(d)) if !d.own => {
                    // Checked in place (no copy): the burst, in order, intact.
                    let seq = u64::from_le_bytes(d.data[..8].try_into().unwrap());
                    assert_eq!(seq, next, "message out of order");
                    assert_eq!(d.data.len(), SIZE);
                    assert!(d.data[8..].iter().all(|&b| b == (seq % 251) as u8));
                    bytes += d.data.len();
                    next += 1;
                }
                Some(Event::Malformed { .. } | Event::Stopped(_)) => {
                    COUNTING_ALL.store(false, Ordering::SeqCst);
                    panic!("the group layer failed the burst at message {next}");
                }
                _ => {}
            }
        }
        COUNTING_ALL.store(false, Ordering::SeqCst);
        assert_eq!(next, BURST, "every message of the burst delivered");
        assert_eq!(bytes, BURST as usize * SIZE);
        let batches: u64 = sender
            .next_report("BATCHES", WAIT)
            .expect("the sender's report")
            .parse()
            .expect("a count");
        let stats = g.stats();
        assert!(
            batches > 0 && stats.batches_delivered > 0,
            "the burst was not batched ({batches} batches sent, {stats:?})"
        );
        let counted = BURST - 2 * UNCOUNTED;
        let allocations = ALLOCATIONS_ALL.load(Ordering::Relaxed);
        println!(
            "{counted} messages read from {} batches with {allocations} heap allocations \
             in the process",
            stats.batches_delivered
        );
        // The receive buffer is taken back once the messages read from it are dropped;
        // a new one (64 KiB, hundreds of messages) only while the application is behind.
        assert!(
            (allocations as u64) * 100 < counted,
            "{allocations} allocations for {counted} messages"
        );
    });
}
