//! The resources the server serves: the built-in ones and those defined by
//! CustomResourceDefinitions, with what discovery, storage and encryption need to know.

use atrest_api::managed::Schema;
use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_encryption::GroupResource;
use serde_json::Value;

/// How a resource's objects are encoded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageEncoding {
    /// `k8s\0` + runtime.Unknown (built-in types, unless `--storage-media-type application/json`).
    Protobuf,
    /// Go `encoding/json` (custom resources and CRDs).
    Json,
}

pub use atrest_api::kind::Builtin;
use atrest_api::kind::{Kind, BUILTINS};

/// One served resource (one group/resource; all its served versions).
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    /// Served versions, the storage version first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub encoding: StorageEncoding,
    pub builtin: Option<Builtin>,
    /// The store key segment(s) after the prefix: `secrets`, `awesome.bears.example/pandas`.
    pub key_segment: String,
    /// `additionalPrinterColumns` of each served version (custom resources).
    pub printer_columns: BTreeMap<String, Vec<Value>>,
    /// Defined by a CustomResourceDefinition in the store (replaced when CRDs change),
    /// rather than served by the server itself.
    pub from_crd: bool,
    /// The granularity of the resource's fields for managedFields and server-side apply
    /// (the kind's, or from the CRD's storage-version `openAPIV3Schema`).
    pub field_schema: std::sync::Arc<atrest_api::managed::Schema>,
}

impl ResourceInfo {
    pub fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(self.group.clone(), self.plural.clone())
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The kind model: what selectors, patches, validation and tables ask of this resource.
    pub fn model(&self) -> Kind {
        match self.builtin {
            Some(b) => Kind::Builtin(b),
            None => Kind::Custom {
                namespaced: self.namespaced,
            },
        }
    }

    /// A built-in resource, from its row of the Kind table.
    fn builtin(builtin: Builtin, builtin_encoding: StorageEncoding) -> Self {
        let info = builtin.info();
        ResourceInfo {
            group: info.group.into(),
            versions: vec![info.version.into()],
            plural: info.plural.into(),
            singular: info.singular.into(),
            kind: info.kind.into(),
            namespaced: info.namespaced,
            short_names: info.short_names.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            encoding: if info.always_json {
                StorageEncoding::Json
            } else {
                builtin_encoding
            },
            builtin: Some(builtin),
            key_segment: info.key_segment.into(),
            printer_columns: BTreeMap::new(),
            from_crd: false,
            field_schema: Arc::new(Schema::for_kind(Kind::Builtin(builtin))),
        }
    }

    /// `storagemigration.k8s.io` StorageVersionMigration: served by the server itself but
    /// handled like a cluster-scoped custom resource (JSON in the store, schema-less, a
    /// status subresource); `migration.rs` runs them.
    fn storage_version_migrations() -> Self {
        ResourceInfo {
            group: crate::migration::GROUP.into(),
            versions: vec!["v1beta1".into(), "v1".into()],
            plural: crate::migration::PLURAL.into(),
            singular: "storageversionmigration".into(),
            kind: "StorageVersionMigration".into(),
            namespaced: false,
            short_names: Vec::new(),
            categories: Vec::new(),
            encoding: StorageEncoding::Json,
            builtin: None,
            // A group of kube-apiserver's own: stored without the group, as upstream does.
            key_segment: crate::migration::PLURAL.into(),
            printer_columns: BTreeMap::new(),
            from_crd: false,
            field_schema: Arc::new(Schema::for_custom(None)),
        }
    }

    /// The resource a (valid, established) CRD object defines.
    pub fn from_crd(crd: &Value) -> Option<Self> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?.to_string();
        let kind = names.get("kind")?.as_str()?.to_string();
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
        let mut versions: Vec<String> = Vec::new();
        let mut printer_columns = BTreeMap::new();
        let mut storage_schema = None;
        for v in spec
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                storage_schema = v.pointer("/schema/openAPIV3Schema");
                versions.insert(0, name.to_string());
            } else {
                versions.push(name.to_string());
            }
            if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
                printer_columns.insert(name.to_string(), cols.clone());
            }
        }
        if versions.is_empty() {
            return None;
        }
        Some(ResourceInfo {
            key_segment: format!("{group}/{plural}"),
            group,
            versions,
            plural,
            singular,
            kind,
            namespaced,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            encoding: StorageEncoding::Json,
            builtin: None,
            printer_columns,
            from_crd: true,
            field_schema: Arc::new(Schema::for_custom(storage_schema)),
        })
    }
}

/// Every served resource. Cheap to clone (shared entries); replaced as a whole when CRDs change.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
}

impl Registry {
    /// The built-in resources. `builtin_encoding` follows `--storage-media-type`.
    pub fn builtin(builtin_encoding: StorageEncoding) -> Self {
        let resources = BUILTINS
            .into_iter()
            .map(|b| ResourceInfo::builtin(b, builtin_encoding))
            .chain([ResourceInfo::storage_version_migrations()]);
        Registry {
            resources: resources.map(Arc::new).collect(),
        }
    }

    /// This registry plus the resources `crds` define (later duplicates are ignored).
    pub fn with_crds<'a>(&self, crds: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut out = Registry {
            resources: self
                .resources
                .iter()
                .filter(|r| !r.from_crd)
                .cloned()
                .collect(),
        };
        for crd in crds {
            if let Some(info) = ResourceInfo::from_crd(crd) {
                if out.find(&info.group, &info.plural).is_none() {
                    out.resources.push(Arc::new(info));
                }
            }
        }
        out
    }

    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    pub fn find(&self, group: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.find(group, plural)
            .filter(|r| r.versions.iter().any(|v| v == version))
    }

    /// Groups with their versions (storage version first), core group excluded.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            if r.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    for v in &r.versions {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                }
                None => groups.push((r.group.clone(), r.versions.clone())),
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_come_from_the_kind_table() {
        let registry = Registry::builtin(StorageEncoding::Protobuf);
        let secrets = registry.find("", "secrets").unwrap();
        assert_eq!(secrets.model(), Kind::SECRET);
        assert_eq!(
            (
                secrets.kind.as_str(),
                secrets.namespaced,
                secrets.key_segment.as_str()
            ),
            ("Secret", true, "secrets")
        );
        assert_eq!(secrets.encoding, StorageEncoding::Protobuf);
        let crds = registry
            .find("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap();
        assert_eq!(crds.encoding, StorageEncoding::Json);
        assert_eq!(crds.short_names, ["crd", "crds"]);
        let migrations = registry
            .find(crate::migration::GROUP, crate::migration::PLURAL)
            .unwrap();
        assert_eq!(migrations.model(), Kind::CLUSTER_CUSTOM);
        let cluster_crd = ResourceInfo::from_crd(&json!({"spec": {
            "group": "example.com", "scope": "Cluster",
            "names": {"plural": "foos", "kind": "Foo"},
            "versions": [{"name": "v1", "served": true, "storage": true}]
        }}))
        .unwrap();
        assert_eq!(cluster_crd.model(), Kind::CLUSTER_CUSTOM);
    }
}
