//! [`CmapError`]: what is wrong with a cmap key, value or track, found on the Rust side.

use std::fmt;

use super::ValueType;

/// A cmap key, value or track that cannot be used as asked; inside
/// [`Error::Cmap`](crate::Error::Cmap). Errors that corosync itself reports (a missing
/// key, a read-only key, a lost daemon) are [`Error::Cs`](crate::Error::Cs) instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmapError {
    /// The key holds a value of another type than the one asked for: a typed get
    /// ([`Cmap::get`](super::Cmap::get)) never converts between types.
    TypeMismatch {
        /// The key.
        key: Box<str>,
        /// The type of the value the key holds.
        stored: ValueType,
        /// The type asked for.
        asked: ValueType,
    },
    /// A key name (or prefix) corosync would refuse, or that libcmap cannot carry: see
    /// [`check_key`](super::check_key).
    InvalidKey {
        /// The key as given (for a long key, its first bytes only).
        key: Box<str>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value longer than corosync stores ([`MAX_VALUE_LEN`](super::MAX_VALUE_LEN)
    /// bytes; a string counts its terminating NUL).
    ValueTooLong {
        /// The key.
        key: Box<str>,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string value with a NUL byte inside: corosync stores strings as C strings and
    /// would cut it there.
    NulInString {
        /// The key.
        key: Box<str>,
    },
    /// The daemon answered with a value this crate cannot read: a type code it does
    /// not know, a length that does not fit the type, or a string that is not UTF-8.
    Malformed {
        /// The key.
        key: Box<str>,
        /// The raw `cmap_value_types_t` the daemon reported.
        value_type: u32,
        /// The value's length in bytes.
        len: usize,
        /// What does not fit.
        reason: &'static str,
    },
    /// [`MAX_TRACKS`](super::MAX_TRACKS) tracks are registered in this process (on
    /// all its cmap handles together); delete one first.
    TooManyTracks {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for CmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmapError::TypeMismatch { key, stored, asked } => write!(
                f,
                "cmap key {key} holds a {stored} value, not the {asked} asked for"
            ),
            CmapError::InvalidKey { key, reason } => {
                write!(f, "invalid cmap key name {key:?}: {reason}")
            }
            CmapError::ValueTooLong { key, len, max } => write!(
                f,
                "the value for cmap key {key} is {len} bytes long; corosync stores at most {max}"
            ),
            CmapError::NulInString { key } => write!(
                f,
                "the string for cmap key {key} contains a NUL byte, where corosync would cut it"
            ),
            CmapError::Malformed {
                key,
                value_type,
                len,
                reason,
            } => write!(
                f,
                "cmap key {key}: the daemon's value (type {value_type}, {len} bytes) is \
                 unreadable: {reason}"
            ),
            CmapError::TooManyTracks { max } => write!(
                f,
                "{max} cmap tracks are registered in this process, the most allowed \
                 (libcmap's table of tracks must not move while other threads use it); \
                 delete one first"
            ),
        }
    }
}

impl std::error::Error for CmapError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CsError, Error, Operation};

    #[test]
    fn a_type_mismatch_names_the_key_and_both_types() {
        let e = Error::from(CmapError::TypeMismatch {
            key: "totem.cluster_name".into(),
            stored: ValueType::String,
            asked: ValueType::U32,
        });
        assert_eq!(
            e.to_string(),
            "cmap key totem.cluster_name holds a str value, not the u32 asked for"
        );
        assert!(!e.is_not_found() && e.code().is_none());
        assert!(matches!(
            e,
            Error::Cmap(CmapError::TypeMismatch {
                stored: ValueType::String,
                ..
            })
        ));
    }

    #[test]
    fn corosyncs_answers_read_as_cmap_means_them() {
        let text = |op, code| Error::Cs { op, code }.to_string();
        let missing = Error::Cs {
            op: Operation::CmapGet,
            code: CsError::NotExist,
        };
        assert!(missing.is_not_found());
        let shown = missing.to_string();
        assert!(shown.starts_with("cmap_get failed: "), "{shown}");
        assert!(shown.ends_with(": no such key"), "{shown}");
        assert!(!shown.contains("joined"), "{shown}");
        // A read-only key: not the "refused this user" text of a refused connection.
        let ro = text(Operation::CmapSet, CsError::Access);
        assert!(ro.contains("the key is read-only"), "{ro}");
        assert!(!ro.contains("uidgid {"), "{ro}");
        let refused = text(Operation::CmapInitialize, CsError::Access);
        assert!(refused.contains("uidgid { uid: "), "{refused}");
        let inc = text(Operation::CmapInc, CsError::InvalidParam);
        assert!(inc.contains("holds no integer"), "{inc}");
        let track = text(Operation::CmapTrackDelete, CsError::NotExist);
        assert!(track.contains("no such track"), "{track}");
        assert_eq!(Operation::CmapIterNext.service(), crate::Service::Cmap);
        assert_eq!(crate::Service::Cmap.to_string(), "libcmap");
    }

    #[test]
    fn the_other_errors_say_what_to_change() {
        let long = CmapError::ValueTooLong {
            key: "a.b".into(),
            len: 20000,
            max: 16384,
        };
        assert_eq!(
            long.to_string(),
            "the value for cmap key a.b is 20000 bytes long; corosync stores at most 16384"
        );
        let tracks = CmapError::TooManyTracks { max: 32 }.to_string();
        assert!(
            tracks.starts_with("32 cmap tracks are registered"),
            "{tracks}"
        );
        let nul = CmapError::NulInString { key: "a.b".into() }.to_string();
        assert!(nul.contains("NUL"), "{nul}");
    }
}
