//! Group/resource names as the configuration and the storage layer use them.

use std::fmt;

/// A Kubernetes group and resource, e.g. `{"", "secrets"}` or `{"awesome.bears.example", "pandas"}`.
///
/// In a configuration either part may be the wildcard `*` (`*.`, `*.apps`, `*.*`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// Upstream `schema.ParseGroupResource`: split at the FIRST dot; the left part is the
    /// resource, the rest the group; no dot means the core group.
    pub fn parse(text: &str) -> Self {
        match text.split_once('.') {
            Some((resource, group)) => GroupResource::new(group, resource),
            None => GroupResource::new("", text),
        }
    }

    pub fn is_wildcard_resource(&self) -> bool {
        self.resource == "*"
    }

    pub fn is_any_group_any_resource(&self) -> bool {
        self.group == "*" && self.resource == "*"
    }

    /// Infers the group/resource of an object from its storage key, the way kube-apiserver
    /// lays keys out: `<prefix>/<resource>/...` for built-in (core and named-group) resources
    /// and `<prefix>/<group>/<plural>/...` for custom resources (the group contains a dot,
    /// a resource name never does).
    ///
    /// `prefix` is the etcd prefix (`/registry` by default). Returns `None` when the key does
    /// not start with the prefix or has no resource segment.
    pub fn from_storage_key(key: &str, prefix: &str) -> Option<Self> {
        let prefix = prefix.trim_end_matches('/');
        let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
        let mut segments = rest.split('/');
        let first = segments.next().filter(|s| !s.is_empty())?;
        if first.contains('.') {
            let plural = segments.next().filter(|s| !s.is_empty())?;
            return Some(GroupResource::new(first, plural));
        }
        // Built-in resources whose storage prefix differs from their resource name.
        let resource = match first {
            "controllers" => "replicationcontrollers",
            "minions" => "nodes",
            "ingress" => "ingresses",
            "services" => match segments.next() {
                Some("endpoints") => "endpoints",
                _ => "services",
            },
            other => other,
        };
        Some(GroupResource::new(builtin_group(resource), resource))
    }
}

/// The API group of the built-in resources kube-apiserver stores under a bare
/// `<prefix>/<resource>/` key. Core resources and anything unknown map to the core group;
/// that matters only for `*.<group>` rules, and an explicit `--resource` overrides it.
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
        "leases" => "coordination.k8s.io",
        "poddisruptionbudgets" => "policy",
        "storageclasses"
        | "volumeattachments"
        | "csidrivers"
        | "csinodes"
        | "csistoragecapacities" => "storage.k8s.io",
        "priorityclasses" => "scheduling.k8s.io",
        "certificatesigningrequests" => "certificates.k8s.io",
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "endpointslices" => "discovery.k8s.io",
        "runtimeclasses" => "node.k8s.io",
        "flowschemas" | "prioritylevelconfigurations" => "flowcontrol.apiserver.k8s.io",
        _ => "",
    }
}

/// Upstream `GroupResource.String()`, except that the core wildcard is shown as `*.` the way
/// configuration files spell it.
impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            if self.resource == "*" {
                f.write_str("*.")
            } else {
                f.write_str(&self.resource)
            }
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

impl fmt::Debug for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupResource({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_upstream() {
        assert_eq!(
            GroupResource::parse("secrets"),
            GroupResource::new("", "secrets")
        );
        assert_eq!(GroupResource::parse("*."), GroupResource::new("", "*"));
        assert_eq!(
            GroupResource::parse("*.apps"),
            GroupResource::new("apps", "*")
        );
        assert_eq!(GroupResource::parse("*.*"), GroupResource::new("*", "*"));
        assert_eq!(
            GroupResource::parse("pandas.awesome.bears.example"),
            GroupResource::new("awesome.bears.example", "pandas")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "secrets",
            "*.",
            "*.apps",
            "*.*",
            "pandas.awesome.bears.example",
        ] {
            assert_eq!(GroupResource::parse(s).to_string(), s);
        }
    }

    #[test]
    fn resource_from_storage_key() {
        let gr = |k: &str| GroupResource::from_storage_key(k, "/registry");
        assert_eq!(
            gr("/registry/secrets/ns/a"),
            Some(GroupResource::new("", "secrets"))
        );
        assert_eq!(
            gr("/registry/namespaces/a"),
            Some(GroupResource::new("", "namespaces"))
        );
        assert_eq!(
            gr("/registry/deployments/ns/d"),
            Some(GroupResource::new("apps", "deployments"))
        );
        assert_eq!(
            gr("/registry/awesome.bears.example/pandas/ns/p"),
            Some(GroupResource::new("awesome.bears.example", "pandas"))
        );
        assert_eq!(
            gr("/registry/services/specs/ns/s"),
            Some(GroupResource::new("", "services"))
        );
        assert_eq!(
            gr("/registry/services/endpoints/ns/s"),
            Some(GroupResource::new("", "endpoints"))
        );
        assert_eq!(gr("/other/secrets/ns/a"), None);
        assert_eq!(gr("/registry/"), None);
        assert_eq!(
            GroupResource::from_storage_key("/p/registry/secrets/a/b", "/p/registry/"),
            Some(GroupResource::new("", "secrets"))
        );
    }
}
