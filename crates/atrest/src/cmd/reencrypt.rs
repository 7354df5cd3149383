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
    /// Batched rewrites in flight at once (default 4); with --via-api, objects written at
    /// once (default 8).
    #[arg(long, value_name = "N")]
    writers: Option<usize>,
    /// Output format of the summary.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
    /// Do the job through a Kubernetes API server instead of the store (for clusters whose
    /// etcd is out of reach): list every object (paginated) and write it back unchanged; the
    /// server re-encrypts what is stale. Needs --kubeconfig; --resources, or
    /// --encryption-provider-config to take every served resource it covers.
    #[arg(long)]
    via_api: bool,
    /// kubeconfig of the API server (with --via-api; default $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
}

pub fn run(mut args: ReencryptArgs) -> CmdResult {
    args.offline.resolve()?;
    if args.via_api {
        return via_api(args);
    }
    let options = ReencryptOptions {
        resources: parse_resources(&args.resources)?,
        writers: args
            .writers
            .unwrap_or(atrest_ops::reencrypt::WRITERS)
            .max(1),
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
        OutputFormat::Json => print_summary(
            &report,
            &[
                ("complete", report.complete().into()),
                ("seconds", seconds.into()),
            ],
        )?,
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

fn via_api(args: ReencryptArgs) -> CmdResult {
    use atrest_ops::via_api::{reencrypt_via_api, ViaApiOptions, WORKERS};
    let kubeconfig = args.kubeconfig.clone().ok_or_else(|| {
        Failure::Usage("--via-api needs --kubeconfig FILE (or $KUBECONFIG)".into())
    })?;
    let covered_by = match &args.offline.encryption_provider_config {
        Some(path) => {
            let config = super::load_config(path, false, &args.offline.gates)?;
            let chain = atrest_encryption::ProviderChain::build(
                &config,
                &atrest_kms::GrpcKmsConnector::default(),
            )
            .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?;
            Some(std::sync::Arc::new(chain))
        }
        None => None,
    };
    let options = ViaApiOptions {
        resources: parse_resources(&args.resources)?,
        covered_by,
        workers: args.writers.unwrap_or(WORKERS).max(1),
    };
    let client = atrest_client::KubeClient::from_kubeconfig(&kubeconfig)
        .map_err(|e| Failure::Error(e.to_string()))?;
    let runtime = runtime()?;
    let started = std::time::Instant::now();
    let report = runtime.block_on(async {
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        reencrypt_via_api(std::sync::Arc::new(client), &options, &progress)
            .await
            .map_err(|e| Failure::Error(e.to_string()))
    })?;
    let seconds = started.elapsed().as_secs_f64();
    match args.output {
        OutputFormat::Json => print_summary(&report, &[("seconds", seconds.into())])?,
        OutputFormat::Text => {
            println!(
                "through the API ({}): listed {}, rewritten {} ({:.0}/s), already current {}, \
                 retried after a conflict {}, deleted meanwhile {}, failed {} in {seconds:.1}s",
                report.resources.join(", "),
                report.listed,
                report.rewritten,
                report.rewritten as f64 / seconds.max(0.001),
                report.already_current,
                report.retried,
                report.skipped_deleted,
                report.failed
            );
            for f in &report.failures {
                println!("  failed: {f}");
            }
        }
    }
    if report.failed == 0 {
        Ok(())
    } else {
        Err(Failure::Audit)
    }
}

/// A summary as JSON on stdout, with a few fields added.
fn print_summary(report: &impl serde::Serialize, extra: &[(&str, serde_json::Value)]) -> CmdResult {
    let mut value = serde_json::to_value(report)
        .map_err(|e| Failure::Error(format!("encoding the summary: {e}")))?;
    for (name, v) in extra {
        value[*name] = v.clone();
    }
    println!("{value:#}");
    Ok(())
}
