//! What every offline command (status, get, reencrypt) shares: where the store is, which
//! configuration reads it, and opening both as one encrypted store.

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
    /// Prefix of every key in the store (kube-apiserver's --etcd-prefix).
    #[arg(
        long = "etcd-prefix",
        default_value = "/registry",
        value_name = "PREFIX"
    )]
    pub etcd_prefix: String,
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
}

impl OfflineArgs {
    fn store_args(&self) -> StoreArgs {
        StoreArgs {
            data_dir: self.data_dir.clone(),
            etcd_servers: self.etcd_servers.clone(),
            etcd_prefix: self.etcd_prefix.clone(),
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
        if self.etcd_servers.is_empty() && generated.exists() {
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
        if self.etcd_servers.is_empty() && !self.data_dir.join("state.db").exists() {
            return Err(Failure::Error(format!(
                "no embedded store in --data-dir {} (no state.db); give --data-dir of an \
                 `atrest serve`, or --etcd-servers",
                self.data_dir.display()
            )));
        }
        let store_config = self.store_args().config(false)?;
        let store = atrest_store::open(store_config)
            .await
            .map_err(|e| Failure::Error(format!("opening the store: {e}")))?;
        Ok(EncryptedStore::new(
            store,
            ChainHandle::new(chain),
            KeyPrefix::new(&self.etcd_prefix),
        ))
    }
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
