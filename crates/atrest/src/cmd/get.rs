//! `atrest get KEY`: one stored object, decrypted and decoded.

use std::io::Write;

use atrest_ops::inspect::inspect;
use atrest_storage::{KeyPrefix, StorageKey};
use clap::{Args, ValueEnum};

use super::offline::{runtime, OfflineArgs, SnapshotArg};
use crate::exit::{CmdResult, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// The object as YAML (like `kubectl get -o yaml`), after a comment with provider,
    /// key, staleness and revision.
    Yaml,
    /// Provider, key, staleness, revision and the object, as JSON.
    Json,
    /// The stored bytes exactly, as `etcdctl get --print-value-only` prints them.
    Raw,
}

/// Show one stored object: who encrypted it (provider and key), whether it is stale, its
/// revision, and the object decoded.
///
/// The recovery path when the API server is gone: only the configuration and the store are
/// read. Kinds atrest does not model (Deployments, Pods, ...) are shown as their
/// `runtime.Unknown` envelope with a dump of the protobuf fields.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The storage key, e.g. /registry/secrets/default/db.
    #[arg(value_name = "KEY")]
    key: String,
    /// The resource whose providers apply (default: inferred from the key).
    #[arg(long)]
    resource: Option<String>,
    #[command(flatten)]
    offline: OfflineArgs,
    #[command(flatten)]
    snapshot: SnapshotArg,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    output: GetFormat,
}

pub fn get(mut args: GetArgs) -> CmdResult {
    args.offline.resolve()?;
    args.offline.snapshot = args.snapshot.etcd_snapshot.clone();
    let prefix = KeyPrefix::new(args.offline.prefix());
    let key = match StorageKey::parse(args.key.as_bytes(), &prefix) {
        Ok(key) => key,
        Err(e) => return Err(Failure::Error(format!("{e}"))),
    };
    let key = match &args.resource {
        Some(r) => key.with_resource(atrest_encryption::GroupResource::parse(r)),
        None => key,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let storage = args.offline.open().await?;
        let missing = || Failure::Error(format!("{key} not found in the store"));
        if args.output == GetFormat::Raw {
            let kv = storage
                .get_stored(&key)
                .await
                .map_err(|e| Failure::Error(e.to_string()))?
                .ok_or_else(missing)?;
            let mut out = std::io::stdout().lock();
            return out
                .write_all(&kv.value)
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush())
                .map_err(|e| Failure::Error(format!("writing standard output: {e}")));
        }
        let inspected = inspect(&storage, &key)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?
            .ok_or_else(missing)?;
        match args.output {
            GetFormat::Json => {
                let text = serde_json::to_string_pretty(&inspected)
                    .map_err(|e| Failure::Error(format!("encoding JSON: {e}")))?;
                println!("{text}");
            }
            _ => {
                let yaml = serde_saphyr::to_string(&inspected.object)
                    .map_err(|e| Failure::Error(format!("encoding YAML: {e}")))?;
                println!("# key: {}", inspected.key);
                println!(
                    "# provider: {}{}   stale: {}   revision: {}",
                    inspected.provider,
                    if inspected.stale {
                        format!(" (write key is {})", inspected.write_key)
                    } else {
                        String::new()
                    },
                    inspected.stale,
                    inspected.mod_revision
                );
                print!("{yaml}");
            }
        }
        Ok(())
    })
}
