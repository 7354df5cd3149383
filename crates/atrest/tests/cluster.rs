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
