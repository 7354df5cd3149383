//! Objects over the encrypted storage layer: the object model's codec (protobuf or JSON
//! storage bytes) on top of [`EncryptedStore`], which encrypts, decrypts, compares and
//! swaps.
//!
//! This is the only place that turns objects into storage bytes, so two invariants live
//! here: a stored value never contains `resourceVersion` or `selfLink`, and an object's
//! `resourceVersion` is the store revision of the version read or written.

use std::sync::Arc;
use std::time::Duration;

use atrest_api::codec;
use atrest_encryption::{GroupResource, ProviderId, ProviderKind};
use atrest_storage::{
    Collection, DecryptedValue, Direction, EncryptedStore, Entry, EventStream, ListOptions,
    StorageError, StorageKey, TransformObserver, UnreadableValue, Updated,
};
use atrest_store::StoreError;
use serde_json::Value;

use crate::metrics::{transformation_buckets, Metrics};
use crate::resources::{ResourceInfo, StorageEncoding};
use crate::status::ApiError;

/// An object read from the store.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The object, with `metadata.resourceVersion` set from the store revision.
    pub object: Value,
    /// The revision of the version read.
    pub mod_revision: i64,
    /// The decrypted value it came from (compared on update, rewritten when stale).
    value: DecryptedValue,
}

impl StoredObject {
    /// Whether this version is the one that created the object.
    pub fn is_creation(&self) -> bool {
        self.value.is_creation()
    }
}

/// A stored value that cannot be read (decrypted or decoded).
#[derive(Debug)]
pub struct Unreadable {
    /// Its key.
    pub key: Vec<u8>,
    /// Its mod revision (a delete of it compares on this).
    pub mod_revision: i64,
    /// Why, as the API reports it.
    pub error: ApiError,
}

/// The encrypting object store.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    pub storage: EncryptedStore,
    pub metrics: Arc<Metrics>,
}

/// Storage errors as API errors, for an object of `res` named `name`.
pub fn storage_error(e: StorageError, res: &ResourceInfo, name: &str) -> ApiError {
    match e {
        StorageError::Store(e) => store_error(e, res, name),
        StorageError::Key(e) => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn store_error(e: StoreError, res: &ResourceInfo, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(&res.group, &res.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(&res.group, &res.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(&res.group, &res.plural, name),
        StoreError::Compacted { requested, compact_revision } => ApiError::gone(format!(
            "The resourceVersion for the provided list is too old (requested {requested}, compacted {compact_revision})."
        )),
        other => ApiError::internal(other.to_string()),
    }
}

/// Upstream's `transformer_prefix` label.
fn prefix_label(p: &ProviderId) -> String {
    match p.kind {
        ProviderKind::Identity => "identity".into(),
        ProviderKind::KmsV2 => format!("k8s:enc:kms:v2:{}:", p.name.as_deref().unwrap_or("")),
        ProviderKind::KmsV1 => format!("k8s:enc:kms:v1:{}:", p.name.as_deref().unwrap_or("")),
        kind => format!("k8s:enc:{}:v1:", kind.as_str()),
    }
}

/// Records upstream's transformation metrics for every value the storage layer transforms.
#[derive(Debug)]
pub struct TransformMetrics(pub Arc<Metrics>);

impl TransformObserver for TransformMetrics {
    fn transformed(
        &self,
        resource: &GroupResource,
        direction: Direction,
        provider: Option<&ProviderId>,
        elapsed: Duration,
    ) {
        let prefix = provider.map_or_else(|| "unknown".to_string(), prefix_label);
        let status = if provider.is_some() {
            "OK"
        } else {
            "unknown-non-grpc"
        };
        self.0.inc(
            "apiserver_storage_transformation_operations_total",
            "Total number of transformations.",
            vec![
                ("resource", resource.to_string()),
                ("transformation_type", direction.as_str().into()),
                ("transformer_prefix", prefix.clone()),
                ("status", status.into()),
            ],
        );
        if provider.is_some() {
            self.0.observe(
                "apiserver_storage_transformation_duration_seconds",
                "Latencies in seconds of value transformation operations.",
                transformation_buckets,
                vec![
                    ("transformation_type", direction.as_str().into()),
                    ("transformer_prefix", prefix),
                ],
                elapsed,
            );
        }
    }
}

impl ObjectStore {
    /// The store over `storage`, recording transformation metrics in `metrics`.
    pub fn new(storage: EncryptedStore, metrics: Arc<Metrics>) -> Self {
        let storage = storage.with_observer(Arc::new(TransformMetrics(metrics.clone())));
        ObjectStore { storage, metrics }
    }

    pub fn key(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<StorageKey, ApiError> {
        let ns = if res.namespaced { namespace } else { None };
        self.storage
            .key(&res.group_resource(), ns, name)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    pub fn collection(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<Collection, ApiError> {
        let ns = if res.namespaced { namespace } else { None };
        self.storage
            .collection(&res.group_resource(), ns)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Decodes a decrypted value into the object model.
    fn decode(&self, value: DecryptedValue) -> Result<StoredObject, Unreadable> {
        match codec::decode_storage(&value.plaintext) {
            Ok(mut object) => {
                set_resource_version(&mut object, value.mod_revision);
                Ok(StoredObject {
                    object,
                    mod_revision: value.mod_revision,
                    value,
                })
            }
            Err(e) => Err(Unreadable {
                error: ApiError::internal(format!("decoding {}: {e}", value.key)),
                key: value.key.as_bytes().to_vec(),
                mod_revision: value.mod_revision,
            }),
        }
    }

    /// An entry of a list or watch, decoded.
    pub fn decode_entry(&self, entry: Entry) -> Result<StoredObject, Unreadable> {
        match entry {
            Ok(value) => self.decode(value),
            Err(u) => Err(unreadable(u)),
        }
    }

    /// The storage bytes of an object (before encryption).
    pub fn encode(&self, res: &ResourceInfo, object: &Value) -> Result<Vec<u8>, ApiError> {
        let mut object = object.clone();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("selfLink");
        }
        let encoded = match res.encoding {
            StorageEncoding::Protobuf
                if codec::has_protobuf_codec(
                    &res.api_version(res.storage_version()),
                    &res.kind,
                ) =>
            {
                codec::encode_protobuf(&object)
            }
            StorageEncoding::Protobuf => codec::encode_json_typed(&object),
            StorageEncoding::Json if res.model().typed() => codec::encode_json_typed(&object),
            StorageEncoding::Json => Ok(codec::encode_json_storage(&object)),
        };
        encoded.map_err(|e| ApiError::internal(format!("encoding {} object: {e}", res.kind)))
    }

    /// The object at `key`: found, missing, or stored but unreadable.
    pub async fn lookup(
        &self,
        res: &ResourceInfo,
        key: &StorageKey,
    ) -> Result<Option<Result<StoredObject, Unreadable>>, ApiError> {
        match self.storage.get(key).await {
            Ok(Some(value)) => Ok(Some(self.decode(value))),
            Ok(None) => Ok(None),
            Err(StorageError::Unreadable(u)) => Ok(Some(Err(unreadable(*u)))),
            Err(e) => Err(storage_error(e, res, key.name())),
        }
    }

    pub async fn get(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, ApiError> {
        let key = self.key(res, namespace, name)?;
        match self.lookup(res, &key).await? {
            Some(found) => found.map(Some).map_err(|u| u.error),
            None => Ok(None),
        }
    }

    /// Writes a new object; returns it as stored (with its resourceVersion).
    pub async fn create(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let key = self.key(res, namespace, name)?;
        let plaintext = self.encode(res, &object)?;
        let written = self
            .storage
            .create(&key, &plaintext, None)
            .await
            .map_err(|e| storage_error(e, res, name))?;
        let mut object = object;
        set_resource_version(&mut object, written.revision);
        Ok(object)
    }

    /// Replaces `existing` with `object` (compare-and-swap on its revision). An unchanged,
    /// non-stale object is not written (upstream b.5).
    pub async fn update(
        &self,
        res: &ResourceInfo,
        existing: &StoredObject,
        object: Value,
    ) -> Result<Value, ApiError> {
        let plaintext = self.encode(res, &object)?;
        match self
            .storage
            .update(&existing.value, &plaintext)
            .await
            .map_err(|e| storage_error(e, res, existing.value.key.name()))?
        {
            Updated::Unchanged => Ok(existing.object.clone()),
            Updated::Written(written) => {
                let mut object = object;
                set_resource_version(&mut object, written.revision);
                Ok(object)
            }
        }
    }

    /// Deletes the object at `key` if it is still at `mod_revision`.
    pub async fn delete(
        &self,
        res: &ResourceInfo,
        key: &StorageKey,
        mod_revision: i64,
    ) -> Result<i64, ApiError> {
        self.storage
            .delete(key, mod_revision)
            .await
            .map_err(|e| storage_error(e, res, key.name()))
    }

    /// Deletes every object of a collection, readable or not.
    pub async fn delete_every(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        let collection = self.collection(res, namespace)?;
        self.storage
            .delete_every(&collection)
            .await
            .map(|_| ())
            .map_err(|e| storage_error(e, res, ""))
    }

    /// One page of a collection. Objects that cannot be read are returned beside the
    /// readable ones, so one bad value never hides the others.
    pub async fn list(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        start_after: Option<Vec<u8>>,
        limit: usize,
        revision: Option<i64>,
    ) -> Result<ListPage, ApiError> {
        let collection = self.collection(res, namespace)?;
        let page = self
            .storage
            .list(
                &collection,
                ListOptions {
                    start_after,
                    limit,
                    revision,
                    count_remaining: limit > 0,
                },
            )
            .await
            .map_err(|e| storage_error(e, res, ""))?;
        let mut items = Vec::with_capacity(page.values.len());
        let mut failures: Vec<Unreadable> = page.unreadable.into_iter().map(unreadable).collect();
        for value in page.values {
            match self.decode(value) {
                Ok(o) => items.push(o),
                Err(u) => failures.push(u),
            }
            // Decoding a whole collection must not keep other requests waiting.
            tokio::task::consume_budget().await;
        }
        Ok(ListPage {
            items,
            failures,
            revision: page.revision,
            last_key: page.last_key,
            more: page.more,
            remaining: page.remaining.unwrap_or(0),
        })
    }

    /// Decrypted changes of a collection from revision `from`.
    pub async fn watch(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        from: i64,
        with_prev: bool,
    ) -> Result<EventStream, ApiError> {
        let collection = self.collection(res, namespace)?;
        self.storage
            .watch(&collection, from, with_prev)
            .await
            .map_err(|e| match e {
                StorageError::Store(StoreError::Compacted {
                    requested,
                    compact_revision,
                }) => ApiError::gone(format!(
                    "too old resource version: {} ({compact_revision})",
                    requested - 1
                )),
                other => ApiError::internal(other.to_string()),
            })
    }
}

fn unreadable(u: UnreadableValue) -> Unreadable {
    Unreadable {
        error: ApiError::internal(u.error.to_string()),
        key: u.key,
        mod_revision: u.mod_revision,
    }
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<StoredObject>,
    /// Values that could not be decrypted or decoded, with why.
    pub failures: Vec<Unreadable>,
    pub revision: i64,
    pub last_key: Option<Vec<u8>>,
    pub more: bool,
    pub remaining: i64,
}

pub fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

pub fn object_name(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
