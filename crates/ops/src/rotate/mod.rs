//! `atrest rotate`: upstream's key-rotation procedure as one resumable command.
//!
//! For every resource entry whose first provider is a static-key provider: (a) add a fresh
//! key where it only reads; wait until every live server has loaded the file; (b) promote it
//! to write; wait; (c) re-encrypt everything; (d) once no object is on the old key any more,
//! remove the old key; wait. At no point can a server hold data its loaded configuration
//! cannot read: a key writes only after every server reads it, and goes only after nothing
//! needs it.
//!
//! The state (step, key names, the file, who holds it; never key material) lives in the
//! store under `<prefix>/atrest/rotation`, so a crash at any point is resumed by running the
//! command again; every step is idempotent against the file. A lock under a lease keeps two
//! rotations from running at once.

pub mod converge;
pub mod edit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest_client::KubeClient;
use atrest_encryption::{GroupResource, ProviderChain};
use atrest_storage::servers::unix_now;
use atrest_storage::{EncryptedStore, StorageError};
use atrest_store::{LeaseId, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::{audit, AuditOptions};
use crate::progress::Progress;
use crate::reencrypt::{check_servers, reencrypt, ReencryptError, ReencryptOptions};
use converge::{check, Convergence};
use edit::{Document, EditError, EntryRotation};

/// How long the rotation lock outlives its holder.
const LOCK_TTL: Duration = Duration::from_secs(15);

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    AddKey,
    WaitAdded,
    Promote,
    WaitPromoted,
    Reencrypt,
    RemoveOld,
    WaitRemoved,
    Done,
}

/// Every step, in the order a rotation takes them.
pub const STEPS: [Step; 8] = [
    Step::AddKey,
    Step::WaitAdded,
    Step::Promote,
    Step::WaitPromoted,
    Step::Reencrypt,
    Step::RemoveOld,
    Step::WaitRemoved,
    Step::Done,
];

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::AddKey => "add-key",
            Step::WaitAdded => "wait-added",
            Step::Promote => "promote",
            Step::WaitPromoted => "wait-promoted",
            Step::Reencrypt => "reencrypt",
            Step::RemoveOld => "remove-old",
            Step::WaitRemoved => "wait-removed",
            Step::Done => "done",
        }
    }
}

/// What the store remembers of a rotation. No key material: keys live in the file only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationState {
    pub id: String,
    /// The configuration file being rotated (absolute).
    pub file: PathBuf,
    pub step: Step,
    pub entries: Vec<EntryRotation>,
    /// The copy of the file as it was before the rotation.
    pub backup: Option<PathBuf>,
    /// Who runs it (host and process).
    pub holder: String,
    pub started: f64,
    pub updated: f64,
    /// The store revision after the re-encryption (what `purge` compacts up to).
    pub migration_revision: Option<i64>,
    /// Objects rewritten, and how fast.
    pub rewritten: u64,
    pub rate: f64,
}

/// What the caller provides: the file, the chain builder, and how to report and ask.
pub trait RotationHost: Send + Sync {
    /// Reads the configuration file.
    fn read(&self) -> Result<Vec<u8>, String>;
    /// Replaces it atomically, mode 0600.
    fn write(&self, bytes: &[u8]) -> Result<(), String>;
    /// Copies it beside itself (0600) before the first change; returns the copy's path.
    fn backup(&self) -> Result<PathBuf, String>;
    /// Builds the provider chain of a configuration (KMS plugins included).
    fn chain(&self, bytes: &[u8]) -> Result<ProviderChain, String>;
    /// Reports one event.
    fn event(&self, event: &Event);
    /// No server can be asked: the operator must confirm `what` has happened. `false`
    /// when there is nobody to ask (no terminal).
    fn confirm(&self, what: &str) -> bool;
}

/// One event of the rotation log (`-o json` prints one per line).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `started`, `resumed`, `wrote`, `waiting`, `converged`, `reencrypted`, `done`.
    pub event: &'static str,
    pub step: Step,
    /// For people.
    pub message: String,
    /// For scripts.
    pub data: Value,
}

/// How to rotate and how to wait.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// The new key's provider (default: the current first provider's).
    pub provider: Option<String>,
    /// Only the entries naming these resources.
    pub resources: Option<Vec<GroupResource>>,
    /// kube-apiservers whose `/metrics` gate each wait.
    pub kube_apiservers: Vec<Arc<KubeClient>>,
    /// With no server to ask: trust this fixed wait instead of asking the operator.
    pub fixed_wait: Option<Duration>,
    /// Longest wait for servers to converge.
    pub timeout: Duration,
    /// How often servers are asked.
    pub poll: Duration,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            provider: None,
            resources: None,
            kube_apiservers: Vec::new(),
            fixed_wait: None,
            timeout: Duration::from_secs(300),
            poll: Duration::from_secs(2),
        }
    }
}

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("a rotation is running: held by {holder}; wait for it (or, if that process is gone, run again in {ttl} s)", ttl = LOCK_TTL.as_secs())]
    Held { holder: String },
    #[error("an unfinished rotation of {} (step {}) is recorded in the store; finish it with `atrest rotate --encryption-provider-config {}`", file.display(), step.as_str(), file.display())]
    OtherFile { file: PathBuf, step: Step },
    #[error("step {}: not every server loaded {hash} within {timeout_s} s: {}", step.as_str(), describe(pending))]
    NotConverged {
        step: Step,
        hash: String,
        timeout_s: u64,
        pending: Vec<(String, String)>,
    },
    #[error("step {}: a server failed to load the new configuration: {}; the rotation stops here (run `atrest rotate` again once it is fixed)", step.as_str(), describe(failed))]
    ReloadFailed {
        step: Step,
        failed: Vec<(String, String)>,
    },
    #[error("step {}: no server publishes what it has loaded, and there is no terminal to confirm; make sure every API server has loaded {hash}, then run again with --yes --wait DURATION, or pass --kube-apiservers", step.as_str())]
    NeedsConfirmation { step: Step, hash: String },
    #[error("{count} object(s) are still on the old key after re-encryption; the old key stays (run `atrest rotate` again)")]
    OldKeyInUse { count: u64 },
    #[error("re-encryption left {unreadable} unreadable and {stale} stale object(s) (see `atrest status`); the old key stays")]
    Incomplete { unreadable: u64, stale: u64 },
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Reencrypt(#[from] ReencryptError),
    #[error("{0}")]
    Host(String),
}

fn describe(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(who, what)| format!("{who}: {what}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn hostname() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        "localhost".into()
    } else {
        host
    }
}

fn holder() -> String {
    format!("{} pid {}", hostname(), std::process::id())
}

/// The lock: a key under a lease this process keeps alive.
struct Lock {
    storage: EncryptedStore,
    lease: LeaseId,
    renew: tokio::task::JoinHandle<()>,
}

impl Lock {
    async fn take(storage: &EncryptedStore) -> Result<Lock, RotateError> {
        let store = storage.store().clone();
        let key = format!("{}rotation-lock", storage.prefix().reserved_root());
        let me = json!({"holder": holder(), "host": hostname(), "pid": std::process::id(), "since": unix_now()})
            .to_string();
        for _ in 0..2 {
            let lease = store
                .grant_lease(LOCK_TTL)
                .await
                .map_err(StorageError::from)?;
            match store
                .create(key.as_bytes(), me.as_bytes(), Some(lease))
                .await
            {
                Ok(_) => {
                    let renew_store = store.clone();
                    let renew = tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(LOCK_TTL / 3).await;
                            if renew_store.keep_alive(lease).await.is_err() {
                                return;
                            }
                        }
                    });
                    return Ok(Lock {
                        storage: storage.clone(),
                        lease,
                        renew,
                    });
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    let _ = store.revoke_lease(lease).await;
                    let Some(held) = store
                        .get(key.as_bytes())
                        .await
                        .map_err(StorageError::from)?
                    else {
                        continue;
                    };
                    let v: Value = serde_json::from_slice(&held.value).unwrap_or_default();
                    let holder = v["holder"]
                        .as_str()
                        .unwrap_or("another process")
                        .to_string();
                    // A holder on this machine whose process is gone (killed) does not
                    // keep the lock until its lease runs out.
                    let dead = v["host"].as_str() == Some(hostname().as_str())
                        && v["pid"]
                            .as_u64()
                            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                    if !dead {
                        return Err(RotateError::Held { holder });
                    }
                    match store.delete(key.as_bytes(), Some(held.mod_revision)).await {
                        Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(StorageError::from(e).into()),
                    }
                }
                Err(e) => {
                    let _ = store.revoke_lease(lease).await;
                    return Err(StorageError::from(e).into());
                }
            }
        }
        Err(RotateError::Held {
            holder: "another process".into(),
        })
    }

    async fn release(self) {
        self.renew.abort();
        let _ = self.storage.store().revoke_lease(self.lease).await;
    }
}

fn state_key(storage: &EncryptedStore) -> String {
    format!("{}rotation", storage.prefix().reserved_root())
}

/// The rotation recorded in the store, if any (with the revision to compare on).
pub async fn recorded(
    storage: &EncryptedStore,
) -> Result<Option<(RotationState, i64)>, StorageError> {
    let Some(kv) = storage.store().get(state_key(storage).as_bytes()).await? else {
        return Ok(None);
    };
    let state = serde_json::from_slice(&kv.value).map_err(|e| {
        StorageError::Store(StoreError::Backend(format!(
            "the rotation state at {} cannot be read: {e}",
            state_key(storage)
        )))
    })?;
    Ok(Some((state, kv.mod_revision)))
}

/// Saves the state (compare-and-swap on the revision last read or written).
async fn save(
    storage: &EncryptedStore,
    state: &mut RotationState,
    revision: &mut Option<i64>,
) -> Result<(), StorageError> {
    state.updated = unix_now();
    let bytes = serde_json::to_vec(state).map_err(|e| {
        StorageError::Store(StoreError::Backend(format!(
            "encoding the rotation state: {e}"
        )))
    })?;
    let key = state_key(storage);
    let store = storage.store();
    let written = match *revision {
        Some(r) => store.update(key.as_bytes(), &bytes, r, None).await?,
        None => store.create(key.as_bytes(), &bytes, None).await?,
    };
    *revision = Some(written);
    Ok(())
}

/// Runs (or resumes) the rotation of the file `file`. `storage` reads the store with the
/// chain of the file as it is now; the chain is replaced as the file changes.
pub async fn rotate(
    storage: &EncryptedStore,
    file: &Path,
    host: &dyn RotationHost,
    options: &RotateOptions,
    progress: &dyn Progress,
) -> Result<RotationState, RotateError> {
    let lock = Lock::take(storage).await?;
    let result = run(storage, file, host, options, progress).await;
    lock.release().await;
    result
}

async fn run(
    storage: &EncryptedStore,
    file: &Path,
    host: &dyn RotationHost,
    options: &RotateOptions,
    progress: &dyn Progress,
) -> Result<RotationState, RotateError> {
    let file_text = file.display().to_string();
    let (mut state, mut revision) = match recorded(storage).await? {
        Some((state, r)) if state.step != Step::Done => {
            if state.file != file {
                return Err(RotateError::OtherFile {
                    file: state.file,
                    step: state.step,
                });
            }
            host.event(&Event {
                event: "resumed",
                step: state.step,
                message: format!(
                    "resuming the rotation started by {} at step {}",
                    state.holder,
                    state.step.as_str()
                ),
                data: json!({"id": state.id, "startedBy": state.holder}),
            });
            (state, Some(r))
        }
        done => {
            let doc = Document::parse(&read(host)?, &file_text)?;
            let name = format!("key-{}", unix_now() as u64);
            let entries = doc.plan(
                options.provider.as_deref(),
                options.resources.as_deref(),
                &name,
            )?;
            let now = unix_now();
            let state = RotationState {
                id: atrest_encryption::random_uuid(),
                file: file.to_path_buf(),
                step: Step::AddKey,
                entries,
                backup: None,
                holder: holder(),
                started: now,
                updated: now,
                migration_revision: None,
                rewritten: 0,
                rate: 0.0,
            };
            host.event(&Event {
                event: "started",
                step: Step::AddKey,
                message: format!(
                    "rotating {}: {}",
                    file.display(),
                    state
                        .entries
                        .iter()
                        .map(|e| format!("{} {} -> {}", e.resources.join(","), e.old, e.new))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                data: json!({"id": state.id, "entries": state.entries}),
            });
            (state, done.map(|(_, r)| r))
        }
    };
    state.holder = holder();
    save(storage, &mut state, &mut revision).await?;
    // The store is read with the file as it is now, whatever step we resume at.
    reload_chain(storage, host, &read(host)?)?;
    loop {
        let next = match state.step {
            Step::AddKey => {
                edit_file(storage, host, &mut state, &file_text, |doc, plan| {
                    (!doc.has_new_key(plan)).then(|| doc.add_new_keys(plan))
                })
                .await?;
                Step::WaitAdded
            }
            Step::WaitAdded => {
                wait(storage, host, options, state.step).await?;
                Step::Promote
            }
            Step::Promote => {
                edit_file(storage, host, &mut state, &file_text, |doc, plan| {
                    (!doc.new_key_writes(plan)).then(|| doc.promote_new_keys(plan))
                })
                .await?;
                Step::WaitPromoted
            }
            Step::WaitPromoted => {
                wait(storage, host, options, state.step).await?;
                Step::Reencrypt
            }
            Step::Reencrypt => {
                rewrite_everything(storage, host, &mut state, progress).await?;
                Step::RemoveOld
            }
            Step::RemoveOld => {
                edit_file(storage, host, &mut state, &file_text, |doc, plan| {
                    doc.has_old_key(plan).then(|| doc.remove_old_keys(plan))
                })
                .await?;
                Step::WaitRemoved
            }
            Step::WaitRemoved => {
                wait(storage, host, options, state.step).await?;
                Step::Done
            }
            Step::Done => {
                host.event(&Event {
                    event: "done",
                    step: Step::Done,
                    message: format!(
                        "rotation done: {} rewritten; the old key is gone from {}{}",
                        state.rewritten,
                        file.display(),
                        state
                            .backup
                            .as_ref()
                            .map(|b| format!(" (the original is in {})", b.display()))
                            .unwrap_or_default()
                    ),
                    data: json!({"migrationRevision": state.migration_revision, "rewritten": state.rewritten}),
                });
                return Ok(state);
            }
        };
        state.step = next;
        save(storage, &mut state, &mut revision).await?;
    }
}

fn read(host: &dyn RotationHost) -> Result<Vec<u8>, RotateError> {
    host.read().map_err(RotateError::Host)
}

fn reload_chain(
    storage: &EncryptedStore,
    host: &dyn RotationHost,
    bytes: &[u8],
) -> Result<(), RotateError> {
    let chain = host.chain(bytes).map_err(RotateError::Host)?;
    storage.chain().replace(chain);
    Ok(())
}

/// Applies `change` to the file if it says there is something to do; writes the result
/// (after a backup of the original, once per rotation).
async fn edit_file<F>(
    storage: &EncryptedStore,
    host: &dyn RotationHost,
    state: &mut RotationState,
    file_text: &str,
    change: F,
) -> Result<(), RotateError>
where
    F: FnOnce(&mut Document, &[EntryRotation]) -> Option<Result<(), EditError>>,
{
    let bytes = read(host)?;
    let mut doc = Document::parse(&bytes, file_text)?;
    let bytes = match change(&mut doc, &state.entries) {
        None => bytes,
        Some(result) => {
            result?;
            if state.backup.is_none() {
                state.backup = Some(host.backup().map_err(RotateError::Host)?);
            }
            let new = doc.to_bytes()?;
            host.write(&new).map_err(RotateError::Host)?;
            host.event(&Event {
                event: "wrote",
                step: state.step,
                message: format!(
                    "{}: {} written ({})",
                    state.step.as_str(),
                    file_text,
                    atrest_encryption::config::config_hash(&new)
                ),
                data: json!({"hash": atrest_encryption::config::config_hash(&new)}),
            });
            new
        }
    };
    reload_chain(storage, host, &bytes)
}

/// Waits until every server has loaded the file as it is now.
async fn wait(
    storage: &EncryptedStore,
    host: &dyn RotationHost,
    options: &RotateOptions,
    step: Step,
) -> Result<(), RotateError> {
    let hash = atrest_encryption::config::config_hash(&read(host)?);
    let since = unix_now();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut last: Option<Convergence> = None;
    loop {
        let c = check(storage, &options.kube_apiservers, &hash, since - 3600.0).await?;
        if c.servers == 0 {
            if let Some(d) = options.fixed_wait {
                host.event(&Event {
                    event: "waiting",
                    step,
                    message: format!("no server to ask; waiting {} s as told", d.as_secs()),
                    data: json!({"hash": hash, "fixedWaitSeconds": d.as_secs()}),
                });
                tokio::time::sleep(d).await;
                return Ok(());
            }
            let what = format!("every API server has loaded the configuration {hash}");
            return if host.confirm(&what) {
                Ok(())
            } else {
                Err(RotateError::NeedsConfirmation { step, hash })
            };
        }
        if !c.failed.is_empty() {
            return Err(RotateError::ReloadFailed {
                step,
                failed: c.failed,
            });
        }
        if c.converged() {
            host.event(&Event {
                event: "converged",
                step,
                message: format!(
                    "{}: all {} server(s) loaded {hash}",
                    step.as_str(),
                    c.servers
                ),
                data: json!({"hash": hash, "servers": c.servers}),
            });
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RotateError::NotConverged {
                step,
                hash,
                timeout_s: options.timeout.as_secs(),
                pending: c.pending,
            });
        }
        if last.as_ref() != Some(&c) {
            host.event(&Event {
                event: "waiting",
                step,
                message: format!("{}: waiting for {}", step.as_str(), describe(&c.pending)),
                data: json!({"hash": hash, "pending": c.pending}),
            });
        }
        last = Some(c);
        tokio::time::sleep(options.poll).await;
    }
}

/// Re-encrypts everything, then proves no object is left on an old key of the rotation.
async fn rewrite_everything(
    storage: &EncryptedStore,
    host: &dyn RotationHost,
    state: &mut RotationState,
    progress: &dyn Progress,
) -> Result<(), RotateError> {
    check_servers(storage).await?;
    let started = std::time::Instant::now();
    let mut rewritten = 0;
    for attempt in 0..2 {
        let report = reencrypt(storage, &ReencryptOptions::default(), progress).await?;
        rewritten += report.rewritten;
        if !report.complete() {
            return Err(RotateError::Incomplete {
                unreadable: report.unreadable,
                stale: report.remaining_stale,
            });
        }
        let result = audit(storage, &AuditOptions::default(), progress).await?;
        let on_old: u64 = result
            .resources
            .iter()
            .flat_map(|r| r.keys.iter())
            .filter(|k| {
                state.entries.iter().any(|e| {
                    k.key.provider == e.old.provider
                        && k.key.key.as_deref() == Some(e.old.key.as_str())
                })
            })
            .map(|k| k.objects)
            .sum();
        if on_old == 0 {
            let seconds = started.elapsed().as_secs_f64();
            state.migration_revision = Some(result.revision);
            state.rewritten = rewritten;
            state.rate = rewritten as f64 / seconds.max(0.001);
            host.event(&Event {
                event: "reencrypted",
                step: Step::Reencrypt,
                message: format!(
                    "re-encrypted {rewritten} object(s) ({:.0}/s); none left on the old key",
                    state.rate
                ),
                data: json!({"rewritten": rewritten, "rate": state.rate, "migrationRevision": result.revision}),
            });
            return Ok(());
        }
        if attempt == 1 {
            return Err(RotateError::OldKeyInUse { count: on_old });
        }
    }
    Ok(())
}
