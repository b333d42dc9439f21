//! Dropping an async handle while events are pending leaks nothing: no descriptor, no
//! libqb shared-memory file, no reactor registration. Alone in its own test binary,
//! because it counts the process's descriptors and /dev/shm entries.

mod support;

use std::time::Duration;

use support::stream::*;
use support::unique_group;

/// Open descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// /dev/shm entries of this process's libqb connections (their names carry the client
/// pid as the second field: `qb-SERVER-CLIENT-...`).
fn shm_entries() -> Vec<String> {
    let pid = std::process::id().to_string();
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.split('-').nth(2) == Some(pid.as_str()))
        .collect();
    names.sort();
    names
}

/// 20 times: connect, join, send 200 messages to the group, let one poll take part of
/// them into the handle's queue (the rest stays pending in libcpg), and drop the handle.
/// Afterwards the process has exactly the descriptors it had before and, once the
/// daemon has handled the disconnects (bounded wait), no /dev/shm entry; and a new
/// handle on the same runtime (likely reusing the descriptor number) works.
#[test]
fn dropping_a_handle_with_pending_events_leaks_nothing() {
    run(Duration::from_secs(120), || async {
        let node = cpg_testkit::shared();
        // Warm up whatever is made once per process (the shared daemon, libqb's globals).
        drop(connect(node));
        let fds_before = fd_count();
        // With no handle of ours open, this process has no /dev/shm entry once the
        // daemon has handled the last disconnect (it removes the connection's files a
        // moment after the client has gone).
        let settled = |what: &str| {
            let gone =
                cpg_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                    shm_entries().is_empty()
                });
            assert!(gone, "/dev/shm entries {what}: {:?}", shm_entries());
        };
        settled("left by the warm-up");

        for round in 0..20 {
            let group = unique_group(&format!("drop-{round}"));
            let mut h = connect(node);
            h.join(&group).await.expect("join");
            for seq in 0..200 {
                h.send(&payload(seq)).await.expect("send");
            }
            // One event out: its poll queues up to a budget's worth; more stay in libcpg.
            next(&mut h).await;
            assert!(
                !shm_entries().is_empty(),
                "a live handle shows no /dev/shm entry: the check below would prove nothing"
            );
            drop(h);
        }
        assert_eq!(fd_count(), fds_before, "descriptors leaked");
        settled("leaked");

        let group = unique_group("drop-after");
        let mut h = connect(node);
        h.join(&group).await.expect("join after drops");
        h.send(b"after").await.expect("send after drops");
        assert_eq!(collect(&mut h, 1).await[0].1, b"after");
    });
}
