#![forbid(unsafe_code)]
//! atrest's object store: ordered byte keys, one global revision per write,
//! compare-and-swap, watch, compaction and leases, with two backends behind one trait:
//! an embedded SQLite database (the default) and a real etcd cluster; and a read-only one
//! over an etcd snapshot file (a bbolt database read directly).
//!
//! The store only ever sees bytes; encryption happens above it. The guarantees every
//! backend gives are written down in `crates/store/DESIGN.md`.

mod error;
mod etcd;
mod snapshot;
mod sqlite;
mod types;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

pub use error::{display_key, StoreError};
pub use types::{
    prefix_end, CasUpdate, CompactionPolicy, KeyValue, LeaseId, ListRequest, ListResponse,
    SpaceReport, StoreMetrics, WatchEvent,
};

/// Result type of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Pages of retained versions ([`Store::history_pages`]); ends after an error.
pub type HistoryPages<'a> = Pin<Box<dyn Stream<Item = Result<Vec<KeyValue>>> + Send + 'a>>;

/// A stream of watch events. It ends when the store is dropped or after yielding an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// An etcd-shaped key-value store. See `DESIGN.md` for the exact semantics.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The current version of `key`, or `None` if it does not exist.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;

    /// Keys under `request.prefix` in key order, read at one revision.
    async fn list(&self, request: ListRequest) -> Result<ListResponse>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    /// Returns the revision of the write.
    async fn create(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<i64>;

    /// Replaces the value of `key` if its mod revision is still `expected_mod_revision`
    /// ([`StoreError::Conflict`] otherwise, [`StoreError::NotFound`] if it does not exist).
    /// Returns the revision of the write.
    async fn update(
        &self,
        key: &[u8],
        value: &[u8],
        expected_mod_revision: i64,
        lease: Option<LeaseId>,
    ) -> Result<i64>;

    /// Many compare-and-swap updates. Each succeeds or fails on its own, exactly as
    /// [`Store::update`] would (a failed compare never aborts the others); the answer has one
    /// result per update, in order. The outer `Err` means the whole request failed and none
    /// of it is known to have applied. Backends apply the batch in few round trips: the
    /// embedded store in one group commit, etcd in nested transactions of at most 128 puts
    /// and about 1 MiB per request. Updates of one key should not repeat within a batch.
    async fn update_many(&self, updates: Vec<CasUpdate>) -> Result<Vec<Result<i64>>> {
        let writes = updates
            .iter()
            .map(|u| self.update(&u.key, &u.value, u.expected_mod_revision, Some(u.lease)));
        Ok(futures::future::join_all(writes).await)
    }

    /// Deletes `key`, if `expected_mod_revision` is given only when it is still the key's mod
    /// revision. Returns the revision of the delete and the deleted version.
    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)>;

    /// The revision of the latest write (never decreases).
    async fn current_revision(&self) -> Result<i64>;

    /// Events under `prefix` with revision `>= from_revision` (`0`: only future events).
    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream>;

    /// Discards history at and below `revision` (the state at `revision` stays readable).
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The revision below which history is gone (0 if never compacted).
    async fn compacted_revision(&self) -> Result<i64>;

    /// A new lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Restarts the lease's TTL; [`StoreError::LeaseNotFound`] if it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends the lease now, deleting every key attached to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Every retained version (current and not yet compacted) of every key under `prefix`,
    /// ordered by key then mod revision. Used to audit old revisions for plaintext.
    async fn history(&self, prefix: &[u8]) -> Result<Vec<KeyValue>>;

    /// The same versions as [`Store::history`], a page at a time (in no particular order),
    /// so memory does not grow with the history.
    fn history_pages<'a>(&'a self, prefix: &'a [u8]) -> HistoryPages<'a> {
        Box::pin(futures::stream::once(self.history(prefix)))
    }

    /// Rewrites the store's files so that space freed by compaction (and the old values it
    /// held) leaves them: every etcd member is defragmented, the embedded database is
    /// vacuumed. Reports the space of each before and after.
    async fn defragment(&self) -> Result<Vec<SpaceReport>> {
        Err(StoreError::InvalidArgument(format!(
            "{} cannot be defragmented",
            self.describe()
        )))
    }

    /// Counters for monitoring (compactions and their failures).
    fn metrics(&self) -> Arc<StoreMetrics>;

    /// Human-readable name of the backend and where it stores data (for logs and status).
    fn describe(&self) -> String;
}

/// Client TLS files for etcd (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle to verify the etcd servers with (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (`--etcd-certfile`); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (`--etcd-keyfile`); needs `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Which backend to open and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite database `<data_dir>/state.db` (created if missing).
    Embedded {
        /// `--data-dir`.
        data_dir: PathBuf,
        /// Automatic compaction; `CompactionPolicy::disabled()` for offline tools.
        compaction: CompactionPolicy,
    },
    /// A real etcd cluster.
    Etcd {
        /// `--etcd-servers`: `http://host:port` or `https://host:port` URLs.
        endpoints: Vec<String>,
        /// `--etcd-prefix` (default `/registry`). Keys handed to the store already include
        /// it, as kube-apiserver's keys do, so the backend stores keys verbatim; the prefix
        /// is kept for `describe()` and for callers building keys.
        prefix: String,
        /// Client TLS, required for `https://` endpoints that need client certificates.
        tls: Option<TlsFiles>,
    },
    /// An etcd snapshot file (`etcdctl snapshot save`, or a member's `member/snap/db`),
    /// read-only: every write fails.
    Snapshot {
        /// The file.
        file: PathBuf,
    },
}

impl StoreConfig {
    /// An embedded store in `data_dir` with the default compaction policy.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig::Embedded {
            data_dir: data_dir.into(),
            compaction: CompactionPolicy::default(),
        }
    }

    /// An etcd store with the default `/registry` prefix and no TLS.
    pub fn etcd(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        StoreConfig::Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/registry".to_string(),
            tls: None,
        }
    }
}

/// Opens the configured backend. Must be called inside a tokio runtime.
pub async fn open(config: StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Embedded {
            data_dir,
            compaction,
        } => {
            let store = sqlite::SqliteStore::open(&data_dir, compaction).await?;
            Ok(Arc::new(store))
        }
        StoreConfig::Etcd {
            endpoints,
            prefix,
            tls,
        } => {
            let store = etcd::EtcdStore::connect(&endpoints, &prefix, tls.as_ref()).await?;
            Ok(Arc::new(store))
        }
        StoreConfig::Snapshot { file } => {
            let store = snapshot::SnapshotStore::open(&file).await?;
            Ok(Arc::new(store))
        }
    }
}
