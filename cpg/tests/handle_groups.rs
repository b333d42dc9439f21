//! Groups and their members through a [`cpg::Handle`] on a real two-node cluster
//! (shared by these tests; one handle per node, so one process can have two members in
//! a group): names (128 bytes; a name and its C-style twin), joins and leaves with pids
//! and reasons, a dropped or closed handle as a departure, a second join and a leave
//! of a group not joined refused, the local member, and the initial totem
//! configuration on request.

mod support;

use std::time::Duration;

use cpg::{CsError, Error, GroupName, Member, Operation, Reason};
use support::event::Event;
use support::peer::{joined_pair, pump_for, pump_until, Peer};
use support::{big_stack, pid, shared_cluster, unique_group, WAIT};

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
        let (a, b) = joined_pair(shared_cluster(), &group);
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
        let (a, b) = joined_pair(shared_cluster(), &group);
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
