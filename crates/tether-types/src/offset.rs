//! Stream offsets.
//!
//! An offset names a position in a stream: `%016d_%016d`, the Durable Streams reference
//! format. Tether keeps the first field at zero and uses the second as the stream's logical
//! position: the number of bytes before this point for byte streams, the number of messages
//! before it for JSON streams. Zero padding makes lexicographic order equal numeric order,
//! as the protocol requires.
//!
//! PERSISTED AND SENT: clients store these strings and send them back, possibly years later.
//! The format must stay stable.

use std::fmt;
use std::str::FromStr;

/// A position in a stream. `Offset(0)` is the start of every stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

/// The largest position the 16-digit format can carry.
pub const MAX_POSITION: u64 = 9_999_999_999_999_999;

impl Offset {
    pub const START: Offset = Offset(0);

    pub fn position(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0000000000000000_{:016}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    #[error("offset is empty")]
    Empty,
    #[error("offset must have the form 0000000000000000_0000000000000000")]
    Malformed,
}

impl FromStr for Offset {
    type Err = OffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(OffsetError::Empty);
        }
        let bytes = s.as_bytes();
        if bytes.len() != 33 || bytes[16] != b'_' {
            return Err(OffsetError::Malformed);
        }
        let (segment, position) = (&s[..16], &s[17..]);
        if !segment.bytes().all(|b| b == b'0') || !position.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OffsetError::Malformed);
        }
        // 16 ASCII digits always fit in a u64.
        position
            .parse()
            .map(Offset)
            .map_err(|_| OffsetError::Malformed)
    }
}

/// Where a read starts, as a client names it in `?offset=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `-1` or no offset: the first retained byte.
    Start,
    /// `now`: the tail at the time the request is served.
    Now,
    /// A server-minted offset.
    At(Offset),
}

impl FromStr for ReadFrom {
    type Err = OffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "-1" => Ok(ReadFrom::Start),
            "now" => Ok(ReadFrom::Now),
            other => other.parse().map(ReadFrom::At),
        }
    }
}

/// Offsets travel in JSON as their string form.
impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// In OpenAPI documents an offset is the string it travels as, with its fixed format.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Offset {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A stream position: opaque to clients, ordered lexicographically.",
            ))
            .pattern(Some("^0{16}_[0-9]{16}$"))
            .examples(["0000000000000000_0000000000000005"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Offset {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offsets_print_in_the_reference_format() {
        assert_eq!(Offset(0).to_string(), "0000000000000000_0000000000000000");
        assert_eq!(Offset(42).to_string(), "0000000000000000_0000000000000042");
    }

    #[test]
    fn sentinels_and_garbage_are_told_apart() {
        assert_eq!("-1".parse::<ReadFrom>(), Ok(ReadFrom::Start));
        assert_eq!("now".parse::<ReadFrom>(), Ok(ReadFrom::Now));
        assert_eq!("".parse::<ReadFrom>(), Err(OffsetError::Empty));
        for bad in [
            "1,2",
            "abc",
            " 0000000000000000_0000000000000000",
            "0_1",
            "-2",
        ] {
            assert!(bad.parse::<ReadFrom>().is_err(), "{bad:?} should not parse");
        }
        // a non-zero first field is not one of ours
        assert!("0000000000000001_0000000000000000"
            .parse::<Offset>()
            .is_err());
    }

    proptest! {
        #[test]
        fn every_position_round_trips(p in 0..=MAX_POSITION) {
            let text = Offset(p).to_string();
            prop_assert_eq!(text.parse::<Offset>(), Ok(Offset(p)));
        }

        #[test]
        fn string_order_is_position_order(a in 0..=MAX_POSITION, b in 0..=MAX_POSITION) {
            prop_assert_eq!(Offset(a).to_string().cmp(&Offset(b).to_string()), a.cmp(&b));
        }

        #[test]
        fn parsing_any_string_never_panics(s in "\\PC*") {
            let _ = s.parse::<ReadFrom>();
        }

        #[test]
        fn parsing_near_misses_never_panics(s in "[0-9_]{30,36}") {
            if let Ok(o) = s.parse::<Offset>() {
                prop_assert_eq!(o.to_string(), s);
            }
        }
    }
}
