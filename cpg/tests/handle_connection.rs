//! A [`cpg::Handle`]'s connection to the daemon, on a real two-node cluster (shared by
//! these tests) and a private one for the test that kills its daemon: the queries
//! (node id, atomic size, flow control), the descriptor (the daemon's socket, closed by
//! `close`), eight threads connecting at once, and a killed daemon (every call a lost
//! daemon, a blocking dispatch returns, a new handle refused fast, and delivering again
//! after a restart).

mod support;

use std::time::{Duration, Instant};

use cpg::{DispatchMode, FlowControl, GroupName, Handle, Operation};
use support::peer::{pump_until, Peer};
use support::{big_stack, shared_cluster, unique_group, NoCallbacks, BIG_STACK, WAIT};

#[test]
fn queries_report_the_node_id_atomic_size_and_flow_control() {
    big_stack(|| {
        let a = Peer::pumped(shared_cluster(), 1);
        assert_eq!(a.handle().local_node_id().unwrap(), 2);
        let max = a.handle().max_message_size().unwrap();
        assert!((512 << 10..=4 << 20).contains(&max), "atomic size {max}");
        assert_eq!(
            a.handle().flow_control_state().unwrap(),
            FlowControl::Disabled
        );
        assert!(a.handle().as_raw() != 0);
    });
}

#[test]
fn the_descriptor_is_the_daemon_socket_and_close_closes_it() {
    big_stack(|| {
        let a = Peer::pumped(shared_cluster(), 1);
        use std::os::fd::{AsFd, AsRawFd};
        let fd = a.handle().as_raw_fd();
        assert_eq!(a.handle().as_fd().as_raw_fd(), fd);
        // The socket itself (its inode), not the number: another test thread may reuse
        // the number as soon as it is closed.
        let socket = open_file(fd).expect("the handle's descriptor is open");
        assert!(socket.starts_with("socket:["), "{socket}");
        a.into_handle().close().unwrap();
        let still_open: Vec<i32> = open_fds()
            .into_iter()
            .filter(|&other| open_file(other).as_deref() == Some(socket.as_str()))
            .collect();
        assert!(
            still_open.is_empty(),
            "finalize closes the socket {socket}, still open as {still_open:?}"
        );
    });
}

/// What descriptor `fd` of this process refers to (`socket:[inode]` for a socket).
fn open_file(fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// The descriptors this process has open.
fn open_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn eight_threads_connecting_at_once_all_succeed() {
    let node = shared_cluster().node(0);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                node.enter(|| {
                    let h = Handle::new(NoCallbacks)?;
                    h.local_node_id()
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(1));
    }
}

#[test]
fn a_killed_daemon_is_a_lost_daemon_and_a_new_handle_delivers_after_restart() {
    big_stack(|| {
        let private = cpg_testkit::Cluster::start(1);
        let group = GroupName::new("restart").unwrap();
        let a = Peer::pumped(&private, 0);
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "own join", || a.confchgs(&group).len() == 1);

        // A blocking dispatch in another thread must return, not hang.
        let (tx, rx) = std::sync::mpsc::channel();
        let dispatcher = std::thread::Builder::new()
            .stack_size(BIG_STACK)
            .spawn(move || {
                let r = a.handle().dispatch(DispatchMode::Blocking);
                tx.send(()).unwrap();
                (a, r)
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        private.kill_daemon(0);
        rx.recv_timeout(WAIT)
            .expect("blocking dispatch must return once the daemon is gone");
        let (a, r) = dispatcher.join().unwrap();
        let err = r.expect_err("dispatch on a dead daemon");
        assert!(err.is_daemon_lost(), "{err:?}");
        assert_eq!(err.operation(), Some(Operation::Dispatch));

        // Every later call fails cleanly with the same error.
        for e in [
            a.handle().dispatch(DispatchMode::All).unwrap_err(),
            a.handle().send(b"x").unwrap_err(),
            a.handle().join(&unique_group("dead")).unwrap_err(),
            a.handle().members(&group).unwrap_err(),
            a.handle().local_node_id().unwrap_err(),
        ] {
            assert!(e.is_daemon_lost(), "{e:?}");
        }
        // A new handle while the daemon is down: refused, clearly, and fast (trying is
        // how a client tells that the daemon is back, see `Error::is_daemon_lost`):
        // one refused connect, not a wait or retries; the bound has room for valgrind
        // (memcheck runs this file) on a loaded machine.
        let (refused, took) = private.node(0).enter(|| {
            let started = Instant::now();
            let refused = Handle::new(NoCallbacks).unwrap_err();
            (refused, started.elapsed())
        });
        eprintln!("a new handle without a daemon failed in {took:?}");
        assert!(refused.is_daemon_lost(), "{refused:?}");
        assert_eq!(refused.operation(), Some(Operation::Initialize));
        assert!(took < Duration::from_secs(1), "refused only after {took:?}");
        drop(a);

        private.restart_daemon(0);
        let b = Peer::pumped(&private, 0);
        b.handle().join(&group).unwrap();
        b.handle().send(b"back").unwrap();
        pump_until(&[&b], WAIT, "delivery after restart", || {
            b.messages(&group) == vec![(1, b"back".to_vec())]
        });
    });
}
