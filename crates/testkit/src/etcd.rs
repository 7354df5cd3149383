//! Starts real etcd processes (`/usr/bin/etcd`) on free loopback ports, each with its own
//! temporary data dir, and kills them by PID when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// Client TLS material for an etcd started with `--client-cert-auth`.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_url: String,
    child: Option<Child>,
    /// The command line it was started with, for `restart`.
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
}

#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub tls: Option<ClientTls>,
    dir: tempfile::TempDir,
}

fn require_etcd() {
    assert!(
        Path::new(ETCD_BINARY).exists(),
        "these tests need a real etcd at {ETCD_BINARY} (Debian package etcd-server); install it \
         with `apt-get install etcd-server`"
    );
}

/// Ports the kernel just handed out (all listeners are held until every port is chosen, so
/// the ports are distinct).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl EtcdCluster {
    /// One member, plain HTTP.
    pub fn single() -> Self {
        Self::start(1, false)
    }

    /// `size` members, plain HTTP.
    pub fn cluster(size: usize) -> Self {
        Self::start(size, false)
    }

    /// One member serving HTTPS and requiring client certificates.
    pub fn single_tls() -> Self {
        Self::start(1, true)
    }

    fn start(size: usize, tls: bool) -> Self {
        require_etcd();
        let dir = tempfile::tempdir().unwrap();
        let client_tls = tls.then(|| make_certs(dir.path()));
        let ports = free_ports(size * 2);
        let scheme = if tls { "https" } else { "http" };
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = (0..size)
            .map(|i| format!("m{i}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for i in 0..size {
            let name = format!("m{i}");
            let client_url = format!("{scheme}://127.0.0.1:{}", ports[2 * i]);
            let log_path = dir.path().join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = Command::new(ETCD_BINARY);
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-cluster")
                .arg(&initial_cluster)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(format!("atrest-test-{}", ports[0]))
                // Fast elections keep the leader-loss test short.
                .arg("--heartbeat-interval")
                .arg("50")
                .arg("--election-timeout")
                .arg("500")
                .arg("--logger")
                .arg("zap")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if let Some(certs) = &client_tls {
                command
                    .arg("--cert-file")
                    .arg(dir.path().join("server.pem"))
                    .arg("--key-file")
                    .arg(dir.path().join("server-key.pem"))
                    .arg("--trusted-ca-file")
                    .arg(&certs.ca_file)
                    .arg("--client-cert-auth");
            }
            let args = command.get_args().map(|a| a.to_os_string()).collect();
            let child = command.spawn().unwrap();
            members.push(Member {
                name,
                client_url,
                child: Some(child),
                args,
                log: log_path,
            });
        }
        let cluster = EtcdCluster {
            members,
            tls: client_tls,
            dir,
        };
        cluster.wait_ready();
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every member's port accepts connections and (plain HTTP) `/health` says
    /// the cluster has a leader.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for member in &self.members {
            let address = member.client_url.rsplit("//").next().unwrap().to_string();
            loop {
                let healthy = if self.tls.is_some() {
                    TcpStream::connect(&address).is_ok()
                } else {
                    http_health(&address)
                };
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    let logs = std::fs::read_to_string(
                        self.dir.path().join(format!("{}.log", member.name)),
                    )
                    .unwrap_or_default();
                    panic!(
                        "etcd member {} did not become healthy; its log:\n{logs}",
                        member.name
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Index of the member that is the raft leader (asked through `etcdctl endpoint status`).
    pub fn leader_index(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (index, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let output = Command::new(crate::ETCDCTL)
                    .arg("--endpoints")
                    .arg(&member.client_url)
                    .args(["endpoint", "status", "-w", "json"])
                    .output()
                    .unwrap();
                let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
                    continue;
                };
                let status = &status[0]["Status"];
                let leader = status["leader"].as_u64().unwrap_or(0);
                if leader != 0 && Some(leader) == status["header"]["member_id"].as_u64() {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader found");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOPs member `index`: its port still accepts connections but nothing answers (a
    /// hung etcd, the hardest outage for a client's timeouts).
    pub fn pause(&self, index: usize) {
        self.signal(index, "-STOP");
        // SIGSTOP is asynchronous: a thread busy on another CPU runs on until it next enters
        // the kernel. Wait until every thread of the process is stopped.
        let pid = self.members[index]
            .child
            .as_ref()
            .expect("the member is running")
            .id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
                .all(|stat| {
                    // The state follows the parenthesised command name.
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                });
            if all_stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {index} did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGCONTs a member `pause` stopped.
    pub fn resume(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    fn signal(&self, index: usize, signal: &str) {
        let child = self.members[index]
            .child
            .as_ref()
            .expect("the member is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} etcd member {index}");
    }

    /// Starts member `index` again (after `kill`) with its data dir and ports, and waits
    /// until it is healthy.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let member = &mut self.members[index];
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&member.log)
            .unwrap();
        let child = Command::new(ETCD_BINARY)
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        member.child = Some(child);
        self.wait_ready();
    }

    /// SIGKILLs member `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_health(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI.
fn make_certs(dir: &Path) -> ClientTls {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the TLS test needs the openssl command");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=atrest-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    for (name, extensions) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"),
        ("client", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        run(&[
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", &format!("{name}-key.pem"), "-out", &format!("{name}.csr"), "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", &format!("{name}.pem"), "-days", "2", "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    ClientTls {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("client.pem"),
        key_file: dir.join("client-key.pem"),
    }
}
