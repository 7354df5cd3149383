//! Authorization: members of `system:masters` may do everything (as upstream's superuser
//! group); everyone else may read discovery, OpenAPI, version and health, and is forbidden
//! everything else. atrest serves no RBAC objects, so this is what a kube-apiserver with RBAC
//! and no bindings answers.

use atrest_auth::authn::UserInfo;
use serde_json::json;

use crate::options::Verb;
use crate::request::{Query, ResourcePath};
use crate::status::{qualified, ApiError};

pub const SUPERUSER_GROUP: &str = "system:masters";

pub fn is_superuser(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == SUPERUSER_GROUP)
}

/// The Kubernetes verb of a resource request.
pub fn verb(method: &http::Method, path: &ResourcePath, query: &Query) -> &'static str {
    Verb::of(method, path.name.is_some(), query).map_or("unknown", Verb::as_str)
}

/// Upstream's Forbidden status for a resource request.
pub fn forbidden(user: &UserInfo, verb: &str, path: &ResourcePath) -> ApiError {
    let subject = match &path.name {
        Some(name) => format!("{} \"{name}\"", qualified(&path.group, &path.resource)),
        None => qualified(&path.group, &path.resource),
    };
    let scope = match &path.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let mut e = ApiError::forbidden(format!(
        "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
        user.name, path.resource, path.group
    ));
    e.details = Some(
        json!({"name": path.name.clone().unwrap_or_default(), "group": path.group, "kind": path.resource}),
    );
    e
}

/// Forbidden for a non-resource path (e.g. `/metrics`).
pub fn forbidden_path(user: &UserInfo, verb: &str, path: &str) -> ApiError {
    ApiError::forbidden(format!(
        "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
        user.name
    ))
}
