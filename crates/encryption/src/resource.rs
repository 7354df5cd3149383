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
}
