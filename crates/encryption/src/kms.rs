//! What the provider chain needs from a KMS plugin: the KMS v2 (and v1) calls, as traits.
//!
//! The gRPC client that speaks the upstream protocol over a unix socket implements these;
//! tests may implement them in-process with real cryptography.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::KmsConfig;
pub(crate) use crate::key::random_uuid as new_uid;

/// A failure talking to a KMS plugin. Messages come from the plugin or the transport, never
/// from key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    #[error("KMS plugin {name:?} is not reachable: {message}")]
    Unavailable { name: String, message: String },
    #[error("KMS plugin {name:?} did not answer within {timeout_ms} ms")]
    Timeout { name: String, timeout_ms: u128 },
    #[error("KMS plugin {name:?} is unhealthy: {message}")]
    Unhealthy { name: String, message: String },
    #[error("KMS plugin {name:?} gave an invalid response: {message}")]
    InvalidResponse { name: String, message: String },
    #[error("KMS provider {name:?} has no valid key to encrypt with, so writes are refused until its plugin is healthy again: {reason}")]
    NoWriteKey { name: String, reason: String },
    #[error("KMS plugin {name:?} failed the call with gRPC status {code}: {message}")]
    Rpc {
        name: String,
        code: String,
        message: String,
    },
}

impl KmsError {
    /// The gRPC status code name for metrics (`OK` never appears here).
    pub fn grpc_code(&self) -> &str {
        match self {
            KmsError::Rpc { code, .. } => code,
            KmsError::Timeout { .. } => "DeadlineExceeded",
            KmsError::Unavailable { .. } => "Unavailable",
            KmsError::Unhealthy { .. }
            | KmsError::InvalidResponse { .. }
            | KmsError::NoWriteKey { .. } => "unknown-non-grpc",
        }
    }
}

/// `StatusResponse` of the KMS v2 API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsStatus {
    pub version: String,
    pub healthz: String,
    pub key_id: String,
}

/// `EncryptResponse` of the KMS v2 API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsEncryptResponse {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// The KMS v2 plugin service (`v2.KeyManagementService`).
#[async_trait::async_trait]
pub trait KmsV2Service: Send + Sync + std::fmt::Debug {
    async fn status(&self) -> Result<KmsStatus, KmsError>;
    async fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<KmsEncryptResponse, KmsError>;
    async fn decrypt(
        &self,
        uid: &str,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, KmsError>;
}

/// The deprecated KMS v1 plugin service (`v1beta1.KeyManagementService`).
#[async_trait::async_trait]
pub trait KmsV1Service: Send + Sync + std::fmt::Debug {
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KmsError>;
    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, KmsError>;
}

/// Where KMS events are reported (the server turns them into upstream's metrics). Every
/// method has a no-op default; key ids are passed as they are and hashed by the receiver.
pub trait KmsObserver: Send + Sync + std::fmt::Debug {
    /// A value was written (`to_storage`) or read (`from_storage`) under `key_id`.
    fn key_id_used(&self, _provider: &str, _transformation_type: &'static str, _key_id: &str) {}
    /// A healthy `Status` reported `key_id`.
    fn status_key_id(&self, _provider: &str, _key_id: &str) {}
    /// `Status` reported an unusable key id (`error`: `empty` or `too_long`).
    fn invalid_status_key_id(&self, _provider: &str, _error: &'static str) {}
    /// The number of unwrapped DEK sources a provider holds.
    fn dek_source_cache_size(&self, _provider: &str, _size: usize) {}
    /// A read needed a DEK source that was not cached (one plugin `Decrypt`).
    fn cache_miss(&self) {}
    /// One plugin call (`method` is the full gRPC method name) and how it ended.
    fn plugin_call(
        &self,
        _provider: &str,
        _method: &'static str,
        _grpc_code: &str,
        _elapsed: std::time::Duration,
    ) {
    }
}

/// The KMS v2 timing rules (upstream d.5/d.6). Tests shorten them; servers keep the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmsLifecycle {
    /// Writes are refused once no healthy `Status` has been seen for this long.
    pub write_state_ttl: std::time::Duration,
    /// How often `Status` is polled while the plugin is healthy.
    pub healthy_poll: std::time::Duration,
    /// ... and while it is not (also the least time between two inline retries).
    pub unhealthy_poll: std::time::Duration,
}

impl Default for KmsLifecycle {
    fn default() -> Self {
        KmsLifecycle {
            write_state_ttl: std::time::Duration::from_secs(180),
            healthy_poll: std::time::Duration::from_secs(60),
            unhealthy_poll: std::time::Duration::from_secs(10),
        }
    }
}

/// Opens a client to the plugin a `kms` block names.
pub trait KmsConnector: Send + Sync {
    fn connect_v2(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV2Service>, KmsError>;
    fn connect_v1(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV1Service>, KmsError>;
    /// Where the providers report what they do (none by default).
    fn observer(&self) -> Option<Arc<dyn KmsObserver>> {
        None
    }
    /// The timing rules of the KMS v2 providers built with this connector.
    fn lifecycle(&self) -> KmsLifecycle {
        KmsLifecycle::default()
    }
}

/// A connector for contexts without a KMS client: building succeeds, so resources that use
/// no KMS provider keep working, and every call to a KMS provider fails with a message that
/// names the provider and its endpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKmsConnector;

#[derive(Debug)]
struct UnreachableKms {
    name: String,
    endpoint: String,
}

impl UnreachableKms {
    fn error(&self) -> KmsError {
        KmsError::Unavailable {
            name: self.name.clone(),
            message: format!(
                "no KMS gRPC client is available in this context, so the plugin at {} cannot be reached",
                self.endpoint
            ),
        }
    }
}

#[async_trait::async_trait]
impl KmsV2Service for UnreachableKms {
    async fn status(&self) -> Result<KmsStatus, KmsError> {
        Err(self.error())
    }
    async fn encrypt(&self, _uid: &str, _plaintext: &[u8]) -> Result<KmsEncryptResponse, KmsError> {
        Err(self.error())
    }
    async fn decrypt(
        &self,
        _uid: &str,
        _key_id: &str,
        _ciphertext: &[u8],
        _annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, KmsError> {
        Err(self.error())
    }
}

#[async_trait::async_trait]
impl KmsV1Service for UnreachableKms {
    async fn encrypt(&self, _plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(self.error())
    }
    async fn decrypt(&self, _ciphertext: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(self.error())
    }
}

impl KmsConnector for NoKmsConnector {
    fn connect_v2(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(Arc::new(UnreachableKms {
            name: config.name.clone(),
            endpoint: config.endpoint.url.clone(),
        }))
    }
    fn connect_v1(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Ok(Arc::new(UnreachableKms {
            name: config.name.clone(),
            endpoint: config.endpoint.url.clone(),
        }))
    }
}

/// Runs one plugin call with the provider's timeout, naming the provider when it expires.
pub(crate) async fn with_timeout<T>(
    name: &str,
    timeout: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, KmsError>>,
) -> Result<T, KmsError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| KmsError::Timeout {
            name: name.to_string(),
            timeout_ms: timeout.as_millis(),
        })?
}
