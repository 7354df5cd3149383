//! `atrest rotate`: the key-rotation procedure in one resumable command.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atrest_ops::rotate::{rotate, Event, RotateError, RotateOptions, RotationHost};
use clap::Args;

use super::offline::{parse_resources, runtime, OfflineArgs};
use super::OutputFormat;
use crate::exit::{CmdResult, Failure};
use crate::progress::CliProgress;

/// Rotate the static keys of an EncryptionConfiguration, safely, in one command.
///
/// For every resource entry whose first provider is aesgcm, aescbc or secretbox (or those
/// naming --resources): add a fresh key (OS CSPRNG) as a read-only second key; wait until
/// every live server has loaded the file; promote the new key to write; wait; re-encrypt
/// everything; once no object is on the old key, remove it; wait. The file is rewritten
/// atomically (0600) with a backup of the original beside it.
///
/// Waits are gated on atrest servers (their heartbeats), on kube-apiservers given with
/// --kube-apiservers (their /metrics; they need --encryption-provider-config-automatic-reload),
/// or, with neither, on the operator (a prompt; --yes --wait 90s trusts a fixed wait).
///
/// The state lives in the store: after a crash or kill, run the same command again and it
/// resumes. Exit 0 done, 1 error, 3 a server did not converge in time, 4 waiting for a
/// confirmation without a terminal.
#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    offline: OfflineArgs,
    /// The new key's provider (default: the one that writes now). Moving to another
    /// provider (aescbc -> aesgcm) adds it as a new provider block.
    #[arg(long, value_parser = ["secretbox", "aesgcm", "aescbc"])]
    provider: Option<String>,
    /// Only the entries naming these resources.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    resources: Vec<String>,
    /// kube-apiservers to gate each wait on (https://host:port,...), with the credentials and
    /// trust of --kubeconfig. Without it but with --kubeconfig: that kubeconfig's server.
    #[arg(long = "kube-apiservers", value_delimiter = ',', value_name = "URLS")]
    kube_apiservers: Vec<String>,
    /// kubeconfig for --kube-apiservers.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Answer yes where the operator would be asked.
    #[arg(long)]
    yes: bool,
    /// With no server to ask: wait this long at each step instead of asking (e.g. 90s, 2m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    /// Longest wait for servers to converge at each step.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    timeout: Duration,
    /// How often servers are asked.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    poll: Duration,
    /// Run `atrest purge` at the end (compact and defragment the old copies away).
    #[arg(long)]
    purge: bool,
    /// Output: a line per event, as text or JSON.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

impl RotateArgs {
    /// The rotation of the configuration `manifest` names, on the etcd its flags name, each
    /// wait gated on the kube-apiserver `kubeconfig` reaches (`atrest cluster rotate`).
    #[allow(clippy::too_many_arguments)]
    pub fn for_manifest(
        manifest: PathBuf,
        kubeconfig: PathBuf,
        provider: Option<String>,
        resources: Vec<String>,
        timeout: Duration,
        poll: Duration,
        purge: bool,
        output: OutputFormat,
    ) -> Self {
        RotateArgs {
            offline: OfflineArgs {
                manifest: Some(manifest),
                data_dir: PathBuf::from("./atrest-data"),
                etcd_servers: Vec::new(),
                etcd_prefix: None,
                etcd_cafile: None,
                etcd_certfile: None,
                etcd_keyfile: None,
                encryption_provider_config: None,
                gates: Default::default(),
                snapshot: None,
            },
            provider,
            resources,
            kube_apiservers: Vec::new(),
            kubeconfig: Some(kubeconfig),
            yes: false,
            wait: None,
            timeout,
            poll,
            purge,
            output,
        }
    }
}

/// `90s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (90s, 2m, 1h)"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs(seconds))
}

struct Host<'a> {
    args: &'a RotateArgs,
    path: PathBuf,
}

impl RotationHost for Host<'_> {
    fn read(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.path).map_err(|e| format!("reading {}: {e}", self.path.display()))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), String> {
        crate::files::write_private(&self.path, bytes, true)
    }

    fn backup(&self) -> Result<PathBuf, String> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "encryption-config".into());
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let backup = self.path.with_file_name(format!("{name}.bak-{stamp}"));
        crate::files::write_private(&backup, &self.read()?, false)?;
        Ok(backup)
    }

    fn chain(&self, bytes: &[u8]) -> Result<atrest_encryption::ProviderChain, String> {
        self.args
            .offline
            .chain_of(bytes, &self.path)
            .map_err(|f| match f {
                Failure::Error(m) | Failure::Usage(m) | Failure::Code(_, m) => m,
                Failure::Reported | Failure::Audit => "the configuration is invalid".into(),
            })
    }

    fn event(&self, event: &Event) {
        match self.args.output {
            OutputFormat::Json => {
                println!("{}", serde_json::to_string(event).unwrap_or_default())
            }
            OutputFormat::Text => println!("atrest: {}", event.message),
        }
        let _ = std::io::stdout().flush();
    }

    fn confirm(&self, what: &str) -> bool {
        if self.args.yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            return false;
        }
        eprint!("atrest: no server publishes what it has loaded. Has {what}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        read.is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

pub fn run(mut args: RotateArgs) -> CmdResult {
    args.offline.resolve()?;
    let path = args
        .offline
        .encryption_provider_config
        .clone()
        .ok_or_else(|| {
            Failure::Usage(
                "--encryption-provider-config FILE is required (the file to rotate)".into(),
            )
        })?;
    let path = std::fs::canonicalize(&path)
        .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?;
    let mut kube = Vec::new();
    if let Some(kc) = &args.kubeconfig {
        let base =
            atrest_client::Kubeconfig::load(kc).map_err(|e| Failure::Error(e.to_string()))?;
        let servers = if args.kube_apiservers.is_empty() {
            vec![base.server.clone()]
        } else {
            args.kube_apiservers.clone()
        };
        for url in servers {
            let config =
                atrest_client::Kubeconfig::load(kc).map_err(|e| Failure::Error(e.to_string()))?;
            let config = atrest_client::Kubeconfig {
                server: url.trim_end_matches('/').to_string(),
                ..config
            };
            kube.push(Arc::new(
                atrest_client::KubeClient::new(config)
                    .map_err(|e| Failure::Error(e.to_string()))?,
            ));
        }
    } else if !args.kube_apiservers.is_empty() {
        return Err(Failure::Usage(
            "--kube-apiservers needs --kubeconfig (for the credentials and the CA)".into(),
        ));
    }
    let options = RotateOptions {
        provider: args.provider.clone(),
        resources: parse_resources(&args.resources)?,
        kube_apiservers: kube,
        fixed_wait: if args.yes { args.wait } else { None },
        timeout: args.timeout,
        poll: args.poll,
    };
    if args.wait.is_some() && !args.yes {
        return Err(Failure::Usage("--wait is trusted only with --yes".into()));
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let storage = args.offline.open().await?;
        let host = Host {
            args: &args,
            path: path.clone(),
        };
        let progress = CliProgress::new(args.output == OutputFormat::Json);
        let state = rotate(&storage, &path, &host, &options, &progress)
            .await
            .map_err(|e| match &e {
                RotateError::NotConverged { .. } => Failure::Code(3, e.to_string()),
                RotateError::NeedsConfirmation { .. } => Failure::Code(4, e.to_string()),
                _ => Failure::Error(e.to_string()),
            })?;
        if args.purge {
            let report = atrest_ops::purge::purge(&storage, state.migration_revision)
                .await
                .map_err(|e| Failure::Error(e.to_string()))?;
            let freed: u64 = report
                .space
                .iter()
                .map(|s| s.bytes_before.saturating_sub(s.bytes_after))
                .sum();
            match args.output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"event": "purged", "report": report})
                ),
                OutputFormat::Text => println!(
                    "atrest: purged history up to revision {} ({freed} bytes freed)",
                    report.compacted_to
                ),
            }
        } else if args.output == OutputFormat::Text {
            println!(
                "atrest: old copies stay in the store's history until `atrest purge` (or rerun with --purge)"
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
