//! The manifest edit on a real minikube/kubeadm kube-apiserver manifest: every original
//! line is kept in order, exactly the seed's additions appear, and the result reads back.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use atrest_cluster::edit::{enable, EncryptionMount};
use atrest_cluster::ApiServerManifest;

fn fixture() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/manifests/minikube-kube-apiserver.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn minikube_manifest_gets_exactly_the_seed_additions() {
    let (path, text) = fixture();
    let before = ApiServerManifest::parse(&text, &path).unwrap();
    assert_eq!(
        before.etcd().unwrap().ca_file,
        Some(PathBuf::from("/var/lib/minikube/certs/etcd/ca.crt"))
    );
    let dir = PathBuf::from("/etc/kubernetes/enc");
    let config = dir.join("encryption-config.yaml");
    let out = enable(
        &text,
        &path,
        &EncryptionMount {
            dir: &dir,
            config_file: &config,
        },
        "encryption-config",
    )
    .unwrap();
    // Original lines, in order, with the new ones between them.
    let mut old = text.lines().peekable();
    let mut added = Vec::new();
    for line in out.lines() {
        if old.peek() == Some(&line) {
            old.next();
        } else {
            added.push(line);
        }
    }
    assert_eq!(old.next(), None, "an original line was lost");
    assert_eq!(
        added,
        [
            "    - --encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml",
            "    - --encryption-provider-config-automatic-reload=true",
            "    - mountPath: /etc/kubernetes/enc",
            "      name: encryption-config",
            "      readOnly: true",
            "  - hostPath:",
            "      path: /etc/kubernetes/enc",
            "      type: DirectoryOrCreate",
            "    name: encryption-config",
        ]
    );
    // The flags go after the last flag; the mount after the last mount; the volume last.
    let flag_at = out.find("--encryption-provider-config=").unwrap();
    assert!(out[..flag_at].ends_with("apiserver.key\n    - "));
    let after = ApiServerManifest::parse(&out, &path).unwrap();
    assert_eq!(after.args().len(), before.args().len() + 2);
    assert_eq!(after.mounts().len(), before.mounts().len() + 1);
    assert_eq!(after.volumes().len(), before.volumes().len() + 1);
    assert_eq!(
        after.encryption_provider_config().unwrap(),
        Some(config.clone())
    );
    assert_eq!(after.etcd().unwrap(), before.etcd().unwrap());
    assert!(
        out.ends_with("    name: encryption-config\nstatus: {}\n"),
        "{out}"
    );
}
