//! Protobuf for API responses beyond single objects, as kube-apiserver writes them: lists
//! (`k8s\0` + `runtime.Unknown` wrapping `v1.SecretList` etc.), `meta/v1 Status`, and the
//! frames of a protobuf watch (`application/vnd.kubernetes.protobuf;stream=watch`: a 4-byte
//! big-endian length, then `metav1.WatchEvent{type, object: RawExtension{raw}}` with no
//! prefix or envelope of its own; `raw` is the object's `k8s\0` envelope).

use serde_json::Value;

use super::core::{ConfigMap, Namespace, Secret};
use super::model::Fields;
use super::wire::Writer;
use super::{CodecError, TypedKind, PROTOBUF_PREFIX};

/// The typed kind whose list this `kind` is (`SecretList` → `Secret`), for `apiVersion`.
pub fn list_item_kind(api_version: &str, kind: &str) -> Option<TypedKind> {
    kind.strip_suffix("List")
        .and_then(|item| TypedKind::of(api_version, item))
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw, "", ""}`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Writer::new();
    type_meta.string_field(1, api_version);
    type_meta.string_field(2, kind);
    let mut out = Writer::new();
    out.raw(&PROTOBUF_PREFIX);
    out.bytes_field(1, &type_meta.into_bytes());
    out.bytes_field(2, raw);
    // contentEncoding and contentType: empty, but always written.
    out.string_field(3, "");
    out.string_field(4, "");
    out.into_bytes()
}

/// `metav1.ListMeta`: selfLink, resourceVersion and continue always written (gogo writes
/// non-pointer strings even when empty), remainingItemCount only when set.
fn list_meta(metadata: Fields<'_>) -> Result<Vec<u8>, CodecError> {
    let mut meta = Writer::new();
    meta.string_field(1, &metadata.string("selfLink")?);
    meta.string_field(2, &metadata.string("resourceVersion")?);
    meta.string_field(3, &metadata.string("continue")?);
    if let Some(remaining) = metadata.opt_i64("remainingItemCount")? {
        meta.int64_field(4, remaining);
    }
    Ok(meta.into_bytes())
}

/// Encodes a list of a typed kind (`{"apiVersion": "v1", "kind": "SecretList", "metadata":
/// {...}, "items": [...]}`) as kube-apiserver answers it in protobuf: `ListMeta` (field 1)
/// and each item's message (field 2).
pub fn encode_protobuf_list(list: &Value) -> Result<Vec<u8>, CodecError> {
    let fields = Fields::new(Some(list), "")?;
    let kind = fields.string("kind")?;
    if kind.is_empty() {
        return Err(CodecError::MissingKind);
    }
    let api_version = fields.string("apiVersion")?;
    let Some(typed) = list_item_kind(&api_version, &kind) else {
        return Err(CodecError::UnsupportedKind { api_version, kind });
    };
    let mut raw = Writer::new();
    raw.bytes_field(
        1,
        &list_meta(Fields::new(fields.get("metadata"), "metadata")?)?,
    );
    for (index, item) in fields.list("items", "items")?.iter().enumerate() {
        let path = format!("items[{index}]");
        let item = Fields::new(Some(item), &path)?;
        let mut message = Writer::new();
        match typed {
            TypedKind::Secret => Secret::from_json(item)?.encode(&mut message),
            TypedKind::ConfigMap => ConfigMap::from_json(item)?.encode(&mut message),
            TypedKind::Namespace => Namespace::from_json(item)?.encode(&mut message),
        }
        raw.bytes_field(2, &message.into_bytes());
    }
    Ok(envelope(&api_version, &kind, &raw.into_bytes()))
}

/// Encodes a `meta/v1 Status` (`{"status", "message", "reason", "details", "code"}`) as
/// kube-apiserver does: empty `ListMeta`, the strings always, `details` only when present,
/// `code`. Fields of the wrong type are written empty rather than refused: an error must
/// always be reportable.
pub fn encode_status_protobuf(status: &Value) -> Vec<u8> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_i64).unwrap_or(0);
    let mut raw = Writer::new();
    let mut meta = Writer::new();
    meta.string_field(1, "");
    meta.string_field(2, "");
    meta.string_field(3, "");
    raw.bytes_field(1, &meta.into_bytes());
    raw.string_field(2, &text(status, "status"));
    raw.string_field(3, &text(status, "message"));
    raw.string_field(4, &text(status, "reason"));
    if let Some(details) = status.get("details").filter(|d| d.is_object()) {
        let mut d = Writer::new();
        d.string_field(1, &text(details, "name"));
        d.string_field(2, &text(details, "group"));
        d.string_field(3, &text(details, "kind"));
        for cause in details
            .get("causes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let mut c = Writer::new();
            c.string_field(1, &text(cause, "reason"));
            c.string_field(2, &text(cause, "message"));
            c.string_field(3, &text(cause, "field"));
            d.bytes_field(4, &c.into_bytes());
        }
        // int32: a value outside its range is written as Go's truncation would.
        d.int64_field(5, i64::from(number(details, "retryAfterSeconds") as i32));
        d.string_field(6, &text(details, "uid"));
        raw.bytes_field(5, &d.into_bytes());
    }
    raw.int64_field(6, i64::from(number(status, "code") as i32));
    envelope("v1", "Status", &raw.into_bytes())
}

/// One frame of a protobuf watch: the big-endian length of the `WatchEvent` message, then
/// the message (`type` field 1; `object` field 2, a `RawExtension` whose `raw`, field 1,
/// is `object`, an object's `k8s\0` encoding).
pub fn encode_watch_frame(event_type: &str, object: &[u8]) -> Vec<u8> {
    let mut extension = Writer::new();
    extension.bytes_field(1, object);
    let mut event = Writer::new();
    event.string_field(1, event_type);
    event.bytes_field(2, &extension.into_bytes());
    let event = event.into_bytes();
    // Frames are far below 4 GiB: objects are limited to a few MiB.
    let length = u32::try_from(event.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(event.len() + 4);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&event);
    frame
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn status_matches_kube_apiserver_bytes() {
        // kube-apiserver 1.36's ERROR event for a watch it could not start (captured).
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "m", "reason": "InternalError", "code": 500});
        let bytes = encode_status_protobuf(&status);
        let mut expected = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Status\x12".to_vec();
        let raw = b"\x0a\x06\x0a\x00\x12\x00\x1a\x00\x12\x07Failure\x1a\x01m\x22\x0dInternalError\x30\xf4\x03";
        expected.push(raw.len() as u8);
        expected.extend_from_slice(raw);
        expected.extend_from_slice(b"\x1a\x00\x22\x00");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn lists_and_frames() {
        let list = json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "76"},
            "items": [{"metadata": {"name": "s1"}}]});
        let bytes = encode_protobuf_list(&list).unwrap();
        assert!(bytes.starts_with(b"k8s\0\x0a\x10\x0a\x02v1\x12\x0aSecretList\x12"));
        // ListMeta: "", "76", "".
        let meta = b"\x0a\x08\x0a\x00\x12\x0276\x1a\x00\x12";
        assert!(bytes.windows(meta.len()).any(|w| w == meta));
        let pod = json!({"apiVersion": "v1", "kind": "PodList", "items": []});
        assert!(matches!(
            encode_protobuf_list(&pod),
            Err(CodecError::UnsupportedKind { .. })
        ));
        assert!(encode_protobuf_list(
            &json!({"apiVersion": "v1", "kind": "SecretList", "items": 3})
        )
        .is_err());
        let frame = encode_watch_frame("ADDED", b"k8s\0x");
        assert_eq!(
            frame,
            b"\x00\x00\x00\x10\x0a\x05ADDED\x12\x07\x0a\x05k8s\0x"
        );
    }
}
