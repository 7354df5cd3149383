//! Object codecs: the bytes kube-apiserver stores (and kubectl sends) to and
//! from an in-memory JSON object model.
//!
//! # The object model
//!
//! An object is a [`serde_json::Value`] holding it exactly as the Kubernetes
//! JSON API shows it: `apiVersion`, `kind`, `metadata`, `data`, ... with Go's
//! `omitempty` rules applied on the way out of protobuf (empty strings, maps
//! and lists are absent; `metadata.creationTimestamp` is `null` when unset,
//! as Go's struct-typed `metav1.Time` marshals; a Namespace always has
//! `spec` and `status`, possibly `{}`). Secret `data` and ConfigMap
//! `binaryData` values are standard padded base64 strings. Times are
//! `2006-01-02T15:04:05Z` (UTC, whole seconds).
//!
//! # What "byte-compatible" means
//!
//! - [`encode_protobuf`] writes exactly what kube-apiserver writes for the
//!   same object: `k8s\0` + `runtime.Unknown{typeMeta, raw, "", ""}` with the
//!   gogo emission rules of `k8s.io/api` (non-pointer fields always written,
//!   fields in number order, map entries sorted by key, `nanos = 0` in
//!   times, the zero time as an empty message). The upstream round-trip
//!   fixtures (`kubernetes/api` `testdata/HEAD/core.v1.{Secret,ConfigMap,
//!   Namespace}.pb`), a Secret written by kube-apiserver v1.28 and kubectl
//!   v1.32's `create secret` request bodies all decode to the upstream JSON
//!   and re-encode byte-identically (tests in `tests/`).
//! - [`decode_protobuf`] accepts anything gogo's generated `Unmarshal` accepts
//!   for these kinds, including unknown fields of every wire type (e.g. the
//!   retired `ObjectMeta.clusterName`, field 15, `7a 00`); it rejects, with a
//!   [`CodecError`] naming the message, field and offset, what gogo rejects
//!   (truncation, wrong wire type for a known field, tag 0) and, unlike Go,
//!   strings that are not UTF-8 (the JSON model cannot carry them losslessly).
//!   Lengths are checked against the remaining input before use, so hostile
//!   bytes cannot make it panic or allocate more than the input's size.
//! - [`encode_json_storage`] is Go's `json.NewEncoder(w).Encode(map)` of an
//!   unstructured object, as kube-apiserver stores custom resources: keys
//!   sorted byte-wise, `<` `>` `&` U+2028 U+2029 escaped, `\b`/`\f` short
//!   escapes (Go 1.22+), other control characters as `\u00XX`, floats in
//!   `strconv` `'f'`/`'e'` form, a trailing newline.
//! - [`encode_json_typed`] is the same serializer over the typed struct of a
//!   built-in kind (fields in Go declaration order), i.e. storage with
//!   `--storage-media-type application/json` and JSON responses; the upstream
//!   fixtures' `.json` files, compacted, match it byte for byte.
//!
//! # Not supported
//!
//! - Protobuf for any kind but core/v1 `Secret`, `ConfigMap`, `Namespace`
//!   (so also their list kinds); others give [`CodecError::UnsupportedKind`].
//!   [`decode_protobuf_envelope`] still exposes their TypeMeta and raw bytes.
//! - CBOR storage (alpha `CBORServingAndStorage`): [`CodecError::CborNotSupported`].
//! - Sub-second time precision (Kubernetes drops it too), years outside
//!   0000-9999 in JSON (Go refuses them too).
//! - `Unknown.contentEncoding` / `contentType` are ignored on decode, as Go
//!   does, and written empty.
//! - Fields of the JSON model that the kind does not have are ignored by
//!   [`encode_protobuf`] (Go's lenient decoding; strict field validation is the
//!   API layer's job). Read-only fields are not cleared here either: the
//!   caller clears `selfLink`/`resourceVersion` before storage encoding, and
//!   merges `stringData` into `data` for Secrets (both are encoded if given,
//!   as the upstream fixture includes `stringData`).
//! - A pointer time that is set but zero (`deletionTimestamp`,
//!   `managedFields[].time`), and a `fieldsV1` message without `Raw`, are
//!   left out of the model: Go shows them as `null`, which reads back as
//!   unset, so re-encoding omits them as kube-apiserver would after a JSON
//!   round trip.
//! - `fieldsV1` is re-serialised from the model in structured-merge-diff's
//!   key order; for keys `k:`/`v:` holding non-string values the upstream
//!   order may differ from ours (byte-wise), giving different but equivalent
//!   bytes.

mod core;
mod dump;
mod error;
mod json;
mod meta;
mod model;
mod response;
mod time;
mod typed_json;
mod wire;

pub use dump::dump_unknown;
pub use error::CodecError;
pub use json::{decode_json_storage, encode_json_storage};
pub use response::{
    encode_protobuf_list, encode_status_protobuf, encode_watch_frame, list_item_kind,
};
pub use time::{format_rfc3339, parse_rfc3339};

use serde_json::Value;

use self::core::{ConfigMap, Namespace, Secret};
use self::model::Fields;
use self::wire::{Reader, Writer};

/// The four bytes in front of every Kubernetes protobuf value.
pub const PROTOBUF_PREFIX: [u8; 4] = *b"k8s\0";

/// The prefix of values written by an encryption provider.
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// A decoded `runtime.Unknown` envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtobufEnvelope<'a> {
    /// `typeMeta.apiVersion`: `v1` for core, `group/version` otherwise.
    pub api_version: String,
    /// `typeMeta.kind`, e.g. `Secret`.
    pub kind: String,
    /// The typed object's protobuf message.
    pub raw: &'a [u8],
    /// `contentEncoding` (empty in everything Kubernetes writes).
    pub content_encoding: String,
    /// `contentType` (empty in everything Kubernetes writes).
    pub content_type: String,
}

/// Storage encodings recognised by [`StorageFormat::detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFormat {
    /// `k8s\0` + `runtime.Unknown`.
    Protobuf,
    /// A JSON object.
    Json,
    /// CBOR with the self-describe tag (not decodable here).
    Cbor,
}

impl StorageFormat {
    /// Recognises a (decrypted) storage value by its first bytes, as
    /// kube-apiserver's recognizing decoder does: JSON may start with
    /// whitespace before `{`.
    pub fn detect(bytes: &[u8]) -> Option<StorageFormat> {
        if bytes.starts_with(&PROTOBUF_PREFIX) {
            return Some(StorageFormat::Protobuf);
        }
        if bytes.starts_with(&json::CBOR_SELF_DESCRIBE) {
            return Some(StorageFormat::Cbor);
        }
        // JSON whitespace only (not form feed, which is_ascii_whitespace allows).
        let first = bytes
            .iter()
            .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
        (first == Some(&b'{')).then_some(StorageFormat::Json)
    }
}

/// Whether [`encode_protobuf`]/[`decode_protobuf`] handle this kind.
pub fn has_protobuf_codec(api_version: &str, kind: &str) -> bool {
    TypedKind::of(api_version, kind).is_some()
}

/// The kinds this codec has a typed form for (protobuf messages, Go struct field order).
/// A new built-in kind with a typed model gets a variant here and its arms below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypedKind {
    Secret,
    ConfigMap,
    Namespace,
}

impl TypedKind {
    pub const ALL: [TypedKind; 3] = [
        TypedKind::Secret,
        TypedKind::ConfigMap,
        TypedKind::Namespace,
    ];

    /// The `kind` name, which is also the protobuf message name.
    pub fn name(self) -> &'static str {
        match self {
            TypedKind::Secret => "Secret",
            TypedKind::ConfigMap => "ConfigMap",
            TypedKind::Namespace => "Namespace",
        }
    }

    /// The typed kind of an `apiVersion` and `kind`, if the codec has one.
    pub fn of(api_version: &str, kind: &str) -> Option<TypedKind> {
        if api_version != "v1" {
            return None;
        }
        TypedKind::ALL.into_iter().find(|k| k.name() == kind)
    }
}

/// Parses `k8s\0` + `runtime.Unknown` without decoding the object inside.
pub fn decode_protobuf_envelope(bytes: &[u8]) -> Result<ProtobufEnvelope<'_>, CodecError> {
    parse_envelope(bytes).map(|(envelope, _)| envelope)
}

/// The envelope and the absolute offset of `raw` (for error messages).
fn parse_envelope(bytes: &[u8]) -> Result<(ProtobufEnvelope<'_>, usize), CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let body = bytes
        .strip_prefix(&PROTOBUF_PREFIX)
        .ok_or(CodecError::MissingProtobufPrefix)?;
    if body.is_empty() {
        return Err(CodecError::Empty);
    }
    let mut envelope = ProtobufEnvelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut raw_offset = PROTOBUF_PREFIX.len();
    let mut reader = Reader::new(body, PROTOBUF_PREFIX.len(), "Unknown");
    while let Some(header) = reader.next_field()? {
        match header.number {
            1 => {
                let mut type_meta = reader.read_message(header, "TypeMeta")?;
                while let Some(inner) = type_meta.next_field()? {
                    match inner.number {
                        1 => envelope.api_version = type_meta.read_string(inner)?,
                        2 => envelope.kind = type_meta.read_string(inner)?,
                        _ => type_meta.skip(inner)?,
                    }
                }
            }
            2 => {
                reader.expect(header, wire::WIRE_LEN)?;
                (envelope.raw, raw_offset) = reader.read_len_delimited()?;
            }
            3 => envelope.content_encoding = reader.read_string(header)?,
            4 => envelope.content_type = reader.read_string(header)?,
            _ => reader.skip(header)?,
        }
    }
    Ok((envelope, raw_offset))
}

/// Decodes a protobuf value (storage bytes or a request body) into the JSON
/// object model. `apiVersion` and `kind` come from the envelope.
pub fn decode_protobuf(bytes: &[u8]) -> Result<Value, CodecError> {
    let (envelope, raw_offset) = parse_envelope(bytes)?;
    if envelope.kind.is_empty() {
        return Err(CodecError::MissingKind);
    }
    if envelope.api_version.is_empty() {
        return Err(CodecError::MissingApiVersion {
            kind: envelope.kind,
        });
    }
    if !has_protobuf_codec(&envelope.api_version, &envelope.kind) {
        return Err(CodecError::UnsupportedKind {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    }
    let (api_version, kind) = (envelope.api_version.as_str(), envelope.kind.as_str());
    let Some(typed) = TypedKind::of(api_version, kind) else {
        return Err(CodecError::UnsupportedKind {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    };
    let reader = Reader::new(envelope.raw, raw_offset, typed.name());
    match typed {
        TypedKind::Secret => Secret::decode(reader)?.to_json(api_version, kind),
        TypedKind::ConfigMap => ConfigMap::decode(reader)?.to_json(api_version, kind),
        TypedKind::Namespace => Namespace::decode(reader)?.to_json(api_version, kind),
    }
}

/// The apiVersion and kind of an object this codec has a typed form for.
fn builtin_type(fields: Fields<'_>) -> Result<(String, String, TypedKind), CodecError> {
    let kind = fields.string("kind")?;
    if kind.is_empty() {
        return Err(CodecError::MissingKind);
    }
    let api_version = fields.string("apiVersion")?;
    if api_version.is_empty() {
        return Err(CodecError::MissingApiVersion { kind });
    }
    match TypedKind::of(&api_version, &kind) {
        Some(typed) => Ok((api_version, kind, typed)),
        None => Err(CodecError::UnsupportedKind { api_version, kind }),
    }
}

/// Normalises an object of a built-in kind to what Go gets by decoding it
/// into the typed struct and encoding that as JSON: fields the kind does not
/// have dropped, `omitempty` applied, times in UTC whole seconds,
/// `metadata.creationTimestamp` present (`null` if unset). The result is
/// what [`decode_protobuf`] returns for [`encode_protobuf`] of the input,
/// except that a `null` Secret `data` / ConfigMap `binaryData` value stays
/// `null` here (Go's nil slice) but comes back from protobuf as `""`.
pub fn normalize_builtin(object: &Value) -> Result<Value, CodecError> {
    normalize_typed(object).map(|(normalized, _)| normalized)
}

fn normalize_typed(object: &Value) -> Result<(Value, TypedKind), CodecError> {
    let fields = Fields::new(Some(object), "")?;
    let (api_version, kind, typed) = builtin_type(fields)?;
    let normalized = match typed {
        TypedKind::Secret => Secret::from_json(fields)?.to_json(&api_version, &kind),
        TypedKind::ConfigMap => ConfigMap::from_json(fields)?.to_json(&api_version, &kind),
        TypedKind::Namespace => Namespace::from_json(fields)?.to_json(&api_version, &kind),
    }?;
    Ok((normalized, typed))
}

/// Encodes an object of a built-in kind as kube-apiserver's JSON serializer
/// writes the typed struct (storage with `--storage-media-type
/// application/json`, and JSON responses): normalised as by
/// [`normalize_builtin`], fields in Go struct order, map keys sorted,
/// HTML-escaped, compact, trailing newline.
pub fn encode_json_typed(object: &Value) -> Result<Vec<u8>, CodecError> {
    let (normalized, typed) = normalize_typed(object)?;
    let mut out = Vec::with_capacity(512);
    typed_json::write_typed(&mut out, &normalized, typed);
    out.push(b'\n');
    Ok(out)
}

/// Encodes an object of the JSON model as kube-apiserver stores it:
/// `k8s\0` + `runtime.Unknown` holding the typed message.
pub fn encode_protobuf(object: &Value) -> Result<Vec<u8>, CodecError> {
    let fields = Fields::new(Some(object), "")?;
    let (api_version, kind, typed) = builtin_type(fields)?;
    let mut raw = Writer::new();
    match typed {
        TypedKind::Secret => Secret::from_json(fields)?.encode(&mut raw),
        TypedKind::ConfigMap => ConfigMap::from_json(fields)?.encode(&mut raw),
        TypedKind::Namespace => Namespace::from_json(fields)?.encode(&mut raw),
    }
    let raw = raw.into_bytes();

    let mut type_meta = Writer::new();
    type_meta.string_field(1, &api_version);
    type_meta.string_field(2, &kind);
    let mut out = Writer::new();
    out.raw(&PROTOBUF_PREFIX);
    out.bytes_field(1, &type_meta.into_bytes());
    out.bytes_field(2, &raw);
    // contentEncoding and contentType: empty, but always written.
    out.string_field(3, "");
    out.string_field(4, "");
    Ok(out.into_bytes())
}

/// Decodes a (decrypted) storage value of either encoding kube-apiserver
/// writes: protobuf (`k8s\0`) or JSON (`{`).
pub fn decode_storage(bytes: &[u8]) -> Result<Value, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    match StorageFormat::detect(bytes) {
        Some(StorageFormat::Protobuf) => decode_protobuf(bytes),
        Some(StorageFormat::Json) => decode_json_storage(bytes),
        Some(StorageFormat::Cbor) => Err(CodecError::CborNotSupported),
        None if bytes.starts_with(ENCRYPTED_PREFIX) => Err(CodecError::Encrypted),
        None => Err(CodecError::UnrecognizedEncoding),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kind::{Kind, BUILTINS};
    use serde_json::json;

    #[test]
    fn typed_kinds_are_the_typed_builtins() {
        for kind in TypedKind::ALL {
            assert_eq!(TypedKind::of("v1", kind.name()), Some(kind));
            assert!(has_protobuf_codec("v1", kind.name()));
        }
        assert_eq!(TypedKind::of("v2", "Secret"), None);
        assert_eq!(TypedKind::of("v1", "Pod"), None);
        // Every built-in kind the Kind table calls typed has a typed form here, and no other.
        for b in BUILTINS {
            let info = b.info();
            assert_eq!(
                TypedKind::of(info.version, info.kind).is_some(),
                Kind::Builtin(b).typed(),
                "{}",
                info.kind
            );
        }
    }

    #[test]
    fn unknown_kinds_are_refused_not_decoded_as_another() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert!(matches!(
            encode_protobuf(&pod),
            Err(CodecError::UnsupportedKind { .. })
        ));
        assert!(matches!(
            normalize_builtin(&pod),
            Err(CodecError::UnsupportedKind { .. })
        ));
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        let back = decode_protobuf(&encode_protobuf(&ns).unwrap()).unwrap();
        assert_eq!(back["kind"], "Namespace");
        assert_eq!(back["metadata"]["name"], "n");
    }
}
