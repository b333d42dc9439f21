//! [`Track`]: what a tracking service (quorum, votequorum) reports, as a typed set of
//! `CS_TRACK_*` flags.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use corosync_sys as sys;

/// What [`track_start`](crate::quorum::Quorum::track_start) asks the daemon for: a set
/// of `CS_TRACK_*` flags, combined with `|`.
///
/// - [`Track::CURRENT`]: the current state, once, right away.
/// - [`Track::CHANGES`]: the current state right away, then every change until
///   tracking stops.
/// - [`Track::CHANGES_ONLY`]: every change until tracking stops, without the current
///   state.
///
/// ```
/// use cpg::quorum::Track;
///
/// let track = Track::CURRENT | Track::CHANGES;
/// assert!(track.contains(Track::CHANGES));
/// assert!(!track.contains(Track::CHANGES_ONLY));
/// assert_eq!(format!("{track:?}"), "Track(CURRENT | CHANGES)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Track(u32);

impl Track {
    /// The current state, once (`CS_TRACK_CURRENT`).
    pub const CURRENT: Track = Track(sys::CS_TRACK_CURRENT);
    /// The current state, then every change (`CS_TRACK_CHANGES`).
    pub const CHANGES: Track = Track(sys::CS_TRACK_CHANGES);
    /// Every change, not the current state (`CS_TRACK_CHANGES_ONLY`).
    pub const CHANGES_ONLY: Track = Track(sys::CS_TRACK_CHANGES_ONLY);

    /// No flag: what [`Default`] gives, to add flags to with `|=`.
    pub const fn empty() -> Track {
        Track(0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Track) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw `CS_TRACK_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether the daemon keeps the connection in its list of trackers (changes are
    /// reported until tracking stops).
    pub(crate) const fn follows_changes(self) -> bool {
        self.0 & (sys::CS_TRACK_CHANGES | sys::CS_TRACK_CHANGES_ONLY) != 0
    }
}

impl BitOr for Track {
    type Output = Track;

    fn bitor(self, other: Track) -> Track {
        Track(self.0 | other.0)
    }
}

impl BitOrAssign for Track {
    fn bitor_assign(&mut self, other: Track) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Track(")?;
        let names = [
            (Track::CURRENT, "CURRENT"),
            (Track::CHANGES, "CHANGES"),
            (Track::CHANGES_ONLY, "CHANGES_ONLY"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_the_c_values_and_combine() {
        assert_eq!(Track::CURRENT.bits(), 1);
        assert_eq!(Track::CHANGES.bits(), 2);
        assert_eq!(Track::CHANGES_ONLY.bits(), 4);
        let mut t = Track::default();
        assert!(t.is_empty() && t == Track::empty());
        t |= Track::CURRENT;
        t |= Track::CHANGES_ONLY;
        assert_eq!(t.bits(), 5);
        assert!(t.contains(Track::CURRENT) && t.contains(Track::CHANGES_ONLY));
        assert!(!t.contains(Track::CHANGES));
        assert!(t.contains(Track::empty()));
        assert_eq!(format!("{t:?}"), "Track(CURRENT | CHANGES_ONLY)");
        assert_eq!(format!("{:?}", Track::empty()), "Track(empty)");
    }

    #[test]
    fn only_the_change_flags_keep_the_connection_tracking() {
        assert!(!Track::CURRENT.follows_changes());
        assert!(!Track::empty().follows_changes());
        assert!(Track::CHANGES.follows_changes());
        assert!(Track::CHANGES_ONLY.follows_changes());
        assert!((Track::CURRENT | Track::CHANGES).follows_changes());
    }
}
