//! What every offline command (status, get, reencrypt, rotate, purge) shares: where the
//! store is, which configuration reads it (given directly, or read from kube-apiserver's
//! static-pod manifest), and opening both as one encrypted store.

use std::path::PathBuf;

use atrest_encryption::{GroupResource, ProviderChain};
use atrest_kms::GrpcKmsConnector;
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use clap::Args;

use super::{FeatureGateArgs, StoreArgs};
use crate::exit::Failure;

/// The store and configuration of an offline command. etcdctl's spellings and environment
/// work too, so a command line that reaches etcd with etcdctl reaches it with atrest.
#[derive(Debug, Args, Clone)]
pub struct OfflineArgs {
    /// kube-apiserver's static-pod manifest (kubeadm, minikube:
    /// /etc/kubernetes/manifests/kube-apiserver.yaml): --etcd-servers, --etcd-cafile,
    /// --etcd-certfile, --etcd-keyfile, --etcd-prefix and --encryption-provider-config are
    /// read from its kube-apiserver container, container paths mapped to host paths through
    /// the pod's hostPath volumes. Flags (and ETCDCTL_* variables) given here win over it.
    #[arg(long = "manifest", value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The embedded store's data directory (used when no etcd endpoints are given).
    #[arg(long = "data-dir", default_value = "./atrest-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// etcd endpoints (http(s)://host:port,...); etcdctl's --endpoints and
    /// ETCDCTL_ENDPOINTS work too. Without it, the embedded store in --data-dir is read.
    #[arg(
        long = "etcd-servers",
        visible_alias = "endpoints",
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub etcd_servers: Vec<String>,
    /// Prefix of every key in the store (kube-apiserver's --etcd-prefix) [default: /registry].
    #[arg(long = "etcd-prefix", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// CA bundle to verify the etcd servers (etcdctl: --cacert, ETCDCTL_CACERT).
    #[arg(
        long = "etcd-cafile",
        visible_alias = "cacert",
        env = "ETCDCTL_CACERT",
        value_name = "FILE"
    )]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd (etcdctl: --cert, ETCDCTL_CERT).
    #[arg(
        long = "etcd-certfile",
        visible_alias = "cert",
        env = "ETCDCTL_CERT",
        value_name = "FILE"
    )]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd (etcdctl's ETCDCTL_KEY).
    #[arg(long = "etcd-keyfile", env = "ETCDCTL_KEY", value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// EncryptionConfiguration file, as given to the API server. Default with the embedded
    /// store: <data-dir>/encryption-config.yaml, the one `atrest serve` generated.
    #[arg(long = "encryption-provider-config", value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    #[command(flatten)]
    pub gates: FeatureGateArgs,
    /// Set by the read-only commands' --etcd-snapshot: the etcd snapshot file to read
    /// instead of a store.
    #[arg(skip)]
    pub snapshot: Option<PathBuf>,
}

/// `--etcd-snapshot FILE` of the read-only commands (status, get).
#[derive(Debug, Args, Clone)]
pub struct SnapshotArg {
    /// Read an etcd snapshot file instead of a live store: the output of `etcdctl
    /// snapshot save` (its SHA-256 is checked), or a copy of a member's member/snap/db.
    /// Read-only, no etcd needed: the recovery path from a backup. The etcd flags are then
    /// not used; --etcd-prefix and the configuration still are (also from --manifest).
    #[arg(long = "etcd-snapshot", value_name = "FILE")]
    pub etcd_snapshot: Option<PathBuf>,
}

impl OfflineArgs {
    /// Fills in what the command line left out from `--manifest`, if one is given. Call once,
    /// before anything else reads these arguments.
    pub fn resolve(&mut self) -> Result<(), Failure> {
        let Some(path) = &self.manifest else {
            return Ok(());
        };
        let manifest = atrest_cluster::ApiServerManifest::load(path)?;
        let etcd = manifest.etcd()?;
        if self.etcd_servers.is_empty() {
            self.etcd_servers = etcd.servers;
        }
        if self.etcd_prefix.is_none() {
            self.etcd_prefix = Some(etcd.prefix);
        }
        self.etcd_cafile = self.etcd_cafile.take().or(etcd.ca_file);
        self.etcd_certfile = self.etcd_certfile.take().or(etcd.cert_file);
        self.etcd_keyfile = self.etcd_keyfile.take().or(etcd.key_file);
        if self.encryption_provider_config.is_none() {
            self.encryption_provider_config =
                Some(manifest.encryption_provider_config()?.ok_or_else(|| {
                    Failure::Error(format!(
                        "{}: kube-apiserver has no --encryption-provider-config: encryption at \
                         rest is not enabled on this cluster (`atrest cluster enable --manifest \
                         {}` enables it), or give --encryption-provider-config FILE",
                        path.display(),
                        path.display()
                    ))
                })?);
        }
        Ok(())
    }

    /// `--etcd-prefix` (from the manifest, if one was read), `/registry` by default.
    pub fn prefix(&self) -> &str {
        self.etcd_prefix.as_deref().unwrap_or("/registry")
    }

    fn store_args(&self) -> StoreArgs {
        StoreArgs {
            data_dir: self.data_dir.clone(),
            etcd_servers: self.etcd_servers.clone(),
            etcd_prefix: self.prefix().to_string(),
            etcd_cafile: self.etcd_cafile.clone(),
            etcd_certfile: self.etcd_certfile.clone(),
            etcd_keyfile: self.etcd_keyfile.clone(),
            compaction_keep_revisions: 0,
            compaction_keep_seconds: 0,
        }
    }

    /// The configuration file to read with.
    pub fn config_path(&self) -> Result<PathBuf, Failure> {
        if let Some(p) = &self.encryption_provider_config {
            return Ok(p.clone());
        }
        let generated = self.data_dir.join(atrest_server::serve::GENERATED_CONFIG);
        if self.etcd_servers.is_empty() && self.snapshot.is_none() && generated.exists() {
            return Ok(generated);
        }
        Err(Failure::Usage(
            "--encryption-provider-config FILE is required (the configuration the API server \
             reads the store with)"
                .into(),
        ))
    }

    /// The provider chain of configuration bytes read from `path`.
    pub fn chain_of(&self, bytes: &[u8], path: &std::path::Path) -> Result<ProviderChain, Failure> {
        let options = atrest_encryption::ParseOptions {
            reload: false,
            allow_kms_v1: self.gates.kms_v1()?,
        };
        let config =
            atrest_encryption::EncryptionConfig::parse(bytes, &path.display().to_string(), options)
                .map_err(Failure::from)?;
        ProviderChain::build(&config, &GrpcKmsConnector::default())
            .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))
    }

    /// Opens the store (offline tools never compact) and builds the provider chain.
    pub async fn open(&self) -> Result<EncryptedStore, Failure> {
        let config_path = self.config_path()?;
        let config = super::load_config(&config_path, false, &self.gates)?;
        let chain = ProviderChain::build(&config, &GrpcKmsConnector::default())
            .map_err(|e| Failure::Error(format!("{}: {e}", config_path.display())))?;
        let store_config = match &self.snapshot {
            Some(file) => atrest_store::StoreConfig::Snapshot { file: file.clone() },
            None => self.live_store_config()?,
        };
        let store = atrest_store::open(store_config)
            .await
            .map_err(|e| Failure::Error(format!("opening the store: {e}")))?;
        Ok(EncryptedStore::new(
            store,
            ChainHandle::new(chain),
            KeyPrefix::new(self.prefix()),
        ))
    }

    fn live_store_config(&self) -> Result<atrest_store::StoreConfig, Failure> {
        if self.etcd_servers.is_empty() && !self.data_dir.join("state.db").exists() {
            return Err(Failure::Error(format!(
                "no embedded store in --data-dir {} (no state.db); give --data-dir of an \
                 `atrest serve`, or --etcd-servers",
                self.data_dir.display()
            )));
        }
        self.store_args().config(false)
    }
}

/// The provider chain of a parsed configuration, as offline commands build it.
pub fn build_chain(config: &atrest_encryption::EncryptionConfig) -> Result<ProviderChain, String> {
    ProviderChain::build(config, &GrpcKmsConnector::default()).map_err(|e| e.to_string())
}

/// `--resources secrets,configmaps,pandas.awesome.bears.example`, as the configuration
/// spells resources (no wildcards: these name what to read).
pub fn parse_resources(list: &[String]) -> Result<Option<Vec<GroupResource>>, Failure> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let gr = GroupResource::parse(item);
        if gr.group == "*" || gr.resource == "*" {
            return Err(Failure::Usage(format!(
                "--resources: {item:?} is a wildcard; name resources (secrets, configmaps, \
                 pandas.awesome.bears.example), or leave --resources out for all of them"
            )));
        }
        out.push(gr);
    }
    Ok(Some(out))
}

/// A multi-threaded runtime for offline commands (decryption runs on both cores).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("starting the async runtime: {e}")))
}
