//! `atrest encrypt` / `atrest decrypt`: one value, offline, exactly as kube-apiserver stores it.

use std::io::{Read, Write};

use atrest_encryption::{GroupResource, ProviderChain, ResourceTransformer};
use atrest_kms::GrpcKmsConnector;
use clap::Args;
use serde_json::json;

use super::{EncryptionConfigArg, FeatureGateArgs, OutputFormat};
use crate::exit::{CmdResult, Failure};

#[derive(Debug, Args)]
pub struct CryptArgs {
    #[command(flatten)]
    config: EncryptionConfigArg,
    /// The object's storage key, e.g. /registry/secrets/<ns>/<name>. It is the authenticated
    /// data of GCM-based providers, so it must be the key the value is (or will be) stored at.
    #[arg(long, value_name = "STORAGE_KEY")]
    key: String,
    /// The resource whose providers apply (`secrets`, `pandas.awesome.bears.example`).
    /// Default: inferred from the key (`<prefix>/<resource>/...` for built-in resources,
    /// `<prefix>/<group>/<plural>/...` for custom resources).
    #[arg(long)]
    resource: Option<String>,
    /// The etcd prefix the key starts with (kube-apiserver's --etcd-prefix).
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    #[command(flatten)]
    gates: FeatureGateArgs,
    /// How to report the provider on stderr (decrypt) .
    #[arg(long, value_enum, default_value = "text")]
    report: OutputFormat,
}

impl CryptArgs {
    fn resource(&self) -> Result<GroupResource, Failure> {
        if let Some(r) = &self.resource {
            return Ok(GroupResource::parse(r));
        }
        let prefix = atrest_storage::KeyPrefix::new(&self.etcd_prefix);
        atrest_storage::StorageKey::parse(self.key.as_bytes(), &prefix)
            .map(|k| k.resource().clone())
            .map_err(|e| {
                Failure::Usage(format!(
                    "cannot infer the resource from --key: {e}; pass --resource"
                ))
            })
    }

    fn transformer(&self) -> Result<ResourceTransformer, Failure> {
        let config = super::load_config(&self.config.path, false, &self.gates)?;
        // A KMS provider's plugin is reached at its endpoint when (and only when) it is used.
        let chain = ProviderChain::build(&config, &GrpcKmsConnector::default())?;
        Ok(chain.for_resource(&self.resource()?))
    }
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Failure::Error(format!("reading standard input: {e}")))?;
    Ok(input)
}

fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Error(format!("writing standard output: {e}")))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("starting the async runtime: {e}")))
}

pub fn encrypt(args: CryptArgs) -> CmdResult {
    let transformer = args.transformer()?;
    let input = read_stdin()?;
    let encrypted = runtime()?.block_on(transformer.encrypt(&input, args.key.as_bytes()))?;
    if !transformer.is_configured() {
        eprintln!(
            "atrest: warning: no rule of {} covers {}: the value is stored unencrypted",
            args.config.path.display(),
            transformer.resource()
        );
    }
    match args.report {
        OutputFormat::Text => eprintln!("atrest: encrypted with {}", encrypted.provider),
        OutputFormat::Json => eprintln!(
            "{}",
            json!({"key": args.key, "resource": transformer.resource().to_string(), "provider": encrypted.provider.to_string()})
        ),
    }
    write_stdout(&encrypted.stored)
}

pub fn decrypt(args: CryptArgs) -> CmdResult {
    let transformer = args.transformer()?;
    let input = read_stdin()?;
    let decrypted = runtime()?.block_on(transformer.decrypt(&input, args.key.as_bytes()))?;
    match args.report {
        OutputFormat::Text => {
            let stale = if decrypted.stale {
                format!(
                    " (stale: not the write provider {}; rewrite the object to re-encrypt it)",
                    transformer.write_kind().as_str()
                )
            } else {
                String::new()
            };
            eprintln!("atrest: decrypted with {}{stale}", decrypted.provider);
        }
        OutputFormat::Json => eprintln!(
            "{}",
            json!({
                "key": args.key,
                "resource": transformer.resource().to_string(),
                "provider": decrypted.provider.kind.as_str(),
                "keyName": decrypted.provider.name,
                "kmsKeyID": decrypted.provider.kms_key_id,
                "stale": decrypted.stale,
            })
        ),
    }
    write_stdout(&decrypted.plaintext)
}
