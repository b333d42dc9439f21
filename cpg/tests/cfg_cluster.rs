//! The cfg handle on private clusters, where daemons may stop: a partitioned node's
//! link goes to "not connected" and back after the heal; a shutdown request
//! (`corosync-cfgtool -H` on the node) reaches a tracking service, which can refuse it,
//! or leave its CPG group cleanly and then let corosync stop; a forced shutdown asks
//! but does not wait for a yes; `kill_node` stops another node's corosync. One cluster
//! at a time ([`serial`]): the 2 cores are shared.

mod support;

use std::net::IpAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::cfg::{Cfg, ShutdownMode, ShutdownReply, ShutdownRequest};
use cpg::{CsError, Error, Member, Reason};
use cpg_testkit::{Cluster, Node};
use support::event::Event;
use support::peer::Peer;
use support::{serial, unique_group, WAIT};

/// A cfg handle on `node` whose shutdown requests land in the returned list.
fn tracker(node: &Node) -> (Cfg, Arc<Mutex<Vec<ShutdownRequest>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&requests);
    let cfg = node
        .enter(|| {
            Cfg::builder()
                .on_shutdown(move |r| record.lock().unwrap().push(r))
                .build()
        })
        .expect("connect to cfg");
    cfg.track_start().expect("track shutdown requests");
    (cfg, requests)
}

/// Dispatches `cfg` until `requests` holds `n` requests.
fn wait_requests(
    cfg: &Cfg,
    requests: &Mutex<Vec<ShutdownRequest>>,
    n: usize,
) -> Vec<ShutdownRequest> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = requests.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} requests after {WAIT:?}",
            got.len()
        );
        cfg.dispatch_timeout(Duration::from_millis(100))
            .expect("dispatch cfg");
    }
}

/// Runs `corosync-cfgtool ARGS` on `node` on a thread of its own (it blocks until
/// corosync decides).
fn cfgtool(node: &Node, args: &[&str]) -> JoinHandle<Output> {
    let mut cmd = node.command("corosync-cfgtool");
    cmd.args(args);
    std::thread::spawn(move || cmd.output().expect("run corosync-cfgtool"))
}

/// A node's words (`reachable` ...) and per link: number, `src->dst`, flag words.
type NodeWords = (Vec<String>, Vec<(u8, String, Vec<String>)>);

/// What `corosync-cfgtool -n` on `node` prints about node `nodeid`: the words after
/// `nodeid: N` (`reachable`, `remote`, `external`) and for each link its number, its
/// addresses and the words in the parentheses' wake (`enabled connected dynconnected`),
/// the MTU left out (knet's path MTU discovery changes it between two calls).
fn cfgtool_n_says(node: &Node, nodeid: u32) -> NodeWords {
    let out = cfgtool(node, &["-n"]).join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().skip_while(|l| {
        l.strip_prefix("nodeid: ")
            .and_then(|rest| rest.split_whitespace().next())
            != Some(&nodeid.to_string())
    });
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("node {nodeid} not in:\n{text}"));
    let words = head
        .split_whitespace()
        .skip(2)
        .map(str::to_string)
        .collect();
    let mut links = Vec::new();
    for line in lines.take_while(|l| l.trim_start().starts_with("LINK:")) {
        // "   LINK: 0 udp (10.213.0.1->10.213.0.2) enabled connected mtu: 1397"
        let rest = line.trim_start().strip_prefix("LINK: ").unwrap();
        let (number, rest) = rest.split_once(' ').unwrap();
        let (_, rest) = rest.split_once(" (").unwrap();
        let (addrs, flags) = rest.split_once(") ").unwrap();
        let flags = flags.split(" mtu:").next().unwrap();
        links.push((
            number.parse().unwrap(),
            addrs.to_string(),
            flags.split_whitespace().map(str::to_string).collect(),
        ));
    }
    (words, links)
}

/// The same facts from a [`cpg::cfg::NodeStatus`].
fn what_cfgtool_n_would_say(status: &cpg::cfg::NodeStatus) -> NodeWords {
    let pick = |pairs: &[(bool, &str)]| -> Vec<String> {
        pairs
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| w.to_string())
            .collect()
    };
    let words = pick(&[
        (status.reachable, "reachable"),
        (status.remote, "remote"),
        (status.external, "external"),
    ]);
    let links = status
        .links
        .iter()
        .map(|l| {
            (
                l.link,
                format!("{}->{}", l.source, l.remote),
                pick(&[
                    (l.enabled, "enabled"),
                    (l.connected, "connected"),
                    (l.dynconnected, "dynconnected"),
                ]),
            )
        })
        .collect();
    (words, links)
}

/// Sets corosync's wait for shutdown answers on `node` (milliseconds), with the tool.
fn set_shutdown_timeout(node: &Node, ms: u32) {
    let out = node
        .command("corosync-cmapctl")
        .args(["-s", "cfg.shutdown_timeout", "u32", &ms.to_string()])
        .output()
        .expect("run corosync-cmapctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `node`'s daemon has exited.
fn wait_daemon_gone(node: &Node) {
    let gone = cpg_testkit::wait_until(WAIT, Duration::from_millis(50), || {
        node.daemon_pid().is_none()
    });
    assert!(
        gone,
        "node {}'s corosync still runs\n{}",
        node.nodeid(),
        node.log_tail(20)
    );
}

/// Runs `f` on a thread with a big stack (dispatch needs one) that may borrow the
/// test's cluster, and propagates its panic.
fn on_big_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(support::BIG_STACK)
            .spawn_scoped(s, f)
            .expect("spawn a big-stack thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[test]
fn a_partitioned_nodes_link_goes_down_and_comes_back_after_the_heal() {
    let _serial = serial();
    let cluster = Cluster::start(2);
    let node1 = cluster.node(0);
    on_big_stack(|| {
        let cfg = node1.enter(Cfg::new).unwrap();
        assert_eq!(cfg.local_node_id(), Ok(1));
        let addr2 = IpAddr::V4(cluster.node(1).addr());
        assert_eq!(cfg.node_addrs(2), Ok(vec![addr2]));
        assert_eq!(cfg.node_addrs(0), Ok(vec![IpAddr::V4(node1.addr())]));
        let link = |cfg: &Cfg| {
            let status = cfg.node_status(2).expect("node 2's status");
            assert_eq!(status.nodeid, 2);
            (status.reachable, status.link(0).cloned().expect("link 0"))
        };
        let (reachable, up) = link(&cfg);
        assert!(reachable && up.enabled && up.connected, "{up:?}");
        assert!(
            !up.dynconnected,
            "a node list link is no dynamic one: {up:?}"
        );
        assert_eq!(up.source_ip(), Some(IpAddr::V4(node1.addr())));
        assert_eq!(up.remote_ip(), Some(addr2));
        // corosync-cfgtool -n says the same of node 2 and its link.
        let status = cfg.node_status(2).unwrap();
        assert_eq!(cfgtool_n_says(node1, 2), what_cfgtool_n_would_say(&status));

        cluster.partition(1);
        let deadline = Instant::now() + WAIT;
        let down = loop {
            let (reachable, l) = link(&cfg);
            if !l.connected {
                break (reachable, l);
            }
            assert!(
                Instant::now() < deadline,
                "link 0 to node 2 still connected"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!down.0, "node 2 unreachable without its only link");
        assert!(down.1.enabled, "the link stays configured: {:?}", down.1);
        assert_eq!(down.1.remote_ip(), Some(addr2));

        cluster.heal(1);
        let deadline = Instant::now() + WAIT;
        while !link(&cfg).1.connected {
            assert!(Instant::now() < deadline, "link 0 to node 2 not back");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(link(&cfg).0);
        cluster
            .wait_members(0, &[1, 2], WAIT)
            .expect("the membership merges again");
    });
}

#[test]
fn a_tracking_service_can_refuse_a_shutdown_or_leave_its_group_then_let_corosync_stop() {
    let _serial = serial();
    let cluster = Cluster::start(2);
    let (node1, node2) = (cluster.node(0), cluster.node(1));
    // Room for the clean-up on a loaded machine (5000 ms when not set).
    set_shutdown_timeout(node2, 60_000);
    let group = unique_group("cfg-shutdown");
    let watcher = Peer::threaded(node1, "watcher", &group);
    let service = Peer::threaded(node2, "service", &group);
    let both = [watcher.member(), service.member()];
    watcher.log().wait_members(&both, WAIT);
    let cluster = &cluster;
    // The peers are not Sync: the thread that dispatches cfg takes them along.
    let (watcher, service) = on_big_stack(move || {
        let (cfg, requests) = tracker(node2);

        // Refused: corosync keeps running and the tool says why.
        let tool = cfgtool(node2, &["-H"]);
        let got = wait_requests(&cfg, &requests, 1);
        assert_eq!(got[0].mode, ShutdownMode::Request);
        assert!(cfg.shutdown_pending());
        cfg.reply_to_shutdown(ShutdownReply::No).unwrap();
        assert!(!cfg.shutdown_pending());
        // corosync-cfgtool 3.1.7 exits 0 either way; it prints CS_ERR_BUSY's code.
        let out = tool.join().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Could not shutdown (error = 10)"),
            "{out:?}"
        );
        assert!(node2.daemon_pid().is_some(), "corosync still runs");
        assert_eq!(cfg.local_node_id(), Ok(2), "and answers");

        // Accepted: the service leaves its group first, then answers yes.
        let tool = cfgtool(node2, &["-H"]);
        wait_requests(&cfg, &requests, 2);
        service.leave().expect("leave");
        let gone = service.member();
        watcher
            .log()
            .wait_for("the service's clean leave", WAIT, |events| {
                events
                    .iter()
                    .find_map(|e| match e {
                        Event::Conf { left, .. } => left
                            .iter()
                            .find(|(m, _)| *m == gone)
                            .map(|(_, reason)| *reason),
                        _ => None,
                    })
                    .filter(|reason| *reason == Reason::Leave)
            });
        cfg.reply_to_shutdown(ShutdownReply::Yes).unwrap();
        let out = tool.join().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        wait_daemon_gone(node2);
        // The daemon is gone: the handle says so.
        let lost = loop {
            match cfg.dispatch_timeout(Duration::from_millis(100)) {
                Err(e) => break e,
                Ok(_) => continue,
            }
        };
        assert!(lost.is_daemon_lost(), "{lost:?}");
        cluster
            .wait_members(0, &[1], WAIT)
            .expect("node 1 sees node 2 go");
        (watcher, service)
    });
    // The watcher saw a leave, never a node going down or a process dying.
    let reasons: Vec<(Member, Reason)> = watcher
        .confchgs(&group)
        .into_iter()
        .flat_map(|e| match e {
            Event::Conf { left, .. } => left,
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(reasons, vec![(both[1], Reason::Leave)]);
    drop(service);
    drop(watcher);
}

#[test]
fn a_forced_shutdown_asks_the_trackers_but_does_not_need_their_yes() {
    let _serial = serial();
    let cluster = Cluster::start(1);
    let node = cluster.node(0);
    set_shutdown_timeout(node, 1000);
    on_big_stack(|| {
        let (cfg, requests) = tracker(node);
        // Another connection asks, from a thread of its own (it waits for the answer).
        let ask = |mode| node.enter(Cfg::new).unwrap().try_shutdown(mode);
        // A request nobody answers lapses after cfg.shutdown_timeout: corosync stays.
        let started = Instant::now();
        let lapsed = std::thread::scope(|s| {
            let t = s.spawn(|| ask(ShutdownMode::Request));
            wait_requests(&cfg, &requests, 1);
            t.join().unwrap()
        });
        assert_eq!(
            lapsed,
            Err(Error::Cs {
                op: cpg::Operation::CfgTryShutdown,
                code: CsError::Busy
            })
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert!(node.daemon_pid().is_some());
        // Forced: the tracker hears of it, does not answer, corosync stops anyway.
        let answers = AtomicUsize::new(0);
        let forced = std::thread::scope(|s| {
            let t = s.spawn(|| ask(ShutdownMode::Regardless));
            let got = wait_requests(&cfg, &requests, 2);
            answers.store(got.len(), Ordering::SeqCst);
            assert_eq!(got[1].mode, ShutdownMode::Regardless);
            assert!(!got[1].mode.can_refuse());
            t.join().unwrap()
        });
        assert_eq!(forced, Ok(()));
        wait_daemon_gone(node);
        assert_eq!(answers.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn kill_node_stops_the_named_nodes_corosync() {
    let _serial = serial();
    let cluster = Cluster::start(2);
    on_big_stack(|| {
        let cfg = cluster.node(0).enter(Cfg::new).unwrap();
        cfg.kill_node(2, "killed by the cfg_cluster test").unwrap();
        wait_daemon_gone(cluster.node(1));
        assert!(
            cluster
                .node(1)
                .log_tail(400)
                .contains("Killed by node 1 : killed by the cfg_cluster test"),
            "{}",
            cluster.node(1).log_tail(400)
        );
        cluster
            .wait_members(0, &[1], WAIT)
            .expect("node 1 sees node 2 go");
        assert!(
            cluster.node(0).daemon_pid().is_some(),
            "the killer lives on"
        );
    });
}

/// The async handle: shutdown requests come out of the stream, the answer goes back
/// through the handle, and the stream ends with the lost daemon once corosync stopped.
#[cfg(feature = "tokio")]
#[test]
fn the_async_handle_streams_shutdown_requests_and_ends_when_corosync_stops() {
    use cpg::cfg::AsyncCfg;

    let _serial = serial();
    let cluster = Cluster::start(1);
    let node = cluster.node(0);
    set_shutdown_timeout(node, 60_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    async fn next(cfg: &mut AsyncCfg) -> Option<cpg::Result<ShutdownRequest>> {
        tokio::time::timeout(WAIT, cfg.next_request())
            .await
            .expect("an item within WAIT")
    }
    runtime.block_on(async {
        let mut cfg = node.enter(AsyncCfg::new).expect("connect to cfg");
        cfg.track_start().unwrap();
        let tool = cfgtool(node, &["-H"]);
        let request = next(&mut cfg).await.expect("the stream goes on").unwrap();
        assert_eq!(request.mode, ShutdownMode::Request);
        cfg.reply_to_shutdown(ShutdownReply::No).unwrap();
        let out = tokio::task::spawn_blocking(move || tool.join().unwrap())
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error = 10"),
            "{out:?}"
        );
        assert_eq!(cfg.cfg().local_node_id(), Ok(1), "corosync still runs");

        let tool = cfgtool(node, &["-H"]);
        next(&mut cfg).await.expect("the stream goes on").unwrap();
        cfg.reply_to_shutdown(ShutdownReply::Yes).unwrap();
        let lost = next(&mut cfg)
            .await
            .expect("the failure comes out")
            .unwrap_err();
        assert!(lost.is_daemon_lost(), "{lost:?}");
        assert!(next(&mut cfg).await.is_none(), "then the stream ends");
        let out = tokio::task::spawn_blocking(move || tool.join().unwrap())
            .await
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    });
    wait_daemon_gone(node);
}
