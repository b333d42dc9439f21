//! Key names and prefixes, checked before they reach libcmap.
//!
//! libcmap copies a key name into a fixed 256-byte field of its request with
//! `memcpy(.., strlen(key))` and no bound: a longer name would write past the request
//! on libcmap's stack. corosync takes names of [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes
//! made of `a-z A-Z 0-9 . _ - / :` (any other name gets `CS_ERR_NAME_TOO_LONG` when a
//! key is created, and can never exist). So every name is checked here, and a prefix
//! (of an iteration or a track) the same way, except that it may be shorter.

use std::ffi::CString;

use corosync_sys as sys;

use super::CmapError;

/// The shortest key name corosync accepts (`CMAP_KEYNAME_MINLEN`).
pub const MIN_KEY_LEN: usize = sys::CMAP_KEYNAME_MINLEN as usize;

/// The longest key name corosync accepts (`CMAP_KEYNAME_MAXLEN`).
pub const MAX_KEY_LEN: usize = sys::CMAP_KEYNAME_MAXLEN as usize;

/// How much of a rejected name an error repeats.
const SHOWN: usize = 64;

/// Whether corosync accepts `c` in a key name.
fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/' | b':')
}

fn invalid(key: &str, reason: &'static str) -> CmapError {
    let shown = if key.len() > SHOWN {
        let mut end = SHOWN;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &key[..end])
    } else {
        key.to_string()
    };
    CmapError::InvalidKey {
        key: shown.into_boxed_str(),
        reason,
    }
}

fn check_chars(key: &str) -> Result<(), CmapError> {
    if key.bytes().all(valid_char) {
        Ok(())
    } else {
        Err(invalid(
            key,
            "only letters, digits and . _ - / : are allowed (no NUL, space or other byte)",
        ))
    }
}

/// Checks a key name: [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes of `a-z A-Z 0-9 . _ -
/// / :`, what corosync accepts for a key it creates (and so for every key that can
/// exist).
///
/// ```
/// use cpg::cmap::check_key;
///
/// assert!(check_key("totem.cluster_name").is_ok());
/// assert!(check_key("ab").is_err()); // too short
/// assert!(check_key("a key").is_err()); // a space
/// assert!(check_key(&"k".repeat(256)).is_err()); // too long
/// ```
pub fn check_key(key: &str) -> Result<(), CmapError> {
    if key.len() < MIN_KEY_LEN {
        return Err(invalid(key, "shorter than 3 bytes"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(key, "longer than 255 bytes"));
    }
    check_chars(key)
}

/// Checks a prefix: like a key name, but any length up to [`MAX_KEY_LEN`] (the empty
/// prefix matches every key).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), CmapError> {
    if prefix.len() > MAX_KEY_LEN {
        return Err(invalid(prefix, "longer than 255 bytes"));
    }
    check_chars(prefix)
}

/// A checked key name as the C string libcmap takes.
pub(crate) fn key_cstring(key: &str) -> Result<CString, CmapError> {
    check_key(key)?;
    Ok(to_cstring(key))
}

/// A checked prefix as the C string libcmap takes.
pub(crate) fn prefix_cstring(prefix: &str) -> Result<CString, CmapError> {
    check_prefix(prefix)?;
    Ok(to_cstring(prefix))
}

fn to_cstring(checked: &str) -> CString {
    // The checks above allow no NUL byte.
    CString::new(checked).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: &str) -> &'static str {
        match check_key(key) {
            Err(CmapError::InvalidKey { reason, .. }) => reason,
            other => panic!("{key:?}: {other:?}"),
        }
    }

    #[test]
    fn keys_have_corosyncs_lengths() {
        assert_eq!((MIN_KEY_LEN, MAX_KEY_LEN), (3, 255));
        assert!(check_key("abc").is_ok());
        assert!(check_key(&"a".repeat(255)).is_ok());
        assert_eq!(reason("ab"), "shorter than 3 bytes");
        assert_eq!(reason(""), "shorter than 3 bytes");
        assert_eq!(reason(&"a".repeat(256)), "longer than 255 bytes");
    }

    #[test]
    fn keys_have_corosyncs_characters() {
        for ok in [
            "nodelist.node.0.ring0_addr",
            "runtime.connections.corosync-cmapctl:123:0x55d1",
            "a/b-c_d.e:F9",
        ] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["a b c", "abc\0", "tab\tkey", "key*", "clé.x", "a\nb"] {
            assert!(reason(bad).starts_with("only letters"), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_may_be_short_or_empty_but_not_long_or_odd() {
        for ok in ["", "a", "nodelist.", "stats.ipcs."] {
            assert!(check_prefix(ok).is_ok(), "{ok:?}");
        }
        assert!(check_prefix(&"p".repeat(256)).is_err());
        assert!(check_prefix("no space").is_err());
        assert!(check_prefix("nul\0").is_err());
        assert_eq!(prefix_cstring("").unwrap().as_bytes(), b"");
        assert_eq!(key_cstring("a.b").unwrap().as_bytes_with_nul(), b"a.b\0");
    }

    #[test]
    fn a_long_rejected_key_is_shown_shortened_on_a_char_boundary() {
        let long = format!("{}é{}", "k".repeat(63), "x".repeat(300));
        let Err(CmapError::InvalidKey { key, .. }) = check_key(&long) else {
            panic!("accepted");
        };
        assert_eq!(&*key, format!("{}...", "k".repeat(63)));
        let text = check_key("a b").unwrap_err().to_string();
        assert_eq!(
            text,
            "invalid cmap key name \"a b\": only letters, digits and . _ - / : are allowed \
             (no NUL, space or other byte)"
        );
    }
}
