//! Storage keys, laid out as kube-apiserver lays them out in etcd (spec g.1):
//! `<prefix>/<resource prefix>[/<namespace>]/<name>`.
//!
//! - The prefix is `--etcd-prefix` (default `/registry`), normalised like Go's
//!   `path.Join("/", prefix)`.
//! - Built-in resources (the core group and kube-apiserver's own named groups such as `apps`)
//!   are stored under their resource name alone, with upstream's exceptions:
//!   replicationcontrollers → `controllers`, nodes → `minions`, services → `services/specs`,
//!   endpoints → `services/endpoints`, ingresses → `ingress`. The service IP and node-port
//!   allocations (`ranges/serviceips`, `ranges/servicenodeports`) are written with the
//!   services storage configuration, so they read with the services providers.
//! - Everything else (custom resources, CustomResourceDefinitions, APIServices) is stored
//!   under `<group>/<plural>`. A group in a key always contains a dot; a resource name never
//!   does, which is how a key is split back.
//! - Names cannot contain `/`, so the number of segments after the resource prefix says
//!   whether a namespace is present: one segment is a cluster-scoped name, two are
//!   namespace and name.
//! - `<prefix>/atrest/` is reserved for atrest's own records (server heartbeats, rotation
//!   state); it holds no Kubernetes objects and is never read through the providers.
//!
//! The key is also the authenticated data of the encryption providers, so it must match
//! kube-apiserver's byte for byte. This module is the only place that builds or parses keys.

use std::fmt;
use std::ops::Range;

use atrest_encryption::GroupResource;

/// Why a key could not be built or parsed. Keys and names are not secret and are shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The object has no name.
    #[error("name is required")]
    EmptyName,
    /// A namespaced resource was addressed with an empty namespace.
    #[error("namespace is required for {resource}")]
    EmptyNamespace {
        /// The resource.
        resource: String,
    },
    /// A name or namespace that cannot be a key segment.
    #[error("{what} {value:?} may not be {reason}")]
    InvalidSegment {
        /// `name` or `namespace`.
        what: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key is not below the configured prefix.
    #[error("key {key:?} is not under the prefix {prefix:?} (--etcd-prefix)")]
    NotUnderPrefix {
        /// The key.
        key: String,
        /// The configured prefix.
        prefix: String,
    },
    /// The key is under `<prefix>/atrest/`, atrest's own records.
    #[error("key {key:?} is one of atrest's own records, not a Kubernetes object")]
    Reserved {
        /// The key.
        key: String,
    },
    /// The key does not have the segments a resource's key has.
    #[error("key {key:?} is not <prefix>/<resource>[/<namespace>]/<name>")]
    Malformed {
        /// The key.
        key: String,
    },
    /// The key is not UTF-8 (kube-apiserver writes only UTF-8 keys).
    #[error("key {key:?} is not valid UTF-8")]
    NotUtf8 {
        /// The key, lossily decoded.
        key: String,
    },
}

/// The segment under the prefix that holds atrest's own records.
const RESERVED_SEGMENT: &str = "atrest";

/// The normalised etcd prefix (`--etcd-prefix`), without trailing `/` except for the root
/// prefix `/` itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Normalises like Go's `path.Join("/", prefix)`: rooted, `.`/`..` and repeated slashes
    /// resolved, no trailing slash.
    pub fn new(prefix: &str) -> Self {
        let mut segments: Vec<&str> = Vec::new();
        for segment in prefix.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other),
            }
        }
        KeyPrefix(format!("/{}", segments.join("/")))
    }

    /// The prefix, e.g. `/registry`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix with exactly one trailing `/`, as the etcd3 store uses it: every object
    /// key starts with it.
    pub fn with_slash(&self) -> String {
        if self.0.ends_with('/') {
            self.0.clone()
        } else {
            format!("{}/", self.0)
        }
    }

    /// Where atrest keeps its own records for this prefix: `<prefix>/atrest/<what>/`. Two
    /// clusters sharing one etcd under different prefixes never see each other's records.
    pub fn reserved(&self, what: &str) -> String {
        format!("{}{what}/", self.reserved_root())
    }

    /// `<prefix>/atrest/`: everything atrest keeps for itself under this prefix.
    pub fn reserved_root(&self) -> String {
        format!("{}{RESERVED_SEGMENT}/", self.with_slash())
    }

    /// Where the objects of one resource (optionally in one namespace) live.
    pub fn collection(
        &self,
        resource: &GroupResource,
        namespace: Option<&str>,
    ) -> Result<Collection, KeyError> {
        let mut prefix = format!("{}{}/", self.with_slash(), resource_segment(resource));
        if let Some(namespace) = namespace {
            if namespace.is_empty() {
                return Err(KeyError::EmptyNamespace {
                    resource: resource.to_string(),
                });
            }
            check_segment("namespace", namespace)?;
            prefix.push_str(namespace);
            prefix.push('/');
        }
        Ok(Collection {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
            prefix,
        })
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        KeyPrefix("/registry".to_owned())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Built-in resources whose key segment is not their resource name, as
/// (resource, key segment).
const SEGMENT_EXCEPTIONS: &[(&str, &str)] = &[
    ("replicationcontrollers", "controllers"),
    ("endpoints", "services/endpoints"),
    ("nodes", "minions"),
    ("services", "services/specs"),
    ("ingresses", "ingress"),
];

/// The API groups of kube-apiserver's own resources, which are stored without their group.
/// (`apiextensions.k8s.io` and `apiregistration.k8s.io` are served by the embedded
/// apiextensions and aggregator servers and are stored with it.)
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apps",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// The key segment(s) of a resource: `secrets`, `services/specs`, `cr.bar.com/foos`.
pub fn resource_segment(resource: &GroupResource) -> String {
    if BUILTIN_GROUPS.contains(&resource.group.as_str()) {
        let name = resource.resource.as_str();
        SEGMENT_EXCEPTIONS
            .iter()
            .find(|(r, _)| *r == name)
            .map_or_else(|| name.to_owned(), |(_, segment)| (*segment).to_owned())
    } else {
        format!("{}/{}", resource.group, resource.resource)
    }
}

/// The group of a built-in resource stored under a bare `<prefix>/<resource>/` key. Core
/// resources and anything unknown map to the core group; that matters only for `*.<group>`
/// rules, and callers that know better (the server, `--resource`) pass the resource in.
fn builtin_group(resource: &str) -> &'static str {
    match resource {
        "deployments" | "replicasets" | "statefulsets" | "daemonsets" | "controllerrevisions" => {
            "apps"
        }
        "jobs" | "cronjobs" => "batch",
        "horizontalpodautoscalers" => "autoscaling",
        "ingresses" | "networkpolicies" | "ingressclasses" | "ipaddresses" | "servicecidrs" => {
            "networking.k8s.io"
        }
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => {
            "rbac.authorization.k8s.io"
        }
        "leases" | "leasecandidates" => "coordination.k8s.io",
        "poddisruptionbudgets" => "policy",
        "storageclasses"
        | "volumeattachments"
        | "csidrivers"
        | "csinodes"
        | "csistoragecapacities"
        | "volumeattributesclasses" => "storage.k8s.io",
        "priorityclasses" => "scheduling.k8s.io",
        "certificatesigningrequests" => "certificates.k8s.io",
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings"
        | "mutatingadmissionpolicies"
        | "mutatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "endpointslices" => "discovery.k8s.io",
        "runtimeclasses" => "node.k8s.io",
        "flowschemas" | "prioritylevelconfigurations" => "flowcontrol.apiserver.k8s.io",
        "storageversionmigrations" => "storagemigration.k8s.io",
        "storageversions" => "internal.apiserver.k8s.io",
        "resourceclaims" | "resourceclaimtemplates" | "resourceslices" | "deviceclasses" => {
            "resource.k8s.io"
        }
        _ => "",
    }
}

/// Checks a name or namespace as `path.IsValidPathSegmentName` does.
fn check_segment(what: &'static str, value: &str) -> Result<(), KeyError> {
    let reason = if value == "." || value == ".." {
        "'.' or '..'"
    } else if value.contains('/') {
        "containing '/'"
    } else if value.contains('%') {
        "containing '%'"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidSegment {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// The objects of one resource, optionally in one namespace: a key prefix ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collection {
    resource: GroupResource,
    namespace: Option<String>,
    prefix: String,
}

impl Collection {
    /// The resource whose objects these are.
    pub fn resource(&self) -> &GroupResource {
        &self.resource
    }

    /// The namespace, if the collection is limited to one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The key prefix, e.g. `/registry/secrets/` or `/registry/secrets/default/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the object `name` (in `namespace`, for a collection of a whole
    /// namespaced resource).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> Result<StorageKey, KeyError> {
        if name.is_empty() {
            return Err(KeyError::EmptyName);
        }
        check_segment("name", name)?;
        let mut text = self.prefix.clone();
        let namespace_range = match (&self.namespace, namespace) {
            (Some(own), _) => {
                let start = text.len() - own.len() - 1;
                Some(start..start + own.len())
            }
            (None, Some(ns)) => {
                if ns.is_empty() {
                    return Err(KeyError::EmptyNamespace {
                        resource: self.resource.to_string(),
                    });
                }
                check_segment("namespace", ns)?;
                let start = text.len();
                text.push_str(ns);
                text.push('/');
                Some(start..start + ns.len())
            }
            (None, None) => None,
        };
        let name_start = text.len();
        text.push_str(name);
        Ok(StorageKey {
            text,
            resource: self.resource.clone(),
            namespace: namespace_range,
            name_start,
        })
    }

    /// The key of a value listed or watched under this collection: its resource is the
    /// collection's, whatever the key's segments would suggest.
    pub fn key_of(&self, raw: &[u8]) -> Result<StorageKey, KeyError> {
        let text = utf8(raw)?;
        let malformed = || KeyError::Malformed {
            key: text.to_owned(),
        };
        let rest =
            text.strip_prefix(self.prefix.as_str())
                .ok_or_else(|| KeyError::NotUnderPrefix {
                    key: text.to_owned(),
                    prefix: self.prefix.clone(),
                })?;
        let start = self.prefix.len();
        let (namespace, name_start) = match (&self.namespace, rest.split_once('/')) {
            (Some(own), None) => {
                let ns_start = start - own.len() - 1;
                (Some(ns_start..ns_start + own.len()), start)
            }
            (None, None) => (None, start),
            (None, Some((ns, name))) if !name.contains('/') => {
                check_segment("namespace", ns)?;
                (Some(start..start + ns.len()), start + ns.len() + 1)
            }
            _ => return Err(malformed()),
        };
        let name = &text[name_start..];
        if name.is_empty() || namespace.as_ref().is_some_and(|r| r.is_empty()) {
            return Err(malformed());
        }
        check_segment("name", name)?;
        Ok(StorageKey {
            text: text.to_owned(),
            resource: self.resource.clone(),
            namespace,
            name_start,
        })
    }
}

fn utf8(raw: &[u8]) -> Result<&str, KeyError> {
    std::str::from_utf8(raw).map_err(|_| KeyError::NotUtf8 {
        key: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// A storage key: the key text (also the providers' authenticated data) and the resource
/// whose providers read and write it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorageKey {
    text: String,
    resource: GroupResource,
    namespace: Option<Range<usize>>,
    name_start: usize,
}

impl StorageKey {
    /// `<prefix>/<resource segment>[/<namespace>]/<name>`.
    pub fn object(
        prefix: &KeyPrefix,
        resource: &GroupResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<StorageKey, KeyError> {
        if namespace == Some("") {
            return Err(KeyError::EmptyNamespace {
                resource: resource.to_string(),
            });
        }
        prefix.collection(resource, None)?.key(namespace, name)
    }

    /// Parses any key under `prefix`, inferring the resource from its segments (see the
    /// module documentation for the rules and exceptions).
    pub fn parse(raw: &[u8], prefix: &KeyPrefix) -> Result<StorageKey, KeyError> {
        let text = utf8(raw)?;
        let root = prefix.with_slash();
        let rest = text
            .strip_prefix(root.as_str())
            .ok_or_else(|| KeyError::NotUnderPrefix {
                key: text.to_owned(),
                prefix: prefix.as_str().to_owned(),
            })?;
        let malformed = || KeyError::Malformed {
            key: text.to_owned(),
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (resource, consumed) = match segments.as_slice() {
            [RESERVED_SEGMENT, ..] => {
                return Err(KeyError::Reserved {
                    key: text.to_owned(),
                })
            }
            [group, plural, _, ..] if group.contains('.') => {
                (GroupResource::new(*group, *plural), 2)
            }
            ["services", "specs", _, ..] => (GroupResource::new("", "services"), 2),
            ["services", "endpoints", _, ..] => (GroupResource::new("", "endpoints"), 2),
            ["ranges", _] => (GroupResource::new("", "services"), 1),
            // A resource name never contains a dot: a group without plural and name.
            [first, ..] if first.contains('.') => return Err(malformed()),
            [first, _, ..] => {
                let resource = SEGMENT_EXCEPTIONS
                    .iter()
                    .find(|(_, segment)| segment == first)
                    .map_or(*first, |(resource, _)| *resource);
                (GroupResource::new(builtin_group(resource), resource), 1)
            }
            _ => return Err(malformed()),
        };
        if resource.resource.is_empty() {
            return Err(malformed());
        }
        let tail = &segments[consumed..];
        let tail_start = root.len()
            + segments[..consumed]
                .iter()
                .map(|s| s.len() + 1)
                .sum::<usize>();
        let (namespace, name_start) = match tail {
            [_name] => (None, tail_start),
            [ns, _name] => (
                Some(tail_start..tail_start + ns.len()),
                tail_start + ns.len() + 1,
            ),
            _ => return Err(malformed()),
        };
        let name = &text[name_start..];
        if name.is_empty() || namespace.as_ref().is_some_and(|r| r.is_empty()) {
            return Err(malformed());
        }
        check_segment("name", name)?;
        if let Some(range) = &namespace {
            check_segment("namespace", &text[range.clone()])?;
        }
        Ok(StorageKey {
            text: text.to_owned(),
            resource,
            namespace,
            name_start,
        })
    }

    /// The same key, read and written with another resource's providers (`--resource`).
    pub fn with_resource(mut self, resource: GroupResource) -> StorageKey {
        self.resource = resource;
        self
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key bytes (the authenticated data of the providers).
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The resource whose providers apply.
    pub fn resource(&self) -> &GroupResource {
        &self.resource
    }

    /// The namespace, for namespaced objects.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_ref().map(|r| &self.text[r.clone()])
    }

    /// The object name.
    pub fn name(&self) -> &str {
        &self.text[self.name_start..]
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageKey({} as {})", self.text, self.resource)
    }
}

impl AsRef<[u8]> for StorageKey {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    fn gr(group: &str, resource: &str) -> GroupResource {
        GroupResource::new(group, resource)
    }

    #[test]
    fn prefix_normalises_like_path_join() {
        for (input, expected) in [
            ("/registry", "/registry"),
            ("registry", "/registry"),
            ("/registry/", "/registry"),
            ("//a//b/./c/../d", "/a/b/d"),
            (
                "43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry",
                "/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry",
            ),
            ("", "/"),
            ("/", "/"),
            ("../..", "/"),
        ] {
            assert_eq!(KeyPrefix::new(input).as_str(), expected, "{input}");
        }
        assert_eq!(KeyPrefix::default(), KeyPrefix::new("/registry"));
        assert_eq!(
            KeyPrefix::default().reserved("servers"),
            "/registry/atrest/servers/"
        );
        assert_eq!(KeyPrefix::new("/").reserved("servers"), "/atrest/servers/");
    }

    #[test]
    fn builds_upstream_keys() {
        let registry = KeyPrefix::default();
        let key = |g: &str, r: &str, ns: Option<&str>, n: &str| {
            StorageKey::object(&registry, &gr(g, r), ns, n)
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(
            key("", "secrets", Some("ns"), "s1"),
            "/registry/secrets/ns/s1"
        );
        assert_eq!(
            key("", "configmaps", Some("ns"), "cm1"),
            "/registry/configmaps/ns/cm1"
        );
        assert_eq!(
            key("", "namespaces", None, "namespace1"),
            "/registry/namespaces/namespace1"
        );
        assert_eq!(key("", "nodes", None, "node1"), "/registry/minions/node1");
        assert_eq!(
            key("", "services", Some("ns"), "svc"),
            "/registry/services/specs/ns/svc"
        );
        assert_eq!(
            key("", "endpoints", Some("ns"), "svc"),
            "/registry/services/endpoints/ns/svc"
        );
        assert_eq!(
            key("networking.k8s.io", "ingresses", Some("ns"), "i"),
            "/registry/ingress/ns/i"
        );
        assert_eq!(
            key("apps", "deployments", Some("ns"), "d"),
            "/registry/deployments/ns/d"
        );
        assert_eq!(
            key("cr.bar.com", "foos", Some("ns"), "cr1foo"),
            "/registry/cr.bar.com/foos/ns/cr1foo"
        );
        assert_eq!(
            key("awesome.bears.com", "pandas", None, "cr3panda"),
            "/registry/awesome.bears.com/pandas/cr3panda"
        );
        assert_eq!(
            key(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "foos.cr.bar.com"
            ),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com"
        );
        assert_eq!(
            StorageKey::object(&KeyPrefix::new("/"), &gr("", "secrets"), Some("ns"), "s1")
                .unwrap()
                .as_str(),
            "/secrets/ns/s1"
        );
    }

    #[test]
    fn rejects_bad_names() {
        let registry = KeyPrefix::default();
        let secrets = gr("", "secrets");
        for name in [".", "..", "a/b", "a%2f"] {
            assert!(matches!(
                StorageKey::object(&registry, &secrets, Some("ns"), name),
                Err(KeyError::InvalidSegment { what: "name", .. })
            ));
        }
        assert_eq!(
            StorageKey::object(&registry, &secrets, Some("ns"), ""),
            Err(KeyError::EmptyName)
        );
        assert!(matches!(
            StorageKey::object(&registry, &secrets, Some(""), "s"),
            Err(KeyError::EmptyNamespace { .. })
        ));
        assert!(StorageKey::object(&registry, &secrets, Some(".."), "s").is_err());
    }

    #[test]
    fn parses_keys_back() {
        let registry = KeyPrefix::default();
        let parse = |key: &str| StorageKey::parse(key.as_bytes(), &registry);
        // (key, (group, resource), namespace, name)
        type Case<'a> = (&'a str, (&'a str, &'a str), Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            ("/registry/secrets/ns/s1", ("", "secrets"), Some("ns"), "s1"),
            (
                "/registry/namespaces/default",
                ("", "namespaces"),
                None,
                "default",
            ),
            ("/registry/minions/node1", ("", "nodes"), None, "node1"),
            (
                "/registry/services/specs/ns/svc",
                ("", "services"),
                Some("ns"),
                "svc",
            ),
            (
                "/registry/services/endpoints/ns/svc",
                ("", "endpoints"),
                Some("ns"),
                "svc",
            ),
            (
                "/registry/controllers/ns/rc",
                ("", "replicationcontrollers"),
                Some("ns"),
                "rc",
            ),
            (
                "/registry/ingress/ns/i",
                ("networking.k8s.io", "ingresses"),
                Some("ns"),
                "i",
            ),
            (
                "/registry/deployments/ns/d",
                ("apps", "deployments"),
                Some("ns"),
                "d",
            ),
            (
                "/registry/clusterroles/admin",
                ("rbac.authorization.k8s.io", "clusterroles"),
                None,
                "admin",
            ),
            (
                "/registry/ranges/serviceips",
                ("", "services"),
                None,
                "serviceips",
            ),
            (
                "/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com",
                ("apiextensions.k8s.io", "customresourcedefinitions"),
                None,
                "foos.cr.bar.com",
            ),
            (
                "/registry/cr.bar.com/foos/ns/cr1foo",
                ("cr.bar.com", "foos"),
                Some("ns"),
                "cr1foo",
            ),
            (
                "/registry/awesome.bears.com/pandas/cr3panda",
                ("awesome.bears.com", "pandas"),
                None,
                "cr3panda",
            ),
        ];
        for (text, (group, resource), namespace, name) in cases {
            let key = parse(text).unwrap();
            assert_eq!(key.resource(), &gr(group, resource), "{text}");
            assert_eq!(key.namespace(), *namespace, "{text}");
            assert_eq!(key.name(), *name, "{text}");
            assert_eq!(key.as_str(), *text);
        }
        for bad in [
            "/registry",
            "/registry/",
            "/registry/secrets",
            "/registry/secrets/ns/s1/extra",
            "/registry/secrets//s1",
            "/registry/secrets/ns/..",
            "/registry/cr.bar.com/foos",
            "/other/secrets/ns/s1",
            "/registryx/secrets/ns/s1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse("/registry/atrest/servers/x"),
            Err(KeyError::Reserved { .. })
        ));
        assert!(matches!(
            StorageKey::parse(b"/registry/secrets/ns/\xff", &registry),
            Err(KeyError::NotUtf8 { .. })
        ));
        let built = StorageKey::object(&registry, &gr("", "secrets"), Some("ns"), "s1").unwrap();
        assert_eq!(parse(built.as_str()).unwrap(), built);
    }

    #[test]
    fn collections_name_their_keys() {
        let registry = KeyPrefix::default();
        let secrets = registry.collection(&gr("", "secrets"), None).unwrap();
        assert_eq!(secrets.prefix(), "/registry/secrets/");
        let key = secrets.key_of(b"/registry/secrets/ns/a").unwrap();
        assert_eq!((key.namespace(), key.name()), (Some("ns"), "a"));
        assert_eq!(key, secrets.key(Some("ns"), "a").unwrap());
        let in_ns = registry.collection(&gr("", "secrets"), Some("ns")).unwrap();
        assert_eq!(in_ns.prefix(), "/registry/secrets/ns/");
        let key = in_ns.key_of(b"/registry/secrets/ns/a").unwrap();
        assert_eq!((key.namespace(), key.name()), (Some("ns"), "a"));
        assert_eq!(key, in_ns.key(None, "a").unwrap());
        let namespaces = registry.collection(&gr("", "namespaces"), None).unwrap();
        let key = namespaces.key_of(b"/registry/namespaces/default").unwrap();
        assert_eq!((key.namespace(), key.name()), (None, "default"));
        // A cluster-scoped custom resource keeps the collection's resource.
        let pandas = registry
            .collection(&gr("awesome.bears.com", "pandas"), None)
            .unwrap();
        let key = pandas
            .key_of(b"/registry/awesome.bears.com/pandas/p1")
            .unwrap();
        assert_eq!(key.resource(), &gr("awesome.bears.com", "pandas"));
        for bad in [
            &b"/registry/secrets/"[..],
            b"/registry/secrets/a/b/c",
            b"/registry/configmaps/ns/a",
            b"/registry/secrets//a",
        ] {
            assert!(
                secrets.key_of(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(in_ns.key_of(b"/registry/secrets/ns/a/b").is_err());
    }
}
