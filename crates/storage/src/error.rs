//! The errors of the storage layer. None of them ever holds a value or key material: they
//! name the storage key, the resource and the provider.

use atrest_encryption::TransformError;
use atrest_store::{display_key, StoreError};

use crate::key::KeyError;

/// Why one stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No provider of the resource could decrypt it (wrong key, tampered, moved, plaintext
    /// where the config refuses it, KMS plugin unreachable...).
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The key is not a storage key this prefix can hold.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A stored value that could not be read, with what is needed to report or remove it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {}: {error}", display_key(.key))]
pub struct UnreadableValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its mod revision (a delete of the unreadable value compares on it).
    pub mod_revision: i64,
    /// Why.
    pub error: ReadError,
}

impl UnreadableValue {
    /// The key, for humans.
    pub fn key_text(&self) -> String {
        display_key(&self.key)
    }
}

/// Everything that can go wrong in a storage-layer operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store failed or refused (not found, already exists, conflict, compacted,
    /// unavailable...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value is stored but cannot be read.
    #[error(transparent)]
    Unreadable(Box<UnreadableValue>),
    /// The value could not be encrypted (a KMS plugin without a valid key, for example).
    #[error(transparent)]
    Encrypt(Box<TransformError>),
    /// The key could not be built.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl StorageError {
    /// Whether a compare-and-swap lost (the API's 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StorageError::Store(e) if e.is_conflict())
    }

    /// Whether the key does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Store(StoreError::NotFound { .. }))
    }
}

impl From<UnreadableValue> for StorageError {
    fn from(value: UnreadableValue) -> Self {
        StorageError::Unreadable(Box::new(value))
    }
}
