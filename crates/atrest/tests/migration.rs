//! StorageVersionMigration through `atrest serve`, as a user runs it: `kubectl apply` a
//! migration, `kubectl wait --for=condition=Succeeded`, and the store shows every object on
//! the write key; upstream's migrator metrics count the work. On etcd and the embedded store.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::{AtrestServer, Kubectl};
use common::*;

const MIGRATION: &str = "apiVersion: storagemigration.k8s.io/v1beta1
kind: StorageVersionMigration
metadata:
  name: secrets-to-secretbox
spec:
  resource:
    group: \"\"
    resource: secrets
";

fn metrics(server: &AtrestServer) -> String {
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(server.data_dir.join("pki/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg(format!("https://127.0.0.1:{}/metrics", server.port))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn status_json(store_args: &[String], cfg: &Path) -> serde_json::Value {
    let mut args = vec!["status", "-o", "json"];
    args.extend(strs(store_args));
    args.extend(["--encryption-provider-config", cfg.to_str().unwrap()]);
    stdout_json(&atrest(&args))
}

/// `etcd`: endpoints, or the embedded store.
fn migrate(etcd: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (store_args, extra_serve_args): (Vec<String>, Vec<String>) = match &etcd {
        Some(e) => (
            vec!["--etcd-servers".into(), e.clone()],
            vec!["--etcd-servers".into(), e.clone()],
        ),
        None => (
            vec!["--data-dir".into(), data.display().to_string()],
            Vec::new(),
        ),
    };
    // Plaintext first: every secret written now is stored as written.
    let cfg = write(
        dir.path(),
        "config.yaml",
        &identity_only("secrets").replace(
            "      - identity: {}\n",
            &format!(
                "      - identity: {{}}\n{}",
                provider("secretbox", "key1", K_SB)
            ),
        ),
    );
    let mut serve_args = vec![
        "--encryption-provider-config".to_string(),
        cfg.display().to_string(),
        "--encryption-provider-config-automatic-reload".into(),
        "--encryption-provider-config-reload-interval".into(),
        "1".into(),
    ];
    serve_args.extend(extra_serve_args);
    let server = AtrestServer::start(&atrest_bin(), &data, &strs(&serve_args));
    let kubectl = Kubectl::new(&data.join("admin.kubeconfig"), &dir.path().join("cache"));
    for i in 0..25 {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            "--from-literal=password=hunter2",
        ]);
    }
    let before = status_json(&store_args, &cfg);
    assert_eq!(counts(resource(&before, "secrets")), [25, 0, 0, 25, 0]);

    // Promote secretbox; wait until the server has loaded it (its heartbeat says so).
    write(
        dir.path(),
        "config.yaml",
        &config("secrets", &[provider("secretbox", "key1", K_SB)]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_json(&store_args, &cfg);
        if s["servers"][0]["matchesConfig"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never reloaded: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // What a user does.
    let listed = kubectl.ok(&["api-resources", "--api-group=storagemigration.k8s.io"]);
    assert!(listed.contains("storageversionmigrations"), "{listed}");
    kubectl.ok_with_input(&["apply", "-f", "-"], MIGRATION.as_bytes());
    let waited = kubectl.ok(&[
        "wait",
        "--for=condition=Succeeded",
        "storageversionmigration/secrets-to-secretbox",
        "--timeout=120s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    let object = kubectl.json(&["get", "storageversionmigration", "secrets-to-secretbox"]);
    let conditions = object["status"]["conditions"].as_array().unwrap();
    let succeeded = conditions
        .iter()
        .find(|c| c["type"] == "Succeeded")
        .unwrap();
    assert_eq!(succeeded["status"], "True");
    assert!(
        succeeded["message"]
            .as_str()
            .unwrap()
            .starts_with("25 of 25 objects rewritten"),
        "{succeeded}"
    );
    let running = conditions.iter().find(|c| c["type"] == "Running").unwrap();
    assert_eq!(running["status"], "False");
    assert!(object["status"]["resourceVersion"].as_str().is_some());

    // The store agrees: nothing stale, nothing plaintext; the count is unchanged.
    let after = status_json(&store_args, &cfg);
    assert_eq!(counts(resource(&after, "secrets")), [25, 25, 0, 0, 0]);
    assert_eq!(after["upToDate"], true);
    assert_eq!(
        kubectl.ok(&["get", "secret", "s7", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );

    // Upstream's migrator metrics.
    let text = metrics(&server);
    assert_eq!(
        sample(
            &text,
            "storage_migrator_core_migrator_migrated_objects_total{resource=\"secrets\"}"
        ),
        Some(25.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "storage_migrator_core_migrator_remaining_objects_total{resource=\"secrets\"}"
        ),
        Some(0.0)
    );

    // A migration that cannot finish says why: one secret on a key the configuration lacks.
    let lost = secret_bytes("default", "lost", b"x");
    let store_config = match &etcd {
        Some(e) => atrest_store::StoreConfig::Etcd {
            endpoints: e.split(',').map(str::to_string).collect(),
            prefix: "/registry".into(),
            tls: None,
        },
        None => atrest_store::StoreConfig::Embedded {
            data_dir: data.clone(),
            compaction: atrest_store::CompactionPolicy::disabled(),
        },
    };
    seed(
        &store_config,
        "/registry",
        &config("secrets", &[provider("aesgcm", "gone", K_GONE)]),
        &[(secrets(), "default", "lost".into(), lost)],
    );
    kubectl.ok_with_input(
        &["apply", "-f", "-"],
        MIGRATION
            .replace("secrets-to-secretbox", "again")
            .as_bytes(),
    );
    kubectl.ok(&[
        "wait",
        "--for=condition=Failed",
        "storageversionmigration/again",
        "--timeout=120s",
    ]);
    let failed = kubectl.json(&["get", "storageversionmigration", "again"]);
    let message = failed["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("1 objects cannot be read")
            && message.contains("/registry/secrets/default/lost"),
        "{message}"
    );
}

#[test]
fn storage_version_migration_with_kubectl_on_the_embedded_store() {
    migrate(None);
}

#[test]
fn storage_version_migration_with_kubectl_on_etcd() {
    let cluster = EtcdCluster::single();
    migrate(Some(cluster.endpoints().join(",")));
}
