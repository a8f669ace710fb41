//! Text that the server keeps as a name, an id, a label or a message.
//!
//! A NUL character is the one thing such text may not hold: PostgreSQL refuses it in a TEXT
//! column (SQLite stores it), and the strings of a process (argv, the environment an `--exec`
//! worker gives its command) end at one. Refusing it where the request is read gives both
//! backends the same 400 naming the field, instead of a storage error on one of them.
//! Event data and failure messages are exempt: they are stored as bytes on both backends and
//! may carry whatever an agent printed.

use serde_json::Value;

/// `Err` naming `field` when `value` holds a NUL character.
pub fn check_text(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        Err(format!(
            "{field} must not contain a NUL character (\\u0000)"
        ))
    } else {
        Ok(())
    }
}

/// Whether any string in `value`, an object's key or a value at any depth, holds a NUL.
pub fn json_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || json_holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_with_a_nul_is_refused_naming_the_field() {
        assert!(check_text("worker", "w1").is_ok());
        let refused = check_text("worker", "w\u{0}1").unwrap_err();
        assert!(refused.starts_with("worker "), "{refused}");
    }

    #[test]
    fn a_nul_is_found_in_keys_and_values_at_any_depth() {
        assert!(!json_holds_nul(&json!({"k": ["v", 1, null, {"x": true}]})));
        assert!(json_holds_nul(&json!({"k": ["v", {"x": "a\u{0}"}]})));
        assert!(json_holds_nul(&json!({"k\u{0}": 1})));
        // The six characters `\u0000` are text, not a NUL.
        assert!(!json_holds_nul(&json!({"k": "\\u0000"})));
    }
}
