//! `atrest purge`: after a migration, make old plaintext and old-key copies leave the
//! store's files. Compaction removes the old revisions (up to a revision: by default the
//! current one, or the revision a rotation recorded); defragmentation (etcd: every member;
//! the embedded store: VACUUM) rewrites the files without the freed pages.
//!
//! What it cannot reach: etcd's WAL segments and snapshot files still hold old entries until
//! they rotate out, and any backup or `etcdctl snapshot save` file taken before keeps them.

use atrest_storage::{EncryptedStore, StorageError};
use atrest_store::{SpaceReport, StoreError};
use serde::Serialize;

/// What purge did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// History at and below this revision is gone.
    pub compacted_to: i64,
    /// Whether this run compacted (false: the store was already compacted that far).
    pub compacted: bool,
    /// Space of each member (or the database file) before and after.
    pub space: Vec<Space>,
}

/// One member's space.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    pub member: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl From<SpaceReport> for Space {
    fn from(r: SpaceReport) -> Self {
        Space {
            member: r.member,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
        }
    }
}

/// Compacts to `revision` (`None`: the current revision) and defragments.
pub async fn purge(
    storage: &EncryptedStore,
    revision: Option<i64>,
) -> Result<PurgeReport, StorageError> {
    let store = storage.store();
    let current = store.current_revision().await?;
    let target = revision.unwrap_or(current);
    if target > current {
        return Err(StoreError::FutureRevision {
            requested: target,
            current,
        }
        .into());
    }
    let already = store.compacted_revision().await?;
    let compacted = target > already;
    if compacted {
        store.compact(target).await?;
    }
    let space = store
        .defragment()
        .await?
        .into_iter()
        .map(Space::from)
        .collect();
    Ok(PurgeReport {
        compacted_to: target.max(already),
        compacted,
        space,
    })
}
