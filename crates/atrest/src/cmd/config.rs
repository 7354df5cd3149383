//! `atrest config init` and `atrest config check`.

use std::path::PathBuf;

use atrest_encryption::config::template::{render, TemplateProvider};
use atrest_encryption::config::{lint, Warning};
use atrest_encryption::{EncryptionConfig, Key};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{FeatureGateArgs, OutputFormat};
use crate::exit::{CmdResult, Failure};
use crate::files;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a new EncryptionConfiguration with a fresh key from the OS CSPRNG.
    Init(InitArgs),
    /// Validate a file exactly as kube-apiserver would, and warn about weak choices.
    ///
    /// Exit 0 when valid (warnings are printed on stderr), 1 with every error found.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InitProvider {
    /// XSalsa20-Poly1305 with a 32-byte key (the default: fast, authenticated).
    Secretbox,
    /// AES-256-GCM; rotate the key before 200,000 writes.
    Aesgcm,
    /// AES-256-CBC; not recommended (unauthenticated), offered for compatibility.
    Aescbc,
    /// A KMS v2 plugin (needs --kms-name and --kms-endpoint); no key is generated.
    Kms,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The write provider.
    #[arg(long, value_enum, default_value = "secretbox")]
    provider: InitProvider,
    /// Resources to encrypt, comma-separated (`secrets`, `configmaps`, `*.apps`, ...). Default:
    /// every resource (`*.*`), as managed Kubernetes services now encrypt all API data.
    #[arg(long, value_delimiter = ',', default_value = "*.*")]
    resources: Vec<String>,
    /// Name of the generated key (written into every value it encrypts).
    #[arg(long, default_value = "key1")]
    key_name: String,
    /// KMS provider name (with --provider kms).
    #[arg(long)]
    kms_name: Option<String>,
    /// KMS plugin socket, e.g. unix:///var/run/kms.sock (with --provider kms).
    #[arg(long)]
    kms_endpoint: Option<String>,
    /// Do not add `identity: {}` after the provider. Without it, data stored before
    /// encryption was enabled can no longer be read.
    #[arg(long)]
    no_identity_fallback: bool,
    /// Write to FILE (mode 0600) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The EncryptionConfiguration file.
    file: PathBuf,
    /// Validate as with --encryption-provider-config-automatic-reload (KMS v1 names unique).
    #[arg(long)]
    reload: bool,
    #[command(flatten)]
    gates: FeatureGateArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(command: ConfigCommand) -> CmdResult {
    match command {
        ConfigCommand::Init(args) => init(args),
        ConfigCommand::Check(args) => check(args),
    }
}

fn init(args: InitArgs) -> CmdResult {
    let key;
    let provider = match args.provider {
        InitProvider::Kms => {
            let (Some(name), Some(endpoint)) = (&args.kms_name, &args.kms_endpoint) else {
                return Err(Failure::Usage(
                    "--provider kms needs --kms-name and --kms-endpoint".into(),
                ));
            };
            TemplateProvider::KmsV2 {
                name: name.as_str(),
                endpoint: endpoint.as_str(),
            }
        }
        kind => {
            key = Key::generate(32).map_err(|e| {
                Failure::Error(format!("the OS random number generator failed: {e}"))
            })?;
            let kind = match kind {
                InitProvider::Aesgcm => "aesgcm",
                InitProvider::Aescbc => "aescbc",
                _ => "secretbox",
            };
            TemplateProvider::Static {
                kind,
                key_name: &args.key_name,
                key: &key,
            }
        }
    };
    let text = render(&args.resources, &provider, !args.no_identity_fallback);
    // Never hand out a file kube-apiserver would refuse.
    EncryptionConfig::parse(
        text.as_bytes(),
        "generated configuration",
        Default::default(),
    )
    .map_err(|e| {
        Failure::Usage(format!(
            "the options given make an invalid configuration: {e}"
        ))
    })?;
    match args.output {
        Some(path) => {
            files::write_private(&path, text.as_bytes(), args.force).map_err(Failure::Error)?;
            eprintln!("atrest: wrote {} (mode 0600)", path.display());
        }
        None => print!("{}", &*text),
    }
    Ok(())
}

fn check(args: CheckArgs) -> CmdResult {
    let options = atrest_encryption::ParseOptions {
        reload: args.reload,
        allow_kms_v1: args.gates.kms_v1()?,
    };
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Error(format!("reading {}: {e}", args.file.display())))?;
    let mut warnings: Vec<Warning> = Vec::new();
    if let Ok(Some(mode)) = files::readable_by_others(&args.file) {
        warnings.push(Warning {
            path: args.file.display().to_string(),
            message: format!(
                "file mode is {mode:04o}: keys are readable by group or others; use 0600"
            ),
        });
    }
    let (errors, hash) =
        match EncryptionConfig::parse(&bytes, &args.file.display().to_string(), options) {
            Ok(config) => {
                warnings.extend(lint(&config));
                (Vec::new(), Some(config.hash().to_string()))
            }
            Err(e) => (e.field_errors(), None),
        };
    match args.output {
        OutputFormat::Json => {
            let report = json!({
                "file": args.file.display().to_string(),
                "valid": errors.is_empty(),
                "hash": hash,
                "errors": errors,
                "warnings": warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(Failure::from)?
            );
        }
        OutputFormat::Text => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if errors.is_empty() {
                println!(
                    "{}: valid ({})",
                    args.file.display(),
                    hash.unwrap_or_default()
                );
            } else {
                eprintln!(
                    "{}: invalid, {} error(s):",
                    args.file.display(),
                    errors.len()
                );
                for e in &errors {
                    eprintln!("  - {e}");
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}
