//! `atrest get`: one stored object, as the store holds it and as the configuration reads it.
//! The recovery path when the API server is gone: only the configuration and the store are
//! needed.

use atrest_api::codec::{self, StorageFormat};
use atrest_storage::{EncryptedStore, StorageError, StorageKey};
use serde::Serialize;
use serde_json::Value;

use crate::audit::KeyRef;

/// How the object was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Decoding {
    /// A kind the codec knows (core/v1 Secret, ConfigMap, Namespace; any JSON object).
    Object,
    /// A protobuf kind the codec does not know: the `runtime.Unknown` envelope with a
    /// field dump of its raw bytes.
    UnknownKind,
    /// Not an object encoding atrest can read (CBOR): the plaintext, base64.
    Opaque,
}

/// One stored object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspected {
    pub key: String,
    pub resource: String,
    /// The provider and key that opened it.
    pub provider: KeyRef,
    /// The resource's write key.
    pub write_key: KeyRef,
    /// Not opened by the write key: the next write re-encrypts it.
    pub stale: bool,
    pub mod_revision: i64,
    pub create_revision: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub lease: i64,
    pub decoding: Decoding,
    /// The object (with `metadata.resourceVersion` set from the revision).
    pub object: Value,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Reads and decodes the object at `key`.
pub async fn inspect(
    storage: &EncryptedStore,
    key: &StorageKey,
) -> Result<Option<Inspected>, StorageError> {
    let Some(value) = storage.get(key).await? else {
        return Ok(None);
    };
    let (decoding, mut object) = decode(&value.plaintext);
    if decoding == Decoding::Object {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                Value::String(value.mod_revision.to_string()),
            );
        }
    }
    let write = storage
        .chain()
        .current()
        .for_resource(key.resource())
        .write_provider();
    Ok(Some(Inspected {
        key: key.to_string(),
        resource: key.resource().to_string(),
        provider: KeyRef::of(&value.provider),
        write_key: KeyRef::of(&write),
        stale: value.stale,
        mod_revision: value.mod_revision,
        create_revision: value.create_revision,
        lease: value.lease,
        decoding,
        object,
    }))
}

/// Decodes storage bytes, never failing: a protobuf kind the codec does not know (or
/// cannot decode) is shown as its envelope and a field dump, anything else as bytes.
pub fn decode(plaintext: &[u8]) -> (Decoding, Value) {
    match codec::decode_storage(plaintext) {
        Ok(object) => (Decoding::Object, object),
        Err(_) if StorageFormat::detect(plaintext) == Some(StorageFormat::Protobuf) => {
            match codec::dump_unknown(plaintext) {
                Ok(dump) => (Decoding::UnknownKind, dump),
                Err(_) => (Decoding::Opaque, opaque(plaintext)),
            }
        }
        Err(_) => (Decoding::Opaque, opaque(plaintext)),
    }
}

fn opaque(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    serde_json::json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(bytes) })
}
