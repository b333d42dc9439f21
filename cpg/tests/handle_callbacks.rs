//! Callbacks on a real two-node cluster (shared by these tests): closures and the
//! [`cpg::Callbacks`] trait, given to [`cpg::Handle::with_options`] with its options;
//! callbacks that send, join, leave and query from inside; a panic in a deliver or
//! confchg callback, which stops delivery and comes out of `dispatch`; and a panic in a
//! callback's destructor, which must not leak the handle's slot.

mod support;

use std::io::IoSlice;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::retry::Backoff;
use cpg::{
    Callbacks, Confchg, ConnectionRef, CsError, DispatchMode, Error, GroupName, Handle, Member,
    Message, Operation, Reason,
};
use support::event::Event;
use support::peer::{pump_until, Peer};
use support::{big_stack, pid, shared_cluster, unique_group, WAIT};

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

/// Panics when dropped once armed.
struct PanicOnDrop(Arc<AtomicBool>);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if self.0.load(Ordering::SeqCst) {
            panic!("a callback's captured state panics on drop");
        }
    }
}

/// A callback whose captured state panics when dropped: dropping the handle unwinds
/// with that panic, but must still give back everything the handle held (its place
/// among the process's `MAX_HANDLES`), so that later handles can be made.
#[test]
fn a_panicking_callback_destructor_does_not_leak_the_handle_slot() {
    big_stack(|| {
        cpg_testkit::shared().enter(|| {
            for i in 0..2 * cpg::MAX_HANDLES {
                let armed = Arc::new(AtomicBool::new(false));
                let bomb = PanicOnDrop(Arc::clone(&armed));
                let h = Handle::builder()
                    .on_deliver(move |_, _| {
                        let _ = &bomb;
                    })
                    .build()
                    .unwrap_or_else(|e| panic!("handle {i}: {e}"));
                armed.store(true, Ordering::SeqCst);
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(h)));
                assert!(dropped.is_err(), "the destructor's panic comes out of drop");
            }
        })
    });
}
