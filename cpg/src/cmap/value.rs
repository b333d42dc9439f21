//! cmap values: [`ValueType`] (the types corosync stores), [`Value`] (a value of any of
//! them, for tools) and [`CmapValue`] (the Rust types a typed get or set takes), and
//! their conversions to and from the bytes libcmap carries.

use std::fmt;

use corosync_sys as sys;

use super::CmapError;

/// The most bytes corosync stores for one value (`ICMAP_MAX_VALUE_LEN` in corosync's
/// sources, 16 KiB; measured on corosync 3.1.7: a binary value of 16,384 bytes is
/// stored, one of 16,385 refused with `CS_ERR_INVALID_PARAM`). A string counts its
/// terminating NUL, so it has at most 16,383 bytes of text.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// The type of a value in cmap (`cmap_value_types_t`). Its [`Display`](fmt::Display)
/// is the short name `corosync-cmapctl` prints and takes: `u32`, `str`, `flt`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ValueType {
    /// `int8_t` (`CMAP_VALUETYPE_INT8`).
    I8,
    /// `uint8_t` (`CMAP_VALUETYPE_UINT8`).
    U8,
    /// `int16_t` (`CMAP_VALUETYPE_INT16`).
    I16,
    /// `uint16_t` (`CMAP_VALUETYPE_UINT16`).
    U16,
    /// `int32_t` (`CMAP_VALUETYPE_INT32`).
    I32,
    /// `uint32_t` (`CMAP_VALUETYPE_UINT32`).
    U32,
    /// `int64_t` (`CMAP_VALUETYPE_INT64`).
    I64,
    /// `uint64_t` (`CMAP_VALUETYPE_UINT64`).
    U64,
    /// `float` (`CMAP_VALUETYPE_FLOAT`).
    Float,
    /// `double` (`CMAP_VALUETYPE_DOUBLE`).
    Double,
    /// A NUL-terminated string (`CMAP_VALUETYPE_STRING`).
    String,
    /// Bytes (`CMAP_VALUETYPE_BINARY`).
    Binary,
}

impl ValueType {
    /// Every type, in the order of their C values.
    pub const ALL: [ValueType; 12] = [
        ValueType::I8,
        ValueType::U8,
        ValueType::I16,
        ValueType::U16,
        ValueType::I32,
        ValueType::U32,
        ValueType::I64,
        ValueType::U64,
        ValueType::Float,
        ValueType::Double,
        ValueType::String,
        ValueType::Binary,
    ];

    /// The type of a raw `cmap_value_types_t`, or `None` for a code this crate does
    /// not know.
    pub fn from_raw(raw: u32) -> Option<ValueType> {
        Some(match raw {
            sys::CMAP_VALUETYPE_INT8 => ValueType::I8,
            sys::CMAP_VALUETYPE_UINT8 => ValueType::U8,
            sys::CMAP_VALUETYPE_INT16 => ValueType::I16,
            sys::CMAP_VALUETYPE_UINT16 => ValueType::U16,
            sys::CMAP_VALUETYPE_INT32 => ValueType::I32,
            sys::CMAP_VALUETYPE_UINT32 => ValueType::U32,
            sys::CMAP_VALUETYPE_INT64 => ValueType::I64,
            sys::CMAP_VALUETYPE_UINT64 => ValueType::U64,
            sys::CMAP_VALUETYPE_FLOAT => ValueType::Float,
            sys::CMAP_VALUETYPE_DOUBLE => ValueType::Double,
            sys::CMAP_VALUETYPE_STRING => ValueType::String,
            sys::CMAP_VALUETYPE_BINARY => ValueType::Binary,
            _ => return None,
        })
    }

    /// The raw `cmap_value_types_t`.
    pub fn to_raw(self) -> u32 {
        match self {
            ValueType::I8 => sys::CMAP_VALUETYPE_INT8,
            ValueType::U8 => sys::CMAP_VALUETYPE_UINT8,
            ValueType::I16 => sys::CMAP_VALUETYPE_INT16,
            ValueType::U16 => sys::CMAP_VALUETYPE_UINT16,
            ValueType::I32 => sys::CMAP_VALUETYPE_INT32,
            ValueType::U32 => sys::CMAP_VALUETYPE_UINT32,
            ValueType::I64 => sys::CMAP_VALUETYPE_INT64,
            ValueType::U64 => sys::CMAP_VALUETYPE_UINT64,
            ValueType::Float => sys::CMAP_VALUETYPE_FLOAT,
            ValueType::Double => sys::CMAP_VALUETYPE_DOUBLE,
            ValueType::String => sys::CMAP_VALUETYPE_STRING,
            ValueType::Binary => sys::CMAP_VALUETYPE_BINARY,
        }
    }

    /// The name `corosync-cmapctl` uses: `i8` ... `u64`, `flt`, `dbl`, `str`, `bin`.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::I8 => "i8",
            ValueType::U8 => "u8",
            ValueType::I16 => "i16",
            ValueType::U16 => "u16",
            ValueType::I32 => "i32",
            ValueType::U32 => "u32",
            ValueType::I64 => "i64",
            ValueType::U64 => "u64",
            ValueType::Float => "flt",
            ValueType::Double => "dbl",
            ValueType::String => "str",
            ValueType::Binary => "bin",
        }
    }

    /// The type of that [`name`](Self::name), as a tool reads it from its user.
    pub fn from_name(name: &str) -> Option<ValueType> {
        ValueType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The size of a value of this type, or `None` for strings and binary values.
    pub fn fixed_len(self) -> Option<usize> {
        Some(match self {
            ValueType::I8 | ValueType::U8 => 1,
            ValueType::I16 | ValueType::U16 => 2,
            ValueType::I32 | ValueType::U32 | ValueType::Float => 4,
            ValueType::I64 | ValueType::U64 | ValueType::Double => 8,
            ValueType::String | ValueType::Binary => return None,
        })
    }

    /// Whether values of this type are integers (the types
    /// [`inc`](super::Cmap::inc) and [`dec`](super::Cmap::dec) change).
    pub fn is_integer(self) -> bool {
        !matches!(
            self,
            ValueType::Float | ValueType::Double | ValueType::String | ValueType::Binary
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cmap value of any type: what a tool reads without knowing the type in advance
/// ([`Cmap::get_value`](super::Cmap::get_value), iteration, notifications).
///
/// Its [`Display`](fmt::Display) is the value as `corosync-cmapctl -b` prints it after
/// `key (type) = `: integers and strings as they are; floats and doubles as C's `%f`
/// does, with six decimals (`2.500000`, `nan`, `-inf`: use [`Debug`](fmt::Debug) or the
/// number itself for every digit); binary values with the bytes from space to `~` as
/// they are, a backslash doubled (`\\`) and every other byte as `\xNN`. (On x86
/// corosync-cmapctl prints a byte from 0x80 up through a signed `char`, as
/// `\xFFFFFF80` for 0x80; this prints `\x80`.)
///
/// ```
/// use cpg::cmap::Value;
///
/// assert_eq!(Value::U32(5).to_string(), "5");
/// assert_eq!(Value::Double(0.1).to_string(), "0.100000");
/// assert_eq!(Value::Binary(b"a\\b\x01".to_vec()).to_string(), "a\\\\b\\x01");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An `i8`.
    I8(i8),
    /// A `u8`.
    U8(u8),
    /// An `i16`.
    I16(i16),
    /// A `u16`.
    U16(u16),
    /// An `i32`.
    I32(i32),
    /// A `u32`.
    U32(u32),
    /// An `i64`.
    I64(i64),
    /// A `u64`.
    U64(u64),
    /// A `float`.
    Float(f32),
    /// A `double`.
    Double(f64),
    /// A string (without the NUL corosync stores after it).
    Str(String),
    /// Bytes.
    Binary(Vec<u8>),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::I8(_) => ValueType::I8,
            Value::U8(_) => ValueType::U8,
            Value::I16(_) => ValueType::I16,
            Value::U16(_) => ValueType::U16,
            Value::I32(_) => ValueType::I32,
            Value::U32(_) => ValueType::U32,
            Value::I64(_) => ValueType::I64,
            Value::U64(_) => ValueType::U64,
            Value::Float(_) => ValueType::Float,
            Value::Double(_) => ValueType::Double,
            Value::Str(_) => ValueType::String,
            Value::Binary(_) => ValueType::Binary,
        }
    }

    /// The value as an `i64`, if it is an integer that fits (every type but `u64`
    /// above `i64::MAX`, floats, strings and binary values).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::U8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a `u64`, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Parses `text` as a value of type `value_type`, as `corosync-cmapctl -s KEY TYPE
    /// VALUE` does; binary values take their bytes as given. `None` when the text is
    /// no value of that type.
    ///
    /// ```
    /// use cpg::cmap::{Value, ValueType};
    ///
    /// assert_eq!(Value::parse(ValueType::U16, "5405"), Some(Value::U16(5405)));
    /// assert_eq!(Value::parse(ValueType::U8, "256"), None);
    /// assert_eq!(Value::parse(ValueType::String, "n1"), Some(Value::Str("n1".into())));
    /// ```
    pub fn parse(value_type: ValueType, text: &str) -> Option<Value> {
        Some(match value_type {
            ValueType::I8 => Value::I8(text.parse().ok()?),
            ValueType::U8 => Value::U8(text.parse().ok()?),
            ValueType::I16 => Value::I16(text.parse().ok()?),
            ValueType::U16 => Value::U16(text.parse().ok()?),
            ValueType::I32 => Value::I32(text.parse().ok()?),
            ValueType::U32 => Value::U32(text.parse().ok()?),
            ValueType::I64 => Value::I64(text.parse().ok()?),
            ValueType::U64 => Value::U64(text.parse().ok()?),
            ValueType::Float => Value::Float(text.parse().ok()?),
            ValueType::Double => Value::Double(text.parse().ok()?),
            ValueType::String => Value::Str(text.to_string()),
            ValueType::Binary => Value::Binary(text.as_bytes().to_vec()),
        })
    }

    /// Decodes the bytes libcmap returns for a value of raw type `raw_type`: numbers in
    /// the machine's byte order (corosync runs on the same machine), strings up to
    /// their NUL.
    pub(crate) fn decode(key: &str, raw_type: u32, bytes: &[u8]) -> Result<Value, CmapError> {
        let malformed = |reason| CmapError::Malformed {
            key: key.into(),
            value_type: raw_type,
            len: bytes.len(),
            reason,
        };
        let value_type = ValueType::from_raw(raw_type).ok_or_else(|| malformed("unknown type"))?;
        if let Some(len) = value_type.fixed_len() {
            if bytes.len() != len {
                return Err(malformed("the length does not fit the type"));
            }
        }
        fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
            let mut a = [0; N];
            a.copy_from_slice(&bytes[..N]);
            a
        }
        Ok(match value_type {
            ValueType::I8 => Value::I8(i8::from_ne_bytes(array(bytes))),
            ValueType::U8 => Value::U8(bytes[0]),
            ValueType::I16 => Value::I16(i16::from_ne_bytes(array(bytes))),
            ValueType::U16 => Value::U16(u16::from_ne_bytes(array(bytes))),
            ValueType::I32 => Value::I32(i32::from_ne_bytes(array(bytes))),
            ValueType::U32 => Value::U32(u32::from_ne_bytes(array(bytes))),
            ValueType::I64 => Value::I64(i64::from_ne_bytes(array(bytes))),
            ValueType::U64 => Value::U64(u64::from_ne_bytes(array(bytes))),
            ValueType::Float => Value::Float(f32::from_ne_bytes(array(bytes))),
            ValueType::Double => Value::Double(f64::from_ne_bytes(array(bytes))),
            ValueType::String => {
                let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
                Value::Str(
                    String::from_utf8(text.to_vec())
                        .map_err(|_| malformed("the string is not UTF-8"))?,
                )
            }
            ValueType::Binary => Value::Binary(bytes.to_vec()),
        })
    }

    /// The bytes `cmap_set` takes for this value: numbers in the machine's byte order,
    /// a string with its terminating NUL (corosync measures it with `strlen`). Checks
    /// the length and that a string has no NUL inside.
    pub(crate) fn encode(&self, key: &str) -> Result<Vec<u8>, CmapError> {
        let bytes = match self {
            Value::I8(v) => v.to_ne_bytes().to_vec(),
            Value::U8(v) => vec![*v],
            Value::I16(v) => v.to_ne_bytes().to_vec(),
            Value::U16(v) => v.to_ne_bytes().to_vec(),
            Value::I32(v) => v.to_ne_bytes().to_vec(),
            Value::U32(v) => v.to_ne_bytes().to_vec(),
            Value::I64(v) => v.to_ne_bytes().to_vec(),
            Value::U64(v) => v.to_ne_bytes().to_vec(),
            Value::Float(v) => v.to_ne_bytes().to_vec(),
            Value::Double(v) => v.to_ne_bytes().to_vec(),
            Value::Str(s) => {
                if s.as_bytes().contains(&0) {
                    return Err(CmapError::NulInString { key: key.into() });
                }
                let mut b = Vec::with_capacity(s.len() + 1);
                b.extend_from_slice(s.as_bytes());
                b.push(0);
                b
            }
            Value::Binary(b) => b.clone(),
        };
        if bytes.len() > MAX_VALUE_LEN {
            return Err(CmapError::ValueTooLong {
                key: key.into(),
                len: bytes.len(),
                max: MAX_VALUE_LEN,
            });
        }
        Ok(bytes)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::I8(v) => write!(f, "{v}"),
            Value::U8(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::Float(v) => write_c_float(f, f64::from(*v)),
            Value::Double(v) => write_c_float(f, *v),
            Value::Str(s) => f.write_str(s),
            Value::Binary(b) => {
                for &byte in b {
                    match byte {
                        b'\\' => f.write_str("\\\\")?,
                        b' '..=b'~' => write!(f, "{}", byte as char)?,
                        _ => write!(f, "\\x{byte:02X}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// `v` as C's `printf("%f")` prints it (a `float` is passed as a `double`): six
/// decimals, `nan` or `-nan` by the sign bit, `inf` or `-inf`.
fn write_c_float(f: &mut fmt::Formatter<'_>, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str(if v.is_sign_negative() { "-nan" } else { "nan" })
    } else if v.is_infinite() {
        f.write_str(if v < 0.0 { "-inf" } else { "inf" })
    } else {
        write!(f, "{v:.6}")
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is one of cmap's value types: the integers, `f32`, `f64`,
/// `String` and `Vec<u8>`. [`Cmap::get`](super::Cmap::get) reads a key into one and
/// fails with [`CmapError::TypeMismatch`] when the key holds another type (no
/// conversion, not even between integer widths); [`Cmap::set`](super::Cmap::set)
/// stores one with its type.
pub trait CmapValue: Into<Value> + sealed::Sealed + Sized {
    /// The cmap type of this Rust type.
    const TYPE: ValueType;

    /// The value, if it has this type.
    fn from_value(value: Value) -> Option<Self>;
}

macro_rules! cmap_value {
    ($($t:ty => $variant:ident, $vt:ident;)*) => {$(
        impl sealed::Sealed for $t {}

        impl CmapValue for $t {
            const TYPE: ValueType = ValueType::$vt;

            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }

        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        }
    )*};
}

cmap_value! {
    i8 => I8, I8;
    u8 => U8, U8;
    i16 => I16, I16;
    u16 => U16, U16;
    i32 => I32, I32;
    u32 => U32, U32;
    i64 => I64, I64;
    u64 => U64, U64;
    f32 => Float, Float;
    f64 => Double, Double;
    String => Str, String;
    Vec<u8> => Binary, Binary;
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Binary(b.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_the_c_values_and_cmapctls_names() {
        for (i, t) in ValueType::ALL.into_iter().enumerate() {
            assert_eq!(t.to_raw(), i as u32 + 1, "{t:?}");
            assert_eq!(ValueType::from_raw(t.to_raw()), Some(t));
            assert_eq!(ValueType::from_name(t.name()), Some(t));
        }
        assert_eq!(ValueType::from_raw(0), None);
        assert_eq!(ValueType::from_raw(13), None);
        assert_eq!(ValueType::from_name("float"), None);
        assert_eq!(ValueType::Float.to_string(), "flt");
        assert!(ValueType::U64.is_integer() && !ValueType::Double.is_integer());
    }

    #[test]
    fn every_value_round_trips_through_its_bytes() {
        let values = [
            Value::I8(-128),
            Value::U8(255),
            Value::I16(-2),
            Value::U16(5405),
            Value::I32(i32::MIN),
            Value::U32(0xdead_beef),
            Value::I64(-1),
            Value::U64(u64::MAX),
            Value::Float(1.5),
            Value::Double(-2.25),
            Value::Str("node1".into()),
            Value::Str(String::new()),
            Value::Binary(vec![0, 1, 0xff]),
            Value::Binary(Vec::new()),
        ];
        for v in values {
            let bytes = v.encode("a.key").unwrap();
            if let Some(len) = v.value_type().fixed_len() {
                assert_eq!(bytes.len(), len, "{v:?}");
            }
            let back = Value::decode("a.key", v.value_type().to_raw(), &bytes).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn strings_carry_their_nul_and_stop_at_the_first_one() {
        assert_eq!(Value::from("ab").encode("k.k").unwrap(), b"ab\0");
        // What corosync returns: the text and its NUL.
        let raw = sys::CMAP_VALUETYPE_STRING;
        assert_eq!(
            Value::decode("k.k", raw, b"ab\0").unwrap(),
            Value::Str("ab".into())
        );
        assert_eq!(
            Value::decode("k.k", raw, b"ab").unwrap(),
            Value::Str("ab".into())
        );
        assert_eq!(
            Value::from("a\0b").encode("k.k"),
            Err(CmapError::NulInString { key: "k.k".into() })
        );
        assert!(matches!(
            Value::decode("k.k", raw, b"\xff\0"),
            Err(CmapError::Malformed {
                reason: "the string is not UTF-8",
                ..
            })
        ));
    }

    #[test]
    fn lengths_are_checked_both_ways() {
        let limit = Value::Binary(vec![7; MAX_VALUE_LEN]);
        assert_eq!(limit.encode("k.k").unwrap().len(), 16384);
        let over = Value::Binary(vec![7; MAX_VALUE_LEN + 1]);
        assert_eq!(
            over.encode("k.k"),
            Err(CmapError::ValueTooLong {
                key: "k.k".into(),
                len: 16385,
                max: 16384
            })
        );
        // The NUL counts.
        assert!(Value::Str("s".repeat(MAX_VALUE_LEN - 1))
            .encode("k.k")
            .is_ok());
        assert!(Value::Str("s".repeat(MAX_VALUE_LEN)).encode("k.k").is_err());
        let short = Value::decode("k.k", sys::CMAP_VALUETYPE_UINT32, &[1, 2]);
        assert!(matches!(
            short,
            Err(CmapError::Malformed {
                len: 2,
                value_type: 6,
                ..
            })
        ));
        assert!(matches!(
            Value::decode("k.k", 99, &[]),
            Err(CmapError::Malformed {
                reason: "unknown type",
                ..
            })
        ));
    }

    #[test]
    fn typed_values_accept_only_their_own_type() {
        assert_eq!(u32::from_value(Value::U32(7)), Some(7));
        assert_eq!(u32::from_value(Value::U16(7)), None);
        assert_eq!(i64::from_value(Value::U64(7)), None);
        assert_eq!(
            String::from_value(Value::Str("x".into())),
            Some("x".to_string())
        );
        assert_eq!(Vec::<u8>::from_value(Value::Str("x".into())), None);
        assert_eq!(<f64 as CmapValue>::TYPE, ValueType::Double);
        assert_eq!(<Vec<u8> as CmapValue>::TYPE, ValueType::Binary);
        assert_eq!(Value::from(&b"ab"[..]), Value::Binary(b"ab".to_vec()));
    }

    #[test]
    fn values_print_and_parse_like_cmapctl() {
        assert_eq!(Value::U32(5).to_string(), "5");
        assert_eq!(Value::I8(-5).to_string(), "-5");
        assert_eq!(Value::Str("a b".into()).to_string(), "a b");
        assert_eq!(
            Value::Binary(b"ab\x01\xff".to_vec()).to_string(),
            "ab\\x01\\xFF"
        );
        // A backslash is doubled, so that `\x41` in the output is always one byte.
        assert_eq!(
            Value::Binary(b"\\x41 ~\x7f\x1f".to_vec()).to_string(),
            "\\\\x41 ~\\x7F\\x1F"
        );
        assert_eq!(Value::Binary(Vec::new()).to_string(), "");
        // Floats as C's %f.
        assert_eq!(Value::Float(2.5).to_string(), "2.500000");
        assert_eq!(Value::Float(0.1).to_string(), "0.100000");
        assert_eq!(Value::Double(-2.25).to_string(), "-2.250000");
        assert_eq!(
            Value::Double(1e20).to_string(),
            "100000000000000000000.000000"
        );
        assert_eq!(Value::Double(1e-7).to_string(), "0.000000");
        assert_eq!(Value::Double(-0.0).to_string(), "-0.000000");
        assert_eq!(Value::Double(f64::NAN).to_string(), "nan");
        assert_eq!(Value::Double(-f64::NAN).to_string(), "-nan");
        assert_eq!(Value::Float(f32::INFINITY).to_string(), "inf");
        assert_eq!(Value::Double(f64::NEG_INFINITY).to_string(), "-inf");
        assert_eq!(Value::parse(ValueType::I64, "-5"), Some(Value::I64(-5)));
        assert_eq!(
            Value::parse(ValueType::Double, "2.25"),
            Some(Value::Double(2.25))
        );
        assert_eq!(Value::parse(ValueType::U32, "x"), None);
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U16(3).as_u64(), Some(3));
        assert_eq!(Value::I8(-1).as_u64(), None);
        assert_eq!(Value::Str("s".into()).as_str(), Some("s"));
    }
}
