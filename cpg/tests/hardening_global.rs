//! libcpg's process-global state under threads: libqb's handle tables (create, iterate
//! and destroy on several handles at once), the umask that zero-copy allocation
//! changes, and the cap on live zero-copy buffers that keeps one client from bringing
//! the daemon down.
//!
//! Each test owns the process-wide state it measures, so the tests of this file run
//! one at a time ([`serial`]).

mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg::{Error, Handle, MAX_LIVE_BUFFERS};
use support::{big_stack, serial, unique_group, NoCallbacks};

/// Set in the child process that runs the handle-table stress.
const STRESS_CHILD: &str = "CPG_TEST_HANDLE_TABLE_STRESS";

/// How long the stress runs, in seconds (`CPG_STRESS_SECS`, default 45).
fn stress_secs() -> u64 {
    std::env::var("CPG_STRESS_SECS")
        .ok()
        .map(|s| s.parse().expect("CPG_STRESS_SECS: seconds"))
        .unwrap_or(45)
}

/// The stress itself (in the child): 4 threads, each on its own handles, iterate the
/// cluster's groups and members and recreate their handle every 50 rounds, while a
/// fifth allocates and frees zero-copy buffers. Any error fails.
fn stress(duration: Duration) -> Result<usize, String> {
    let rounds = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..5)
        .map(|t| {
            let rounds = rounds.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut handle = Handle::new(NoCallbacks).map_err(|e| e.to_string())?;
                let mut round = 0usize;
                while Instant::now() < deadline {
                    if round % 50 == 49 {
                        handle = Handle::new(NoCallbacks)
                            .map_err(|e| format!("thread {t} round {round}: new: {e}"))?;
                    }
                    if t == 4 {
                        let buffer = handle
                            .alloc_buffer(4096)
                            .map_err(|e| format!("zcb round {round}: {e}"))?;
                        drop(buffer);
                    } else {
                        for item in handle.iter_all().map_err(|e| format!("iter: {e}"))? {
                            item.map_err(|e| format!("thread {t} round {round}: {e}"))?;
                        }
                        let groups = handle.groups().map_err(|e| format!("groups: {e}"))?;
                        for (i, item) in groups.enumerate() {
                            let group = item.map_err(|e| format!("groups next: {e}"))?;
                            if i % 2 == 0 {
                                // An early drop finalizes a half-read iteration.
                                let mut members = handle
                                    .iter_members(&group)
                                    .map_err(|e| format!("members of {group}: {e}"))?;
                                members.next().transpose().map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    round += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| "a stress thread panicked".to_string())??;
    }
    Ok(rounds.load(Ordering::Relaxed))
}

#[test]
fn handles_of_many_threads_create_iterate_and_drop_without_errors() {
    if std::env::var_os(STRESS_CHILD).is_some() {
        // The child: connects in the namespace it was started in.
        match stress(Duration::from_secs(stress_secs())) {
            Ok(rounds) => println!("stress: {rounds} rounds, 0 errors"),
            Err(e) => panic!("stress: {e}"),
        }
        return;
    }
    let _serial = serial();
    let node = cpg_testkit::shared();
    // A group with members for the iterations to walk: this process joins one.
    let member = big_stack(move || {
        node.enter(|| {
            let h = Handle::new(NoCallbacks).unwrap();
            h.join(&unique_group("stress-members")).unwrap();
            h
        })
    });
    // In a child, so that glibc's MALLOC_PERTURB_ (read at start-up) turns every use of
    // freed memory in libqb's tables into garbage that crashes or fails loudly.
    let exe = std::env::current_exe().unwrap();
    let out = node
        .command(exe)
        .args([
            "handles_of_many_threads_create_iterate_and_drop_without_errors",
            "--exact",
            "--nocapture",
        ])
        .env(STRESS_CHILD, "1")
        .env("MALLOC_PERTURB_", "170")
        .stdin(Stdio::null())
        .output()
        .expect("run the stress child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(", 0 errors"),
        "stress child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout.lines().find(|l| l.starts_with("stress:")).unwrap();
    let rounds: usize = line["stress: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rounds >= 100, "{line}");
    eprintln!("handle-table {line} (MALLOC_PERTURB_=170, 5 threads)");
    drop(member);
}

fn umask() -> libc::mode_t {
    // SAFETY: umask cannot fail; it is set back at once (these tests are serial).
    unsafe {
        let current = libc::umask(0o022);
        libc::umask(current);
        current
    }
}

#[test]
fn concurrent_zero_copy_allocations_keep_the_umask() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            // SAFETY: sets a known umask; restored at the end.
            let original = unsafe { libc::umask(0o022) };
            // Several threads allocating at once: libcpg's umask(077)/umask(old) pairs
            // must never interleave.
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        let h = Handle::new(NoCallbacks).unwrap();
                        for _ in 0..1500 {
                            drop(h.alloc_buffer(64).unwrap());
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(umask(), 0o022, "umask after 6,000 concurrent allocations");
            // SAFETY: restores the test process's umask.
            unsafe { libc::umask(original) };
        });
    });
}

#[test]
fn live_zero_copy_buffers_stop_at_a_cap_all_handles_share() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            // The cap: MAX_LIVE_BUFFERS alive at once, then a typed refusal.
            let h = Handle::new(NoCallbacks).unwrap();
            let mut live = Vec::new();
            for i in 0..MAX_LIVE_BUFFERS {
                live.push(
                    h.alloc_buffer(16)
                        .unwrap_or_else(|e| panic!("buffer {i}: {e}")),
                );
            }
            let err = h.alloc_buffer(16).unwrap_err();
            assert_eq!(
                err,
                Error::TooManyLiveBuffers {
                    max: MAX_LIVE_BUFFERS
                }
            );
            // A second handle shares the process's cap.
            let other = Handle::new(NoCallbacks).unwrap();
            assert_eq!(other.alloc_buffer(16).unwrap_err(), err);
            // Freeing one (by drop or by `free`) makes room for one.
            live.pop();
            let again = other.alloc_buffer(16).expect("room after a drop");
            assert!(h.alloc_buffer(16).is_err());
            again.free().unwrap();
            live.push(h.alloc_buffer(16).expect("room after free"));
            drop(live);
            // The daemon is fine: a new connection still works.
            drop(Handle::new(NoCallbacks).expect("daemon still up"));
        });
    });
}

/// Runs `test` with an `AsyncHandle` on the shared node, joined to a new group
/// (`tag`), in `block_on` on a big stack, beside a runtime whose one worker has a
/// 256 KiB stack (`tokio::spawn` runs there).
#[cfg(feature = "tokio")]
fn on_small_workers<Fut: std::future::Future<Output = ()>>(
    tag: &'static str,
    test: impl FnOnce(cpg::AsyncHandle) -> Fut + Send + 'static,
) {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_stack_size(256 << 10)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let group = unique_group(tag);
            let mut h = node.enter(cpg::AsyncHandle::new).unwrap();
            h.join(&group).await.unwrap();
            test(h).await;
        });
    });
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_handle_polled_on_a_small_worker_gets_a_typed_error_and_stays_open() {
    on_small_workers("async-small-stack", |mut h| async move {
        h.send(b"waiting").await.unwrap();
        // Polled on a worker: refused, and the stream stays open.
        let (mut h, refused) = tokio::spawn(async move {
            let r = h.next_event().await;
            (h, r)
        })
        .await
        .unwrap();
        assert!(
            matches!(refused, Some(Err(Error::StackTooSmall { .. }))),
            "{refused:?}"
        );
        // Polled here (block_on's own big stack): the events arrive, nothing lost.
        let mut got = Vec::new();
        while got.is_empty() {
            let event = tokio::time::timeout(support::WAIT, h.next_event())
                .await
                .expect("an event")
                .expect("stream open")
                .expect("no error");
            if let cpg::Event::Deliver { data, .. } = event {
                got.push(data);
            }
        }
        assert_eq!(got, vec![b"waiting".to_vec()]);
    });
}

/// An `AsyncHandle::send` that meets back-pressure on a small worker would pause by
/// dispatching: it gets the typed error instead, and the handle goes on elsewhere.
#[cfg(feature = "tokio")]
#[test]
fn an_async_send_pausing_on_a_small_worker_gets_a_typed_error() {
    on_small_workers("async-small-stack-send", |mut h| async move {
        // Nobody reads this handle's events meanwhile: the daemon pushes back.
        let (mut h, outcome, sent) = tokio::spawn(async move {
            let msg = vec![0u8; 64 << 10];
            let mut sent = 0u32;
            let outcome = loop {
                match tokio::time::timeout(support::WAIT, h.send(&msg)).await {
                    Ok(Ok(())) if sent < 100_000 => sent += 1,
                    other => break other,
                }
            };
            (h, outcome, sent)
        })
        .await
        .unwrap();
        assert!(
            matches!(outcome, Ok(Err(Error::StackTooSmall { .. }))),
            "after {sent} sends: {outcome:?}"
        );
        // On block_on's own big stack the handle goes on: its events are read.
        let event = tokio::time::timeout(support::WAIT, h.next_event())
            .await
            .expect("an event")
            .expect("stream open");
        assert!(event.is_ok(), "{event:?}");
    });
}

#[test]
fn handles_stop_at_the_cap() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            // The cap on open handles (libqb's table must not move under lookups).
            let mut open: Vec<Handle> = (0..cpg::MAX_HANDLES)
                .map(|i| Handle::new(NoCallbacks).unwrap_or_else(|e| panic!("handle {i}: {e}")))
                .collect();
            let err = Handle::new(NoCallbacks).unwrap_err();
            assert_eq!(
                err,
                Error::TooManyHandles {
                    max: cpg::MAX_HANDLES
                }
            );
            open.pop();
            open.push(Handle::new(NoCallbacks).expect("room after a close"));
            drop(open);
        });
    });
}

#[test]
fn forgotten_buffers_hold_their_slots_until_their_handle_closes() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            // Forgotten zero-copy buffers hold their slots until the handle goes.
            let h = Handle::new(NoCallbacks).unwrap();
            for _ in 0..MAX_LIVE_BUFFERS {
                std::mem::forget(h.alloc_buffer(16).unwrap());
            }
            let other = Handle::new(NoCallbacks).unwrap();
            assert_eq!(
                other.alloc_buffer(16).unwrap_err(),
                Error::TooManyLiveBuffers {
                    max: MAX_LIVE_BUFFERS
                }
            );
            h.close().unwrap();
            drop(
                other
                    .alloc_buffer(16)
                    .expect("slots back after the handle closed"),
            );
        });
    });
}
