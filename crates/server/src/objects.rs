//! Objects in the store: encode (protobuf or JSON), encrypt with the resource's providers
//! (the storage key as authenticated data), write with compare-and-swap; and the reverse.
//!
//! This is the only place that turns objects into stored bytes, so the invariants live here:
//! a stored value never contains `resourceVersion` or `selfLink`; every value written goes
//! through the provider chain of its resource; an object read through a non-first provider or
//! key is marked stale, and an update of a stale object is written even if unchanged.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use atrest_api::codec;
use atrest_api::keys::{KeyPrefix, StorageKey};
use atrest_encryption::{ProviderChain, ProviderId, ProviderKind, TransformError};
use atrest_store::{KeyValue, ListRequest, Store, StoreError};
use serde_json::Value;

use crate::metrics::{transformation_buckets, Metrics};
use crate::resources::{ResourceInfo, StorageEncoding};
use crate::status::ApiError;

/// The provider chain in force; replaced as a whole when the configuration is reloaded.
#[derive(Debug, Clone)]
pub struct ChainHandle(Arc<RwLock<Arc<ProviderChain>>>);

impl ChainHandle {
    pub fn new(chain: ProviderChain) -> Self {
        ChainHandle(Arc::new(RwLock::new(Arc::new(chain))))
    }

    pub fn current(&self) -> Arc<ProviderChain> {
        // Replacing the Arc is the only write: a poisoned lock still holds a whole chain.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, chain: ProviderChain) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
    }
}

/// An object read from the store.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The object, with `metadata.resourceVersion` set from the store revision.
    pub object: Value,
    pub key: Vec<u8>,
    pub mod_revision: i64,
    /// Read by a provider or key that does not write.
    pub stale: bool,
    /// Who encrypted it.
    pub provider: ProviderId,
    /// The decrypted storage bytes (to detect no-op updates).
    plaintext: Vec<u8>,
}

/// The encrypting object store.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    pub store: Arc<dyn Store>,
    pub chain: ChainHandle,
    pub prefix: KeyPrefix,
    pub metrics: Arc<Metrics>,
}

/// Errors that the store reports, as API errors.
pub fn store_error(e: StoreError, res: &ResourceInfo, name: &str) -> ApiError {
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

fn transform_error(e: TransformError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn prefix_label(p: &ProviderId) -> String {
    match p.kind {
        ProviderKind::Identity => "identity".into(),
        ProviderKind::KmsV2 => format!("k8s:enc:kms:v2:{}:", p.name.as_deref().unwrap_or("")),
        ProviderKind::KmsV1 => format!("k8s:enc:kms:v1:{}:", p.name.as_deref().unwrap_or("")),
        kind => format!("k8s:enc:{}:v1:", kind.as_str()),
    }
}

impl ObjectStore {
    pub fn key(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<StorageKey, ApiError> {
        let ns = if res.namespaced { namespace } else { None };
        StorageKey::object(&self.prefix, &res.key_segment, ns, name)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    pub fn collection(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<String, ApiError> {
        let ns = if res.namespaced { namespace } else { None };
        self.prefix
            .collection(&res.key_segment, ns)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    fn record(
        &self,
        res: &ResourceInfo,
        kind: &'static str,
        prefix: String,
        ok: bool,
        started: Instant,
    ) {
        let resource = res.group_resource().to_string();
        self.metrics.inc(
            "apiserver_storage_transformation_operations_total",
            "Total number of transformations.",
            vec![
                ("resource", resource),
                ("transformation_type", kind.into()),
                ("transformer_prefix", prefix.clone()),
                (
                    "status",
                    if ok {
                        "OK".into()
                    } else {
                        "unknown-non-grpc".into()
                    },
                ),
            ],
        );
        if ok {
            self.metrics.observe(
                "apiserver_storage_transformation_duration_seconds",
                "Latencies in seconds of value transformation operations.",
                transformation_buckets,
                vec![
                    ("transformation_type", kind.into()),
                    ("transformer_prefix", prefix),
                ],
                started.elapsed(),
            );
        }
    }

    /// Decrypts and decodes a stored value.
    pub async fn decode(
        &self,
        res: &ResourceInfo,
        kv: &KeyValue,
    ) -> Result<StoredObject, ApiError> {
        let chain = self.chain.current();
        let transformer = chain.for_resource(&res.group_resource());
        let started = Instant::now();
        let decrypted = match transformer.decrypt(&kv.value, &kv.key).await {
            Ok(d) => {
                self.record(
                    res,
                    "from_storage",
                    prefix_label(&d.provider),
                    true,
                    started,
                );
                d
            }
            Err(e) => {
                self.record(res, "from_storage", "unknown".into(), false, started);
                return Err(transform_error(e));
            }
        };
        let mut object = codec::decode_storage(&decrypted.plaintext).map_err(|e| {
            ApiError::internal(format!(
                "decoding {}: {e}",
                String::from_utf8_lossy(&kv.key)
            ))
        })?;
        set_resource_version(&mut object, kv.mod_revision);
        Ok(StoredObject {
            object,
            key: kv.key.clone(),
            mod_revision: kv.mod_revision,
            stale: decrypted.stale,
            provider: decrypted.provider,
            plaintext: decrypted.plaintext,
        })
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
            StorageEncoding::Json
                if res.builtin.is_some()
                    && res.builtin != Some(crate::resources::Builtin::CustomResourceDefinition) =>
            {
                codec::encode_json_typed(&object)
            }
            StorageEncoding::Json => Ok(codec::encode_json_storage(&object)),
        };
        encoded.map_err(|e| ApiError::internal(format!("encoding {} object: {e}", res.kind)))
    }

    async fn encrypt(
        &self,
        res: &ResourceInfo,
        key: &StorageKey,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ApiError> {
        let chain = self.chain.current();
        let transformer = chain.for_resource(&res.group_resource());
        let started = Instant::now();
        match transformer.encrypt(plaintext, key.as_bytes()).await {
            Ok(e) => {
                self.record(res, "to_storage", prefix_label(&e.provider), true, started);
                Ok(e.stored)
            }
            Err(e) => {
                self.record(res, "to_storage", "unknown".into(), false, started);
                Err(transform_error(e))
            }
        }
    }

    pub async fn get(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, ApiError> {
        let key = self.key(res, namespace, name)?;
        match self
            .store
            .get(key.as_bytes())
            .await
            .map_err(|e| store_error(e, res, name))?
        {
            Some(kv) => Ok(Some(self.decode(res, &kv).await?)),
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
        let stored = self.encrypt(res, &key, &plaintext).await?;
        let revision = self
            .store
            .create(key.as_bytes(), &stored, None)
            .await
            .map_err(|e| store_error(e, res, name))?;
        let mut object = object;
        set_resource_version(&mut object, revision);
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
        let name = object_name(&object);
        let plaintext = self.encode(res, &object)?;
        if plaintext == existing.plaintext && !existing.stale {
            return Ok(existing.object.clone());
        }
        let key = StorageKey::from_raw(String::from_utf8_lossy(&existing.key).into_owned());
        let stored = self.encrypt(res, &key, &plaintext).await?;
        let revision = self
            .store
            .update(&existing.key, &stored, existing.mod_revision, None)
            .await
            .map_err(|e| store_error(e, res, &name))?;
        let mut object = object;
        set_resource_version(&mut object, revision);
        Ok(object)
    }

    /// Deletes the object at `key` if it is still at `mod_revision`.
    pub async fn delete_raw(
        &self,
        res: &ResourceInfo,
        key: &[u8],
        mod_revision: Option<i64>,
        name: &str,
    ) -> Result<i64, ApiError> {
        let (revision, _) = self
            .store
            .delete(key, mod_revision)
            .await
            .map_err(|e| store_error(e, res, name))?;
        Ok(revision)
    }

    /// One page of a collection. Objects that cannot be read are returned as errors beside
    /// the readable ones, so one bad value never hides the others.
    pub async fn list(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        start_after: Option<Vec<u8>>,
        limit: usize,
        revision: Option<i64>,
    ) -> Result<ListPage, ApiError> {
        let prefix = self.collection(res, namespace)?;
        let response = self
            .store
            .list(ListRequest {
                prefix: prefix.into_bytes(),
                start_after,
                limit,
                revision,
                count_remaining: limit > 0,
            })
            .await
            .map_err(|e| store_error(e, res, ""))?;
        let mut items = Vec::with_capacity(response.items.len());
        let mut failures = Vec::new();
        for kv in &response.items {
            match self.decode(res, kv).await {
                Ok(o) => items.push(o),
                Err(e) => failures.push((kv.key.clone(), kv.mod_revision, e)),
            }
        }
        Ok(ListPage {
            items,
            failures,
            revision: response.revision,
            last_key: response.items.last().map(|kv| kv.key.clone()),
            more: response.more,
            remaining: response.remaining_count.unwrap_or(0),
        })
    }
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<StoredObject>,
    /// Keys whose values could not be decrypted or decoded, with why.
    pub failures: Vec<(Vec<u8>, i64, ApiError)>,
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
