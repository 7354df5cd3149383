//! managedFields and server-side apply with the real kubectl: the objects atrest stores
//! equal what the real kube-apiserver stores for the same commands (but for uid, times and
//! resourceVersion); `kubectl apply --server-side` creates, updates, prunes, conflicts with
//! another manager and forces; the storage version migrator's minimal apply patch
//! re-encrypts an object with the current write key and changes nothing else.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::upstream::KubeApiServer;
use atrest_testkit::{embedded_get, etcdctl_get, AtrestServer, Kubectl};
use common::{atrest_bin, config, identity_only, provider, write, K_NEW, K_SB};
use serde_json::{json, Value};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
                color: {type: string}
                tags:
                  type: array
                  x-kubernetes-list-type: set
                  items: {type: string}
"#;

/// The same kubectl session, run against any server.
fn session(k: &Kubectl, dir: &Path) {
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    k.ok(&["create", "configmap", "c1", "--from-literal=x=1"]);
    k.ok(&["label", "secret", "s1", "app=web"]);
    k.ok(&["annotate", "configmap", "c1", "note=hi"]);
    k.ok(&["label", "configmap", "c1", "tier=back"]);
    k.ok(&["create", "namespace", "n1"]);
    k.ok(&["label", "namespace", "n1", "team=a"]);
    // Client-side apply, then an edit of the same object by patch.
    let csa = write(
        dir,
        "csa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c3\n  labels: {a: b}\ndata:\n  one: \"1\"\n  two: \"2\"\n",
    );
    k.ok(&["apply", "-f", csa.to_str().unwrap()]);
    k.ok(&[
        "patch",
        "configmap",
        "c3",
        "--type=merge",
        "-p",
        r#"{"data":{"two":"zwei","three":"3"}}"#,
    ]);
    k.ok(&[
        "patch",
        "secret",
        "s1",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/b"}]"#,
    ]);
    // Server-side apply over another manager's fields.
    let ssa = write(
        dir,
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  labels: {tier: back}\ndata:\n  x: \"1\"\n  y: \"2\"\n",
    );
    k.ok(&["apply", "--server-side", "-f", ssa.to_str().unwrap()]);
    let secret = write(
        dir,
        "s2.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s2\n  labels: {a: b}\nstringData:\n  k: v\ndata:\n  d: eA==\n",
    );
    k.ok(&["apply", "--server-side", "-f", secret.to_str().unwrap()]);
    // A custom resource, created by server-side apply and patched.
    let crd = write(dir, "crd.yaml", CRD);
    k.ok(&["apply", "-f", crd.to_str().unwrap()]);
    k.ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.example.com",
    ]);
    let widget = write(
        dir,
        "widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n  tags: [a, b]\n",
    );
    k.ok(&["apply", "--server-side", "-f", widget.to_str().unwrap()]);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"color":"red"}}"#,
    ]);
}

const KEYS: &[&str] = &[
    "/registry/secrets/default/s1",
    "/registry/secrets/default/s2",
    "/registry/configmaps/default/c1",
    "/registry/configmaps/default/c3",
    "/registry/namespaces/n1",
    "/registry/example.com/widgets/default/w1",
];

/// A stored object (protobuf or JSON) without what differs between servers by nature (uid, creation time,
/// resourceVersion, managedFields times), its managedFields sorted by manager (their
/// order depends on the second each write happened in).
fn comparable(stored: &[u8]) -> Value {
    let mut v = atrest_api::codec::decode_storage(stored).unwrap();
    let meta = v["metadata"].as_object_mut().unwrap();
    meta.remove("uid");
    meta.remove("creationTimestamp");
    meta.remove("resourceVersion");
    if let Some(list) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
        for e in list.iter_mut() {
            e.as_object_mut().unwrap().remove("time");
        }
        list.sort_by_key(|e| (e["operation"].to_string(), e["manager"].to_string()));
    }
    v
}

#[test]
fn stored_managed_fields_equal_kube_apiservers() {
    let dir = tempfile::tempdir().unwrap();
    let identity = write(dir.path(), "identity.yaml", &identity_only("secrets"));
    let upstream_etcd = EtcdCluster::single();
    let Some(kas) = KubeApiServer::start(&upstream_etcd.endpoints()[0], &identity, &[]) else {
        return;
    };
    let ours_etcd = EtcdCluster::single();
    let endpoints = ours_etcd.endpoints().join(",");
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--etcd-servers",
            &endpoints,
            "--encryption-provider-config",
            identity.to_str().unwrap(),
        ],
    );
    let upstream_dir = dir.path().join("upstream");
    let ours_dir = dir.path().join("ours");
    std::fs::create_dir_all(&upstream_dir).unwrap();
    std::fs::create_dir_all(&ours_dir).unwrap();
    session(&kas.kubectl(), &upstream_dir);
    session(&server.kubectl(), &ours_dir);

    for key in KEYS {
        let theirs = etcdctl_get(&upstream_etcd.endpoints(), key)
            .unwrap_or_else(|| panic!("kube-apiserver stored no {key}"));
        let ours = etcdctl_get(&ours_etcd.endpoints(), key)
            .unwrap_or_else(|| panic!("atrest stored no {key}"));
        // uid and times have fixed sizes: equal objects are equally long when encoded.
        assert_eq!(ours.len(), theirs.len(), "{key}: stored sizes differ");
        let (theirs, ours) = (comparable(&theirs), comparable(&ours));
        assert_eq!(
            ours,
            theirs,
            "{key}:\natrest:         {}\nkube-apiserver: {}",
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap()
        );
        assert!(
            theirs.pointer("/metadata/managedFields/0").is_some(),
            "{key} has managedFields"
        );
    }
    // kubectl hides them unless asked.
    let k = server.kubectl();
    assert!(!k
        .ok(&["get", "secret", "s1", "-o", "yaml"])
        .contains("managedFields"));
    assert!(k
        .ok(&["get", "secret", "s1", "-o", "yaml", "--show-managed-fields"])
        .contains("manager: kubectl-label"));
    drop(kas);
}

/// `curl` against the server with its admin token: (HTTP status, body).
fn curl(
    server: &AtrestServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let token = std::fs::read_to_string(server.data_dir.join("admin.token")).unwrap();
    let out = Command::new("curl")
        .args(["-sSk", "-X", method, "-w", "\n%{http_code}"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg("-H")
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(body)
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (json_text, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json_text).unwrap_or(Value::Null),
    )
}

#[test]
fn server_side_apply_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(&atrest_bin(), &dir.path().join("data"), &[]);
    let k = server.kubectl();
    let applied = |name: &str, text: &str| {
        let f = write(dir.path(), name, text);
        k.run(&["apply", "--server-side", "-f", f.to_str().unwrap()])
    };

    // Create, update, and prune what the applier stopped applying.
    let out = applied(
        "v1.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels: {a: b}\ndata:\n  key: one\n  other: x\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap/app serverside-applied"));
    let cm = k.json(&["get", "configmap", "app", "--show-managed-fields"]);
    assert_eq!(cm["data"], json!({"key": "one", "other": "x"}));
    let entry = &cm["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:data": {"f:key": {}, "f:other": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
    );
    let out = applied(
        "v2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  key: one\n",
    );
    assert!(out.status.success(), "{out:?}");
    let cm = k.json(&["get", "configmap", "app", "--show-managed-fields"]);
    assert_eq!(cm["data"], json!({"key": "one"}));
    assert_eq!(cm["metadata"].get("labels"), None, "{cm}");

    // Another manager changes the field: applying another value is a conflict.
    k.ok(&[
        "patch",
        "configmap",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"key":"two"}}"#,
    ]);
    let v3 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  key: three\n";
    let out = applied("v3.yaml", v3);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.key"
        ),
        "{stderr}"
    );
    assert_eq!(
        k.ok(&["get", "configmap", "app", "-o", "jsonpath={.data.key}"]),
        "two"
    );
    // The Status kubectl got.
    let (code, status) = curl(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/app?fieldManager=other",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  key: four\n",
    );
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-patch\" using v1", "field": ".data.key"}])
    );
    // --force-conflicts takes the field.
    let f = write(dir.path(), "v3.yaml", v3);
    k.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        f.to_str().unwrap(),
    ]);
    let cm = k.json(&["get", "configmap", "app", "--show-managed-fields"]);
    assert_eq!(cm["data"]["key"], "three");
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["kubectl"], "kubectl-patch owned only .data.key");

    // An apply patch needs a field manager (upstream's 422), and valid YAML.
    let (code, status) = curl(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/app",
        "application/apply-patch+yaml",
        v3,
    );
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, status) = curl(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/app?fieldManager=x",
        "application/apply-patch+yaml",
        "data: [",
    );
    assert_eq!(code, 400, "{status}");
    let (code, _) = curl(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/app?fieldManager=x&force=true",
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(code, 422);

    // Custom resources: maps granular, lists by the schema's list type.
    let crd = write(dir.path(), "crd.yaml", CRD);
    k.ok(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    k.ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.example.com",
    ]);
    let out = applied(
        "w1.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n  color: red\n  tags: [a]\n",
    );
    assert!(out.status.success(), "{out:?}");
    let out = applied(
        "w2.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 4\n  tags: [a, b]\n",
    );
    assert!(out.status.success(), "{out:?}");
    let w = k.json(&["get", "widget", "w1", "--show-managed-fields"]);
    assert_eq!(w["spec"], json!({"size": 4, "tags": ["a", "b"]}));
    assert_eq!(
        w["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:spec": {"f:size": {}, "f:tags": {"v:\"a\"": {}, "v:\"b\"": {}}}})
    );
}

#[test]
fn the_migrators_apply_patch_rewrites_with_the_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key1 = write(
        dir.path(),
        "key1.yaml",
        &config("secrets", &[provider("aesgcm", "key1", K_NEW)]),
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", key1.to_str().unwrap()],
    );
    server.kubectl().ok(&[
        "create",
        "secret",
        "generic",
        "m",
        "--from-literal=pw=hunter2",
    ]);
    assert!(server.stop().success());
    let stored = embedded_get(&data, "/registry/secrets/default/m").unwrap();
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));

    let key2 = write(
        dir.path(),
        "key2.yaml",
        &config(
            "secrets",
            &[
                provider("aesgcm", "key2", K_SB),
                provider("aesgcm", "key1", K_NEW),
            ],
        ),
    );
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", key2.to_str().unwrap()],
    );
    let k = server.kubectl();
    let before = k.json(&["get", "secret", "m", "--show-managed-fields"]);
    let uid = before["metadata"]["uid"].as_str().unwrap();
    let rv = before["metadata"]["resourceVersion"].as_str().unwrap();
    let path =
        "/api/v1/namespaces/default/secrets/m?fieldManager=storage-version-migrator-controller";
    let patch = |rv: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"uid": uid, "resourceVersion": rv}})
            .to_string()
    };
    // A stale resourceVersion is a conflict.
    let (code, status) = curl(
        &server,
        "PATCH",
        path,
        "application/apply-patch+yaml",
        &patch("1"),
    );
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    let (code, after) = curl(
        &server,
        "PATCH",
        path,
        "application/apply-patch+yaml",
        &patch(rv),
    );
    assert_eq!(code, 200, "{after}");
    // Nothing changed in the object (no manager entry either: it applied no field)...
    let mut expected = before.clone();
    let mut got = k.json(&["get", "secret", "m", "--show-managed-fields"]);
    for o in [&mut expected, &mut got] {
        o["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
    }
    assert_eq!(got, expected);
    assert!(!after
        .to_string()
        .contains("storage-version-migrator-controller"));
    // ...but it is stored under the current write key now.
    assert!(server.stop().success());
    let stored = embedded_get(&data, "/registry/secrets/default/m").unwrap();
    assert!(
        stored.starts_with(b"k8s:enc:aesgcm:v1:key2:"),
        "{}",
        String::from_utf8_lossy(&stored[..30.min(stored.len())])
    );

    // Not stale: the same patch writes nothing (the resourceVersion stays).
    let server = AtrestServer::start(
        &atrest_bin(),
        &data,
        &["--encryption-provider-config", key2.to_str().unwrap()],
    );
    let k = server.kubectl();
    let rv = k.ok(&[
        "get",
        "secret",
        "m",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let (code, after) = curl(
        &server,
        "PATCH",
        path,
        "application/apply-patch+yaml",
        &patch(&rv),
    );
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["metadata"]["resourceVersion"], rv.as_str());
}
