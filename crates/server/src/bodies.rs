//! Request bodies and response shapes: decoding (JSON or protobuf), strict field checks,
//! normalisation to what the store will hold, validation, patches, selectors and tables.
//! The Kubernetes object rules themselves live in `atrest_api`; this module applies them
//! to the server's resources.

use atrest_api::codec;
use atrest_api::patch::{self, PatchType, ResourceKind};
use serde_json::Value;

use crate::request::Query;
use crate::resources::{Builtin, ResourceInfo};
use crate::status::ApiError;

/// Decodes a request body by its `Content-Type`.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/vnd.kubernetes.protobuf" => codec::decode_protobuf(body)
            .map_err(|e| ApiError::bad_request(format!("decoding the protobuf body: {e}"))),
        "" | "application/json" | "*/*" => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("decoding the JSON body: {e}")))?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ))
            }
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn patch_kind(res: &ResourceInfo) -> ResourceKind {
    match res.builtin {
        Some(Builtin::Secret) => ResourceKind::Secret,
        Some(Builtin::ConfigMap) => ResourceKind::ConfigMap,
        Some(Builtin::Namespace) => ResourceKind::Namespace,
        Some(Builtin::CustomResourceDefinition) => ResourceKind::CustomResourceDefinition,
        None => ResourceKind::CustomResource,
    }
}

/// Applies a PATCH body to the current object.
pub fn apply_patch(
    res: &ResourceInfo,
    content_type: &str,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let kind = patch_kind(res);
    let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            kind.unsupported_media_type_message(),
        )
    })?;
    patch::apply_patch(current, patch_type, kind, body).map_err(|e| {
        let code = e.http_status();
        let reason = match code {
            415 => "UnsupportedMediaType",
            409 => "Conflict",
            422 => "Invalid",
            _ => "BadRequest",
        };
        ApiError::new(code, reason, e.to_string())
    })
}

/// The fields each built-in kind has (upstream's strict decoding refuses the others when the
/// client asks for `fieldValidation=Strict`, as kubectl does).
fn known_fields(res: &ResourceInfo) -> Option<&'static [&'static str]> {
    match res.builtin {
        Some(Builtin::Secret) => Some(&[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "stringData",
            "type",
            "immutable",
        ]),
        Some(Builtin::ConfigMap) => Some(&[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "binaryData",
            "immutable",
        ]),
        Some(Builtin::Namespace) => Some(&["apiVersion", "kind", "metadata", "spec", "status"]),
        _ => None,
    }
}

const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// `fieldValidation=Strict` (kubectl's default): unknown fields of built-in kinds are a 400.
/// `Warn`/`Ignore` accept them (they are dropped when the object is normalised).
pub fn check_fields(res: &ResourceInfo, object: &Value, query: &Query) -> Result<(), ApiError> {
    if !matches!(query.get("fieldValidation"), Some("Strict")) {
        return Ok(());
    }
    let mut unknown = Vec::new();
    if let Some(fields) = known_fields(res) {
        for k in object.as_object().into_iter().flat_map(|o| o.keys()) {
            if !fields.contains(&k.as_str()) {
                unknown.push(format!("unknown field \"{k}\""));
            }
        }
    }
    for k in object
        .get("metadata")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|o| o.keys())
    {
        if !METADATA_FIELDS.contains(&k.as_str()) {
            unknown.push(format!("unknown field \"metadata.{k}\""));
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        )))
    }
}

/// The object as it will read back from the store (built-in kinds go through their typed
/// model; custom resources stay as sent).
pub fn normalize(res: &ResourceInfo, object: Value) -> Result<Value, ApiError> {
    match res.builtin {
        Some(Builtin::Secret | Builtin::ConfigMap | Builtin::Namespace) => {
            codec::normalize_builtin(&object).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        _ => Ok(object),
    }
}

/// Validation of an object about to be stored (`old`: the stored version on update).
pub fn validate(res: &ResourceInfo, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = crate::objects::object_name(object);
    let mut causes = interim::validate(res, object, old);
    if res.builtin == Some(Builtin::CustomResourceDefinition) {
        causes.extend(crate::defaults::validate_crd(object));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&res.kind, &res.group, &name, causes))
    }
}

pub use interim::Filter;

/// A `meta.k8s.io/v1 Table` of `items`.
pub fn table(res: &ResourceInfo, items: &[Value], metadata: Value) -> Result<Value, ApiError> {
    Ok(interim::table(res, items, metadata))
}

mod interim {
    use serde_json::{json, Value};

    use crate::request::Query;
    use crate::resources::{Builtin, ResourceInfo};
    use crate::status::ApiError;

    pub fn validate(res: &ResourceInfo, object: &Value, _old: Option<&Value>) -> Vec<Value> {
        let mut causes = Vec::new();
        let name = crate::objects::object_name(object);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            causes.push(json!({"reason": "FieldValueInvalid", "field": "metadata.name", "message": format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")}));
        }
        if res.builtin == Some(Builtin::Secret) {
            for k in object
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
            {
                if k.is_empty()
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                {
                    causes.push(json!({"reason": "FieldValueInvalid", "field": format!("data[{k}]"), "message": format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")}));
                }
            }
        }
        causes
    }

    #[derive(Debug, Clone, Default)]
    pub struct Filter {
        labels: Vec<(String, String)>,
        name: Option<String>,
    }

    impl Filter {
        pub fn from_query(query: &Query, _res: &ResourceInfo) -> Result<Self, ApiError> {
            let mut f = Filter::default();
            for req in query
                .get("labelSelector")
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
            {
                let (k, v) = req.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("unable to parse requirement: {req}"))
                })?;
                f.labels.push((
                    k.trim_end_matches('=').to_string(),
                    v.trim_start_matches('=').to_string(),
                ));
            }
            if let Some(fs) = query.get("fieldSelector") {
                if let Some(n) = fs.strip_prefix("metadata.name=") {
                    f.name = Some(n.to_string());
                }
            }
            Ok(f)
        }

        pub fn is_empty(&self) -> bool {
            self.labels.is_empty() && self.name.is_none()
        }

        pub fn matches(&self, object: &Value) -> bool {
            let labels = object.pointer("/metadata/labels");
            self.labels.iter().all(|(k, v)| {
                labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str())
            }) && self
                .name
                .as_deref()
                .is_none_or(|n| crate::objects::object_name(object) == n)
        }
    }

    pub fn table(_res: &ResourceInfo, items: &[Value], metadata: Value) -> Value {
        let rows: Vec<Value> = items.iter().map(|o| json!({"cells": [crate::objects::object_name(o)], "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})).collect();
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}], "rows": rows})
    }
}
