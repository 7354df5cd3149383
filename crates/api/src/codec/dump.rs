//! A schema-less view of protobuf bytes, for kinds the codec does not know (a real cluster
//! stores Deployments, Pods, ...): every field as its number, wire type and value, nested
//! messages decoded where the bytes parse as one. Used to show such objects offline
//! (`atrest get`) without ever failing on them.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::wire::{self, Reader};
use super::{decode_protobuf_envelope, CodecError};

/// Nested messages deeper than this are shown as bytes.
const MAX_DEPTH: usize = 32;

/// `runtime.Unknown` of a protobuf storage value as JSON: `apiVersion`, `kind` and a field
/// dump of `raw`.
pub fn dump_unknown(bytes: &[u8]) -> Result<Value, CodecError> {
    let envelope = decode_protobuf_envelope(bytes)?;
    Ok(json!({
        "apiVersion": envelope.api_version,
        "kind": envelope.kind,
        "raw": dump_message(envelope.raw, 0).unwrap_or_else(|_| bytes_value(envelope.raw)),
    }))
}

fn bytes_value(bytes: &[u8]) -> Value {
    json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// Fields in order, each `{"field": n, <kind>: value}`.
fn dump_message(bytes: &[u8], depth: usize) -> Result<Value, CodecError> {
    let mut reader = Reader::new(bytes, 0, "raw");
    let mut fields = Vec::new();
    while let Some(header) = reader.next_field()? {
        let mut field = Map::new();
        field.insert("field".into(), json!(header.number));
        match header.wire_type {
            wire::WIRE_VARINT => {
                field.insert("varint".into(), json!(reader.read_varint()?));
            }
            wire::WIRE_LEN => {
                let (payload, _) = reader.read_len_delimited()?;
                let nested = (depth < MAX_DEPTH && !payload.is_empty())
                    .then(|| dump_message(payload, depth + 1).ok())
                    .flatten();
                match (std::str::from_utf8(payload), nested) {
                    // Printable text is far more likely a string than a message that
                    // happens to parse.
                    (Ok(text), _) if text.chars().all(|c| !c.is_control() || c == '\n') => {
                        field.insert("string".into(), json!(text));
                    }
                    (_, Some(message)) => {
                        field.insert("message".into(), message);
                    }
                    _ => {
                        field.insert(
                            "bytes".into(),
                            json!(base64::engine::general_purpose::STANDARD.encode(payload)),
                        );
                    }
                }
            }
            wire::WIRE_FIXED64 | wire::WIRE_FIXED32 | wire::WIRE_START_GROUP => {
                field.insert("wireType".into(), json!(header.wire_type));
                reader.skip(header)?;
            }
            _ => reader.skip(header)?,
        }
        fields.push(Value::Object(field));
    }
    Ok(Value::Array(fields))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    #[test]
    fn dumps_an_unknown_kind() {
        // k8s\0 + Unknown{TypeMeta{apps/v1, Deployment}, raw: {1: {1: "web"}, 2: {1: 3}}}
        let raw: &[u8] = &[
            0x0a, 0x05, 0x0a, 0x03, b'w', b'e', b'b', 0x12, 0x02, 0x08, 0x03,
        ];
        let mut value = b"k8s\0".to_vec();
        let type_meta = [&[0x0a, 0x07][..], b"apps/v1", &[0x12, 0x0a], b"Deployment"].concat();
        value.push(0x0a);
        value.push(type_meta.len() as u8);
        value.extend_from_slice(&type_meta);
        value.push(0x12);
        value.push(raw.len() as u8);
        value.extend_from_slice(raw);
        let dumped = dump_unknown(&value).unwrap();
        assert_eq!(dumped["apiVersion"], "apps/v1");
        assert_eq!(dumped["kind"], "Deployment");
        assert_eq!(
            dumped["raw"],
            json!([
                {"field": 1, "message": [{"field": 1, "string": "web"}]},
                {"field": 2, "message": [{"field": 1, "varint": 3}]},
            ])
        );
    }

    #[test]
    fn hostile_bytes_are_errors_or_bytes_never_panics() {
        for raw in [
            &b"k8s\0\x12\x05\x0a\xff\xff"[..],
            b"k8s\0\x12\x01\x0a",
            b"k8s",
        ] {
            let _ = dump_unknown(raw);
        }
        // Deep nesting stops at the depth limit instead of recursing without bound.
        let mut nested: Vec<u8> = vec![0x08, 0x01];
        for _ in 0..200 {
            let mut outer = vec![0x0a];
            outer.extend(prost_len(nested.len()));
            outer.extend(&nested);
            nested = outer;
        }
        let mut value = b"k8s\0\x12".to_vec();
        value.extend(prost_len(nested.len()));
        value.extend(&nested);
        assert!(dump_unknown(&value).is_ok());
    }

    fn prost_len(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}
