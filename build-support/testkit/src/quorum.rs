//! corosync's votequorum for the private clusters: the settings a test chooses
//! ([`Quorum`], [`QuorumDevice`]), checked before any daemon starts, and what
//! `corosync-quorumtool -s` reports back ([`QuorumStatus`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::HarnessError;

/// `quorum { provider: corosync_votequorum ... }` for a [`crate::Cluster`], set with
/// [`crate::ClusterBuilder::quorum`]. Without it (the default) a cluster has no quorum
/// provider, and corosync's quorum services answer that none exists.
///
/// Each setting is written only if set; corosync's defaults apply otherwise (expected
/// votes: the sum of the nodes' votes; every node 1 vote; the flags off, except that
/// `two_node` turns `wait_for_all` on unless it is set to off). See `votequorum(5)`.
///
/// Combinations that corosync refuses to start with, or silently overrides, are refused
/// by [`crate::ClusterBuilder::start`] with a message, so that a test never runs with
/// other settings than it asked for: `two_node` or `last_man_standing` or
/// `auto_tie_breaker` beside a device; `two_node` with `auto_tie_breaker`;
/// `auto_tie_breaker` on an odd number of votes without `wait_for_all`;
/// `last_man_standing` with a node of other than 1 vote; a device
/// without `votes` beside `expected_votes`, or with `votes` that leave
/// `expected_votes` less than 2 above them; `last_man_standing_window_ms` without
/// `last_man_standing`; votes for a node id the cluster does not have.
///
/// ```no_run
/// use cpg_testkit::{Cluster, Quorum};
///
/// let cluster = Cluster::builder()
///     .nodes(3)
///     .quorum(Quorum::votequorum().wait_for_all(true).node_votes(1, 2))
///     .start()
///     .unwrap();
/// let status = cluster.node(0).quorum_status().unwrap();
/// assert_eq!((status.expected_votes, status.total_votes), (4, 4));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Quorum {
    expected_votes: Option<u32>,
    two_node: Option<bool>,
    wait_for_all: Option<bool>,
    last_man_standing: Option<bool>,
    last_man_standing_window_ms: Option<u32>,
    auto_tie_breaker: Option<bool>,
    node_votes: BTreeMap<u32, u32>,
    device: Option<QuorumDevice>,
}

impl Quorum {
    /// `provider: corosync_votequorum` with corosync's defaults.
    pub fn votequorum() -> Self {
        Self::default()
    }

    /// `expected_votes: n`: overrides the sum of the nodes' votes.
    pub fn expected_votes(mut self, n: u32) -> Self {
        self.expected_votes = Some(n);
        self
    }

    /// `two_node: 1|0`: with two nodes, either alone keeps quorum (quorum is set to 1);
    /// turns `wait_for_all` on unless [`Quorum::wait_for_all`] says otherwise.
    pub fn two_node(mut self, on: bool) -> Self {
        self.two_node = Some(on);
        self
    }

    /// `wait_for_all: 1|0`: quorate for the first time only once all nodes have been
    /// seen together.
    pub fn wait_for_all(mut self, on: bool) -> Self {
        self.wait_for_all = Some(on);
        self
    }

    /// `last_man_standing: 1|0`: expected votes are recalculated downwards after nodes
    /// have been gone for the window ([`Quorum::last_man_standing_window_ms`], corosync's
    /// default 10 s).
    pub fn last_man_standing(mut self, on: bool) -> Self {
        self.last_man_standing = Some(on);
        self
    }

    /// `last_man_standing_window: ms`; needs [`Quorum::last_man_standing`] on.
    pub fn last_man_standing_window_ms(mut self, ms: u32) -> Self {
        self.last_man_standing_window_ms = Some(ms);
        self
    }

    /// `auto_tie_breaker: 1|0`: in an even split, the half with the lowest node id keeps
    /// quorum.
    pub fn auto_tie_breaker(mut self, on: bool) -> Self {
        self.auto_tie_breaker = Some(on);
        self
    }

    /// `quorum_votes: votes` in node `nodeid`'s `nodelist` entry (default 1).
    pub fn node_votes(mut self, nodeid: u32, votes: u32) -> Self {
        self.node_votes.insert(nodeid, votes);
        self
    }

    /// A `quorum { device { ... } }` section: what a quorum device registers against
    /// (`votequorum_qdevice_register`). Refused beside `two_node`.
    pub fn device(mut self, device: QuorumDevice) -> Self {
        self.device = Some(device);
        self
    }

    /// Node `nodeid`'s votes as configured: its [`Quorum::node_votes`], or 1.
    pub fn votes_of(&self, nodeid: u32) -> u32 {
        self.node_votes.get(&nodeid).copied().unwrap_or(1)
    }

    /// Refuses what corosync would refuse or silently change, for a cluster of `nodes`.
    pub(crate) fn check(&self, nodes: u32) -> Result<(), HarnessError> {
        let err = |what: &str| Err(HarnessError::new(format!("cpg-testkit: quorum: {what}")));
        if let Some((&id, _)) = self
            .node_votes
            .iter()
            .find(|(id, _)| !(1..=nodes).contains(*id))
        {
            return err(&format!(
                "votes for node id {id}, but the nodes are 1..={nodes}"
            ));
        }
        let on = |flag: Option<bool>| flag == Some(true);
        let two_node = on(self.two_node);
        let atb = on(self.auto_tie_breaker);
        let lms = on(self.last_man_standing);
        // two_node implies wait_for_all unless it is set off explicitly.
        let wfa = self.wait_for_all.unwrap_or(two_node);
        if self.last_man_standing_window_ms.is_some() && !lms {
            return err(
                "last_man_standing_window_ms without last_man_standing (corosync ignores it)",
            );
        }
        if two_node && atb {
            return err("two_node with auto_tie_breaker (corosync turns two_node off)");
        }
        let node_votes: u32 = (1..=nodes).map(|id| self.votes_of(id)).sum();
        if lms && node_votes != nodes {
            return err("last_man_standing with a node that has other than 1 vote (corosync turns last_man_standing off)");
        }
        if atb && node_votes % 2 == 1 && !wfa {
            return err(&format!(
                "auto_tie_breaker on {node_votes} votes (odd) needs wait_for_all (corosync \
                 turns auto_tie_breaker off, or refuses to start with last_man_standing)"
            ));
        }
        if let Some(device) = &self.device {
            device.check()?;
            for (flag, name) in [
                (two_node, "two_node"),
                (lms, "last_man_standing"),
                (atb, "auto_tie_breaker"),
            ] {
                if flag {
                    return err(&format!(
                        "a quorum device beside {name} (corosync refuses to start)"
                    ));
                }
            }
            match (self.expected_votes, device.votes) {
                (Some(_), None) => {
                    return err("a quorum device without votes beside expected_votes (corosync refuses to start)")
                }
                (Some(expected), Some(votes)) if expected < votes.saturating_add(2) => {
                    return err(&format!(
                        "expected_votes {expected} with a device of {votes} votes: corosync \
                         needs expected_votes at least device votes + 2"
                    ))
                }
                (None, None) if node_votes != nodes => {
                    return err("a quorum device without votes while not every node has 1 vote (corosync refuses to start)")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `quorum { ... }` section.
    pub(crate) fn render_section(&self) -> String {
        let mut s = String::from("quorum {\n    provider: corosync_votequorum\n");
        let flag = |on: bool| u8::from(on);
        if let Some(n) = self.expected_votes {
            let _ = writeln!(s, "    expected_votes: {n}");
        }
        for (name, value) in [
            ("two_node", self.two_node),
            ("wait_for_all", self.wait_for_all),
            ("last_man_standing", self.last_man_standing),
            ("auto_tie_breaker", self.auto_tie_breaker),
        ] {
            if let Some(on) = value {
                let _ = writeln!(s, "    {name}: {}", flag(on));
            }
        }
        if let Some(ms) = self.last_man_standing_window_ms {
            let _ = writeln!(s, "    last_man_standing_window: {ms}");
        }
        if let Some(device) = &self.device {
            let _ = writeln!(s, "    device {{\n        model: {}", device.model);
            for (name, value) in [
                ("votes", device.votes),
                ("timeout", device.timeout_ms),
                ("sync_timeout", device.sync_timeout_ms),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(s, "        {name}: {v}");
                }
            }
            s.push_str("    }\n");
        }
        s.push_str("}\n");
        s
    }

    /// The `quorum_votes` line of node `nodeid`, if set.
    pub(crate) fn node_votes_line(&self, nodeid: u32) -> Option<String> {
        self.node_votes
            .get(&nodeid)
            .map(|v| format!("        quorum_votes: {v}\n"))
    }
}

/// `quorum { device { model: NAME; votes: N; timeout: MS; sync_timeout: MS } }`, the
/// section a quorum device written with the votequorum API registers against.
/// corosync only checks that `model` is not empty; `votes` defaults to the number of
/// nodes − 1 when every node has one vote and no `expected_votes` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct QuorumDevice {
    model: String,
    votes: Option<u32>,
    timeout_ms: Option<u32>,
    sync_timeout_ms: Option<u32>,
}

impl QuorumDevice {
    /// A device section with `model: model` (letters, digits, `_`, `-`, `.`).
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            votes: None,
            timeout_ms: None,
            sync_timeout_ms: None,
        }
    }

    /// `votes: n`, the device's votes.
    pub fn votes(mut self, n: u32) -> Self {
        self.votes = Some(n);
        self
    }

    /// `timeout: ms`: how long a registered device may go without polling before its
    /// vote is dropped (corosync's default 10 s).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// `sync_timeout: ms`: the same during a membership change (default 30 s).
    pub fn sync_timeout_ms(mut self, ms: u32) -> Self {
        self.sync_timeout_ms = Some(ms);
        self
    }

    fn check(&self) -> Result<(), HarnessError> {
        let ok = !self.model.is_empty()
            && self
                .model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(HarnessError::new(format!(
                "cpg-testkit: quorum device model {:?}: use letters, digits, `_`, `-`, `.`",
                self.model
            )))
        }
    }
}

/// What `corosync-quorumtool -s` reports on one node ([`crate::Node::quorum_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuorumStatus {
    /// `Quorum provider:`, e.g. `corosync_votequorum`.
    pub provider: String,
    /// `Nodes:`, the members of this node's partition.
    pub nodes: u32,
    /// `Node ID:`.
    pub node_id: u32,
    /// `Ring ID:`, e.g. `1.10`.
    pub ring_id: String,
    /// `Quorate: Yes`.
    pub quorate: bool,
    /// `Expected votes:`.
    pub expected_votes: u32,
    /// `Highest expected:`.
    pub highest_expected: u32,
    /// `Total votes:`.
    pub total_votes: u32,
    /// `Quorum:`, the votes needed.
    pub quorum: u32,
    /// `Flags:`, e.g. `["Quorate", "WaitForAll", "LastManStanding", "AutoTieBreaker",
    /// "2Node", "Qdevice"]`.
    pub flags: Vec<String>,
    /// The membership table: node id, votes, name (with `(local)` removed), for each
    /// member (a registered device appears as node id 0, name `Qdevice`).
    pub members: Vec<QuorumMember>,
}

/// One row of `corosync-quorumtool -s`'s membership table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuorumMember {
    /// `Nodeid` (0 for a quorum device).
    pub nodeid: u32,
    /// `Votes`.
    pub votes: u32,
    /// `Name`, without ` (local)`.
    pub name: String,
}

impl QuorumStatus {
    /// Whether `Flags:` lists `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The votes of member `nodeid` in the membership table.
    pub fn votes_of(&self, nodeid: u32) -> Option<u32> {
        self.members
            .iter()
            .find(|m| m.nodeid == nodeid)
            .map(|m| m.votes)
    }

    /// Parses `corosync-quorumtool -s` output (a provider must be configured: without
    /// one the tool prints no votequorum section, and this fails).
    pub fn parse(text: &str) -> Result<QuorumStatus, String> {
        let field = |name: &str| -> Result<&str, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
                .ok_or_else(|| format!("no `{name}:` line in:\n{text}"))
        };
        let number = |name: &str| -> Result<u32, String> {
            let value = field(name)?;
            // `Quorum:           2  Activity blocked` on an inquorate node.
            let digits = value.split_whitespace().next().unwrap_or("");
            digits
                .parse()
                .map_err(|_| format!("`{name}: {value}` is not a number"))
        };
        let mut members = Vec::new();
        let mut in_table = false;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"Nodeid") {
                in_table = true;
                continue;
            }
            if !in_table || words.len() < 2 {
                continue;
            }
            let (Ok(nodeid), Ok(votes)) = (words[0].parse(), words[1].parse()) else {
                continue;
            };
            // `Nodeid Votes Qdevice Name`: quorumtool adds a column when a device is
            // configured (`A,V,NMW` and the like); the name is the last word but one
            // when `(local)` follows.
            let mut rest: Vec<&str> = words[2..].to_vec();
            if rest.last() == Some(&"(local)") {
                rest.pop();
            }
            let name = rest.last().copied().unwrap_or("").to_string();
            members.push(QuorumMember {
                nodeid,
                votes,
                name,
            });
        }
        Ok(QuorumStatus {
            provider: field("Quorum provider")?.to_string(),
            nodes: number("Nodes")?,
            node_id: number("Node ID")?,
            ring_id: field("Ring ID")?.to_string(),
            quorate: field("Quorate")? == "Yes",
            expected_votes: number("Expected votes")?,
            highest_expected: number("Highest expected")?,
            total_votes: number("Total votes")?,
            quorum: number("Quorum")?,
            flags: field("Flags")?
                .split_whitespace()
                .map(String::from)
                .collect(),
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `corosync-quorumtool -s` of corosync 3.1.7 on node 1 of a 3-node cluster whose
    /// node 1 has 2 votes, with wait_for_all.
    const QUORATE: &str = "Quorum information\n------------------\n\
        Date:             Sun Dec  6 19:38:01 2026\n\
        Quorum provider:  corosync_votequorum\n\
        Nodes:            3\n\
        Node ID:          1\n\
        Ring ID:          1.d\n\
        Quorate:          Yes\n\n\
        Votequorum information\n----------------------\n\
        Expected votes:   4\n\
        Highest expected: 4\n\
        Total votes:      4\n\
        Quorum:           3  \n\
        Flags:            Quorate WaitForAll AutoTieBreaker \n\n\
        Membership information\n----------------------\n\
        \x20   Nodeid      Votes Name\n\
        \x20        1          2 node1 (local)\n\
        \x20        2          1 node2\n\
        \x20        3          1 node3\n";

    /// The same cluster's node 3, cut off.
    const INQUORATE: &str = "Quorum information\n------------------\n\
        Date:             Sun Dec  6 19:38:04 2026\n\
        Quorum provider:  corosync_votequorum\n\
        Nodes:            1\n\
        Node ID:          3\n\
        Ring ID:          3.11\n\
        Quorate:          No\n\n\
        Votequorum information\n----------------------\n\
        Expected votes:   4\n\
        Highest expected: 4\n\
        Total votes:      1\n\
        Quorum:           3 Activity blocked\n\
        Flags:            WaitForAll AutoTieBreaker \n\n\
        Membership information\n----------------------\n\
        \x20   Nodeid      Votes Name\n\
        \x20        3          1 node3 (local)\n";

    #[test]
    fn a_quorate_node_is_read_with_its_votes_flags_and_members() {
        let s = QuorumStatus::parse(QUORATE).unwrap();
        assert_eq!(s.provider, "corosync_votequorum");
        assert_eq!((s.nodes, s.node_id, s.ring_id.as_str()), (3, 1, "1.d"));
        assert!(s.quorate);
        assert_eq!(
            (
                s.expected_votes,
                s.highest_expected,
                s.total_votes,
                s.quorum
            ),
            (4, 4, 4, 3)
        );
        assert_eq!(s.flags, ["Quorate", "WaitForAll", "AutoTieBreaker"]);
        assert!(s.has_flag("WaitForAll") && !s.has_flag("LastManStanding"));
        let members: Vec<(u32, u32, &str)> = s
            .members
            .iter()
            .map(|m| (m.nodeid, m.votes, m.name.as_str()))
            .collect();
        assert_eq!(members, [(1, 2, "node1"), (2, 1, "node2"), (3, 1, "node3")]);
        assert_eq!((s.votes_of(1), s.votes_of(4)), (Some(2), None));
    }

    #[test]
    fn an_inquorate_node_is_read_although_activity_is_blocked() {
        let s = QuorumStatus::parse(INQUORATE).unwrap();
        assert!(!s.quorate);
        assert!(!s.has_flag("Quorate"));
        assert_eq!((s.nodes, s.total_votes, s.quorum), (1, 1, 3));
        assert_eq!(s.members.len(), 1);
        assert_eq!(s.members[0].name, "node3");
    }

    #[test]
    fn a_registered_device_adds_a_column_and_a_row_of_its_own() {
        // The layout corosync-quorumtool uses when a device is registered: a
        // `Qdevice` column with the per-node device state, and the device as node 0.
        let text = QUORATE
            .replace(
                "Nodeid      Votes Name",
                "Nodeid      Votes    Qdevice Name",
            )
            .replace("2 node1 (local)", "2    A,V,NMW node1 (local)")
            .replace("1 node2\n", "1    A,V,NMW node2\n")
            .replace(
                "1 node3\n",
                "1    A,V,NMW node3\n         0          1            Qdevice\n",
            );
        let s = QuorumStatus::parse(&text).unwrap();
        let members: Vec<(u32, u32, &str)> = s
            .members
            .iter()
            .map(|m| (m.nodeid, m.votes, m.name.as_str()))
            .collect();
        assert_eq!(
            members,
            [
                (1, 2, "node1"),
                (2, 1, "node2"),
                (3, 1, "node3"),
                (0, 1, "Qdevice")
            ]
        );
    }

    #[test]
    fn output_without_a_provider_is_an_error_that_shows_it() {
        let err = QuorumStatus::parse("\n").unwrap_err();
        assert!(err.contains("Quorum provider"), "{err}");
        let truncated = QUORATE.replace("Total votes:      4\n", "");
        let err = QuorumStatus::parse(&truncated).unwrap_err();
        assert!(err.contains("Total votes"), "{err}");
    }
}
