//! Storage keys, laid out as kube-apiserver lays them out in etcd:
//! `<prefix>/<resource prefix>[/<namespace>]/<name>`, where the prefix is
//! `--etcd-prefix` (default `/registry`) normalised like Go's
//! `path.Join("/", prefix)`, and the resource prefix is the resource name for
//! built-in resources (`secrets`, `configmaps`, `namespaces`) and
//! `<group>/<plural>` for custom resources and CRDs.
//!
//! The key is also the authenticated data of the encryption providers, so it
//! must match kube-apiserver's byte for byte.
//!
//! Not covered: the multi-segment prefixes of built-ins atrest does not serve
//! (`services/specs`, `services/endpoints`); [`StorageKey::parse`] reports
//! built-in resources with an empty group because their keys carry none.

use std::fmt;

/// Why a key could not be built or parsed. Names are not secret and are
/// shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The object has no name.
    #[error("name is required")]
    EmptyName,
    /// A namespaced resource was addressed without a namespace.
    #[error("namespace is required for {resource}")]
    EmptyNamespace {
        /// The resource prefix.
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
    #[error("key {key:?} is not under the prefix {prefix:?}")]
    NotUnderPrefix {
        /// The key.
        key: String,
        /// The configured prefix.
        prefix: String,
    },
    /// The key does not have the segments its resource needs.
    #[error("key {key:?} is not <prefix>/<resource>[/<namespace>]/<name>")]
    Malformed {
        /// The key.
        key: String,
    },
}

/// The normalised etcd prefix (`--etcd-prefix`), without trailing `/` except
/// for the root prefix `/` itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Normalises like Go's `path.Join("/", prefix)`: rooted, `.`/`..` and
    /// repeated slashes resolved, no trailing slash.
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

    /// The prefix with exactly one trailing `/`, as the etcd3 store uses it.
    fn with_slash(&self) -> String {
        if self.0.ends_with('/') {
            self.0.clone()
        } else {
            format!("{}/", self.0)
        }
    }

    /// Where the objects of one resource (optionally in one namespace) live,
    /// with a trailing `/`, for listing and watching:
    /// `/registry/secrets/` or `/registry/secrets/default/`.
    pub fn collection(
        &self,
        resource_prefix: &str,
        namespace: Option<&str>,
    ) -> Result<String, KeyError> {
        let mut key = format!("{}{resource_prefix}/", self.with_slash());
        if let Some(namespace) = namespace {
            check_segment("namespace", namespace)?;
            key.push_str(namespace);
            key.push('/');
        }
        Ok(key)
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        KeyPrefix("/registry".to_owned())
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

/// A storage key (and the encryption providers' authenticated data).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey(String);

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// API group; empty for built-in resources, whose keys carry no group.
    pub group: String,
    /// Resource (plural) name, e.g. `secrets`.
    pub resource: String,
    /// Namespace; `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

/// Cluster-scoped resources atrest knows by default, as (group, resource).
pub const DEFAULT_CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
];

impl StorageKey {
    /// `<prefix>/<resource_prefix>[/<namespace>]/<name>`.
    pub fn object(
        prefix: &KeyPrefix,
        resource_prefix: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<StorageKey, KeyError> {
        if namespace == Some("") {
            return Err(KeyError::EmptyNamespace {
                resource: resource_prefix.to_owned(),
            });
        }
        if name.is_empty() {
            return Err(KeyError::EmptyName);
        }
        check_segment("name", name)?;
        let mut key = prefix.collection(resource_prefix, namespace)?;
        key.push_str(name);
        Ok(StorageKey(key))
    }

    /// `/registry/secrets/<namespace>/<name>`.
    pub fn secret(prefix: &KeyPrefix, namespace: &str, name: &str) -> Result<Self, KeyError> {
        Self::object(prefix, "secrets", Some(namespace), name)
    }

    /// `/registry/configmaps/<namespace>/<name>`.
    pub fn config_map(prefix: &KeyPrefix, namespace: &str, name: &str) -> Result<Self, KeyError> {
        Self::object(prefix, "configmaps", Some(namespace), name)
    }

    /// `/registry/namespaces/<name>`.
    pub fn namespace(prefix: &KeyPrefix, name: &str) -> Result<Self, KeyError> {
        Self::object(prefix, "namespaces", None, name)
    }

    /// `/registry/<group>/<plural>[/<namespace>]/<name>`.
    pub fn custom_resource(
        prefix: &KeyPrefix,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Self, KeyError> {
        Self::object(prefix, &format!("{group}/{plural}"), namespace, name)
    }

    /// `/registry/apiextensions.k8s.io/customresourcedefinitions/<name>`.
    pub fn custom_resource_definition(prefix: &KeyPrefix, name: &str) -> Result<Self, KeyError> {
        Self::object(
            prefix,
            "apiextensions.k8s.io/customresourcedefinitions",
            None,
            name,
        )
    }

    /// Wraps an existing key (e.g. one read back from the store) unchecked.
    pub fn from_raw(key: String) -> Self {
        StorageKey(key)
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key bytes (the authenticated data of the providers).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Splits a key into group, resource, namespace and name.
    ///
    /// A first segment containing a dot is a group (custom resources, CRDs,
    /// APIServices: groups of those always contain a dot); otherwise it is a
    /// built-in resource. `is_cluster_scoped(group, resource)` decides
    /// whether a namespace segment follows; [`DEFAULT_CLUSTER_SCOPED`] lists
    /// the ones atrest serves itself.
    pub fn parse(
        key: &str,
        prefix: &KeyPrefix,
        is_cluster_scoped: impl Fn(&str, &str) -> bool,
    ) -> Result<ParsedKey, KeyError> {
        let root = prefix.with_slash();
        let rest = key
            .strip_prefix(root.as_str())
            .ok_or_else(|| KeyError::NotUnderPrefix {
                key: key.to_owned(),
                prefix: prefix.as_str().to_owned(),
            })?;
        let malformed = || KeyError::Malformed {
            key: key.to_owned(),
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (group, resource, tail) = match segments.as_slice() {
            [group, resource, tail @ ..] if group.contains('.') => (*group, *resource, tail),
            [resource, tail @ ..] => ("", *resource, tail),
            [] => return Err(malformed()),
        };
        let (namespace, name) = match (is_cluster_scoped(group, resource), tail) {
            (true, [name]) => (None, *name),
            (false, [namespace, name]) => (Some(*namespace), *name),
            _ => return Err(malformed()),
        };
        if resource.is_empty() || name.is_empty() || namespace == Some("") {
            return Err(malformed());
        }
        check_segment("name", name)?;
        if let Some(namespace) = namespace {
            check_segment("namespace", namespace)?;
        }
        Ok(ParsedKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        })
    }
}

/// [`StorageKey::parse`]'s scope test for [`DEFAULT_CLUSTER_SCOPED`].
pub fn is_default_cluster_scoped(group: &str, resource: &str) -> bool {
    DEFAULT_CLUSTER_SCOPED.contains(&(group, resource))
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    }

    #[test]
    fn builds_upstream_keys() {
        let registry = KeyPrefix::default();
        let cases = [
            (
                StorageKey::secret(&registry, "ns", "s1"),
                "/registry/secrets/ns/s1",
            ),
            (
                StorageKey::config_map(&registry, "ns", "cm1"),
                "/registry/configmaps/ns/cm1",
            ),
            (
                StorageKey::namespace(&registry, "namespace1"),
                "/registry/namespaces/namespace1",
            ),
            (
                StorageKey::custom_resource(&registry, "cr.bar.com", "foos", Some("ns"), "cr1foo"),
                "/registry/cr.bar.com/foos/ns/cr1foo",
            ),
            (
                StorageKey::custom_resource(
                    &registry,
                    "awesome.bears.com",
                    "pandas",
                    None,
                    "cr3panda",
                ),
                "/registry/awesome.bears.com/pandas/cr3panda",
            ),
            (
                StorageKey::custom_resource_definition(&registry, "foos.cr.bar.com"),
                "/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com",
            ),
            (
                StorageKey::secret(&KeyPrefix::new("/"), "ns", "s1"),
                "/secrets/ns/s1",
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(key.unwrap().as_str(), expected);
        }
    }

    #[test]
    fn rejects_bad_names() {
        let registry = KeyPrefix::default();
        for name in [".", "..", "a/b", "a%2f"] {
            assert!(matches!(
                StorageKey::secret(&registry, "ns", name),
                Err(KeyError::InvalidSegment { what: "name", .. })
            ));
        }
        assert_eq!(
            StorageKey::secret(&registry, "ns", ""),
            Err(KeyError::EmptyName)
        );
        assert!(matches!(
            StorageKey::secret(&registry, "", "s"),
            Err(KeyError::EmptyNamespace { .. })
        ));
        assert!(StorageKey::secret(&registry, "..", "s").is_err());
    }

    #[test]
    fn parses_keys_back() {
        let registry = KeyPrefix::default();
        let parse = |key: &str| StorageKey::parse(key, &registry, is_default_cluster_scoped);
        assert_eq!(
            parse("/registry/secrets/ns/s1").unwrap(),
            ParsedKey {
                group: String::new(),
                resource: "secrets".into(),
                namespace: Some("ns".into()),
                name: "s1".into()
            }
        );
        assert_eq!(
            parse("/registry/namespaces/default").unwrap().namespace,
            None
        );
        let crd = parse("/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com")
            .unwrap();
        assert_eq!(
            (crd.group.as_str(), crd.resource.as_str(), crd.name.as_str()),
            (
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "foos.cr.bar.com"
            )
        );
        let cr = parse("/registry/cr.bar.com/foos/ns/cr1foo").unwrap();
        assert_eq!(cr.namespace.as_deref(), Some("ns"));
        let cluster_cr = StorageKey::parse(
            "/registry/awesome.bears.com/pandas/cr3panda",
            &registry,
            |group, resource| group == "awesome.bears.com" && resource == "pandas",
        )
        .unwrap();
        assert_eq!(
            (cluster_cr.namespace, cluster_cr.name.as_str()),
            (None, "cr3panda")
        );
        for bad in [
            "/registry",
            "/registry/",
            "/registry/secrets",
            "/registry/secrets/ns",
            "/registry/secrets/ns/s1/extra",
            "/registry/secrets//s1",
            "/registry/namespaces/a/b",
            "/registry/secrets/ns/..",
            "/other/secrets/ns/s1",
            "/registryx/secrets/ns/s1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let key = StorageKey::secret(&registry, "ns", "s1").unwrap();
        assert_eq!(parse(key.as_str()).unwrap().name, "s1");
    }
}
