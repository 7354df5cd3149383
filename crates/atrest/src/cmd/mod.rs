//! Subcommands, and the arguments several of them share.

pub mod cluster;
pub mod config;
pub mod crypt;
pub mod get;
pub mod kms_plugin;
pub mod offline;
pub mod purge;
pub mod reencrypt;
pub mod rotate;
pub mod serve;
pub mod status;
pub mod ui_url;

use std::path::{Path, PathBuf};

use atrest_encryption::{EncryptionConfig, ParseOptions};
use clap::Args;

use crate::exit::Failure;

/// Output format for anything a script may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `--feature-gates`, with kube-apiserver's syntax (`KMSv1=true,...`).
#[derive(Debug, Args, Clone, Default)]
pub struct FeatureGateArgs {
    /// Feature gates as kube-apiserver spells them; atrest knows KMSv1 (default false).
    #[arg(long = "feature-gates", value_name = "GATE=BOOL,...")]
    pub feature_gates: Option<String>,
}

impl FeatureGateArgs {
    pub fn kms_v1(&self) -> Result<bool, Failure> {
        let mut kms_v1 = false;
        let Some(text) = &self.feature_gates else {
            return Ok(false);
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                Failure::Usage(format!("--feature-gates: {item:?} is not NAME=true|false"))
            })?;
            let value: bool = value.parse().map_err(|_| {
                Failure::Usage(format!(
                    "--feature-gates: {name}: {value:?} is not true or false"
                ))
            })?;
            match name {
                "KMSv1" => kms_v1 = value,
                other => {
                    return Err(Failure::Usage(format!(
                        "--feature-gates: unknown feature gate {other:?} (atrest knows KMSv1)"
                    )))
                }
            }
        }
        Ok(kms_v1)
    }
}

/// Reads and validates an EncryptionConfiguration file.
pub fn load_config(
    path: &Path,
    reload: bool,
    gates: &FeatureGateArgs,
) -> Result<EncryptionConfig, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Error(format!("reading {}: {e}", path.display())))?;
    let options = ParseOptions {
        reload,
        allow_kms_v1: gates.kms_v1()?,
    };
    EncryptionConfig::parse(&bytes, &path.display().to_string(), options).map_err(Failure::from)
}

/// The `--encryption-provider-config` flag (kube-apiserver's name).
#[derive(Debug, Args, Clone)]
pub struct EncryptionConfigArg {
    /// EncryptionConfiguration file (YAML or JSON), as given to kube-apiserver.
    #[arg(long = "encryption-provider-config", value_name = "FILE")]
    pub path: PathBuf,
}

/// Where the objects are: the embedded store in --data-dir, or etcd (kube-apiserver's flags).
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory: the embedded store (state.db), and for serve the PKI, kubeconfig and
    /// generated encryption configuration.
    #[arg(long = "data-dir", default_value = "./atrest-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// etcd endpoints (http(s)://host:port,...). Without it, the embedded store is used.
    #[arg(long = "etcd-servers", value_delimiter = ',', value_name = "URLS")]
    pub etcd_servers: Vec<String>,
    /// Prefix of every key in the store.
    #[arg(long = "etcd-prefix", default_value = "/registry")]
    pub etcd_prefix: String,
    /// CA bundle to verify the etcd servers.
    #[arg(long = "etcd-cafile", value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long = "etcd-certfile", value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long = "etcd-keyfile", value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Embedded store: history kept by automatic compaction, in revisions (the latest N are
    /// always kept). Compacted old values, plaintext included, are removed from the file.
    #[arg(
        long = "compaction-keep-revisions",
        default_value = "1000",
        value_name = "N"
    )]
    pub compaction_keep_revisions: i64,
    /// Embedded store: history younger than this is kept too.
    #[arg(
        long = "compaction-keep-seconds",
        default_value = "300",
        value_name = "SECONDS"
    )]
    pub compaction_keep_seconds: u64,
}

impl StoreArgs {
    /// The store to open; `compaction`: whether the embedded store compacts by itself
    /// (servers do, offline tools do not).
    pub fn config(&self, compaction: bool) -> Result<atrest_store::StoreConfig, Failure> {
        if self.etcd_servers.is_empty() {
            let policy = if compaction {
                atrest_store::CompactionPolicy {
                    keep_revisions: self.compaction_keep_revisions.max(1),
                    keep_duration: std::time::Duration::from_secs(self.compaction_keep_seconds),
                    ..atrest_store::CompactionPolicy::default()
                }
            } else {
                atrest_store::CompactionPolicy::disabled()
            };
            return Ok(atrest_store::StoreConfig::Embedded {
                data_dir: self.data_dir.clone(),
                compaction: policy,
            });
        }
        let tls = (self.etcd_cafile.is_some()
            || self.etcd_certfile.is_some()
            || self.etcd_keyfile.is_some())
        .then(|| atrest_store::TlsFiles {
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
        });
        Ok(atrest_store::StoreConfig::Etcd {
            endpoints: self.etcd_servers.clone(),
            prefix: self.etcd_prefix.clone(),
            tls,
        })
    }
}
