//! JSON as Go's `encoding/json` writes it (the storage form of custom
//! resources), and reading JSON storage values.

use std::cmp::Ordering;
use std::io::Write as _;

use serde_json::{Map, Value};

use super::CodecError;

/// The self-describe CBOR tag kube-apiserver puts in front of CBOR values.
pub(crate) const CBOR_SELF_DESCRIBE: [u8; 3] = [0xd9, 0xd9, 0xf7];

/// How object keys are ordered on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOrder {
    /// Byte-wise ascending, as `encoding/json` sorts map keys.
    Sorted,
    /// structured-merge-diff's field-set order (`.` first, then `f:` by name,
    /// `k:`, `v:`, `i:` by index), which is how `fieldsV1` raw bytes are laid
    /// out. Within `k:` and `v:` the JSON text is compared byte-wise, which
    /// matches structured-merge-diff for string-valued keys.
    FieldSet,
}

/// Encodes `object` the way kube-apiserver stores a custom resource:
/// `json.NewEncoder(w).Encode(map)`: keys sorted, HTML-sensitive characters
/// escaped, a trailing newline.
pub fn encode_json_storage(object: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_go_json(&mut out, object, KeyOrder::Sorted);
    out.push(b'\n');
    out
}

/// Decodes a JSON storage value (a custom resource, or any object stored with
/// `--storage-media-type application/json`). CBOR values are refused.
pub fn decode_json_storage(bytes: &[u8]) -> Result<Value, CodecError> {
    if bytes.starts_with(&CBOR_SELF_DESCRIBE) {
        return Err(CodecError::CborNotSupported);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(CodecError::from_json_error)?;
    if !value.is_object() {
        return Err(CodecError::NotAnObject);
    }
    Ok(value)
}

fn field_set_rank(key: &str) -> (u8, &str) {
    if key == "." {
        return (0, "");
    }
    match key.split_at_checked(2) {
        Some(("f:", rest)) => (1, rest),
        Some(("k:", rest)) => (2, rest),
        Some(("v:", rest)) => (3, rest),
        Some(("i:", rest)) => (4, rest),
        _ => (5, key),
    }
}

fn field_set_cmp(left: &str, right: &str) -> Ordering {
    let (left_rank, left_rest) = field_set_rank(left);
    let (right_rank, right_rest) = field_set_rank(right);
    left_rank.cmp(&right_rank).then_with(|| {
        if left_rank == 4 {
            if let (Ok(a), Ok(b)) = (left_rest.parse::<i64>(), right_rest.parse::<i64>()) {
                return a.cmp(&b);
            }
        }
        left_rest.cmp(right_rest)
    })
}

fn sorted_entries(map: &Map<String, Value>, order: KeyOrder) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    match order {
        KeyOrder::Sorted => entries.sort_by(|a, b| a.0.cmp(b.0)),
        KeyOrder::FieldSet => entries.sort_by(|a, b| field_set_cmp(a.0, b.0)),
    }
    entries
}

/// Writes `value` compactly with `encoding/json`'s escaping and number rules.
pub(crate) fn write_go_json(out: &mut Vec<u8>, value: &Value, order: KeyOrder) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_go_json(out, item, order);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (index, (key, item)) in sorted_entries(map, order).into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_go_json(out, item, order);
            }
            out.push(b'}');
        }
    }
}

fn write_number(out: &mut Vec<u8>, number: &serde_json::Number) {
    if let Some(signed) = number.as_i64() {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{signed}");
    } else if let Some(float) = number.as_f64() {
        // Integers past int64 become float64 in Kubernetes' unstructured
        // decoding, so they are written the way Go writes a float64.
        write_go_float(out, float);
    } else {
        out.extend_from_slice(number.to_string().as_bytes());
    }
}

/// `strconv.AppendFloat(f, 'f', -1, 64)`, switching to `'e'` outside
/// [1e-6, 1e21) with the exponent cleaned up as `encoding/json` does.
fn write_go_float(out: &mut Vec<u8>, float: f64) {
    let magnitude = float.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        // Rust prints `1.5e-7` / `1e21`; Go prints `1.5e-07` -> cleaned to
        // `1.5e-7`, and `1e+21`.
        let text = format!("{float:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exponent}");
            }
            _ => out.extend_from_slice(text.as_bytes()),
        }
    } else {
        let _ = write!(out, "{float}");
    }
}

/// A JSON string with `encoding/json`'s default (HTML-safe) escaping.
pub(crate) fn write_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        let escape: Option<&[u8]> = match ch {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            _ => None,
        };
        let needs_hex = ch < ' ' || ch == '<' || ch == '>' || ch == '&';
        if escape.is_none() && !needs_hex {
            continue;
        }
        out.extend_from_slice(&bytes[start..index]);
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => {
                // `ch` is ASCII here, so its code fits in one byte.
                let code = ch as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(code >> 4)]);
                out.push(HEX[usize::from(code & 0xf)]);
            }
        }
        start = index + ch.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;
    use serde_json::json;

    fn go(value: &Value) -> String {
        String::from_utf8(encode_json_storage(value)).unwrap()
    }

    #[test]
    fn escapes_like_encoding_json() {
        let value =
            json!({"s": "<a href=\"x\">&</a>\u{2028}\u{2029}\u{1}\u{8}\u{c}\n\r\t\\é😀\u{7f}"});
        assert_eq!(
            go(&value),
            "{\"s\":\"\\u003ca href=\\\"x\\\"\\u003e\\u0026\\u003c/a\\u003e\\u2028\\u2029\\u0001\\b\\f\\n\\r\\t\\\\é😀\u{7f}\"}\n"
        );
    }

    #[test]
    fn sorts_keys_bytewise_and_formats_numbers() {
        let value = json!({"b": 1, "a": {"z": [1, -2, 1.5, 1e21, 1.5e-7, 0.000001, 2.0], "B": null}, "é": true, "Z": false});
        assert_eq!(
            go(&value),
            "{\"Z\":false,\"a\":{\"B\":null,\"z\":[1,-2,1.5,1e+21,1.5e-7,0.000001,2]},\"b\":1,\"é\":true}\n"
        );
        let big: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(go(&big), "18446744073709552000\n");
    }

    #[test]
    fn field_set_order_matches_structured_merge_diff() {
        let value: Value = serde_json::from_str(
            r#"{"f:type":{},"f:data":{"f:api_key":{},".":{}},"i:10":{},"i:9":{},"k:{\"name\":\"a\"}":{},"v:\"x\"":{}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_go_json(&mut out, &value, KeyOrder::FieldSet);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"f:data":{".":{},"f:api_key":{}},"f:type":{},"k:{\"name\":\"a\"}":{},"v:\"x\"":{},"i:9":{},"i:10":{}}"#
        );
    }

    #[test]
    fn storage_decode_refuses_cbor_and_non_objects() {
        assert!(matches!(
            decode_json_storage(&[0xd9, 0xd9, 0xf7, 0xa0]),
            Err(CodecError::CborNotSupported)
        ));
        assert!(matches!(
            decode_json_storage(b"[1]"),
            Err(CodecError::NotAnObject)
        ));
        assert!(matches!(
            decode_json_storage(b"{\"a\":"),
            Err(CodecError::InvalidJson { .. })
        ));
        assert_eq!(
            decode_json_storage(b"{\"a\":1}\n").unwrap(),
            json!({"a": 1})
        );
    }
}
