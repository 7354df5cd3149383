//! KMS v1 envelope encryption (spec c.5): deprecated upstream and off unless the `KMSv1`
//! feature gate is on, kept so that data written by older clusters can still be read.
//!
//! `k8s:enc:kms:v1:<name>:` || uint16_be(len(EDEK)) || EDEK || AES-GCM(DEK) payload, where
//! EDEK is the plugin's encryption of a fresh 32-byte DEK per write. Values written before
//! v1.25 used AES-CBC for the payload; they are read and reported stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ciphers::{AesCbc, AesGcm};
use super::{Opened, ProviderId, ProviderKind};
use crate::error::CipherError;
use crate::key::Key;
use crate::kms::{KmsError, KmsV1Service};

const DEK_LEN: usize = 32;

/// One `kms` provider with `apiVersion: v1`.
pub struct KmsV1Provider {
    name: String,
    prefix: Vec<u8>,
    timeout: Duration,
    service: Arc<dyn KmsV1Service>,
    /// EDEK -> unwrapped DEK, bounded by `cachesize` (disabled when negative).
    cache: Mutex<HashMap<Vec<u8>, Arc<Key>>>,
    cache_size: i32,
}

impl std::fmt::Debug for KmsV1Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsV1Provider")
            .field("name", &self.name)
            .finish()
    }
}

impl KmsV1Provider {
    pub fn new(
        name: &str,
        timeout: Duration,
        cache_size: i32,
        service: Arc<dyn KmsV1Service>,
    ) -> Self {
        KmsV1Provider {
            name: name.to_string(),
            prefix: format!("k8s:enc:kms:v1:{name}:").into_bytes(),
            timeout,
            service,
            cache: Mutex::new(HashMap::new()),
            cache_size,
        }
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The provider's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        crate::kms::with_timeout(&self.name, self.timeout, fut).await
    }

    fn id(&self) -> ProviderId {
        ProviderId::named(ProviderKind::KmsV1, &self.name)
    }

    pub(crate) async fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, ProviderId), CipherError> {
        let dek = Key::generate(DEK_LEN).map_err(|e| CipherError::Random(e.to_string()))?;
        let edek = self.call(self.service.encrypt(dek.as_bytes())).await?;
        let edek_len = u16::try_from(edek.len()).map_err(|_| {
            CipherError::Envelope(format!("plugin returned an EDEK of {} bytes", edek.len()))
        })?;
        let mut out = Vec::with_capacity(self.prefix.len() + 2 + edek.len() + plaintext.len() + 28);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&edek_len.to_be_bytes());
        out.extend_from_slice(&edek);
        AesGcm::new(&dek)?.seal_into(&mut out, plaintext, aad)?;
        Ok((out, self.id()))
    }

    pub(crate) async fn open(&self, payload: &[u8], aad: &[u8]) -> Result<Opened, CipherError> {
        let malformed =
            || CipherError::Envelope("failed to read uint16 length prefixed data".into());
        let (len_bytes, rest) = payload.split_first_chunk::<2>().ok_or_else(malformed)?;
        let edek_len = usize::from(u16::from_be_bytes(*len_bytes));
        if rest.len() < edek_len {
            return Err(malformed());
        }
        let (edek, data) = rest.split_at(edek_len);
        let dek = match self.cached(edek) {
            Some(dek) => dek,
            None => {
                let dek = Arc::new(Key::from_bytes(
                    self.call(self.service.decrypt(edek)).await?,
                ));
                self.remember(edek, dek.clone());
                dek
            }
        };
        let gcm_error = match AesGcm::new(&dek).and_then(|gcm| gcm.open(data, aad)) {
            Ok(plaintext) => {
                return Ok(Opened {
                    plaintext,
                    provider: self.id(),
                    stale: false,
                })
            }
            Err(e) => e,
        };
        // Pre-1.25 values: AES-CBC payload; readable, and stale so the next write upgrades it.
        match AesCbc::new(&dek).and_then(|cbc| cbc.open(data)) {
            Ok(plaintext) => Ok(Opened {
                plaintext,
                provider: self.id(),
                stale: true,
            }),
            Err(_) => Err(gcm_error),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Key>>> {
        // Single inserts/removes only: a poisoned map is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, edek: &[u8]) -> Option<Arc<Key>> {
        if self.cache_size < 0 {
            return None;
        }
        self.lock().get(edek).cloned()
    }

    fn remember(&self, edek: &[u8], dek: Arc<Key>) {
        if self.cache_size < 0 {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= self.cache_size as usize {
            // Simple bounded cache: drop an arbitrary entry; a miss costs one plugin call.
            if let Some(k) = cache.keys().next().cloned() {
                cache.remove(&k);
            }
        }
        cache.insert(edek.to_vec(), dek);
    }
}
