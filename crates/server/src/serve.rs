//! `atrest serve`: everything a server process does from start to graceful stop.
//!
//! Start-up fails fast, with a message naming what is wrong, on a bad encryption
//! configuration, an unreachable store or a port in use. Once serving, background tasks keep
//! the served CRDs in step with the store (so several servers on one etcd agree), re-read the
//! encryption configuration when automatic reload is on, and publish a leased heartbeat with
//! the loaded configuration hash under `/atrest/servers/`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest_auth::authn::{ensure_admin_token, Authenticator, TokenFile};
use atrest_auth::{kubeconfig, tls};
use atrest_encryption::config::template::{render, TemplateProvider};
use atrest_encryption::kms::{KmsConnector, KmsLifecycle};
use atrest_encryption::{EncryptionConfig, Key, ParseOptions, ProviderChain};
use atrest_kms::GrpcKmsConnector;
use atrest_storage::servers::{unix_now, Heartbeat, ServerRecord};
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use atrest_store::{Store, StoreConfig};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::http::{Check, HttpServer};
use crate::metrics::Metrics;
use crate::objects::ObjectStore;
use crate::resources::StorageEncoding;

/// Name of the configuration `serve` writes when none is given.
pub const GENERATED_CONFIG: &str = "encryption-config.yaml";

/// Everything `atrest serve` was told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub etcd_prefix: String,
    pub encryption_config: Option<PathBuf>,
    pub automatic_reload: bool,
    pub reload_interval: Duration,
    pub allow_kms_v1: bool,
    pub storage_encoding: StorageEncoding,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub token_auth_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
    /// KMS v2 timing (upstream's unless a test shortens it).
    pub kms_lifecycle: KmsLifecycle,
    /// Leave the KMS check out of `/readyz` (it stays in `/healthz`).
    pub readyz_exclude_kms: bool,
    /// Connections, idle time, request bodies, requests in flight, watches, unpaged lists.
    pub limits: crate::limits::ServingLimits,
    /// How often watches that allow bookmarks get one.
    pub watch_bookmark_interval: Duration,
}

fn generate_config(path: &Path) -> Result<(), String> {
    let key =
        Key::generate(32).map_err(|e| format!("the OS random number generator failed: {e}"))?;
    let text = render(
        &["*.*".to_string()],
        &TemplateProvider::Static {
            kind: "secretbox",
            key_name: "key1",
            key: &key,
        },
        true,
    );
    atrest_files::write_private(path, text.as_bytes(), atrest_files::Existing::Replace)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

struct LoadedConfig {
    chain: ProviderChain,
    hash: String,
}

fn load_chain(
    path: &Path,
    options: &ServeOptions,
    kms: &dyn KmsConnector,
) -> Result<LoadedConfig, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let parse = ParseOptions {
        reload: options.automatic_reload,
        allow_kms_v1: options.allow_kms_v1,
    };
    let config = EncryptionConfig::parse(&bytes, &path.display().to_string(), parse)
        .map_err(|e| e.to_string())?;
    for w in atrest_encryption::config::lint(&config) {
        tracing::warn!(file = %path.display(), "{w}");
    }
    let chain = ProviderChain::build(&config, kms).map_err(|e| e.to_string())?;
    Ok(LoadedConfig {
        chain,
        hash: config.hash().to_string(),
    })
}

/// `sha256:<hex>` of this server's id, the label upstream's reload metrics carry.
fn id_hash(server_id: &str) -> String {
    let d = Sha256::digest(server_id.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Runs the server until `shutdown` resolves.
pub async fn run(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| format!("creating --data-dir {}: {e}", options.data_dir.display()))?;

    // Encryption configuration: given, or generated on first start.
    let config_path = match &options.encryption_config {
        Some(p) => p.clone(),
        None => {
            let p = options.data_dir.join(GENERATED_CONFIG);
            if !p.exists() {
                generate_config(&p)?;
                tracing::info!(path = %p.display(), "no --encryption-provider-config given: generated one (secretbox for every resource, *.*, mode 0600)");
            } else {
                tracing::info!(path = %p.display(), "using the encryption configuration generated on first start");
            }
            p
        }
    };
    let server_id = format!("{}-{}", hostname(), crate::defaults::new_uid());
    let metrics = Arc::new(Metrics::default());
    let kms = GrpcKmsConnector::new(
        Some(Arc::new(crate::metrics::KmsMetrics::new(
            metrics.clone(),
            &server_id,
        ))),
        options.kms_lifecycle,
    );
    let loaded = load_chain(&config_path, &options, &kms)?;
    record_config_info(&metrics, &server_id, &loaded.hash);
    // KMS v2: one probe before serving (upstream's "prime"); a plugin that is not up yet is
    // not fatal, the status poll below keeps trying.
    let kms_failures = loaded.chain.refresh_kms().await;
    let kms_ready = kms_failures.is_empty();
    for (name, e) in kms_failures {
        tracing::warn!(provider = %name, error = %e, "KMS provider not ready at start; writes through it fail until its plugin answers");
    }

    // Store.
    let store: Arc<dyn Store> = atrest_store::open(options.store.clone())
        .await
        .map_err(|e| format!("opening the store: {e}"))?;
    store
        .current_revision()
        .await
        .map_err(|e| format!("the store ({}) is not reachable: {e}", store.describe()))?;
    tracing::info!(store = %store.describe(), "store ready");

    let chain = ChainHandle::new(loaded.chain);
    let prefix = KeyPrefix::new(&options.etcd_prefix);
    let objects = ObjectStore::new(
        EncryptedStore::new(store.clone(), chain.clone(), prefix.clone()),
        metrics.clone(),
    );
    let api = Arc::new(
        Api::new(objects, options.storage_encoding)
            .with_bookmark_interval(options.watch_bookmark_interval),
    );
    api.reload_crds()
        .await
        .map_err(|e| format!("loading CustomResourceDefinitions: {e}"))?;
    api.ensure_default_namespaces()
        .await
        .map_err(|e| format!("creating the default namespaces: {e}"))?;

    // TLS and authentication.
    let addr = SocketAddr::new(options.bind_address, options.secure_port);
    let listener = crate::http::bind(addr).await?;
    let hosts = vec![options.bind_address.to_string()];
    let pki = tls::ensure_pki(&options.data_dir, &hosts).map_err(|e| e.to_string())?;
    let serving = match (&options.tls_cert_file, &options.tls_private_key_file) {
        (Some(c), Some(k)) => tls::ServingIdentity::from_files(c, k).map_err(|e| e.to_string())?,
        (None, None) => pki.serving_identity().map_err(|e| e.to_string())?,
        _ => return Err("--tls-cert-file and --tls-private-key-file go together".into()),
    };
    let client_ca = [pki.ca_cert_der().map_err(|e| e.to_string())?];
    let tls_config = tls::server_config(&serving, Some(&client_ca)).map_err(|e| e.to_string())?;
    let url = kubeconfig::server_url(
        &options.bind_address.to_string(),
        listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(options.secure_port),
    );
    let server_ca = if options.tls_cert_file.is_some() {
        serving.trust_anchor_pem().map(String::into_bytes)
    } else {
        Some(pki.ca_cert_pem().as_bytes().to_vec())
    };
    let kubeconfig_path = kubeconfig::write_admin_kubeconfig_with_ca(
        &options.data_dir,
        &url,
        &pki,
        server_ca.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let mut tokens = match &options.token_auth_file {
        Some(p) => TokenFile::load(p).map_err(|e| e.to_string())?,
        None => TokenFile::default(),
    };
    let (admin_token, admin_user) =
        ensure_admin_token(&options.data_dir).map_err(|e| e.to_string())?;
    tokens.insert(admin_token.expose_secret(), admin_user);
    let authenticator = Authenticator::new(Some(tokens));

    // Background tasks.
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(watch_crds(api.clone())));
    tasks.push(tokio::spawn(crate::migration::run(
        api.clone(),
        server_id.clone(),
    )));
    tasks.push(tokio::spawn(kms_status_loop(
        chain.clone(),
        options.kms_lifecycle,
        kms_ready,
    )));
    // What this server has in force, shared by the reload loop (which changes it) and the
    // heartbeat (which publishes it).
    let state = Arc::new(std::sync::Mutex::new(ServerRecord {
        id: server_id.clone(),
        config_hash: loaded.hash.clone(),
        heartbeat: unix_now(),
        automatic_reload: options.automatic_reload,
        last_reload_error: None,
    }));
    let heartbeat = Heartbeat::start(store.clone(), prefix.clone(), state.clone());
    if options.automatic_reload {
        tasks.push(tokio::spawn(reload_loop(
            config_path.clone(),
            options.clone(),
            kms.clone(),
            chain.clone(),
            metrics.clone(),
            server_id.clone(),
            state.clone(),
        )));
    }

    let mut checks: Vec<(String, Check)> = Vec::new();
    let store_check = store.clone();
    checks.push((
        "etcd".into(),
        Arc::new(move || {
            let s = store_check.clone();
            Box::pin(async move {
                s.current_revision()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }),
    ));
    if options.automatic_reload || chain.current().has_kms() {
        let c = chain.clone();
        checks.push((
            "kms-providers".into(),
            Arc::new(move || {
                let c = c.clone();
                Box::pin(async move {
                    let failures = c.current().probe_kms().await;
                    if failures.is_empty() {
                        Ok(())
                    } else {
                        Err(failures
                            .iter()
                            .enumerate()
                            .map(|(i, (n, e))| format!("kms-provider-{i} ({n}): {e}"))
                            .collect::<Vec<_>>()
                            .join("; "))
                    }
                })
            }),
        ));
    }

    // The status page, with its login links in the store (so `atrest ui-url` can mint
    // one for this server).
    let ui_tokens = Arc::new(atrest_web::StoreTokens::new(store.clone(), prefix.clone()));
    let ui = Arc::new(atrest_web::StatusPage::new(
        "/ui/",
        atrest_web::ScanSource {
            storage: EncryptedStore::new(store.clone(), chain.clone(), prefix.clone()),
            config_file: config_path.clone(),
            chain: Box::new(atrest_web::snapshot::LiveChain {
                path: config_path.clone(),
                parse: ParseOptions {
                    reload: options.automatic_reload,
                    allow_kms_v1: options.allow_kms_v1,
                },
            }),
        },
        ui_tokens.clone(),
        true,
    ));
    let ui_login = match ui_tokens.mint().await {
        Ok(token) => format!("{url}{}", ui.login_path(&token)),
        Err(e) => format!("(no login link: {e}; `atrest ui-url` mints one)"),
    };
    let http = Arc::new(HttpServer {
        api,
        authenticator,
        checks,
        readyz_excluded: if options.readyz_exclude_kms {
            vec!["kms-providers".to_string()]
        } else {
            Vec::new()
        },
        advertise: addr.to_string(),
        ui: Some(ui),
        gates: crate::limits::Gates::new(options.limits),
    });
    tracing::info!(%url, kubeconfig = %kubeconfig_path.display(), config = %config_path.display(), "serving");
    eprintln!(
        "atrest: serving on {url}\natrest: kubectl --kubeconfig {}\natrest: status page (one-time link): {ui_login}",
        kubeconfig_path.display()
    );
    http.serve(listener, tls_config, shutdown, options.shutdown_grace)
        .await;
    for t in tasks {
        t.abort();
    }
    heartbeat.stop().await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "atrest".into())
}

fn record_config_info(metrics: &Metrics, server_id: &str, hash: &str) {
    metrics.reset_gauge("apiserver_encryption_config_controller_last_config_info");
    metrics.set_gauge(
        "apiserver_encryption_config_controller_last_config_info",
        "Information about the last applied encryption configuration with hash as label.",
        vec![
            ("apiserver_id_hash", id_hash(server_id)),
            ("hash", hash.to_string()),
        ],
        1.0,
    );
}

/// Keeps the served resources in step with the CRDs in the store, whoever wrote them.
async fn watch_crds(api: Arc<Api>) {
    loop {
        let Some(crds) = api
            .registry()
            .find("apiextensions.k8s.io", "customresourcedefinitions")
        else {
            return;
        };
        // Watch from exactly the revision the CRDs were last read at: no change is missed
        // between the read and the watch.
        let from = match api.reload_crds().await {
            Ok(revision) => revision + 1,
            Err(e) => {
                tracing::warn!(error = %e, "reloading CRDs");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match api.objects.watch(&crds, None, from, false).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    if event.is_err() {
                        break;
                    }
                    if let Err(e) = api.reload_crds().await {
                        tracing::warn!(error = %e, "reloading CRDs");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching CRDs"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// KMS v2 `Status` polling (upstream d.5): every provider of the chain in force, every minute
/// while all are healthy and every 10 s while one is not. A healthy Status extends the write
/// state; a new key id rotates the seed; recovery after an outage needs nothing else.
async fn kms_status_loop(chain: ChainHandle, lifecycle: KmsLifecycle, mut healthy: bool) {
    loop {
        tokio::time::sleep(if healthy {
            lifecycle.healthy_poll
        } else {
            lifecycle.unhealthy_poll
        })
        .await;
        let current = chain.current();
        let was_healthy = healthy;
        healthy = true;
        for p in current.kms_v2_providers() {
            let before = p.current_key_id().await;
            match p.refresh().await {
                Ok(()) => {
                    let after = p.current_key_id().await;
                    if before != after {
                        tracing::info!(provider = %p.name(), key_id = after.as_deref().unwrap_or(""), "KMS provider: new key id from the plugin, new writes use a new seed");
                    }
                }
                Err(e) => {
                    healthy = false;
                    tracing::warn!(provider = %p.name(), error = %e, "KMS provider status check failed");
                }
            }
        }
        if healthy && !was_healthy {
            tracing::info!("KMS providers healthy again");
        }
    }
}

/// `--encryption-provider-config-automatic-reload`: re-reads the file when its hash changes;
/// a bad file is logged and counted, and the configuration in force stays.
async fn reload_loop(
    path: PathBuf,
    options: ServeOptions,
    kms: GrpcKmsConnector,
    chain: ChainHandle,
    metrics: Arc<Metrics>,
    server_id: String,
    state: Arc<std::sync::Mutex<ServerRecord>>,
) {
    let id = id_hash(&server_id);
    loop {
        tokio::time::sleep(options.reload_interval).await;
        let Ok(bytes) = std::fs::read(&path) else {
            record_reload(&metrics, &id, false);
            tracing::warn!(path = %path.display(), "automatic reload: cannot read the encryption configuration");
            continue;
        };
        let hash = atrest_encryption::config::config_hash(&bytes);
        if state.lock().unwrap_or_else(|p| p.into_inner()).config_hash == hash {
            continue;
        }
        let failed = |error: String| {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_reload_error = Some(error);
        };
        match load_chain(&path, &options, &kms) {
            Ok(loaded) => {
                let failures = loaded.chain.refresh_kms().await;
                if !failures.is_empty() {
                    record_reload(&metrics, &id, false);
                    tracing::error!(path = %path.display(), "automatic reload: a KMS provider of the new configuration is unhealthy; keeping the current one");
                    failed(
                        failures
                            .iter()
                            .map(|(name, e)| format!("KMS provider {name}: {e}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                    continue;
                }
                chain.replace(loaded.chain);
                {
                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                    state.config_hash = loaded.hash.clone();
                    state.last_reload_error = None;
                }
                record_config_info(&metrics, &server_id, &loaded.hash);
                record_reload(&metrics, &id, true);
                tracing::info!(path = %path.display(), hash = %loaded.hash, "automatic reload: new encryption configuration in force");
            }
            Err(e) => {
                record_reload(&metrics, &id, false);
                tracing::error!(path = %path.display(), error = %e, "automatic reload: the new encryption configuration is invalid; keeping the current one");
                failed(e);
            }
        }
    }
}

fn record_reload(metrics: &Metrics, id: &str, ok: bool) {
    let status = if ok { "success" } else { "failure" };
    metrics.inc(
        "apiserver_encryption_config_controller_automatic_reloads_total",
        "Total number of reload successes and failures of encryption configuration split by apiserver identity.",
        vec![("status", status.into()), ("apiserver_id_hash", id.into())],
    );
    metrics.set_gauge(
        "apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds",
        "Timestamp of the last successful or failed automatic reload of encryption configuration split by apiserver identity.",
        vec![("status", status.into()), ("apiserver_id_hash", id.into())],
        unix_now(),
    );
}
