//! Has every API server loaded a configuration? atrest servers say so in their heartbeat
//! records; kube-apiservers publish nothing, but their `/metrics` carry the hash of the
//! configuration in force (`apiserver_encryption_config_controller_last_config_info`) and
//! when their last automatic reload failed or succeeded.

use std::sync::Arc;

use atrest_client::{ClientError, KubeClient};
use atrest_storage::servers::live_servers;
use atrest_storage::{EncryptedStore, StorageError};

/// The state of every server the rotation knows of, for one configuration hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Convergence {
    /// How many servers were asked.
    pub servers: usize,
    /// Servers that have not loaded it yet: (who, what they have).
    pub pending: Vec<(String, String)>,
    /// Servers whose reload of it failed: (who, why).
    pub failed: Vec<(String, String)>,
}

impl Convergence {
    /// Every server asked has loaded it.
    pub fn converged(&self) -> bool {
        self.pending.is_empty() && self.failed.is_empty()
    }
}

/// One kube-apiserver as its `/metrics` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiServerMetrics {
    /// The configuration hash in force.
    pub config_hash: Option<String>,
    /// Unix time of the last failed and the last successful automatic reload.
    pub last_failure: Option<f64>,
    pub last_success: Option<f64>,
}

/// Reads the encryption-config metrics out of a Prometheus text page.
pub fn parse_metrics(text: &str) -> ApiServerMetrics {
    let mut out = ApiServerMetrics::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        // A label is `{name="..."` or `,name="..."` (not the tail of a longer name).
        let label = |name: &str| {
            ["{", ","].iter().find_map(|sep| {
                let needle = format!("{sep}{name}=\"");
                let start = line.find(&needle)? + needle.len();
                let end = line[start..].find('"')? + start;
                Some(line[start..end].to_string())
            })
        };
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("apiserver_encryption_config_controller_last_config_info{") {
            if value() == Some(1.0) {
                out.config_hash = label("hash");
            }
        } else if line.starts_with(
            "apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{",
        ) {
            match label("status").as_deref() {
                Some("failure") => out.last_failure = value(),
                Some("success") => out.last_success = value(),
                _ => {}
            }
        }
    }
    out
}

/// Asks every atrest server (heartbeats) and every kube-apiserver given whether it has
/// loaded `hash`. `since`: when the file was written (Unix seconds); a kube-apiserver reload
/// failure after it, with no success after the failure, counts as failed.
pub async fn check(
    storage: &EncryptedStore,
    kube_apiservers: &[Arc<KubeClient>],
    hash: &str,
    since: f64,
) -> Result<Convergence, StorageError> {
    let mut c = Convergence::default();
    let (records, _) = live_servers(storage.store().as_ref(), storage.prefix()).await?;
    for r in records {
        c.servers += 1;
        if r.config_hash == hash {
            continue;
        }
        match r.last_reload_error {
            Some(error) => c.failed.push((format!("atrest server {}", r.id), error)),
            None if !r.automatic_reload => c.pending.push((
                format!("atrest server {}", r.id),
                format!(
                    "{} (no automatic reload: restart it with the file)",
                    r.config_hash
                ),
            )),
            None => c
                .pending
                .push((format!("atrest server {}", r.id), r.config_hash)),
        }
    }
    for client in kube_apiservers {
        c.servers += 1;
        let who = format!("kube-apiserver {}", client.server());
        match client.get_text("/metrics").await {
            Ok(text) => {
                let m = parse_metrics(&text);
                match m.config_hash {
                    Some(h) if h == hash => {}
                    other => {
                        let failed_after = m
                            .last_failure
                            .filter(|f| *f + 1.0 >= since && m.last_success.is_none_or(|s| s < *f));
                        if failed_after.is_some() {
                            c.failed.push((
                                who,
                                "its automatic reload of the file failed (see its log)".into(),
                            ));
                        } else {
                            c.pending.push((
                                who,
                                other.unwrap_or_else(|| {
                                    "no configuration hash in its /metrics".into()
                                }),
                            ));
                        }
                    }
                }
            }
            Err(e) => c.pending.push((who, unreachable(&e))),
        }
    }
    Ok(c)
}

fn unreachable(e: &ClientError) -> String {
    format!("not answering: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reload_metrics() {
        let text = "# HELP x\n\
apiserver_encryption_config_controller_last_config_info{apiserver_id_hash=\"sha256:aa\",hash=\"sha256:bb\"} 1\n\
apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{apiserver_id_hash=\"sha256:aa\",status=\"failure\"} 1.7e+09\n\
apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{apiserver_id_hash=\"sha256:aa\",status=\"success\"} 1700000100\n";
        let m = parse_metrics(text);
        assert_eq!(m.config_hash.as_deref(), Some("sha256:bb"));
        assert_eq!(m.last_failure, Some(1.7e9));
        assert_eq!(m.last_success, Some(1_700_000_100.0));
        assert_eq!(parse_metrics("garbage{\n"), ApiServerMetrics::default());
    }
}
