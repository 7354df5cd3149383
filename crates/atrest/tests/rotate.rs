//! Operations II: `atrest rotate` with live servers under load, killed at every step and
//! resumed, stopped by a server whose reload fails, and gated on a real kube-apiserver's
//! /metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use atrest_store::StoreConfig;
use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::upstream::KubeApiServer;
use atrest_testkit::{etcdctl_get, AtrestServer};
use common::*;
use serde_json::Value;

/// A server that re-reads its configuration every second.
fn reloading_server(dir: &Path, name: &str, endpoints: &str, cfg: &Path) -> AtrestServer {
    AtrestServer::start(
        &atrest_bin(),
        &dir.join(name),
        &[
            "--etcd-servers",
            endpoints,
            "--encryption-provider-config",
            cfg.to_str().unwrap(),
            "--encryption-provider-config-automatic-reload",
            "--encryption-provider-config-reload-interval",
            "1",
        ],
    )
}

/// Creates secrets through a server until `stop`, counting the acknowledged creates.
fn create_load(
    server: &AtrestServer,
    stop: Arc<AtomicBool>,
    created: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let url = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/secrets",
        server.port
    );
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let body = format!("{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"load-{i}\"}},\"data\":{{\"a\":\"Yg==\"}}}}");
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .arg("-H")
                .arg(format!("Authorization: Bearer {}", token.trim()))
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(&body)
                .arg(&url)
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout) == "201" {
                created.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

fn secretbox_config() -> String {
    config("secrets", &[provider("secretbox", "key1", K_SB)])
}

/// The first provider's key names of resources[0].
fn key_names(cfg: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(cfg).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["resources"][0]["providers"][0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

fn secrets_audit(endpoints: &str, cfg: &Path) -> Value {
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--etcd-servers",
        endpoints,
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
    ]);
    resource(&stdout_json(&out), "secrets").clone()
}

#[test]
fn rotate_with_two_reloading_servers_under_writes() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "enc.yaml", &secretbox_config());
    let store = StoreConfig::etcd(cluster.endpoints());
    let objects: Vec<_> = (0..500)
        .map(|i| {
            let name = format!("s{i:04}");
            (
                secrets(),
                "default",
                name.clone(),
                secret_bytes("default", &name, b"x"),
            )
        })
        .collect();
    seed(&store, "/registry", &secretbox_config(), &objects);
    let a = reloading_server(dir.path(), "a", &endpoints, &cfg);
    let b = reloading_server(dir.path(), "b", &endpoints, &cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let loads = [create_load(&a, stop.clone(), created.clone())];
    let out = atrest(&[
        "rotate",
        "-o",
        "json",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
        "--timeout",
        "60s",
        "--poll",
        "500ms",
    ]);
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().unwrap();
    }
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let converged: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "converged")
        .collect();
    assert_eq!(converged.len(), 3, "three waits: {events:#?}");
    assert!(converged.iter().all(|e| e["data"]["servers"] == 2));
    assert_eq!(events.last().unwrap()["event"], "done");
    // The old key is gone, one new key writes, nothing was lost, everything is on it.
    let names = key_names(&cfg);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_ne!(names[0], "key1");
    let sec = secrets_audit(&endpoints, &cfg);
    let expected = 500 + created.load(Ordering::Relaxed);
    assert_eq!(counts(&sec), [expected, expected, 0, 0, 0], "{sec:#}");
    assert_eq!(sec["writeKey"]["key"].as_str().unwrap(), names[0]);
    // Both servers read every object with the new file alone.
    for server in [&a, &b] {
        let listed = server.kubectl().json(&["get", "secrets", "--chunk-size=0"]);
        assert_eq!(listed["items"].as_array().unwrap().len() as u64, expected);
    }
    // The backup beside the file is the original, private.
    let backups: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("enc.yaml.bak-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&backups[0]).unwrap(),
        secretbox_config()
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [&cfg, &backups[0]] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn rotate_killed_at_every_step_resumes_to_the_end() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "enc.yaml", &secretbox_config());
    let objects: Vec<_> = (0..2000)
        .map(|i| {
            let name = format!("s{i:04}");
            (
                secrets(),
                "default",
                name.clone(),
                secret_bytes("default", &name, b"x"),
            )
        })
        .collect();
    seed(
        &StoreConfig::etcd(cluster.endpoints()),
        "/registry",
        &secretbox_config(),
        &objects,
    );
    let server = reloading_server(dir.path(), "a", &endpoints, &cfg);
    let args = [
        "rotate",
        "-o",
        "json",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
        "--timeout",
        "60s",
        "--poll",
        "300ms",
    ];
    // Kill after the 1st, 2nd, ... step event of each run (a resumed run starts at the step
    // the killed one was in), until a run finishes.
    let mut kills = 0;
    for boundary in 1..=12 {
        let mut child = Command::new(atrest_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        let mut finished = false;
        for line in BufReader::new(stdout).lines() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if event["event"] == "done" {
                finished = true;
                break;
            }
            if matches!(
                event["event"].as_str(),
                Some("started" | "wrote" | "converged" | "reencrypted")
            ) {
                seen += 1;
                if seen == boundary % 3 + 1 {
                    let _ = child.kill();
                    kills += 1;
                    break;
                }
            }
        }
        let _ = child.wait();
        // Whatever was interrupted: every object is readable with the file as it is now,
        // and the server still reads them.
        let sec = secrets_audit(&endpoints, &cfg);
        assert_eq!(sec["objects"], 2000, "{sec:#}");
        assert_eq!(sec["undecryptable"], 0, "after kill {kills}: {sec:#}");
        let stored = etcdctl_get(&cluster.endpoints(), "/registry/secrets/default/s0001").unwrap();
        assert!(stored.starts_with(b"k8s:enc:secretbox:v1:"));
        if finished {
            break;
        }
    }
    assert!(
        kills >= 3,
        "the rotation was interrupted at several steps ({kills})"
    );
    let out = atrest(&args);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let names = key_names(&cfg);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_ne!(names[0], "key1");
    let sec = secrets_audit(&endpoints, &cfg);
    assert_eq!(counts(&sec), [2000, 2000, 0, 0, 0]);
    assert_eq!(
        server.kubectl().json(&["get", "secret", "s1999"])["data"]["v"],
        "eA=="
    );
}

#[test]
fn a_server_whose_reload_fails_stops_the_rotation() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "enc.yaml", &secretbox_config());
    // Server b reads a copy of the file; the copy is broken once the rotation is under way.
    let copy = write(dir.path(), "copy.yaml", &secretbox_config());
    let _a = reloading_server(dir.path(), "a", &endpoints, &cfg);
    let b = reloading_server(dir.path(), "b", &endpoints, &copy);
    std::fs::write(
        &copy,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
    )
    .unwrap();
    let out = atrest(&[
        "rotate",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
        "--timeout",
        "60s",
        "--poll",
        "300ms",
    ]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to load") && err.contains("atrest server"),
        "{err}"
    );
    assert!(
        err.contains("resources"),
        "the server's own error is shown: {err}"
    );
    // Stopped after adding the read-only key: nothing writes with it yet.
    let names = key_names(&cfg);
    assert_eq!(names[0], "key1", "{names:?}");
    assert_eq!(names.len(), 2);
    drop(b);
}

#[test]
fn rotate_gated_on_a_real_kube_apiserver() {
    let cluster = EtcdCluster::single();
    let etcd = cluster.endpoints()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "enc.yaml",
        &config("secrets", &[provider("aesgcm", "key1", K_NEW)]),
    );
    let Some(kas) = KubeApiServer::start(
        &etcd,
        &cfg,
        &["--encryption-provider-config-automatic-reload=true"],
    ) else {
        return;
    };
    // An atrest server beside it, on the same etcd and file.
    let atrest_server = reloading_server(dir.path(), "a", &etcd, &cfg);
    let k = kas.kubectl();
    for i in 0..10 {
        k.ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=p=v{i}"),
        ]);
    }
    let kubeconfig = kas.kubeconfig();
    // kube-apiserver polls its file once a minute: give each wait two minutes.
    let out = atrest(&[
        "rotate",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--timeout",
        "150s",
    ]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        kas.log_text()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let converged: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "converged")
        .collect();
    assert_eq!(converged.len(), 3, "{events:#?}");
    assert!(
        converged.iter().all(|e| e["data"]["servers"] == 2),
        "{converged:#?}"
    );
    let names = key_names(&cfg);
    assert_eq!(names.len(), 1);
    assert_ne!(names[0], "key1");
    let stored = etcdctl_get(&cluster.endpoints(), "/registry/secrets/default/s3").unwrap();
    assert!(stored.starts_with(format!("k8s:enc:aesgcm:v1:{}:", names[0]).as_bytes()));
    // kube-apiserver reads everything with the new file in force.
    let listed = k.json(&["get", "secrets"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 10);
    assert_eq!(k.json(&["get", "secret", "s7"])["data"]["p"], "djc=");
    assert_eq!(
        atrest_server.kubectl().json(&["get", "secret", "s7"])["data"]["p"],
        "djc="
    );
    drop(atrest_server);
    drop(kas);
}
