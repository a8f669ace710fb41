//! A strict reader for the query string: the protocol wants 400 for an empty or repeated
//! `offset`, which a map-based extractor would hide.

/// Decoded `key=value` pairs in order. Malformed percent escapes are kept as they are.
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pairs_are_decoded_in_order() {
        let got = pairs(Some("offset=a%2Cb&live=sse&x&offset=2"));
        assert_eq!(
            got,
            vec![
                ("offset".into(), "a,b".into()),
                ("live".into(), "sse".into()),
                ("x".into(), "".into()),
                ("offset".into(), "2".into()),
            ]
        );
        assert_eq!(
            pairs(Some("a=%zz&b=%4")),
            vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]
        );
    }

    proptest! {
        #[test]
        fn any_query_string_decodes_without_panicking(q in "\\PC*") {
            let _ = pairs(Some(&q));
        }
    }
}
