//! `atrest kms-plugin`: the reference KMS v2 plugin.

use std::path::PathBuf;
use std::sync::Arc;

use atrest_kms::plugin::{KekBackend, KeyFiles, Pkcs11Keys, Pkcs11Options};
use atrest_kms::Endpoint;
use clap::Args;

use crate::exit::{CmdResult, Failure};

/// Serves the KMS v2 gRPC API (`v2.KeyManagementService`) on a unix socket, as
/// kube-apiserver and `atrest serve` expect of a `kms` provider with `apiVersion: v2`.
///
/// The API server hands the plugin a random seed once per key id; the plugin wraps it with
/// its key-encryption key (KEK) and returns the key id. Status reports healthy only when a
/// fresh value wraps AND unwraps. Key material is never logged.
///
/// Key files: `--kek-file new.key --kek-file old.key`: the first wraps, every one unwraps;
/// to rotate, create a new file, put it first and restart the plugin (the API servers pick up
/// the new key id within a minute, then `atrest reencrypt` moves everything).
///
/// PKCS#11: `--pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token-label L --key-label K
/// --pin-env VAR`: AES-GCM runs inside the token; the key never leaves it.
///
/// Example: atrest kms-plugin --listen unix:///run/kms/atrest.sock --kek-file
/// /etc/atrest/kek1 --create-key
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KmsPluginArgs {
    /// Where to listen: unix:///path/to/socket (created mode 0600; a stale socket file is
    /// replaced, removed on SIGTERM) or unix:///@name (Linux abstract socket). Use the same
    /// URL as the provider's `endpoint` in the EncryptionConfiguration.
    #[arg(long, value_name = "unix:///PATH")]
    listen: String,
    /// A key-encryption key file: 32 random bytes, base64, mode 0600 (repeatable: the first
    /// wraps, all unwrap). The key id is derived from the key and does not reveal it.
    #[arg(
        long = "kek-file",
        value_name = "FILE",
        conflicts_with = "pkcs11_module"
    )]
    kek_files: Vec<PathBuf>,
    /// A PKCS#11 module to hold the keys instead (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long = "pkcs11-module", value_name = "SO", requires_all = ["token_label", "key_labels", "pin_env"])]
    pkcs11_module: Option<PathBuf>,
    /// PKCS#11: the label of the token.
    #[arg(long = "token-label", value_name = "LABEL")]
    token_label: Option<String>,
    /// PKCS#11: the label of an AES key in the token (repeatable: the first wraps, all
    /// unwrap).
    #[arg(long = "key-label", value_name = "LABEL")]
    key_labels: Vec<String>,
    /// PKCS#11: the environment variable holding the user PIN (the PIN is never a flag, so it
    /// stays out of process listings).
    #[arg(long = "pin-env", value_name = "VAR")]
    pin_env: Option<String>,
    /// Create what is missing: a --kek-file that does not exist (32 bytes from the OS CSPRNG,
    /// mode 0600), or a --key-label the token lacks (AES-256, sensitive, not extractable).
    #[arg(long = "create-key")]
    create_key: bool,
}

fn backend(args: &KmsPluginArgs) -> Result<Arc<dyn KekBackend>, Failure> {
    if let Some(module) = &args.pkcs11_module {
        let var = args.pin_env.clone().unwrap_or_default();
        let pin = std::env::var(&var).map_err(|_| {
            Failure::Usage(format!(
                "--pin-env {var}: the environment variable is not set"
            ))
        })?;
        let options = Pkcs11Options {
            module: module.clone(),
            token_label: args.token_label.clone().unwrap_or_default(),
            key_labels: args.key_labels.clone(),
            create: args.create_key,
        };
        let keys = Pkcs11Keys::open(&options, &pin).map_err(|e| Failure::Error(e.to_string()))?;
        return Ok(Arc::new(keys));
    }
    if args.kek_files.is_empty() {
        return Err(Failure::Usage(
            "kms-plugin needs its keys: --kek-file FILE (repeatable), or --pkcs11-module with \
             --token-label, --key-label and --pin-env"
                .into(),
        ));
    }
    let keys = KeyFiles::load(&args.kek_files, args.create_key)
        .map_err(|e| Failure::Error(e.to_string()))?;
    Ok(Arc::new(keys))
}

pub fn run(args: KmsPluginArgs) -> CmdResult {
    crate::logging::init();
    let endpoint = Endpoint::parse(&args.listen).map_err(|e| Failure::Usage(e.to_string()))?;
    let backend = backend(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("starting the async runtime: {e}")))?;
    runtime
        .block_on(async {
            let shutdown = super::serve::shutdown_signal();
            atrest_kms::plugin::serve(&endpoint, backend, shutdown).await
        })
        .map_err(Failure::Error)?;
    tracing::info!(%endpoint, "KMS plugin stopped");
    Ok(())
}
