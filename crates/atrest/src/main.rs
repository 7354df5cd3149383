//! `atrest`: command-line wiring only. Each subcommand lives in `cmd/`; the work is done by
//! the library crates.
#![forbid(unsafe_code)]

mod cmd;
mod exit;
mod files;
mod logging;
mod progress;

use clap::{Parser, Subcommand};

/// Kubernetes-compatible encryption at rest.
///
/// atrest reads and writes exactly the bytes kube-apiserver stores under an
/// EncryptionConfiguration (--encryption-provider-config), so its offline commands work on a
/// real cluster's etcd data as well as on its own.
#[derive(Debug, Parser)]
#[command(
    name = "atrest",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernetes-compatible API server (kubectl talks to it), encrypting objects
    /// at rest per --encryption-provider-config.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Create and check EncryptionConfiguration files.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Encrypt one value as kube-apiserver would store it (stdin -> stdout).
    Encrypt(cmd::crypt::CryptArgs),
    /// Decrypt one stored value (stdin -> stdout); reports the provider and key on stderr.
    Decrypt(cmd::crypt::CryptArgs),
    /// Audit the store: objects per resource, provider and key; plaintext, stale and
    /// unreadable values (exit 3 unless everything covered is on its write key).
    Status(cmd::status::StatusArgs),
    /// Show one stored object: provider, key, staleness, revision, and the object decoded.
    Get(cmd::get::GetArgs),
    /// Rewrite every object not on its write key, in the store, beside running servers.
    Reencrypt(cmd::reencrypt::ReencryptArgs),
    /// Compact and defragment old revisions away (old plaintext and old-key copies).
    Purge(cmd::purge::PurgeArgs),
    /// Rotate keys in one resumable command: add, wait for every server, promote, wait,
    /// reencrypt, drop the old key.
    Rotate(Box<cmd::rotate::RotateArgs>),
    /// Print a one-time login link to the status page of a running `atrest serve`.
    UiUrl(cmd::ui_url::UiUrlArgs),
    /// Real clusters: enable encryption at rest on a kubeadm or minikube control-plane node
    /// (kube-apiserver's static-pod manifest) in one command.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Run a KMS v2 plugin on a unix socket, for kube-apiserver or atrest serve: its
    /// key-encryption keys are in key files or in a PKCS#11 token (SoftHSM, an HSM).
    KmsPlugin(cmd::kms_plugin::KmsPluginArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::serve(*args),
        Command::Config(c) => cmd::config::run(c),
        Command::Encrypt(args) => cmd::crypt::encrypt(args),
        Command::Decrypt(args) => cmd::crypt::decrypt(args),
        Command::Status(args) => cmd::status::status(args),
        Command::Get(args) => cmd::get::get(args),
        Command::Reencrypt(args) => cmd::reencrypt::run(args),
        Command::Purge(args) => cmd::purge::run(args),
        Command::Rotate(args) => cmd::rotate::run(*args),
        Command::UiUrl(args) => cmd::ui_url::run(args),
        Command::Cluster(c) => cmd::cluster::run(c),
        Command::KmsPlugin(args) => cmd::kms_plugin::run(args),
    };
    if let Err(failure) = result {
        failure.exit();
    }
}
