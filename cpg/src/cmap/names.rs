//! [`NodeNames`]: the node list's names for node ids, from cmap, kept up to date.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::types::Dispatched;

use super::{Cmap, Map, TrackType, Value};

/// The prefix of the node list's keys.
const NODELIST: &str = "nodelist.node.";

/// How many batches of 64 notifications one refresh takes at most.
const REFRESH_ROUNDS: usize = 16;

/// The names of the nodes of the cluster's node list, by node id: what people read
/// where a program shows node ids (`node 2 (node2)`).
///
/// A node's name here is `nodelist.node.N.name`, or `nodelist.node.N.ring0_addr` where
/// it has none (the address `corosync-quorumtool -i` shows); entries without a `nodeid`
/// are left out. That is a label for people. The name Pacemaker gives a node (and so
/// the node name in its CIB, `crm_node -n`, attrd, ...) differs for a node without a
/// `name`: Pacemaker takes `ring0_addr` only when it is no IP address, and otherwise
/// has no name from corosync (it then names the local node by `uname -n`). For a name
/// that must agree with Pacemaker's, use [`pacemaker_name`](Self::pacemaker_name).
/// The names are read when made; a track on the `nodelist.` prefix notes every change
/// (the node list is read-only in cmap: it changes when corosync.conf is edited and
/// reloaded, `corosync-cfgtool -R`), and [`refresh`](Self::refresh) reads the list
/// again when one came. The descriptor ([`AsFd`]) becomes readable when a change waits, for programs
/// that poll.
///
/// ```no_run
/// use cpg::cmap::NodeNames;
///
/// let mut names = NodeNames::new()?;
/// println!("node {}", names.label(2)); // "node 2 (node2)", or "node 2" without a name
/// names.refresh()?; // before printing again, to follow changes
/// # Ok::<(), cpg::Error>(())
/// ```
///
/// [`refresh`](Self::refresh) dispatches: the thread needs
/// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left.
#[derive(Debug)]
pub struct NodeNames {
    cmap: Cmap,
    /// Set by the track's closure: the node list changed since it was read.
    changed: Arc<AtomicBool>,
    names: BTreeMap<u32, String>,
    /// The names Pacemaker gives the nodes.
    pacemaker: BTreeMap<u32, String>,
}

impl NodeNames {
    /// Connects to the local daemon's main map, reads the node list and tracks it.
    pub fn new() -> Result<NodeNames> {
        NodeNames::with_cmap(Cmap::new()?)
    }

    /// Reads the node list through `cmap` (a handle of the main map, which this takes
    /// over) and tracks it. Fails with [`Error::InvalidArgument`] for a handle of the
    /// stats map.
    pub fn with_cmap(cmap: Cmap) -> Result<NodeNames> {
        if cmap.map() != Map::Main {
            return Err(Error::InvalidArgument(
                "NodeNames reads the node list of the main map, not the stats map",
            ));
        }
        let changed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&changed);
        cmap.track_prefix("nodelist.", TrackType::ALL, move |_, _| {
            flag.store(true, Ordering::Relaxed);
        })?;
        let mut names = NodeNames {
            cmap,
            changed,
            names: BTreeMap::new(),
            pacemaker: BTreeMap::new(),
        };
        names.reload()?;
        Ok(names)
    }

    /// The name of node `nodeid`, if the node list has one.
    pub fn get(&self, nodeid: u32) -> Option<&str> {
        self.names.get(&nodeid).map(String::as_str)
    }

    /// The name Pacemaker gives node `nodeid` from corosync's node list
    /// (`pcmk__corosync_name`): its `name`, else its `ring0_addr` unless that is an IP
    /// address (as Pacemaker tells one: four dot-separated integers, or any `:`).
    /// `None` for a node Pacemaker names otherwise (the local node: by `uname -n`) or
    /// not at all.
    ///
    /// ```no_run
    /// use cpg::cmap::NodeNames;
    ///
    /// // node { nodeid: 3  ring0_addr: 10.0.0.3 }: no name for Pacemaker.
    /// let names = NodeNames::new()?;
    /// assert_eq!(names.get(3), Some("10.0.0.3"));
    /// assert_eq!(names.pacemaker_name(3), None);
    /// # Ok::<(), cpg::Error>(())
    /// ```
    pub fn pacemaker_name(&self, nodeid: u32) -> Option<&str> {
        self.pacemaker.get(&nodeid).map(String::as_str)
    }

    /// Node `nodeid` with its name, for printing: `2 (node2)`, or `2` without a name.
    pub fn label(&self, nodeid: u32) -> NodeLabel<'_> {
        NodeLabel {
            nodeid,
            name: self.get(nodeid),
        }
    }

    /// Every node id of the node list with its name.
    pub fn names(&self) -> &BTreeMap<u32, String> {
        &self.names
    }

    /// A lookup for displays that take one, such as
    /// [`View::display_with`](crate::group::View::display_with).
    pub fn lookup(&self) -> impl Fn(u32) -> Option<String> + '_ {
        move |nodeid| self.get(nodeid).map(str::to_string)
    }

    /// Takes the changes that came (without waiting) and reads the node list again if
    /// one did; `true` when the names changed. A lost daemon is an error (the names
    /// read last stay).
    pub fn refresh(&mut self) -> Result<bool> {
        // Bounded: a node list that changes without end is read again next time.
        for _ in 0..REFRESH_ROUNDS {
            if self.cmap.dispatch_at_most(64)? == Dispatched::NothingPending {
                break;
            }
        }
        if !self.changed.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let read = self.read().inspect_err(|_| {
            // Read again at the next refresh.
            self.changed.store(true, Ordering::Relaxed);
        })?;
        let changed = (&self.names, &self.pacemaker) != (&read.0, &read.1);
        (self.names, self.pacemaker) = read;
        Ok(changed)
    }

    /// Reads the node list again, whether or not a change was noted.
    pub fn reload(&mut self) -> Result<()> {
        (self.names, self.pacemaker) = self.read()?;
        Ok(())
    }

    /// The node list's names and Pacemaker's, read now (what [`parse_nodelist`] makes
    /// of it).
    fn read(&self) -> Result<(BTreeMap<u32, String>, BTreeMap<u32, String>)> {
        let entries = self.cmap.iter(NODELIST)?.collect::<Result<Vec<_>>>()?;
        Ok(parse_nodelist(entries))
    }

    /// The handle, for other reads.
    pub fn cmap(&self) -> &Cmap {
        &self.cmap
    }
}

/// Readable when a change of the node list waits: then [`refresh`](NodeNames::refresh).
impl AsFd for NodeNames {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.cmap.as_fd()
    }
}

impl AsRawFd for NodeNames {
    fn as_raw_fd(&self) -> RawFd {
        self.cmap.as_raw_fd()
    }
}

/// A node id with its name, from [`NodeNames::label`]: displays as `2 (node2)`, or
/// `2` when the node has no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLabel<'a> {
    /// The node id.
    pub nodeid: u32,
    /// Its name, if known.
    pub name: Option<&'a str>,
}

impl fmt::Display for NodeLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "{} ({name})", self.nodeid),
            None => write!(f, "{}", self.nodeid),
        }
    }
}

/// The names by node id of the node list's entries (`nodelist.node.N.*` keys with
/// their values): `name`, else `ring0_addr`; entries without a `nodeid` or without
/// either name are left out. Second, the names Pacemaker gives them: the same, except
/// that a `ring0_addr` that is an IP address is none.
pub(crate) fn parse_nodelist(
    entries: impl IntoIterator<Item = (String, Value)>,
) -> (BTreeMap<u32, String>, BTreeMap<u32, String>) {
    #[derive(Default)]
    struct Node {
        nodeid: Option<u32>,
        name: Option<String>,
        ring0: Option<String>,
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (key, value) in entries {
        let Some((index, field)) = key
            .strip_prefix(NODELIST)
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        let node = nodes.entry(index.to_string()).or_default();
        match field {
            "nodeid" => node.nodeid = value.as_u64().and_then(|id| u32::try_from(id).ok()),
            "name" => node.name = value.as_str().map(str::to_string),
            "ring0_addr" => node.ring0 = value.as_str().map(str::to_string),
            _ => {}
        }
    }
    let mut names = BTreeMap::new();
    let mut pacemaker = BTreeMap::new();
    for node in nodes.into_values() {
        let Some(nodeid) = node.nodeid else {
            continue;
        };
        let ring0_name = node
            .ring0
            .as_deref()
            .filter(|addr| !pacemaker_sees_an_address(addr));
        if let Some(name) = node.name.as_deref().or(ring0_name) {
            pacemaker.insert(nodeid, name.to_string());
        }
        if let Some(name) = node.name.or(node.ring0) {
            names.insert(nodeid, name);
        }
    }
    (names, pacemaker)
}

/// Whether Pacemaker takes `text` for an IP address rather than a node name: it holds
/// a `:` (IPv6), or it starts with four integers separated by dots as C's
/// `sscanf("%d.%d.%d.%d")` reads them (blanks and a sign before each integer allowed,
/// anything after the fourth).
fn pacemaker_sees_an_address(text: &str) -> bool {
    if text.contains(':') {
        return true;
    }
    let mut rest = text.as_bytes();
    for i in 0..4 {
        while let [b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c', tail @ ..] = rest {
            rest = tail;
        }
        if let [b'+' | b'-', tail @ ..] = rest {
            rest = tail;
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if i < 3 {
            match rest {
                [b'.', tail @ ..] => rest = tail,
                _ => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: Value) -> (String, Value) {
        (key.to_string(), value)
    }

    #[test]
    fn names_come_from_name_else_ring0_addr() {
        let (names, pacemaker) = parse_nodelist([
            entry("nodelist.local_node_pos", Value::U32(0)),
            entry("nodelist.node.0.name", Value::Str("alpha".into())),
            entry("nodelist.node.0.nodeid", Value::U32(1)),
            entry("nodelist.node.0.ring0_addr", Value::Str("10.0.0.1".into())),
            entry("nodelist.node.1.nodeid", Value::U32(2)),
            entry("nodelist.node.1.ring0_addr", Value::Str("10.0.0.2".into())),
            entry("nodelist.node.1.ring1_addr", Value::Str("10.1.0.2".into())),
            // No node id: left out.
            entry("nodelist.node.2.name", Value::Str("gamma".into())),
            // A node id of another integer type, no name at all: left out.
            entry("nodelist.node.3.nodeid", Value::U8(4)),
            // Two-digit entries are their own.
            entry("nodelist.node.10.nodeid", Value::U32(11)),
            entry("nodelist.node.10.name", Value::Str("kappa".into())),
        ]);
        let want: BTreeMap<u32, String> = [(1, "alpha"), (2, "10.0.0.2"), (11, "kappa")]
            .into_iter()
            .map(|(id, n)| (id, n.to_string()))
            .collect();
        assert_eq!(names, want);
        // Pacemaker: no name from an address.
        let want: BTreeMap<u32, String> = [(1, "alpha"), (11, "kappa")]
            .into_iter()
            .map(|(id, n)| (id, n.to_string()))
            .collect();
        assert_eq!(pacemaker, want);
    }

    #[test]
    fn pacemaker_takes_a_ring0_addr_for_a_name_only_when_it_is_no_address() {
        let (names, pacemaker) = parse_nodelist([
            entry("nodelist.node.0.nodeid", Value::U32(1)),
            entry(
                "nodelist.node.0.ring0_addr",
                Value::Str("node1.example".into()),
            ),
            entry("nodelist.node.1.nodeid", Value::U32(2)),
            entry("nodelist.node.1.ring0_addr", Value::Str("fd00::2".into())),
            entry("nodelist.node.2.nodeid", Value::U32(3)),
            entry(
                "nodelist.node.2.ring0_addr",
                Value::Str("192.168.1.3".into()),
            ),
            // A name wins over any address.
            entry("nodelist.node.3.nodeid", Value::U32(4)),
            entry(
                "nodelist.node.3.ring0_addr",
                Value::Str("192.168.1.4".into()),
            ),
            entry("nodelist.node.3.name", Value::Str("delta".into())),
        ]);
        assert_eq!(names.len(), 4);
        assert_eq!(
            pacemaker.into_iter().collect::<Vec<_>>(),
            [(1, "node1.example".to_string()), (4, "delta".to_string())]
        );
        for address in [
            "10.0.0.1",
            "1.2.3.4.5",
            "1.2.3.4x",
            " 1. 2.+3.-4",
            "::1",
            "host:name",
        ] {
            assert!(pacemaker_sees_an_address(address), "{address:?}");
        }
        for name in [
            "node1", "1.2.3", "1.2.3.", "1..2.3.4", "10-0-0-1", "a1.2.3.4", "1 .2.3.4",
        ] {
            assert!(!pacemaker_sees_an_address(name), "{name:?}");
        }
    }

    #[test]
    fn odd_values_are_ignored_not_trusted() {
        let (names, _) = parse_nodelist([
            entry("nodelist.node.0.nodeid", Value::Str("1".into())),
            entry("nodelist.node.0.name", Value::Str("x".into())),
            entry("nodelist.node.1.nodeid", Value::U64(1 << 40)),
            entry("nodelist.node.1.name", Value::Str("y".into())),
            entry("nodelist.node.2.nodeid", Value::U32(3)),
            entry("nodelist.node.2.name", Value::U32(5)),
            entry("nodelist.node.2.ring0_addr", Value::Str("n3".into())),
            entry("nodelist.nodeX", Value::U32(1)),
        ]);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec![(3, "n3".to_string())]
        );
    }

    #[test]
    fn labels_show_the_name_where_known() {
        assert_eq!(
            NodeLabel {
                nodeid: 2,
                name: Some("node2")
            }
            .to_string(),
            "2 (node2)"
        );
        assert_eq!(
            NodeLabel {
                nodeid: 2,
                name: None
            }
            .to_string(),
            "2"
        );
    }
}
