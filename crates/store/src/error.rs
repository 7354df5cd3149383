//! The one error type of the store.

use crate::types::KeyValue;

/// Shows a key for humans: lossy UTF-8 (keys are paths; values are never shown).
pub fn display_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn describe_actual(actual: &Option<KeyValue>) -> String {
    match actual {
        Some(kv) => format!("mod revision {}", kv.mod_revision),
        None => "no such key".to_string(),
    }
}

/// Everything that can go wrong in a store operation. No variant's `Display` or `Debug`
/// output contains a stored value (values may be plaintext secrets).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create` of a key that exists.
    #[error("key {} already exists", display_key(.key))]
    AlreadyExists {
        /// The key.
        key: Vec<u8>,
    },
    /// A compare-and-swap lost: the key's mod revision is not the expected one.
    #[error(
        "conflict on key {}: expected mod revision {expected}, found {}",
        display_key(.key),
        describe_actual(.actual)
    )]
    Conflict {
        /// The key.
        key: Vec<u8>,
        /// The mod revision the caller expected.
        expected: i64,
        /// What is stored now (`None`: the key was deleted meanwhile).
        actual: Option<KeyValue>,
    },
    /// `update`/`delete` of a key that does not exist.
    #[error("key {} not found", display_key(.key))]
    NotFound {
        /// The key.
        key: Vec<u8>,
    },
    /// The requested revision's history has been compacted away.
    #[error("revision {requested} has been compacted (compacted revision is {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compacted revision.
        compact_revision: i64,
    },
    /// A read at a revision that does not exist yet.
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease id.
        lease: i64,
    },
    /// The request itself is invalid (empty key, bad TTL, bad configuration...).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The backend could not be reached or lost its leader, and retrying did not help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure (I/O error, corrupt database...).
    #[error("store backend error: {0}")]
    Backend(String),
}

impl StoreError {
    pub(crate) fn conflict(key: &[u8], expected: i64, actual: Option<KeyValue>) -> Self {
        StoreError::Conflict {
            key: key.to_vec(),
            expected,
            actual,
        }
    }

    /// Whether this is a compare-and-swap conflict (the API's 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_display_names_key_not_value() {
        let err = StoreError::conflict(
            b"/registry/secrets/ns/x",
            3,
            Some(KeyValue {
                key: b"/registry/secrets/ns/x".to_vec(),
                value: b"hunter2".to_vec(),
                create_revision: 1,
                mod_revision: 5,
                lease: 0,
            }),
        );
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("/registry/secrets/ns/x"));
        assert!(shown.contains("found mod revision 5"));
        assert!(!shown.contains("hunter2"));
    }
}
