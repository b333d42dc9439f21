//! The cmap and cfg handles' share of process-global state: each library's handle
//! table (a cap of its own, apart from CPG's), libcmap's table of tracks (shared by
//! every cmap handle, changed by threads at once while others dispatch), and `fork`.
//! Each test owns process-wide state, so they run one at a time ([`serial`]).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cpg::cfg::Cfg;
use cpg::cmap::{Cmap, TrackType, MAX_TRACKS};
use cpg::{Error, Handle, Service, MAX_HANDLES};
use support::{big_stack, serial, NoCallbacks, BIG_STACK, WAIT};

#[test]
fn cmap_and_cfg_handles_stop_at_caps_of_their_own() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            let mut cmaps: Vec<Cmap> = (0..MAX_HANDLES)
                .map(|i| Cmap::new().unwrap_or_else(|e| panic!("cmap {i}: {e}")))
                .collect();
            assert_eq!(
                Cmap::stats().unwrap_err(),
                Error::TooManyServiceHandles {
                    service: Service::Cmap,
                    max: MAX_HANDLES
                }
            );
            // cfg's and CPG's tables are others.
            let cfgs: Vec<Cfg> = (0..MAX_HANDLES)
                .map(|i| Cfg::new().unwrap_or_else(|e| panic!("cfg {i}: {e}")))
                .collect();
            let err = Cfg::new().unwrap_err();
            assert_eq!(
                err,
                Error::TooManyServiceHandles {
                    service: Service::Cfg,
                    max: MAX_HANDLES
                }
            );
            assert!(err.to_string().contains("libcfg"), "{err}");
            let cpg = Handle::new(NoCallbacks).expect("a CPG handle beside them");
            cmaps.pop().unwrap().close().unwrap();
            cmaps.push(Cmap::new().expect("room after a close"));
            for c in &cmaps {
                assert!(c.get::<String>("totem.cluster_name").is_ok());
            }
            for c in &cfgs {
                assert_eq!(c.local_node_id(), Ok(1));
            }
            drop((cmaps, cfgs, cpg));
            let again: Vec<Cmap> = (0..MAX_HANDLES)
                .map(|i| Cmap::new().unwrap_or_else(|e| panic!("again {i}: {e}")))
                .collect();
            drop(again);
        });
    });
}

#[test]
fn a_cmap_handle_inherited_through_fork_refuses_every_call_and_spares_the_parent() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            let key = format!("test.{}.fork", std::process::id());
            let seen = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&seen);
            let cmap = Cmap::new().unwrap();
            let track = cmap
                .track_key(&key, TrackType::ALL, move |_, _| {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let mut fds = [0; 2];
            // SAFETY: valid array of two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let (read_fd, write_fd) = (fds[0], fds[1]);
            // SAFETY: the child only calls this crate's refusal paths (atomic loads, an
            // uncontended lock of the handle's own table) and async-signal-safe libc
            // functions, then `_exit`s without running the parent's destructors.
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                let cmap = cmap;
                let results = [
                    cmap.get::<String>("totem.cluster_name") == Err(Error::Forked),
                    cmap.set(&key, 1u8) == Err(Error::Forked),
                    cmap.iter("totem.").map(|_| ()) == Err(Error::Forked),
                    cmap.dispatch(cpg::DispatchMode::All) == Err(Error::Forked),
                    cmap.delete_track(track) == Err(Error::Forked),
                    cmap.track_key(&key, TrackType::ALL, |_, _| {}) == Err(Error::Forked),
                    cmap.close() == Err(Error::Forked),
                ];
                let report: Vec<u8> = results.iter().map(|ok| u8::from(*ok)).collect();
                // SAFETY: a valid buffer of the given length; then the child ends at
                // once.
                unsafe {
                    libc::write(write_fd, report.as_ptr().cast(), report.len());
                    libc::_exit(0);
                }
            }
            // SAFETY: closes the parent's copy of the write end.
            unsafe { libc::close(write_fd) };
            let mut report = [9u8; 7];
            // SAFETY: valid buffer; the child writes 7 bytes and exits.
            let n = unsafe { libc::read(read_fd, report.as_mut_ptr().cast(), report.len()) };
            let mut status = 0;
            // SAFETY: waits for the child forked above, closes the read end.
            unsafe {
                libc::waitpid(child, &mut status, 0);
                libc::close(read_fd);
            }
            assert_eq!(n, 7);
            assert_eq!(
                report, [1; 7],
                "get, set, iter, dispatch, delete/add track, close"
            );
            // The parent's session and track are intact.
            cmap.set(&key, 1u8).unwrap();
            let deadline = Instant::now() + WAIT;
            while seen.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "the track went quiet");
                cmap.dispatch_timeout(Duration::from_millis(100)).unwrap();
            }
            cmap.delete_track(track).unwrap();
            cmap.delete(&key).unwrap();
            cmap.close().unwrap();
        });
    });
}

/// Threads add and delete tracks on handles of their own (libcmap's table of tracks
/// changes) while they and others dispatch notifications (which look tracks up in that
/// table). Bounded: 4 threads, 25 rounds each, within the cap on tracks.
#[test]
fn threads_add_and_delete_tracks_while_others_dispatch() {
    let _serial = serial();
    const THREADS: usize = 4;
    const ROUNDS: usize = 25;
    const PER_THREAD: usize = MAX_TRACKS / THREADS;
    let node = cpg_testkit::shared();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let start = Arc::clone(&start);
            std::thread::Builder::new()
                .stack_size(BIG_STACK)
                .spawn(move || {
                    node.enter(|| {
                        let cmap = Cmap::new().unwrap();
                        let prefix = format!("test.{}.threads.{t}.", std::process::id());
                        let seen = Arc::new(AtomicUsize::new(0));
                        start.wait();
                        for round in 0..ROUNDS {
                            let ids: Vec<_> = (0..PER_THREAD)
                                .map(|i| {
                                    let seen = Arc::clone(&seen);
                                    cmap.track_key(
                                        &format!("{prefix}{i}"),
                                        TrackType::ALL,
                                        move |_, _| {
                                            seen.fetch_add(1, Ordering::SeqCst);
                                        },
                                    )
                                    .unwrap_or_else(|e| panic!("thread {t} round {round}: {e}"))
                                })
                                .collect();
                            for i in 0..PER_THREAD {
                                cmap.set(&format!("{prefix}{i}"), round as u32).unwrap();
                            }
                            let want = (round + 1) * PER_THREAD;
                            let deadline = Instant::now() + WAIT;
                            while seen.load(Ordering::SeqCst) < want {
                                assert!(Instant::now() < deadline, "thread {t} round {round}");
                                cmap.dispatch_timeout(Duration::from_millis(20)).unwrap();
                            }
                            for id in ids {
                                cmap.delete_track(id).unwrap();
                            }
                        }
                        for i in 0..PER_THREAD {
                            cmap.delete(&format!("{prefix}{i}")).unwrap();
                        }
                        assert_eq!(seen.load(Ordering::SeqCst), ROUNDS * PER_THREAD);
                    })
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    // Every slot came back.
    big_stack(move || {
        node.enter(|| {
            let cmap = Cmap::new().unwrap();
            for i in 0..MAX_TRACKS {
                cmap.track_key(&format!("test.all.{i}"), TrackType::ALL, |_, _| {})
                    .unwrap_or_else(|e| panic!("slot {i}: {e}"));
            }
        });
    });
}
