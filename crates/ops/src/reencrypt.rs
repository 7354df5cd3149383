//! `atrest reencrypt`: rewrite every object that is not on its resource's write key.
//!
//! Each stale object is decrypted, encrypted again with the write key (same plaintext, same
//! storage key as authenticated data) and written back compare-and-swap on the mod revision
//! it was read at, many per store request. A lost compare means another writer changed the
//! object: it is read again and rewritten if still stale. A deleted object is skipped; an
//! object created meanwhile was written by a server with the current configuration. A
//! verification pass then reads everything again and proves that nothing stale remains (or
//! rewrites what it finds, up to [`MAX_PASSES`] times).
//!
//! There is no state to lose: interrupted at any point, a rerun scans again and finishes
//! the job. Before writing anything, the configuration hash every live atrest server has
//! published must be the one of the file given: a value written with a key that a running
//! server cannot read would break that server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use atrest_encryption::GroupResource;
use atrest_storage::servers::live_servers;
use atrest_storage::{DecryptedValue, EncryptedStore, RewriteOutcome, ScanRange, StorageError};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::progress::Progress;
use crate::scan::Scanner;

/// Values per batched rewrite (one etcd transaction holds at most 127).
pub const BATCH: usize = 127;
/// Batches in flight at once.
pub const WRITERS: usize = 4;
/// Rewrite-and-verify passes before giving up on values that keep becoming stale.
pub const MAX_PASSES: usize = 5;
/// Times one conflicted value is read again and retried.
const CONFLICT_RETRIES: usize = 10;

/// Why re-encryption did not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReencryptError {
    /// A live server has loaded another configuration.
    #[error(
        "refusing to write: {} live server(s) have not loaded this configuration ({want}): {}; \
         wait until they have reloaded it (or restart them with it) and run again",
        servers.len(),
        servers.iter().map(|(id, hash)| format!("{id} has {hash}")).collect::<Vec<_>>().join(", ")
    )]
    ServersDiffer {
        /// The configuration hash of the file given.
        want: String,
        /// (server id, loaded hash) of each server that differs.
        servers: Vec<(String, String)>,
    },
    /// The store or a provider failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What to rewrite and how.
#[derive(Debug, Clone)]
pub struct ReencryptOptions {
    /// Only these resources (`None`: every object under the prefix).
    pub resources: Option<Vec<GroupResource>>,
    /// Values per batched rewrite.
    pub batch: usize,
    /// Batches in flight.
    pub writers: usize,
}

impl Default for ReencryptOptions {
    fn default() -> Self {
        ReencryptOptions {
            resources: None,
            batch: BATCH,
            writers: WRITERS,
        }
    }
}

/// What re-encryption did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReencryptReport {
    /// Objects read in the first pass.
    pub scanned: u64,
    /// Objects rewritten with the write key.
    pub rewritten: u64,
    /// Objects already on the write key.
    pub already_current: u64,
    /// Objects deleted by someone else before their rewrite landed.
    pub skipped_deleted: u64,
    /// Rewrites that lost a compare to a concurrent writer and were read again.
    pub retried: u64,
    /// Values that cannot be read with this configuration (left as they are).
    pub unreadable: u64,
    /// Stale objects the last verification pass still found (0 when done).
    pub remaining_stale: u64,
    /// Passes over the data (the last one found nothing to rewrite, unless `remaining_stale`).
    pub passes: u64,
    /// The first unreadable keys, with why.
    pub unreadable_keys: Vec<crate::audit::Unreadable>,
}

impl ReencryptReport {
    /// Every readable object is on its write key and nothing is unreadable.
    pub fn complete(&self) -> bool {
        self.remaining_stale == 0 && self.unreadable == 0
    }
}

/// Refuses (naming them) if a live server has loaded another configuration than the one
/// `storage` holds.
pub async fn check_servers(storage: &EncryptedStore) -> Result<(), ReencryptError> {
    let want = storage.chain().current().config_hash().to_string();
    let (records, _) = live_servers(storage.store().as_ref(), storage.prefix())
        .await
        .map_err(StorageError::from)?;
    let differ: Vec<(String, String)> = records
        .into_iter()
        .filter(|r| r.config_hash != want)
        .map(|r| (r.id, r.config_hash))
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(ReencryptError::ServersDiffer {
            want,
            servers: differ,
        })
    }
}

#[derive(Default)]
struct Counters {
    rewritten: AtomicU64,
    skipped_deleted: AtomicU64,
    retried: AtomicU64,
    became_unreadable: AtomicU64,
}

/// Rewrites every stale object, then verifies. Call [`check_servers`] first.
pub async fn reencrypt(
    storage: &EncryptedStore,
    options: &ReencryptOptions,
    progress: &dyn Progress,
) -> Result<ReencryptReport, ReencryptError> {
    let ranges: Vec<ScanRange> = match &options.resources {
        None => vec![ScanRange::Everything],
        Some(list) => list
            .iter()
            .map(|gr| storage.collection(gr, None).map(ScanRange::Collection))
            .collect::<Result<_, _>>()
            .map_err(StorageError::from)?,
    };
    let counters = Arc::new(Counters::default());
    let mut report = ReencryptReport::default();
    let mut verified = false;
    for pass in 0..MAX_PASSES {
        let mut total = 0;
        for range in &ranges {
            total += storage.count(range, None).await?;
        }
        progress.phase(
            if pass == 0 { "rewriting" } else { "verifying" },
            Some(total),
        );
        let found = rewrite_pass(
            storage,
            &ranges,
            options,
            &counters,
            progress,
            &mut report,
            pass,
        )
        .await?;
        report.passes += 1;
        // A pass that found nothing stale is the verification.
        if found == 0 {
            verified = true;
            break;
        }
    }
    progress.finish();
    report.rewritten = counters.rewritten.load(Ordering::Relaxed);
    report.skipped_deleted = counters.skipped_deleted.load(Ordering::Relaxed);
    report.retried = counters.retried.load(Ordering::Relaxed);
    if !verified {
        // The last pass rewrote what it found but nothing verified it: count again.
        report.remaining_stale = count_stale(storage, &ranges).await?;
    }
    Ok(report)
}

/// One pass: scans, rewrites the stale values found, and returns how many it found.
async fn rewrite_pass(
    storage: &EncryptedStore,
    ranges: &[ScanRange],
    options: &ReencryptOptions,
    counters: &Arc<Counters>,
    progress: &dyn Progress,
    report: &mut ReencryptReport,
    pass: usize,
) -> Result<u64, ReencryptError> {
    let permits = Arc::new(Semaphore::new(options.writers.max(1)));
    let mut writers: JoinSet<Result<(), StorageError>> = JoinSet::new();
    let mut found = 0;
    let mut unreadable = 0;
    let mut unreadable_keys = Vec::new();
    let mut revision = None;
    for range in ranges {
        let mut scanner = Scanner::new(storage, range.clone(), revision);
        let mut batch: Vec<DecryptedValue> = Vec::with_capacity(options.batch);
        while let Some(page) = scanner.next().await? {
            progress.advance(page.entries.len() as u64);
            for entry in page.entries {
                if pass == 0 {
                    report.scanned += 1;
                }
                match entry {
                    Ok(value) if value.stale => {
                        found += 1;
                        batch.push(value);
                        if batch.len() >= options.batch {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(options.batch));
                            spawn_batch(&mut writers, &permits, storage, counters, full).await?;
                        }
                    }
                    Ok(_) => {
                        if pass == 0 {
                            report.already_current += 1;
                        }
                    }
                    Err(u) => {
                        unreadable += 1;
                        if unreadable_keys.len() < crate::audit::EXAMPLES {
                            unreadable_keys.push(crate::audit::Unreadable {
                                key: u.key_text(),
                                reason: u.error.to_string(),
                            });
                        }
                    }
                }
            }
            // Finished writers are collected as we go, so a failure stops the scan early.
            while let Some(done) = writers.try_join_next() {
                finished(done)?;
            }
        }
        if !batch.is_empty() {
            spawn_batch(&mut writers, &permits, storage, counters, batch).await?;
        }
        revision = scanner.revision();
    }
    while let Some(done) = writers.join_next().await {
        finished(done)?;
    }
    report.unreadable = unreadable + counters.became_unreadable.load(Ordering::Relaxed);
    report.unreadable_keys = unreadable_keys;
    Ok(found)
}

fn finished(
    done: Result<Result<(), StorageError>, tokio::task::JoinError>,
) -> Result<(), ReencryptError> {
    match done {
        Ok(result) => result.map_err(ReencryptError::from),
        Err(e) => Err(
            StorageError::Store(atrest_store::StoreError::Backend(format!(
                "a rewrite task failed: {e}"
            )))
            .into(),
        ),
    }
}

async fn spawn_batch(
    writers: &mut JoinSet<Result<(), StorageError>>,
    permits: &Arc<Semaphore>,
    storage: &EncryptedStore,
    counters: &Arc<Counters>,
    batch: Vec<DecryptedValue>,
) -> Result<(), ReencryptError> {
    let permit = permits.clone().acquire_owned().await.map_err(|_| {
        StorageError::Store(atrest_store::StoreError::Backend(
            "the rewrite pool closed".into(),
        ))
    })?;
    let storage = storage.clone();
    let counters = counters.clone();
    writers.spawn(async move {
        let _permit = permit;
        rewrite_batch(&storage, &counters, batch).await
    });
    Ok(())
}

/// Rewrites one batch; values that lost their compare are read again and retried alone.
async fn rewrite_batch(
    storage: &EncryptedStore,
    counters: &Counters,
    batch: Vec<DecryptedValue>,
) -> Result<(), StorageError> {
    let outcomes = storage.rewrite(&batch).await?;
    for (value, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            RewriteOutcome::Rewritten(_) => {
                counters.rewritten.fetch_add(1, Ordering::Relaxed);
            }
            RewriteOutcome::Deleted => {
                counters.skipped_deleted.fetch_add(1, Ordering::Relaxed);
            }
            RewriteOutcome::Conflict => {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                retry_one(storage, counters, value).await?;
            }
            RewriteOutcome::Failed(e) => return Err(e),
        }
    }
    Ok(())
}

async fn retry_one(
    storage: &EncryptedStore,
    counters: &Counters,
    value: DecryptedValue,
) -> Result<(), StorageError> {
    for _ in 0..CONFLICT_RETRIES {
        let current = match storage.get(&value.key).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                counters.skipped_deleted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(StorageError::Unreadable(_)) => {
                counters.became_unreadable.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The concurrent writer wrote it with the write key: nothing left to do.
        if !current.stale {
            return Ok(());
        }
        match storage.rewrite(std::slice::from_ref(&current)).await?.pop() {
            Some(RewriteOutcome::Rewritten(_)) => {
                counters.rewritten.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(RewriteOutcome::Deleted) => {
                counters.skipped_deleted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(RewriteOutcome::Conflict) => {
                counters.retried.fetch_add(1, Ordering::Relaxed);
            }
            Some(RewriteOutcome::Failed(e)) => return Err(e),
            None => {
                return Err(StorageError::Store(atrest_store::StoreError::Backend(
                    "a rewrite of one value answered nothing".into(),
                )))
            }
        }
    }
    // Left for the verification pass, which reads and rewrites it again.
    Ok(())
}

/// How many readable values under `ranges` are stale now.
async fn count_stale(storage: &EncryptedStore, ranges: &[ScanRange]) -> Result<u64, StorageError> {
    let mut stale = 0;
    let mut revision = None;
    for range in ranges {
        let mut scanner = Scanner::new(storage, range.clone(), revision);
        while let Some(page) = scanner.next().await? {
            stale += page
                .entries
                .iter()
                .filter(|e| matches!(e, Ok(v) if v.stale))
                .count() as u64;
        }
        revision = scanner.revision();
    }
    Ok(stale)
}
