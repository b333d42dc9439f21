//! What a hostile but safe program can do to the process, libcpg and the daemon, and
//! what it gets instead: a typed error, with nothing corrupted, leaked or lost.
//!
//! Every test here failed on the crate before these checks existed (0.1.0): a dispatch
//! on a small stack wrote into a neighbouring thread's stack, a leave of another group
//! answered OK and left a ghost member, a send before join answered OK and the message
//! vanished, a forked child could finalize its parent's connection, a poisoned handle
//! waited out its whole timeout, and so on.

mod support;

use std::time::{Duration, Instant};

use cpg::{DispatchMode, Dispatched, Error, GroupName, Handle, Member, Operation, Options};
use support::event::Event;
use support::peer::{join_waiting, leave_waiting, pump_until, send_waiting, Peer};
use support::{big_stack, pid, shared_cluster, unique_group, NoCallbacks, WAIT};

/// A handle on node 1 of the shared cluster, joined to `group` and past its own join.
fn joined(group: &GroupName) -> Peer {
    let a = Peer::pumped(shared_cluster(), 0);
    join_waiting(a.handle(), group).expect("join");
    pump_until(&[&a], WAIT, "own join", || {
        a.last_members(group)
            .is_some_and(|m| m.contains(&Member::new(1, pid())))
    });
    a
}

/// The bytes of a 64 KiB message, recognizable in memory.
fn pattern() -> Vec<u8> {
    (0..64 << 10).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}

/// Size of the thread stack in [`on_small_stack_above_a_neighbour`].
const SMALL_STACK: usize = 128 << 10;
/// Size of the watched region below it: more than `cpg_dispatch`'s frame (1 MiB).
const NEIGHBOUR: usize = 2 << 20;
/// What the watched region holds.
const NEIGHBOUR_BYTE: u8 = 0xa5;

/// Runs `f` on a thread whose [`SMALL_STACK`] stack sits one guard page above a
/// [`NEIGHBOUR`]-byte region filled with [`NEIGHBOUR_BYTE`], the way glibc places the
/// stack of the next thread; returns what `f` returned and how many bytes of the
/// region changed. (A thread spawned by `std` lands wherever glibc's stack cache
/// puts it, maybe above the other stacks; this layout is fixed.)
fn on_small_stack_above_a_neighbour<T: Send, F: FnOnce() -> T + Send>(f: F) -> (T, usize) {
    struct Job<F, T> {
        f: Option<F>,
        out: Option<std::thread::Result<T>>,
    }
    extern "C" fn run<F: FnOnce() -> T, T>(job: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `job` is the `Job<F, T>` below, which outlives the thread (joined
        // before it is read or dropped) and is touched by nobody else meanwhile.
        let job = unsafe { &mut *job.cast::<Job<F, T>>() };
        let f = job.f.take().expect("the job runs once");
        job.out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        std::ptr::null_mut()
    }
    let page = 4096;
    let total = NEIGHBOUR + page + SMALL_STACK;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing;
    // checked below and unmapped at the end.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    let base = base.cast::<u8>();
    // SAFETY: the first NEIGHBOUR bytes of the mapping are ours and writable.
    unsafe { std::ptr::write_bytes(base, NEIGHBOUR_BYTE, NEIGHBOUR) };
    // SAFETY: the guard page lies inside the mapping.
    let rc = unsafe { libc::mprotect(base.add(NEIGHBOUR).cast(), page, libc::PROT_NONE) };
    assert_eq!(rc, 0, "mprotect");
    let mut job = Job::<F, T> {
        f: Some(f),
        out: None,
    };
    // SAFETY: zeroed storage that pthread_attr_init initializes; the stack is the top
    // SMALL_STACK bytes of the mapping, which stays mapped until the thread is joined;
    // `run::<F, T>` matches the job's type; the thread is joined before `job` is read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_attr_init(&mut attr), 0);
        let stack = base.add(NEIGHBOUR + page).cast();
        assert_eq!(
            libc::pthread_attr_setstack(&mut attr, stack, SMALL_STACK),
            0
        );
        let mut thread: libc::pthread_t = std::mem::zeroed();
        let job_ptr: *mut Job<F, T> = &mut job;
        let rc = libc::pthread_create(&mut thread, &attr, run::<F, T>, job_ptr.cast());
        assert_eq!(rc, 0, "pthread_create");
        libc::pthread_attr_destroy(&mut attr);
        assert_eq!(libc::pthread_join(thread, std::ptr::null_mut()), 0);
    }
    // SAFETY: the region is still mapped and readable; the thread is gone.
    let region = unsafe { std::slice::from_raw_parts(base, NEIGHBOUR) };
    let changed = region.iter().filter(|b| **b != NEIGHBOUR_BYTE).count();
    // SAFETY: the mapping made above, no longer used by anyone.
    unsafe { libc::munmap(base.cast(), total) };
    match job.out.take().expect("the thread ran the job") {
        Ok(t) => (t, changed),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn dispatch_on_a_small_stack_is_refused_and_no_other_memory_is_touched() {
    let group = unique_group("small-stack");
    let a = big_stack(move || {
        let a = joined(&group);
        // The message waits in libcpg until someone dispatches.
        send_waiting(a.handle(), &pattern()).expect("send");
        (a, group)
    });

    // 128 KiB of stack, right above what stands for a neighbouring thread's stack
    // (one guard page between them, as glibc lays out thread stacks): a frame of 1 MiB
    // without stack probes would land in it.
    let (((peer, group), refused), overwritten) = on_small_stack_above_a_neighbour(move || {
        let refused = a.0.handle().dispatch(DispatchMode::All);
        (a, refused)
    });
    assert_eq!(
        overwritten, 0,
        "bytes of the neighbouring stack overwritten"
    );
    match refused {
        Err(Error::StackTooSmall {
            op: Operation::Dispatch,
            needed,
            available,
        }) => {
            assert_eq!(needed, cpg::DISPATCH_STACK);
            assert!(available < SMALL_STACK, "{available}");
        }
        other => panic!("dispatch on a 128 KiB stack: {other:?}"),
    }
    let text = Error::StackTooSmall {
        op: Operation::Dispatch,
        needed: cpg::DISPATCH_STACK,
        available: 100,
    }
    .to_string();
    assert!(
        text.contains("needs 1114112 bytes") && text.contains("has 100 left"),
        "{text}"
    );

    // Nothing was lost: on a stack just large enough the message arrives whole.
    let peer = std::thread::Builder::new()
        .stack_size(cpg::DISPATCH_STACK + (128 << 10))
        .spawn(move || {
            pump_until(&[&peer], WAIT, "the pending message", || {
                peer.messages(&group).len() == 1
            });
            assert_eq!(peer.messages(&group), vec![(1, pattern())]);
            peer
        })
        .unwrap()
        .join()
        .unwrap();
    drop(peer);
}

#[test]
fn every_dispatching_call_checks_the_stack() {
    let group = unique_group("small-stack-all");
    let a = big_stack(move || {
        let a = joined(&group);
        a.handle().send(b"pending").expect("send");
        a
    });
    let a = std::thread::Builder::new()
        .stack_size(128 << 10)
        .spawn(move || {
            let h = a.handle();
            for (what, result) in [
                ("One", h.dispatch(DispatchMode::One).map(|_| ())),
                (
                    "OneNonblocking",
                    h.dispatch(DispatchMode::OneNonblocking).map(|_| ()),
                ),
                ("Blocking", h.dispatch(DispatchMode::Blocking).map(|_| ())),
                ("at_most", h.dispatch_at_most(10).map(|_| ())),
                ("timeout", h.dispatch_timeout(WAIT).map(|_| ())),
            ] {
                assert!(
                    matches!(result, Err(Error::StackTooSmall { .. })),
                    "{what}: {result:?}"
                );
            }
            // A retrying send pauses by dispatching (its own messages are there to
            // read): once the daemon pushes back (nobody reads this handle's events)
            // it refuses too, instead of dispatching. Until then it just sends.
            let msg = vec![0u8; 64 << 10];
            let backoff = cpg::retry::Backoff::default();
            let deadline = Instant::now() + WAIT;
            let mut sent = 0u32;
            let result = loop {
                match h.send_with_retry(&msg, &backoff) {
                    Ok(()) if Instant::now() < deadline => sent += 1,
                    other => break other,
                }
            };
            assert!(
                matches!(result, Err(Error::StackTooSmall { .. })),
                "send_with_retry after {sent} sends: {result:?}"
            );
            a
        })
        .unwrap()
        .join()
        .unwrap();
    drop(a);
}

#[test]
fn a_send_before_join_or_after_leave_is_refused_not_dropped() {
    big_stack(|| {
        let group = unique_group("unjoined");
        let a = Peer::pumped(shared_cluster(), 0);
        assert_eq!(a.handle().send(b"lost?").unwrap_err(), Error::NotJoined);
        assert_eq!(a.handle().joined_group(), None);
        join_waiting(a.handle(), &group).unwrap();
        assert_eq!(a.handle().joined_group(), Some(&group));
        send_waiting(a.handle(), b"in").unwrap();
        pump_until(&[&a], WAIT, "own message", || a.messages(&group).len() == 1);
        leave_waiting(a.handle(), &group).unwrap();
        assert_eq!(a.handle().send(b"after").unwrap_err(), Error::NotJoined);
        assert_eq!(a.handle().leave(&group).unwrap_err(), Error::NotJoined);
        assert_eq!(a.handle().joined_group(), None);
    });
}

#[test]
fn a_leave_of_another_group_is_refused_and_leaves_no_ghost() {
    big_stack(|| {
        let group = unique_group("ghost");
        let other = unique_group("ghost-other");
        let a = joined(&group);
        let err = a.handle().leave(&other).unwrap_err();
        assert_eq!(
            err,
            Error::NotJoinedTo {
                joined: Box::new(group)
            }
        );
        assert!(err.to_string().contains("ghost"), "{err}");
        // Still a full member: it sends and receives.
        send_waiting(a.handle(), b"still here").unwrap();
        pump_until(&[&a], WAIT, "own message", || a.messages(&group).len() == 1);

        // Once the handle is gone, so is the member (corosync kept it for good when the
        // wrong leave reached it).
        let watcher = Peer::pumped(shared_cluster(), 1);
        drop(a);
        let deadline = Instant::now() + WAIT;
        loop {
            let members = watcher.handle().members(&group).unwrap();
            if !members.iter().any(|m| m.nodeid == 1 && m.pid == pid()) {
                break;
            }
            assert!(Instant::now() < deadline, "ghost member stays: {members:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn a_poisoned_handle_says_so_at_once() {
    big_stack(|| {
        let group = unique_group("poison");
        let node = shared_cluster().node(0);
        let handle = node.enter(|| {
            Handle::builder()
                .on_deliver(|_, _| panic!("planted panic"))
                .build()
                .unwrap()
        });
        join_waiting(&handle, &group).unwrap();
        send_waiting(&handle, b"boom").unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            handle.dispatch_timeout(WAIT).unwrap();
        }));
        assert!(caught.is_err(), "the panic resumes in dispatch");
        // At once: far sooner than the timeout it was given (a bound with room for
        // valgrind and a loaded machine, which a wait for the timeout still exceeds).
        let start = Instant::now();
        assert_eq!(handle.dispatch_timeout(WAIT).unwrap_err(), Error::Poisoned);
        assert!(start.elapsed() < WAIT / 6, "{:?}", start.elapsed());
        assert_eq!(handle.dispatch_at_most(5).unwrap_err(), Error::Poisoned);
    });
}

#[test]
fn dispatch_at_most_zero_is_refused() {
    big_stack(|| {
        let a = Peer::pumped(shared_cluster(), 0);
        assert!(matches!(
            a.handle().dispatch_at_most(0),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            a.handle().dispatch_at_most(1).unwrap(),
            Dispatched::NothingPending
        );
    });
}

#[test]
fn the_daemon_must_run_as_the_expected_user() {
    big_stack(|| {
        let node = shared_cluster().node(0);
        let daemon = node.daemon_pid().expect("daemon pid");
        // Default: root, which corosync is.
        let ok = node.enter(|| Handle::builder().build());
        assert!(ok.is_ok(), "{ok:?}");
        let err = node
            .enter(|| Handle::builder().daemon_uid(Some(4242)).build())
            .unwrap_err();
        assert_eq!(
            err,
            Error::UntrustedDaemon {
                pid: daemon,
                uid: 0,
                expected: 4242
            }
        );
        assert!(err.to_string().contains("uid 0"), "{err}");
        let unchecked =
            node.enter(|| Handle::with_options(NoCallbacks, Options::default().daemon_uid(None)));
        assert!(unchecked.is_ok(), "{unchecked:?}");
        #[cfg(feature = "tokio")]
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let err = rt
                .block_on(async {
                    node.enter(|| {
                        cpg::AsyncHandle::with_options(Options::default().daemon_uid(Some(7)))
                    })
                })
                .unwrap_err();
            assert!(matches!(
                err,
                Error::UntrustedDaemon {
                    uid: 0,
                    expected: 7,
                    ..
                }
            ));
        }
    });
}

#[test]
fn a_handle_inherited_through_fork_refuses_every_call_and_spares_the_parent() {
    big_stack(|| {
        let group = unique_group("fork");
        let a = joined(&group);
        let mut fds = [0; 2];
        // SAFETY: valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // SAFETY: the child only calls into this crate's refusal paths (atomic loads,
        // no locks held across fork) and async-signal-safe libc functions, then
        // `_exit`s without running destructors of the parent's state.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let results = [
                a.handle().send(b"from the child") == Err(Error::Forked),
                a.handle().dispatch(DispatchMode::All) == Err(Error::Forked),
                a.handle().members(&group) == Err(Error::Forked),
                a.handle().local_node_id() == Err(Error::Forked),
                a.handle().leave(&group) == Err(Error::Forked),
                a.into_handle().close() == Err(Error::Forked),
            ];
            let report: Vec<u8> = results.iter().map(|ok| u8::from(*ok)).collect();
            // SAFETY: a valid buffer of the given length; then the child ends at once.
            unsafe {
                libc::write(write_fd, report.as_ptr().cast(), report.len());
                libc::_exit(0);
            }
        }
        // SAFETY: closes the parent's copy of the write end.
        unsafe { libc::close(write_fd) };
        let mut report = [9u8; 6];
        // SAFETY: valid buffer; the child writes 6 bytes and exits.
        let n = unsafe { libc::read(read_fd, report.as_mut_ptr().cast(), report.len()) };
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe {
            libc::waitpid(child, &mut status, 0);
            libc::close(read_fd);
        }
        assert_eq!(n, 6);
        assert_eq!(
            report, [1; 6],
            "send, dispatch, members, local_node_id, leave, close"
        );

        // The parent's session is intact: still a member, and its messages flow.
        send_waiting(a.handle(), b"parent").unwrap();
        pump_until(&[&a], WAIT, "the parent's own message", || {
            a.messages(&group).contains(&(1, b"parent".to_vec()))
        });
        assert!(
            !a.messages(&group)
                .contains(&(1, b"from the child".to_vec())),
            "the child's send must not go out"
        );
        assert!(a
            .handle()
            .members(&group)
            .unwrap()
            .iter()
            .any(|m| m.pid == pid()));
        assert!(!a.events().iter().any(
            |e| matches!(e, Event::Conf { left, .. } if left.iter().any(|l| l.0.pid == pid()))
        ));
    });
}

#[test]
fn a_lost_daemon_is_remembered_and_no_shared_memory_is_left_behind() {
    big_stack(|| {
        let private = cpg_testkit::Cluster::start(1);
        let group = unique_group("lost-zcb");
        let a = Peer::pumped(&private, 0);
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "own join", || !a.confchgs(&group).is_empty());
        // libcpg maps each zero-copy file into this process: a leaked one stays
        // mapped (and its file stays in /dev/shm, where other processes' come and go).
        let files = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.contains("corosync_zerocopy-"))
                .count()
        };
        private.kill_daemon(0);
        let before = files();
        for _ in 0..100 {
            let err = a.handle().alloc_buffer(1_000_000).unwrap_err();
            assert!(err.is_daemon_lost(), "{err:?}");
        }
        assert_eq!(files(), before, "zero-copy files left mapped");
        // Every other call fails the same way, without another round trip.
        for err in [
            a.handle().send(b"x").unwrap_err(),
            a.handle().members(&group).unwrap_err(),
            a.handle().dispatch(DispatchMode::All).unwrap_err(),
            a.handle().iter_all().map(|_| ()).unwrap_err(),
        ] {
            assert!(err.is_daemon_lost(), "{err:?}");
        }
    });
}

#[test]
fn dispatch_on_a_stack_segment_that_is_not_the_threads_own_is_refused() {
    let group = unique_group("segment");
    let a = big_stack(move || {
        let a = joined(&group);
        send_waiting(a.handle(), b"pending").unwrap();
        a
    });
    // The thread's own stack is small; the segment stacker makes is large, but its
    // room cannot be known (it may lie above the thread's stack, where a naive
    // "address minus stack bottom" sees plenty).
    let a = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let refused = stacker::grow(4 << 20, || a.handle().dispatch(DispatchMode::All));
            match refused {
                Err(Error::StackTooSmall { available: 0, .. }) => {}
                other => panic!("dispatch on a stacker segment: {other:?}"),
            }
            a
        })
        .unwrap()
        .join()
        .unwrap();
    drop(a);
}
