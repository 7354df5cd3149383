//! Plain data types shared by every backend.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::display_key;

/// A lease id (etcd's lease ids are 64-bit; 0 means "no lease").
pub type LeaseId = i64;

/// One version of one key.
///
/// `Debug` shows the value's length only: values may be plaintext secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/secrets/default/db`.
    pub key: Vec<u8>,
    /// The stored bytes (ciphertext unless the identity provider is in use).
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the write that produced this version.
    pub mod_revision: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &display_key(&self.key))
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("lease", &self.lease)
            .finish()
    }
}

/// One compare-and-swap put of a batch ([`crate::Store::update_many`]).
///
/// `Debug` shows the value's length only: values may be plaintext secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct CasUpdate {
    /// The key to replace.
    pub key: Vec<u8>,
    /// The new value.
    pub value: Vec<u8>,
    /// The write happens only if this is still the key's mod revision.
    pub expected_mod_revision: i64,
    /// The lease to attach (0: none). Rewrites pass the lease they read, so a leased key
    /// keeps expiring.
    pub lease: LeaseId,
}

impl fmt::Debug for CasUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CasUpdate")
            .field("key", &display_key(&self.key))
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("expected_mod_revision", &self.expected_mod_revision)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A `list` request. Pages are chained by passing the last key of a page as `start_after`
/// and the response's `revision` as `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys starting with these bytes (empty: every key).
    pub prefix: Vec<u8>,
    /// Only keys strictly greater than this one (the continue key of the previous page).
    pub start_after: Option<Vec<u8>>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read at this revision; `None` reads at the current revision.
    pub revision: Option<i64>,
    /// Also count the keys after this page (`ListResponse::remaining_count`). Free on etcd,
    /// a scan of the rest of the range on the embedded store: ask only when it is shown.
    pub count_remaining: bool,
    /// Return keys and revisions only: every item's `value` is empty. Cheaper for etcd,
    /// which then sends no values.
    pub keys_only: bool,
}

impl ListRequest {
    /// Every key under `prefix` at the current revision.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        ListRequest {
            prefix: prefix.into(),
            ..ListRequest::default()
        }
    }
}

/// The answer to a [`ListRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResponse {
    /// The keys of this page, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list read at; pass it to the next page.
    pub revision: i64,
    /// Whether keys remain after this page.
    pub more: bool,
    /// How many keys remain after this page (kube's `remainingItemCount`), when
    /// `count_remaining` was asked for.
    pub remaining_count: Option<i64>,
}

/// The space one place of a store uses, before and after a defragmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceReport {
    /// The etcd member (its client URL) or the embedded database file.
    pub member: String,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated; `kv.mod_revision` is the event's revision.
    Put {
        /// The new version.
        kv: KeyValue,
        /// The version it replaced (`None` on create).
        prev: Option<KeyValue>,
    },
    /// A key was deleted (directly or by lease expiry).
    Delete {
        /// The deleted version.
        prev: KeyValue,
        /// The revision of the delete.
        revision: i64,
    },
}

impl WatchEvent {
    /// The revision of this event.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key this event is about.
    pub fn key(&self) -> &[u8] {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { prev, .. } => &prev.key,
        }
    }
}

/// Automatic compaction of the embedded store. History is kept while it is within
/// `keep_revisions` of the current revision **or** younger than `keep_duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Whether the store compacts by itself at all.
    pub enabled: bool,
    /// Keep at least this many of the latest revisions.
    pub keep_revisions: i64,
    /// Keep at least this much recent history.
    pub keep_duration: Duration,
    /// How often to check.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            enabled: true,
            keep_revisions: 1_000,
            keep_duration: Duration::from_secs(5 * 60),
            interval: Duration::from_secs(30),
        }
    }
}

impl CompactionPolicy {
    /// No automatic compaction (offline tools, tests).
    pub fn disabled() -> Self {
        CompactionPolicy {
            enabled: false,
            ..CompactionPolicy::default()
        }
    }
}

/// Monitoring counters of a store. Export them with the server's metrics.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Successful compactions (automatic or explicit).
    pub compactions: AtomicU64,
    /// Failed compactions or post-compaction vacuum/checkpoint steps.
    pub compaction_failures: AtomicU64,
    /// The latest revision compacted by this process (0 if none).
    pub compacted_revision: AtomicI64,
}

impl StoreMetrics {
    pub(crate) fn record_compaction(&self, revision: i64) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.compacted_revision
            .fetch_max(revision, Ordering::Relaxed);
    }

    pub(crate) fn record_compaction_failure(&self) {
        self.compaction_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
/// `None` when no such key exists (empty prefix or all `0xff`): the range is unbounded.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn debug_of_key_value_hides_the_value() {
        let kv = KeyValue {
            key: b"/registry/secrets/a/b".to_vec(),
            value: b"top-secret-password".to_vec(),
            create_revision: 1,
            mod_revision: 2,
            lease: 0,
        };
        let shown = format!("{kv:?}");
        assert!(!shown.contains("top-secret"), "{shown}");
        assert!(shown.contains("/registry/secrets/a/b"), "{shown}");
    }
}
