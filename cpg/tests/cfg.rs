//! The cfg handle against the shared single-node daemon: the local node id, the local
//! node's status and addresses, the answers for nodes the daemon does not know, the
//! rules of tracking and answering, small stacks, log reopening, and a config reload
//! seen through cmap (feature `cmap`). Shutdowns stop the daemon: they are in
//! `cfg_cluster.rs`, on clusters of their own.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use cpg::cfg::{Cfg, ShutdownReply};
use cpg::{CsError, DispatchMode, Dispatched, Error, Operation, DISPATCH_STACK};
use support::big_stack;

/// Runs `f` on a big stack inside the shared daemon's namespace.
fn on_shared<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let node = cpg_testkit::shared();
    big_stack(move || node.enter(f))
}

#[test]
fn the_local_node_its_links_and_its_addresses() {
    on_shared(|| {
        let cfg = Cfg::new().expect("connect to cfg");
        assert_eq!(cfg.local_node_id(), Ok(1));
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // 0 is the local node for addresses (as `corosync-cfgtool -a` takes it).
        assert_eq!(cfg.node_addrs(0), Ok(vec![local]));
        assert_eq!(cfg.node_addrs(1), Ok(vec![local]));
        let err = cfg.node_addrs(99).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(err.operation(), Some(Operation::CfgNodeAddrs));

        let status = cfg.node_status(1).expect("the local node's status");
        assert_eq!(status.nodeid, 1);
        assert!(status.reachable);
        assert_eq!(status.links.len(), 1, "{status:#?}");
        let link = status.link(0).expect("link 0");
        assert!(link.enabled && link.connected, "{link:?}");
        assert_eq!(
            (link.source_ip(), link.remote_ip()),
            (Some(local), Some(local))
        );
        assert!(link.mtu > 0, "{link:?}");
        // Nodes knet does not know, 0 included.
        for unknown in [0, 99] {
            assert_eq!(
                cfg.node_status(unknown),
                Err(Error::Cs {
                    op: Operation::CfgNodeStatus,
                    code: CsError::FailedOperation
                })
            );
        }
        assert_eq!(cfg.reopen_log_files(), Ok(()));
        cfg.close().unwrap();
    });
}

#[test]
fn tracking_starts_once_stops_once_and_answers_only_a_request() {
    on_shared(|| {
        let cfg = Cfg::builder()
            .on_shutdown(|request| panic!("no shutdown asked here: {request:?}"))
            .build()
            .unwrap();
        assert!(!cfg.is_tracking());
        assert_eq!(
            cfg.track_stop(),
            Err(Error::Cs {
                op: Operation::CfgTrackStop,
                code: CsError::NotExist
            })
        );
        cfg.track_start().unwrap();
        assert!(cfg.is_tracking());
        assert_eq!(
            cfg.track_start(),
            Err(Error::Cs {
                op: Operation::CfgTrackStart,
                code: CsError::Exist
            })
        );
        // No request came: no answer is sent (corosync would count it).
        assert!(!cfg.shutdown_pending());
        let refused = cfg.reply_to_shutdown(ShutdownReply::Yes).unwrap_err();
        assert_eq!(
            refused,
            Error::Cs {
                op: Operation::CfgReplyToShutdown,
                code: CsError::NotExist
            }
        );
        assert!(
            refused.to_string().contains("no shutdown request came"),
            "{refused}"
        );
        assert_eq!(
            cfg.dispatch(DispatchMode::All),
            Ok(Dispatched::NothingPending)
        );
        cfg.track_stop().unwrap();
        cfg.track_start().unwrap();
    });
}

#[test]
fn calls_with_big_frames_need_their_stack() {
    let node = cpg_testkit::shared();
    let cfg = big_stack(move || node.enter(Cfg::new)).unwrap();
    let results = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            (
                cfg.node_addrs(0),
                cfg.dispatch(DispatchMode::All),
                cfg.local_node_id(),
                cfg.node_status(1).map(|s| s.nodeid),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    // The 1 MiB frames are refused; the small ones (node status: 4 KiB) run.
    let (addrs, dispatch, local, status) = results;
    for (e, op) in [
        (addrs.map(|_| ()), Operation::CfgNodeAddrs),
        (dispatch.map(|_| ()), Operation::CfgDispatch),
    ] {
        match e {
            Err(Error::StackTooSmall {
                op: o,
                needed,
                available,
            }) => {
                assert_eq!((o, needed), (op, DISPATCH_STACK));
                assert!(available < DISPATCH_STACK);
            }
            other => panic!("{op:?}: {other:?}"),
        }
    }
    assert_eq!((local, status), (Ok(1), Ok(1)));
}

#[test]
fn a_cfg_handle_refuses_a_kill_reason_libcfg_cannot_carry() {
    on_shared(|| {
        let cfg = Cfg::new().unwrap();
        // Checked before anything is sent (node 99 does not exist either).
        assert!(matches!(
            cfg.kill_node(99, &"r".repeat(256)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            cfg.kill_node(99, "nul\0inside"),
            Err(Error::InvalidArgument(_))
        ));
    });
}

/// `corosync-cfgtool -R` through the API: the daemon reads its corosync.conf again,
/// and a cmap track sees `config.reload_in_progress` go to 1 and back to 0.
#[cfg(feature = "cmap")]
#[test]
fn a_config_reload_is_seen_by_a_cmap_track() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use cpg::cmap::{Cmap, TrackType, Value};

    on_shared(|| {
        let cmap = Cmap::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        cmap.track_key("config.reload_in_progress", TrackType::ALL, move |_, c| {
            record.lock().unwrap().push(c.new)
        })
        .unwrap();
        let name: String = cmap.get("totem.cluster_name").unwrap();
        Cfg::new().unwrap().reload_config().expect("reload");
        let deadline = Instant::now() + support::WAIT;
        loop {
            let values = seen.lock().unwrap().clone();
            if values.ends_with(&[Some(Value::U8(1)), Some(Value::U8(0))]) {
                break;
            }
            assert!(Instant::now() < deadline, "saw {values:?}");
            cmap.dispatch_timeout(Duration::from_millis(100)).unwrap();
        }
        assert_eq!(cmap.get::<u8>("config.reload_in_progress"), Ok(0));
        // The same file: nothing else changed.
        assert_eq!(cmap.get::<String>("totem.cluster_name"), Ok(name));
    });
}
