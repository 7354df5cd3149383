//! Helpers the end-to-end suites share: configurations, seeding a store, running the
//! binary and reading its JSON.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use atrest_encryption::kms::NoKmsConnector;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use atrest_store::{CompactionPolicy, StoreConfig};
use atrest_testkit::etcd::EtcdCluster;
use serde_json::{json, Value};

pub const K_NEW: &str = "er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=";
pub const K_SB: &str = "N/hsuQeHOMNw8H6NO1g7rTjCdfNK7QVq1uqO7KQZL6E=";
pub const K_OLD: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
pub const K_GONE: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

pub fn atrest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atrest"))
}

/// One provider block with one key.
pub fn provider(kind: &str, name: &str, secret: &str) -> String {
    format!("      - {kind}:\n          keys:\n            - name: {name}\n              secret: {secret}\n")
}

/// A configuration for `resources` with these provider blocks (identity last).
pub fn config(resources: &str, providers: &[String]) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [{resources}]\n    providers:\n{}      - identity: {{}}\n",
        providers.concat()
    )
}

pub fn identity_only(resources: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [{resources}]\n    providers:\n      - identity: {{}}\n"
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn chain(yaml: &str) -> ProviderChain {
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "test.yaml", ParseOptions::default()).unwrap();
    ProviderChain::build(&config, &NoKmsConnector).unwrap()
}

/// A Secret as kube-apiserver stores it (protobuf), so servers can read what tests seed.
pub fn secret_bytes(ns: &str, name: &str, payload: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let object = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("00000000-0000-0000-0000-{:012}", name.len()),
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "data": {"v": base64::engine::general_purpose::STANDARD.encode(payload)},
        "type": "Opaque",
    });
    atrest_api::codec::encode_protobuf(&object).unwrap()
}

/// Writes objects straight into a store, encrypted with `yaml`'s write providers.
pub fn seed(
    store: &StoreConfig,
    prefix: &str,
    yaml: &str,
    objects: &[(GroupResource, &str, String, Vec<u8>)],
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let raw = atrest_store::open(store.clone()).await.unwrap();
        let storage =
            EncryptedStore::new(raw, ChainHandle::new(chain(yaml)), KeyPrefix::new(prefix));
        let writes = objects.iter().map(|(gr, ns, name, bytes)| {
            let storage = storage.clone();
            async move {
                let key = storage.key(gr, Some(ns), name).unwrap();
                storage.create(&key, bytes, None).await.unwrap();
            }
        });
        use futures::StreamExt;
        let mut writes = futures::stream::iter(writes).buffer_unordered(32);
        while writes.next().await.is_some() {}
    });
}

/// The embedded store's current revision (it moves with every write).
pub fn embedded_revision(data_dir: &Path) -> i64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = atrest_store::open(StoreConfig::Embedded {
            data_dir: data_dir.to_path_buf(),
            compaction: CompactionPolicy::disabled(),
        })
        .await
        .unwrap();
        store.current_revision().await.unwrap()
    })
}

pub fn secrets() -> GroupResource {
    GroupResource::new("", "secrets")
}

pub fn configmaps() -> GroupResource {
    GroupResource::new("", "configmaps")
}

pub fn atrest(args: &[&str]) -> Output {
    Command::new(atrest_bin()).args(args).output().unwrap()
}

pub fn atrest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(atrest_bin());
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn resource<'a>(audit: &'a Value, name: &str) -> &'a Value {
    audit["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no {name} in {audit:#}"))
}

pub fn counts(r: &Value) -> [u64; 5] {
    ["objects", "current", "stale", "plaintext", "undecryptable"].map(|f| r[f].as_u64().unwrap())
}

pub fn tls_args(cluster: &EtcdCluster) -> Vec<String> {
    let tls = cluster.tls.as_ref().unwrap();
    vec![
        "--etcd-servers".into(),
        cluster.endpoints().join(","),
        "--etcd-cafile".into(),
        tls.ca_file.display().to_string(),
        "--etcd-certfile".into(),
        tls.cert_file.display().to_string(),
        "--etcd-keyfile".into(),
        tls.key_file.display().to_string(),
    ]
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A configuration encrypting secrets with aesgcm under `K_NEW` (key name `k1`), written
/// 0600 as `enc.yaml` in `dir`.
pub fn aesgcm_secrets_config(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = write(
        dir,
        "enc.yaml",
        &config("secrets", &[provider("aesgcm", "k1", K_NEW)]),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The events of a `kubectl get --watch --output-watch-events -o json` transcript so far; an
/// event kubectl is still writing is left for the next read.
pub fn watch_events(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}
