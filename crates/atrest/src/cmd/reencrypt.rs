//! `atrest reencrypt`: rewrite every object that is not on its write key.

use atrest_ops::reencrypt::{check_servers, reencrypt, ReencryptOptions, ReencryptReport};
use clap::Args;

use super::offline::{parse_resources, runtime, OfflineArgs};
use super::OutputFormat;
use crate::exit::{CmdResult, Failure};
use crate::progress::CliProgress;

/// Rewrite every object not on its resource's write key (stale, or plaintext where the
/// configuration encrypts), straight in the store.
///
/// Each object is decrypted, encrypted with the write key and written back
/// compare-and-swap on the revision it was read at, many per request; a concurrent change
/// wins and the object is read again. Safe beside running API servers (atrest's or
/// kube-apiserver's); interrupted at any point, a rerun finishes the job. A final pass
/// verifies that nothing stale remains.
///
/// Refuses to write while a live atrest server has loaded another configuration than the
/// file given (it could not read what is written). kube-apiservers publish nothing: make
/// sure they have loaded the file first.
///
/// Exit 0 when everything is on its write key, 3 when unreadable or stale objects remain,
/// 1 on error.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    #[command(flatten)]
    offline: OfflineArgs,
    /// Only these resources (comma-separated: secrets,configmaps,pandas.awesome.bears.example).
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    resources: Vec<String>,
    /// Batched rewrites in flight at once.
    #[arg(long, default_value_t = atrest_ops::reencrypt::WRITERS, value_name = "N")]
    writers: usize,
    /// Output format of the summary.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(args: ReencryptArgs) -> CmdResult {
    let options = ReencryptOptions {
        resources: parse_resources(&args.resources)?,
        writers: args.writers.max(1),
        ..ReencryptOptions::default()
    };
    let runtime = runtime()?;
    let started = std::time::Instant::now();
    let report = runtime.block_on(async {
        let storage = args.offline.open().await?;
        check_servers(&storage)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        reencrypt(&storage, &options, &progress)
            .await
            .map_err(|e| Failure::Error(e.to_string()))
    })?;
    let seconds = started.elapsed().as_secs_f64();
    match args.output {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(&report)
                .map_err(|e| Failure::Error(format!("encoding the summary: {e}")))?;
            value["complete"] = serde_json::json!(report.complete());
            value["seconds"] = serde_json::json!(seconds);
            println!("{value:#}");
        }
        OutputFormat::Text => print!("{}", render(&report, seconds)),
    }
    if report.complete() {
        Ok(())
    } else {
        Err(Failure::Audit)
    }
}

fn render(r: &ReencryptReport, seconds: f64) -> String {
    let rate = r.rewritten as f64 / seconds.max(0.001);
    let mut out = format!(
        "rewritten {} ({rate:.0}/s), already current {}, skipped (deleted meanwhile) {}, \
         retried after a concurrent write {}, unreadable {}; {} pass(es) over {} objects in {seconds:.1}s\n",
        r.rewritten,
        r.already_current,
        r.skipped_deleted,
        r.retried,
        r.unreadable,
        r.passes,
        r.scanned,
    );
    for u in &r.unreadable_keys {
        out.push_str(&format!("  unreadable {}: {}\n", u.key, u.reason));
    }
    if r.complete() {
        out.push_str("verified: every object is on its write key\n");
    } else if r.remaining_stale > 0 {
        out.push_str(&format!(
            "NOT complete: {} stale object(s) remain (concurrent writers with another \
             configuration?); run again\n",
            r.remaining_stale
        ));
    } else {
        out.push_str(
            "NOT complete: unreadable objects remain; they need the key that wrote them \
             (see `atrest status`)\n",
        );
    }
    out
}
