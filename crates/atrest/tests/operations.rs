//! Operations I: `atrest status`, `atrest get` and `atrest reencrypt` on real stores (etcd
//! with TLS client certificates, the embedded store), beside running servers, and on an
//! etcd that the real kube-apiserver wrote.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_encryption::GroupResource;
use atrest_store::{CompactionPolicy, StoreConfig, TlsFiles};
use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::upstream::KubeApiServer;
use atrest_testkit::{embedded_get, etcdctl_get, AtrestServer};
use serde_json::{json, Value};

use common::*;
#[test]
fn status_and_reencrypt_on_etcd_with_client_certificates() {
    let cluster = EtcdCluster::single_tls();
    let tls = cluster.tls.clone().unwrap();
    let store = StoreConfig::Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/registry".into(),
        tls: Some(TlsFiles {
            ca_file: Some(tls.ca_file.clone()),
            cert_file: Some(tls.cert_file.clone()),
            key_file: Some(tls.key_file.clone()),
        }),
    };
    let dir = tempfile::tempdir().unwrap();
    // The configuration the cluster runs with now: aesgcm writes; secretbox, aescbc and
    // plaintext are read. Configmaps are not covered.
    let current = config(
        "secrets",
        &[
            provider("aesgcm", "new", K_NEW),
            provider("secretbox", "sb", K_SB),
            provider("aescbc", "old", K_OLD),
        ],
    );
    let current_file = write(dir.path(), "current.yaml", &current);
    let s = |name: &str| {
        (
            secrets(),
            "ns",
            name.to_string(),
            secret_bytes("ns", name, b"x"),
        )
    };
    seed(
        &store,
        "/registry",
        &current,
        &[s("gcm1"), s("gcm2"), s("gcm3")],
    );
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("secretbox", "sb", K_SB)]),
        &[s("sb1"), s("sb2")],
    );
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("aescbc", "old", K_OLD)]),
        &[s("cbc1"), s("cbc2")],
    );
    seed(
        &store,
        "/registry",
        &identity_only("secrets"),
        &[s("plain1")],
    );
    // Written with a key that is gone from the configuration.
    seed(
        &store,
        "/registry",
        &config("secrets", &[provider("aesgcm", "gone", K_GONE)]),
        &[s("lost")],
    );
    seed(
        &store,
        "/registry",
        &identity_only("configmaps"),
        &[
            (configmaps(), "ns", "c1".into(), b"{}".to_vec()),
            (configmaps(), "ns", "c2".into(), b"{}".to_vec()),
        ],
    );

    let mut args = vec!["status".to_string(), "-o".into(), "json".into()];
    args.extend(tls_args(&cluster));
    args.extend([
        "--encryption-provider-config".into(),
        current_file.display().to_string(),
    ]);
    let out = atrest(&strs(&args));
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    let audit = stdout_json(&out);
    assert_eq!(audit["upToDate"], false);
    let sec = resource(&audit, "secrets");
    assert_eq!(counts(sec), [9, 3, 4, 1, 1]);
    assert_eq!(sec["covered"], true);
    assert_eq!(sec["writeKey"], json!({"provider": "aesgcm", "key": "new"}));
    let keys: Vec<(String, u64, bool)> = sec["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                format!(
                    "{}:{}",
                    k["provider"].as_str().unwrap(),
                    k["key"].as_str().unwrap_or("")
                ),
                k["objects"].as_u64().unwrap(),
                k["write"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("aescbc:old".to_string(), 2, false),
            ("aesgcm:new".to_string(), 3, true),
            ("identity:".to_string(), 1, false),
            ("secretbox:sb".to_string(), 2, false),
        ]
    );
    let lost = &sec["undecryptableKeys"][0];
    assert_eq!(lost["key"], "/registry/secrets/ns/lost");
    assert!(lost["reason"].as_str().unwrap().contains("gone"), "{lost}");
    let cms = resource(&audit, "configmaps");
    assert_eq!(cms["covered"], false);
    assert_eq!(counts(cms), [2, 0, 0, 2, 0]);

    // The same through etcdctl's environment variables, with the text table.
    let endpoints = cluster.endpoints().join(",");
    let env = [
        ("ETCDCTL_ENDPOINTS", endpoints.as_str()),
        ("ETCDCTL_CACERT", tls.ca_file.to_str().unwrap()),
        ("ETCDCTL_CERT", tls.cert_file.to_str().unwrap()),
        ("ETCDCTL_KEY", tls.key_file.to_str().unwrap()),
    ];
    let cfg = current_file.to_str().unwrap();
    let out = atrest_env(&["status", "--encryption-provider-config", cfg], &env);
    assert_eq!(code(&out), 3);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("NOT up to date"), "{table}");
    assert!(table.contains("/registry/secrets/ns/lost"), "{table}");

    // Rewrite: everything readable moves to aesgcm:new; the lost value stays (exit 3).
    let out = atrest_env(
        &[
            "reencrypt",
            "-o",
            "json",
            "--encryption-provider-config",
            cfg,
        ],
        &env,
    );
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(report["rewritten"], 5, "{report:#}");
    assert_eq!(
        report["alreadyCurrent"], 5,
        "3 secrets and 2 uncovered configmaps: {report:#}"
    );
    assert_eq!(report["unreadable"], 1, "{report:#}");
    assert_eq!(report["remainingStale"], 0, "{report:#}");
    let out = atrest_env(
        &["status", "-o", "json", "--encryption-provider-config", cfg],
        &env,
    );
    let audit = stdout_json(&out);
    assert_eq!(counts(resource(&audit, "secrets")), [9, 8, 0, 0, 1]);
    for name in ["sb1", "cbc2", "plain1"] {
        let stored = etcdctl_tls(
            &cluster,
            &[
                "get",
                &format!("/registry/secrets/ns/{name}"),
                "--print-value-only",
            ],
        );
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:new:"), "{name}");
    }
    // Remove the value nobody can read: now everything covered is current (exit 0), and
    // the uncovered configmaps are still reported as plaintext.
    etcdctl_tls(&cluster, &["del", "/registry/secrets/ns/lost"]);
    let out = atrest_env(
        &["status", "-o", "json", "--encryption-provider-config", cfg],
        &env,
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let audit = stdout_json(&out);
    assert_eq!(audit["upToDate"], true);
    assert_eq!(counts(resource(&audit, "configmaps")), [2, 0, 0, 2, 0]);
}

fn etcdctl_tls(cluster: &EtcdCluster, args: &[&str]) -> Vec<u8> {
    let tls = cluster.tls.as_ref().unwrap();
    let out = Command::new(atrest_testkit::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .arg("--cacert")
        .arg(&tls.ca_file)
        .arg("--cert")
        .arg(&tls.cert_file)
        .arg("--key")
        .arg(&tls.key_file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn get_shows_each_provider_unknown_kinds_and_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = StoreConfig::Embedded {
        data_dir: data.clone(),
        compaction: CompactionPolicy::disabled(),
    };
    let read = config(
        "secrets, deployments.apps",
        &[
            provider("aesgcm", "new", K_NEW),
            provider("secretbox", "sb", K_SB),
            provider("aescbc", "old", K_OLD),
        ],
    );
    let read_file = write(dir.path(), "read.yaml", &read);
    for (name, yaml) in [
        (
            "gcm",
            config("secrets", &[provider("aesgcm", "new", K_NEW)]),
        ),
        (
            "sb",
            config("secrets", &[provider("secretbox", "sb", K_SB)]),
        ),
        (
            "cbc",
            config("secrets", &[provider("aescbc", "old", K_OLD)]),
        ),
        ("plain", identity_only("secrets")),
    ] {
        seed(
            &store,
            "/registry",
            &yaml,
            &[(
                secrets(),
                "ns",
                name.into(),
                secret_bytes("ns", name, name.as_bytes()),
            )],
        );
    }
    // A kind atrest does not model, as kube-apiserver stores it: k8s\0 + Unknown.
    let mut deployment = b"k8s\0".to_vec();
    let type_meta = [&[0x0a, 0x07][..], b"apps/v1", &[0x12, 0x0a], b"Deployment"].concat();
    let raw: &[u8] = &[0x0a, 0x05, 0x0a, 0x03, b'w', b'e', b'b'];
    deployment.push(0x0a);
    deployment.push(type_meta.len() as u8);
    deployment.extend_from_slice(&type_meta);
    deployment.push(0x12);
    deployment.push(raw.len() as u8);
    deployment.extend_from_slice(raw);
    deployment.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
    seed(
        &store,
        "/registry",
        &config("deployments.apps", &[provider("secretbox", "sb", K_SB)]),
        &[(
            GroupResource::new("apps", "deployments"),
            "ns",
            "web".into(),
            deployment,
        )],
    );
    let data_arg = data.display().to_string();
    let cfg = read_file.display().to_string();
    let get = |key: &str, output: &str| {
        atrest(&[
            "get",
            key,
            "-o",
            output,
            "--data-dir",
            &data_arg,
            "--encryption-provider-config",
            &cfg,
        ])
    };
    for (name, provider, key, stale) in [
        ("gcm", "aesgcm", Some("new"), false),
        ("sb", "secretbox", Some("sb"), true),
        ("cbc", "aescbc", Some("old"), true),
        ("plain", "identity", None, true),
    ] {
        let out = get(&format!("/registry/secrets/ns/{name}"), "json");
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let shown = stdout_json(&out);
        assert_eq!(shown["provider"]["provider"], provider, "{name}");
        assert_eq!(shown["provider"]["key"].as_str(), key, "{name}");
        assert_eq!(shown["stale"], stale, "{name}");
        assert_eq!(shown["object"]["kind"], "Secret");
        assert_eq!(shown["object"]["metadata"]["name"], name);
        use base64::Engine as _;
        assert_eq!(
            shown["object"]["data"]["v"],
            base64::engine::general_purpose::STANDARD.encode(name)
        );
        assert_eq!(
            shown["object"]["metadata"]["resourceVersion"],
            shown["modRevision"].to_string()
        );
        let yaml = get(&format!("/registry/secrets/ns/{name}"), "yaml");
        let text = String::from_utf8_lossy(&yaml.stdout);
        assert!(text.contains("kind: Secret"), "{text}");
        assert!(text.contains(&format!("# provider: {provider}")), "{text}");
    }
    let out = get("/registry/deployments/ns/web", "json");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let shown = stdout_json(&out);
    assert_eq!(shown["resource"], "deployments.apps");
    assert_eq!(shown["decoding"], "unknownKind");
    assert_eq!(shown["object"]["kind"], "Deployment");
    assert_eq!(shown["object"]["apiVersion"], "apps/v1");
    assert_eq!(shown["object"]["raw"][0]["message"][0]["string"], "web");
    // -o raw is the stored bytes as etcdctl prints them.
    let out = get("/registry/secrets/ns/sb", "raw");
    let mut expected = embedded_get(&data, "/registry/secrets/ns/sb").unwrap();
    assert!(expected.starts_with(b"k8s:enc:secretbox:v1:sb:"));
    expected.push(b'\n');
    assert_eq!(out.stdout, expected);

    // Bad input: one line naming what and where, exit 1, nothing written.
    let before = embedded_revision(&data);
    let one_line_error = |out: &Output, needle: &str| {
        assert_eq!(code(out), 1, "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
    };
    one_line_error(
        &get("/elsewhere/secrets/ns/gcm", "yaml"),
        "/elsewhere/secrets/ns/gcm",
    );
    one_line_error(&get("/registry/secrets/ns/missing", "yaml"), "not found");
    let no_key = write(
        dir.path(),
        "nokey.yaml",
        &config("secrets", &[provider("aesgcm", "new", K_NEW)]),
    );
    let out = atrest(&[
        "get",
        "/registry/secrets/ns/sb",
        "--data-dir",
        &data_arg,
        "--encryption-provider-config",
        no_key.to_str().unwrap(),
    ]);
    one_line_error(&out, "/registry/secrets/ns/sb");
    let invalid = write(dir.path(), "invalid.yaml", "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: k\n              secret: c2hvcnQ=\n");
    let out = atrest(&[
        "status",
        "--data-dir",
        &data_arg,
        "--encryption-provider-config",
        invalid.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("resources[0].providers[0].aesgcm.keys[0].secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = atrest(&[
        "status",
        "--etcd-servers",
        "http://127.0.0.1:1",
        "--encryption-provider-config",
        &cfg,
    ]);
    one_line_error(&out, "127.0.0.1:1");
    assert_eq!(embedded_revision(&data), before, "nothing was written");
}

/// Creates, updates and deletes secrets through the API server until `stop`, recording
/// what each acknowledged write left: the final state the store must hold.
type Record = Arc<Mutex<std::collections::BTreeMap<String, Option<String>>>>;

fn load(port: u16, token: String, names: Vec<String>, stop: Arc<AtomicBool>, record: Record) {
    let base = format!("https://127.0.0.1:{port}/api/v1/namespaces/load/secrets");
    let curl = |method: &str, url: &str, body: Option<&str>, content_type: &str| -> bool {
        let mut c = Command::new("curl");
        c.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg("-H")
            .arg(format!("Content-Type: {content_type}"))
            .arg(url);
        if let Some(b) = body {
            c.arg("--data-binary").arg(b);
        }
        let out = c.output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout).to_string();
        status.starts_with('2')
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for (i, name) in names.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match (round as usize + i) % 3 {
                0 => {
                    let v = format!("r{round}");
                    let patch = format!("{{\"metadata\":{{\"labels\":{{\"v\":\"{v}\"}}}}}}");
                    if curl(
                        "PATCH",
                        &format!("{base}/{name}"),
                        Some(&patch),
                        "application/merge-patch+json",
                    ) {
                        record.lock().unwrap().insert(name.clone(), Some(v));
                    }
                }
                1 => {
                    if curl(
                        "DELETE",
                        &format!("{base}/{name}"),
                        None,
                        "application/json",
                    ) {
                        record.lock().unwrap().insert(name.clone(), None);
                    }
                }
                _ => {
                    let v = format!("r{round}");
                    let body = format!("{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"v\":\"{v}\"}}}},\"data\":{{\"a\":\"Yg==\"}}}}");
                    if curl("POST", &base, Some(&body), "application/json") {
                        record.lock().unwrap().insert(name.clone(), Some(v));
                    }
                }
            }
        }
    }
}

#[test]
fn reencrypt_beside_a_running_server_under_load_loses_nothing() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let old = config("secrets", &[provider("secretbox", "k1", K_SB)]);
    let new = config(
        "secrets",
        &[
            provider("aesgcm", "k2", K_NEW),
            provider("secretbox", "k1", K_SB),
        ],
    );
    let new_file = write(dir.path(), "new.yaml", &new);
    let store = StoreConfig::etcd(cluster.endpoints());
    // Old data: 5,000 secrets under the old key, plus the namespace the load writes in.
    let objects: Vec<_> = (0..5000)
        .map(|i| {
            let name = format!("s{i:05}");
            let bytes = secret_bytes("bulk", &name, &[b'x'; 512]);
            (secrets(), "bulk", name, bytes)
        })
        .collect();
    seed(&store, "/registry", &old, &objects);
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &endpoints,
            "--encryption-provider-config",
            new_file.to_str().unwrap(),
        ],
    );
    let k = server.kubectl();
    k.ok(&["create", "namespace", "load"]);
    for i in 0..20 {
        k.ok(&[
            "-n",
            "load",
            "create",
            "secret",
            "generic",
            &format!("l{i}"),
            "--from-literal=a=b",
        ]);
    }
    // Objects of the load namespace are also left stale, so the rewrite and the load race
    // on the same keys.
    let stale_load = config("secrets", &[provider("secretbox", "k1", K_SB)]);
    let load_objects: Vec<_> = (20..40)
        .map(|i| {
            let name = format!("l{i}");
            (
                secrets(),
                "load",
                name.clone(),
                secret_bytes("load", &name, b"b"),
            )
        })
        .collect();
    seed(&store, "/registry", &stale_load, &load_objects);
    let names: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
    let record = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    for name in &names {
        record
            .lock()
            .unwrap()
            .insert(name.clone(), Some(String::new()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let loaders: Vec<_> = (0..2)
        .map(|t| {
            let names: Vec<String> = names.iter().skip(t).step_by(2).cloned().collect();
            let (stop, record, token, port) =
                (stop.clone(), record.clone(), token.clone(), server.port);
            std::thread::spawn(move || load(port, token, names, stop, record))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let cfg = new_file.to_str().unwrap();
    let out = atrest(&[
        "reencrypt",
        "-o",
        "json",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert!(report["rewritten"].as_u64().unwrap() >= 5000, "{report:#}");
    // Nothing stale is left, and every object is what its last acknowledged write made it.
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let audit = stdout_json(&out);
    let sec = resource(&audit, "secrets");
    assert_eq!(sec["stale"], 0);
    let bulk = k.json(&["-n", "bulk", "get", "secrets", "--chunk-size=0"]);
    assert_eq!(bulk["items"].as_array().unwrap().len(), 5000);
    let live = k.json(&["-n", "load", "get", "secrets"]);
    let mut seen = std::collections::BTreeMap::new();
    for item in live["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap().to_string();
        let v = item["metadata"]["labels"]["v"]
            .as_str()
            .unwrap_or("")
            .to_string();
        seen.insert(name, Some(v));
    }
    let record = record.lock().unwrap();
    for name in &names {
        let expected = record.get(name).cloned().flatten();
        let actual = seen.get(name).cloned().flatten();
        assert_eq!(
            actual, expected,
            "{name}: the store lost an acknowledged write"
        );
    }
    drop(server);
}

#[test]
fn reencrypt_refuses_while_a_live_server_has_another_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = write(
        dir.path(),
        "running.yaml",
        &config("secrets", &[provider("secretbox", "k1", K_SB)]),
    );
    let next = write(
        dir.path(),
        "next.yaml",
        &config(
            "secrets",
            &[
                provider("aesgcm", "k2", K_NEW),
                provider("secretbox", "k1", K_SB),
            ],
        ),
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", running.to_str().unwrap()],
    );
    server
        .kubectl()
        .ok(&["create", "secret", "generic", "a", "--from-literal=x=y"]);
    let data_arg = data.display().to_string();
    let args = |cmd: &str, cfg: &Path| -> Vec<String> {
        vec![
            cmd.into(),
            "-o".into(),
            "json".into(),
            "--data-dir".into(),
            data_arg.clone(),
            "--encryption-provider-config".into(),
            cfg.display().to_string(),
        ]
    };
    let out = atrest(&strs(&args("reencrypt", &next)));
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    let running_hash = atrest_encryption::config::config_hash(&std::fs::read(&running).unwrap());
    assert!(
        err.contains("refusing to write") && err.contains(&running_hash),
        "{err}"
    );
    let stored = embedded_get(&data, "/registry/secrets/default/a").unwrap();
    assert!(
        stored.starts_with(b"k8s:enc:secretbox:v1:k1:"),
        "nothing was rewritten"
    );
    // status names the server and says it differs.
    let out = atrest(&strs(&args("status", &next)));
    let audit = stdout_json(&out);
    let servers = audit["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{audit:#}");
    assert_eq!(servers[0]["matchesConfig"], false);
    assert_eq!(servers[0]["configHash"], running_hash.as_str());
    // With the configuration the server runs, reencrypt proceeds.
    let out = atrest(&strs(&args("reencrypt", &running)));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    // A stopped server withdraws its record: then the next configuration may be written.
    assert!(server.stop().success());
    let out = atrest(&strs(&args("reencrypt", &next)));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let stored = embedded_get(&data, "/registry/secrets/default/a").unwrap();
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k2:"));
}

#[test]
fn reencrypt_killed_at_any_point_is_finished_by_a_rerun() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let old = config("secrets", &[provider("secretbox", "k1", K_SB)]);
    let new = write(
        dir.path(),
        "new.yaml",
        &config(
            "secrets",
            &[
                provider("aesgcm", "k2", K_NEW),
                provider("secretbox", "k1", K_SB),
            ],
        ),
    );
    let store = StoreConfig::etcd(cluster.endpoints());
    let objects: Vec<_> = (0..20_000)
        .map(|i| {
            let name = format!("s{i:05}");
            (
                secrets(),
                "ns",
                name.clone(),
                secret_bytes("ns", &name, &[b'x'; 256]),
            )
        })
        .collect();
    seed(&store, "/registry", &old, &objects);
    let cfg = new.to_str().unwrap();
    let status = || {
        let out = atrest(&[
            "status",
            "-o",
            "json",
            "--etcd-servers",
            &endpoints,
            "--encryption-provider-config",
            cfg,
        ]);
        counts(resource(&stdout_json(&out), "secrets"))
    };
    let mut previous_current = 0;
    for delay_ms in [150u64, 400, 800] {
        let mut child = Command::new(atrest_bin())
            .args([
                "reencrypt",
                "--etcd-servers",
                &endpoints,
                "--encryption-provider-config",
                cfg,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever was interrupted: every object is still there and readable.
        let [objects, current, stale, plaintext, unreadable] = status();
        assert_eq!(
            (objects, plaintext, unreadable),
            (20_000, 0, 0),
            "after a kill at {delay_ms} ms"
        );
        assert_eq!(current + stale, 20_000);
        assert!(current >= previous_current, "progress is never undone");
        previous_current = current;
    }
    let out = atrest(&[
        "reencrypt",
        "-o",
        "json",
        "--etcd-servers",
        &endpoints,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status(), [20_000, 20_000, 0, 0, 0]);
}

#[test]
fn large_collections_on_etcd_list_watch_and_delete_through_the_server() {
    let cluster = EtcdCluster::single();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("secrets", &[provider("aesgcm", "k", K_NEW)]);
    let cfg_file = write(dir.path(), "enc.yaml", &cfg);
    // 10,000 secrets of 1 KiB: about 11 MB, more than any single etcd response may carry.
    let objects: Vec<_> = (0..10_000)
        .map(|i| {
            let name = format!("s{i:05}");
            (
                secrets(),
                "big",
                name.clone(),
                secret_bytes("big", &name, &[b'x'; 1024]),
            )
        })
        .collect();
    seed(
        &StoreConfig::etcd(cluster.endpoints()),
        "/registry",
        &cfg,
        &objects,
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &endpoints,
            "--encryption-provider-config",
            cfg_file.to_str().unwrap(),
        ],
    );
    let k = server.kubectl();
    k.ok(&["create", "namespace", "big"]);
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let curl = |method: &str, path: &str| -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sSk", "--fail-with-body", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("https://127.0.0.1:{}{path}", server.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    };
    // An unpaginated list.
    let list: Value =
        serde_json::from_slice(&curl("GET", "/api/v1/namespaces/big/secrets")).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 10_000);
    assert!(list["metadata"].get("continue").is_none());
    // A watch without resourceVersion: every object as ADDED first.
    let watch = curl(
        "GET",
        "/api/v1/namespaces/big/secrets?watch=1&timeoutSeconds=5",
    );
    let added = watch
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ADDED")
        .count();
    assert_eq!(added, 10_000);
    // A deletecollection.
    curl("DELETE", "/api/v1/namespaces/big/secrets");
    let list: Value =
        serde_json::from_slice(&curl("GET", "/api/v1/namespaces/big/secrets")).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[test]
fn operations_on_an_etcd_the_real_kube_apiserver_wrote_with_it_running() {
    let cluster = EtcdCluster::single();
    let etcd = cluster.endpoints()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let identity = write(dir.path(), "identity.yaml", &identity_only("secrets"));
    let Some(mut kas) = KubeApiServer::start(&etcd, &identity, &[]) else {
        return;
    };
    let k = kas.kubectl();
    k.ok(&["create", "namespace", "app"]);
    for i in 0..30 {
        k.ok(&[
            "-n",
            "app",
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=password=pw-{i}"),
        ]);
    }
    let plain = etcdctl_get(&cluster.endpoints(), "/registry/secrets/app/s0").unwrap();
    assert!(
        atrest_testkit::contains(&plain, b"pw-0"),
        "identity stores plaintext"
    );
    // kube-apiserver now writes with aesgcm and still reads plaintext, as upstream's
    // procedure has it; old secrets stay plaintext until rewritten.
    let enc = write(
        dir.path(),
        "enc.yaml",
        &config("secrets", &[provider("aesgcm", "key1", K_NEW)]),
    );
    kas.restart(&etcd, &enc, &[]);
    let k = kas.kubectl();
    k.ok(&[
        "-n",
        "app",
        "create",
        "secret",
        "generic",
        "fresh",
        "--from-literal=password=pw-fresh",
    ]);
    let cfg = enc.to_str().unwrap();
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    let audit = stdout_json(&out);
    let sec = resource(&audit, "secrets");
    let [objects, current, stale, plaintext, unreadable] = counts(sec);
    assert_eq!(plaintext, 30, "{sec:#}");
    assert_eq!((stale, unreadable), (0, 0));
    assert!(current >= 1 && objects == current + plaintext, "{sec:#}");
    // kube-apiserver's other objects (namespaces, RBAC, leases...) are listed, not covered.
    assert!(
        audit["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["covered"] == false),
        "{audit:#}"
    );
    let out = atrest(&[
        "reencrypt",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["rewritten"], 30);
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let stored = etcdctl_get(&cluster.endpoints(), "/registry/secrets/app/s0").unwrap();
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    // The running kube-apiserver reads every rewritten object, unchanged.
    use base64::Engine as _;
    let listed = k.json(&["-n", "app", "get", "secrets"]);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 31);
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        let password = base64::engine::general_purpose::STANDARD
            .decode(item["data"]["password"].as_str().unwrap())
            .unwrap();
        let expected = if name == "fresh" {
            "pw-fresh".to_string()
        } else {
            format!("pw-{}", &name[1..])
        };
        assert_eq!(password, expected.as_bytes(), "{name}");
    }
    // atrest get reads what kube-apiserver wrote, fields and all.
    let out = atrest(&[
        "get",
        "/registry/secrets/app/fresh",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        cfg,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let shown = stdout_json(&out);
    assert_eq!(shown["object"]["metadata"]["name"], "fresh");
    assert_eq!(
        shown["provider"],
        json!({"provider": "aesgcm", "key": "key1"})
    );

    // A key rotation done through kube-apiserver's own API: new first key, then
    // `reencrypt --via-api` has kube-apiserver rewrite what is stale (and skip what is not).
    let rotated = write(
        dir.path(),
        "rotated.yaml",
        &config(
            "secrets",
            &[
                provider("aesgcm", "key2", K_OLD),
                provider("aesgcm", "key1", K_NEW),
            ],
        ),
    );
    kas.restart(&etcd, &rotated, &[]);
    let kas_kubeconfig = kas.kubeconfig();
    let rotated_cfg = rotated.to_str().unwrap();
    let out = atrest(&[
        "reencrypt",
        "--via-api",
        "--kubeconfig",
        kas_kubeconfig.to_str().unwrap(),
        "--encryption-provider-config",
        rotated_cfg,
        "-o",
        "json",
    ]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert_eq!(report["resources"], json!(["secrets"]), "{report:#}");
    assert!(report["rewritten"].as_u64().unwrap() >= 31, "{report:#}");
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--etcd-servers",
        &etcd,
        "--encryption-provider-config",
        rotated_cfg,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let stored = etcdctl_get(&cluster.endpoints(), "/registry/secrets/app/s7").unwrap();
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    drop(kas);
}

#[test]
fn reencrypt_through_the_api_of_atrest_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let old = config("secrets", &[provider("secretbox", "k1", K_SB)]);
    let new = write(
        dir.path(),
        "new.yaml",
        &config(
            "secrets",
            &[
                provider("aesgcm", "k2", K_NEW),
                provider("secretbox", "k1", K_SB),
            ],
        ),
    );
    let store = StoreConfig::Embedded {
        data_dir: data.clone(),
        compaction: CompactionPolicy::disabled(),
    };
    let objects: Vec<_> = (0..1200)
        .map(|i| {
            let name = format!("s{i:04}");
            (
                secrets(),
                "default",
                name.clone(),
                secret_bytes("default", &name, b"old"),
            )
        })
        .collect();
    seed(&store, "/registry", &old, &objects);
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", new.to_str().unwrap()],
    );
    server
        .kubectl()
        .ok(&["create", "secret", "generic", "fresh", "--from-literal=a=b"]);
    let kubeconfig = server.kubeconfig();
    let out = atrest(&[
        "reencrypt",
        "--via-api",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--resources",
        "secrets",
        "-o",
        "json",
    ]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert_eq!(report["listed"], 1201, "{report:#}");
    assert_eq!(report["rewritten"], 1200, "{report:#}");
    assert_eq!(report["alreadyCurrent"], 1, "{report:#}");
    assert_eq!(report["failed"], 0);
    let out = atrest(&[
        "status",
        "-o",
        "json",
        "--data-dir",
        data.to_str().unwrap(),
        "--encryption-provider-config",
        new.to_str().unwrap(),
        "--resources",
        "secrets",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        counts(resource(&stdout_json(&out), "secrets")),
        [1201, 1201, 0, 0, 0]
    );
    // Bad input: a resource the server does not serve, and no kubeconfig.
    let out = atrest(&[
        "reencrypt",
        "--via-api",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--resources",
        "pods",
    ]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pods"));
    let out = Command::new(atrest_bin())
        .args(["reencrypt", "--via-api", "--resources", "secrets"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
}

/// Whether any of `files` holds `needle`.
fn any_file_contains(files: &[PathBuf], needle: &[u8]) -> bool {
    files
        .iter()
        .any(|f| std::fs::read(f).is_ok_and(|bytes| atrest_testkit::contains(&bytes, needle)))
}

/// The history audit before and after `purge`, and the canary's bytes in the files.
fn history_then_purge(store_args: &[String], store: &StoreConfig, files: &[PathBuf], dir: &Path) {
    let canary = b"CANARY-plaintext-4f1c9e";
    seed(
        store,
        "/registry",
        &identity_only("secrets"),
        &[(
            secrets(),
            "ns",
            "canary".into(),
            secret_bytes("ns", "canary", canary),
        )],
    );
    let enc = write(
        dir,
        "enc.yaml",
        &config("secrets", &[provider("aesgcm", "k", K_NEW)]),
    );
    let cfg = enc.display().to_string();
    let run = |cmd: &[&str]| {
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.extend(store_args.iter().cloned());
        args.extend([
            "--encryption-provider-config".into(),
            cfg.clone(),
            "-o".into(),
            "json".into(),
        ]);
        atrest(&strs(&args))
    };
    let out = run(&["reencrypt"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    // The current state is encrypted, but the old plaintext version is still retained.
    let out = run(&["status", "--history"]);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stdout));
    let audit = stdout_json(&out);
    assert_eq!(audit["upToDate"], true);
    assert_eq!(audit["history"]["clean"], false);
    let sec = audit["history"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "secrets")
        .unwrap();
    assert_eq!(sec["plaintext"], 1, "{sec:#}");
    assert_eq!(sec["versions"], 2, "{sec:#}");
    assert!(sec["examples"][0]["key"]
        .as_str()
        .unwrap()
        .contains("/registry/secrets/ns/canary"));
    assert!(
        any_file_contains(files, canary),
        "the canary is in the files before purge"
    );
    let out = run(&["purge"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(report["compacted"], true);
    assert!(!report["space"].as_array().unwrap().is_empty());
    let out = run(&["status", "--history"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stdout_json(&out)["history"]["clean"], true);
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !atrest_testkit::contains(&bytes, canary),
            "canary still in {}",
            f.display()
        );
    }
    // The object itself is intact.
    let out = run(&["get", "/registry/secrets/ns/canary"]);
    assert_eq!(code(&out), 0);
    use base64::Engine as _;
    assert_eq!(
        stdout_json(&out)["object"]["data"]["v"],
        base64::engine::general_purpose::STANDARD.encode(canary)
    );
}

#[test]
fn history_and_purge_on_a_three_member_etcd() {
    let cluster = EtcdCluster::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| cluster.log_dir().join(format!("m{i}/member/snap/db")))
        .collect();
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
    history_then_purge(
        &["--etcd-servers".into(), cluster.endpoints().join(",")],
        &StoreConfig::etcd(cluster.endpoints()),
        &files,
        dir.path(),
    );
}

#[test]
fn history_and_purge_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = StoreConfig::Embedded {
        data_dir: data.clone(),
        compaction: CompactionPolicy::disabled(),
    };
    let files = vec![data.join("state.db"), data.join("state.db-wal")];
    history_then_purge(
        &["--data-dir".into(), data.display().to_string()],
        &store,
        &files,
        dir.path(),
    );
}
