//! Request bodies and response shapes: decoding (JSON or protobuf), strict field checks,
//! normalisation to what the store will hold, validation, patches, selectors and tables.
//! The Kubernetes object rules themselves live in `atrest_api`; this module applies them
//! to the server's resources.

use atrest_api::codec;
use atrest_api::patch::{self, PatchType, ResourceKind};
use atrest_api::selector;
use atrest_api::table::{build_table, IncludeObject, TableKind, TableOptions};
use atrest_api::validation::{self, ValidationKind};
use serde_json::Value;

use crate::options::{FieldValidation, Selectors};
use crate::resources::{Builtin, ResourceInfo};
use crate::status::{ApiError, Reason};

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
            Reason::UnsupportedMediaType,
            kind.unsupported_media_type_message(),
        )
    })?;
    patch::apply_patch(current, patch_type, kind, body).map_err(|e| {
        let code = e.http_status();
        let reason = match code {
            415 => Reason::UnsupportedMediaType,
            409 => Reason::Conflict,
            422 => Reason::Invalid,
            _ => Reason::BadRequest,
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
pub fn check_fields(
    res: &ResourceInfo,
    object: &Value,
    validation: FieldValidation,
) -> Result<(), ApiError> {
    if validation != FieldValidation::Strict {
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

/// Validation of an object about to be stored (`old`: the stored version on update), with
/// upstream's rules and messages; CRDs also get the structural checks the server needs to
/// serve them.
pub fn validate(res: &ResourceInfo, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let kind = match res.builtin {
        Some(Builtin::Secret) => ValidationKind::Secret,
        Some(Builtin::ConfigMap) => ValidationKind::ConfigMap,
        Some(Builtin::Namespace) => ValidationKind::Namespace,
        Some(Builtin::CustomResourceDefinition) => ValidationKind::CustomResourceDefinition,
        None => ValidationKind::CustomResource {
            namespaced: res.namespaced,
        },
    };
    let mut causes = match old {
        Some(old) => validation::validate_update(kind, object, old),
        None => validation::validate_create(kind, object),
    };
    if res.builtin == Some(Builtin::CustomResourceDefinition) {
        causes.extend(crate::defaults::validate_crd(object));
        if let Some(old) = old {
            if old.pointer("/spec/scope") != object.pointer("/spec/scope") {
                causes.push(validation::FieldCause::invalid(
                    "spec.scope",
                    object
                        .pointer("/spec/scope")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    validation::FIELD_IMMUTABLE_MESSAGE,
                ));
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let name = crate::objects::object_name(object);
    let status = validation::invalid_status(&res.group, &res.kind, &name, &causes);
    Err(ApiError::from_status(&status))
}

/// The label and field selectors of a list, watch or deletecollection.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    labels: Option<selector::LabelSelector>,
    fields: Option<selector::FieldSelector>,
}

impl Filter {
    pub fn new(selectors: &Selectors, res: &ResourceInfo) -> Result<Self, ApiError> {
        let labels = selectors
            .labels
            .as_deref()
            .map(selector::parse_label_selector)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let kind = match res.builtin {
            Some(Builtin::Secret) => selector::FieldSelectorKind::Secret,
            Some(Builtin::ConfigMap) => selector::FieldSelectorKind::ConfigMap,
            Some(Builtin::Namespace) => selector::FieldSelectorKind::Namespace,
            Some(Builtin::CustomResourceDefinition) => {
                selector::FieldSelectorKind::CustomResourceDefinition
            }
            None => selector::FieldSelectorKind::CustomResource,
        };
        let fields = selectors
            .fields
            .as_deref()
            .map(|f| selector::parse_field_selector(f, kind))
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.as_ref().is_none_or(|l| l.is_empty())
            && self.fields.as_ref().is_none_or(|f| f.is_empty())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels
            .as_ref()
            .is_none_or(|l| l.matches_object(object))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

/// A `meta.k8s.io/v1 Table` of `items` with upstream's columns for the resource.
pub fn table(
    res: &ResourceInfo,
    version: &str,
    items: &[Value],
    include_object: IncludeObject,
    metadata: &Value,
) -> Result<Value, ApiError> {
    let columns = res
        .printer_columns
        .get(version)
        .cloned()
        .unwrap_or_default();
    let kind = match res.builtin {
        Some(Builtin::Secret) => TableKind::Secret,
        Some(Builtin::ConfigMap) => TableKind::ConfigMap,
        Some(Builtin::Namespace) => TableKind::Namespace,
        Some(Builtin::CustomResourceDefinition) => TableKind::CustomResourceDefinition,
        None => TableKind::CustomResource {
            printer_columns: &columns,
        },
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let options = TableOptions {
        include_object,
        now_unix_seconds: now,
        resource_version: metadata.get("resourceVersion").and_then(Value::as_str),
        continue_token: metadata.get("continue").and_then(Value::as_str),
        remaining_item_count: metadata.get("remainingItemCount").and_then(Value::as_i64),
    };
    build_table(kind, items, &options).map_err(|e| ApiError::internal(e.to_string()))
}
