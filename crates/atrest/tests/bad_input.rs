//! The bad-input catalogue against `atrest serve`: each entry is a request a careless or
//! hostile client sends, the status it must get and words its message must contain.
//! Afterwards the store's revision is unchanged (no bad request changed anything) and the
//! server still answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use atrest_client::KubeClient;
use atrest_testkit::AtrestServer;
use common::{aesgcm_secrets_config, atrest_bin, embedded_revision, write};
use serde_json::{json, Value};

/// A kubeconfig for `server` that authenticates with `token` (or with nothing).
fn kubeconfig_with_token(
    server: &AtrestServer,
    dir: &Path,
    name: &str,
    token: Option<&str>,
) -> KubeClient {
    let admin = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_string()
    };
    let user = match token {
        Some(token) => format!("    token: {token}\n"),
        None => "    username: \"\"\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority-data: {}\n    server: \"{}\"\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        field("certificate-authority-data:"),
        field("server:"),
    );
    let path = write(dir, &format!("{name}.kubeconfig"), &text);
    KubeClient::from_kubeconfig(&path).unwrap()
}

struct Bad {
    what: &'static str,
    method: http::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Any one of these (lower case) in the message.
    words: &'static [&'static str],
}

fn bad(
    what: &'static str,
    method: http::Method,
    path: impl Into<String>,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    words: &'static [&'static str],
) -> Bad {
    Bad {
        what,
        method,
        path: path.into(),
        content_type,
        body: body.into(),
        status,
        words,
    }
}

const JSON: Option<&str> = Some("application/json");
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn secret_json(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"a": "Yg=="}})
        .to_string()
        .into_bytes()
}

fn nested(depth: usize) -> String {
    format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"deep\",\"annotations\":{{\"a\":\"b\"}}}},\"x\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn catalogue() -> Vec<Bad> {
    use http::Method as M;
    let mut truncated_protobuf = b"k8s\0\x0a\x02v1\x12\x06Secret\x1a\xff\x01".to_vec();
    truncated_protobuf.extend_from_slice(b"\x0a\x05");
    let huge = vec![b' '; 4 * 1024 * 1024];
    let big_secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"},
        "stringData": {"a": "x".repeat(1_100_000)}})
    .to_string();
    vec![
        bad("malformed JSON", M::POST, SECRETS, JSON, &b"{\"apiVersion\":"[..], 400, &["json", "unexpected end", "eof"]),
        bad("JSON of the wrong shape", M::POST, SECRETS, JSON, &b"[1,2,3]"[..], 400, &["object", "json", "invalid"]),
        bad("a body of another kind", M::POST, SECRETS, JSON,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string(), 400, &["configmap", "kind"]),
        bad("garbage protobuf", M::POST, SECRETS, Some("application/vnd.kubernetes.protobuf"), &b"\x00\x01garbage"[..], 400, &["protobuf", "decode", "invalid", "magic", "prefix"]),
        bad("truncated protobuf", M::POST, SECRETS, Some("application/vnd.kubernetes.protobuf"), truncated_protobuf, 400, &["protobuf", "decode", "truncat", "invalid", "eof", "buffer"]),
        bad("deeply nested JSON", M::POST, SECRETS, JSON, nested(100_000), 400, &["recursion", "depth", "nest", "json"]),
        bad("deeply nested merge patch", M::PATCH, format!("{SECRETS}/victim"), Some("application/merge-patch+json"),
            format!("{{\"metadata\":{{\"annotations\":{{\"a\":{}1{}}}}}}}", "[".repeat(100_000), "]".repeat(100_000)), 400, &["recursion", "depth", "nest", "json"]),
        bad("deeply nested JSON patch value", M::PATCH, format!("{SECRETS}/victim"), Some("application/json-patch+json"),
            format!("[{{\"op\":\"add\",\"path\":\"/metadata/labels\",\"value\":{}{}}}]", "[".repeat(100_000), "]".repeat(100_000)), 400, &["recursion", "depth", "nest", "json"]),
        bad("a 4 MiB body", M::POST, SECRETS, JSON, huge, 413, &["too large"]),
        bad("a Secret over 1 MiB", M::POST, SECRETS, JSON, big_secret, 422, &["too long", "1048576"]),
        bad("a name with a slash", M::POST, SECRETS, JSON, secret_json("a/b"), 422, &["/", "subdomain", "invalid"]),
        bad("the name ..", M::POST, SECRETS, JSON, secret_json(".."), 422, &["..", "invalid"]),
        bad("a unicode name", M::POST, SECRETS, JSON, secret_json("sécret"), 422, &["invalid", "subdomain"]),
        bad("a NUL in a name", M::POST, SECRETS, JSON, secret_json("a\u{0}b"), 422, &["invalid", "subdomain"]),
        bad("%2F in a path name", M::GET, format!("{SECRETS}/a%2Fb"), None, Vec::new(), 400, &["may not", "/"]),
        bad("%00 in a path name", M::GET, format!("{SECRETS}/a%00b"), None, Vec::new(), 404, &["not found", "invalid"]),
        bad(".. in a path", M::GET, "/api/v1/namespaces/default/secrets/../../../configmaps", None, Vec::new(), 404, &["not found", "the server could not find"]),
        bad("a namespace name with dots up", M::GET, "/api/v1/namespaces/../secrets", None, Vec::new(), 400, &["may not be '.' or '..'"]),
        bad("a non-numeric resourceVersion on list", M::GET, format!("{SECRETS}?resourceVersion=abc"), None, Vec::new(), 400, &["resourceversion", "invalid"]),
        bad("a non-numeric resourceVersion on watch", M::GET, format!("{SECRETS}?watch=1&resourceVersion=abc"), None, Vec::new(), 400, &["resourceversion", "invalid"]),
        bad("a watch from i64::MAX", M::GET, format!("{SECRETS}?watch=1&resourceVersion=9223372036854775807"), None, Vec::new(), 400, &["resourceversion", "too large", "invalid", "future"]),
        bad("a resourceVersion past i64::MAX", M::GET, format!("{SECRETS}?resourceVersion=9223372036854775808"), None, Vec::new(), 400, &["resourceversion", "invalid"]),
        bad("a negative resourceVersion", M::GET, format!("{SECRETS}?resourceVersion=-5"), None, Vec::new(), 400, &["resourceversion", "invalid"]),
        bad("an update with a non-numeric resourceVersion", M::PUT, format!("{SECRETS}/victim"), JSON,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim", "resourceVersion": "abc"}}).to_string(), 400, &["resourceversion", "invalid"]),
        bad("an update from i64::MAX", M::PUT, format!("{SECRETS}/victim"), JSON,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim", "resourceVersion": "9223372036854775807"}}).to_string(), 409, &["modified", "conflict", "latest version"]),
        bad("an unknown field under Strict validation", M::POST, format!("{SECRETS}?fieldValidation=Strict"), JSON,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "strict"}, "spec": {"foo": 1}}).to_string(), 400, &["unknown field", "spec"]),
        bad("a field named twice under Strict validation", M::POST, format!("{SECRETS}?fieldValidation=Strict"), JSON,
            &br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"dup1","name":"dup2"}}"#[..], 400, &["duplicate field \"metadata.name\""]),
        bad("a merge patch naming a field twice under Strict validation", M::PATCH, format!("{SECRETS}/victim?fieldValidation=Strict"), Some("application/merge-patch+json"),
            &br#"{"metadata":{"labels":{"a":"1","a":"2"}}}"#[..], 400, &["duplicate field \"metadata.labels.a\""]),
        bad("an unknown fieldValidation", M::POST, format!("{SECRETS}?fieldValidation=Loose"), JSON, secret_json("loose"), 422, &["fieldvalidation", "unsupported value"]),
        bad("a bad label selector", M::GET, format!("{SECRETS}?labelSelector=a%20in%20(b"), None, Vec::new(), 400, &["selector", "parse", "unable"]),
        bad("a bad field selector", M::GET, format!("{SECRETS}?fieldSelector=spec.nodeName%3Dx"), None, Vec::new(), 400, &["field label", "not supported", "selector"]),
        bad("an unsupported patch type", M::PATCH, format!("{SECRETS}/victim"), Some("application/xml"), &b"<x/>"[..], 415, &["unsupported", "media type"]),
        bad("a JSON patch on a missing path", M::PATCH, format!("{SECRETS}/victim"), Some("application/json-patch+json"),
            &b"[{\"op\":\"replace\",\"path\":\"/nope/deeper\",\"value\":1}]"[..], 422, &["missing", "doesn't exist", "nope", "path"]),
        bad("a patch that changes the name", M::PATCH, format!("{SECRETS}/victim"), Some("application/merge-patch+json"),
            &b"{\"metadata\":{\"name\":\"other\"}}"[..], 400, &["name", "does not match"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let enc = aesgcm_secrets_config(dir.path());
    let tokens = write(
        dir.path(),
        "tokens.csv",
        "admin-token-x1,alice,u-1,\"system:masters\"\nbob-token-x2,bob,u-2,devs\n",
    );
    let data = dir.path().join("data");
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &[
            "--encryption-provider-config",
            enc.to_str().unwrap(),
            "--token-auth-file",
            tokens.to_str().unwrap(),
        ],
    );
    let admin = KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap();
    let victim = admin
        .request_bytes(http::Method::POST, SECRETS, JSON, secret_json("victim"))
        .await
        .unwrap();
    assert_eq!(victim.status, 201);
    let before = admin.get_json(&format!("{SECRETS}/victim")).await.unwrap();
    let revision = std::thread::scope(|s| s.spawn(|| embedded_revision(&data)).join().unwrap());

    let mut failures = Vec::new();
    let entries = catalogue();
    for entry in &entries {
        let answer = admin
            .request_bytes(
                entry.method.clone(),
                &entry.path,
                entry.content_type,
                entry.body.clone(),
            )
            .await;
        // After a 413 the server closes the connection without reading the rest of the body;
        // a request the client sent on that closing connection is sent again, once.
        let answer = match answer {
            Err(_) => {
                admin
                    .request_bytes(
                        entry.method.clone(),
                        &entry.path,
                        entry.content_type,
                        entry.body.clone(),
                    )
                    .await
            }
            ok => ok,
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                failures.push(format!("{}: no answer: {e}", entry.what));
                continue;
            }
        };
        let message = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_lowercase))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).to_lowercase());
        if answer.status != entry.status || !entry.words.iter().any(|w| message.contains(w)) {
            failures.push(format!(
                "{}: {} {} answered {} {:?}",
                entry.what,
                entry.method,
                entry.path.chars().take(80).collect::<String>(),
                answer.status,
                message.chars().take(300).collect::<String>()
            ));
        }
    }

    // Credentials: none, a wrong token, a certificate from another CA; a non-admin user
    // probing every kind of path.
    let nobody = kubeconfig_with_token(&server, dir.path(), "nobody", None);
    let wrong = kubeconfig_with_token(&server, dir.path(), "wrong", Some("not-a-token"));
    let bob = kubeconfig_with_token(&server, dir.path(), "bob", Some("bob-token-x2"));
    for (who, client) in [("no credentials", &nobody), ("a wrong token", &wrong)] {
        let answer = client
            .request(http::Method::GET, SECRETS, None)
            .await
            .unwrap();
        if answer.status != 401 {
            failures.push(format!("{who}: answered {}", answer.status));
        }
    }
    let probes: [(http::Method, &str); 12] = [
        (http::Method::GET, "/api/v1/secrets"),
        (
            http::Method::GET,
            "/api/v1/namespaces/default/secrets/victim",
        ),
        (
            http::Method::DELETE,
            "/api/v1/namespaces/default/secrets/victim",
        ),
        (http::Method::POST, "/api/v1/namespaces/default/secrets"),
        (http::Method::GET, "/api/v1/namespaces/default/configmaps"),
        (http::Method::GET, "/api/v1/namespaces"),
        (http::Method::DELETE, "/api/v1/namespaces/default"),
        (
            http::Method::GET,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        ),
        (http::Method::GET, "/api/v1/secrets?watch=1"),
        (http::Method::GET, "/metrics"),
        (
            http::Method::GET,
            "/apis/storagemigration.k8s.io/v1beta1/storageversionmigrations",
        ),
        (
            http::Method::PATCH,
            "/api/v1/namespaces/default/secrets/victim",
        ),
    ];
    for (method, path) in probes {
        let body = if method == http::Method::GET || method == http::Method::DELETE {
            Vec::new()
        } else {
            secret_json("bobs")
        };
        let content_type = if method == http::Method::PATCH {
            Some("application/merge-patch+json")
        } else {
            JSON
        };
        let answer = bob
            .request_bytes(method.clone(), path, content_type, body)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status != 403
            || !text.contains("User \\\"bob\\\" cannot") && !text.contains("forbidden")
        {
            failures.push(format!("bob {method} {path}: {} {text}", answer.status));
        }
    }
    for path in ["/api", "/apis", "/version", "/healthz"] {
        let answer = bob.request(http::Method::GET, path, None).await.unwrap();
        if answer.status != 200 {
            failures.push(format!(
                "bob GET {path}: {} (discovery and health are open)",
                answer.status
            ));
        }
    }
    // A client certificate from a CA the server does not trust is no identity.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&foreign)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/O=system:masters/CN=mallory",
    ]);
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert"])
        .arg(foreign.join("cert.pem"))
        .arg("--key")
        .arg(foreign.join("key.pem"))
        .arg(format!("https://127.0.0.1:{}{SECRETS}", server.port))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    if code != "401" && code != "000" {
        failures.push(format!(
            "a certificate from a foreign CA claiming system:masters: {code}"
        ));
    }

    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not answered as they should be:\n{}",
        failures.len(),
        entries.len() + 19,
        failures.join("\n")
    );
    // Nothing changed: the store's revision and the victim are as they were, and the
    // server still serves.
    assert_eq!(
        std::thread::scope(|s| s.spawn(|| embedded_revision(&data)).join().unwrap()),
        revision,
        "a bad request wrote to the store"
    );
    let after = admin.get_json(&format!("{SECRETS}/victim")).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(
        admin
            .request(http::Method::GET, "/readyz", None)
            .await
            .unwrap()
            .status,
        200
    );
    println!(
        "figure: bad-input catalogue: {} requests (bodies, names, resourceVersions, patches, \
         selectors, strict validation, credentials, a non-admin user on 12 paths): every one \
         a clear error, 0 writes",
        entries.len() + 19
    );
}
