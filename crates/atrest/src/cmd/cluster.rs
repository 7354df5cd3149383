//! `atrest cluster enable`: the seed's manual procedure on a kubeadm or minikube control-plane
//! node in one command.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atrest_cluster::edit::{self, EncryptionMount, CONFIG_FLAG};
use atrest_cluster::ApiServerManifest;
use atrest_encryption::config::template::{render, TemplateProvider};
use atrest_encryption::{EncryptionConfig, Key, ProviderChain};
use atrest_kms::GrpcKmsConnector;
use atrest_ops::audit::{audit, AuditOptions};
use atrest_ops::reencrypt::{reencrypt, ReencryptOptions};
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use clap::{Args, Subcommand, ValueEnum};

use super::offline::runtime;
use super::OutputFormat;
use crate::exit::{CmdResult, Failure};
use crate::files;
use crate::progress::CliProgress;

/// The file name of the configuration `enable` writes in --config-dir.
pub const CONFIG_FILE: &str = "encryption-config.yaml";
const VOLUME: &str = "atrest-encryption-config";

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Enable encryption at rest on this control-plane node's kube-apiserver.
    ///
    /// Writes an EncryptionConfiguration with a fresh key (mode 0600, directory 0700), adds
    /// --encryption-provider-config (with automatic reload), a read-only volumeMount and a
    /// DirectoryOrCreate hostPath volume to the static-pod manifest (everything else in it
    /// kept; a backup written outside the manifests directory; the file replaced
    /// atomically), waits until kubelet has restarted kube-apiserver with the configuration
    /// (its /metrics configuration hash), re-encrypts every object through etcd (flags read
    /// from the manifest), and ends with `atrest status`. Already enabled: says so, changes
    /// nothing. Run as root on the node. Exit 0 when everything covered is encrypted, 3
    /// when the audit found objects still to do, 1 on error (the message says in what
    /// state the cluster is and which command continues).
    Enable(EnableArgs),
    /// Turn encryption at rest off on this control-plane node's kube-apiserver.
    ///
    /// The reverse of `enable`: rewrites the EncryptionConfiguration so identity (plain text)
    /// writes, every existing key kept for reading (a backup of the file beside it); waits
    /// until kube-apiserver has loaded it (its /metrics configuration hash; the manifest
    /// needs --encryption-provider-config-automatic-reload=true); re-encrypts every object
    /// to plain text through etcd (flags read from the manifest); then removes the flags,
    /// and the volumeMount and hostPath volume the configuration came through, from the
    /// manifest (a backup outside the manifests directory; the file replaced atomically)
    /// and waits for kubelet's restart. The configuration file is kept: its keys read etcd
    /// snapshots and history from before. Not enabled: says so, changes nothing. Interrupted
    /// or timed out: run it again, it continues. Exit 0 done, 1 error.
    Disable(DisableArgs),
    /// Rotate the encryption keys of this control-plane node's kube-apiserver.
    ///
    /// `atrest rotate` on the EncryptionConfiguration the manifest's
    /// --encryption-provider-config names, through the etcd its flags name (container paths
    /// mapped through its hostPath volumes), every wait gated on this kube-apiserver (the
    /// configuration hash in its /metrics, reached with --kubeconfig; the manifest needs
    /// --encryption-provider-config-automatic-reload=true, as `enable` writes it): a fresh
    /// key (OS CSPRNG) added for reading, promoted to write, everything re-encrypted, the
    /// old key removed; the file rewritten atomically (0600, a backup beside it). Ends with
    /// `atrest status`. Interrupted: run it again, it resumes. Exit 0 done, 1 error, 3
    /// kube-apiserver did not load a step in time or objects are still on another key.
    Rotate(ClusterRotateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EnableProvider {
    /// XSalsa20-Poly1305 (the default).
    Secretbox,
    /// AES-256-GCM; rotate the key before 200,000 writes.
    Aesgcm,
    /// AES-256-CBC; not recommended (unauthenticated).
    Aescbc,
    /// A KMS v2 plugin at --kms-endpoint (its socket must be reachable from kube-apiserver's
    /// pod at the same path).
    Kms,
}

/// Where kube-apiserver runs on this node, and how to reach it.
#[derive(Debug, Args)]
struct NodeArgs {
    /// kube-apiserver's static-pod manifest.
    #[arg(
        long,
        default_value = "/etc/kubernetes/manifests/kube-apiserver.yaml",
        value_name = "FILE"
    )]
    manifest: PathBuf,
    /// Kubeconfig to reach kube-apiserver with (default /etc/kubernetes/admin.conf if it
    /// exists, else $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// Where the manifest's original is kept.
#[derive(Debug, Args)]
struct BackupArgs {
    /// Where the original manifest is backed up (default: atrest-backup beside the manifests
    /// directory; never inside it, where kubelet would run it as a second pod).
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The write provider of the new configuration.
    #[arg(long, value_enum, default_value = "secretbox")]
    provider: EnableProvider,
    /// The KMS v2 plugin's socket with --provider kms (unix:///path/to/socket).
    #[arg(long, value_name = "unix:///PATH")]
    kms_endpoint: Option<String>,
    /// The name of the kms provider entry with --provider kms (it is part of every stored
    /// value's prefix: k8s:enc:kms:v2:NAME:).
    #[arg(long, default_value = "atrest-kms", value_name = "NAME")]
    kms_name: String,
    /// Resources to encrypt, comma-separated (default every resource, *.*).
    #[arg(long, value_delimiter = ',', default_value = "*.*")]
    resources: Vec<String>,
    /// Host directory for the configuration, mounted read-only into kube-apiserver's pod at
    /// the same path.
    #[arg(long, default_value = "/etc/kubernetes/enc", value_name = "DIR")]
    config_dir: PathBuf,
    #[command(flatten)]
    backup: BackupArgs,
    /// How long to wait for the restarted kube-apiserver, in seconds.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    timeout: u64,
    /// Output format of the final report (json: one object on stdout).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    backup: BackupArgs,
    /// How long to wait for kube-apiserver at each step, in seconds.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    timeout: u64,
    /// Output format of the final report (json: one object on stdout).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ClusterRotateArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The new key's provider (default: the one that writes now).
    #[arg(long, value_parser = ["secretbox", "aesgcm", "aescbc"])]
    provider: Option<String>,
    /// Only the entries naming these resources.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    resources: Vec<String>,
    /// Longest wait for kube-apiserver to load each step (e.g. 90s, 5m).
    #[arg(long, value_parser = super::rotate::parse_duration, default_value = "5m", value_name = "DURATION")]
    timeout: Duration,
    /// How often kube-apiserver's /metrics is read while waiting.
    #[arg(long, value_parser = super::rotate::parse_duration, default_value = "2s", value_name = "DURATION")]
    poll: Duration,
    /// Run `atrest purge` at the end (compact and defragment the old copies away).
    #[arg(long)]
    purge: bool,
    /// Output: a line per step, as text or JSON (the last JSON line is the result).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(command: ClusterCommand) -> CmdResult {
    match command {
        ClusterCommand::Enable(args) => enable(args),
        ClusterCommand::Disable(args) => disable(args),
        ClusterCommand::Rotate(args) => rotate(args),
    }
}

trait Says {
    fn output(&self) -> OutputFormat;
}

impl Says for EnableArgs {
    fn output(&self) -> OutputFormat {
        self.output
    }
}

impl Says for DisableArgs {
    fn output(&self) -> OutputFormat {
        self.output
    }
}

fn say(args: &impl Says, message: &str) {
    if args.output() == OutputFormat::Text {
        println!("atrest: {message}");
        let _ = std::io::stdout().flush();
    } else {
        eprintln!("atrest: {message}");
    }
}

fn kubeconfig(given: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(k) = given {
        return Ok(k.clone());
    }
    let admin = PathBuf::from("/etc/kubernetes/admin.conf");
    if admin.exists() {
        return Ok(admin);
    }
    std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Failure::Usage(
                "no kubeconfig: /etc/kubernetes/admin.conf does not exist and $KUBECONFIG is \
                 not set; give --kubeconfig FILE"
                    .into(),
            )
        })
}

/// Writes `bytes` to `path` atomically with `mode`: a hidden temporary file in the same
/// directory (kubelet ignores dot files in the manifests directory), synced, renamed.
fn replace_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    atrest_files::write_atomic(path, bytes, mode, atrest_files::Existing::Replace)
        .map_err(|e| e.to_string())
}

fn backup_dir(given: &Option<PathBuf>, manifest: &Path) -> PathBuf {
    if let Some(d) = given {
        return d.clone();
    }
    let manifests = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    manifests
        .parent()
        .unwrap_or(Path::new("/"))
        .join("atrest-backup")
}

/// Copies the manifest's text to a new file (0600) in the backup directory (0700), named
/// after the manifest and the time; its path.
fn backup_manifest(
    given: &Option<PathBuf>,
    manifest: &Path,
    text: &str,
) -> Result<PathBuf, String> {
    let backups = backup_dir(given, manifest);
    make_private_dir(&backups)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kube-apiserver.yaml".into());
    let mut backup = backups.join(format!("{name}.{stamp}.bak"));
    let mut n = 1;
    while backup.exists() {
        n += 1;
        backup = backups.join(format!("{name}.{stamp}-{n}.bak"));
    }
    files::write_private(&backup, text.as_bytes(), false)?;
    Ok(backup)
}

/// --kms-endpoint, checked: given with --provider kms, a unix socket URL.
fn kms_endpoint(args: &EnableArgs) -> Result<&str, Failure> {
    let endpoint = args.kms_endpoint.as_deref().ok_or_else(|| {
        Failure::Usage("--provider kms needs --kms-endpoint unix:///path/to/socket".into())
    })?;
    let path = endpoint.strip_prefix("unix://").unwrap_or("");
    if !path.starts_with('/') {
        return Err(Failure::Usage(format!(
            "--kms-endpoint {endpoint:?}: kube-apiserver takes unix:///absolute/path/to/socket"
        )));
    }
    if args.kms_name.is_empty() || args.kms_name.contains(':') {
        return Err(Failure::Usage(format!(
            "--kms-name {:?}: a name without ':' (it is part of the stored prefix)",
            args.kms_name
        )));
    }
    Ok(endpoint)
}

fn make_private_dir(dir: &Path) -> Result<(), String> {
    atrest_files::ensure_private_dir(dir).map_err(|e| e.to_string())
}

/// The state after the manifest was replaced, for the error message.
fn after_restart(manifest: &Path, config: &Path, backup: &Path, what: &str) -> Failure {
    Failure::Error(format!(
        "{what}\n  state: {} now points kube-apiserver at {} (the original manifest is in {}); \
         values written since are encrypted with the new key.\n  continue with: atrest \
         reencrypt --manifest {} && atrest status --manifest {}",
        manifest.display(),
        config.display(),
        backup.display(),
        manifest.display(),
        manifest.display()
    ))
}

fn enable(args: EnableArgs) -> CmdResult {
    let manifest_path = args.node.manifest.clone();
    let original = std::fs::read_to_string(&manifest_path).map_err(|e| {
        Failure::Error(format!(
            "{}: cannot read the manifest: {e}",
            manifest_path.display()
        ))
    })?;
    let manifest = ApiServerManifest::parse(&original, &manifest_path)?;
    if let Some(current) = manifest.flag(CONFIG_FLAG) {
        let host = manifest
            .encryption_provider_config()
            .ok()
            .flatten()
            .map(|p| format!(" (on this host: {})", p.display()))
            .unwrap_or_default();
        say(
            &args,
            &format!(
                "encryption at rest is already enabled: kube-apiserver reads {current}{host}; \
                 nothing changed. `atrest status --manifest {}` audits the data.",
                manifest_path.display()
            ),
        );
        if args.output == OutputFormat::Json {
            println!(
                "{:#}",
                serde_json::json!({"changed": false, "alreadyEnabled": true, "config": current})
            );
        }
        return Ok(());
    }
    // Everything that can be checked before a change is checked first.
    let etcd = manifest.etcd()?;
    let kubeconfig = kubeconfig(&args.node.kubeconfig)?;
    let client = atrest_client::KubeClient::from_kubeconfig(&kubeconfig)
        .map_err(|e| Failure::Error(format!("{}: {e}", kubeconfig.display())))?;
    if !args.config_dir.is_absolute() {
        return Err(Failure::Usage(
            "--config-dir must be an absolute path".into(),
        ));
    }
    let config_path = args.config_dir.join(CONFIG_FILE);
    if config_path.exists() {
        return Err(Failure::Error(format!(
            "{} already exists and the manifest does not use it; atrest does not overwrite a \
             configuration (move it away, or give another --config-dir)",
            config_path.display()
        )));
    }
    let edited = edit::enable(
        &original,
        &manifest_path,
        &EncryptionMount {
            dir: &args.config_dir,
            config_file: &config_path,
        },
        VOLUME,
    )?;
    let kind = match args.provider {
        EnableProvider::Secretbox => "secretbox",
        EnableProvider::Aesgcm => "aesgcm",
        EnableProvider::Aescbc => "aescbc",
        EnableProvider::Kms => "kms v2",
    };
    let text = match args.provider {
        EnableProvider::Kms => {
            let endpoint = kms_endpoint(&args)?;
            render(
                &args.resources,
                &TemplateProvider::KmsV2 {
                    name: &args.kms_name,
                    endpoint,
                },
                true,
            )
        }
        _ => {
            let key = Key::generate(32).map_err(|e| {
                Failure::Error(format!("the OS random number generator failed: {e}"))
            })?;
            render(
                &args.resources,
                &TemplateProvider::Static {
                    kind,
                    key_name: "key1",
                    key: &key,
                },
                true,
            )
        }
    };
    let config = EncryptionConfig::parse(
        text.as_bytes(),
        &config_path.display().to_string(),
        Default::default(),
    )
    .map_err(|e| {
        Failure::Usage(format!(
            "the options given make an invalid configuration: {e}"
        ))
    })?;
    let chain = ProviderChain::build(&config, &GrpcKmsConnector::default())
        .map_err(|e| Failure::Error(format!("{}: {e}", config_path.display())))?;
    let hash = atrest_encryption::config::config_hash(text.as_bytes());
    // etcd must be reachable through the manifest's flags before anything changes.
    let runtime = runtime()?;
    let storage = runtime.block_on(open_etcd(&etcd, chain)).map_err(|e| {
        Failure::Error(format!(
            "reaching etcd through {}'s flags: {e}; nothing changed",
            manifest_path.display()
        ))
    })?;

    // The changes: configuration, backup, manifest. A failure before the manifest is
    // replaced undoes what was done.
    make_private_dir(&args.config_dir).map_err(Failure::Error)?;
    files::write_private(&config_path, text.as_bytes(), false).map_err(Failure::Error)?;
    drop(text);
    say(
        &args,
        &format!("wrote {} ({kind}, mode 0600)", config_path.display()),
    );
    let undo_config = || {
        let _ = std::fs::remove_file(&config_path);
    };
    let backup = match backup_manifest(&args.backup.backup_dir, &manifest_path, &original) {
        Ok(b) => b,
        Err(e) => {
            undo_config();
            return Err(Failure::Error(format!(
                "backing up the manifest: {e}; nothing changed"
            )));
        }
    };
    say(
        &args,
        &format!("backed up the manifest to {}", backup.display()),
    );
    let mode = std::fs::metadata(&manifest_path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    if let Err(e) = replace_atomically(&manifest_path, edited.as_bytes(), mode) {
        // The rename did not happen: the original is in place.
        undo_config();
        return Err(Failure::Error(format!("{e}; the manifest is unchanged")));
    }
    say(
        &args,
        &format!(
            "edited {}: --{CONFIG_FLAG}={}, automatic reload, volume {VOLUME}; kubelet restarts \
             kube-apiserver now",
            manifest_path.display(),
            config_path.display()
        ),
    );

    runtime.block_on(async {
        // Wait for kube-apiserver to run with the new configuration.
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        let mut last_said = Instant::now();
        let mut state;
        loop {
            state = match client.get_text("/metrics").await {
                Ok(text) => {
                    let m = atrest_ops::rotate::converge::parse_metrics(&text);
                    if m.config_hash.as_deref() == Some(hash.as_str()) {
                        break;
                    }
                    format!(
                        "it answers with configuration {}",
                        m.config_hash.unwrap_or_else(|| "(none)".into())
                    )
                }
                Err(e) => format!("not answering yet ({e})"),
            };
            if Instant::now() > deadline {
                return Err(rollback_or_report(
                    &args,
                    &manifest_path,
                    &original,
                    mode,
                    &config_path,
                    &backup,
                    &storage,
                    &state,
                )
                .await);
            }
            if last_said.elapsed() >= Duration::from_secs(5) {
                say(
                    &args,
                    &format!("waiting for the restarted kube-apiserver: {state}"),
                );
                last_said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        say(&args, &format!("kube-apiserver runs with {hash}"));

        let progress = CliProgress::new(args.output == OutputFormat::Json);
        let report = reencrypt(&storage, &ReencryptOptions::default(), &progress)
            .await
            .map_err(|e| {
                after_restart(
                    &manifest_path,
                    &config_path,
                    &backup,
                    &format!("re-encrypting: {e}"),
                )
            })?;
        say(
            &args,
            &format!(
                "re-encrypted {} objects ({} already current, {} unreadable)",
                report.rewritten, report.already_current, report.unreadable
            ),
        );
        let result = audit(&storage, &AuditOptions { resources: None }, &progress)
            .await
            .map_err(|e| {
                after_restart(
                    &manifest_path,
                    &config_path,
                    &backup,
                    &format!("auditing: {e}"),
                )
            })?;
        match args.output {
            OutputFormat::Json => println!(
                "{:#}",
                serde_json::json!({
                    "changed": true,
                    "manifest": manifest_path.display().to_string(),
                    "backup": backup.display().to_string(),
                    "config": config_path.display().to_string(),
                    "configHash": hash,
                    "reencrypt": report,
                    "status": result,
                })
            ),
            OutputFormat::Text => print!("{}", super::status::render(&result)),
        }
        if result.up_to_date {
            Ok(())
        } else {
            Err(Failure::Audit)
        }
    })
}

async fn open_etcd(
    etcd: &atrest_cluster::EtcdAccess,
    chain: ProviderChain,
) -> Result<EncryptedStore, String> {
    let tls = (etcd.ca_file.is_some() || etcd.cert_file.is_some() || etcd.key_file.is_some()).then(
        || atrest_store::TlsFiles {
            ca_file: etcd.ca_file.clone(),
            cert_file: etcd.cert_file.clone(),
            key_file: etcd.key_file.clone(),
        },
    );
    let store = atrest_store::open(atrest_store::StoreConfig::Etcd {
        endpoints: etcd.servers.clone(),
        prefix: etcd.prefix.clone(),
        tls,
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(EncryptedStore::new(
        store,
        ChainHandle::new(chain),
        KeyPrefix::new(&etcd.prefix),
    ))
}

/// kube-apiserver did not come back with the configuration in time. If nothing in etcd is
/// encrypted with the new key yet, the original manifest is put back (nothing is lost:
/// every value is still readable without the new configuration); otherwise undoing would
/// make those values unreadable, so the state is reported instead.
#[allow(clippy::too_many_arguments)]
async fn rollback_or_report(
    args: &EnableArgs,
    manifest: &Path,
    original: &str,
    mode: u32,
    config: &Path,
    backup: &Path,
    storage: &EncryptedStore,
    state: &str,
) -> Failure {
    let what = format!(
        "kube-apiserver did not come back with the new configuration within {} s: {state}",
        args.timeout
    );
    let progress = CliProgress::new(true);
    let on_new_key = audit(storage, &AuditOptions { resources: None }, &progress)
        .await
        .map(|a| {
            a.resources
                .iter()
                .flat_map(|r| r.keys.iter())
                .filter(|k| k.write)
                .map(|k| k.objects)
                .sum::<u64>()
        })
        .map_err(|e| e.to_string());
    match on_new_key {
        Ok(0) => match replace_atomically(manifest, original.as_bytes(), mode) {
            Ok(()) => {
                let _ = std::fs::remove_file(config);
                say(
                    args,
                    &format!("restored {} from {}", manifest.display(), backup.display()),
                );
                Failure::Error(format!(
                    "{what}\n  rolled back: the original manifest is in place again (kubelet \
                     restarts kube-apiserver without encryption at rest; nothing was written with \
                     the new key) and {} is removed. Look at kube-apiserver's log \
                     (crictl logs, /var/log/pods) before trying again.",
                    config.display()
                ))
            }
            Err(e) => after_restart(
                manifest,
                config,
                backup,
                &format!("{what}; restoring the backup failed: {e}"),
            ),
        },
        Ok(n) => after_restart(
            manifest,
            config,
            backup,
            &format!(
                "{what}; {n} objects are already encrypted with the new key, so the manifest stays"
            ),
        ),
        Err(e) => after_restart(
            manifest,
            config,
            backup,
            &format!("{what}; etcd could not be audited ({e}), so the manifest stays"),
        ),
    }
}

/// Polls kube-apiserver's /metrics until `done` accepts its configuration hash (`None`: it
/// has none) or `timeout` passes; progress every 5 s. `Err`: what it last answered.
async fn wait_for_config(
    args: &impl Says,
    client: &atrest_client::KubeClient,
    timeout: Duration,
    what: &str,
    done: impl Fn(Option<&str>) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_said = Instant::now();
    loop {
        let state = match client.get_text("/metrics").await {
            Ok(text) => {
                let m = atrest_ops::rotate::converge::parse_metrics(&text);
                if done(m.config_hash.as_deref()) {
                    return Ok(());
                }
                format!(
                    "it answers with configuration {}",
                    m.config_hash.unwrap_or_else(|| "(none)".into())
                )
            }
            Err(e) => format!("not answering ({e})"),
        };
        if Instant::now() > deadline {
            return Err(state);
        }
        if last_said.elapsed() >= Duration::from_secs(5) {
            say(args, &format!("waiting for kube-apiserver {what}: {state}"));
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn disable(args: DisableArgs) -> CmdResult {
    use atrest_ops::rotate::edit::Document;
    let manifest_path = args.node.manifest.clone();
    let m = manifest_path.display().to_string();
    let original = std::fs::read_to_string(&manifest_path)
        .map_err(|e| Failure::Error(format!("{m}: cannot read the manifest: {e}")))?;
    let manifest = ApiServerManifest::parse(&original, &manifest_path)?;
    if manifest.flag(CONFIG_FLAG).is_none() {
        say(
            &args,
            &format!(
                "encryption at rest is not enabled: {m} has no --{CONFIG_FLAG}; nothing changed"
            ),
        );
        if args.output == OutputFormat::Json {
            println!(
                "{:#}",
                serde_json::json!({"changed": false, "alreadyDisabled": true})
            );
        }
        return Ok(());
    }
    // Everything that can be checked before a change is checked first.
    if manifest.flag(edit::RELOAD_FLAG) != Some("true") {
        return Err(Failure::Error(format!(
            "{m}: kube-apiserver runs without --{}=true, so it would not load the \
             plain-text configuration before the data is rewritten (and would keep \
             encrypting); add that flag to the manifest, wait for kubelet's restart, then run \
             this again; nothing changed",
            edit::RELOAD_FLAG
        )));
    }
    let config_path = manifest
        .encryption_provider_config()?
        .ok_or_else(|| Failure::Error(format!("{m}: --{CONFIG_FLAG} is empty; nothing changed")))?;
    let etcd = manifest.etcd()?;
    let disabled = edit::disable(&original, &manifest_path)?;
    let kubeconfig = kubeconfig(&args.node.kubeconfig)?;
    let client = atrest_client::KubeClient::from_kubeconfig(&kubeconfig)
        .map_err(|e| Failure::Error(format!("{}: {e}", kubeconfig.display())))?;
    let config_name = config_path.display().to_string();
    let before = std::fs::read(&config_path).map_err(|e| {
        Failure::Error(format!("{config_name}: cannot read the configuration: {e}"))
    })?;
    let mut doc =
        Document::parse(&before, &config_name).map_err(|e| Failure::Error(e.to_string()))?;
    let changed = doc
        .identity_first()
        .map_err(|e| Failure::Error(e.to_string()))?;
    let bytes = if changed {
        doc.to_bytes().map_err(|e| Failure::Error(e.to_string()))?
    } else {
        before.clone()
    };
    let config = EncryptionConfig::parse(&bytes, &config_name, Default::default())
        .map_err(|e| Failure::Error(e.to_string()))?;
    let chain = ProviderChain::build(&config, &GrpcKmsConnector::default())
        .map_err(|e| Failure::Error(format!("{config_name}: {e}")))?;
    let hash = atrest_encryption::config::config_hash(&bytes);
    let runtime = runtime()?;
    let storage = runtime.block_on(open_etcd(&etcd, chain)).map_err(|e| {
        Failure::Error(format!(
            "reaching etcd through {m}'s flags: {e}; nothing changed"
        ))
    })?;
    let timeout = Duration::from_secs(args.timeout);
    let rerun = format!("atrest cluster disable --manifest {m}");

    runtime.block_on(async {
        // 1. Plain text writes; every key still reads.
        if changed {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let name = config_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| CONFIG_FILE.into());
            let backup = config_path.with_file_name(format!("{name}.bak-{stamp}"));
            files::write_private(&backup, &before, true).map_err(Failure::Error)?;
            files::write_private(&config_path, &bytes, true).map_err(Failure::Error)?;
            say(
                &args,
                &format!(
                    "rewrote {config_name}: identity writes, every key kept for reading (the \
                     original is in {})",
                    backup.display()
                ),
            );
        }
        wait_for_config(
            &args,
            &client,
            timeout,
            "to load the plain-text configuration",
            |h| h == Some(hash.as_str()),
        )
        .await
        .map_err(|state| {
            Failure::Error(format!(
                "kube-apiserver did not load {config_name} within {} s: {state}\n  state: the \
                 configuration writes plain text and still reads every key; the manifest is \
                 unchanged; nothing is lost.\n  continue with: {rerun}",
                args.timeout
            ))
        })?;
        say(&args, &format!("kube-apiserver runs with {hash}"));

        // 2. Everything to plain text.
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        let report = reencrypt(&storage, &ReencryptOptions::default(), &progress)
            .await
            .map_err(|e| {
                Failure::Error(format!(
                    "re-encrypting to plain text: {e}\n  state: the manifest is unchanged; \
                     kube-apiserver writes plain text.\n  continue with: {rerun}"
                ))
            })?;
        say(
            &args,
            &format!(
                "rewrote {} objects in plain text ({} already were, {} unreadable)",
                report.rewritten, report.already_current, report.unreadable
            ),
        );
        let result = audit(&storage, &AuditOptions { resources: None }, &progress)
            .await
            .map_err(|e| Failure::Error(format!("auditing: {e}\n  continue with: {rerun}")))?;
        // Plain text is the goal here: only objects still encrypted (stale: not on the
        // identity write provider) or unreadable keep the keys needed.
        let all_plain = result
            .resources
            .iter()
            .all(|r| !r.covered || (r.stale == 0 && r.undecryptable == 0));
        if !all_plain {
            if args.output == OutputFormat::Text {
                print!("{}", super::status::render(&result));
            }
            return Err(Failure::Error(format!(
                "objects are still encrypted or unreadable (above), so the manifest keeps \
                 --{CONFIG_FLAG}: without the keys they could not be read.\n  continue \
                 with: {rerun}"
            )));
        }

        // 3. The manifest without the flags, mount and volume.
        let backup =
            backup_manifest(&args.backup.backup_dir, &manifest_path, &original).map_err(|e| {
                Failure::Error(format!(
                    "backing up the manifest: {e}\n  state: every object is in plain text; the \
                 manifest is unchanged.\n  continue with: {rerun}"
                ))
            })?;
        say(
            &args,
            &format!("backed up the manifest to {}", backup.display()),
        );
        let mode = std::fs::metadata(&manifest_path)
            .map(|md| md.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        replace_atomically(&manifest_path, disabled.text.as_bytes(), mode).map_err(|e| {
            Failure::Error(format!(
                "{e}; the manifest is unchanged\n  state: every object is in plain text.\n  \
                 continue with: {rerun}"
            ))
        })?;
        let removed = disabled
            .mount
            .iter()
            .map(|p| format!("volumeMount {p}"))
            .chain(disabled.volume.iter().map(|v| format!("volume {v}")))
            .collect::<Vec<_>>();
        say(
            &args,
            &format!(
                "edited {m}: removed {}{}; kubelet restarts kube-apiserver now",
                disabled.flags.join(", "),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(", {}", removed.join(", "))
                }
            ),
        );
        wait_for_config(&args, &client, timeout, "to restart without it", |h| {
            h != Some(hash.as_str())
        })
        .await
        .map_err(|state| {
            Failure::Error(format!(
                "kube-apiserver did not come back without --{CONFIG_FLAG} within {} s: \
                 {state}\n  state: every object is in plain text; {m} no longer names a \
                 configuration (the original is in {}). Look at kube-apiserver's log \
                 (crictl logs, /var/log/pods).",
                args.timeout,
                backup.display()
            ))
        })?;
        let plain: u64 = result.resources.iter().map(|r| r.plaintext).sum();
        match args.output {
            OutputFormat::Json => println!(
                "{:#}",
                serde_json::json!({
                    "changed": true,
                    "manifest": m,
                    "backup": backup.display().to_string(),
                    "config": config_name,
                    "removed": {
                        "flags": disabled.flags,
                        "volumeMount": disabled.mount,
                        "volume": disabled.volume,
                    },
                    "reencrypt": report,
                    "status": result,
                })
            ),
            OutputFormat::Text => println!(
                "atrest: encryption at rest is off: {plain} objects in plain text. {config_name} \
                 is kept: its keys read etcd snapshots and history from before; delete it when \
                 no backup needs them (after `atrest purge`)."
            ),
        }
        Ok(())
    })
}

fn rotate(args: ClusterRotateArgs) -> CmdResult {
    let m = args.node.manifest.display().to_string();
    let text = std::fs::read_to_string(&args.node.manifest)
        .map_err(|e| Failure::Error(format!("{m}: cannot read the manifest: {e}")))?;
    let manifest = ApiServerManifest::parse(&text, &args.node.manifest)?;
    if manifest.flag(CONFIG_FLAG).is_none() {
        return Err(Failure::Error(format!(
            "{m}: no --{CONFIG_FLAG}: encryption at rest is not enabled, there is no key to \
             rotate (atrest cluster enable --manifest {m})"
        )));
    }
    if manifest.flag(edit::RELOAD_FLAG) != Some("true") {
        return Err(Failure::Error(format!(
            "{m}: kube-apiserver runs without --{}=true, so it would not load the rotation's \
             steps; add that flag to the manifest, wait for kubelet's restart, then run this \
             again; nothing changed",
            edit::RELOAD_FLAG
        )));
    }
    let config_path = manifest
        .encryption_provider_config()?
        .ok_or_else(|| Failure::Error(format!("{m}: --{CONFIG_FLAG} is empty; nothing changed")))?;
    let etcd = manifest.etcd()?;
    let kubeconfig = kubeconfig(&args.node.kubeconfig)?;
    super::rotate::run(super::rotate::RotateArgs::for_manifest(
        args.node.manifest.clone(),
        kubeconfig,
        args.provider.clone(),
        args.resources.clone(),
        args.timeout,
        args.poll,
        args.purge,
        args.output,
    ))?;

    // The end state, as `atrest status --manifest` reports it.
    let config_name = config_path.display().to_string();
    let bytes = std::fs::read(&config_path).map_err(|e| {
        Failure::Error(format!("{config_name}: cannot read the configuration: {e}"))
    })?;
    let config = EncryptionConfig::parse(&bytes, &config_name, Default::default())
        .map_err(|e| Failure::Error(e.to_string()))?;
    let chain = ProviderChain::build(&config, &GrpcKmsConnector::default())
        .map_err(|e| Failure::Error(format!("{config_name}: {e}")))?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let storage = open_etcd(&etcd, chain)
            .await
            .map_err(|e| Failure::Error(format!("reaching etcd through {m}'s flags: {e}")))?;
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        let result = audit(&storage, &AuditOptions { resources: None }, &progress)
            .await
            .map_err(|e| Failure::Error(format!("auditing: {e}")))?;
        match args.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({
                    "event": "done",
                    "changed": true,
                    "manifest": m,
                    "config": config_name,
                    "configHash": atrest_encryption::config::config_hash(&bytes),
                    "status": result,
                })
            ),
            OutputFormat::Text => print!("{}", super::status::render(&result)),
        }
        // The rotation is done when nothing is left on a key other than the write key;
        // plain-text objects (kube-apiserver writes some, such as masterleases, outside its
        // configuration) are reported above but are not the rotation's to fix.
        let on_old_keys = result
            .resources
            .iter()
            .any(|r| r.covered && (r.stale > 0 || r.undecryptable > 0));
        if on_old_keys {
            Err(Failure::Audit)
        } else {
            Ok(())
        }
    })
}
