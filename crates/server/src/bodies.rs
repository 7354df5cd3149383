//! Request bodies and response shapes: decoding (JSON or protobuf), strict field checks,
//! normalisation to what the store will hold, validation, patches, selectors and tables.
//! The Kubernetes object rules themselves live in `atrest_api`; this module applies them
//! to the server's resources.

use atrest_api::codec;
use atrest_api::patch::{self, PatchType};
use atrest_api::selector;
use atrest_api::table::{build_table, IncludeObject, TableOptions};
use atrest_api::validation;
use serde_json::Value;

use crate::options::{FieldValidation, Selectors};
use crate::resources::{Builtin, ResourceInfo};
use crate::status::{ApiError, Reason};

/// Decodes a request body by its `Content-Type`.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    match media_type(content_type).as_str() {
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

/// The media type of a `Content-Type`, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a body is protobuf (no JSON to look for duplicate fields in).
pub fn is_protobuf(content_type: &str) -> bool {
    media_type(content_type) == "application/vnd.kubernetes.protobuf"
}

/// Whether a PATCH body is a JSON merge or strategic merge patch (a partial object).
pub fn is_merge_patch(content_type: &str) -> bool {
    matches!(
        PatchType::from_content_type(content_type),
        Some(PatchType::MergePatch | PatchType::StrategicMergePatch)
    )
}

/// Applies a PATCH body to the current object.
pub fn apply_patch(
    res: &ResourceInfo,
    content_type: &str,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let kind = res.model();
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

/// Fields a JSON document names twice in one object, as paths (`metadata.name`,
/// `items[2].key`): serde keeps the last, upstream's strict decoding refuses them.
pub fn duplicate_fields(json: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

    struct Walk<'a> {
        path: String,
        found: &'a mut Vec<String>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key) {
                    self.found.push(path.clone());
                }
                map.next_value_seed(Walk {
                    path,
                    found: &mut *self.found,
                })?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    found: &mut *self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    // A body that does not parse was refused by `decode` already.
    let _ = Walk {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

/// `fieldValidation=Strict` (kubectl's default): unknown fields of built-in kinds, and any
/// field named twice (`duplicates`, from [`duplicate_fields`]), are a 400.
/// `Warn`/`Ignore` accept them (unknown ones are dropped when the object is normalised).
pub fn check_fields(
    res: &ResourceInfo,
    object: &Value,
    validation: FieldValidation,
    duplicates: &[String],
) -> Result<(), ApiError> {
    if validation != FieldValidation::Strict {
        return Ok(());
    }
    let mut unknown: Vec<String> = duplicates
        .iter()
        .map(|d| format!("duplicate field \"{d}\""))
        .collect();
    // The fields each built-in kind has (upstream's strict decoding refuses the others).
    if let Some(fields) = res.model().fields() {
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
    if res.model().typed() {
        codec::normalize_builtin(&object).map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        Ok(object)
    }
}

/// Validation of an object about to be stored (`old`: the stored version on update), with
/// upstream's rules and messages; CRDs also get the structural checks the server needs to
/// serve them.
pub fn validate(res: &ResourceInfo, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let kind = res.model();
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
        let kind = res.model();
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
    let kind = res.model();
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
    build_table(kind, &columns, items, &options).map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn crd(scope: &str) -> ResourceInfo {
        ResourceInfo::from_crd(&json!({"spec": {
            "group": "example.com", "scope": scope,
            "names": {"plural": "foos", "kind": "Foo"},
            "versions": [{"name": "v1", "served": true, "storage": true}]
        }}))
        .unwrap()
    }

    fn fields(selector: &str) -> Selectors {
        Selectors {
            labels: None,
            fields: Some(selector.into()),
        }
    }

    #[test]
    fn cluster_scoped_custom_resources_have_no_namespace_field() {
        let e = Filter::new(&fields("metadata.namespace=default"), &crd("Cluster")).unwrap_err();
        assert_eq!(e.reason, Reason::BadRequest);
        assert_eq!(e.message, "field label not supported: metadata.namespace");
        assert!(Filter::new(&fields("metadata.name=a"), &crd("Cluster")).is_ok());
        let namespaced =
            Filter::new(&fields("metadata.namespace=default"), &crd("Namespaced")).unwrap();
        assert!(namespaced.matches(&json!({"metadata": {"name": "a", "namespace": "default"}})));
        assert!(!namespaced.matches(&json!({"metadata": {"name": "a", "namespace": "other"}})));
    }

    #[test]
    fn strict_fields_come_from_the_kind() {
        let registry = crate::resources::Registry::builtin(crate::resources::StorageEncoding::Json);
        let secrets = registry.find("", "secrets").unwrap();
        let object =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "spec": {}});
        let e = check_fields(&secrets, &object, FieldValidation::Strict, &[]).unwrap_err();
        assert_eq!(e.message, "strict decoding error: unknown field \"spec\"");
        assert!(check_fields(&secrets, &object, FieldValidation::Lenient, &[]).is_ok());
        // Custom resources are schema-less here: only metadata is checked.
        assert!(check_fields(&crd("Namespaced"), &object, FieldValidation::Strict, &[]).is_ok());
    }

    #[test]
    fn duplicate_fields_are_found_at_any_depth_and_named_by_path() {
        let body = br#"{"kind":"Secret","metadata":{"name":"a","labels":{"x":"1","x":"2"},"name":"b"},"data":{},"items":[{"k":1},{"k":1,"k":2}],"kind":"Secret"}"#;
        assert_eq!(
            duplicate_fields(body),
            ["metadata.labels.x", "metadata.name", "items[1].k", "kind"]
        );
        assert!(duplicate_fields(br#"{"a":{"a":{"a":1}},"b":[1,[2,{"c":null}]]}"#).is_empty());
        // Not JSON: nothing (decoding has refused it already).
        assert!(duplicate_fields(b"{\"a\":").is_empty());

        let registry = crate::resources::Registry::builtin(crate::resources::StorageEncoding::Json);
        let secrets = registry.find("", "secrets").unwrap();
        let object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        let dups = vec!["metadata.name".to_string()];
        let e = check_fields(&secrets, &object, FieldValidation::Strict, &dups).unwrap_err();
        assert_eq!((e.code, e.reason), (400, Reason::BadRequest));
        assert_eq!(
            e.message,
            "strict decoding error: duplicate field \"metadata.name\""
        );
        assert!(check_fields(&secrets, &object, FieldValidation::Lenient, &dups).is_ok());
    }
}
