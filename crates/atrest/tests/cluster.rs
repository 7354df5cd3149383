//! Real clusters: offline commands that read kube-apiserver's static-pod manifest (a
//! minikube manifest whose hostPath volumes point into the test's directory, on an etcd with
//! TLS client certificates), etcd snapshot files, and `atrest cluster enable`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use atrest_store::{StoreConfig, TlsFiles};
use atrest_testkit::etcd::EtcdCluster;

use common::*;

/// The minikube manifest this repository keeps as a fixture.
fn minikube_manifest() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/manifests/minikube-kube-apiserver.yaml"),
    )
    .unwrap()
}

/// A node's filesystem in a temp dir: the minikube manifest with its certificate volume on
/// `<root>/certs` (etcd's CA and the client certificate under minikube's file names), and
/// etcd at `cluster`'s endpoint.
struct Node {
    root: tempfile::TempDir,
    manifest: PathBuf,
}

impl Node {
    fn new(cluster: &EtcdCluster, manifest_text: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let certs = root.path().join("certs");
        std::fs::create_dir_all(certs.join("etcd")).unwrap();
        let tls = cluster.tls.as_ref().unwrap();
        std::fs::copy(&tls.ca_file, certs.join("etcd/ca.crt")).unwrap();
        std::fs::copy(&tls.cert_file, certs.join("apiserver-etcd-client.crt")).unwrap();
        std::fs::copy(&tls.key_file, certs.join("apiserver-etcd-client.key")).unwrap();
        let text = manifest_text
            .replace(
                "      path: /var/lib/minikube/certs\n",
                &format!("      path: {}\n", certs.display()),
            )
            .replace("https://127.0.0.1:2379", &cluster.endpoints()[0]);
        std::fs::create_dir_all(root.path().join("manifests")).unwrap();
        let manifest = write(&root.path().join("manifests"), "kube-apiserver.yaml", &text);
        Node { root, manifest }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn manifest_arg(&self) -> String {
        self.manifest.display().to_string()
    }
}

/// The minikube manifest with encryption at rest enabled by hand, as the seed does it: the
/// flag, a volumeMount and a hostPath volume for `enc_dir` (a host directory).
fn with_encryption(text: &str, enc_dir: &Path) -> String {
    text.replace(
        "    - --tls-private-key-file=/var/lib/minikube/certs/apiserver.key\n",
        "    - --tls-private-key-file=/var/lib/minikube/certs/apiserver.key\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n",
    )
    .replace(
        "  hostNetwork: true\n",
        "    - mountPath: /etc/kubernetes/enc\n      name: enc\n      readOnly: true\n  hostNetwork: true\n",
    )
    .replace(
        "status: {}\n",
        &format!(
            "  - hostPath:\n      path: {}\n      type: DirectoryOrCreate\n    name: enc\nstatus: {{}}\n",
            enc_dir.display()
        ),
    )
}

fn tls_store(cluster: &EtcdCluster) -> StoreConfig {
    let tls = cluster.tls.clone().unwrap();
    StoreConfig::Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/registry".into(),
        tls: Some(TlsFiles {
            ca_file: Some(tls.ca_file),
            cert_file: Some(tls.cert_file),
            key_file: Some(tls.key_file),
        }),
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn offline_commands_read_the_manifest_flags_and_host_paths() {
    let cluster = EtcdCluster::single_tls();
    let enc_dir = tempfile::tempdir().unwrap();
    let current = config("secrets", &[provider("aesgcm", "new", K_NEW)]);
    write(enc_dir.path(), "enc.yaml", &current);
    let node = Node::new(
        &cluster,
        &with_encryption(&minikube_manifest(), enc_dir.path()),
    );
    let store = tls_store(&cluster);
    let s = |name: &str| {
        (
            secrets(),
            "ns",
            name.to_string(),
            secret_bytes("ns", name, name.as_bytes()),
        )
    };
    seed(&store, "/registry", &current, &[s("gcm1"), s("gcm2")]);
    seed(
        &store,
        "/registry",
        &identity_only("secrets"),
        &[s("plain")],
    );
    let m = node.manifest_arg();

    // Everything (etcd, certificates, configuration) comes from the manifest alone.
    let out = atrest(&["status", "--manifest", &m, "-o", "json"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let audit = stdout_json(&out);
    assert_eq!(counts(resource(&audit, "secrets")), [3, 2, 0, 1, 0]);

    let out = atrest(&[
        "get",
        "/registry/secrets/ns/gcm1",
        "--manifest",
        &m,
        "-o",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = stdout_json(&out);
    assert_eq!(shown["provider"]["provider"], "aesgcm");
    assert_eq!(shown["object"]["metadata"]["name"], "gcm1");

    let out = atrest(&["reencrypt", "--manifest", &m, "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = atrest(&["status", "--manifest", &m, "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        counts(resource(&stdout_json(&out), "secrets")),
        [3, 3, 0, 0, 0]
    );

    // A flag on the command line wins over the manifest: another configuration that cannot
    // read these values makes them undecryptable.
    let other = write(
        enc_dir.path(),
        "other.yaml",
        &config("secrets", &[provider("aesgcm", "gone", K_GONE)]),
    );
    let out = atrest(&[
        "status",
        "--manifest",
        &m,
        "--encryption-provider-config",
        other.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(
        counts(resource(&stdout_json(&out), "secrets")),
        [3, 0, 0, 0, 3]
    );
    drop(node);
}

#[test]
fn manifest_errors_name_the_file_and_the_flag() {
    let cluster = EtcdCluster::single_tls();
    // Not enabled: no --encryption-provider-config.
    let node = Node::new(&cluster, &minikube_manifest());
    let m = node.manifest_arg();
    let out = atrest(&["status", "--manifest", &m]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains(&m), "{err}");
    assert!(err.contains("no --encryption-provider-config"), "{err}");
    assert!(err.contains("atrest cluster enable"), "{err}");

    // A configuration path under no volumeMount is inside the image, not on the host.
    let text = minikube_manifest().replace(
        "    - --secure-port=8443\n",
        "    - --secure-port=8443\n    - --encryption-provider-config=/opt/enc.yaml\n",
    );
    std::fs::write(&node.manifest, text).unwrap();
    let out = atrest(&["get", "/registry/secrets/a/b", "--manifest", &m]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{m}: --encryption-provider-config: /opt/enc.yaml is under no volumeMount"
        )),
        "{err}"
    );

    // Not YAML at all, and a missing file.
    std::fs::write(&node.manifest, "\t{[: not yaml").unwrap();
    let out = atrest(&["purge", "--manifest", &m]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&format!("{m}: not valid YAML")),
        "{}",
        stderr(&out)
    );
    let missing = node.path("nope.yaml");
    let out = atrest(&["reencrypt", "--manifest", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("cannot read the manifest"),
        "{}",
        stderr(&out)
    );
}

/// `etcdctl snapshot save` from an etcd with client certificates.
fn save_snapshot(cluster: &EtcdCluster, file: &Path) {
    let tls = cluster.tls.as_ref().unwrap();
    let out = std::process::Command::new(atrest_testkit::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&cluster.endpoints()[0])
        .arg("--cacert")
        .arg(&tls.ca_file)
        .arg("--cert")
        .arg(&tls.cert_file)
        .arg("--key")
        .arg(&tls.key_file)
        .arg("snapshot")
        .arg("save")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        stderr(&out)
    );
}

#[test]
fn status_and_get_on_a_snapshot_answer_as_on_the_live_etcd() {
    let cluster = EtcdCluster::single_tls();
    let enc_dir = tempfile::tempdir().unwrap();
    let current = config(
        "secrets",
        &[
            provider("aesgcm", "new", K_NEW),
            provider("aescbc", "old", K_OLD),
        ],
    );
    write(enc_dir.path(), "enc.yaml", &current);
    let node = Node::new(
        &cluster,
        &with_encryption(&minikube_manifest(), enc_dir.path()),
    );
    let store = tls_store(&cluster);
    let s = |name: &str| {
        (
            secrets(),
            "ns",
            name.to_string(),
            secret_bytes("ns", name, name.as_bytes()),
        )
    };
    seed(&store, "/registry", &current, &[s("gcm1"), s("gcm2")]);
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("aescbc", "old", K_OLD)]),
        &[s("cbc")],
    );
    seed(
        &store,
        "/registry",
        &identity_only("secrets"),
        &[s("plain"), s("deleted")],
    );
    seed(
        &store,
        "/registry",
        &identity_only("configmaps"),
        &[(configmaps(), "ns", "c1".into(), b"{}".to_vec())],
    );
    // A deleted key must not come back from the snapshot.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let raw = atrest_store::open(store.clone()).await.unwrap();
        raw.delete(b"/registry/secrets/ns/deleted", None)
            .await
            .unwrap();
    });
    let snap = node.path("backup.db");
    save_snapshot(&cluster, &snap);
    let m = node.manifest_arg();
    let snap_arg = snap.display().to_string();

    let live = atrest(&["status", "--manifest", &m, "-o", "json"]);
    let from_file = atrest(&[
        "status",
        "--manifest",
        &m,
        "--etcd-snapshot",
        &snap_arg,
        "-o",
        "json",
    ]);
    assert_eq!(code(&live), 3, "{}", stderr(&live));
    assert_eq!(code(&from_file), 3, "{}", stderr(&from_file));
    let (live, from_file) = (stdout_json(&live), stdout_json(&from_file));
    assert_eq!(counts(resource(&live, "secrets")), [4, 2, 1, 1, 0]);
    assert_eq!(live["resources"], from_file["resources"]);
    assert_eq!(live["upToDate"], from_file["upToDate"]);

    for key in [
        "/registry/secrets/ns/gcm1",
        "/registry/secrets/ns/cbc",
        "/registry/secrets/ns/plain",
    ] {
        for output in ["json", "raw"] {
            let live = atrest(&["get", key, "--manifest", &m, "-o", output]);
            let from_file = atrest(&[
                "get",
                key,
                "--manifest",
                &m,
                "--etcd-snapshot",
                &snap_arg,
                "-o",
                output,
            ]);
            assert_eq!(code(&live), 0, "{}", stderr(&live));
            assert_eq!(code(&from_file), 0, "{}", stderr(&from_file));
            assert_eq!(live.stdout, from_file.stdout, "{key} -o {output}");
        }
    }
    let out = atrest(&[
        "get",
        "/registry/secrets/ns/deleted",
        "--manifest",
        &m,
        "--etcd-snapshot",
        &snap_arg,
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // With no etcd at all (stopped), the snapshot and the configuration are enough.
    drop(cluster);
    let out = atrest(&[
        "get",
        "/registry/secrets/ns/gcm1",
        "--etcd-snapshot",
        &snap_arg,
        "--encryption-provider-config",
        enc_dir.path().join("enc.yaml").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["object"]["metadata"]["name"], "gcm1");

    // A damaged backup is an error naming the file.
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&snap, &bytes).unwrap();
    let out = atrest(&["status", "--etcd-snapshot", &snap_arg, "--manifest", &m]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains(&snap_arg) && err.contains("truncated"),
        "{err}"
    );
}

/// Plays kubelet for one static pod: runs the real kube-apiserver with the manifest's etcd
/// and encryption flags (container paths mapped to host paths through its hostPath volumes),
/// and restarts it whenever the manifest file changes. Other flags (ports, serving
/// certificates, authentication) are the harness's own.
struct Kubelet {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    kubeconfig: PathBuf,
    restarts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The logs of the starts that failed, in order.
    failed_starts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// kube-apiserver's flags from the manifest. `unseen`: a host directory the container
/// runtime does not see (as on a node where atrest's filesystem is not the kubelet's: a
/// hostPath there is another, empty directory): paths under it reach kube-apiserver as
/// paths under an empty directory.
fn kas_flags(manifest: &Path, unseen: Option<&(PathBuf, PathBuf)>) -> (String, Vec<String>) {
    let m = atrest_cluster::ApiServerManifest::load(manifest).unwrap();
    let etcd = m.etcd().unwrap();
    let runtime_view = |p: PathBuf| match unseen {
        Some((hidden, empty)) if p.starts_with(hidden) => {
            empty.join(p.strip_prefix(hidden).unwrap())
        }
        _ => p,
    };
    let mut flags = Vec::new();
    for (name, value) in [
        ("etcd-cafile", etcd.ca_file),
        ("etcd-certfile", etcd.cert_file),
        ("etcd-keyfile", etcd.key_file),
        (
            "encryption-provider-config",
            m.encryption_provider_config().unwrap(),
        ),
    ] {
        if let Some(v) = value.map(runtime_view) {
            flags.push(format!("--{name}={}", v.display()));
        }
    }
    if let Some(v) = m.flag("encryption-provider-config-automatic-reload") {
        flags.push(format!("--encryption-provider-config-automatic-reload={v}"));
    }
    flags.push(format!("--etcd-prefix={}", etcd.prefix));
    (etcd.servers.join(","), flags)
}

impl Kubelet {
    /// `None` when the upstream kube-apiserver is not on this machine.
    fn start(manifest: &Path, base_config: &Path) -> Option<Self> {
        Self::start_on(manifest, base_config, None)
    }

    /// As `start`, on a node whose container runtime does not see the host directory
    /// `unseen` (it sees an empty directory there instead).
    fn start_on(manifest: &Path, base_config: &Path, unseen: Option<&Path>) -> Option<Self> {
        use atrest_testkit::upstream::KubeApiServer;
        use std::sync::atomic::Ordering;
        let unseen = unseen.map(|dir| {
            let empty = dir.with_extension("runtime-view");
            std::fs::create_dir_all(&empty).unwrap();
            (dir.to_path_buf(), empty)
        });
        let (url, flags) = kas_flags(manifest, unseen.as_ref());
        let mut server = KubeApiServer::start(&url, base_config, &strs(&flags))?;
        let kubeconfig = server.kubeconfig();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restarts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed_starts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (manifest, base) = (manifest.to_path_buf(), base_config.to_path_buf());
        let (stop2, restarts2, failed2) = (stop.clone(), restarts.clone(), failed_starts.clone());
        let thread = std::thread::spawn(move || {
            let mut seen = std::fs::read(&manifest).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let now = std::fs::read(&manifest).unwrap();
                if now != seen {
                    // As kubelet: a pod that fails to start is retried when its manifest
                    // changes again.
                    seen = now;
                    let (url, flags) = kas_flags(&manifest, unseen.as_ref());
                    restarts2.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = server.try_restart(&url, &base, &strs(&flags)) {
                        eprintln!("kubelet harness: kube-apiserver did not start: {e}");
                        failed2.lock().unwrap().push(e);
                    }
                }
            }
            server.stop();
        });
        Some(Kubelet {
            stop,
            thread: Some(thread),
            kubeconfig,
            restarts,
            failed_starts,
        })
    }

    fn kubectl(&self, dir: &Path) -> atrest_testkit::Kubectl {
        atrest_testkit::Kubectl::new(&self.kubeconfig, &dir.join("kubectl-cache"))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raw_get(store: &StoreConfig, key: &str) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let raw = atrest_store::open(store.clone()).await.unwrap();
        raw.get(key.as_bytes()).await.unwrap().map(|kv| kv.value)
    })
}

#[test]
fn cluster_enable_encrypts_a_running_kube_apiserver_through_its_manifest() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let Some(kubelet) = Kubelet::start(&node.manifest, &base) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    for name in ["db", "api", "tls"] {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=password=plain-{name}"),
        ]);
    }
    let store = tls_store(&cluster);
    let before = raw_get(&store, "/registry/secrets/default/db").unwrap();
    assert!(
        atrest_testkit::contains(&before, b"plain-db"),
        "written in plain text first"
    );
    let original = std::fs::read_to_string(&node.manifest).unwrap();
    let m = node.manifest_arg();
    let enc = node.path("enc");
    let backups = node.path("backup");
    let kubeconfig = kubelet.kubeconfig.display().to_string();
    let enable = || {
        atrest(&[
            "cluster",
            "enable",
            "--manifest",
            &m,
            "--config-dir",
            enc.to_str().unwrap(),
            "--kubeconfig",
            &kubeconfig,
            "--backup-dir",
            backups.to_str().unwrap(),
            "--timeout",
            "240",
        ])
    };

    let out = enable();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    assert!(text.contains("backed up the manifest to"), "{text}");
    assert_eq!(
        kubelet.restarts.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // Every secret is encrypted in etcd, and kube-apiserver reads them.
    for name in ["db", "api", "tls"] {
        let stored = raw_get(&store, &format!("/registry/secrets/default/{name}")).unwrap();
        assert!(stored.starts_with(b"k8s:enc:secretbox:v1:key1:"), "{name}");
        // The value, not the two-letter name: random ciphertext holds "db" about
        // once in two hundred values.
        let plain = format!("plain-{name}");
        assert!(
            !atrest_testkit::contains(&stored, plain.as_bytes()),
            "{name}"
        );
        let secret = kubectl.json(&["get", "secret", name]);
        use base64::Engine as _;
        assert_eq!(
            secret["data"]["password"],
            base64::engine::general_purpose::STANDARD.encode(format!("plain-{name}"))
        );
    }
    // The manifest: every original line kept, in order; exactly the additions.
    let edited = std::fs::read_to_string(&node.manifest).unwrap();
    let mut old = original.lines().peekable();
    let mut added = Vec::new();
    for line in edited.lines() {
        if old.peek() == Some(&line) {
            old.next();
        } else {
            added.push(line.to_string());
        }
    }
    assert_eq!(old.next(), None);
    let dir = enc.display().to_string();
    assert_eq!(
        added,
        [
            format!("    - --encryption-provider-config={dir}/encryption-config.yaml"),
            "    - --encryption-provider-config-automatic-reload=true".into(),
            format!("    - mountPath: {dir}"),
            "      name: atrest-encryption-config".into(),
            "      readOnly: true".into(),
            "  - hostPath:".into(),
            format!("      path: {dir}"),
            "      type: DirectoryOrCreate".into(),
            "    name: atrest-encryption-config".into(),
        ]
    );
    // The backup is the original, outside the manifests directory; key material is private.
    let backup_files: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backup_files.len(), 1);
    assert_eq!(std::fs::read_to_string(&backup_files[0]).unwrap(), original);
    assert_eq!(
        std::fs::read_dir(node.path("manifests")).unwrap().count(),
        1,
        "nothing else in the manifests directory"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&enc), 0o700);
    assert_eq!(mode(&enc.join("encryption-config.yaml")), 0o600);

    let out = atrest(&["status", "--manifest", &m, "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(counts(resource(&stdout_json(&out), "secrets"))[1], 3);

    // Twice: a no-op.
    let out = enable();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already enabled"));
    assert_eq!(std::fs::read_to_string(&node.manifest).unwrap(), edited);
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);
    drop(kubelet);
}

#[test]
fn cluster_enable_rolls_back_when_kube_apiserver_does_not_come_back() {
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let Some(kubelet) = Kubelet::start(&node.manifest, &base) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=plain-db",
    ]);
    let original = std::fs::read_to_string(&node.manifest).unwrap();
    let enc = node.path("enc");
    // No time at all to come back: the wait fails at once, before anything is written with
    // the new key, so the original manifest is put back.
    let out = atrest(&[
        "cluster",
        "enable",
        "--manifest",
        &node.manifest_arg(),
        "--config-dir",
        enc.to_str().unwrap(),
        "--kubeconfig",
        kubelet.kubeconfig.to_str().unwrap(),
        "--backup-dir",
        node.path("backup").to_str().unwrap(),
        "--timeout",
        "0",
    ]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert!(
        err.contains("did not come back") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&node.manifest).unwrap(), original);
    assert!(!enc.join("encryption-config.yaml").exists());
    // kube-apiserver (restarted on the original manifest, or never restarted) reads the
    // secret, still stored as it was.
    let mut secret = None;
    for _ in 0..400 {
        let out = kubectl.run(&["get", "secret", "db", "-o", "json"]);
        if out.status.success() {
            secret = Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(secret.unwrap()["metadata"]["name"], "db");
    let stored = raw_get(&tls_store(&cluster), "/registry/secrets/default/db").unwrap();
    assert!(atrest_testkit::contains(&stored, b"plain-db"));
    drop(kubelet);
}

/// Waits until kube-apiserver serves `name` again (it may be restarting) and returns it.
fn secret_when_served(kubectl: &atrest_testkit::Kubectl, name: &str) -> serde_json::Value {
    for _ in 0..480 {
        let out = kubectl.run(&["get", "secret", name, "-o", "json"]);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("kube-apiserver does not serve secret {name}");
}

#[test]
fn cluster_enable_rolls_back_when_kube_apiserver_exits_on_the_new_flags() {
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let enc = node.path("enc");
    // The container runtime does not see the configuration directory atrest writes: the
    // restarted kube-apiserver gets an --encryption-provider-config it cannot open, and
    // exits.
    let Some(kubelet) = Kubelet::start_on(&node.manifest, &base, Some(&enc)) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=plain-db",
    ]);
    let original = std::fs::read_to_string(&node.manifest).unwrap();
    let backups = node.path("backup");
    let out = atrest(&[
        "cluster",
        "enable",
        "--manifest",
        &node.manifest_arg(),
        "--config-dir",
        enc.to_str().unwrap(),
        "--kubeconfig",
        kubelet.kubeconfig.to_str().unwrap(),
        "--backup-dir",
        backups.to_str().unwrap(),
        "--timeout",
        "90",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 1, "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("did not come back") && err.contains("rolled back"),
        "{err}"
    );
    assert!(text.contains("restored"), "{text}");
    // It was the crash: kube-apiserver exited on start, unable to read the configuration.
    {
        let failed = kubelet.failed_starts.lock().unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("exited"), "{}", failed[0]);
        assert!(
            failed[0].contains("encryption-config.yaml"),
            "{}",
            failed[0]
        );
    }
    // Rolled back: the original manifest, no configuration left, the backup outside the
    // manifests directory.
    assert_eq!(std::fs::read_to_string(&node.manifest).unwrap(), original);
    assert!(!enc.join("encryption-config.yaml").exists());
    assert_eq!(
        std::fs::read_dir(node.path("manifests")).unwrap().count(),
        1
    );
    // kubelet restarts kube-apiserver on the original manifest: it serves the secret, still
    // stored as it was, and takes writes.
    let secret = secret_when_served(&kubectl, "db");
    assert_eq!(secret["metadata"]["name"], "db");
    kubectl.ok(&["create", "secret", "generic", "after", "--from-literal=k=v"]);
    let store = tls_store(&cluster);
    let stored = raw_get(&store, "/registry/secrets/default/db").unwrap();
    assert!(atrest_testkit::contains(&stored, b"plain-db"));
    assert!(raw_get(&store, "/registry/secrets/default/after").is_some());
    assert_eq!(
        kubelet.restarts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the edit, then the rollback"
    );
    drop(kubelet);
}

/// `cluster enable` on the node's manifest through `kubelet`'s kube-apiserver; asserts it
/// succeeded.
fn enable_on(node: &Node, kubelet: &Kubelet, extra: &[&str]) -> std::process::Output {
    let enc = node.path("enc");
    let backups = node.path("backup");
    let m = node.manifest_arg();
    let mut args = vec![
        "cluster",
        "enable",
        "--manifest",
        &m,
        "--config-dir",
        enc.to_str().unwrap(),
        "--kubeconfig",
        kubelet.kubeconfig.to_str().unwrap(),
        "--backup-dir",
        backups.to_str().unwrap(),
        "--timeout",
        "240",
    ];
    args.extend_from_slice(extra);
    let out = atrest(&args);
    // 0, or 3 when the final audit saw the masterleases kube-apiserver itself rewrites in
    // plain text every few seconds; callers check etcd.
    assert!(
        matches!(code(&out), 0 | 3),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

fn plain_secret(kubectl: &atrest_testkit::Kubectl, name: &str) -> String {
    use base64::Engine as _;
    let secret = secret_when_served(kubectl, name);
    let data = secret["data"]["password"].as_str().unwrap().to_string();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn cluster_disable_returns_every_secret_to_plain_text_and_the_manifest_to_the_original() {
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let Some(kubelet) = Kubelet::start(&node.manifest, &base) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    for name in ["db", "api"] {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=password=plain-{name}"),
        ]);
    }
    let original = std::fs::read_to_string(&node.manifest).unwrap();
    enable_on(&node, &kubelet, &[]);
    // Written while encrypted.
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "late",
        "--from-literal=password=plain-late",
    ]);
    let store = tls_store(&cluster);
    for name in ["db", "api", "late"] {
        let stored = raw_get(&store, &format!("/registry/secrets/default/{name}")).unwrap();
        assert!(stored.starts_with(b"k8s:enc:secretbox:v1:"), "{name}");
    }

    let m = node.manifest_arg();
    let backups = node.path("backup");
    let kubeconfig = kubelet.kubeconfig.display().to_string();
    let disable = |output: &str| {
        atrest(&[
            "cluster",
            "disable",
            "--manifest",
            &m,
            "--kubeconfig",
            &kubeconfig,
            "--backup-dir",
            backups.to_str().unwrap(),
            "--timeout",
            "240",
            "-o",
            output,
        ])
    };
    let out = disable("json");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["changed"], true);
    assert_eq!(report["removed"]["volume"], "atrest-encryption-config");

    // The manifest is the original, byte for byte; kube-apiserver restarted on it.
    assert_eq!(std::fs::read_to_string(&node.manifest).unwrap(), original);
    assert_eq!(
        kubelet.restarts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "enable's restart, then disable's"
    );
    assert_eq!(
        std::fs::read_dir(node.path("manifests")).unwrap().count(),
        1
    );
    // Every secret is plain text in etcd, and kube-apiserver reads it.
    for name in ["db", "api", "late"] {
        let stored = raw_get(&store, &format!("/registry/secrets/default/{name}")).unwrap();
        assert!(!stored.starts_with(b"k8s:enc:"), "{name} still encrypted");
        assert!(
            atrest_testkit::contains(&stored, format!("plain-{name}").as_bytes()),
            "{name}"
        );
        assert_eq!(plain_secret(&kubectl, name), format!("plain-{name}"));
    }
    // The configuration is kept, private, identity first, the key still there for reading.
    use std::os::unix::fs::PermissionsExt;
    let config = node.path("enc").join("encryption-config.yaml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let identity = text.find("identity").unwrap();
    let secretbox = text.find("secretbox").unwrap();
    assert!(identity < secretbox, "{text}");

    // Twice: says so, changes nothing.
    let out = disable("text");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not enabled"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read_to_string(&node.manifest).unwrap(), original);
    assert_eq!(
        kubelet.restarts.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    drop(kubelet);
}

#[test]
fn cluster_rotate_moves_every_secret_to_a_new_key_gated_on_kube_apiserver() {
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let Some(kubelet) = Kubelet::start(&node.manifest, &base) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    for name in ["db", "api"] {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=password=plain-{name}"),
        ]);
    }
    enable_on(&node, &kubelet, &[]);
    let enabled_manifest = std::fs::read_to_string(&node.manifest).unwrap();
    let config = node.path("enc").join("encryption-config.yaml");
    let before = std::fs::read_to_string(&config).unwrap();
    let store = tls_store(&cluster);
    let old_key = |name: &str| {
        let stored = raw_get(&store, &format!("/registry/secrets/default/{name}")).unwrap();
        stored.starts_with(b"k8s:enc:secretbox:v1:key1:")
    };
    assert!(old_key("db") && old_key("api"));

    let m = node.manifest_arg();
    let out = atrest(&[
        "cluster",
        "rotate",
        "--manifest",
        &m,
        "--kubeconfig",
        kubelet.kubeconfig.to_str().unwrap(),
        "--timeout",
        "4m",
        "--poll",
        "500ms",
        "-o",
        "json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done", "{text}");
    let secrets = resource(&last["status"], "secrets");
    assert_eq!(
        (secrets["current"].as_u64(), secrets["stale"].as_u64()),
        (Some(2), Some(0))
    );

    // One key left in the configuration, a new one; every secret on it; the old key gone.
    let after = std::fs::read_to_string(&config).unwrap();
    assert_ne!(after, before);
    assert!(!after.contains("name: key1"), "{after}");
    // (Exit 0 or 3: kube-apiserver itself rewrites its masterleases in plain text.)
    let out = atrest(&["status", "--manifest", &m, "-o", "json"]);
    assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
    let status = stdout_json(&out);
    let secrets = resource(&status, "secrets");
    let keys = secrets["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{secrets:#}");
    assert_eq!(keys[0]["objects"], 2);
    assert_ne!(keys[0]["key"], "key1");
    assert!(!old_key("db") && !old_key("api"));
    let stored = raw_get(&store, "/registry/secrets/default/db").unwrap();
    assert!(stored.starts_with(b"k8s:enc:secretbox:v1:"));
    // kube-apiserver reads them; the manifest was not touched (no restart: it reloaded).
    for name in ["db", "api"] {
        assert_eq!(plain_secret(&kubectl, name), format!("plain-{name}"));
    }
    assert_eq!(
        std::fs::read_to_string(&node.manifest).unwrap(),
        enabled_manifest
    );
    assert_eq!(
        kubelet.restarts.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(kubelet);
}

/// A running `atrest kms-plugin` on `socket`, its key-encryption key in `kek` (created);
/// killed on drop.
struct KmsPlugin(std::process::Child);

impl KmsPlugin {
    fn start(socket: &Path, kek: &Path) -> Self {
        let log = std::fs::File::create(socket.with_extension("log")).unwrap();
        let child = std::process::Command::new(atrest_bin())
            .arg("kms-plugin")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--create-key")
            .arg("--kek-file")
            .arg(kek)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let plugin = KmsPlugin(child);
        for _ in 0..400 {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return plugin;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "the plugin did not listen:\n{}",
            std::fs::read_to_string(socket.with_extension("log")).unwrap_or_default()
        );
    }
}

impl Drop for KmsPlugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_enable_with_a_kms_v2_plugin() {
    let cluster = EtcdCluster::single_tls();
    let node = Node::new(&cluster, &minikube_manifest());
    let socket = node.path("kms.sock");
    let _plugin = KmsPlugin::start(&socket, &node.path("kek"));
    let base = write(node.root.path(), "identity.yaml", &identity_only("secrets"));
    let Some(kubelet) = Kubelet::start(&node.manifest, &base) else {
        return;
    };
    let kubectl = kubelet.kubectl(node.root.path());
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=plain-db",
    ]);
    let endpoint = format!("unix://{}", socket.display());
    let out = enable_on(
        &node,
        &kubelet,
        &[
            "--provider",
            "kms",
            "--kms-endpoint",
            &endpoint,
            "--kms-name",
            "node-kms",
            "-o",
            "json",
        ],
    );
    let report = stdout_json(&out);
    assert_eq!(report["changed"], true);
    let secrets = resource(&report["status"], "secrets");
    assert_eq!(
        (secrets["current"].as_u64(), secrets["stale"].as_u64()),
        (Some(1), Some(0))
    );

    // A kms v2 entry, no static key, written 0600.
    let config = std::fs::read_to_string(node.path("enc").join("encryption-config.yaml")).unwrap();
    assert!(config.contains("kms:"), "{config}");
    assert!(config.contains("apiVersion: v2"), "{config}");
    assert!(config.contains("name: node-kms"), "{config}");
    assert!(config.contains(&endpoint), "{config}");
    assert!(!config.contains("secret:"), "{config}");

    // The old secret and a new one are stored through the plugin, and kube-apiserver reads
    // both.
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "late",
        "--from-literal=password=plain-late",
    ]);
    let store = tls_store(&cluster);
    for name in ["db", "late"] {
        let stored = raw_get(&store, &format!("/registry/secrets/default/{name}")).unwrap();
        assert!(stored.starts_with(b"k8s:enc:kms:v2:node-kms:"), "{name}");
        assert!(!atrest_testkit::contains(
            &stored,
            format!("plain-{name}").as_bytes()
        ));
        assert_eq!(plain_secret(&kubectl, name), format!("plain-{name}"));
    }
    let out = atrest(&["status", "--manifest", &node.manifest_arg(), "-o", "json"]);
    assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
    let secrets = resource(&stdout_json(&out), "secrets").clone();
    assert_eq!(secrets["current"], 2, "{secrets:#}");
    assert_eq!(secrets["keys"][0]["provider"], "kms", "{secrets:#}");

    // Without an endpoint, or with one kube-apiserver cannot use: a usage error, nothing
    // changed.
    let other = Node::new(&cluster, &minikube_manifest());
    let original = std::fs::read_to_string(&other.manifest).unwrap();
    for bad in [
        &["--provider", "kms"][..],
        &["--provider", "kms", "--kms-endpoint", "/tmp/x.sock"],
    ] {
        let mut args = vec![
            "cluster",
            "enable",
            "--manifest",
            other.manifest.to_str().unwrap(),
        ];
        args.extend_from_slice(bad);
        args.extend_from_slice(&["--kubeconfig", kubelet.kubeconfig.to_str().unwrap()]);
        let out = atrest(&args);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("--kms-endpoint"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&other.manifest).unwrap(), original);
    }
    drop(kubelet);
}

#[test]
fn cluster_help_explains_each_subcommand() {
    let out = atrest(&["cluster", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for sub in ["enable", "disable", "rotate"] {
        assert!(text.contains(sub), "{text}");
    }
    for (sub, words) in [
        (
            "enable",
            &["--provider", "--kms-endpoint", "--kms-name", "hostPath"][..],
        ),
        (
            "disable",
            &["identity", "plain text", "volumeMount", "--kubeconfig"][..],
        ),
        (
            "rotate",
            &["atrest rotate", "/metrics", "--kubeconfig", "--purge"][..],
        ),
    ] {
        let out = atrest(&["cluster", sub, "--help"]);
        assert_eq!(code(&out), 0);
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        for w in words {
            assert!(help.contains(w), "cluster {sub} --help lacks {w}:\n{help}");
        }
    }
}
