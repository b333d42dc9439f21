//! Group names: up to 128 arbitrary bytes, compared by length and content.

use std::fmt;
use std::hash::{Hash, Hasher};

use corosync_sys as sys;

use crate::error::{Error, Result};

/// The name of a closed process group: 1 to 128 arbitrary bytes.
///
/// libcpg compares names by length first, then bytes, so `"foo"` (3 bytes) and
/// `"foo\0"` (4 bytes) are **different groups**. C daemons (Pacemaker, dlm, pmxcfs and
/// corosync's own `testcpg`) usually count the trailing NUL of their C string. To join
/// their group, build the name with [`GroupName::c_style`]; to join a group whose name
/// is exactly the given bytes, use [`GroupName::new`].
///
/// The type has the layout of C's `struct cpg_name`, so names arriving in callbacks are
/// borrowed in place, never copied.
///
/// ```
/// use cpg::GroupName;
///
/// let rust = GroupName::new("orders")?;
/// let c = GroupName::c_style("orders")?;
/// assert_eq!(rust.as_bytes(), b"orders");
/// assert_eq!(c.as_bytes(), b"orders\0");
/// assert_ne!(rust, c);
/// assert!(GroupName::new([b'x'; 129]).is_err());
/// assert!(GroupName::new("").is_err());
/// # Ok::<(), cpg::Error>(())
/// ```
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct GroupName(sys::cpg_name);

impl GroupName {
    /// The longest name libcpg accepts, in bytes (`CPG_MAX_NAME_LENGTH`).
    pub const MAX_LEN: usize = sys::CPG_MAX_NAME_LENGTH as usize;

    /// A name of exactly these bytes (no terminator added).
    ///
    /// Fails with [`Error::NameTooLong`] above [`MAX_LEN`](Self::MAX_LEN) bytes, and
    /// with [`Error::EmptyName`] for no bytes at all: corosync (3.1.7) lets a process
    /// join the empty-named group but never removes it when its connection closes, so
    /// it stays listed for good and later joins of that group get `CS_ERR_TRY_AGAIN`
    /// forever.
    pub fn new(name: impl AsRef<[u8]>) -> Result<GroupName> {
        let bytes = name.as_ref();
        if bytes.is_empty() {
            return Err(Error::EmptyName);
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(Error::NameTooLong {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(GroupName::from_checked(bytes))
    }

    /// A name of these bytes, whose length the caller checked (at most `MAX_LEN`).
    fn from_checked(bytes: &[u8]) -> GroupName {
        let mut raw = sys::cpg_name {
            length: bytes.len() as u32,
            value: [0; sys::CPG_MAX_NAME_LENGTH as usize],
        };
        for (dst, src) in raw.value.iter_mut().zip(bytes) {
            *dst = *src as _;
        }
        GroupName(raw)
    }

    /// The C-daemon convention: these bytes followed by a NUL that is counted in the
    /// length, the way C programs pass `strlen(name) + 1`.
    ///
    /// Fails with [`Error::NameTooLong`] when the bytes plus the NUL exceed
    /// [`MAX_LEN`](Self::MAX_LEN). A name that already ends with a NUL gets another one:
    /// use [`new`](Self::new) to control every byte.
    pub fn c_style(name: impl AsRef<[u8]>) -> Result<GroupName> {
        let bytes = name.as_ref();
        if bytes.len() + 1 > Self::MAX_LEN {
            return Err(Error::NameTooLong {
                len: bytes.len() + 1,
                max: Self::MAX_LEN,
            });
        }
        let mut name = GroupName::from_checked(bytes);
        name.0.length += 1; // value[len] is already 0
        Ok(name)
    }

    /// Borrows a name libcpg handed to a callback.
    ///
    /// A length above the limit (which a correct daemon never sends) is clamped, so the
    /// view never reads past the C array.
    pub(crate) fn from_raw_ref(raw: &sys::cpg_name) -> &GroupName {
        // The invariant (length <= MAX_LEN) is checked by every reader (`as_bytes`
        // clamps), so any `cpg_name` can be viewed.
        // SAFETY: GroupName is repr(transparent) over cpg_name.
        unsafe { &*(raw as *const sys::cpg_name as *const GroupName) }
    }

    /// The raw C struct, for passing to libcpg.
    pub(crate) fn as_raw(&self) -> &sys::cpg_name {
        &self.0
    }

    /// The name's bytes, including a counted trailing NUL if there is one.
    pub fn as_bytes(&self) -> &[u8] {
        let len = (self.0.length as usize).min(Self::MAX_LEN);
        let value: &[std::ffi::c_char] = &self.0.value[..len];
        // SAFETY: c_char and u8 have the same size and alignment, and every bit
        // pattern is valid for both; the slice stays within `self`.
        unsafe { std::slice::from_raw_parts(value.as_ptr().cast::<u8>(), value.len()) }
    }

    /// Length in bytes (what libcpg compares first).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the name has zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the name ends with a counted NUL (the C-daemon convention).
    pub fn is_c_style(&self) -> bool {
        self.as_bytes().last() == Some(&0)
    }

    /// The name as text without a counted trailing NUL, if it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        let bytes = self.as_bytes();
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        std::str::from_utf8(bytes).ok()
    }
}

impl AsRef<[u8]> for GroupName {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for GroupName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for GroupName {}

impl PartialOrd for GroupName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for GroupName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl TryFrom<&str> for GroupName {
    type Error = Error;

    /// Exactly the bytes of the string, like [`GroupName::new`].
    fn try_from(s: &str) -> Result<GroupName> {
        GroupName::new(s)
    }
}

impl TryFrom<&[u8]> for GroupName {
    type Error = Error;

    /// Exactly these bytes, like [`GroupName::new`].
    fn try_from(b: &[u8]) -> Result<GroupName> {
        GroupName::new(b)
    }
}

impl std::str::FromStr for GroupName {
    type Err = Error;

    /// Exactly the bytes of the string, like [`GroupName::new`].
    fn from_str(s: &str) -> Result<GroupName> {
        GroupName::new(s)
    }
}

/// Shows the bytes as text, escaping what is not printable ASCII (`"foo\0"`).
impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_bytes().escape_ascii())
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName(\"{}\")", self.as_bytes().escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_128_bytes_are_allowed_and_129_refused() {
        let long = vec![b'n'; GroupName::MAX_LEN];
        let name = GroupName::new(&long).expect("128 bytes is the limit, allowed");
        assert_eq!(name.len(), 128);
        assert_eq!(
            GroupName::new(vec![b'n'; 129]).unwrap_err(),
            Error::NameTooLong { len: 129, max: 128 }
        );
        assert_eq!(
            GroupName::c_style(&long).unwrap_err(),
            Error::NameTooLong { len: 129, max: 128 },
            "the counted NUL makes 129"
        );
        assert_eq!(GroupName::c_style(&long[..127]).unwrap().len(), 128);
    }

    #[test]
    fn a_name_and_its_c_style_twin_differ_by_the_counted_nul() {
        let plain = GroupName::new("twin").unwrap();
        let c_style = GroupName::c_style("twin").unwrap();
        assert_eq!(c_style.as_bytes(), b"twin\0");
        assert_ne!(plain, c_style);
        assert!(c_style.is_c_style() && !plain.is_c_style());
        assert_eq!(c_style.to_str(), plain.to_str());
    }

    #[test]
    fn group_names_convert_print_order_and_hash_by_length() {
        let a: GroupName = "alpha".parse().unwrap();
        assert_eq!(GroupName::try_from("alpha").unwrap(), a);
        assert_eq!(GroupName::try_from(&b"alpha"[..]).unwrap(), a);
        assert_eq!(a.to_str(), Some("alpha"));
        assert_eq!(GroupName::new([0xff, 0x00]).unwrap().to_str(), None);
        assert_eq!(GroupName::c_style("x").unwrap().to_string(), "x\\x00");
        assert_eq!(
            format!("{:?}", GroupName::new("a\"b").unwrap()),
            "GroupName(\"a\\\"b\")"
        );
        assert_eq!(GroupName::new("").unwrap_err(), Error::EmptyName);
        assert_eq!(GroupName::c_style("").unwrap().as_bytes(), b"\0");
        assert!(GroupName::new("a").unwrap() < GroupName::new("b").unwrap());
        let set: std::collections::HashSet<GroupName> =
            [a, a, GroupName::c_style("alpha").unwrap()]
                .into_iter()
                .collect();
        assert_eq!(set.len(), 2, "a name and its C-style twin hash apart");
        assert_eq!(a.as_ref(), b"alpha");
    }
}
