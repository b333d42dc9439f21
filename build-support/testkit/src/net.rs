//! Network plumbing with `ip`: namespaces, a bridge in its own namespace, and one veth
//! pair per node. Nothing is created in the host's namespace, so interface names only
//! need to be unique inside their namespace: the node side is always `eth0`, the
//! bridge side of node N's pair is `nN`, the bridge is `br0`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::{process::run, HarnessError};

/// Interface name of a node's end of its veth pair (inside the node's namespace).
pub(crate) const NODE_IF: &str = "eth0";
/// Name of the bridge (inside the bridge namespace).
const BRIDGE: &str = "br0";
/// Prefix length of the cluster subnet.
const PREFIX_LEN: u8 = 24;

/// The address of node `nodeid` in a cluster: `10.213.0.NODEID`. Only ever assigned
/// inside the cluster's own namespaces, so every cluster can use the same subnet.
pub(crate) fn node_addr(nodeid: u32) -> Ipv4Addr {
    let last = u8::try_from(nodeid).expect("at most 254 nodes");
    Ipv4Addr::new(10, 213, 0, last)
}

/// Name of the bridge-side interface of node `nodeid`'s veth pair.
pub(crate) fn bridge_port(nodeid: u32) -> String {
    format!("n{nodeid}")
}

fn ip() -> Command {
    crate::process::tool("ip")
}

/// `ip netns add NAME`, retried briefly: the very first `ip netns add` on a machine
/// sets up the `/run/netns` mount, and two of those racing can fail once.
pub(crate) fn add_netns(name: &str) -> Result<(), HarnessError> {
    let mut last = None;
    for _ in 0..3 {
        match run(ip().args(["netns", "add", name])) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.expect("tried at least once"))
}

/// `ip netns delete NAME`; a namespace that is already gone is not an error.
pub(crate) fn delete_netns(name: &str) -> Result<(), HarnessError> {
    if !std::path::Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    run(ip().args(["netns", "delete", name])).map(drop)
}

/// Brings `lo` up in `ns`.
pub(crate) fn loopback_up(ns: &str) -> Result<(), HarnessError> {
    run(ip().args(["-n", ns, "link", "set", "lo", "up"])).map(drop)
}

/// Creates the bridge in `bridge_ns` (which must exist) and brings it up.
pub(crate) fn create_bridge(bridge_ns: &str) -> Result<(), HarnessError> {
    loopback_up(bridge_ns)?;
    run(ip().args(["-n", bridge_ns, "link", "add", BRIDGE, "type", "bridge"]))?;
    run(ip().args(["-n", bridge_ns, "link", "set", BRIDGE, "up"])).map(drop)
}

/// Wires node `nodeid` (namespace `node_ns`) to the bridge: a veth pair `eth0` (node
/// side, with the node's address) / `nN` (bridge side, enslaved to the bridge).
pub(crate) fn connect_node(
    bridge_ns: &str,
    node_ns: &str,
    nodeid: u32,
) -> Result<(), HarnessError> {
    let port = bridge_port(nodeid);
    let addr = format!("{}/{PREFIX_LEN}", node_addr(nodeid));
    loopback_up(node_ns)?;
    run(ip().args([
        "-n", node_ns, "link", "add", NODE_IF, "type", "veth", "peer", "name", &port, "netns",
        bridge_ns,
    ]))?;
    run(ip().args(["-n", bridge_ns, "link", "set", &port, "master", BRIDGE]))?;
    run(ip().args(["-n", bridge_ns, "link", "set", &port, "up"]))?;
    run(ip().args(["-n", node_ns, "addr", "add", &addr, "dev", NODE_IF]))?;
    run(ip().args(["-n", node_ns, "link", "set", NODE_IF, "up"])).map(drop)
}

/// Sets interface `ifname` in `ns` up or down.
pub(crate) fn set_link(ns: &str, ifname: &str, up: bool) -> Result<(), HarnessError> {
    let state = if up { "up" } else { "down" };
    run(ip().args(["-n", ns, "link", "set", ifname, state])).map(drop)
}
