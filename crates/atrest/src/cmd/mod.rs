//! Subcommands, and the arguments several of them share.

pub mod config;
pub mod crypt;

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
