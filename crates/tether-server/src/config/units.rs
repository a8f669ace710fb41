//! How durations, byte sizes and secrets are written in a config file, read from it, and shown.
//!
//! Durations are human strings (`"30s"`, `"500ms"`, `"1h 30m"`), as the flags always took
//! them. Sizes are integers of bytes or strings with a binary unit (`"16MiB"`). Both are shown
//! the way they are best read back: `"60s"`, not `"1m"`, and `"16MiB"`, not `16777216`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// A duration as a config file and `tether config show` write it: whole seconds when it is
/// some, whole milliseconds when it is some, else humantime's spelling.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(d).to_string()
    }
}

pub(super) mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Human;
        impl Visitor<'_> for Human {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v).map_err(|e| {
                    E::custom(format!(
                        "expected a duration like \"30s\" or \"500ms\", got {v:?} ({e})"
                    ))
                })
            }
        }
        d.deserialize_any(Human)
    }
}

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

const SIZE_EXPECTED: &str =
    "a size in bytes: an integer like 16777216 or a string like \"16MiB\" (B, KiB, MiB, GiB)";

/// `"16MiB"`, `"512 KiB"`, `"1024"` or `"1024B"`: binary units only, so a size never means
/// two things.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim();
    let scale = if unit.is_empty() {
        Some(1)
    } else {
        UNITS.iter().find(|(name, _)| *name == unit).map(|u| u.1)
    };
    match (number.parse::<u64>(), scale) {
        (Ok(n), Some(scale)) => n
            .checked_mul(scale)
            .ok_or_else(|| format!("{text:?} is too large")),
        _ => Err(format!("expected {SIZE_EXPECTED}, got {text:?}")),
    }
}

/// Whole GiB, MiB or KiB with their unit; anything else as a plain number of bytes.
pub fn format_size(bytes: u64) -> Option<String> {
    UNITS[..3]
        .iter()
        .find(|(_, scale)| bytes != 0 && bytes.is_multiple_of(*scale))
        .map(|(name, scale)| format!("{}{name}", bytes / scale))
}

/// The integer types sizes are kept in.
pub(super) trait Bytes: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(n: u64) -> Option<Self>;
}

impl Bytes for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n)
    }
}

impl Bytes for usize {
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(n: u64) -> Option<Self> {
        usize::try_from(n).ok()
    }
}

pub(super) mod size {
    use super::*;

    pub fn serialize<T: Bytes, S: Serializer>(n: &T, s: S) -> Result<S::Ok, S::Error> {
        match format_size(n.to_u64()) {
            Some(text) => s.serialize_str(&text),
            None => s.serialize_u64(n.to_u64()),
        }
    }

    pub fn deserialize<'de, T: Bytes, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("expected {SIZE_EXPECTED}, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse_size(v).map_err(E::custom)
            }
        }
        let n = d.deserialize_any(Size)?;
        T::from_u64(n).ok_or_else(|| de::Error::custom(format!("{n} bytes is too large here")))
    }
}

/// The database URL: written in full, shown with its password masked.
pub(super) mod secret_url {
    use super::*;
    use serde::Deserialize;

    /// `Serialize` is for showing a configuration (`tether config show`), so it never writes
    /// the password either.
    pub fn serialize<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match url {
            Some(url) => s.serialize_some(&redact_url(url)),
            None => s.serialize_none(),
        }
    }

    /// An empty URL means none, as an empty environment variable does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let url = Option::<String>::deserialize(d)?;
        Ok(url.filter(|u| !u.trim().is_empty()))
    }
}

/// What shows in place of a secret.
pub const MASK: &str = "***";

/// A connection URL with its password (in the user info, or a `password=` parameter) replaced
/// by `***`. Something that does not look like a URL is masked whole: it may be all secret.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return MASK.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The last `@` ends the user info: a password may hold `/` or `?` unencoded, and masking
    // too much is harmless where masking too little is not.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };
    let mut out = scheme.to_string();
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None => out.push_str(userinfo),
        }
    }
    match after.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={MASK}")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(after),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_masked_and_the_rest_is_kept() {
        let cases = [
            (
                "postgres://tether:s3cret@db:5432/tether",
                "postgres://tether:***@db:5432/tether",
            ),
            (
                "postgresql://u:pa/ss?w@rd@h/db?sslmode=require",
                "postgresql://u:***@h/db?sslmode=require",
            ),
            (
                "postgres://u@h/db?password=s3cret&sslmode=disable",
                "postgres://u@h/db?password=***&sslmode=disable",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("host=db password=s3cret", "***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn sizes_read_as_integers_or_with_binary_units_and_show_in_the_largest_whole_unit() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("16MB").unwrap_err().contains("\"16MB\""));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert_eq!(format_size(16 << 20).as_deref(), Some("16MiB"));
        assert_eq!(format_size(3 << 30).as_deref(), Some("3GiB"));
        assert_eq!(format_size(1000), None);
        assert_eq!(format_size(0), None);
    }

    #[test]
    fn durations_show_in_seconds_or_milliseconds_and_read_back_the_same() {
        for (d, text) in [
            (Duration::from_secs(60), "60s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
            (Duration::from_micros(1500), "1ms 500us"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(humantime::parse_duration(text), Ok(d));
        }
    }
}
