//! What `atrest serve` does beyond the walkthrough: every verb kubectl uses, upstream's
//! errors, authentication, health and metrics, automatic reload, unreadable objects,
//! several servers on one etcd, and failing fast at start-up.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::{etcdctl_get, AtrestServer, Kubectl, KUBECTL};

fn atrest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atrest"))
}

const K32: &str = "er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=";
const K32B: &str = "N/hsuQeHOMNw8H6NO1g7rTjCdfNK7QVq1uqO7KQZL6E=";

fn config(provider: &str, key_name: &str, secret: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps]\n    providers:\n      - {provider}:\n          keys:\n            - name: {key_name}\n              secret: {secret}\n      - identity: {{}}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn everyday_kubectl_against_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--compaction-keep-revisions",
            "50",
            "--compaction-keep-seconds",
            "60",
        ],
    );
    let k = server.kubectl();

    // Default namespaces exist from the first start; the generated config encrypts secrets.
    let ns = k.ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    let generated = dir.path().join("data/encryption-config.yaml");
    assert!(std::fs::read_to_string(&generated)
        .unwrap()
        .contains("secretbox"));
    use std::os::unix::fs::PermissionsExt;
    for private in ["encryption-config.yaml", "admin.kubeconfig"] {
        let mode = std::fs::metadata(dir.path().join("data").join(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{private}");
    }

    // create secret generic|tls|docker-registry, configmap.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
        "--from-literal=c=d",
    ]);
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=t",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success());
    k.ok(&[
        "create",
        "secret",
        "tls",
        "t1",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]);
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "d1",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    k.ok(&["create", "configmap", "c1", "--from-literal=x=y"]);

    // get -o yaml|json|jsonpath|name, the table columns.
    let s1 = k.json(&["get", "secret", "s1"]);
    assert_eq!(s1["type"], "Opaque");
    assert_eq!(s1["data"]["a"], "Yg==");
    assert!(s1["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(k
        .ok(&["get", "secret", "s1", "-o", "yaml"])
        .contains("a: Yg=="));
    assert_eq!(
        k.ok(&["get", "secret", "t1", "-o", "jsonpath={.type}"]),
        "kubernetes.io/tls"
    );
    assert_eq!(
        k.ok(&["get", "secret", "d1", "-o", "name"]).trim(),
        "secret/d1"
    );
    let table = k.ok(&["get", "secrets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("s1") && l.contains("Opaque") && l.contains(" 2 ")),
        "{table}"
    );
    let cm_table = k.ok(&["get", "configmaps"]);
    assert_eq!(
        cm_table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "DATA", "AGE"]
    );

    // label, annotate, -l, --field-selector, --chunk-size, -A.
    k.ok(&["label", "secret", "s1", "tier=db"]);
    k.ok(&["annotate", "secret", "s1", "owner=me"]);
    assert_eq!(
        k.ok(&["get", "secrets", "-l", "tier=db", "-o", "name"])
            .trim(),
        "secret/s1"
    );
    assert_eq!(
        k.ok(&["get", "secrets", "-l", "tier in (web)", "-o", "name"])
            .trim(),
        ""
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secrets",
            "--field-selector",
            "metadata.name=d1",
            "-o",
            "name"
        ])
        .trim(),
        "secret/d1"
    );
    let chunked = k.ok(&["get", "secrets", "-A", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 3, "{chunked}");
    assert!(k.ok(&["get", "secrets", "-A"]).contains("default"));

    // patch: strategic merge, merge, JSON patch.
    k.ok(&[
        "patch",
        "secret",
        "s1",
        "-p",
        r#"{"metadata":{"labels":{"p":"1"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "secret",
        "s1",
        "--type=merge",
        "-p",
        r#"{"stringData":{"e":"f"}}"#,
    ]);
    k.ok(&[
        "patch",
        "secret",
        "s1",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/c"}]"#,
    ]);
    let s1 = k.json(&["get", "secret", "s1"]);
    assert_eq!(s1["metadata"]["labels"]["p"], "1");
    assert_eq!(s1["data"]["e"], "Zg==");
    assert!(s1["data"].get("c").is_none());
    assert!(s1["stringData"].is_null());

    // apply (create, then change), replace.
    let manifest = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: \"{v}\"\n"
        )
    };
    k.ok_with_input(&["apply", "-f", "-"], manifest("1").as_bytes());
    k.ok_with_input(&["apply", "-f", "-"], manifest("2").as_bytes());
    assert_eq!(
        k.ok(&["get", "cm", "applied", "-o", "jsonpath={.data.k}"]),
        "2"
    );
    let mut cm = k.json(&["get", "cm", "applied"]);
    cm["data"]["k"] = "3".into();
    k.ok_with_input(&["replace", "-f", "-"], cm.to_string().as_bytes());
    assert_eq!(
        k.ok(&["get", "cm", "applied", "-o", "jsonpath={.data.k}"]),
        "3"
    );

    // Upstream's errors.
    let e = k.fails(&["create", "secret", "generic", "s1", "--from-literal=a=b"]);
    assert!(e.contains("secrets \"s1\" already exists"), "{e}");
    let dup = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1"}}"#;
    let out = k.run_with_input(&["create", "-f", "-"], dup.as_bytes());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("Error from server (AlreadyExists): error when creating \"STDIN\": secrets \"s1\" already exists"), "{e}");
    let e = k.fails(&["get", "secret", "nope"]);
    assert!(
        e.contains("Error from server (NotFound): secrets \"nope\" not found"),
        "{e}"
    );
    let e = k.fails(&[
        "-n",
        "missing",
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=a=b",
    ]);
    assert!(e.contains("namespaces \"missing\" not found"), "{e}");
    // Conflict: replace with a stale resourceVersion.
    cm["data"]["k"] = "stale".into();
    let out = k.run_with_input(&["replace", "-f", "-"], cm.to_string().as_bytes());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("Conflict") && e.contains("the object has been modified"),
        "{e}"
    );
    // Invalid: a bad name and a bad data key, with field causes.
    let bad = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"Bad_Name"},"data":{"bad key":"eA=="}}"#;
    let out = k.run_with_input(&["create", "-f", "-"], bad.as_bytes());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("Secret \"Bad_Name\" is invalid") && e.contains("metadata.name"),
        "{e}"
    );
    // Strict field validation (kubectl's default) refuses unknown fields.
    let unknown = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"dataa":{}}"#;
    let out = k.run_with_input(&["create", "-f", "-"], unknown.as_bytes());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"dataa\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // delete, deletecollection, namespace deletion removes its contents.
    k.ok(&["delete", "secret", "d1"]);
    k.ok(&["delete", "secrets", "-l", "tier=db"]);
    assert_eq!(k.ok(&["get", "secrets", "-o", "name"]).trim(), "secret/t1");
    k.ok(&["create", "namespace", "doomed"]);
    k.ok(&[
        "-n",
        "doomed",
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=a=b",
    ]);
    k.ok(&["delete", "namespace", "doomed"]);
    k.ok(&["create", "namespace", "doomed"]);
    assert_eq!(
        k.ok(&["-n", "doomed", "get", "secrets", "-o", "name"])
            .trim(),
        ""
    );

    // Discovery, OpenAPI and version as kubectl sees them.
    let resources = k.ok(&["api-resources", "-o", "name"]);
    for r in [
        "secrets",
        "configmaps",
        "namespaces",
        "customresourcedefinitions.apiextensions.k8s.io",
    ] {
        assert!(resources.lines().any(|l| l == r), "{resources}");
    }
    let version: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/version"])).unwrap();
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("32"))
    );

    // Metrics with upstream names, counting the secret writes and reads.
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    assert!(metrics.contains("apiserver_storage_transformation_operations_total{resource=\"secrets\",transformation_type=\"to_storage\",transformer_prefix=\"k8s:enc:secretbox:v1:\",status=\"OK\"}"), "{metrics}");
    assert!(metrics.contains("apiserver_storage_transformation_duration_seconds_bucket"));
    assert!(metrics.contains("apiserver_encryption_config_controller_last_config_info{"));
    assert!(metrics.contains("apiserver_request_total{"));
    assert!(
        metrics.contains("atrest_store_compaction_failures_total 0"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

/// An HTTPS request with no client certificate, optionally with a bearer token and a JSON
/// body: (status code, body). curl stands in for any client without a kubeconfig (kubectl
/// would prompt for a password instead).
fn curl(
    server: &AtrestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "--cacert"])
        .arg(server.data_dir.join("pki/ca.crt"))
        .args([
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn anonymous_get(server: &AtrestServer, path: &str, token: Option<&str>) -> (u16, String) {
    curl(server, "GET", path, token, None)
}

/// A request as the admin (its bearer token).
fn admin_request(
    server: &AtrestServer,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    curl(server, method, path, Some(token.trim()), body)
}

#[test]
fn authentication_health_and_startup_failures() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write(
        dir.path(),
        "tokens.csv",
        "s3cr3t-token,alice,u-1,\"devs,system:masters\"\nbob-token,bob,u-2,devs\n",
    );
    let data = dir.path().join("data");
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    // Anonymous: 401 for the API, health and version allowed.
    let (code, body) = anonymous_get(&server, "/api/v1/secrets", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    for path in ["/healthz", "/livez", "/readyz", "/readyz/etcd", "/version"] {
        let (code, body) = anonymous_get(&server, path, None);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, verbose) = anonymous_get(&server, "/readyz?verbose", None);
    assert!(
        verbose.contains("[+]etcd ok") && verbose.contains("readyz check passed"),
        "{verbose}"
    );
    assert_eq!(anonymous_get(&server, "/readyz/nonexistent", None).0, 404);
    // A bearer token from --token-auth-file works; a wrong one is 401; so does kubectl --token.
    assert_eq!(
        anonymous_get(
            &server,
            "/api/v1/namespaces/default/secrets",
            Some("s3cr3t-token")
        )
        .0,
        200
    );
    assert_eq!(
        anonymous_get(&server, "/api/v1/namespaces/default/secrets", Some("wrong")).0,
        401
    );
    // Authorization: outside system:masters, only discovery and health are allowed.
    let (code, body) = anonymous_get(
        &server,
        "/api/v1/namespaces/default/secrets",
        Some("bob-token"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"secrets is forbidden: User \"bob\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""#),
        "{body}"
    );
    assert_eq!(anonymous_get(&server, "/api/v1", Some("bob-token")).0, 200);
    assert_eq!(anonymous_get(&server, "/metrics", Some("bob-token")).0, 403);
    let with_token = Command::new(KUBECTL)
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
        ])
        .arg("--certificate-authority")
        .arg(server.data_dir.join("pki/ca.crt"))
        .args(["--token", "s3cr3t-token", "--cache-dir"])
        .arg(dir.path().join("tc"))
        .args(["get", "ns", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&with_token.stdout).contains("namespace/default"),
        "{}",
        String::from_utf8_lossy(&with_token.stderr)
    );
    // Typed clients asking for protobuf get protobuf (`k8s\0` + runtime.Unknown).
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(data.join("pki/ca.crt"))
        .args([
            "-H",
            "Accept: application/vnd.kubernetes.protobuf,application/json",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", admin_token.trim()),
        ])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default",
            server.port
        ))
        .output()
        .unwrap();
    assert!(
        out.stdout.starts_with(b"k8s\0"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = server.log_text();
    assert!(!log.contains("s3cr3t-token"), "tokens never reach the log");

    // Start-up fails fast with a clear message: port in use, bad config, unreachable etcd.
    let busy = Command::new(atrest_bin())
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--secure-port", &server.port.to_string()])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr)
        .contains(&format!("cannot listen on 127.0.0.1:{}", server.port)));
    assert!(server.stop().success());

    let bad = write(dir.path(), "bad.yaml", &config("aescbc", "k", "not-base64"));
    let out = Command::new(atrest_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d2"))
        .args(["--encryption-provider-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("resources[0].providers[0].aescbc.keys[0].secret")
            && e.contains("secrets must be base64 encoded"),
        "{e}"
    );

    let dead = format!("http://127.0.0.1:{}", atrest_testkit::free_port());
    let started = Instant::now();
    let out = Command::new(atrest_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d3"))
        .args(["--etcd-servers", &dead])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "gave up in bounded time"
    );
}

#[test]
fn automatic_reload_and_unreadable_objects() {
    let etcd = EtcdCluster::single();
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "enc.yaml", &config("aesgcm", "one", K32));
    let servers = endpoints.join(",");
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &servers,
            "--encryption-provider-config",
            cfg.to_str().unwrap(),
            "--encryption-provider-config-automatic-reload",
            "--encryption-provider-config-reload-interval",
            "1",
        ],
    );
    let k = server.kubectl();
    k.ok(&["create", "secret", "generic", "a", "--from-literal=x=y"]);
    assert!(etcdctl_get(&endpoints, "/registry/secrets/default/a")
        .unwrap()
        .starts_with(b"k8s:enc:aesgcm:v1:one:"));

    // A new key first: picked up without a restart.
    std::fs::write(&cfg, format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: two\n              secret: {K32B}\n            - name: one\n              secret: {K32}\n"
    )).unwrap();
    wait_for(|| {
        k.ok(&["create", "secret", "generic", "probe", "--from-literal=x=y"]);
        let v = etcdctl_get(&endpoints, "/registry/secrets/default/probe").unwrap();
        k.ok(&["delete", "secret", "probe"]);
        v.starts_with(b"k8s:enc:aesgcm:v1:two:")
    });
    assert_eq!(
        k.json(&["get", "secret", "a"])["data"]["x"],
        "eQ==",
        "old key still reads"
    );
    // The heartbeat publishes the configuration now in force.
    let new_hash = atrest_encryption::config::config_hash(&std::fs::read(&cfg).unwrap());
    wait_for(|| {
        let out = Command::new(atrest_testkit::ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &servers,
                "get",
                "--prefix",
                "/registry/atrest/servers/",
                "--print-value-only",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&new_hash)
    });

    // A broken file is refused; the configuration in force stays.
    std::fs::write(
        &cfg,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
    )
    .unwrap();
    wait_for(|| {
        k.ok(&["get", "--raw", "/metrics"]).contains(
            "apiserver_encryption_config_controller_automatic_reloads_total{status=\"failure\"",
        )
    });
    k.ok(&["create", "secret", "generic", "b", "--from-literal=x=y"]);
    assert!(etcdctl_get(&endpoints, "/registry/secrets/default/b")
        .unwrap()
        .starts_with(b"k8s:enc:aesgcm:v1:two:"));

    // An object no provider can read: the list names it, other objects stay readable, and
    // the KEP-3926 delete removes it.
    let put = Command::new(atrest_testkit::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &servers,
            "put",
            "/registry/secrets/default/broken",
            "k8s:enc:aesgcm:v1:two:not-a-valid-ciphertext",
        ])
        .output()
        .unwrap();
    assert!(put.status.success());
    let e = k.fails(&["get", "secrets"]);
    assert!(e.contains("/registry/secrets/default/broken"), "{e}");
    assert_eq!(k.json(&["get", "secret", "b"])["data"]["x"], "eQ==");
    let e = k.fails(&["delete", "secret", "broken"]);
    assert!(e.contains("/registry/secrets/default/broken"), "{e}");
    let options = write(
        dir.path(),
        "delete.json",
        r#"{"kind":"DeleteOptions","apiVersion":"v1","ignoreStoreReadErrorWithClusterBreakingPotential":true}"#,
    );
    k.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/secrets/broken",
        "-f",
        options.to_str().unwrap(),
    ]);
    assert!(etcdctl_get(&endpoints, "/registry/secrets/default/broken").is_none());
    assert!(k.ok(&["get", "secrets", "-o", "name"]).contains("secret/b"));
    assert!(server.stop().success());
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn two_servers_on_one_etcd_serve_the_same_data() {
    let etcd = EtcdCluster::single();
    let servers = etcd.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "enc.yaml", &config("secretbox", "k", K32));
    let args = [
        "--etcd-servers",
        servers.as_str(),
        "--encryption-provider-config",
        cfg.to_str().unwrap(),
    ];
    let a = AtrestServer::start(&atrest_bin(), &dir.path().join("a"), &args);
    let b = AtrestServer::start(&atrest_bin(), &dir.path().join("b"), &args);
    let (ka, kb) = (a.kubectl(), b.kubectl());

    // A watch through B sees a write through A.
    let watch_out = dir.path().join("watch.out");
    let mut watch = Command::new(KUBECTL)
        .args([
            "--kubeconfig",
            b.kubeconfig().to_str().unwrap(),
            "--cache-dir",
            dir.path().join("wc").to_str().unwrap(),
        ])
        .args(["get", "secrets", "-w", "-o", "name", "--request-timeout=0"])
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    ka.ok(&[
        "create",
        "secret",
        "generic",
        "from-a",
        "--from-literal=x=y",
    ]);
    wait_for(|| {
        std::fs::read_to_string(&watch_out)
            .unwrap_or_default()
            .contains("secret/from-a")
    });
    assert_eq!(kb.json(&["get", "secret", "from-a"])["data"]["x"], "eQ==");

    // A CRD created through A is served by B.
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Cluster\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    ka.ok_with_input(&["apply", "-f", "-"], crd.as_bytes());
    wait_for(|| {
        let out = kb.run_with_input(
            &["apply", "-f", "-"],
            b"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 2}\n",
        );
        out.status.success()
    });
    assert_eq!(ka.json(&["get", "widgets", "w1"])["spec"]["size"], 2);
    // Both servers publish a heartbeat.
    let listed = Command::new(atrest_testkit::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &servers,
            "get",
            "--prefix",
            "/registry/atrest/servers/",
            "--keys-only",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 2, "{keys}");
    // SIGTERM ends open watches instead of waiting for them: B stops promptly although
    // the watch through it is still open.
    let started = Instant::now();
    assert!(b.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown waited for the open watch"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    drop(a);
}

#[test]
fn json_storage_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let identity = write(
        dir.path(),
        "identity.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    );
    let data = dir.path().join("data");
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &[
            "--storage-media-type",
            "application/json",
            "--encryption-provider-config",
            identity.to_str().unwrap(),
        ],
    );
    server
        .kubectl()
        .ok(&["create", "secret", "generic", "j", "--from-literal=a=b"]);
    assert!(server.stop().success());
    let stored = atrest_testkit::embedded_get(&data, "/registry/secrets/default/j").unwrap();
    let text = String::from_utf8(stored).unwrap();
    assert!(
        text.starts_with("{\"kind\":\"Secret\",\"apiVersion\":\"v1\""),
        "{text}"
    );
    assert!(!text.contains("resourceVersion"), "{text}");
}

#[test]
fn dry_runs_namespaces_status_watch_selectors_and_crd_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(&atrest_bin(), &dir.path().join("data"), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "t1"]);
    k.ok(&[
        "-n",
        "t1",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
    ]);

    // Server-side dry runs write nothing.
    k.ok(&["-n", "t1", "delete", "secret", "s1", "--dry-run=server"]);
    k.ok(&["-n", "t1", "get", "secret", "s1"]);
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: t1}\ndata: {k: \"1\"}\n";
    k.ok_with_input(&["apply", "-f", "-"], cm.as_bytes());
    k.ok_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        cm.replace("\"1\"", "\"2\"").as_bytes(),
    );
    assert_eq!(
        k.ok(&["-n", "t1", "get", "cm", "c", "-o", "jsonpath={.data.k}"]),
        "1"
    );
    k.ok(&["delete", "namespace", "t1", "--dry-run=server"]);
    k.ok(&["-n", "t1", "get", "secret", "s1"]);
    let (code, _) = admin_request(
        &server,
        "DELETE",
        "/api/v1/namespaces/t1/secrets/s1?dryRun=Sometimes",
        None,
    );
    assert_eq!(code, 400);

    // Protected namespaces cannot be deleted.
    let e = k.fails(&["delete", "namespace", "default"]);
    assert!(e.contains("this namespace may not be deleted"), "{e}");

    // Strict field validation applies to replace too.
    let mut obj = k.json(&["-n", "t1", "get", "cm", "c"]);
    obj["datta"] = serde_json::json!({});
    let out = k.run_with_input(&["replace", "-f", "-"], obj.to_string().as_bytes());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"datta\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A Namespace whose spec is not an object is a 400, not a dropped connection.
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"metadata":{"name":"p1"},"spec":1}"#),
    );
    assert_eq!(code, 400, "{body}");

    // Status updates check the resourceVersion the client read.
    let ns = k.json(&["get", "namespace", "t1"]);
    k.ok(&["label", "namespace", "t1", "x=y"]);
    let (code, body) = admin_request(
        &server,
        "PUT",
        "/api/v1/namespaces/t1/status",
        Some(&ns.to_string()),
    );
    assert_eq!(code, 409, "{body}");
    let (code, _) = admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/t1/secrets/s1/status",
        None,
    );
    assert_eq!(code, 404, "secrets have no status subresource");

    // A watch with a label selector sees objects leave (DELETED) and enter (ADDED) it.
    k.ok(&["-n", "t1", "label", "secret", "s1", "app=web"]);
    let watch_out = dir.path().join("watch.out");
    let mut watch = Command::new(KUBECTL)
        .args([
            "--kubeconfig",
            server.kubeconfig().to_str().unwrap(),
            "--cache-dir",
            dir.path().join("wc").to_str().unwrap(),
        ])
        .args([
            "-n",
            "t1",
            "get",
            "secrets",
            "-l",
            "app=web",
            "-w",
            "--output-watch-events",
        ])
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    wait_for(|| {
        std::fs::read_to_string(&watch_out)
            .unwrap_or_default()
            .contains("ADDED")
    });
    k.ok(&["-n", "t1", "label", "secret", "s1", "app=db", "--overwrite"]);
    wait_for(|| {
        std::fs::read_to_string(&watch_out)
            .unwrap_or_default()
            .contains("DELETED")
    });
    k.ok(&[
        "-n",
        "t1",
        "label",
        "secret",
        "s1",
        "app=web",
        "--overwrite",
    ]);
    wait_for(|| {
        std::fs::read_to_string(&watch_out)
            .unwrap_or_default()
            .matches("ADDED")
            .count()
            == 2
    });
    let _ = watch.kill();
    let _ = watch.wait();

    // CRD rules: the group needs a dot (else custom resources could land in a built-in
    // resource's keys, unencrypted), and the scope cannot change.
    let crd = |group: &str, scope: &str| {
        format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: ns9.{group}\nspec:\n  group: {group}\n  scope: {scope}\n  names: {{plural: ns9, singular: nine, kind: Nine}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n")
    };
    let out = k.run_with_input(&["apply", "-f", "-"], crd("secrets", "Cluster").as_bytes());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("should be a domain with at least one dot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok_with_input(
        &["apply", "-f", "-"],
        crd("example.com", "Namespaced").as_bytes(),
    );
    let out = k.run_with_input(
        &["apply", "-f", "-"],
        crd("example.com", "Cluster").as_bytes(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.scope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting a namespace removes its contents, and the namespace is gone.
    k.ok(&["delete", "namespace", "t1"]);
    assert!(k.fails(&["get", "namespace", "t1"]).contains("not found"));
    k.ok(&["create", "namespace", "t1"]);
    assert_eq!(
        k.ok(&["-n", "t1", "get", "secrets", "-o", "name"]).trim(),
        ""
    );
    assert!(server.stop().success());
}

/// A GET as the admin with an `Accept` header: (content type, body bytes).
fn admin_get_bytes(server: &AtrestServer, path: &str, accept: &str) -> (String, Vec<u8>) {
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let headers = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(server.data_dir.join("pki/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-H", &format!("Accept: {accept}"), "-D"])
        .arg(headers.path())
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    let headers = std::fs::read_to_string(headers.path()).unwrap();
    let content_type = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, out.stdout)
}

fn json_lines(body: &[u8]) -> Vec<serde_json::Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn watch_bookmarks_and_watch_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &["--watch-bookmark-interval-seconds", "1"],
    );
    let k = server.kubectl();
    k.ok(&["create", "secret", "generic", "a", "--from-literal=k=v"]);
    k.ok(&["create", "secret", "generic", "b", "--from-literal=k=v"]);
    let list: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1/namespaces/default/secrets"]))
            .unwrap();
    let list_rv: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Watch-list: ADDED for each object, the initial-events-end bookmark, then periodic
    // bookmarks (one a second here) while nothing changes.
    let (ct, body) = admin_get_bytes(
        &server,
        "/api/v1/namespaces/default/secrets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3",
        "application/json",
    );
    assert_eq!(ct, "application/json");
    let events = json_lines(&body);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&types[..3], ["ADDED", "ADDED", "BOOKMARK"], "{events:#?}");
    let names: Vec<&str> = events[..2]
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let end = &events[2]["object"];
    assert_eq!(end["kind"], "Secret");
    assert_eq!(end["apiVersion"], "v1");
    assert_eq!(
        end["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let end_rv: i64 = end["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end_rv >= list_rv, "{end_rv} < {list_rv}");
    let periodic: Vec<&serde_json::Value> = events[3..].iter().collect();
    assert!(
        !periodic.is_empty(),
        "no periodic bookmark in 3 s: {events:#?}"
    );
    for b in &periodic {
        assert_eq!(b["type"], "BOOKMARK");
        // Only the kind and the resourceVersion.
        assert_eq!(
            b["object"],
            serde_json::json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": end_rv.to_string()}})
        );
    }

    // Without allowWatchBookmarks the state comes without the bookmark, as upstream.
    let (_, body) = admin_get_bytes(
        &server,
        "/api/v1/namespaces/default/secrets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=2",
        "application/json",
    );
    let types: Vec<String> = json_lines(&body)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["ADDED", "ADDED"]);

    // A plain watch with bookmarks: a change, then a bookmark at its resourceVersion.
    let watch = k
        .command(&[
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/default/secrets?watch=true&allowWatchBookmarks=true&resourceVersion={end_rv}&timeoutSeconds=4"
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    k.ok(&["create", "secret", "generic", "c", "--from-literal=k=v"]);
    let out = watch.wait_with_output().unwrap();
    let events = json_lines(&out.stdout);
    let added = events
        .iter()
        .find(|e| e["type"] == "ADDED")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(added["object"]["metadata"]["name"], "c");
    let c_rv = added["object"]["metadata"]["resourceVersion"].clone();
    let after: Vec<_> = events
        .iter()
        .skip_while(|e| e["type"] != "ADDED")
        .filter(|e| e["type"] == "BOOKMARK")
        .collect();
    assert!(!after.is_empty(), "{events:#?}");
    assert!(after
        .iter()
        .all(|b| b["object"]["metadata"]["resourceVersion"] == c_rv));

    // Watch-list: a resourceVersion to be not older than is honoured (the state includes c).
    let (_, body) = admin_get_bytes(
        &server,
        &format!("/api/v1/namespaces/default/secrets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds=1", c_rv.as_str().unwrap()),
        "application/json",
    );
    let events = json_lines(&body);
    assert_eq!(events.iter().filter(|e| e["type"] == "ADDED").count(), 3);

    // The combinations upstream refuses, with its codes and messages.
    let bad = [
        (
            "watch=true&sendInitialEvents=true",
            422,
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            "watch=true&resourceVersionMatch=NotOlderThan",
            422,
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ),
        (
            "watch=true&sendInitialEvents=true&resourceVersionMatch=Exact",
            422,
            "Unsupported value: \\\"Exact\\\"",
        ),
        (
            "sendInitialEvents=true",
            422,
            "sendInitialEvents is forbidden for list",
        ),
        (
            "watch=true&sendInitialEvents=yes&resourceVersionMatch=NotOlderThan",
            400,
            "sendInitialEvents",
        ),
    ];
    for (query, code, message) in bad {
        let (got, body) = admin_request(
            &server,
            "GET",
            &format!("/api/v1/namespaces/default/secrets?{query}"),
            None,
        );
        assert_eq!(got, code, "{query}: {body}");
        assert!(body.contains(message), "{query}: {body}");
    }
    assert!(server.stop().success());
}

/// Independent protobuf messages (prost) for the shapes kube-apiserver answers: the
/// `runtime.Unknown` envelope, `v1.SecretList`, `metav1.WatchEvent`.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeMeta {
        #[prost(string, tag = "1")]
        pub api_version: String,
        #[prost(string, tag = "2")]
        pub kind: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Unknown {
        #[prost(message, optional, tag = "1")]
        pub type_meta: Option<TypeMeta>,
        #[prost(bytes = "vec", tag = "2")]
        pub raw: Vec<u8>,
        #[prost(string, tag = "3")]
        pub content_encoding: String,
        #[prost(string, tag = "4")]
        pub content_type: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListMeta {
        #[prost(string, tag = "1")]
        pub self_link: String,
        #[prost(string, tag = "2")]
        pub resource_version: String,
        #[prost(string, tag = "3")]
        pub r#continue: String,
        #[prost(int64, optional, tag = "4")]
        pub remaining_item_count: Option<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectMeta {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(string, tag = "6")]
        pub resource_version: String,
        #[prost(map = "string, string", tag = "12")]
        pub annotations: std::collections::HashMap<String, String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Secret {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ObjectMeta>,
        #[prost(map = "string, bytes", tag = "2")]
        pub data: std::collections::HashMap<String, Vec<u8>>,
        #[prost(string, tag = "3")]
        pub r#type: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecretList {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ListMeta>,
        #[prost(message, repeated, tag = "2")]
        pub items: Vec<Secret>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawExtension {
        #[prost(bytes = "vec", tag = "1")]
        pub raw: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchEvent {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(message, optional, tag = "2")]
        pub object: Option<RawExtension>,
    }

    /// `k8s\0` + Unknown: (apiVersion, kind, raw).
    pub fn envelope(bytes: &[u8]) -> (String, String, Vec<u8>) {
        use prost::Message;
        let body = bytes.strip_prefix(b"k8s\0").expect("the k8s\\0 prefix");
        let u = Unknown::decode(body).unwrap();
        let tm = u.type_meta.unwrap();
        assert_eq!(
            (u.content_encoding.as_str(), u.content_type.as_str()),
            ("", "")
        );
        (tm.api_version, tm.kind, u.raw)
    }
}

#[test]
fn protobuf_lists_and_watches_for_builtin_kinds() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &["--watch-bookmark-interval-seconds", "1"],
    );
    let k = server.kubectl();
    k.ok(&["create", "secret", "generic", "a", "--from-literal=k=v1"]);
    k.ok(&["create", "secret", "generic", "b", "--from-literal=k=v2"]);
    let accept = "application/vnd.kubernetes.protobuf, */*";

    // A list: k8s\0 + Unknown{v1, SecretList} wrapping ListMeta and the Secrets.
    let (ct, body) = admin_get_bytes(
        &server,
        "/api/v1/namespaces/default/secrets?limit=1",
        accept,
    );
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let (api_version, kind, raw) = pb::envelope(&body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "SecretList"));
    let list = pb::SecretList::decode(raw.as_slice()).unwrap();
    let meta = list.metadata.unwrap();
    assert!(!meta.resource_version.is_empty());
    assert!(!meta.r#continue.is_empty(), "limit=1 of 2 continues");
    assert_eq!(meta.remaining_item_count, Some(1));
    assert_eq!(list.items.len(), 1);
    let a = &list.items[0];
    assert_eq!(a.metadata.as_ref().unwrap().name, "a");
    assert_eq!(a.data["k"], b"v1");
    assert_eq!(a.r#type, "Opaque");
    // The same list in JSON agrees.
    let (ct, json) = admin_get_bytes(
        &server,
        "/api/v1/namespaces/default/secrets",
        "application/json",
    );
    assert_eq!(ct, "application/json");
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 2);
    // Namespaces and configmaps too.
    let (ct, body) = admin_get_bytes(&server, "/api/v1/namespaces", accept);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    assert_eq!(pb::envelope(&body).1, "NamespaceList");
    let (_, body) = admin_get_bytes(&server, "/api/v1/configmaps", accept);
    assert_eq!(pb::envelope(&body).1, "ConfigMapList");
    // q values: JSON preferred wins.
    let (ct, _) = admin_get_bytes(
        &server,
        "/api/v1/namespaces",
        "application/vnd.kubernetes.protobuf;q=0.5, application/json",
    );
    assert_eq!(ct, "application/json");

    // A watch: 4-byte big-endian length + WatchEvent{type, RawExtension{k8s\0 object}}.
    let (ct, body) = admin_get_bytes(
        &server,
        "/api/v1/namespaces/default/secrets?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2",
        accept,
    );
    assert_eq!(ct, "application/vnd.kubernetes.protobuf;stream=watch");
    let mut rest = body.as_slice();
    let mut events = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let event = pb::WatchEvent::decode(&rest[4..4 + len]).unwrap();
        let (api_version, kind, raw) = pb::envelope(&event.object.unwrap().raw);
        assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Secret"));
        events.push((event.r#type, pb::Secret::decode(raw.as_slice()).unwrap()));
        rest = &rest[4 + len..];
    }
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(&types[..3], ["ADDED", "ADDED", "BOOKMARK"], "{types:?}");
    assert_eq!(events[1].1.data["k"], b"v2");
    let end = events[2].1.metadata.as_ref().unwrap();
    assert_eq!(end.annotations["k8s.io/initial-events-end"], "true");
    assert!(end.name.is_empty() && !end.resource_version.is_empty());
    assert!(types[3..].iter().all(|t| *t == "BOOKMARK"));

    assert!(server.stop().success());
}

#[test]
fn aggregated_discovery_serves_kubectl_without_per_group_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(&atrest_bin(), &dir.path().join("data"), &[]);
    let k = server.kubectl();
    let v2 =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (ct, body) = admin_get_bytes(&server, "/api", v2);
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let core: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(core["kind"], "APIGroupDiscoveryList");
    assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
    let resources = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap();
    let ns = resources
        .iter()
        .find(|r| r["resource"] == "namespaces")
        .unwrap();
    // The fields and values kube-apiserver 1.36 answers for namespaces.
    assert_eq!(ns["scope"], "Cluster");
    assert_eq!(ns["singularResource"], "namespace");
    assert_eq!(ns["shortNames"], serde_json::json!(["ns"]));
    assert_eq!(
        ns["responseKind"],
        serde_json::json!({"group": "", "version": "", "kind": "Namespace"})
    );
    assert_eq!(ns["subresources"][0]["subresource"], "status");
    assert_eq!(core["items"][0]["versions"][0]["freshness"], "Current");
    let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let (ct, body) = admin_get_bytes(&server, "/apis", old);
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    );
    let groups: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["metadata"]["name"] == "apiextensions.k8s.io"));
    // Plain JSON still gets the legacy documents.
    let (ct, body) = admin_get_bytes(&server, "/apis", "application/json");
    assert_eq!(ct, "application/json");
    assert!(String::from_utf8_lossy(&body).contains("APIGroupList"));

    // A CRD's group appears in the aggregated document.
    k.ok_with_input(
        &["apply", "-f", "-"],
        br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"pandas.bears.example"},"spec":{"group":"bears.example","scope":"Namespaced","names":{"plural":"pandas","singular":"panda","kind":"Panda","shortNames":["pd"]},"versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#,
    );
    let (_, body) = admin_get_bytes(&server, "/apis", v2);
    let groups: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bears = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "bears.example")
        .unwrap_or_else(|| panic!("{groups:#}"));
    let panda = &bears["versions"][0]["resources"][0];
    assert_eq!(panda["resource"], "pandas");
    assert_eq!(
        panda["responseKind"],
        serde_json::json!({"group": "bears.example", "version": "v1", "kind": "Panda"})
    );
    assert_eq!(panda["shortNames"], serde_json::json!(["pd"]));

    // Real kubectl: api-resources from the aggregated documents, and no per-group-version
    // discovery request (no fallback to /api/v1 or /apis/<group>/<version>).
    let fresh = Kubectl::new(&server.kubeconfig(), &dir.path().join("cache2"));
    let out = fresh.run(&["api-resources", "-v=6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        "secrets",
        "namespaces",
        "pandas",
        "customresourcedefinitions",
    ] {
        assert!(table.lines().any(|l| l.starts_with(line)), "{table}");
    }
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let fresh = Kubectl::new(&server.kubeconfig(), &dir.path().join("cache3"));
    let out = fresh.run(&["get", "secrets", "-v=8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = log + &String::from_utf8_lossy(&out.stderr);
    let discovery: Vec<&str> = log.lines().filter(|l| l.contains("GET https://")).collect();
    assert!(discovery.iter().any(|l| l.contains("/api?")), "{log}");
    for l in &discovery {
        let url = l.split("GET ").nth(1).unwrap_or("");
        let path = url.split_once("://").map(|(_, r)| r).unwrap_or("");
        let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
        let path = path.split(['?', ' ']).next().unwrap_or("");
        let segments: Vec<&str> = path.split('/').collect();
        let per_group = matches!(segments.as_slice(), ["api", _] | ["apis", _, _]);
        assert!(!per_group, "legacy discovery request: {l}\n{log}");
    }
    assert!(server.stop().success());
}

/// The same secrets, written by the real kube-apiserver, listed and watched in protobuf from
/// it and from atrest on the same etcd: the envelopes and every item's and event's bytes are
/// kube-apiserver's. Skipped when the upstream binary is not on this machine.
#[test]
fn protobuf_lists_and_watch_frames_equal_kube_apiservers() {
    use atrest_testkit::upstream::KubeApiServer;
    use prost::Message;

    /// A list with its items kept as raw bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawList {
        #[prost(bytes = "vec", tag = "1")]
        metadata: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        items: Vec<Vec<u8>>,
    }

    let cluster = EtcdCluster::single();
    let etcd = cluster.endpoints()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let identity = write(
        dir.path(),
        "identity.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    );
    // Without the watch cache, kube-apiserver watches etcd directly (this etcd has no
    // progress notifications for the cache).
    let Some(kas) = KubeApiServer::start(&etcd, &identity, &["--watch-cache=false"]) else {
        return;
    };
    let kk = kas.kubectl();
    kk.ok(&["create", "namespace", "wire"]);
    for i in 0..3 {
        kk.ok(&[
            "-n",
            "wire",
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=k=v{i}"),
        ]);
    }
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &etcd,
            "--encryption-provider-config",
            identity.to_str().unwrap(),
        ],
    );
    let accept = "application/vnd.kubernetes.protobuf, */*";
    let kas_get = |path: &str| -> Vec<u8> {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-H",
                &format!("Authorization: Bearer {}", atrest_testkit::upstream::TOKEN),
            ])
            .args(["-H", &format!("Accept: {accept}")])
            .arg(format!("https://127.0.0.1:{}{path}", kas.port))
            .output()
            .unwrap();
        out.stdout
    };
    let list_path = "/api/v1/namespaces/wire/secrets";
    let upstream = kas_get(list_path);
    let (ct, ours) = admin_get_bytes(&server, list_path, accept);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let (up_env, our_env) = (pb::envelope(&upstream), pb::envelope(&ours));
    assert_eq!((&up_env.0, &up_env.1), (&our_env.0, &our_env.1));
    let up = RawList::decode(up_env.2.as_slice()).unwrap();
    let us = RawList::decode(our_env.2.as_slice()).unwrap();
    assert_eq!(up.items.len(), 3);
    assert_eq!(
        up.items, us.items,
        "every Secret's bytes are kube-apiserver's"
    );
    // ListMeta: the same fields (the resourceVersion is etcd's revision when each read).
    let (um, om) = (
        pb::ListMeta::decode(up.metadata.as_slice()).unwrap(),
        pb::ListMeta::decode(us.metadata.as_slice()).unwrap(),
    );
    assert_eq!(
        (um.self_link, um.r#continue, um.remaining_item_count),
        (om.self_link, om.r#continue, om.remaining_item_count)
    );
    let rv = |m: &[u8]| m.len() - pb::ListMeta::decode(m).unwrap().resource_version.len();
    assert_eq!(
        rv(&up.metadata),
        rv(&us.metadata),
        "the same ListMeta layout"
    );

    // Watch frames of the same objects: byte for byte.
    let watch_path =
        "/api/v1/namespaces/wire/secrets?watch=true&resourceVersion=0&timeoutSeconds=2";
    let frames = |body: &[u8]| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = body;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(rest[..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        out
    };
    let mut up_frames = frames(&kas_get(watch_path));
    let (ct, body) = admin_get_bytes(&server, watch_path, accept);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf;stream=watch");
    let mut our_frames = frames(&body);
    up_frames.sort();
    our_frames.sort();
    assert_eq!(
        up_frames.len(),
        3,
        "kube-apiserver sent the 3 secrets as ADDED"
    );
    assert_eq!(up_frames, our_frames);
    eprintln!(
        "compared {} list items and {} watch frames with kube-apiserver's",
        up.items.len(),
        up_frames.len()
    );
    assert!(server.stop().success());
    drop(kas);
}

/// `generateName` creates never conflict: a taken generated name is retried with another.
/// 5,000 creates from 16 concurrent clients by default (the full 50,000 took 45 s on two
/// busy cores, too long for every run);
/// `ATREST_GENERATE_NAME_CREATES=50000` runs the full 50,000.
#[test]
fn generate_name_creates_never_conflict() {
    let count: usize = std::env::var("ATREST_GENERATE_NAME_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(&atrest_bin(), &dir.path().join("data"), &[]);
    let client = std::sync::Arc::new(
        atrest_client::KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    const WORKERS: usize = 16;
    let names: Vec<(u16, String)> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let client = client.clone();
            let share = count / WORKERS + usize::from(w < count % WORKERS);
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"generateName": "g-"}, "data": {"k": "v"}});
                let mut out = Vec::with_capacity(share);
                for _ in 0..share {
                    let r = client
                        .request(
                            http::Method::POST,
                            "/api/v1/namespaces/default/configmaps",
                            Some(&body),
                        )
                        .await
                        .unwrap();
                    let name = r.json().unwrap()["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    out.push((r.status, name));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(names.len(), count);
    let failed: Vec<_> = names.iter().filter(|(s, _)| *s != 201).collect();
    assert!(
        failed.is_empty(),
        "{} of {count} creates failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let unique: std::collections::HashSet<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(unique.len(), count, "every generated name is distinct");
    let list = runtime
        .block_on(client.get_json("/api/v1/namespaces/default/configmaps"))
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), count);
    assert!(server.stop().success());
}
