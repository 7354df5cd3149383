//! `atrest purge`: compact and defragment old revisions away.

use clap::Args;

use super::offline::{runtime, OfflineArgs};
use super::OutputFormat;
use crate::exit::{CmdResult, Failure};

/// Remove old revisions from the store's files: compact history up to a revision (default:
/// the current one), then defragment every etcd member (or vacuum the embedded store), so
/// that plaintext and old-key copies left by a migration leave the files.
///
/// It cannot reach etcd's WAL and snapshot files (old entries stay there until they rotate
/// out) nor backups taken before. API servers beside keep working; their watches older than
/// the compacted revision restart with a new list, as after etcd's own compaction.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    offline: OfflineArgs,
    /// Compact up to this revision (default: the current revision).
    #[arg(long, value_name = "REVISION")]
    revision: Option<i64>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(mut args: PurgeArgs) -> CmdResult {
    args.offline.resolve()?;
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let storage = args.offline.open().await?;
        atrest_ops::purge::purge(&storage, args.revision)
            .await
            .map_err(|e| Failure::Error(e.to_string()))
    })?;
    match args.output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::Error(format!("encoding the report: {e}")))?;
            println!("{text}");
        }
        OutputFormat::Text => {
            println!(
                "{} up to revision {}",
                if report.compacted {
                    "compacted history"
                } else {
                    "history was already compacted"
                },
                report.compacted_to
            );
            for s in &report.space {
                println!(
                    "  {}: {} -> {} bytes ({} freed)",
                    s.member,
                    s.bytes_before,
                    s.bytes_after,
                    s.bytes_before.saturating_sub(s.bytes_after)
                );
            }
            println!("not reached: etcd WAL and snapshot files, and backups taken before");
        }
    }
    Ok(())
}
