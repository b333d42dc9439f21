//! The values votequorum answers with, as types: a node's state, the info flags, a
//! node's info ([`NodeInfo`]), a quorum device's name ([`QdeviceName`]). Pure
//! conversions from the C structs, tested without a daemon.

use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use corosync_sys as sys;

use crate::error::{Error, Result};

/// A node's state as votequorum sees it (`VOTEQUORUM_NODESTATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// In this node's membership: its votes count (`VOTEQUORUM_NODESTATE_MEMBER`).
    Member,
    /// Known but gone: not in the membership, its votes do not count
    /// (`VOTEQUORUM_NODESTATE_DEAD`).
    Dead,
    /// Leaving the cluster with `allow_downscale` (`VOTEQUORUM_NODESTATE_LEAVING`).
    Leaving,
    /// A value this crate does not know.
    Unknown(u32),
}

impl NodeState {
    /// Maps the raw state.
    pub fn from_raw(raw: u32) -> NodeState {
        match raw {
            sys::VOTEQUORUM_NODESTATE_MEMBER => NodeState::Member,
            sys::VOTEQUORUM_NODESTATE_DEAD => NodeState::Dead,
            sys::VOTEQUORUM_NODESTATE_LEAVING => NodeState::Leaving,
            other => NodeState::Unknown(other),
        }
    }

    /// The raw state (`VOTEQUORUM_NODESTATE_MEMBER` 1, `DEAD` 2, `LEAVING` 3).
    pub fn to_raw(self) -> u32 {
        match self {
            NodeState::Member => sys::VOTEQUORUM_NODESTATE_MEMBER,
            NodeState::Dead => sys::VOTEQUORUM_NODESTATE_DEAD,
            NodeState::Leaving => sys::VOTEQUORUM_NODESTATE_LEAVING,
            NodeState::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeState::Member => f.write_str("member"),
            NodeState::Dead => f.write_str("dead"),
            NodeState::Leaving => f.write_str("leaving"),
            NodeState::Unknown(raw) => write!(f, "unknown state {raw}"),
        }
    }
}

/// One entry of a quorum notification's node list: a node id and its state. The
/// quorum device, while one is registered on the notifying node, is the entry with
/// node id 0 ([`is_qdevice`](Self::is_qdevice)); corosync 3.1.7 never sets its state,
/// which reads [`NodeState::Unknown(0)`](NodeState::Unknown).
///
/// Laid out as C's `votequorum_node_t`, so that the lists of notifications are
/// borrowed in place.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct NodeStatus {
    nodeid: u32,
    state: u32,
}

// The notification's array is viewed as `[NodeStatus]`: same size, alignment and
// field offsets as `votequorum_node_t`.
const _: () = {
    assert!(size_of::<NodeStatus>() == size_of::<sys::votequorum_node_t>());
    assert!(align_of::<NodeStatus>() == align_of::<sys::votequorum_node_t>());
    assert!(std::mem::offset_of!(NodeStatus, nodeid) == 0);
    assert!(std::mem::offset_of!(sys::votequorum_node_t, nodeid) == 0);
    assert!(std::mem::offset_of!(NodeStatus, state) == 4);
    assert!(std::mem::offset_of!(sys::votequorum_node_t, state) == 4);
};

impl NodeStatus {
    /// An entry (for tests and for building lists to compare with).
    pub fn new(nodeid: u32, state: NodeState) -> NodeStatus {
        NodeStatus {
            nodeid,
            state: state.to_raw(),
        }
    }

    /// The node id (0: the quorum device).
    pub fn nodeid(self) -> u32 {
        self.nodeid
    }

    /// The node's state.
    pub fn state(self) -> NodeState {
        NodeState::from_raw(self.state)
    }

    /// Whether this entry is the quorum device (`VOTEQUORUM_QDEVICE_NODEID`, 0).
    pub fn is_qdevice(self) -> bool {
        self.nodeid == sys::VOTEQUORUM_QDEVICE_NODEID
    }
}

impl fmt::Debug for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.nodeid, self.state())
    }
}

/// The flags of a [`NodeInfo`] (`VOTEQUORUM_INFO_*`), a set combined with `|`.
///
/// Most describe the answering daemon's view of the cluster (quorate, the
/// configuration's two_node, wait_for_all, ...); the quorum device flags describe the
/// asked node's device.
///
/// ```
/// use cpg::votequorum::InfoFlags;
///
/// let flags = InfoFlags::from_bits(1 | 2 | 4);
/// assert!(flags.contains(InfoFlags::QUORATE | InfoFlags::TWO_NODE));
/// assert!(!flags.contains(InfoFlags::QDEVICE_ALIVE));
/// assert_eq!(format!("{flags:?}"), "InfoFlags(TWO_NODE | QUORATE | WAIT_FOR_ALL)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InfoFlags(u32);

impl InfoFlags {
    /// The cluster is configured `two_node` (`VOTEQUORUM_INFO_TWONODE`).
    pub const TWO_NODE: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_TWONODE);
    /// The answering node's partition is quorate (`VOTEQUORUM_INFO_QUORATE`).
    pub const QUORATE: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_QUORATE);
    /// `wait_for_all` is configured (`VOTEQUORUM_INFO_WAIT_FOR_ALL`).
    pub const WAIT_FOR_ALL: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_WAIT_FOR_ALL);
    /// `last_man_standing` is configured (`VOTEQUORUM_INFO_LAST_MAN_STANDING`).
    pub const LAST_MAN_STANDING: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_LAST_MAN_STANDING);
    /// `auto_tie_breaker` is on (`VOTEQUORUM_INFO_AUTO_TIE_BREAKER`).
    pub const AUTO_TIE_BREAKER: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_AUTO_TIE_BREAKER);
    /// `allow_downscale` is configured (`VOTEQUORUM_INFO_ALLOW_DOWNSCALE`).
    pub const ALLOW_DOWNSCALE: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_ALLOW_DOWNSCALE);
    /// A quorum device is registered on the node (`VOTEQUORUM_INFO_QDEVICE_REGISTERED`).
    pub const QDEVICE_REGISTERED: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_QDEVICE_REGISTERED);
    /// The node's quorum device polled within its timeout
    /// (`VOTEQUORUM_INFO_QDEVICE_ALIVE`).
    pub const QDEVICE_ALIVE: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_QDEVICE_ALIVE);
    /// The node's quorum device casts its vote (`VOTEQUORUM_INFO_QDEVICE_CAST_VOTE`).
    pub const QDEVICE_CAST_VOTE: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_QDEVICE_CAST_VOTE);
    /// The node's quorum device allows "master wins"
    /// (`VOTEQUORUM_INFO_QDEVICE_MASTER_WINS`).
    pub const QDEVICE_MASTER_WINS: InfoFlags = InfoFlags(sys::VOTEQUORUM_INFO_QDEVICE_MASTER_WINS);

    const NAMES: [(InfoFlags, &'static str); 10] = [
        (InfoFlags::TWO_NODE, "TWO_NODE"),
        (InfoFlags::QUORATE, "QUORATE"),
        (InfoFlags::WAIT_FOR_ALL, "WAIT_FOR_ALL"),
        (InfoFlags::LAST_MAN_STANDING, "LAST_MAN_STANDING"),
        (InfoFlags::AUTO_TIE_BREAKER, "AUTO_TIE_BREAKER"),
        (InfoFlags::ALLOW_DOWNSCALE, "ALLOW_DOWNSCALE"),
        (InfoFlags::QDEVICE_REGISTERED, "QDEVICE_REGISTERED"),
        (InfoFlags::QDEVICE_ALIVE, "QDEVICE_ALIVE"),
        (InfoFlags::QDEVICE_CAST_VOTE, "QDEVICE_CAST_VOTE"),
        (InfoFlags::QDEVICE_MASTER_WINS, "QDEVICE_MASTER_WINS"),
    ];

    /// No flag.
    pub const fn empty() -> InfoFlags {
        InfoFlags(0)
    }

    /// The set of these raw bits; bits this crate does not know are kept.
    pub const fn from_bits(bits: u32) -> InfoFlags {
        InfoFlags(bits)
    }

    /// The raw `VOTEQUORUM_INFO_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: InfoFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names `corosync-quorumtool -s` prints on its `Flags:` line, in its order:
    /// `2Node`, `Quorate`, `WaitForAll`, `LastManStanding`, `AutoTieBreaker`,
    /// `AllowDownscale`, `Qdevice` (for [`QDEVICE_REGISTERED`](Self::QDEVICE_REGISTERED)).
    /// The tool leaves the other quorum device flags (alive, cast vote, master wins) to
    /// its member list, and so does this.
    ///
    /// ```
    /// use cpg::votequorum::InfoFlags;
    ///
    /// let flags = InfoFlags::QUORATE | InfoFlags::WAIT_FOR_ALL | InfoFlags::QDEVICE_ALIVE;
    /// assert_eq!(flags.quorumtool_names().collect::<Vec<_>>(), ["Quorate", "WaitForAll"]);
    /// assert_eq!(flags.quorumtool_names().collect::<Vec<_>>().join(" "), "Quorate WaitForAll");
    /// ```
    pub fn quorumtool_names(self) -> impl Iterator<Item = &'static str> {
        const TOOL: [(InfoFlags, &str); 7] = [
            (InfoFlags::TWO_NODE, "2Node"),
            (InfoFlags::QUORATE, "Quorate"),
            (InfoFlags::WAIT_FOR_ALL, "WaitForAll"),
            (InfoFlags::LAST_MAN_STANDING, "LastManStanding"),
            (InfoFlags::AUTO_TIE_BREAKER, "AutoTieBreaker"),
            (InfoFlags::ALLOW_DOWNSCALE, "AllowDownscale"),
            (InfoFlags::QDEVICE_REGISTERED, "Qdevice"),
        ];
        TOOL.into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl BitOr for InfoFlags {
    type Output = InfoFlags;

    fn bitor(self, other: InfoFlags) -> InfoFlags {
        InfoFlags(self.0 | other.0)
    }
}

impl BitOrAssign for InfoFlags {
    fn bitor_assign(&mut self, other: InfoFlags) {
        self.0 |= other.0;
    }
}

/// The names joined with `" | "` (bits this crate does not know in hex), or `none`:
/// `QUORATE | WAIT_FOR_ALL`.
impl fmt::Display for InfoFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { " | " };
            first = false;
            f.write_str(s)
        };
        for (flag, name) in InfoFlags::NAMES {
            if self.contains(flag) {
                sep(f)?;
                f.write_str(name)?;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            sep(f)?;
            write!(f, "{rest:#x}")?;
        }
        if self.0 == 0 {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InfoFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoFlags({self})")
    }
}

/// The name of a quorum device: 1 to [`MAX_LEN`](Self::MAX_LEN) bytes, none of them
/// NUL (libvotequorum passes it as a C string into a buffer of
/// `VOTEQUORUM_QDEVICE_MAX_NAME_LEN` bytes with its terminator, and refuses longer or
/// empty names with `CS_ERR_INVALID_PARAM`; checked here first, so that a name is
/// never cut at a NUL byte).
///
/// ```
/// use cpg::votequorum::QdeviceName;
///
/// let name = QdeviceName::new("tie-breaker")?;
/// assert_eq!(name.as_bytes(), b"tie-breaker");
/// assert!(QdeviceName::new("").is_err());
/// assert!(QdeviceName::new("a\0b").is_err());
/// assert!(QdeviceName::new([b'x'; QdeviceName::MAX_LEN]).is_ok());
/// assert!(QdeviceName::new([b'x'; QdeviceName::MAX_LEN + 1]).is_err());
/// # Ok::<(), cpg::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QdeviceName(CString);

impl QdeviceName {
    /// The longest name libvotequorum takes, in bytes
    /// (`VOTEQUORUM_QDEVICE_MAX_NAME_LEN` - 1: the terminator needs the last byte).
    pub const MAX_LEN: usize = sys::VOTEQUORUM_QDEVICE_MAX_NAME_LEN as usize - 1;

    /// A name of exactly these bytes; [`Error::InvalidQdeviceName`] when it is empty,
    /// longer than [`MAX_LEN`](Self::MAX_LEN) or has a NUL byte.
    pub fn new(name: impl Into<Vec<u8>>) -> Result<QdeviceName> {
        let bytes = name.into();
        let len = bytes.len();
        let invalid = |nul| Error::InvalidQdeviceName {
            len,
            max: Self::MAX_LEN,
            nul,
        };
        let name = CString::new(bytes).map_err(|_| invalid(true))?;
        if len == 0 || len > Self::MAX_LEN {
            return Err(invalid(false));
        }
        Ok(QdeviceName(name))
    }

    /// The name a daemon reports in a fixed C array: the bytes before the first NUL
    /// (all of them if there is none), `None` when empty. Read within the array only.
    pub(crate) fn from_c_array(raw: &[c_char]) -> Option<QdeviceName> {
        let bytes: Vec<u8> = raw
            .iter()
            .map(|c| *c as u8)
            .take_while(|b| *b != 0)
            .collect();
        if bytes.is_empty() {
            return None;
        }
        // No NUL among the bytes taken, so this cannot fail.
        CString::new(bytes).ok().map(QdeviceName)
    }

    /// The name's bytes (without a terminator).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The name as a C string, for libvotequorum.
    pub(crate) fn as_c_str(&self) -> &CStr {
        &self.0
    }
}

impl fmt::Debug for QdeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QdeviceName(\"{}\")", self.as_bytes().escape_ascii())
    }
}

/// The bytes, with the non-printable ones escaped (`\xNN`).
impl fmt::Display for QdeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_bytes().escape_ascii())
    }
}

impl TryFrom<&str> for QdeviceName {
    type Error = Error;

    fn try_from(name: &str) -> Result<QdeviceName> {
        QdeviceName::new(name)
    }
}

/// What votequorum says about one node (`votequorum_getinfo`): its votes and state,
/// and the cluster's votes and quorum as the answering daemon sees them. The numbers
/// `corosync-quorumtool -s` prints under "Votequorum information".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node asked about.
    pub node_id: u32,
    /// Its state.
    pub state: NodeState,
    /// Its votes ("Votes" in `corosync-quorumtool -l`).
    pub votes: u32,
    /// The expected votes it holds ("Expected votes").
    pub expected_votes: u32,
    /// The highest expected votes among the members ("Highest expected").
    pub highest_expected: u32,
    /// The votes of the members, with the quorum device's while the device of the
    /// node asked about casts its vote ("Total votes").
    pub total_votes: u32,
    /// The votes a partition needs to be quorate ("Quorum").
    pub quorum: u32,
    /// The flags ("Flags").
    pub flags: InfoFlags,
    /// The votes a quorum device has (configured or computed; 0 without a device).
    pub qdevice_votes: u32,
    /// The name of the quorum device registered in the cluster, if any.
    pub qdevice_name: Option<QdeviceName>,
}

impl NodeInfo {
    /// Converts libvotequorum's answer.
    pub(crate) fn from_raw(raw: &sys::votequorum_info) -> NodeInfo {
        NodeInfo {
            node_id: raw.node_id,
            state: NodeState::from_raw(raw.node_state),
            votes: raw.node_votes,
            expected_votes: raw.node_expected_votes,
            highest_expected: raw.highest_expected,
            total_votes: raw.total_votes,
            quorum: raw.quorum,
            flags: InfoFlags::from_bits(raw.flags),
            qdevice_votes: raw.qdevice_votes,
            qdevice_name: QdeviceName::from_c_array(&raw.qdevice_name),
        }
    }

    /// Whether the answering node's partition is quorate ([`InfoFlags::QUORATE`]).
    pub fn is_quorate(&self) -> bool {
        self.flags.contains(InfoFlags::QUORATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_map_both_ways() {
        assert_eq!(NodeState::from_raw(1), NodeState::Member);
        assert_eq!(NodeState::from_raw(2), NodeState::Dead);
        assert_eq!(NodeState::from_raw(3), NodeState::Leaving);
        assert_eq!(NodeState::from_raw(9), NodeState::Unknown(9));
        for raw in 0..5 {
            assert_eq!(NodeState::from_raw(raw).to_raw(), raw);
        }
        assert_eq!(NodeState::Dead.to_string(), "dead");
        let entry = NodeStatus::new(0, NodeState::Member);
        assert!(entry.is_qdevice());
        assert_eq!(format!("{entry:?}"), "0:member");
        assert!(!NodeStatus::new(3, NodeState::Dead).is_qdevice());
    }

    #[test]
    fn a_c_node_list_is_viewed_in_place() {
        let raw = [
            sys::votequorum_node_t {
                nodeid: 1,
                state: 1,
            },
            sys::votequorum_node_t {
                nodeid: 2,
                state: 2,
            },
        ];
        // The same cast the trampoline makes.
        // SAFETY: NodeStatus has votequorum_node_t's layout (checked at compile time).
        let view =
            unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<NodeStatus>(), raw.len()) };
        assert_eq!(
            view,
            [
                NodeStatus::new(1, NodeState::Member),
                NodeStatus::new(2, NodeState::Dead)
            ]
        );
    }

    #[test]
    fn flags_have_quorumtools_names_in_its_order() {
        let all = InfoFlags::from_bits(u32::MAX);
        assert_eq!(
            all.quorumtool_names().collect::<Vec<_>>(),
            [
                "2Node",
                "Quorate",
                "WaitForAll",
                "LastManStanding",
                "AutoTieBreaker",
                "AllowDownscale",
                "Qdevice"
            ]
        );
        assert_eq!(InfoFlags::empty().quorumtool_names().count(), 0);
        // The device's other flags are not on the tool's Flags: line.
        let device = InfoFlags::QDEVICE_ALIVE
            | InfoFlags::QDEVICE_CAST_VOTE
            | InfoFlags::QDEVICE_MASTER_WINS;
        assert_eq!(device.quorumtool_names().count(), 0);
        let two = InfoFlags::TWO_NODE | InfoFlags::QUORATE | InfoFlags::QDEVICE_REGISTERED;
        assert_eq!(
            two.quorumtool_names().collect::<Vec<_>>(),
            ["2Node", "Quorate", "Qdevice"]
        );
    }

    #[test]
    fn flags_have_the_c_values_print_their_names_and_keep_unknown_bits() {
        let all = InfoFlags::NAMES
            .iter()
            .fold(InfoFlags::empty(), |acc, (flag, _)| acc | *flag);
        assert_eq!(all.bits(), 0x3ff, "ten flags, bits 0 to 9");
        assert_eq!(InfoFlags::QDEVICE_MASTER_WINS.bits(), 512);
        let mut flags = InfoFlags::default();
        assert!(flags.is_empty());
        assert_eq!(format!("{flags:?}"), "InfoFlags(none)");
        assert_eq!(flags.to_string(), "none");
        flags |= InfoFlags::QDEVICE_REGISTERED;
        flags |= InfoFlags::from_bits(0x1000);
        assert!(flags.contains(InfoFlags::QDEVICE_REGISTERED));
        assert!(!flags.contains(InfoFlags::QDEVICE_REGISTERED | InfoFlags::QUORATE));
        assert_eq!(flags.bits(), 0x1040);
        assert_eq!(
            format!("{flags:?}"),
            "InfoFlags(QDEVICE_REGISTERED | 0x1000)"
        );
        assert_eq!(
            (InfoFlags::QUORATE | InfoFlags::TWO_NODE).to_string(),
            "TWO_NODE | QUORATE"
        );
    }

    #[test]
    fn qdevice_names_are_checked_for_length_and_nul() {
        let max = QdeviceName::MAX_LEN;
        assert_eq!(max, 254);
        assert!(QdeviceName::new(vec![b'a'; max]).is_ok());
        assert_eq!(
            QdeviceName::new(vec![b'a'; max + 1]),
            Err(Error::InvalidQdeviceName {
                len: max + 1,
                max,
                nul: false
            })
        );
        assert_eq!(
            QdeviceName::new(""),
            Err(Error::InvalidQdeviceName {
                len: 0,
                max,
                nul: false
            })
        );
        let nul = QdeviceName::new("dev\0ice").unwrap_err();
        assert_eq!(
            nul,
            Error::InvalidQdeviceName {
                len: 7,
                max,
                nul: true
            }
        );
        assert!(nul.to_string().contains("with a NUL byte"), "{nul}");
        let name = QdeviceName::try_from("dev ice\x01").unwrap();
        assert_eq!(name.as_c_str().to_bytes_with_nul(), b"dev ice\x01\0");
        assert_eq!(name.to_string(), "dev ice\\x01");
        assert_eq!(format!("{name:?}"), "QdeviceName(\"dev ice\\x01\")");
    }

    #[test]
    fn info_converts_every_field_and_reads_the_name_within_its_array() {
        let mut raw = sys::votequorum_info {
            node_id: 3,
            node_state: 1,
            node_votes: 2,
            node_expected_votes: 5,
            highest_expected: 5,
            total_votes: 4,
            quorum: 3,
            flags: sys::VOTEQUORUM_INFO_QUORATE | sys::VOTEQUORUM_INFO_QDEVICE_REGISTERED,
            qdevice_votes: 1,
            ..Default::default()
        };
        let info = NodeInfo::from_raw(&raw);
        assert_eq!(
            info,
            NodeInfo {
                node_id: 3,
                state: NodeState::Member,
                votes: 2,
                expected_votes: 5,
                highest_expected: 5,
                total_votes: 4,
                quorum: 3,
                flags: InfoFlags::QUORATE | InfoFlags::QDEVICE_REGISTERED,
                qdevice_votes: 1,
                qdevice_name: None,
            }
        );
        assert!(info.is_quorate());
        for (dst, src) in raw.qdevice_name.iter_mut().zip(b"dev\0junk") {
            *dst = *src as c_char;
        }
        assert_eq!(
            NodeInfo::from_raw(&raw).qdevice_name.unwrap().as_bytes(),
            b"dev"
        );
        // A name that fills the array without a terminator is read to the array's end.
        raw.qdevice_name = [b'x' as c_char; 255];
        let full = NodeInfo::from_raw(&raw).qdevice_name.unwrap();
        assert_eq!(full.as_bytes(), [b'x'; 255]);
    }
}
