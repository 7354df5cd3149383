#![forbid(unsafe_code)]
//! atrest-load: drives load against atrest's layers and reports throughput and latency.
//!
//! `atrest-load store ...` drives the raw store (embedded SQLite or etcd) through the
//! `atrest_store::Store` trait, with no encryption or API on top.

mod ops;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_store::{CompactionPolicy, Store, StoreConfig, StoreError, TlsFiles};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Concurrent writers filling the key set of a `get` or `list` run.
const SETUP_WRITERS: usize = 32;

#[derive(Debug, Parser)]
#[command(name = "atrest-load", about = "Load generator for atrest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raw store operations (no encryption, no API) against the embedded store or etcd.
    Store(StoreArgs),
    /// Write encrypted objects into a store, as an API server would have (benchmark setup).
    Seed(ops::SeedArgs),
    /// Reference for the operations benchmark: read every key under a prefix and write the
    /// same values back in batched transactions of plain puts (gRPC or JSON gateway).
    BatchWrite(ops::BatchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Operation {
    /// Create a new key per operation.
    Put,
    /// Compare-and-swap update of a key owned by the worker.
    Update,
    /// Read a random key of a pre-written set.
    Get,
    /// List the whole pre-written set, paginated at one revision (`--page-size`); one
    /// operation is one complete list.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Embedded store directory (state.db inside); created if missing.
    #[arg(
        long,
        conflicts_with = "etcd_servers",
        required_unless_present = "etcd_servers"
    )]
    data_dir: Option<PathBuf>,
    /// etcd endpoints, comma separated (http://host:port or https://host:port).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// CA file for etcd TLS.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd TLS.
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd TLS.
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// What each operation does.
    #[arg(long, value_enum, default_value = "put")]
    op: Operation,
    /// Concurrent workers (tasks), each issuing one operation at a time.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys written before a `get` or `list` run (the keys read).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Page size of a `list` run.
    #[arg(long, default_value_t = 500)]
    page_size: usize,
    /// Key prefix for the keys written (a fresh sub-prefix is used per run).
    #[arg(long, default_value = "/atrest-load")]
    prefix: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    op: Operation,
    concurrency: usize,
    value_size: usize,
    duration_seconds: f64,
    operations: u64,
    errors: u64,
    ops_per_second: f64,
    latency_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

/// Latencies of one worker, in microseconds.
#[derive(Debug, Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// A fast, deterministic generator for key choice and value bytes (no cryptographic need).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn store_config(args: &StoreArgs) -> StoreConfig {
    match &args.data_dir {
        Some(data_dir) => StoreConfig::Embedded {
            data_dir: data_dir.clone(),
            // As the server runs it: history is compacted in the background.
            compaction: CompactionPolicy::default(),
        },
        None => {
            let any_tls = args.etcd_cafile.is_some()
                || args.etcd_certfile.is_some()
                || args.etcd_keyfile.is_some();
            StoreConfig::Etcd {
                endpoints: args.etcd_servers.clone(),
                prefix: "/registry".to_string(),
                tls: any_tls.then(|| TlsFiles {
                    ca_file: args.etcd_cafile.clone(),
                    cert_file: args.etcd_certfile.clone(),
                    key_file: args.etcd_keyfile.clone(),
                }),
            }
        }
    }
}

async fn run_worker(
    store: Arc<dyn Store>,
    args: Arc<StoreArgs>,
    run_prefix: String,
    worker: usize,
    deadline: Instant,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1).wrapping_mul(0x2545_F491));
    let own_key = format!("{run_prefix}/update/{worker}");
    let mut own_revision = 0;
    if args.op == Operation::Update {
        match store
            .create(own_key.as_bytes(), &rng.bytes(args.value_size), None)
            .await
        {
            Ok(revision) => own_revision = revision,
            Err(err) => {
                result.errors += 1;
                result.first_error = Some(err.to_string());
                return result;
            }
        }
    }
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let value = match args.op {
            Operation::Get | Operation::List => Vec::new(),
            _ => rng.bytes(args.value_size),
        };
        let started = Instant::now();
        let outcome: Result<(), StoreError> = match args.op {
            Operation::Put => {
                let key = format!("{run_prefix}/put/{worker}/{n:010}");
                store.create(key.as_bytes(), &value, None).await.map(|_| ())
            }
            Operation::Update => store
                .update(own_key.as_bytes(), &value, own_revision, None)
                .await
                .map(|revision| own_revision = revision),
            Operation::Get => {
                let index = rng.next() % args.keys.max(1) as u64;
                let key = format!("{run_prefix}/get/{index:010}");
                match store.get(key.as_bytes()).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(StoreError::NotFound {
                        key: key.into_bytes(),
                    }),
                    Err(err) => Err(err),
                }
            }
            Operation::List => list_everything(&*store, &run_prefix, &args).await,
        };
        let elapsed = started.elapsed();
        n += 1;
        match outcome {
            Ok(()) => result
                .latencies_us
                .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)),
            Err(err) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(err.to_string());
                }
            }
        }
    }
    result
}

/// One complete paginated list of the pre-written keys, at the revision of its first page.
async fn list_everything(
    store: &dyn Store,
    run_prefix: &str,
    args: &StoreArgs,
) -> Result<(), StoreError> {
    let prefix = format!("{run_prefix}/get/").into_bytes();
    let mut request = atrest_store::ListRequest {
        prefix,
        limit: args.page_size,
        ..atrest_store::ListRequest::default()
    };
    let mut listed = 0;
    loop {
        let page = store.list(request.clone()).await?;
        listed += page.items.len();
        if !page.more {
            break;
        }
        request.start_after = page.items.last().map(|kv| kv.key.clone());
        request.revision = Some(page.revision);
    }
    if listed == args.keys {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "listed {listed} keys, expected {}",
            args.keys
        )))
    }
}

async fn run_store(args: StoreArgs) -> Result<Report, String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".to_string());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".to_string());
    }
    let store = atrest_store::open(store_config(&args))
        .await
        .map_err(|e| format!("opening the store: {e}"))?;
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let run_prefix = format!("{}/{started_at:x}", args.prefix.trim_end_matches('/'));

    if matches!(args.op, Operation::Get | Operation::List) {
        // Write the key set first, concurrently, outside the measurement.
        let mut rng = XorShift(42);
        let value = rng.bytes(args.value_size);
        let mut writers = Vec::new();
        // Enough writers that the setup is quick whatever the measured concurrency is.
        let chunk = args
            .keys
            .div_ceil(args.concurrency.max(SETUP_WRITERS))
            .max(1);
        for chunk_start in (0..args.keys).step_by(chunk) {
            let chunk_end = (chunk_start + chunk).min(args.keys);
            let (store, value, run_prefix) =
                (Arc::clone(&store), value.clone(), run_prefix.clone());
            writers.push(tokio::spawn(async move {
                for index in chunk_start..chunk_end {
                    let key = format!("{run_prefix}/get/{index:010}");
                    store.create(key.as_bytes(), &value, None).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for writer in writers {
            writer
                .await
                .map_err(|e| format!("writer task failed: {e}"))?
                .map_err(|e| format!("writing the key set: {e}"))?;
        }
    }

    let args = Arc::new(args);
    let duration = Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            tokio::spawn(run_worker(
                Arc::clone(&store),
                Arc::clone(&args),
                run_prefix.clone(),
                worker,
                deadline,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let result = worker.await.map_err(|e| format!("worker failed: {e}"))?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
        first_error = first_error.or(result.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(err) = first_error {
        eprintln!("atrest-load: {errors} operations failed; first error: {err}");
    }
    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
    };
    Ok(Report {
        backend: store.describe(),
        op: args.op,
        concurrency: args.concurrency,
        value_size: args.value_size,
        duration_seconds: elapsed,
        operations: latencies.len() as u64,
        errors,
        ops_per_second: latencies.len() as f64 / elapsed,
        latency_ms: Percentiles {
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            max: latencies.last().map_or(0.0, |&us| us as f64 / 1000.0),
            mean,
        },
    })
}

fn print_text(report: &Report) {
    let l = &report.latency_ms;
    println!("backend:     {}", report.backend);
    println!(
        "operation:   {:?} x {} workers, {} B values, {:.1} s",
        report.op, report.concurrency, report.value_size, report.duration_seconds
    );
    println!(
        "throughput:  {:.0} ops/s ({} ok, {} errors)",
        report.ops_per_second, report.operations, report.errors
    );
    println!(
        "latency ms:  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("atrest-load: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Seed(args) => match runtime.block_on(ops::seed(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("atrest-load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::BatchWrite(args) => match runtime.block_on(ops::batch_write(args)) {
            Ok(report) => {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("atrest-load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Store(args) => {
            let output = args.output;
            match runtime.block_on(run_store(args)) {
                Ok(report) => {
                    match output {
                        OutputFormat::Text => print_text(&report),
                        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
                            Ok(json) => println!("{json}"),
                            Err(err) => {
                                eprintln!("atrest-load: encoding the report: {err}");
                                return ExitCode::FAILURE;
                            }
                        },
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("atrest-load: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 0.50), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn store_run_reports_every_operation() {
        let data_dir =
            std::env::temp_dir().join(format!("atrest-load-test-{}", std::process::id()));
        for op in ["put", "update", "get", "list"] {
            let cli = Cli::try_parse_from([
                "atrest-load",
                "store",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--op",
                op,
                "-c",
                "4",
                "--duration",
                "0.2",
                "--keys",
                "50",
                "--page-size",
                "7",
                "-o",
                "json",
            ])
            .unwrap();
            let Command::Store(args) = cli.command else {
                panic!("parsed a store command");
            };
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let report = runtime.block_on(run_store(args)).unwrap();
            assert_eq!(report.errors, 0, "{op}");
            assert!(report.operations > 0, "{op}");
            let json = serde_json::to_value(&report).unwrap();
            assert!(json["latency_ms"]["p99"].as_f64().unwrap() >= 0.0);
        }
        std::fs::remove_dir_all(&data_dir).unwrap();
    }
}
