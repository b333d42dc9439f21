//! The deliver path makes no heap allocation: received data is borrowed from libcpg,
//! never copied by the binding. A counting global allocator counts every allocation
//! made on the dispatching thread while messages are delivered.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg::Handle;
use support::{big_stack, unique_group, WAIT};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
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
    // The instrument itself works: an allocation on a counting thread is counted.
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(ALLOCATIONS.with(|n| n.get()) >= 1);
}
