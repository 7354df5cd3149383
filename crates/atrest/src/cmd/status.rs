//! `atrest status`: audit what is really stored encrypted.

use std::fmt::Write as _;

use atrest_ops::audit::{audit, Audit, AuditOptions};
use atrest_ops::history::{audit_history, HistoryAudit};
use clap::Args;

use super::offline::{parse_resources, runtime, OfflineArgs, SnapshotArg};
use super::OutputFormat;
use crate::exit::{CmdResult, Failure};
use crate::progress::CliProgress;

/// Audit the store: per resource, objects by provider and key, plaintext, stale and
/// undecryptable values.
///
/// Every key under the prefix is read at one revision and decrypted with the configuration
/// given, offline (no API server needed, one may be running). Exit 0 only when every object
/// of every resource the configuration covers is readable, encrypted and on its write key;
/// 3 otherwise; 1 on error.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    offline: OfflineArgs,
    #[command(flatten)]
    snapshot: SnapshotArg,
    /// Only these resources (comma-separated: secrets,configmaps,pandas.awesome.bears.example).
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    resources: Vec<String>,
    /// Output format (json: with a top-level `upToDate`).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
    /// Also read every retained old revision (until compaction, etcd and the embedded store
    /// keep them) and report versions that are plaintext where the configuration encrypts,
    /// or on keys it no longer has; exit 3 if any (`atrest purge` removes them).
    #[arg(long)]
    history: bool,
    /// Serve the status as a page in the browser instead of printing it: coverage per
    /// resource, keys, servers, rotation, history and KMS, updated live (the store is
    /// scanned at most once every 10 s). Prints a one-time login link; runs until Ctrl-C.
    #[arg(long, conflicts_with_all = ["output", "history"])]
    web: bool,
    /// Where `--web` listens (loopback by default: the page is plain HTTP).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:8080",
        requires = "web"
    )]
    listen: std::net::SocketAddr,
}

pub fn status(mut args: StatusArgs) -> CmdResult {
    args.offline.resolve()?;
    args.offline.snapshot = args.snapshot.etcd_snapshot.clone();
    if args.web {
        return web(args);
    }
    let options = AuditOptions {
        resources: parse_resources(&args.resources)?,
    };
    let runtime = runtime()?;
    let (result, history) = runtime.block_on(async {
        let storage = args.offline.open().await?;
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        let result = audit(&storage, &options, &progress)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        let history = match args.history {
            true => Some(
                audit_history(&storage, &options, &progress)
                    .await
                    .map_err(|e| Failure::Error(e.to_string()))?,
            ),
            false => None,
        };
        Ok::<_, Failure>((result, history))
    })?;
    match args.output {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(&result)
                .map_err(|e| Failure::Error(format!("encoding the audit: {e}")))?;
            if let Some(h) = &history {
                value["history"] = serde_json::to_value(h)
                    .map_err(|e| Failure::Error(format!("encoding the audit: {e}")))?;
            }
            println!("{value:#}");
        }
        OutputFormat::Text => {
            print!("{}", render(&result));
            if let Some(h) = &history {
                print!("{}", render_history(h));
            }
        }
    }
    if result.up_to_date && history.as_ref().is_none_or(|h| h.clean) {
        Ok(())
    } else {
        Err(Failure::Audit)
    }
}

/// `status --web`: the page on plain HTTP, one login link printed.
fn web(args: StatusArgs) -> CmdResult {
    use std::sync::Arc;
    if args.output == OutputFormat::Json {
        return Err(Failure::Usage("--web serves a page; drop -o json".into()));
    }
    crate::logging::init();
    let config_file = args.offline.config_path()?;
    let parse = atrest_encryption::ParseOptions {
        reload: false,
        allow_kms_v1: args.offline.gates.kms_v1()?,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let storage = args.offline.open().await?;
        let source = atrest_web::ScanSource {
            storage,
            config_file: config_file.clone(),
            chain: Box::new(atrest_web::snapshot::FileChain {
                path: config_file,
                parse,
                build: super::offline::build_chain,
            }),
        };
        let tokens = Arc::new(atrest_web::MemoryTokens::default());
        let token = tokens.mint().map_err(Failure::Error)?;
        let page = Arc::new(atrest_web::StatusPage::new("/", source, tokens, false));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::Error(format!("--listen {}: {e}", args.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Error(format!("--listen {}: {e}", args.listen)))?;
        println!(
            "status page: open http://{addr}{} (a one-time link; Ctrl-C stops)",
            page.login_path(&token)
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        atrest_web::serve_http(page, listener, super::serve::shutdown_signal()).await;
        Ok::<_, Failure>(())
    })
}

fn count(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        n.to_string()
    }
}

/// The one-screen table.
pub fn render(audit: &Audit) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 8]> = audit
        .resources
        .iter()
        .map(|r| {
            [
                r.resource.clone(),
                if r.covered { "yes" } else { "no" }.into(),
                r.write_key.to_string(),
                r.objects.to_string(),
                count(r.current),
                count(r.stale),
                count(r.plaintext),
                count(r.undecryptable),
            ]
        })
        .collect();
    let header = [
        "RESOURCE",
        "COVERED",
        "WRITE KEY",
        "OBJECTS",
        "CURRENT",
        "STALE",
        "PLAINTEXT",
        "UNREADABLE",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i >= 3 {
                let _ = write!(l, "{cell:>w$}  ");
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    if audit.resources.is_empty() {
        out.push_str("(no objects under the prefix)\n");
    }
    out.push_str("\nKEYS\n");
    for r in &audit.resources {
        let keys: Vec<String> = r
            .keys
            .iter()
            .map(|k| {
                format!(
                    "{} {}{}",
                    k.key,
                    k.objects,
                    if k.write { " (write key)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(out, "  {}: {}", r.resource, keys.join(", "));
    }
    let unreadable: Vec<_> = audit
        .resources
        .iter()
        .flat_map(|r| r.undecryptable_keys.iter())
        .chain(audit.unparsable_keys.examples.iter())
        .collect();
    if !unreadable.is_empty() {
        out.push_str("\nUNREADABLE (first of each resource)\n");
        for u in unreadable {
            let _ = writeln!(out, "  {}: {}", u.key, u.reason);
        }
    }
    if audit.unparsable_keys.count > 0 {
        let _ = writeln!(
            out,
            "\n{} key(s) under the prefix are not object keys of any resource",
            audit.unparsable_keys.count
        );
    }
    out.push_str("\nSERVERS\n");
    if audit.servers.is_empty() {
        out.push_str("  (no atrest server has published a heartbeat)\n");
    }
    for s in &audit.servers {
        let _ = writeln!(
            out,
            "  {}  {}  heartbeat {:.0}s ago{}{}",
            s.id,
            s.config_hash,
            s.heartbeat_age_seconds,
            if s.matches_config {
                ""
            } else {
                "  DIFFERS from the configuration given"
            },
            s.last_reload_error
                .as_deref()
                .map(|e| format!("  last reload failed: {e}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\nstore {} at revision {}, configuration {}",
        audit.store, audit.revision, audit.config_hash
    );
    let problems: Vec<String> = audit
        .problems()
        .map(|r| {
            let mut parts = Vec::new();
            if r.stale > 0 {
                parts.push(format!("{} stale", r.stale));
            }
            if r.plaintext > 0 {
                parts.push(format!("{} plaintext", r.plaintext));
            }
            if r.undecryptable > 0 {
                parts.push(format!("{} unreadable", r.undecryptable));
            }
            format!("{} ({})", r.resource, parts.join(", "))
        })
        .collect();
    if problems.is_empty() {
        out.push_str("up to date: every covered object is encrypted with its write key\n");
    } else {
        let _ = writeln!(
            out,
            "NOT up to date: {}; `atrest reencrypt` rewrites stale and plaintext objects",
            problems.join("; ")
        );
    }
    out
}

/// The history section.
pub fn render_history(h: &HistoryAudit) -> String {
    let mut out = format!(
        "\nHISTORY ({} retained versions, compacted up to revision {})\n",
        h.versions, h.compacted_revision
    );
    for r in &h.resources {
        let _ = writeln!(
            out,
            "  {}: {} versions, {} plaintext, {} unreadable{}",
            r.resource,
            r.versions,
            r.plaintext,
            r.unreadable,
            if r.covered { "" } else { " (not covered)" }
        );
        for e in &r.examples {
            let _ = writeln!(out, "    {}: {}", e.key, e.reason);
        }
    }
    if h.clean {
        out.push_str("history clean: no old plaintext or old-key copies retained\n");
    } else {
        out.push_str(
            "history NOT clean: old copies remain; `atrest purge` compacts and defragments them away\n",
        );
    }
    out
}
