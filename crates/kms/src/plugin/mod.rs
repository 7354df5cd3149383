//! `atrest kms-plugin`: a KMS v2 plugin that kube-apiserver (and atrest) use unmodified.
//!
//! The plugin holds key-encryption keys (KEKs) and wraps what the API server gives it (the
//! 32-byte seed of the KMS v2 envelope) with the first of them. Two backends:
//! - [`KeyFiles`]: AES-256-GCM keys in files (base64, mode 0600); the first wraps, all unwrap.
//! - [`Pkcs11Keys`]: AES keys inside a PKCS#11 token (SoftHSM, an HSM); wrap and unwrap run
//!   inside the token, the key never leaves it.
//!
//! A wrapped value is `0x01 || nonce(12) || AES-256-GCM(plaintext, aad = "atrest-kms:" ||
//! key_id)`, so a ciphertext only opens under the key id it was made with. `Status` reports
//! healthy only if a fresh random value wraps AND unwraps with the current key.

mod files;
mod pkcs11;

use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::endpoint::Endpoint;
use crate::proto::v2;
use crate::proto::v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};

pub use files::{create_key_file, KeyFiles};
pub use pkcs11::{Pkcs11Keys, Pkcs11Options};

/// The API version this plugin speaks.
pub const API_VERSION: &str = "v2";
/// Wrapped values start with this byte (the format version).
const FORMAT_V1: u8 = 1;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// A KEK backend failure. Messages name keys by id or label, never by value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Where the key-encryption keys are.
pub trait KekBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The key id new values are wrapped under.
    fn current_key_id(&self) -> String;
    /// Every key id that can unwrap.
    fn key_ids(&self) -> Vec<String>;
    /// AES-256-GCM with the key `key_id`: `nonce || ciphertext || tag`.
    fn seal(&self, key_id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, BackendError>;
    /// The inverse of [`KekBackend::seal`].
    fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError>;
    /// For logs: the backend and where its keys are (never key material).
    fn describe(&self) -> String;
}

fn aad(key_id: &str) -> Vec<u8> {
    [b"atrest-kms:".as_slice(), key_id.as_bytes()].concat()
}

/// Wraps `plaintext` with the current key: (key id, ciphertext).
pub fn wrap(backend: &dyn KekBackend, plaintext: &[u8]) -> Result<(String, Vec<u8>), BackendError> {
    let key_id = backend.current_key_id();
    let sealed = backend.seal(&key_id, plaintext, &aad(&key_id))?;
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&sealed);
    Ok((key_id, out))
}

/// Unwraps a ciphertext made by [`wrap`] under `key_id`.
pub fn unwrap(
    backend: &dyn KekBackend,
    key_id: &str,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    let Some((&FORMAT_V1, sealed)) = ciphertext.split_first() else {
        return Err(BackendError(
            "the ciphertext was not made by atrest kms-plugin (unknown format)".into(),
        ));
    };
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(BackendError("the ciphertext is too short".into()));
    }
    if !backend.key_ids().iter().any(|k| k == key_id) {
        return Err(BackendError(format!(
            "key id {key_id:?} is not one of this plugin's keys ({})",
            backend.key_ids().join(", ")
        )));
    }
    backend.open(key_id, sealed, &aad(key_id))
}

/// The health check `Status` runs: a fresh random value must wrap and unwrap to itself.
pub fn self_test(backend: &dyn KekBackend) -> Result<(), BackendError> {
    let mut probe = Zeroizing::new([0u8; 32]);
    getrandom::fill(probe.as_mut())
        .map_err(|e| BackendError(format!("the OS random number generator failed: {e}")))?;
    let (key_id, wrapped) =
        wrap(backend, probe.as_ref()).map_err(|e| BackendError(format!("wrap failed: {e}")))?;
    let back = unwrap(backend, &key_id, &wrapped)
        .map_err(|e| BackendError(format!("unwrap failed: {e}")))?;
    if back.as_slice() != probe.as_ref() {
        return Err(BackendError(
            "unwrap returned a different value than was wrapped".into(),
        ));
    }
    Ok(())
}

/// The gRPC service over a backend. Backend calls may block (a token), so they run on the
/// blocking pool.
#[derive(Debug, Clone)]
pub struct PluginService {
    backend: Arc<dyn KekBackend>,
}

impl PluginService {
    pub fn new(backend: Arc<dyn KekBackend>) -> Self {
        PluginService { backend }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn KekBackend) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("backend task failed: {e}")))
    }
}

#[tonic::async_trait]
impl KeyManagementService for PluginService {
    async fn status(
        &self,
        _request: Request<v2::StatusRequest>,
    ) -> Result<Response<v2::StatusResponse>, Status> {
        let (key_id, health) = self
            .blocking(|b| (b.current_key_id(), self_test(b)))
            .await?;
        let healthz = match health {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "status: the key-encryption key self-test failed");
                format!("the key-encryption key self-test failed: {e}")
            }
        };
        Ok(Response::new(v2::StatusResponse {
            version: API_VERSION.into(),
            healthz,
            key_id,
        }))
    }

    async fn encrypt(
        &self,
        request: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        let request = request.into_inner();
        let uid = request.uid;
        let plaintext = Zeroizing::new(request.plaintext);
        let wrapped = self
            .blocking(move |b| wrap(b, plaintext.as_slice()))
            .await?;
        match wrapped {
            Ok((key_id, ciphertext)) => {
                tracing::info!(%uid, %key_id, "encrypt");
                Ok(Response::new(v2::EncryptResponse {
                    ciphertext,
                    key_id,
                    annotations: Default::default(),
                }))
            }
            Err(e) => {
                tracing::warn!(%uid, error = %e, "encrypt failed");
                Err(Status::internal(format!("encrypt: {e}")))
            }
        }
    }

    async fn decrypt(
        &self,
        request: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        let request = request.into_inner();
        let uid = request.uid;
        let key_id = request.key_id;
        let ciphertext = request.ciphertext;
        let id = key_id.clone();
        let opened = self.blocking(move |b| unwrap(b, &id, &ciphertext)).await?;
        match opened {
            Ok(mut plaintext) => {
                tracing::info!(%uid, %key_id, "decrypt");
                // The response takes the bytes; the zeroizing buffer is left empty.
                Ok(Response::new(v2::DecryptResponse {
                    plaintext: std::mem::take(&mut *plaintext),
                }))
            }
            Err(e) => {
                tracing::warn!(%uid, %key_id, error = %e, "decrypt failed");
                Err(Status::invalid_argument(format!("decrypt: {e}")))
            }
        }
    }
}

/// Serves `backend` on `endpoint` until `shutdown` resolves, then removes the socket file.
/// A stale socket file is replaced; one a live process answers on is not.
pub async fn serve(
    endpoint: &Endpoint,
    backend: Arc<dyn KekBackend>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let listener = endpoint
        .listen()
        .map_err(|e| format!("cannot listen on {endpoint}: {e}"))?;
    if let Endpoint::Path(p) = endpoint {
        use std::os::unix::fs::PermissionsExt;
        // Only the owner (the API server's user) may talk to the plugin.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("setting the mode of {}: {e}", p.display()))?;
    }
    tracing::info!(%endpoint, backend = %backend.describe(), key_id = %backend.current_key_id(), "KMS v2 plugin serving");
    let result = tonic::transport::Server::builder()
        .add_service(KeyManagementServiceServer::new(PluginService::new(backend)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("serving on {endpoint}: {e}"));
    endpoint.remove();
    result
}

/// A key id that names a key without revealing it: `<prefix>-` and 32 hex digits of a
/// domain-separated SHA-256 over what identifies the key.
pub(crate) fn derive_key_id(prefix: &str, parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"atrest kms-plugin key id v1\0");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    format!("{prefix}-{}", hex::encode(&digest[..16]))
}
