//! Providers: one element of a rule's provider list, able to write and read values.

pub(crate) mod ciphers;
pub(crate) mod kmsv1;
pub(crate) mod kmsv2;
mod nonce;

use std::fmt;
use std::sync::Arc;

use crate::config::NamedKey;
use crate::error::{CipherError, ProviderFailure};
use crate::key::KeyName;

pub use kmsv1::KmsV1Provider;
pub use kmsv2::EncryptedObject;
pub use kmsv2::KmsV2Provider;

/// The reserved start of every encrypted value.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// The kind of a provider, as the configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    Identity,
    AesCbc,
    AesGcm,
    Secretbox,
    KmsV1,
    KmsV2,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Identity => "identity",
            ProviderKind::AesCbc => "aescbc",
            ProviderKind::AesGcm => "aesgcm",
            ProviderKind::Secretbox => "secretbox",
            ProviderKind::KmsV1 => "kms-v1",
            ProviderKind::KmsV2 => "kms-v2",
        }
    }

    /// Whether values written by this provider are encrypted.
    pub fn encrypts(self) -> bool {
        self != ProviderKind::Identity
    }
}

/// Which provider (and which key of it) wrote or read a value: `identity`, `aescbc:key1`,
/// `kms-v2:my-plugin`. For KMS v2 the plugin's key id is carried too, since that is what a
/// KEK rotation changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId {
    pub kind: ProviderKind,
    /// The key name (static providers) or the KMS provider name.
    pub name: Option<String>,
    /// The KMS v2 key id recorded in the value.
    pub kms_key_id: Option<String>,
}

impl ProviderId {
    pub(crate) fn identity() -> Self {
        ProviderId {
            kind: ProviderKind::Identity,
            name: None,
            kms_key_id: None,
        }
    }

    pub(crate) fn named(kind: ProviderKind, name: &str) -> Self {
        ProviderId {
            kind,
            name: Some(name.to_string()),
            kms_key_id: None,
        }
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{}", self.kind.as_str(), name),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

/// The cipher behind one named key of a static provider.
// Built once per configured key; variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum StaticCipher {
    AesGcm(ciphers::AesGcm),
    AesCbc(ciphers::AesCbc),
    Secretbox(ciphers::Secretbox),
}

impl StaticCipher {
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), CipherError> {
        match self {
            StaticCipher::AesGcm(c) => c.seal_into(out, plaintext, aad),
            StaticCipher::AesCbc(c) => c.seal_into(out, plaintext),
            StaticCipher::Secretbox(c) => c.seal_into(out, plaintext),
        }
    }

    fn open(&self, payload: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        match self {
            StaticCipher::AesGcm(c) => c.open(payload, aad),
            StaticCipher::AesCbc(c) => c.open(payload),
            StaticCipher::Secretbox(c) => c.open(payload),
        }
    }
}

#[derive(Debug)]
pub(crate) struct KeyedCipher {
    pub name: KeyName,
    /// `<name>:`
    pub prefix: Vec<u8>,
    pub cipher: StaticCipher,
}

/// `aescbc`, `aesgcm` or `secretbox`: an ordered list of named keys behind one prefix.
#[derive(Debug)]
pub(crate) struct StaticProvider {
    pub kind: ProviderKind,
    /// `k8s:enc:<kind>:v1:`
    pub prefix: Vec<u8>,
    pub keys: Vec<KeyedCipher>,
}

/// What a successful read returns from one provider.
pub(crate) struct Opened {
    pub plaintext: Vec<u8>,
    pub provider: ProviderId,
    pub stale: bool,
}

impl StaticProvider {
    pub(crate) fn new(kind: ProviderKind, keys: &[NamedKey]) -> Result<Self, CipherError> {
        let keys = keys
            .iter()
            .map(|k| {
                let cipher = match kind {
                    ProviderKind::AesGcm => StaticCipher::AesGcm(ciphers::AesGcm::new(&k.key)?),
                    ProviderKind::AesCbc => StaticCipher::AesCbc(ciphers::AesCbc::new(&k.key)?),
                    _ => StaticCipher::Secretbox(ciphers::Secretbox::new(&k.key)?),
                };
                Ok(KeyedCipher {
                    name: k.name.clone(),
                    prefix: format!("{}:", k.name).into_bytes(),
                    cipher,
                })
            })
            .collect::<Result<Vec<_>, CipherError>>()?;
        let prefix = format!("k8s:enc:{}:v1:", kind.as_str()).into_bytes();
        Ok(StaticProvider { kind, prefix, keys })
    }

    /// The first key writes (upstream b.1).
    pub(crate) fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, ProviderId), CipherError> {
        // Invariant: validation guarantees at least one key per static provider.
        let Some(first) = self.keys.first() else {
            return Err(CipherError::KeyLength(0));
        };
        let mut out =
            Vec::with_capacity(self.prefix.len() + first.prefix.len() + plaintext.len() + 64);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&first.prefix);
        first.cipher.seal_into(&mut out, plaintext, aad)?;
        Ok((out, ProviderId::named(self.kind, first.name.as_str())))
    }

    /// Tries every key whose `<name>:` matches, in order (upstream b.2 at key level); a read
    /// with a non-first key is stale.
    pub(crate) fn open(&self, payload: &[u8], aad: &[u8]) -> Result<Opened, Vec<ProviderFailure>> {
        let mut failures = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let Some(rest) = payload.strip_prefix(key.prefix.as_slice()) else {
                continue;
            };
            match key.cipher.open(rest, aad) {
                Ok(plaintext) => {
                    return Ok(Opened {
                        plaintext,
                        provider: ProviderId::named(self.kind, key.name.as_str()),
                        stale: i != 0,
                    })
                }
                Err(e) => failures.push(ProviderFailure {
                    provider: format!("{}:{}", self.kind.as_str(), key.name),
                    error: e.to_string(),
                }),
            }
        }
        if failures.is_empty() {
            let what = match self.kind {
                ProviderKind::Secretbox => "Secretbox",
                _ => "AES",
            };
            // Upstream's message, and which key the value asks for (up to its first `:`; a
            // key name may contain more, so this names it only as far as it can be told).
            let named = payload
                .iter()
                .position(|b| *b == b':')
                .filter(|&end| end > 0 && end <= 64)
                .and_then(|end| std::str::from_utf8(&payload[..end]).ok())
                .filter(|name| name.chars().all(|c| !c.is_control()))
                .map(|name| format!(" (the value names key {name:?}, which is not configured)"))
                .unwrap_or_default();
            failures.push(ProviderFailure {
                provider: self.kind.as_str().to_string(),
                error: format!(
                    "no matching key was found for the provided {what} transformer{named}"
                ),
            });
        }
        Err(failures)
    }
}

/// Identity refuses values that carry the reserved encrypted prefix (upstream b.3).
pub(crate) fn identity_open(data: &[u8]) -> Option<Vec<u8>> {
    (!data.starts_with(ENCRYPTED_PREFIX)).then(|| data.to_vec())
}

/// Shared pointer types used by the chain.
pub(crate) type SharedKmsV2 = Arc<KmsV2Provider>;
pub(crate) type SharedKmsV1 = Arc<KmsV1Provider>;
