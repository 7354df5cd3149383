//! atrest's encryption core: the `EncryptionConfiguration` model and providers that read and
//! write exactly the bytes kube-apiserver does.
//!
//! - [`config`]: strict decoding and upstream validation into an [`EncryptionConfig`].
//! - [`ProviderChain`]: per-resource provider lists with upstream's read/write algorithms.
//! - [`kms`]: the KMS plugin calls the envelope providers need, as traits.
//!
//! This crate does no I/O of its own except through the KMS traits.
#![forbid(unsafe_code)]

mod chain;
pub mod config;
mod error;
mod key;
pub mod kms;
mod provider;
mod resource;
#[cfg(feature = "upstream-mock")]
pub mod upstream_mock;

pub use chain::{Decrypted, Encrypted, ProviderChain, ResourceTransformer};
pub use config::{ConfigError, EncryptionConfig, FieldError, ParseOptions};
pub use error::{
    BuildError, CipherError, Operation, ProviderFailure, TransformError, TransformFailure,
};
pub use key::{random_uuid, InvalidBase64, Key, KeyName};
pub use provider::{
    EncryptedObject, KmsV1Provider, KmsV2Provider, ProviderId, ProviderKind, ENCRYPTED_PREFIX,
};
pub use resource::GroupResource;
