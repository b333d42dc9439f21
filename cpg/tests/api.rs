//! The safe API against real corosync daemons: a two-node cluster shared by these tests
//! (one handle per node, so one process can have two members in a group), plus private
//! clusters for the tests that kill a daemon.

mod support;

use std::io::IoSlice;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::retry::Backoff;
use cpg::{
    Callbacks, Confchg, ConnectionRef, CsError, DispatchMode, Dispatched, Error, FlowControl,
    GroupName, Guarantee, Handle, Member, Message, Operation, Reason, MAX_SEND_BUFFERS,
};
use support::event::Event;
use support::peer::{pump_for, pump_until, Peer};
use support::{big_stack, pid, shared_cluster, unique_group, NoCallbacks, BIG_STACK, WAIT};

/// Two peers, on node 1 and node 2, both joined to `group` and seeing each other.
fn joined_pair(group: &GroupName) -> (Peer, Peer) {
    let a = Peer::pumped(shared_cluster(), 0);
    let b = Peer::pumped(shared_cluster(), 1);
    a.handle().join(group).expect("join a");
    b.handle().join(group).expect("join b");
    let both = vec![Member::new(1, pid()), Member::new(2, pid())];
    pump_until(&[&a, &b], WAIT, "both members in both views", || {
        a.last_members(group).as_ref() == Some(&both)
            && b.last_members(group).as_ref() == Some(&both)
    });
    (a, b)
}

#[test]
fn messages_of_every_size_arrive_byte_exact_in_the_same_order_on_both() {
    big_stack(|| {
        let group = unique_group("sizes");
        let (a, b) = joined_pair(&group);
        let pattern = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        // 3 MiB is above the atomic size (about 1 MiB): libcpg fragments it.
        let sizes = [0usize, 1, 64 << 10, 3 << 20];
        assert!(3 << 20 > a.handle().max_message_size().unwrap() as usize);
        let mut sent = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let from_a = pattern(len, i as u8);
            let from_b = pattern(len, 100 + i as u8);
            a.handle().send(&from_a).expect("send from a");
            b.handle().send(&from_b).expect("send from b");
            sent.push((1, from_a));
            sent.push((2, from_b));
        }
        pump_until(&[&a, &b], WAIT, "all 8 messages on both", || {
            a.messages(&group).len() == sent.len() && b.messages(&group).len() == sent.len()
        });
        let (on_a, on_b) = (a.messages(&group), b.messages(&group));
        assert_eq!(on_a, on_b, "both members must deliver the same sequence");
        for sender in [1, 2] {
            let expected: Vec<_> = sent.iter().filter(|(n, _)| *n == sender).collect();
            let got: Vec<_> = on_a.iter().filter(|(n, _)| *n == sender).collect();
            assert_eq!(
                got, expected,
                "node {sender}'s messages, byte-exact, in send order"
            );
        }
        // Every delivery names the sender's pid.
        for e in a.events() {
            if let Event::Msg { from, .. } = e {
                assert_eq!(from.pid, pid());
            }
        }
    });
}

#[test]
fn confchg_reports_join_and_leave_with_pids_and_reasons() {
    big_stack(|| {
        let group = unique_group("reasons");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "a's own join", || {
            a.confchgs(&group).len() == 1
        });
        assert_eq!(
            a.confchgs(&group)[0],
            Event::Conf {
                group,
                members: vec![Member::new(1, pid())],
                left: vec![],
                joined: vec![(Member::new(1, pid()), Reason::Join)],
            }
        );

        let b = Peer::pumped(shared_cluster(), 1);
        b.handle().join(&group).unwrap();
        pump_until(&[&a, &b], WAIT, "b's join seen by a", || {
            a.confchgs(&group).len() == 2
        });
        assert_eq!(
            a.confchgs(&group)[1],
            Event::Conf {
                group,
                members: vec![Member::new(1, pid()), Member::new(2, pid())],
                left: vec![],
                joined: vec![(Member::new(2, pid()), Reason::Join)],
            }
        );

        b.handle().leave(&group).unwrap();
        pump_until(&[&a, &b], WAIT, "b's leave seen by a", || {
            a.confchgs(&group).len() == 3
        });
        assert_eq!(
            a.confchgs(&group)[2],
            Event::Conf {
                group,
                members: vec![Member::new(1, pid())],
                left: vec![(Member::new(2, pid()), Reason::Leave)],
                joined: vec![],
            }
        );
        assert_eq!(
            a.handle().members(&group).unwrap(),
            vec![Member {
                nodeid: 1,
                pid: pid()
            }]
        );
    });
}

#[test]
fn a_handle_dropped_without_leave_is_a_departure() {
    big_stack(|| {
        let group = unique_group("dropped");
        let (a, b) = joined_pair(&group);
        drop(b);
        pump_until(&[&a], WAIT, "b's departure", || {
            a.last_members(&group) == Some(vec![Member::new(1, pid())])
        });
        let last = a.confchgs(&group).pop().unwrap();
        assert_eq!(
            last,
            Event::Conf {
                group,
                members: vec![Member::new(1, pid())],
                left: vec![(Member::new(2, pid()), Reason::ProcDown)],
                joined: vec![],
            },
            "a finalized handle leaves with reason 'process down'"
        );
    });
}

#[test]
fn closing_reports_success_and_departs_too() {
    big_stack(|| {
        let group = unique_group("close");
        let (a, b) = joined_pair(&group);
        b.into_handle().close().expect("close reports success");
        pump_until(&[&a], WAIT, "b's departure", || {
            a.last_members(&group) == Some(vec![Member::new(1, pid())])
        });
    });
}

#[test]
fn a_128_byte_group_name_joins_delivers_and_lists_its_member() {
    // The limits themselves are unit tests in `src/name.rs`.
    big_stack(|| {
        let name = GroupName::new(vec![b'n'; GroupName::MAX_LEN]).unwrap();
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&name).unwrap();
        a.handle().send(b"long name").unwrap();
        pump_until(&[&a], WAIT, "delivery in the 128-byte group", || {
            a.messages(&name) == vec![(1, b"long name".to_vec())]
        });
        assert_eq!(a.handle().members(&name).unwrap().len(), 1);
    });
}

#[test]
fn a_name_and_its_c_style_twin_are_different_groups() {
    big_stack(|| {
        let tag = unique_group("twin");
        let plain = GroupName::new(tag.as_bytes()).unwrap();
        let c_style = GroupName::c_style(tag.as_bytes()).unwrap();

        let a = Peer::pumped(shared_cluster(), 0);
        let b = Peer::pumped(shared_cluster(), 1);
        a.handle().join(&plain).unwrap();
        b.handle().join(&c_style).unwrap();
        pump_until(&[&a, &b], WAIT, "both joins", || {
            a.confchgs(&plain).len() == 1 && b.confchgs(&c_style).len() == 1
        });
        assert_eq!(
            a.handle().members(&plain).unwrap().len(),
            1,
            "only a in the plain group"
        );
        assert_eq!(
            a.handle().members(&c_style).unwrap().len(),
            1,
            "only b in the C-style group"
        );
        assert_eq!(a.handle().members(&c_style).unwrap()[0].nodeid, 2);

        a.handle().send(b"to plain").unwrap();
        b.handle().send(b"to c-style").unwrap();
        pump_until(&[&a, &b], WAIT, "own messages back", || {
            a.messages(&plain).len() == 1 && b.messages(&c_style).len() == 1
        });
        pump_for(&[&a, &b], Duration::from_millis(300));
        assert_eq!(a.messages(&plain), vec![(1, b"to plain".to_vec())]);
        assert_eq!(b.messages(&c_style), vec![(2, b"to c-style".to_vec())]);
        assert!(a.messages(&c_style).is_empty() && b.messages(&plain).is_empty());
    });
}

#[test]
fn sixty_three_buffers_work_and_sixty_four_are_refused_before_c() {
    big_stack(|| {
        let group = unique_group("iovecs");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        let parts: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; i as usize + 1]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();

        a.handle()
            .send_vectored(&slices[..MAX_SEND_BUFFERS])
            .expect("63 buffers are allowed");
        assert_eq!(
            a.handle().send_vectored(&slices).unwrap_err(),
            Error::TooManyBuffers { count: 64, max: 63 }
        );
        assert_eq!(
            a.handle().send_with(Guarantee::Fifo, &slices).unwrap_err(),
            Error::TooManyBuffers { count: 64, max: 63 }
        );
        a.handle()
            .send_with(Guarantee::Fifo, &[IoSlice::new(b"fi"), IoSlice::new(b"fo")])
            .unwrap();

        pump_until(&[&a], WAIT, "the vectored messages", || {
            a.messages(&group).len() == 2
        });
        pump_for(&[&a], Duration::from_millis(200));
        let got = a.messages(&group);
        assert_eq!(
            got.len(),
            2,
            "the refused send must not have reached the daemon"
        );
        assert_eq!(
            got[0].1,
            parts[..63].concat(),
            "63 buffers concatenated in order"
        );
        assert_eq!(got[1].1, b"fifo");
    });
}

#[test]
fn a_panicking_deliver_callback_stops_delivery_and_resumes_in_dispatch() {
    big_stack(|| {
        let group = unique_group("panic-deliver");
        let delivered = Arc::new(AtomicUsize::new(0));
        let seen = delivered.clone();
        let a = shared_cluster().node(0).enter(|| {
            Handle::builder()
                .on_deliver(move |_, m| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if m.data == b"boom" {
                        panic!("deliver callback panicked on purpose");
                    }
                })
                .build()
                .unwrap()
        });
        a.join(&group).unwrap();
        for msg in [&b"one"[..], b"boom", b"after"] {
            a.send(msg).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        let payload = loop {
            assert!(Instant::now() < deadline, "the panic never surfaced");
            match catch_unwind(AssertUnwindSafe(|| {
                a.dispatch_timeout(Duration::from_millis(20))
            })) {
                Ok(r) => {
                    r.expect("dispatch before the panic");
                }
                Err(p) => break p,
            }
        };
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"deliver callback panicked on purpose")
        );
        assert_eq!(
            delivered.load(Ordering::SeqCst),
            2,
            "nothing delivered after the panic"
        );
        assert_eq!(a.dispatch(DispatchMode::All).unwrap_err(), Error::Poisoned);
        assert_eq!(
            a.dispatch(DispatchMode::OneNonblocking).unwrap_err(),
            Error::Poisoned
        );
        assert_eq!(delivered.load(Ordering::SeqCst), 2);
        // Nothing reads this handle's events any more: it left its group and refuses
        // requests (the daemon would otherwise queue everything sent to it).
        assert_eq!(a.send(b"refused").unwrap_err(), Error::Poisoned);
    });
}

#[test]
fn a_panicking_confchg_callback_resumes_in_blocking_dispatch() {
    big_stack(|| {
        let group = unique_group("panic-confchg");
        let a = shared_cluster().node(0).enter(|| {
            Handle::builder()
                .on_confchg(|_, _| panic!("confchg callback panicked on purpose"))
                .build()
                .unwrap()
        });
        a.join(&group).unwrap();
        // Blocking dispatch would never return by itself: the panic must end it.
        let payload = catch_unwind(AssertUnwindSafe(|| a.dispatch(DispatchMode::Blocking)))
            .expect_err("the callback panic must come out of dispatch");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"confchg callback panicked on purpose")
        );
        assert_eq!(a.dispatch(DispatchMode::One).unwrap_err(), Error::Poisoned);
    });
}

/// Replies to "ping" from inside the deliver callback, queries membership and tries a
/// second join from inside confchg, and leaves on "bye" from inside deliver, then tries
/// to join again (refused: corosync would never answer it).
struct Responder {
    first: GroupName,
    second: GroupName,
    log: Arc<Mutex<Vec<String>>>,
}

impl Callbacks for Responder {
    fn deliver(&mut self, cpg: &ConnectionRef, message: Message<'_>) {
        let mut log = self.log.lock().unwrap();
        match message.data {
            b"ping" => cpg.send(b"pong").expect("send from inside deliver"),
            b"bye" => {
                cpg.leave(&self.first).expect("leave from inside deliver");
                log.push(format!("rejoin: {:?}", cpg.join(&self.first)));
            }
            _ => {}
        }
    }

    fn confchg(&mut self, cpg: &ConnectionRef, change: Confchg<'_>) {
        let members = cpg
            .members(change.group)
            .expect("members from inside confchg");
        let mut log = self.log.lock().unwrap();
        log.push(format!("members {}", members.len()));
        if change.left.is_empty() {
            // One group per handle: a second join is refused by the daemon, promptly.
            log.push(format!("second: {:?}", cpg.join(&self.second)));
        }
    }
}

#[test]
fn callbacks_can_send_join_leave_and_query() {
    big_stack(|| {
        let first = unique_group("inside");
        let second = unique_group("inside-second");
        let log = Arc::new(Mutex::new(Vec::new()));
        let responder = shared_cluster().node(1).enter(|| {
            Handle::new(Responder {
                first,
                second,
                log: log.clone(),
            })
            .unwrap()
        });
        responder.join(&first).unwrap();
        let responder = Peer::pumped_from("responder", responder);
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&first).unwrap();
        pump_until(&[&a, &responder], WAIT, "both in the group", || {
            a.last_members(&first).map(|m| m.len()) == Some(2)
        });
        a.handle().send(b"ping").unwrap();
        pump_until(&[&a, &responder], WAIT, "pong sent from a callback", || {
            a.messages(&first).contains(&(2, b"pong".to_vec()))
        });
        assert_eq!(
            a.messages(&first),
            vec![(1, b"ping".to_vec()), (2, b"pong".to_vec())]
        );
        a.handle().send(b"bye").unwrap();
        pump_until(&[&a, &responder], WAIT, "the responder's leave", || {
            a.last_members(&first) == Some(vec![Member::new(1, pid())])
        });
        assert_eq!(
            a.confchgs(&first).last().unwrap(),
            &Event::Conf {
                group: first,
                members: vec![Member::new(1, pid())],
                left: vec![(Member::new(2, pid()), Reason::Leave)],
                joined: vec![],
            }
        );
        assert!(a.handle().members(&second).unwrap().is_empty());
        let log = log.lock().unwrap();
        let exist = Err::<(), _>(Error::Cs {
            op: Operation::Join,
            code: CsError::Exist,
        });
        assert!(log.contains(&format!("second: {exist:?}")), "{log:?}");
        assert!(
            log.contains(&format!(
                "rejoin: {:?}",
                Err::<(), _>(Error::JoinAfterLeave)
            )),
            "{log:?}"
        );
        assert!(log.contains(&"members 2".to_string()), "{log:?}");
        // Outside callbacks too.
        assert_eq!(responder.handle().join(&first), Err(Error::JoinAfterLeave));
    });
}

thread_local! {
    static LEAKED: std::cell::Cell<Option<&'static Handle>> = const { std::cell::Cell::new(None) };
}

#[test]
fn dispatching_the_same_handle_from_its_own_callback_is_refused() {
    big_stack(|| {
        let group = unique_group("reentrant");
        let result = Arc::new(Mutex::new(None));
        let r = result.clone();
        let handle = shared_cluster().node(0).enter(|| {
            Handle::builder()
                .on_deliver(move |_, _| {
                    let h = LEAKED.with(|l| l.get()).expect("handle in thread-local");
                    *r.lock().unwrap() = Some(h.dispatch(DispatchMode::OneNonblocking));
                })
                .build()
                .unwrap()
        });
        // The only way to reach the dispatching handle from its callback: leak it.
        let handle: &'static Handle = Box::leak(Box::new(handle));
        LEAKED.with(|l| l.set(Some(handle)));
        handle.join(&group).unwrap();
        handle.send(b"x").unwrap();
        let deadline = Instant::now() + WAIT;
        while result.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no delivery");
            handle.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
        assert_eq!(
            result.lock().unwrap().take().unwrap(),
            Err(Error::ReentrantDispatch)
        );
        // The handle is fine afterwards.
        handle.leave(&group).unwrap();
        // Un-leak it (memcheck counts leaks): nothing refers to it any more.
        LEAKED.with(|l| l.set(None));
        let handle: *const Handle = handle;
        // SAFETY: the pointer came from `Box::leak` above; the thread-local no longer
        // holds it and no other reference is used after this.
        drop(unsafe { Box::from_raw(handle.cast_mut()) });
    });
}

#[test]
fn dispatch_modes_tell_nothing_pending_from_events() {
    big_stack(|| {
        let group = unique_group("modes");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "own join", || a.confchgs(&group).len() == 1);
        pump_for(&[&a], Duration::from_millis(100));

        assert_eq!(
            a.handle().dispatch(DispatchMode::OneNonblocking).unwrap(),
            Dispatched::NothingPending
        );
        assert_eq!(
            a.handle().dispatch(DispatchMode::All).unwrap(),
            Dispatched::NothingPending
        );
        assert_eq!(
            a.handle()
                .dispatch_timeout(Duration::from_millis(50))
                .unwrap(),
            Dispatched::NothingPending
        );

        a.handle().send(b"1").unwrap();
        assert_eq!(
            a.handle().dispatch(DispatchMode::One).unwrap(),
            Dispatched::Callbacks(1)
        );
        a.handle().send(b"2").unwrap();
        a.handle().send(b"3").unwrap();
        // Wait until both are readable, then drain with ALL.
        let deadline = Instant::now() + WAIT;
        let mut got = 0;
        while got < 2 {
            assert!(Instant::now() < deadline);
            got += a
                .handle()
                .dispatch_timeout(Duration::from_millis(20))
                .unwrap()
                .callbacks();
        }
        a.handle().send(b"4").unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline);
            match a.handle().dispatch(DispatchMode::OneNonblocking).unwrap() {
                Dispatched::Callbacks(1) => break,
                Dispatched::NothingPending => std::thread::sleep(Duration::from_millis(2)),
                other => panic!("unexpected {other:?}"),
            }
        }
        let data: Vec<_> = a.messages(&group).into_iter().map(|(_, d)| d).collect();
        assert_eq!(data, [b"1", b"2", b"3", b"4"]);
        assert_eq!(Dispatched::NothingPending.callbacks(), 0);
    });
}

#[test]
fn dispatch_at_most_runs_no_more_callbacks_than_asked_and_loses_nothing() {
    big_stack(|| {
        let group = unique_group("at-most");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "own join", || a.confchgs(&group).len() == 1);
        pump_for(&[&a], Duration::from_millis(100));

        // Never more than asked for per call, nothing lost.
        for m in [b"5", b"6", b"7", b"8", b"9"] {
            a.handle().send(m).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        let mut got = 0;
        while got < 5 {
            assert!(Instant::now() < deadline, "bounded dispatch got {got} of 5");
            match a.handle().dispatch_at_most(2).unwrap() {
                Dispatched::Callbacks(n) => {
                    assert!(n <= 2, "{n} callbacks for a budget of 2");
                    got += n;
                }
                Dispatched::NothingPending => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        assert_eq!(
            a.handle().dispatch_at_most(2).unwrap(),
            Dispatched::NothingPending
        );
        let data: Vec<_> = a.messages(&group).into_iter().map(|(_, d)| d).collect();
        assert_eq!(data, [b"5", b"6", b"7", b"8", b"9"]);
    });
}

#[test]
fn the_initial_totem_configuration_is_delivered_on_request() {
    big_stack(|| {
        let group = unique_group("totem");
        let with = Peer::pumped_with_initial_totem(shared_cluster(), 0);
        let without = Peer::pumped(shared_cluster(), 1);
        with.handle().join(&group).unwrap();
        without.handle().join(&group).unwrap();
        pump_until(&[&with], WAIT, "the initial totem configuration", || {
            with.events()
                .iter()
                .any(|e| matches!(e, Event::Totem { .. }))
        });
        let totem = with
            .events()
            .into_iter()
            .find(|e| matches!(e, Event::Totem { .. }))
            .unwrap();
        let Event::Totem { ring, mut nodes } = totem else {
            unreachable!()
        };
        nodes.sort();
        assert_eq!(nodes, vec![1, 2], "both nodes in the ring");
        assert!(ring.seq > 0 && [1, 2].contains(&ring.nodeid), "{ring:?}");
        assert!(!ring.to_string().is_empty());
        let own_join = (Member::new(2, pid()), Reason::Join);
        pump_until(
            &[&with, &without],
            WAIT,
            "the join without totem option",
            || {
                without
                    .confchgs(&group)
                    .iter()
                    .any(|e| matches!(e, Event::Conf { joined, .. } if joined.contains(&own_join)))
            },
        );
        pump_for(&[&with, &without], Duration::from_millis(300));
        // `without` did not ask: it may only hear of rings formed after it connected (a
        // membership flap on a loaded machine), never of the ring that was current when
        // it joined, which is the one `with` was given on request.
        let rings = |p: &Peer| -> Vec<cpg::RingId> {
            p.events()
                .iter()
                .filter_map(|e| match e {
                    Event::Totem { ring: r, .. } => Some(*r),
                    _ => None,
                })
                .collect()
        };
        for later in rings(&without) {
            assert!(
                later.seq > ring.seq,
                "without the option, no totem event for the current ring {ring}: got {later}"
            );
        }
        for later in &rings(&with)[1..] {
            assert!(
                later.seq > ring.seq,
                "only ring changes after the initial one"
            );
        }
    });
}

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
fn joining_twice_gets_exist_and_leaving_unjoined_gets_not_joined() {
    big_stack(|| {
        let group = unique_group("bad");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        let twice = a.handle().join(&group).unwrap_err();
        assert_eq!(
            twice,
            Error::Cs {
                op: Operation::Join,
                code: CsError::Exist
            }
        );
        assert!(!twice.is_retryable() && !twice.is_daemon_lost());
        assert!(
            twice.to_string().starts_with("cpg_join failed: "),
            "{twice}"
        );
        assert!(twice.to_string().contains("CS_ERR_EXIST"), "{twice}");

        // In one process, a second handle on the same node cannot join the same group:
        // corosync identifies members by (node id, pid).
        let same_process = Peer::pumped(shared_cluster(), 0);
        assert_eq!(
            same_process.handle().join(&group).unwrap_err().code(),
            Some(CsError::Exist)
        );

        let never_joined = unique_group("never");
        // A leave on a handle that never joined is refused before C (corosync would
        // answer NOT_EXIST here, but OK for a joined handle naming another group).
        let leave = same_process.handle().leave(&group).unwrap_err();
        assert_eq!(leave, Error::NotJoined);
        assert_eq!(leave.operation(), None, "not an error from C");
        assert!(a.handle().members(&never_joined).unwrap().is_empty());
    });
}

#[test]
fn send_with_retry_delivers_everything_under_load() {
    big_stack(|| {
        let group = unique_group("retry");
        let a = Peer::pumped(shared_cluster(), 0);
        a.handle().join(&group).unwrap();
        let backoff = Backoff::default();
        let payload = vec![7u8; 100 << 10];
        for i in 0..200u32 {
            let mut m = payload.clone();
            m[..4].copy_from_slice(&i.to_be_bytes());
            a.handle()
                .send_with_retry(&m, &backoff)
                .expect("send with retry");
        }
        pump_until(&[&a], Duration::from_secs(60), "200 messages", || {
            a.messages(&group).len() == 200
        });
        let seqs: Vec<u32> = a
            .messages(&group)
            .iter()
            .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..200).collect::<Vec<_>>());
    });
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
        // how a client tells that the daemon is back, see `Error::is_daemon_lost`).
        let (refused, took) = private.node(0).enter(|| {
            let started = Instant::now();
            let refused = Handle::new(NoCallbacks).unwrap_err();
            (refused, started.elapsed())
        });
        eprintln!("a new handle without a daemon failed in {took:?}");
        assert!(refused.is_daemon_lost(), "{refused:?}");
        assert_eq!(refused.operation(), Some(Operation::Initialize));
        assert!(
            took < Duration::from_millis(100),
            "refused only after {took:?}"
        );
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

/// Members recorded by a callback.
type Recorded = Arc<Mutex<Vec<cpg::Member>>>;

/// Callbacks given through the trait: who sent each message, who joined, and how many
/// totem configurations came.
struct Record(Recorded, Recorded, Arc<AtomicUsize>);

impl Callbacks for Record {
    fn totem_confchg(&mut self, _: &ConnectionRef, _: cpg::TotemConfchg<'_>) {
        self.2.fetch_add(1, Ordering::SeqCst);
    }
    fn deliver(&mut self, _: &ConnectionRef, message: Message<'_>) {
        self.0.lock().unwrap().push(message.sender());
    }
    fn confchg(&mut self, _: &ConnectionRef, change: Confchg<'_>) {
        self.1
            .lock()
            .unwrap()
            .extend(change.joined.iter().map(|a| a.member()));
    }
}

/// A handle on node 1 made by `Handle::with_options` (asking for the initial totem
/// configuration) with [`Record`] callbacks, joined to `group`; and what it records.
fn joined_with_options(group: &GroupName) -> (Handle, Recorded, Recorded, Arc<AtomicUsize>) {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let joined = Arc::new(Mutex::new(Vec::new()));
    let (s, j) = (senders.clone(), joined.clone());
    let totems = Arc::new(AtomicUsize::new(0));
    let mut options = cpg::Options::default();
    options.initial_totem_conf = true;
    let handle = shared_cluster()
        .node(0)
        .enter(|| Handle::with_options(Record(s, j, totems.clone()), options))
        .unwrap();
    handle.join(group).unwrap();
    (handle, senders, joined, totems)
}

#[test]
fn options_given_to_with_options_apply() {
    big_stack(|| {
        let group = unique_group("options");
        let (handle, _, _, totems) = joined_with_options(&group);
        // The option given through `with_options` took effect: the ring came with the
        // join, not only on a change.
        let deadline = Instant::now() + WAIT;
        while totems.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "initial_totem_conf via with_options"
            );
            handle.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
    });
}

#[test]
fn a_vectored_retrying_send_is_delivered_once_as_sent_by_this_member() {
    big_stack(|| {
        let group = unique_group("vectored-retry");
        let (handle, senders, joined, _) = joined_with_options(&group);
        handle
            .send_vectored_with_retry(
                &[IoSlice::new(b"a"), IoSlice::new(b"b")],
                &Backoff::default(),
            )
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while senders.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no delivery");
            handle.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
        let me = cpg::Member {
            nodeid: 1,
            pid: pid(),
        };
        assert_eq!(*senders.lock().unwrap(), vec![me]);
        assert_eq!(*joined.lock().unwrap(), vec![me]);
    });
}

#[test]
fn a_callback_may_dispatch_another_handle_it_owns() {
    big_stack(|| {
        let outer_group = unique_group("outer");
        let inner_group = unique_group("inner");
        let inner_seen = Arc::new(Mutex::new(Vec::new()));
        let outer_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = inner_seen.clone();
        let inner = shared_cluster().node(1).enter(|| {
            Handle::builder()
                .on_deliver(move |_, m| seen.lock().unwrap().push(m.data.to_vec()))
                .build()
                .unwrap()
        });
        inner.join(&inner_group).unwrap();
        inner.send(b"inner 1").unwrap();
        let (seen, inner_log) = (outer_seen.clone(), inner_seen.clone());
        let outer = shared_cluster().node(0).enter(|| {
            Handle::builder()
                .on_deliver(move |_, m| {
                    // Dispatch the inner handle from inside the outer one's callback,
                    // until its message has arrived.
                    let deadline = Instant::now() + WAIT;
                    while inner_log.lock().unwrap().is_empty() {
                        assert!(Instant::now() < deadline, "inner delivery");
                        inner.dispatch_timeout(Duration::from_millis(20)).unwrap();
                    }
                    seen.lock().unwrap().push(m.data.to_vec());
                })
                .build()
                .unwrap()
        });
        outer.join(&outer_group).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        outer.send(b"outer 1").unwrap();
        outer.send(b"outer 2").unwrap();
        let deadline = Instant::now() + WAIT;
        while outer_seen.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "outer deliveries");
            outer.dispatch_timeout(Duration::from_millis(20)).unwrap();
        }
        assert_eq!(
            *outer_seen.lock().unwrap(),
            [b"outer 1".to_vec(), b"outer 2".to_vec()]
        );
        assert_eq!(
            *inner_seen.lock().unwrap(),
            [b"inner 1".to_vec()],
            "inner events go to the inner callbacks"
        );
    });
}

#[test]
fn local_member_is_the_entry_the_daemon_lists_for_this_process() {
    big_stack(|| {
        let group = unique_group("me");
        let a = Peer::pumped(shared_cluster(), 1);
        let me = a.handle().local_member().unwrap();
        assert_eq!(me, cpg::Member::new(2, pid()));
        a.handle().join(&group).unwrap();
        pump_until(&[&a], WAIT, "own join", || a.confchgs(&group).len() == 1);
        let own_join = (me, Reason::Join);
        assert!(
            matches!(&a.confchgs(&group)[0], Event::Conf { joined, .. } if joined == &vec![own_join]),
            "{:?}",
            a.confchgs(&group)
        );
        assert_eq!(a.handle().members(&group).unwrap(), vec![me]);
    });
}

/// A retrying send reads events while it waits out back-pressure: the daemon keeps
/// what a client has not read, without limit, and the pauses are where a sender that
/// does nothing else reads. Here a client floods its group without dispatching until
/// the daemon pushes back, then sends once more with `send_with_retry`: by the time
/// that returns, callbacks have run (its own messages came back), although nothing
/// else dispatched.
#[test]
fn send_with_retry_delivers_events_while_it_waits_out_back_pressure() {
    big_stack(|| {
        let group = unique_group("pressure");
        let delivered = Arc::new(AtomicUsize::new(0));
        let counter = delivered.clone();
        let handle = shared_cluster()
            .node(0)
            .enter(|| {
                Handle::builder()
                    .on_deliver(move |_, _| {
                        counter.fetch_add(1, Ordering::SeqCst);
                    })
                    .build()
            })
            .unwrap();
        handle.join(&group).unwrap();
        let payload = vec![5u8; 64 << 10];
        // Each round floods until the daemon pushes back, then sends once more with
        // retries. Pressure can lift before the retrying send's first attempt, which then
        // succeeds without a pause; so rounds go on until one pause has happened. With
        // pauses that only sleep, no round ever delivers anything.
        let mut pushbacks = 0;
        for round in 0..200 {
            let mut sent = 0u32;
            loop {
                match handle.send(&payload) {
                    Ok(()) => sent += 1,
                    Err(e) if e.is_retryable() => break,
                    Err(e) => panic!("round {round}, send {sent}: {e}"),
                }
                assert!(sent < 100_000, "the daemon never pushed back");
            }
            pushbacks += 1;
            assert_eq!(
                delivered.load(Ordering::SeqCst),
                0,
                "nothing dispatched yet"
            );
            handle
                .send_with_retry(&payload, &Backoff::default())
                .expect("send with retry");
            if delivered.load(Ordering::SeqCst) > 0 {
                break;
            }
        }
        eprintln!(
            "{} callbacks ran inside send_with_retry after {pushbacks} pushbacks",
            delivered.load(Ordering::SeqCst)
        );
        assert!(
            delivered.load(Ordering::SeqCst) > 0,
            "send_with_retry waited out back-pressure without reading events"
        );
    });
}
