//! Cancelled futures of the async group and replica layers leave nothing behind:
//!
//! - waits on an `AsyncGroup` or `AsyncReplica` that are cancelled (a timeout around
//!   `next_event`, `wait_view`, `wait_ready`) must not leave their task's waker behind:
//!   on a quiet group nothing would ever take it, and a service that waits with a
//!   timeout per request would keep every request's task alive;
//! - `start_async` cancelled before it returned (dropped by a `select!` or a timeout)
//!   must not leave its driver task behind, joined to the group for good: the process
//!   could then never join that group again (a process joins a group once per node).
#![cfg(feature = "tokio")]

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use cpg::group::Group;
use cpg::replica::Replica;
use cpg::{Handle, Member};
use support::replica::Count;
use support::stream::block_on_node;
use support::{unique_group, NoCallbacks, WAIT};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A waker that counts how many of its kind are alive.
struct Counted;

impl Wake for Counted {
    fn wake(self: Arc<Self>) {}
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn counted_waker() -> Waker {
    LIVE.fetch_add(1, Ordering::SeqCst);
    Waker::from(Arc::new(Counted))
}

/// Polls `fut` once with a fresh waker of its own (a task of its own), then drops it.
fn poll_once_and_cancel<F: Future>(fut: F) -> bool {
    let waker = counted_waker();
    let mut cx = Context::from_waker(&waker);
    let fut = pin!(fut);
    fut.poll(&mut cx).is_pending()
}

#[test]
fn cancelled_waits_leave_no_wakers_behind() {
    let group = unique_group("cancelled-waits-g");
    let replica = unique_group("cancelled-waits-r");
    block_on_node(cpg_testkit::shared(), move || async move {
        let g = Group::builder(group).start_async().await.unwrap();
        tokio::time::timeout(WAIT, g.wait_view(|_| true))
            .await
            .unwrap()
            .unwrap();
        // Read what is queued, so that the next waits wait.
        while tokio::time::timeout(Duration::from_millis(200), g.next_event())
            .await
            .is_ok()
        {}
        let r = Replica::builder(replica, Count::default())
            .start_async()
            .await
            .unwrap();
        tokio::time::timeout(WAIT, r.wait_ready(|_| true))
            .await
            .unwrap()
            .unwrap();
        while tokio::time::timeout(Duration::from_millis(200), r.next_event())
            .await
            .is_ok()
        {}
        for _ in 0..1000 {
            assert!(poll_once_and_cancel(g.next_event()));
            assert!(poll_once_and_cancel(g.wait_view(|_| false)));
            assert!(poll_once_and_cancel(r.next_event()));
            assert!(poll_once_and_cancel(r.wait_ready(|_| false)));
        }
        // The replica's driver wakes (and forgets) its waiters every tick.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let live = LIVE.load(Ordering::SeqCst);
        assert!(live < 10, "{live} wakers of cancelled waits are still held");
        // Two waits of one task: each keeps its own registration.
        let (a, b) = tokio::time::timeout(WAIT, async {
            tokio::join!(g.next_event(), async {
                tokio::task::yield_now().await;
                g.send(b"one".to_vec()).unwrap();
                g.send(b"two".to_vec()).unwrap();
                g.next_event().await
            })
        })
        .await
        .expect("both waits of one task complete");
        assert!(a.is_some() && b.is_some());
        drop(r);
        drop(g);
    });
}

fn members(name: &cpg::GroupName) -> Vec<Member> {
    Handle::new(NoCallbacks).unwrap().members(name).unwrap()
}

#[test]
fn a_cancelled_start_async_leaves_no_member_behind() {
    let group = unique_group("cancelled-start-g");
    let replica = unique_group("cancelled-start-r");
    block_on_node(cpg_testkit::shared(), move || async move {
        // Polled once (it spawns the driver and waits for the join), then
        // dropped.
        tokio::select! {
            biased;
            _ = Group::builder(group).start_async() => panic!("started in one poll"),
            _ = std::future::ready(()) => {}
        }
        tokio::select! {
            biased;
            _ = Replica::builder(replica, Count::default()).start_async() => panic!("started in one poll"),
            _ = std::future::ready(()) => {}
        }
        // Time for a leftover driver to connect and join.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(members(&group), [], "a ghost member of the group");
        assert_eq!(
            members(&replica),
            [],
            "a ghost member of the replica's group"
        );
        let g = tokio::time::timeout(WAIT, Group::builder(group).start_async())
            .await
            .unwrap()
            .expect("the group can be joined again");
        g.leave().await.unwrap();
    });
}
