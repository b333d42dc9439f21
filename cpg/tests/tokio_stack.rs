//! How much stack the async handle needs. libcpg keeps a 1 MiB receive buffer on the
//! stack of `cpg_dispatch`, and the stream dispatches on whatever thread polls it.
//! These tests run with tokio's default 2 MiB stacks (worker threads of the
//! multi-thread runtime, and libtest's own thread under `#[tokio::test]`) and receive
//! messages up to 3 MiB, which libcpg fragments and reassembles. A stack too small
//! aborts the whole test process (stack overflow), which fails loudly.
//!
//! `CPG_TOKIO_STACK=bytes` runs the multi-thread test with that worker stack size
//! instead, to find the smallest that works (measured: see the crate docs).

mod support;

use support::stream::*;
use support::{big_stack, unique_group, WAIT};

/// Sizes around the atomic limit and well above it (fragmented).
fn sizes(max: usize) -> Vec<usize> {
    vec![1, max - 1, max, max + 1, 3 << 20, (3 << 20) + 12_345]
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

async fn round_trip_large_messages() {
    let node = cpg_testkit::shared();
    let group = unique_group("stack");
    let mut h = connect(node);
    h.join(&group).await.expect("join");
    wait_members(&mut h, &group, 1).await;
    let max = h.max_message_size().expect("max_message_size") as usize;
    let sizes = sizes(max);
    for (i, &len) in sizes.iter().enumerate() {
        h.send(&pattern(len, i as u8)).await.expect("send");
    }
    let got = collect(&mut h, sizes.len()).await;
    for (i, ((_, data), &len)) in got.iter().zip(&sizes).enumerate() {
        assert_eq!(data.len(), len, "message {i}: length");
        assert!(
            *data == pattern(len, i as u8),
            "message {i} of {len} bytes: content"
        );
    }
}

/// Multi-thread runtime with default (2 MiB) worker stacks: all dispatching happens in
/// a spawned task, i.e. on a worker.
#[test]
fn default_worker_stacks_receive_3_mib_messages() {
    big_stack(|| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2).enable_all();
        if let Ok(size) = std::env::var("CPG_TOKIO_STACK") {
            builder.thread_stack_size(size.parse().expect("CPG_TOKIO_STACK: bytes"));
        }
        let rt = builder.build().expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(WAIT * 2, tokio::spawn(round_trip_large_messages()))
                .await
                .expect("timed out")
                .expect("task");
        });
    });
}

/// `#[tokio::test]`: a current-thread runtime on libtest's own 2 MiB thread, which
/// dispatches in the test body itself.
#[tokio::test]
async fn tokio_test_on_libtest_thread_receives_3_mib_messages() {
    tokio::time::timeout(WAIT * 2, round_trip_large_messages())
        .await
        .expect("timed out");
}
