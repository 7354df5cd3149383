//! The seed's walkthrough, end to end: `atrest serve` on a real etcd and on the embedded
//! store, driven by the real kubectl, with the stored bytes checked by etcdctl and by
//! `atrest decrypt`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::{contains, embedded_get, etcdctl_get, run_with_input, AtrestServer};

fn atrest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atrest"))
}

const IDENTITY_ONLY: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - identity: {}
";

/// The seed's configuration (its key, aescbc first, identity after).
fn seed_config(resources: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [{resources}]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=
      - identity: {{}}
"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `atrest decrypt` of stored bytes: (plaintext, stderr report).
fn decrypt(config: &Path, key: &str, stored: &[u8]) -> (Vec<u8>, String) {
    let out = run_with_input(
        Command::new(atrest_bin())
            .args(["decrypt", "--encryption-provider-config"])
            .arg(config)
            .args(["--key", key]),
        stored,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "atrest decrypt {key}: {err}");
    (out.stdout, err)
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pandas.awesome.bears.example
spec:
  group: awesome.bears.example
  scope: Namespaced
  names: {plural: pandas, singular: panda, kind: Panda}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

const PANDA: &str = "apiVersion: awesome.bears.example/v1
kind: Panda
metadata: {name: p1, namespace: learning}
spec: {bamboo: 3, secretRecipe: honey}
";

/// Where the raw bytes come from: etcd through etcdctl, or the embedded store's file.
enum Raw<'a> {
    Etcd(&'a [String]),
    Embedded(&'a Path),
}

impl Raw<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Raw::Etcd(endpoints) => etcdctl_get(endpoints, key),
            Raw::Embedded(data_dir) => embedded_get(data_dir, key),
        }
    }
}

fn walkthrough(store_args: &[&str], raw: Raw<'_>, dir: &Path) {
    let data = dir.join("data");
    let identity = write(dir, "identity.yaml", IDENTITY_ONLY);
    let seed = write(dir, "enc.yaml", &seed_config("secrets"));

    // 1. The problem: with identity only, etcd holds the Secret in plain text.
    let mut args = store_args.to_vec();
    let identity_arg = identity.to_str().unwrap();
    args.extend(["--encryption-provider-config", identity_arg]);
    let server = AtrestServer::start(&atrest_bin(), &data, &args);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "learning"]);
    k.ok(&[
        "-n",
        "learning",
        "create",
        "secret",
        "generic",
        "mysql-db-secret",
        "--from-literal=USER=user",
        "--from-literal=PASSWORD=user",
    ]);
    let old_key = "/registry/secrets/learning/mysql-db-secret";
    let stored = raw.get(old_key).expect("the secret is stored");
    assert!(
        stored.starts_with(b"k8s\0"),
        "plain protobuf: {:?}",
        &stored[..8.min(stored.len())]
    );
    assert!(contains(&stored, b"PASSWORD"));
    assert!(server.stop().success(), "clean exit on SIGTERM");

    // 2. The seed's configuration: new writes are encrypted, old data still reads.
    let mut args = store_args.to_vec();
    let seed_arg = seed.to_str().unwrap();
    args.extend(["--encryption-provider-config", seed_arg]);
    let server = AtrestServer::start(&atrest_bin(), &data, &args);
    let k = server.kubectl();
    k.ok(&[
        "-n",
        "learning",
        "create",
        "secret",
        "generic",
        "new-secret",
        "--from-literal=PASSWORD=hunter2",
    ]);
    let new_key = "/registry/secrets/learning/new-secret";
    let stored_new = raw.get(new_key).unwrap();
    assert!(
        stored_new.starts_with(b"k8s:enc:aescbc:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&stored_new[..20])
    );
    assert!(!contains(&stored_new, b"hunter2"));
    let (plain, report) = decrypt(&seed, new_key, &stored_new);
    assert!(plain.starts_with(b"k8s\0") && contains(&plain, b"hunter2"));
    assert!(
        report.contains("aescbc:key1") && !report.contains("stale"),
        "{report}"
    );

    let old = k.json(&["-n", "learning", "get", "secret", "mysql-db-secret"]);
    assert_eq!(old["data"]["PASSWORD"], "dXNlcg==");
    assert!(
        raw.get(old_key).unwrap().starts_with(b"k8s\0"),
        "old data is rewritten only on write"
    );
    let (_, report) = decrypt(&seed, old_key, &raw.get(old_key).unwrap());
    assert!(
        report.contains("identity") && report.contains("stale"),
        "{report}"
    );

    // Rewriting everything re-encrypts the old Secret (stale objects are rewritten even
    // when unchanged).
    let all = k.ok(&["get", "secrets", "-A", "-o", "json"]);
    k.ok_with_input(&["replace", "-f", "-"], all.as_bytes());
    let rewritten = raw.get(old_key).unwrap();
    assert!(rewritten.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    assert!(!contains(&rewritten, b"PASSWORD"));
    let (plain, report) = decrypt(&seed, old_key, &rewritten);
    assert!(contains(&plain, b"PASSWORD"));
    assert!(!report.contains("stale"), "{report}");
    // A second replace of unchanged, non-stale objects writes nothing.
    let before = k.json(&["-n", "learning", "get", "secret", "mysql-db-secret"])["metadata"]
        ["resourceVersion"]
        .clone();
    let all = k.ok(&["get", "secrets", "-A", "-o", "json"]);
    k.ok_with_input(&["replace", "-f", "-"], all.as_bytes());
    let after = k.json(&["-n", "learning", "get", "secret", "mysql-db-secret"])["metadata"]
        ["resourceVersion"]
        .clone();
    assert_eq!(before, after);
    assert!(server.stop().success());

    // 4. Custom resources and configmaps, under an explicit rule, `*.<group>` and `*.*`.
    for (i, rule) in [
        "configmaps, pandas.awesome.bears.example",
        "configmaps, '*.awesome.bears.example'",
        "'*.*'",
    ]
    .iter()
    .enumerate()
    {
        let cfg = write(dir, &format!("cr{i}.yaml"), &seed_config(rule));
        let mut args = store_args.to_vec();
        let cfg_arg = cfg.to_str().unwrap();
        args.extend(["--encryption-provider-config", cfg_arg]);
        let server = AtrestServer::start(&atrest_bin(), &data, &args);
        let k = server.kubectl();
        k.ok_with_input(&["apply", "-f", "-"], CRD.as_bytes());
        let panda_name = format!("p{i}");
        k.ok_with_input(
            &["apply", "-f", "-"],
            PANDA
                .replace("name: p1", &format!("name: {panda_name}"))
                .as_bytes(),
        );
        let cm_name = format!("cm{i}");
        k.ok(&[
            "-n",
            "learning",
            "create",
            "configmap",
            &cm_name,
            "--from-literal=recipe=honey",
        ]);
        let panda_key = format!("/registry/awesome.bears.example/pandas/learning/{panda_name}");
        let stored = raw
            .get(&panda_key)
            .expect("the custom resource is stored under /registry/<group>/<plural>/");
        assert!(
            stored.starts_with(b"k8s:enc:aescbc:v1:key1:"),
            "rule {rule}"
        );
        let (plain, _) = decrypt(&cfg, &panda_key, &stored);
        let object: serde_json::Value =
            serde_json::from_slice(&plain).expect("custom resources are stored as JSON");
        assert_eq!(object["spec"]["secretRecipe"], "honey");
        assert!(plain.ends_with(b"\n"));
        let cm_key = format!("/registry/configmaps/learning/{cm_name}");
        let stored = raw.get(&cm_key).unwrap();
        assert!(
            stored.starts_with(b"k8s:enc:aescbc:v1:key1:"),
            "rule {rule}"
        );
        assert!(contains(&decrypt(&cfg, &cm_key, &stored).0, b"honey"));
        let got = k.json(&["-n", "learning", "get", "pandas", &panda_name]);
        assert_eq!(got["spec"]["bamboo"], 3);
        assert!(server.stop().success());
    }
}

#[test]
fn walkthrough_on_etcd() {
    let etcd = EtcdCluster::single();
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let servers = endpoints.join(",");
    walkthrough(
        &["--etcd-servers", &servers],
        Raw::Etcd(&endpoints),
        dir.path(),
    );
}

#[test]
fn walkthrough_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    walkthrough(&[], Raw::Embedded(&data), dir.path());
}
