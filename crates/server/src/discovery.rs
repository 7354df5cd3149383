//! `/version`, discovery (`/api`, `/apis`, per group and version, and the aggregated
//! `APIGroupDiscoveryList` of `/api` and `/apis`) and the minimal
//! `/openapi/v3` documents kubectl needs to pass client-side validation of replace/apply.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::resources::{Registry, ResourceInfo};

/// The Kubernetes version atrest serves (kubectl's dispatcher picks its client by the minor).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+atrest-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /apis`.
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    registry
        .groups()
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut e = group_entry(&g, &vs);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            e
        })
}

/// `GET /api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
        .map(|r| resource_entry(r))
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The `Content-Type` of an aggregated discovery answer in `apidiscovery.k8s.io/<version>`.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// One resource of an aggregated discovery document (`APIResourceDiscovery`). As upstream,
/// a built-in resource's `responseKind` names only the kind (group and version empty);
/// a custom resource's names all three.
fn discovery_resource(r: &ResourceInfo, version: &str) -> Value {
    let response_kind = if r.from_crd {
        json!({"group": r.group, "version": version, "kind": r.kind})
    } else {
        json!({"group": "", "version": "", "kind": r.kind})
    };
    let mut verbs = r.verbs();
    verbs.sort_unstable();
    let mut e = json!({
        "resource": r.plural,
        "responseKind": response_kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if r.model().status_subresource() {
        // The status subresource answers GET and PUT.
        e["subresources"] = json!([{
            "subresource": "status",
            "responseKind": response_kind,
            "verbs": ["get", "update"],
        }]);
    }
    e
}

/// `GET /api` (`core`) or `/apis` with `Accept: application/json;g=apidiscovery.k8s.io;
/// v=<version>;as=APIGroupDiscoveryList`: every group, version and resource in one
/// document, so clients need no request per group/version. `v2` and `v2beta1` have the
/// same shape.
pub fn aggregated(registry: &Registry, core: bool, version: &str) -> Value {
    let group_versions: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        registry.groups()
    };
    let items: Vec<Value> = group_versions
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .all()
                        .iter()
                        .filter(|r| r.group == *group && r.versions.contains(v))
                        .map(|r| discovery_resource(r, v))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({})
            } else {
                json!({"name": group})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// `GET /openapi/v2` as the protobuf `openapi.v2.Document` kubectl asks for: only `swagger`
/// and `info`, no definitions. kubectl falls back to this document to validate a `List`
/// (e.g. `kubectl get -o json | kubectl replace -f -`) and skips items whose kind has no
/// definition, relying on the server's `fieldValidation=Strict` for them.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        // Every field here is far shorter than 128 bytes: a one-byte varint length.
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 0x0a, b"Kubernetes");
    field(
        &mut info,
        0x12,
        format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0").as_bytes(),
    );
    let mut doc = Vec::new();
    field(&mut doc, 0x0a, b"2.0");
    field(&mut doc, 0x12, &info);
    field(&mut doc, 0x42, b"");
    doc
}

/// The group/versions with an OpenAPI document: `api/v1`, `apis/<group>/<version>`.
fn openapi_group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (g, vs) in registry.groups() {
        for v in vs {
            out.push((g.clone(), v));
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3/<api/v1|apis/g/v>`: one path per object URL with the operations kubectl
/// inspects (a `fieldValidation` parameter tells it the server validates fields itself).
pub fn openapi_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let op = |action: &str, id: &str| {
            json!({
                "operationId": format!("{id}{}", r.kind),
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut params = vec![
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        ];
        if r.namespaced {
            params.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        paths.insert(
            item,
            json!({
                "parameters": params,
                "get": op("get", "read"),
                "put": op("put", "replace"),
                "patch": op("patch", "patch"),
                "delete": op("delete", "delete"),
            }),
        );
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection,
            json!({"post": op("post", "create"), "get": op("list", "list")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn hash(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().take(32).map(|b| format!("{b:02X}")).collect()
}

/// `GET /openapi/v3`: where each group/version's document is.
pub fn openapi_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in openapi_group_versions(registry) {
        if let Some(doc) = openapi_document(registry, &g, &v) {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::StorageEncoding;

    #[test]
    fn core_discovery_lists_builtins() {
        let r = Registry::builtin(StorageEncoding::Protobuf);
        let list = resource_list(&r, "", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["namespaces", "secrets", "configmaps"]);
        assert!(resource_list(&r, "apiextensions.k8s.io", "v1").is_some());
        let core = aggregated(&r, true, "v2");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let secrets = &core["items"][0]["versions"][0]["resources"][1];
        assert_eq!(secrets["resource"], "secrets");
        assert_eq!(secrets["scope"], "Namespaced");
        assert_eq!(
            secrets["responseKind"],
            json!({"group": "", "version": "", "kind": "Secret"})
        );
        let groups = aggregated(&r, false, "v2beta1");
        assert_eq!(
            groups["items"][0]["metadata"]["name"],
            "apiextensions.k8s.io"
        );
        let doc = openapi_document(&r, "", "v1").unwrap();
        assert!(
            doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"]["parameters"][0]
                ["name"]
                == "fieldValidation"
        );
        assert!(
            openapi_index(&r)["paths"]["apis/apiextensions.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apiextensions.k8s.io/v1?hash=")
        );
    }
}
