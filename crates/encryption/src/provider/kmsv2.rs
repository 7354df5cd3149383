//! KMS v2 envelope encryption (spec c.6 and d.5/d.6).
//!
//! A value is `k8s:enc:kms:v2:<name>:` followed by a protobuf `v2.EncryptedObject`. New values
//! use the HKDF seed construction: one 32-byte seed per process and key id, wrapped by the
//! plugin once; every write derives a fresh DEK from the seed and 32 random bytes of `info`.
//! Values of the older construction (a plaintext DEK wrapped by the plugin) are still read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use ring::hmac;
use sha2::{Digest, Sha256};

use super::ciphers::{random_bytes, AesGcm};
use super::{Opened, ProviderId, ProviderKind};
use crate::error::CipherError;
use crate::key::Key;
use crate::kms::{new_uid, KmsError, KmsLifecycle, KmsObserver, KmsV2Service};

/// `v2.EncryptedObject` of upstream's `kmsv2/v2/api.proto`. Encoding follows field-number
/// order and (for annotations) sorted map order, which reproduces upstream's bytes.
#[derive(Clone, PartialEq, Message)]
pub struct EncryptedObject {
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    #[prost(string, tag = "2")]
    pub key_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    #[prost(btree_map = "string, bytes", tag = "4")]
    pub annotations: BTreeMap<String, Vec<u8>>,
    #[prost(int32, tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// `v2.EncryptedDEKSourceType`.
pub const DEK_SOURCE_AES_GCM_KEY: i32 = 0;
pub const DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;

const MAX_DEK_SOURCE_LEN: usize = 1024;
const MAX_KEY_ID_LEN: usize = 1024;
const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;
const SEED_LEN: usize = 32;
const INFO_LEN: usize = 32;
/// How long a health probe's result is reused (upstream d.5): after a success, after a failure.
const PROBE_OK_TTL: Duration = Duration::from_secs(20);
const PROBE_FAILED_TTL: Duration = Duration::from_secs(3);
/// How many unwrapped DEK sources are kept; each costs one plugin call to rebuild.
const DEK_CACHE_CAPACITY: usize = 1024;

impl EncryptedObject {
    /// Upstream `ValidateEncryptedObject`, applied on both encode and decode.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(
            self.encrypted_dek_source_type,
            DEK_SOURCE_AES_GCM_KEY | DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
        ) {
            return Err(format!(
                "unknown encryptedDEKSourceType: {}",
                self.encrypted_dek_source_type
            ));
        }
        if self.encrypted_data.is_empty() {
            return Err("encrypted data is empty".into());
        }
        validate_dek_source(&self.encrypted_dek_source)?;
        validate_key_id(&self.key_id)?;
        validate_annotations(&self.annotations)
    }

    /// The key of the unwrapped-DEK cache (upstream's cache key layout).
    fn cache_key(&self) -> [u8; 32] {
        fn u16len(h: &mut Sha256, b: &[u8]) {
            // Lengths were validated to be well under 64 KiB.
            h.update((b.len() as u16).to_be_bytes());
            h.update(b);
        }
        let mut h = Sha256::new();
        h.update((self.encrypted_dek_source_type as u32).to_be_bytes());
        u16len(&mut h, &self.encrypted_dek_source);
        u16len(&mut h, self.key_id.as_bytes());
        if !self.annotations.is_empty() {
            h.update((self.annotations.len() as u32).to_be_bytes());
            for (k, v) in &self.annotations {
                u16len(&mut h, k.as_bytes());
                u16len(&mut h, v);
            }
        }
        h.finalize().into()
    }
}

fn validate_dek_source(source: &[u8]) -> Result<(), String> {
    if source.is_empty() {
        return Err("encryptedDEKSource is empty".into());
    }
    if source.len() > MAX_DEK_SOURCE_LEN {
        return Err(format!(
            "encryptedDEKSource is {} bytes, which exceeds the max size of {MAX_DEK_SOURCE_LEN}",
            source.len()
        ));
    }
    Ok(())
}

fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("keyID is empty".into());
    }
    if key_id.len() > MAX_KEY_ID_LEN {
        return Err(format!(
            "keyID is {} bytes, which exceeds the max size of {MAX_KEY_ID_LEN}",
            key_id.len()
        ));
    }
    Ok(())
}

fn validate_annotations(annotations: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let mut total = 0usize;
    for (k, v) in annotations {
        if !is_fqdn(k) {
            return Err(format!(
                "annotation key {k:?} is not a fully qualified domain name"
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_LEN {
        return Err(format!(
            "annotations are {total} bytes, which exceeds the max size of {MAX_ANNOTATIONS_LEN}"
        ));
    }
    Ok(())
}

/// A lower-case RFC 1123 subdomain of at least two labels (one trailing dot tolerated).
fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// An unwrapped DEK source, ready to open values.
// Cached behind an Arc; variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum DekSource {
    /// Type 1: HMAC key over the seed; DEK = HMAC-SHA256(seed, info || 0x01), i.e.
    /// HKDF-Expand with a single output block.
    HkdfSeed(hmac::Key),
    /// Type 0: the DEK itself.
    AesGcmKey(AesGcm),
}

impl DekSource {
    fn from_plaintext(source_type: i32, plaintext: &Key) -> Result<Self, CipherError> {
        if source_type == DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED {
            if plaintext.len() < SEED_LEN {
                return Err(CipherError::Envelope(format!(
                    "seed is {} bytes, at least {SEED_LEN} are required",
                    plaintext.len()
                )));
            }
            Ok(DekSource::HkdfSeed(hmac::Key::new(
                hmac::HMAC_SHA256,
                plaintext.as_bytes(),
            )))
        } else {
            Ok(DekSource::AesGcmKey(AesGcm::new(plaintext)?))
        }
    }

    fn derive(seed: &hmac::Key, info: &[u8]) -> Result<AesGcm, CipherError> {
        let tag = hmac::sign(seed, &[info, &[1u8]].concat());
        AesGcm::new(&Key::from_bytes(tag.as_ref().to_vec()))
    }

    fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        match self {
            DekSource::HkdfSeed(seed) => {
                if data.len() < INFO_LEN {
                    return Err(CipherError::TooShort);
                }
                let (info, sealed) = data.split_at(INFO_LEN);
                Self::derive(seed, info)?.open(sealed, aad)
            }
            DekSource::AesGcmKey(gcm) => gcm.open(data, aad),
        }
    }
}

/// What this process writes with: its seed, wrapped by the plugin under `key_id`.
struct WriteState {
    seed: hmac::Key,
    key_id: String,
    encrypted_dek_source: Vec<u8>,
    annotations: BTreeMap<String, Vec<u8>>,
    expires_at: Instant,
}

/// One `kms` provider with `apiVersion: v2`.
pub struct KmsV2Provider {
    name: String,
    prefix: Vec<u8>,
    timeout: Duration,
    service: std::sync::Arc<dyn KmsV2Service>,
    state: tokio::sync::RwLock<Option<WriteState>>,
    dek_cache: Mutex<DekCache>,
    lifecycle: KmsLifecycle,
    observer: Option<std::sync::Arc<dyn KmsObserver>>,
    /// The last failed refresh: inline retries (a write or read with no usable state) wait
    /// `lifecycle.unhealthy_poll` after it, so an outage does not put a plugin call on
    /// every request.
    last_failure: Mutex<Option<(Instant, KmsError)>>,
    /// The last health probe and when it ran.
    last_probe: tokio::sync::Mutex<Option<(Instant, Result<(), KmsError>)>>,
}

impl std::fmt::Debug for KmsV2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsV2Provider")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Default)]
struct DekCache {
    entries: HashMap<[u8; 32], (u64, std::sync::Arc<DekSource>)>,
    clock: u64,
}

impl DekCache {
    fn get(&mut self, key: &[u8; 32]) -> Option<std::sync::Arc<DekSource>> {
        self.clock += 1;
        let now = self.clock;
        self.entries.get_mut(key).map(|(used, dek)| {
            *used = now;
            dek.clone()
        })
    }

    fn insert(&mut self, key: [u8; 32], dek: std::sync::Arc<DekSource>) {
        if self.entries.len() >= DEK_CACHE_CAPACITY {
            // Evict the least recently used entry; O(n) but only on a miss of a full cache.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        self.entries.insert(key, (self.clock, dek));
    }
}

impl KmsV2Provider {
    pub fn new(name: &str, timeout: Duration, service: std::sync::Arc<dyn KmsV2Service>) -> Self {
        KmsV2Provider {
            name: name.to_string(),
            prefix: format!("k8s:enc:kms:v2:{name}:").into_bytes(),
            timeout,
            service,
            state: tokio::sync::RwLock::new(None),
            dek_cache: Mutex::new(DekCache::default()),
            lifecycle: KmsLifecycle::default(),
            observer: None,
            last_failure: Mutex::new(None),
            last_probe: tokio::sync::Mutex::new(None),
        }
    }

    /// Uses other timing rules than upstream's (tests shorten them).
    pub fn with_lifecycle(mut self, lifecycle: KmsLifecycle) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    /// Reports key ids, cache sizes and misses to `observer`.
    pub fn with_observer(mut self, observer: Option<std::sync::Arc<dyn KmsObserver>>) -> Self {
        self.observer = observer;
        self
    }

    /// The timing rules in force.
    pub fn lifecycle(&self) -> KmsLifecycle {
        self.lifecycle
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        crate::kms::with_timeout(&self.name, self.timeout, fut).await
    }

    fn invalid(&self, message: impl Into<String>) -> KmsError {
        KmsError::InvalidResponse {
            name: self.name.clone(),
            message: message.into(),
        }
    }

    /// One health probe (upstream d.5/d.6): `Status`, and when the plugin's key id differs
    /// from the one this process writes with, a new seed wrapped by `Encrypt`. On failure the
    /// old state stays usable until it expires.
    pub async fn refresh(&self) -> Result<(), KmsError> {
        let result = self.refresh_once().await;
        let mut last = lock(&self.last_failure);
        match &result {
            Ok(()) => *last = None,
            Err(e) => *last = Some((Instant::now(), e.clone())),
        }
        result
    }

    /// A health probe as `/healthz/kms-providers` runs it: [`KmsV2Provider::refresh`], unless
    /// the last probe is younger than 20 s (3 s if it failed), whose result is returned.
    pub async fn probe(&self) -> Result<(), KmsError> {
        let mut last = self.last_probe.lock().await;
        if let Some((at, result)) = last.as_ref() {
            let ttl = if result.is_ok() {
                PROBE_OK_TTL
            } else {
                PROBE_FAILED_TTL
            };
            if at.elapsed() < ttl {
                return result.clone();
            }
        }
        let result = self.refresh().await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Whether this provider can write now (a seed wrapped under the plugin's key id, not
    /// expired).
    pub async fn can_write(&self) -> bool {
        matches!(&*self.state.read().await, Some(s) if s.expires_at > Instant::now())
    }

    async fn refresh_once(&self) -> Result<(), KmsError> {
        let status = self.call(self.service.status()).await?;
        if status.healthz != "ok" {
            return Err(KmsError::Unhealthy {
                name: self.name.clone(),
                message: status.healthz,
            });
        }
        if status.version != "v2" && status.version != "v2beta1" {
            return Err(self.invalid(format!(
                "unsupported KMS API version {:?}, want v2",
                status.version
            )));
        }
        if let Err(e) = validate_key_id(&status.key_id) {
            if let Some(o) = &self.observer {
                o.invalid_status_key_id(
                    &self.name,
                    if status.key_id.is_empty() {
                        "empty"
                    } else {
                        "too_long"
                    },
                );
            }
            return Err(self.invalid(format!("status: {e}")));
        }
        if let Some(o) = &self.observer {
            o.status_key_id(&self.name, &status.key_id);
        }
        let expires_at = Instant::now() + self.lifecycle.write_state_ttl;
        {
            let mut state = self.state.write().await;
            if let Some(s) = state.as_mut().filter(|s| s.key_id == status.key_id) {
                s.expires_at = expires_at;
                return Ok(());
            }
        }
        let seed =
            Key::generate(SEED_LEN).map_err(|e| self.invalid(format!("generating a seed: {e}")))?;
        let response = self
            .call(self.service.encrypt(&new_uid(), seed.as_bytes()))
            .await?;
        if response.key_id != status.key_id {
            return Err(self.invalid(format!(
                "encrypt returned key id {:?}, but status reported {:?}",
                response.key_id, status.key_id
            )));
        }
        validate_dek_source(&response.ciphertext).map_err(|e| self.invalid(e))?;
        validate_annotations(&response.annotations).map_err(|e| self.invalid(e))?;
        // Reads of this process's own writes need no plugin call: the seed goes into the
        // read cache under the key its values will carry (upstream does the same).
        let cache_key = EncryptedObject {
            encrypted_data: Vec::new(),
            key_id: response.key_id.clone(),
            encrypted_dek_source: response.ciphertext.clone(),
            annotations: response.annotations.clone(),
            encrypted_dek_source_type: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
        }
        .cache_key();
        let own = std::sync::Arc::new(DekSource::HkdfSeed(hmac::Key::new(
            hmac::HMAC_SHA256,
            seed.as_bytes(),
        )));
        let size = {
            let mut cache = self.lock_cache();
            cache.insert(cache_key, own);
            cache.entries.len()
        };
        if let Some(o) = &self.observer {
            o.dek_source_cache_size(&self.name, size);
        }
        let new_state = WriteState {
            seed: hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes()),
            key_id: response.key_id,
            encrypted_dek_source: response.ciphertext,
            annotations: response.annotations,
            expires_at,
        };
        *self.state.write().await = Some(new_state);
        Ok(())
    }

    /// The key id this process currently writes with, if it has a write state.
    pub async fn current_key_id(&self) -> Option<String> {
        self.state.read().await.as_ref().map(|s| s.key_id.clone())
    }

    /// Refreshes inline, unless a refresh failed less than `unhealthy_poll` ago (then that
    /// failure is returned: the background poll recovers).
    async fn refresh_inline(&self) -> Result<(), KmsError> {
        let recent = lock(&self.last_failure)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.lifecycle.unhealthy_poll)
            .map(|(_, e)| e.clone());
        match recent {
            Some(e) => Err(e),
            None => self.refresh().await,
        }
    }

    /// A write needs a seed whose expiration has not passed (upstream d.6).
    async fn ensure_write_state(&self) -> Result<(), KmsError> {
        if self.can_write().await {
            return Ok(());
        }
        self.refresh_inline()
            .await
            .map_err(|e| KmsError::NoWriteKey {
                name: self.name.clone(),
                reason: e.to_string(),
            })
    }

    pub(crate) async fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, ProviderId), CipherError> {
        self.ensure_write_state().await?;
        let state = self.state.read().await;
        let Some(state) = state.as_ref() else {
            return Err(self
                .invalid("no write state after a successful refresh")
                .into());
        };
        let info = random_bytes::<INFO_LEN>()?;
        let dek = DekSource::derive(&state.seed, &info)?;
        let mut data = Vec::with_capacity(INFO_LEN + 12 + plaintext.len() + 16);
        data.extend_from_slice(&info);
        dek.seal_into(&mut data, plaintext, aad)?;
        let object = EncryptedObject {
            encrypted_data: data,
            key_id: state.key_id.clone(),
            encrypted_dek_source: state.encrypted_dek_source.clone(),
            annotations: state.annotations.clone(),
            encrypted_dek_source_type: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
        };
        object.validate().map_err(CipherError::Envelope)?;
        let mut out = Vec::with_capacity(self.prefix.len() + object.encoded_len());
        out.extend_from_slice(&self.prefix);
        object
            .encode(&mut out)
            .map_err(|e| CipherError::Envelope(e.to_string()))?;
        if let Some(o) = &self.observer {
            o.key_id_used(&self.name, "to_storage", &state.key_id);
        }
        let id = ProviderId {
            kind: ProviderKind::KmsV2,
            name: Some(self.name.clone()),
            kms_key_id: Some(state.key_id.clone()),
        };
        Ok((out, id))
    }

    /// Reads the payload after the prefix.
    pub(crate) async fn open(&self, payload: &[u8], aad: &[u8]) -> Result<Opened, CipherError> {
        if aad.is_empty() {
            return Err(CipherError::Envelope(
                "the storage key (authenticated data) must not be empty".into(),
            ));
        }
        let object = EncryptedObject::decode(payload).map_err(|e| {
            CipherError::Envelope(format!("failed to unmarshal EncryptedObject: {e}"))
        })?;
        object.validate().map_err(CipherError::Envelope)?;
        // Reads never expire: a seed's expiration only stops writes, and an unwrapped DEK
        // source stays cached for as long as the cache holds it. Without any write state yet
        // (a process that never reached its plugin), one refresh is tried so staleness can be
        // told; if it fails the value is still read, and reported stale.
        if self.current_key_id().await.is_none() {
            let _ = self.refresh_inline().await;
        }
        let current_key_id = self.current_key_id().await;

        let cache_key = object.cache_key();
        let cached = self.lock_cache().get(&cache_key);
        let dek = match cached {
            Some(dek) => dek,
            None => {
                if let Some(o) = &self.observer {
                    o.cache_miss();
                }
                let plaintext = self
                    .call(self.service.decrypt(
                        &new_uid(),
                        &object.key_id,
                        &object.encrypted_dek_source,
                        &object.annotations,
                    ))
                    .await?;
                let plaintext = Key::from_bytes(plaintext);
                let dek = std::sync::Arc::new(DekSource::from_plaintext(
                    object.encrypted_dek_source_type,
                    &plaintext,
                )?);
                let size = {
                    let mut cache = self.lock_cache();
                    cache.insert(cache_key, dek.clone());
                    cache.entries.len()
                };
                if let Some(o) = &self.observer {
                    o.dek_source_cache_size(&self.name, size);
                }
                dek
            }
        };
        let plaintext = dek.open(&object.encrypted_data, aad)?;
        if let Some(o) = &self.observer {
            o.key_id_used(&self.name, "from_storage", &object.key_id);
        }
        let stale = current_key_id.as_deref() != Some(object.key_id.as_str())
            || object.encrypted_dek_source_type != DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED;
        Ok(Opened {
            plaintext,
            provider: ProviderId {
                kind: ProviderKind::KmsV2,
                name: Some(self.name.clone()),
                kms_key_id: Some(object.key_id),
            },
            stale,
        })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, DekCache> {
        lock(&self.dek_cache)
    }
}

/// A panic while holding these locks cannot leave their data inconsistent (every mutation is
/// a single insert, remove or assignment), so a poisoned lock is safe to keep using.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_rules() {
        assert!(is_fqdn("local-kek.kms.kubernetes.io"));
        assert!(is_fqdn("a.b."));
        assert!(!is_fqdn("single"));
        assert!(!is_fqdn("Upper.case"));
        assert!(!is_fqdn("-a.b"));
        assert!(!is_fqdn(""));
    }

    #[test]
    fn validation_rejects_bad_objects() {
        let good = EncryptedObject {
            encrypted_data: vec![1],
            key_id: "1".into(),
            encrypted_dek_source: vec![2],
            annotations: BTreeMap::new(),
            encrypted_dek_source_type: 1,
        };
        assert!(good.validate().is_ok());
        let mut o = good.clone();
        o.encrypted_dek_source_type = 7;
        assert_eq!(
            o.validate().unwrap_err(),
            "unknown encryptedDEKSourceType: 7"
        );
        let mut o = good.clone();
        o.encrypted_data.clear();
        assert!(o.validate().is_err());
        let mut o = good.clone();
        o.key_id = "k".repeat(1025);
        assert!(o.validate().unwrap_err().contains("exceeds the max size"));
        let mut o = good.clone();
        o.encrypted_dek_source = vec![0; 1025];
        assert!(o.validate().is_err());
        let mut o = good;
        o.annotations.insert("notfqdn".into(), vec![]);
        assert!(o.validate().is_err());
    }
}
