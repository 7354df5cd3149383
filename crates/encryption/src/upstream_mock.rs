//! Upstream's KMS test plugin, for tests and fuzzing (feature `upstream-mock`, never in a
//! release build): it "wraps" a key as the standard base64 of its bytes, under a settable
//! key id, with one annotation, as the plugin upstream's KMS v2 fixture was written with.
//! Not a secure plugin; it exists to read upstream's own test data and to exercise the
//! envelope code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::config::KmsConfig;
use crate::kms::{
    KmsConnector, KmsEncryptResponse, KmsError, KmsStatus, KmsV1Service, KmsV2Service,
};

fn text(m: &Mutex<String>) -> String {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The plugin; `key_id` and `healthz` are what `Status` answers, the counters count calls.
#[derive(Debug)]
pub struct Base64Kms {
    pub key_id: Mutex<String>,
    pub healthz: Mutex<String>,
    pub encrypt_calls: AtomicUsize,
    pub decrypt_calls: AtomicUsize,
}

impl Base64Kms {
    pub fn new(key_id: &str) -> Arc<Self> {
        Arc::new(Base64Kms {
            key_id: Mutex::new(key_id.into()),
            healthz: Mutex::new("ok".into()),
            encrypt_calls: AtomicUsize::new(0),
            decrypt_calls: AtomicUsize::new(0),
        })
    }

    pub fn connector() -> Base64KmsConnector {
        Base64KmsConnector(Base64Kms::new("1"))
    }
}

#[async_trait::async_trait]
impl KmsV2Service for Base64Kms {
    async fn status(&self) -> Result<KmsStatus, KmsError> {
        Ok(KmsStatus {
            version: "v2beta1".into(),
            healthz: text(&self.healthz),
            key_id: text(&self.key_id),
        })
    }

    async fn encrypt(&self, _uid: &str, plaintext: &[u8]) -> Result<KmsEncryptResponse, KmsError> {
        self.encrypt_calls.fetch_add(1, Ordering::SeqCst);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "local-kek.kms.kubernetes.io".to_string(),
            b"encrypted-local-kek".to_vec(),
        );
        Ok(KmsEncryptResponse {
            ciphertext: base64::engine::general_purpose::STANDARD
                .encode(plaintext)
                .into_bytes(),
            key_id: text(&self.key_id),
            annotations,
        })
    }

    async fn decrypt(
        &self,
        _uid: &str,
        _key_id: &str,
        ciphertext: &[u8],
        _annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, KmsError> {
        self.decrypt_calls.fetch_add(1, Ordering::SeqCst);
        base64::engine::general_purpose::STANDARD
            .decode(ciphertext)
            .map_err(|e| KmsError::Rpc {
                name: "base64".into(),
                code: "InvalidArgument".into(),
                message: e.to_string(),
            })
    }
}

#[async_trait::async_trait]
impl KmsV1Service for Base64Kms {
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(base64::engine::general_purpose::STANDARD
            .encode(plaintext)
            .into_bytes())
    }

    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, KmsError> {
        base64::engine::general_purpose::STANDARD
            .decode(ciphertext)
            .map_err(|e| KmsError::Rpc {
                name: "base64".into(),
                code: "InvalidArgument".into(),
                message: e.to_string(),
            })
    }
}

/// Connects every `kms` provider of a configuration to one [`Base64Kms`].
#[derive(Debug)]
pub struct Base64KmsConnector(pub Arc<Base64Kms>);

impl KmsConnector for Base64KmsConnector {
    fn connect_v2(&self, _config: &KmsConfig) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(self.0.clone())
    }
    fn connect_v1(&self, _config: &KmsConfig) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Ok(self.0.clone())
    }
}
