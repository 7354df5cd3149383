//! The real kube-apiserver (1.36, from the project's shared `upstream/bin.tar.xz`), started
//! on a test's etcd with token authentication, for interoperability tests: operations on an
//! etcd that kube-apiserver wrote, with it running beside them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{free_port, Kubectl};

/// The admin token `kube-apiserver.sh` configures (a `system:masters` user).
pub const TOKEN: &str = "atrest-admin-token";

/// Where the shared upstream material is: `$ATREST_UPSTREAM_DIR`, else `shared/upstream`
/// beside the repository. `None` when it is not on this machine.
pub fn upstream_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ATREST_UPSTREAM_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/upstream")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("kube-apiserver.sh").exists() && d.join("bin.tar.xz").exists())
}

static UNPACK: Mutex<()> = Mutex::new(());

/// The unpacked kube-apiserver binary (unpacked once per machine into the temp dir, never
/// into the repository).
fn binary(upstream: &Path) -> PathBuf {
    let _guard = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join("atrest-test-upstream");
    let kas = dir.join("kube-apiserver");
    if kas.exists() {
        return kas;
    }
    let staging = std::env::temp_dir().join(format!("atrest-test-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&staging).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -dc '{}' | tar -C '{}' -xf -",
            upstream.join("bin.tar.xz").display(),
            staging.display()
        ))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "unpacking the upstream kube-apiserver failed"
    );
    // Another process may have won the race: either copy is complete.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(kas.exists(), "no kube-apiserver in the upstream archive");
    kas
}

/// Starts kube-apiserver.sh in `dir` and writes `dir/kubeconfig` for it.
fn launch(
    upstream: &Path,
    kas: &Path,
    dir: &Path,
    port: u16,
    etcd_url: &str,
    config: &Path,
    extra: &[&str],
) -> Child {
    let log = std::fs::File::create(dir.join("kube-apiserver.log")).unwrap();
    let child = Command::new("bash")
        .arg(upstream.join("kube-apiserver.sh"))
        .args(extra)
        .env("ETCD_URL", etcd_url)
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir)
        .env("CONFIG", config)
        .env("KAS", kas)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(
        dir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kas\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: kas\n  context:\n    cluster: kas\n    user: admin\ncurrent-context: kas\n"
        ),
    )
    .unwrap();
    child
}

/// A running kube-apiserver. Stop it (drop) before its etcd: it hangs on shutdown otherwise.
#[derive(Debug)]
pub struct KubeApiServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl KubeApiServer {
    /// Starts kube-apiserver on `etcd_url` with `config` as --encryption-provider-config
    /// and waits until it is ready. `None` (with a note on stderr) when the upstream
    /// material is not on this machine.
    pub fn start(etcd_url: &str, config: &Path, extra: &[&str]) -> Option<Self> {
        let Some(upstream) = upstream_dir() else {
            eprintln!(
                "note: the upstream kube-apiserver (shared/upstream) is not on this machine; \
                 set ATREST_UPSTREAM_DIR to run the interoperability checks"
            );
            return None;
        };
        let kas = binary(&upstream);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Self::spawn(&upstream, &kas, dir, port, etcd_url, config, extra);
        Some(server)
    }

    fn spawn(
        upstream: &Path,
        kas: &Path,
        dir: tempfile::TempDir,
        port: u16,
        etcd_url: &str,
        config: &Path,
        extra: &[&str],
    ) -> Self {
        let child = launch(upstream, kas, dir.path(), port, etcd_url, config, extra);
        let mut server = KubeApiServer {
            port,
            dir,
            child: Some(child),
        };
        server.wait_ready();
        server
    }

    /// Restarts with other flags on the same port and data directory (what kubelet does
    /// when a static pod's manifest changes); `Err` with its log if it does not start. The
    /// server stays stopped then, and may be restarted again.
    pub fn try_restart(
        &mut self,
        etcd_url: &str,
        config: &Path,
        extra: &[&str],
    ) -> Result<(), String> {
        self.stop();
        let upstream = upstream_dir().ok_or("no upstream material")?;
        let kas = binary(&upstream);
        self.child = Some(launch(
            &upstream,
            &kas,
            self.dir.path(),
            self.port,
            etcd_url,
            config,
            extra,
        ));
        let result = self.try_wait_ready();
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Restarts with another configuration (same data directory, port and etcd).
    pub fn restart(&mut self, etcd_url: &str, config: &Path, extra: &[&str]) {
        self.stop();
        let upstream = upstream_dir().unwrap();
        let kas = binary(&upstream);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let restarted = Self::spawn(&upstream, &kas, dir, self.port, etcd_url, config, extra);
        *self = restarted;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default()
    }

    /// A kubeconfig with the admin token (TLS verification off: its certificate is
    /// self-signed on start).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig(), &self.dir.path().join("kubectl-cache"))
    }

    fn wait_ready(&mut self) {
        if let Err(e) = self.try_wait_ready() {
            panic!("{e}");
        }
    }

    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Err(format!(
                    "kube-apiserver exited with {status} during start-up:\n{}",
                    self.log_text()
                ));
            }
            let out = self.kubectl().run(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver did not become ready:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
