//! The operations benchmark's helpers: seed a store with encrypted objects as an API server
//! would have left them, and the reference it is compared with: plain batched writes of the
//! same values straight to etcd, over gRPC and over etcd's JSON gateway.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use atrest_encryption::kms::NoKmsConnector;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use atrest_store::{ListRequest, StoreConfig};
use base64::Engine as _;
use serde::Serialize;

/// `seed`: N objects of one resource, encrypted with a configuration's write key.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// etcd endpoints (comma separated); without it, --data-dir.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Embedded store directory.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The EncryptionConfiguration whose write key encrypts the objects.
    #[arg(long)]
    encryption_provider_config: std::path::PathBuf,
    /// How many objects.
    #[arg(long, default_value_t = 20_000)]
    objects: usize,
    /// Bytes per object.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Namespace of the secrets.
    #[arg(long, default_value = "bench")]
    namespace: String,
}

fn store_config(
    etcd: &[String],
    data_dir: &Option<std::path::PathBuf>,
) -> Result<StoreConfig, String> {
    match (etcd.is_empty(), data_dir) {
        (false, _) => Ok(StoreConfig::etcd(etcd.to_vec())),
        (true, Some(dir)) => Ok(StoreConfig::Embedded {
            data_dir: dir.clone(),
            compaction: atrest_store::CompactionPolicy::disabled(),
        }),
        (true, None) => Err("give --etcd-servers or --data-dir".into()),
    }
}

pub async fn seed(args: SeedArgs) -> Result<(), String> {
    let bytes = std::fs::read(&args.encryption_provider_config).map_err(|e| e.to_string())?;
    let config = EncryptionConfig::parse(&bytes, "config", ParseOptions::default())
        .map_err(|e| e.to_string())?;
    let chain = ProviderChain::build(&config, &NoKmsConnector).map_err(|e| e.to_string())?;
    let store = atrest_store::open(store_config(&args.etcd_servers, &args.data_dir)?)
        .await
        .map_err(|e| e.to_string())?;
    let storage = EncryptedStore::new(store, ChainHandle::new(chain), KeyPrefix::default());
    let value: Vec<u8> = (0..args.value_size).map(|i| (i % 251) as u8).collect();
    let secrets = GroupResource::new("", "secrets");
    let started = Instant::now();
    let writers = 32;
    let storage = Arc::new(storage);
    let value = Arc::new(value);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (storage, value, secrets, ns) = (
            storage.clone(),
            value.clone(),
            secrets.clone(),
            args.namespace.clone(),
        );
        let n = args.objects;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(writers) {
                let key = storage
                    .key(&secrets, Some(&ns), &format!("s{i:07}"))
                    .map_err(|e| e.to_string())?;
                storage
                    .create(&key, &value, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "atrest-load: seeded {} objects in {:.1}s",
        args.objects,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How the reference writes reach etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// etcd's gRPC API (etcd-client).
    Grpc,
    /// etcd's JSON gateway (`POST /v3/kv/txn`, base64 keys and values), HTTP/1.1 keep-alive.
    Gateway,
}

/// `batch-write`: read every key under a prefix, then write the same values back in
/// transactions of plain puts, several writers at once.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// etcd endpoint (one; http://host:port).
    #[arg(long)]
    etcd_server: String,
    /// Keys to rewrite.
    #[arg(long, default_value = "/registry/secrets/")]
    prefix: String,
    /// Transport.
    #[arg(long, value_enum)]
    via: Via,
    /// Puts per transaction.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

#[derive(Debug, Serialize)]
pub struct BatchReport {
    pub via: Via,
    pub objects: usize,
    pub batch: usize,
    pub writers: usize,
    pub seconds: f64,
    pub objects_per_second: f64,
}

pub async fn batch_write(args: BatchArgs) -> Result<BatchReport, String> {
    let store = atrest_store::open(StoreConfig::etcd([args.etcd_server.clone()]))
        .await
        .map_err(|e| e.to_string())?;
    let items = store
        .list(ListRequest::prefix(args.prefix.clone().into_bytes()))
        .await
        .map_err(|e| e.to_string())?
        .items;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = items.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let objects = pairs.len();
    let batches: Vec<Vec<(Vec<u8>, Vec<u8>)>> =
        pairs.chunks(args.batch.max(1)).map(<[_]>::to_vec).collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let started = Instant::now();
    match args.via {
        Via::Grpc => {
            let client = etcd_client::Client::connect([args.etcd_server.as_str()], None)
                .await
                .map_err(|e| e.to_string())?;
            let mut tasks = Vec::new();
            for _ in 0..args.writers {
                let (queue, mut client) = (queue.clone(), client.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Some(batch) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop()
                        else {
                            return Ok::<_, String>(());
                        };
                        let ops: Vec<etcd_client::TxnOp> = batch
                            .iter()
                            .map(|(k, v)| etcd_client::TxnOp::put(k.as_slice(), v.as_slice(), None))
                            .collect();
                        client
                            .txn(etcd_client::Txn::new().and_then(ops))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }));
            }
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
        }
        Via::Gateway => {
            let address = args
                .etcd_server
                .strip_prefix("http://")
                .ok_or("the gateway reference needs an http:// endpoint")?
                .trim_end_matches('/')
                .to_string();
            let mut threads = Vec::new();
            for _ in 0..args.writers {
                let (queue, address) = (queue.clone(), address.clone());
                threads.push(std::thread::spawn(move || gateway_writer(&address, &queue)));
            }
            for t in threads {
                t.join().map_err(|_| "a gateway writer panicked")??;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BatchReport {
        via: args.via,
        objects,
        batch: args.batch,
        writers: args.writers,
        seconds,
        objects_per_second: objects as f64 / seconds,
    })
}

type Queue = std::sync::Mutex<Vec<Vec<(Vec<u8>, Vec<u8>)>>>;

/// One keep-alive HTTP/1.1 connection posting transactions until the queue is empty.
fn gateway_writer(address: &str, queue: &Queue) -> Result<(), String> {
    let stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let Some(batch) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
            return Ok(());
        };
        let success: Vec<serde_json::Value> = batch
            .iter()
            .map(|(k, v)| serde_json::json!({"requestPut": {"key": b64.encode(k), "value": b64.encode(v)}}))
            .collect();
        let body = serde_json::json!({ "success": success }).to_string();
        write!(
            writer,
            "POST /v3/kv/txn HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // Status line, headers, then a Content-Length or chunked body.
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.contains(" 200 ") {
            return Err(format!("gateway answered {}", line.trim()));
        }
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let header = line.trim().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            let mut body = vec![0; n];
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        }
    }
}
