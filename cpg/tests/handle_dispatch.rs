//! Dispatch on a real two-node cluster (shared by these tests): what each mode returns
//! with nothing pending and with events, a bounded dispatch that runs no more callbacks
//! than asked and loses nothing, a dispatch of the same handle from its own callback
//! refused, and a callback that dispatches another handle it owns.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::{DispatchMode, Dispatched, Error, Handle};
use support::peer::{pump_for, pump_until, Peer};
use support::{big_stack, shared_cluster, unique_group, WAIT};

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
