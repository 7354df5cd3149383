//! Server heartbeats: each `atrest serve` process publishes what it has loaded under
//! `<prefix>/atrest/servers/<id>`, attached to a lease it keeps alive, so operations (status,
//! reencrypt, rotate) can tell which servers are live and whether each has loaded the
//! configuration they are about to rely on. A server that dies stops renewing its lease
//! and its record disappears within the lease's TTL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_store::{display_key, LeaseId, ListRequest, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::key::KeyPrefix;

/// How long a record outlives its last renewal.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);
/// How often a server renews its lease and refreshes its record.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// What one server publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRecord {
    /// The server's id (hostname and a random suffix).
    pub id: String,
    /// `sha256:<hex>` of the encryption configuration file it has in force.
    pub config_hash: String,
    /// Unix time of the last renewal, in seconds.
    pub heartbeat: f64,
    /// Whether it re-reads the configuration file when it changes.
    #[serde(default)]
    pub automatic_reload: bool,
    /// The error of its last failed automatic reload, if the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Its key.
    pub key: String,
    /// Why it could not be read.
    pub error: String,
}

/// Where the records of servers under `prefix` live.
pub fn servers_prefix(prefix: &KeyPrefix) -> String {
    prefix.reserved("servers")
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every live server's record (records whose lease has expired are gone), and the records
/// that could not be decoded.
pub async fn live_servers(
    store: &dyn Store,
    prefix: &KeyPrefix,
) -> Result<(Vec<ServerRecord>, Vec<BadRecord>), StoreError> {
    let listed = store
        .list(ListRequest::prefix(servers_prefix(prefix).into_bytes()))
        .await?;
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for kv in listed.items {
        match serde_json::from_slice::<ServerRecord>(&kv.value) {
            Ok(r) => records.push(r),
            Err(e) => bad.push(BadRecord {
                key: display_key(&kv.key),
                error: e.to_string(),
            }),
        }
    }
    Ok((records, bad))
}

/// Publishes a server's record under a lease, renewed in the background, until
/// [`Heartbeat::stop`] withdraws it.
#[derive(Debug)]
pub struct Heartbeat {
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Option<LeaseId>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts publishing `state` (its `id` names the record; later changes to it are
    /// published at the next renewal).
    pub fn start(
        store: Arc<dyn Store>,
        prefix: KeyPrefix,
        state: Arc<Mutex<ServerRecord>>,
    ) -> Self {
        let lease = Arc::new(Mutex::new(None));
        let task = tokio::spawn(publish(store.clone(), prefix, state, lease.clone()));
        Heartbeat { store, lease, task }
    }

    /// Stops publishing and removes the record at once (a stopped server is not live).
    pub async fn stop(self) {
        self.task.abort();
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lease) = lease {
            if let Err(e) = self.store.revoke_lease(lease).await {
                tracing::warn!(error = %e, "heartbeat: withdrawing the record");
            }
        }
    }
}

/// Renews the lease and rewrites the record (fresh heartbeat time, current configuration
/// hash) every [`HEARTBEAT_INTERVAL`]. A lost lease or a failed write starts over with a
/// new lease.
async fn publish(
    store: Arc<dyn Store>,
    prefix: KeyPrefix,
    state: Arc<Mutex<ServerRecord>>,
    current_lease: Arc<Mutex<Option<LeaseId>>>,
) {
    let current = || {
        let mut record = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        record.heartbeat = unix_now();
        record
    };
    let id = current().id;
    let key = format!("{}{id}", servers_prefix(&prefix));
    let encode = |r: &ServerRecord| serde_json::to_vec(r).unwrap_or_default();
    loop {
        let lease = match store.grant_lease(HEARTBEAT_TTL).await {
            Ok(l) => {
                *current_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                l
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat: granting a lease");
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                continue;
            }
        };
        // A record left by an earlier lease of this id is replaced.
        let mut revision = match store.get(key.as_bytes()).await {
            Ok(Some(old)) => {
                store
                    .update(
                        key.as_bytes(),
                        &encode(&current()),
                        old.mod_revision,
                        Some(lease),
                    )
                    .await
            }
            Ok(None) => {
                store
                    .create(key.as_bytes(), &encode(&current()), Some(lease))
                    .await
            }
            Err(e) => Err(e),
        };
        while let Ok(r) = revision {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            if let Err(e) = store.keep_alive(lease).await {
                tracing::warn!(error = %e, "heartbeat: renewing the lease");
                revision = Err(e);
                break;
            }
            revision = store
                .update(key.as_bytes(), &encode(&current()), r, Some(lease))
                .await;
        }
        if let Err(e) = revision {
            tracing::warn!(error = %e, "heartbeat: publishing the record");
        }
        let _ = store.revoke_lease(lease).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
