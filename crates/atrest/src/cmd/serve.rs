//! `atrest serve`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use atrest_server::limits::ServingLimits;
use atrest_server::resources::StorageEncoding;
use atrest_server::serve::{run, ServeOptions};
use clap::{Args, ValueEnum};

use super::{FeatureGateArgs, StoreArgs};
use crate::exit::{CmdResult, Failure};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MediaType {
    /// Built-in kinds as protobuf, as kube-apiserver stores them (default).
    #[value(name = "application/vnd.kubernetes.protobuf")]
    Protobuf,
    /// Every kind as JSON.
    #[value(name = "application/json")]
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// EncryptionConfiguration file. Without it, serve generates
    /// <data-dir>/encryption-config.yaml (secretbox for every resource, `*.*`) on first start.
    #[arg(long = "encryption-provider-config", value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// Re-read the encryption configuration when the file changes; a bad file is refused and
    /// the configuration in force stays.
    #[arg(long = "encryption-provider-config-automatic-reload")]
    automatic_reload: bool,
    /// How often automatic reload looks at the file.
    #[arg(
        long = "encryption-provider-config-reload-interval",
        value_name = "SECONDS",
        default_value = "60"
    )]
    reload_interval: u64,
    /// How built-in objects are encoded in the store.
    #[arg(
        long = "storage-media-type",
        value_enum,
        default_value = "application/vnd.kubernetes.protobuf"
    )]
    storage_media_type: MediaType,
    /// Address to listen on.
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// HTTPS port.
    #[arg(long = "secure-port", default_value = "6443")]
    secure_port: u16,
    /// Static bearer tokens (kube-apiserver's CSV format: token,user,uid,"group1,group2").
    #[arg(long = "token-auth-file", value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    /// Serving certificate (PEM); default: one signed by the CA made in <data-dir>/pki.
    #[arg(long = "tls-cert-file", value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long = "tls-private-key-file", value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long = "shutdown-grace-seconds", default_value = "30")]
    shutdown_grace: u64,
    /// Leave the KMS provider check out of /readyz (it stays in /healthz/kms-providers):
    /// for clusters that start their KMS plugin after the API server. /livez never
    /// depends on a KMS plugin.
    #[arg(long = "readyz-exclude-kms")]
    readyz_exclude_kms: bool,
    /// How often a watch with allowWatchBookmarks=true gets a BOOKMARK event (upstream:
    /// about once a minute).
    #[arg(
        long = "watch-bookmark-interval-seconds",
        value_name = "SECONDS",
        default_value = "60"
    )]
    watch_bookmark_interval: u64,
    /// KMS v2: seconds after the last healthy Status until writes are refused (upstream: 180).
    #[arg(
        long = "kms-write-state-ttl-seconds",
        default_value = "180",
        hide = true
    )]
    kms_write_state_ttl: u64,
    /// KMS v2: Status poll interval while healthy (upstream: 60).
    #[arg(long = "kms-status-poll-seconds", default_value = "60", hide = true)]
    kms_status_poll: u64,
    /// KMS v2: Status poll interval while unhealthy (upstream: 10).
    #[arg(long = "kms-unhealthy-poll-seconds", default_value = "10", hide = true)]
    kms_unhealthy_poll: u64,
    #[command(flatten)]
    gates: FeatureGateArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What one client can make the server hold. Past a bound the server answers 429
/// TooManyRequests with Retry-After (clients retry by themselves) or closes the connection.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Open connections at most; past it new connections are closed at once.
    #[arg(long = "max-connections", default_value_t = ServingLimits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long = "tls-handshake-timeout-seconds", default_value_t = ServingLimits::default().handshake_timeout.as_secs())]
    handshake_timeout: u64,
    /// Seconds a connection may stay open with no request in progress (kube-apiserver: 90).
    #[arg(long = "idle-connection-timeout-seconds", default_value_t = ServingLimits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Seconds a client has to send a request's headers and body; also how long a list of
    /// a whole collection waits for its turn.
    #[arg(long = "request-timeout-seconds", default_value_t = ServingLimits::default().request_timeout.as_secs())]
    request_timeout: u64,
    /// MiB of request bodies being received or handled at once, across all clients (each
    /// body is at most 3 MiB).
    #[arg(long = "max-request-body-mib-in-flight", default_value_t = ServingLimits::default().max_body_bytes_in_flight / (1024 * 1024))]
    max_body_mib: usize,
    /// Requests other than watches in progress at once (kube-apiserver's flag and default).
    #[arg(long = "max-requests-inflight", default_value_t = ServingLimits::default().max_requests_inflight)]
    max_requests_inflight: usize,
    /// Open watches at most.
    #[arg(long = "max-watches", default_value_t = ServingLimits::default().max_watches)]
    max_watches: usize,
    /// Lists of a whole collection (no limit, or one above 500) and watches that start
    /// with every object, served at once; more wait their turn.
    #[arg(long = "max-unpaged-lists-inflight", default_value_t = ServingLimits::default().max_unpaged_lists)]
    max_unpaged_lists: usize,
}

impl LimitArgs {
    fn limits(&self) -> ServingLimits {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        ServingLimits {
            max_connections: self.max_connections.max(1),
            handshake_timeout: secs(self.handshake_timeout),
            idle_timeout: secs(self.idle_timeout),
            request_timeout: secs(self.request_timeout),
            max_body_bytes_in_flight: self.max_body_mib.max(3).saturating_mul(1024 * 1024),
            max_requests_inflight: self.max_requests_inflight.max(1),
            max_watches: self.max_watches.max(1),
            max_unpaged_lists: self.max_unpaged_lists.max(1),
        }
    }
}

pub fn serve(args: ServeArgs) -> CmdResult {
    crate::logging::init();
    if args.automatic_reload && args.encryption_provider_config.is_none() {
        return Err(Failure::Usage(
            "--encryption-provider-config-automatic-reload must be set with --encryption-provider-config".into(),
        ));
    }
    if let Some(file) = &args.encryption_provider_config {
        // The file holds the keys: say so at start-up, not only in `config check`.
        if let Ok(Some(mode)) = crate::files::readable_by_others(file) {
            tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:04o}"),
                "the encryption configuration is readable by group or others: it holds the \
                 keys; chmod 600 it"
            );
        }
    }
    // Every connection and watch is a file descriptor: raise the soft limit to the hard
    // one, as kube-apiserver's runtime does, so --max-connections is the bound that holds.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < args.limits.max_connections + 256 => tracing::warn!(
            open_files = n,
            max_connections = args.limits.max_connections,
            "the open-file limit is below --max-connections: connections past it fail on accept"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let options = ServeOptions {
        data_dir: args.store.data_dir.clone(),
        store: args.store.config(true)?,
        etcd_prefix: args.store.etcd_prefix.clone(),
        encryption_config: args.encryption_provider_config,
        automatic_reload: args.automatic_reload,
        reload_interval: Duration::from_secs(args.reload_interval.max(1)),
        allow_kms_v1: args.gates.kms_v1()?,
        storage_encoding: match args.storage_media_type {
            MediaType::Protobuf => StorageEncoding::Protobuf,
            MediaType::Json => StorageEncoding::Json,
        },
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        token_auth_file: args.token_auth_file,
        tls_cert_file: args.tls_cert_file,
        tls_private_key_file: args.tls_private_key_file,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        kms_lifecycle: atrest_encryption::kms::KmsLifecycle {
            write_state_ttl: Duration::from_secs(args.kms_write_state_ttl.max(1)),
            healthy_poll: Duration::from_secs(args.kms_status_poll.max(1)),
            unhealthy_poll: Duration::from_secs(args.kms_unhealthy_poll.max(1)),
        },
        readyz_exclude_kms: args.readyz_exclude_kms,
        limits: args.limits.limits(),
        watch_bookmark_interval: Duration::from_secs(args.watch_bookmark_interval.max(1)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("starting the async runtime: {e}")))?;
    runtime
        .block_on(run(options, shutdown_signal()))
        .map_err(Failure::Error)
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
