//! Calling back into a `Group` or `Replica` from code that runs under its lock (the
//! closures of `wait_view`, `read` and `wait_ready`, the application's `Replicated`
//! code) must not deadlock the thread: it panics with a message that says why.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpg::group::{Group, GroupError};
use cpg::replica::{OpInfo, Replica, ReplicaError, Replicated, RestoreError};
use support::replica::Count;
use support::{unique_group, WAIT};

/// Runs `f` on a thread of its own and says whether it ended within `WAIT`, and with a
/// panic whose message is returned.
fn ends_with_panic(f: impl FnOnce() + Send + 'static) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.err().map(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    rx.recv_timeout(WAIT).expect("the call deadlocked")
}

#[test]
fn a_group_method_inside_wait_view_panics_instead_of_deadlocking() {
    let group = Arc::new(
        cpg_testkit::shared()
            .enter(|| Group::join(unique_group("reentry-g")))
            .unwrap(),
    );
    assert!(group.wait_view(WAIT, |_| true).is_some());
    let g = Arc::clone(&group);
    let msg = ends_with_panic(move || {
        g.wait_view(Duration::from_secs(1), |_| g.is_leader());
    });
    assert!(msg.is_some_and(|m| m.contains("re-entrant")));
    // The group still works afterwards.
    assert!(group.is_leader());
    group.leave(WAIT).unwrap();
}

#[test]
fn a_replica_method_inside_read_panics_instead_of_deadlocking() {
    let replica = Arc::new(
        cpg_testkit::shared()
            .enter(|| Replica::start(unique_group("reentry-r"), Count::default()))
            .unwrap(),
    );
    assert!(replica.wait_ready(WAIT, |_| true).is_some());
    let r = Arc::clone(&replica);
    let msg = ends_with_panic(move || {
        r.read(|_| r.phase());
    });
    assert!(msg.is_some_and(|m| m.contains("re-entrant")));
    assert_eq!(
        replica.submit("x").unwrap().wait(WAIT).map(|o| o.version),
        Ok(1)
    );
}

/// An application that submits from inside `apply`, through a replica it reaches.
#[derive(Default)]
struct Echo {
    me: Arc<Mutex<Option<Arc<Replica<Echo>>>>>,
}

impl Replicated for Echo {
    type Output = ();

    fn apply(&mut self, op: &[u8], _info: &OpInfo) {
        if op == b"echo" {
            let r = self.me.lock().unwrap().clone();
            if let Some(r) = r {
                let _ = r.submit("again");
            }
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _s: &[u8]) -> Result<(), RestoreError> {
        Ok(())
    }
    fn digest(&self) -> u64 {
        0
    }
}

#[test]
fn a_replica_call_from_apply_ends_the_replica_instead_of_deadlocking() {
    let echo = Echo::default();
    let me = Arc::clone(&echo.me);
    let replica = Arc::new(
        cpg_testkit::shared()
            .enter(|| Replica::start(unique_group("reentry-a"), echo))
            .unwrap(),
    );
    *me.lock().unwrap() = Some(Arc::clone(&replica));
    assert!(replica.wait_ready(WAIT, |_| true).is_some());
    let ticket = replica.submit("echo").unwrap();
    // Without the check this never returns: the driver thread deadlocks on its own
    // lock, and the ticket (and every later call that locks) waits forever.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ticket.wait(WAIT));
    });
    // Delivered (its apply ran, and panicked): the others may have applied it.
    assert_eq!(
        rx.recv_timeout(WAIT * 2).expect("deadlocked"),
        Err(ReplicaError::NotSent(GroupError::Unknown))
    );
    me.lock().unwrap().take();
}
