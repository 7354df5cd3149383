//! `atrest reencrypt`: rewrite every object that is not on its resource's write key.
//!
//! Each stale object is decrypted, encrypted again with the write key (same plaintext, same
//! storage key as authenticated data) and written back compare-and-swap on the mod revision
//! it was read at, many per store request. A lost compare means another writer changed the
//! object: it is read again and rewritten if still stale. A deleted object is skipped; an
//! object created meanwhile was written by a server with the current configuration. A
//! verification then lists every key with its revision and proves that nothing stale
//! remains: what has not changed since the first pass was judged by it, what carries the
//! revision of our rewrite is our value, and only what someone else changed is read again
//! (and rewritten if stale, up to [`MAX_PASSES`] times).
//!
//! There is no state to lose: interrupted at any point, a rerun scans again and finishes
//! the job. Before writing anything, the configuration hash every live atrest server has
//! published must be the one of the file given: a value written with a key that a running
//! server cannot read would break that server.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
/// Passes (the first, then verifications) before giving up on values that keep becoming
/// stale.
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

/// What the rewriters share: counters, and the revision each rewritten key was written at
/// (so the verification can tell our writes from anyone else's).
#[derive(Default)]
struct Shared {
    rewritten: AtomicU64,
    skipped_deleted: AtomicU64,
    retried: AtomicU64,
    ours: Mutex<HashMap<Vec<u8>, i64>>,
}

impl Shared {
    fn rewrote(&self, key: &[u8], revision: i64) {
        self.rewritten.fetch_add(1, Ordering::Relaxed);
        self.ours
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_vec(), revision);
    }
}

/// Rewrites every stale object, then verifies. Call [`check_servers`] first.
///
/// The first pass reads everything at one revision `R` and rewrites what is stale. The
/// verification then needs no values: a key whose mod revision is still at most `R` is the
/// version the first pass judged (current, or counted unreadable), and a key whose mod
/// revision is the one our rewrite got is our value. Only keys changed by someone else since
/// `R` are read again; stale ones among them are rewritten and the verification repeats.
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
    let shared = Arc::new(Shared::default());
    let mut report = ReencryptReport::default();
    let total = count_all(storage, &ranges).await?;
    progress.phase("rewriting", Some(total));
    let (read_at, unreadable) =
        first_pass(storage, &ranges, options, &shared, progress, &mut report).await?;
    report.passes = 1;
    let mut verified = false;
    let mut stale_left = 0;
    for _ in 1..MAX_PASSES {
        progress.phase("verifying", Some(count_all(storage, &ranges).await?));
        let check = verify(storage, &ranges, read_at, &shared, &unreadable, progress).await?;
        report.passes += 1;
        report.unreadable = check.unreadable;
        report.unreadable_keys = check.unreadable_keys;
        stale_left = check.stale.len() as u64;
        if check.stale.is_empty() {
            verified = true;
            break;
        }
        for batch in check.stale.chunks(options.batch.max(1)) {
            rewrite_batch(storage, &shared, batch.to_vec()).await?;
        }
    }
    progress.finish();
    report.rewritten = shared.rewritten.load(Ordering::Relaxed);
    report.skipped_deleted = shared.skipped_deleted.load(Ordering::Relaxed);
    report.retried = shared.retried.load(Ordering::Relaxed);
    if !verified {
        report.remaining_stale = stale_left;
    }
    Ok(report)
}

async fn count_all(storage: &EncryptedStore, ranges: &[ScanRange]) -> Result<u64, StorageError> {
    let mut total = 0;
    for range in ranges {
        total += storage.count(range, None).await?;
    }
    Ok(total)
}

/// Scans everything at one revision and rewrites the stale values found. Returns the
/// revision read at and the keys that could not be read.
async fn first_pass(
    storage: &EncryptedStore,
    ranges: &[ScanRange],
    options: &ReencryptOptions,
    shared: &Arc<Shared>,
    progress: &dyn Progress,
    report: &mut ReencryptReport,
) -> Result<(i64, HashSet<Vec<u8>>), ReencryptError> {
    let permits = Arc::new(Semaphore::new(options.writers.max(1)));
    let mut writers: JoinSet<Result<(), StorageError>> = JoinSet::new();
    let mut unreadable = HashSet::new();
    let mut revision = None;
    for range in ranges {
        let mut scanner = Scanner::new(storage, range.clone(), revision);
        let mut batch: Vec<DecryptedValue> = Vec::with_capacity(options.batch);
        while let Some(page) = scanner.next().await? {
            progress.advance(page.entries.len() as u64);
            for entry in page.entries {
                report.scanned += 1;
                match entry {
                    Ok(value) if value.stale => {
                        batch.push(value);
                        if batch.len() >= options.batch {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(options.batch));
                            spawn_batch(&mut writers, &permits, storage, shared, full).await?;
                        }
                    }
                    Ok(_) => report.already_current += 1,
                    Err(u) => {
                        unreadable.insert(u.key);
                    }
                }
            }
            // Finished writers are collected as we go, so a failure stops the scan early.
            while let Some(done) = writers.try_join_next() {
                finished(done)?;
            }
        }
        if !batch.is_empty() {
            spawn_batch(&mut writers, &permits, storage, shared, batch).await?;
        }
        revision = scanner.revision();
    }
    while let Some(done) = writers.join_next().await {
        finished(done)?;
    }
    Ok((revision.unwrap_or(0), unreadable))
}

/// What a verification found.
struct Verification {
    /// Values changed by someone else since the first pass and stale now.
    stale: Vec<DecryptedValue>,
    unreadable: u64,
    unreadable_keys: Vec<crate::audit::Unreadable>,
}

async fn verify(
    storage: &EncryptedStore,
    ranges: &[ScanRange],
    read_at: i64,
    shared: &Shared,
    unreadable_at_first: &HashSet<Vec<u8>>,
    progress: &dyn Progress,
) -> Result<Verification, StorageError> {
    let mut changed = Vec::new();
    let mut unreadable = 0;
    let mut unreadable_keys = Vec::new();
    let mut note = |key: &[u8], reason: String| {
        unreadable += 1;
        if unreadable_keys.len() < crate::audit::EXAMPLES {
            unreadable_keys.push(crate::audit::Unreadable {
                key: String::from_utf8_lossy(key).into_owned(),
                reason,
            });
        }
    };
    let mut revision = None;
    for range in ranges {
        let mut after = None;
        loop {
            let page = storage
                .scan_revisions(range, after.take(), revision, crate::scan::PAGE_KEYS * 4)
                .await?;
            revision = Some(page.revision);
            progress.advance(page.keys.len() as u64);
            let ours = shared.ours.lock().unwrap_or_else(|p| p.into_inner());
            for (key, mod_revision) in page.keys {
                if mod_revision <= read_at {
                    if unreadable_at_first.contains(&key) {
                        note(
                            &key,
                            "unreadable with this configuration (see `atrest status`)".into(),
                        );
                    }
                } else if ours.get(&key) != Some(&mod_revision) {
                    changed.push(key);
                }
            }
            drop(ours);
            after = page.last_key;
            if !page.more {
                break;
            }
        }
    }
    let mut stale = Vec::new();
    for raw in changed {
        // The key's collection decides the providers, as in the first pass.
        let parsed = match ranges.iter().find_map(|r| match r {
            ScanRange::Collection(c) if raw.starts_with(c.prefix().as_bytes()) => Some(c),
            _ => None,
        }) {
            Some(c) => c.key_of(&raw),
            None => atrest_storage::StorageKey::parse(&raw, storage.prefix()),
        };
        let key = match parsed {
            Ok(key) => key,
            Err(e) => {
                note(&raw, e.to_string());
                continue;
            }
        };
        match storage.get(&key).await {
            Ok(Some(value)) if value.stale => stale.push(value),
            Ok(_) => {}
            Err(StorageError::Unreadable(u)) => note(&raw, u.error.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(Verification {
        stale,
        unreadable,
        unreadable_keys,
    })
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
    shared: &Arc<Shared>,
    batch: Vec<DecryptedValue>,
) -> Result<(), ReencryptError> {
    let permit = permits.clone().acquire_owned().await.map_err(|_| {
        StorageError::Store(atrest_store::StoreError::Backend(
            "the rewrite pool closed".into(),
        ))
    })?;
    let storage = storage.clone();
    let shared = shared.clone();
    writers.spawn(async move {
        let _permit = permit;
        rewrite_batch(&storage, &shared, batch).await
    });
    Ok(())
}

/// Rewrites one batch; values that lost their compare are read again and retried alone.
async fn rewrite_batch(
    storage: &EncryptedStore,
    shared: &Shared,
    batch: Vec<DecryptedValue>,
) -> Result<(), StorageError> {
    let outcomes = storage.rewrite(&batch).await?;
    for (value, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            RewriteOutcome::Rewritten(w) => shared.rewrote(value.key.as_bytes(), w.revision),
            RewriteOutcome::Deleted => {
                shared.skipped_deleted.fetch_add(1, Ordering::Relaxed);
            }
            RewriteOutcome::Conflict => {
                shared.retried.fetch_add(1, Ordering::Relaxed);
                retry_one(storage, shared, value).await?;
            }
            RewriteOutcome::Failed(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a value that lost its compare again and rewrites it if it is still stale. What is
/// still contended after a few tries is left for the verification, which reads it again.
async fn retry_one(
    storage: &EncryptedStore,
    shared: &Shared,
    value: DecryptedValue,
) -> Result<(), StorageError> {
    for _ in 0..CONFLICT_RETRIES {
        let current = match storage.get(&value.key).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                shared.skipped_deleted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Counted by the verification, which reads it again.
            Err(StorageError::Unreadable(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // The concurrent writer wrote it with the write key: nothing left to do.
        if !current.stale {
            return Ok(());
        }
        match storage.rewrite(std::slice::from_ref(&current)).await?.pop() {
            Some(RewriteOutcome::Rewritten(w)) => {
                shared.rewrote(current.key.as_bytes(), w.revision);
                return Ok(());
            }
            Some(RewriteOutcome::Deleted) => {
                shared.skipped_deleted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(RewriteOutcome::Conflict) => {
                shared.retried.fetch_add(1, Ordering::Relaxed);
            }
            Some(RewriteOutcome::Failed(e)) => return Err(e),
            None => {
                return Err(StorageError::Store(atrest_store::StoreError::Backend(
                    "a rewrite of one value answered nothing".into(),
                )))
            }
        }
    }
    Ok(())
}
