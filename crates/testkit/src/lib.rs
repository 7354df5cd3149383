//! Harnesses for tests that start real components: etcd processes, `atrest serve`, and the
//! real kubectl (v1.32) and etcdctl. Everything listens on loopback ports the kernel hands
//! out, lives in its own temporary directory and is killed by PID when dropped.
//!
//! Test-only code: failures panic with a message that says what to install or look at.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod etcd;
pub mod upstream;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fixed v1.32 kubectl (the `/usr/bin/kubectl` dispatcher would pick one by server
/// version; atrest reports 1.32, so this is the one a user gets).
pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `command` with `input` on its standard input and captures its output.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A running `atrest serve`.
#[derive(Debug)]
pub struct AtrestServer {
    pub data_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl AtrestServer {
    /// Starts `binary serve --data-dir <data_dir> --secure-port <free> <args>` and waits
    /// until it answers `/readyz`.
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str]) -> Self {
        let port = free_port();
        Self::start_on(binary, data_dir, port, args)
    }

    pub fn start_on(binary: &Path, data_dir: &Path, port: u16, args: &[&str]) -> Self {
        Self::start_with_log_level(binary, data_dir, port, args, "info")
    }

    /// As `start_on`, logging at `level` (a `RUST_LOG` value such as `trace`).
    pub fn start_with_log_level(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        args: &[&str],
        level: &str,
    ) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join(format!("serve-{port}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--secure-port")
            .arg(port.to_string())
            .args(args)
            .env("RUST_LOG", level)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = AtrestServer {
            data_dir: data_dir.to_path_buf(),
            port,
            log,
            child: Some(child),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "atrest serve exited with {status} during start-up:\n{}",
                    self.log_text()
                );
            }
            if self.kubeconfig().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                let out = self.kubectl().run(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "atrest serve did not become ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// kubectl pointed at this server, with its own fresh cache directory.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(
            &self.kubeconfig(),
            &self.data_dir.join(format!("kubectl-cache-{}", self.port)),
        )
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("atrest serve did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AtrestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real kubectl with a given kubeconfig and cache directory.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path, cache_dir: &Path) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "these tests need kubectl v1.32 at {KUBECTL}"
        );
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_input(&mut self.command(args), input)
    }

    /// The command, not started (for long-running ones such as `get --watch`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args);
        command
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, b"")
    }

    pub fn ok_with_input(&self, args: &[&str], input: &[u8]) -> String {
        let out = self.run_with_input(args, input);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).unwrap()
    }
}

/// `etcdctl get KEY --print-value-only` against `endpoints`: the raw stored bytes (without
/// etcdctl's trailing newline), or `None` when the key does not exist.
pub fn etcdctl_get(endpoints: &[String], key: &str) -> Option<Vec<u8>> {
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(["get", key, "--print-value-only"])
        .output()
        .unwrap_or_else(|e| panic!("running {ETCDCTL}: {e} (install etcd-client)"));
    assert!(
        out.status.success(),
        "etcdctl get {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut value = out.stdout;
    if value.is_empty() {
        return None;
    }
    if value.last() == Some(&b'\n') {
        value.pop();
    }
    Some(value)
}

/// One raw value from an embedded store, read from this process as an operator's offline
/// tool would (a server may keep running on the same data dir); `None` if the key is absent.
pub fn embedded_get(data_dir: &Path, key: &str) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = atrest_store::open(atrest_store::StoreConfig::Embedded {
            data_dir: data_dir.to_path_buf(),
            compaction: atrest_store::CompactionPolicy::disabled(),
        })
        .await
        .unwrap();
        store.get(key.as_bytes()).await.unwrap().map(|kv| kv.value)
    })
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
