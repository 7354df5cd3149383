//! Error types of the transform (encrypt/decrypt) family.
//!
//! None of them ever carries key bytes or plaintext: only the storage key, the resource, the
//! provider and key *names*, and what went wrong.

use std::fmt;

use crate::kms::KmsError;
use crate::provider::ProviderId;
use crate::resource::GroupResource;

/// A low-level failure of one cipher on one value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("the stored data was shorter than the required size")]
    TooShort,
    #[error("the stored data is not a multiple of the block size")]
    NotBlockMultiple,
    #[error("{0}")]
    Padding(&'static str),
    #[error("{0}")]
    Authentication(&'static str),
    #[error("key of {0} bytes is not a valid size for this cipher")]
    KeyLength(usize),
    #[error("sealing failed")]
    Seal,
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("invalid data encountered by envelope transformer: {0}")]
    Envelope(String),
    #[error("{0}")]
    Kms(#[from] KmsError),
}

/// Which way a transform went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Encrypt,
    Decrypt,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Encrypt => "encrypting",
            Operation::Decrypt => "decrypting",
        })
    }
}

/// One provider (or one key of it) that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFailure {
    /// `aescbc:key1`, `kms:v2:my-plugin`, or just `aescbc` when no key name matched.
    pub provider: String,
    pub error: String,
}

/// Why a value could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformFailure {
    /// No configured provider's prefix matched the stored value.
    NoMatchingPrefix,
    /// The resource has no encryption rule, and the value is encrypted.
    IdentityRefused,
    /// Every provider whose prefix matched failed; all their errors, in order.
    Providers(Vec<ProviderFailure>),
    /// The write provider failed.
    Encrypt { provider: ProviderId, error: String },
}

impl fmt::Display for TransformFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformFailure::NoMatchingPrefix => f.write_str("no matching prefix found"),
            TransformFailure::IdentityRefused => {
                f.write_str("identity transformer tried to read encrypted data")
            }
            TransformFailure::Providers(failures) => {
                let parts: Vec<String> = failures
                    .iter()
                    .map(|p| format!("{}: {}", p.provider, p.error))
                    .collect();
                f.write_str(&parts.join("; "))
            }
            TransformFailure::Encrypt { provider, error } => write!(f, "{provider}: {error}"),
        }
    }
}

/// A value of one object could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} {storage_key} (resource {resource}): {failure}")]
pub struct TransformError {
    pub operation: Operation,
    /// The storage key, shown lossily as UTF-8.
    pub storage_key: String,
    pub resource: GroupResource,
    pub failure: TransformFailure,
}

/// A provider chain could not be built from a (valid) configuration, e.g. because a KMS
/// plugin cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("{path} ({provider}): {error}")]
pub struct BuildError {
    /// The configuration field path of the provider, e.g. `resources[0].providers[0].kms`.
    pub path: String,
    pub provider: String,
    pub error: String,
}
