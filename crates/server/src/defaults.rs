//! What the server fills in on create and update: metadata (uid, creationTimestamp,
//! generation), and the kind-specific defaults of the built-in types (Secret `stringData`
//! folded into `data`, `type: Opaque`, Namespace finalizers and phase, CRD status).

use base64::Engine as _;
use serde_json::{json, Map, Value};

use atrest_api::validation::FieldCause;

use atrest_api::kind::Defaults;

use crate::resources::{Builtin, ResourceInfo};
use crate::status::{ApiError, Reason};

/// `2006-01-02T15:04:05Z` for the current time (whole seconds, as metav1.Time).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    atrest_api::codec::format_rfc3339(secs as i64)
}

/// A random (version 4) UUID from the OS CSPRNG.
pub fn new_uid() -> String {
    atrest_encryption::random_uuid()
}

/// Five random characters from upstream's `generateName` alphabet.
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    let _ = getrandom::fill(&mut b);
    b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect()
}

pub fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// Checks apiVersion/kind of a request body against the resource it was sent to, filling
/// them in when absent (as upstream's decoder defaults them from the URL).
pub fn check_type(object: &mut Value, res: &ResourceInfo, version: &str) -> Result<(), ApiError> {
    let expected_api = res.api_version(version);
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(res.kind));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({expected_api}); kind {k:?} is not {:?}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                res.kind
            )))
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(expected_api));
        }
        Some(v) if v == expected_api => {}
        Some(v) if res.builtin.is_none() && res.versions.iter().any(|sv| res.api_version(sv) == v) => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_api})"
            )))
        }
    }
    Ok(())
}

/// Namespace of the body vs the URL: empty is filled in, a different one is refused.
pub fn check_namespace(
    object: &mut Value,
    res: &ResourceInfo,
    url_namespace: Option<&str>,
) -> Result<(), ApiError> {
    let meta = metadata_mut(object)?;
    if !res.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(ns) = url_namespace else {
        return Err(ApiError::bad_request(
            "a namespaced resource needs a namespace in the request path",
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(n) if n == ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// Whether the object asks for a generated name (no name, a generateName).
pub fn wants_generated_name(object: &Value) -> bool {
    let meta = object.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let base = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str);
    name.is_none_or(str::is_empty) && base.is_some_and(|b| !b.is_empty())
}

/// A new generated name for an object whose generated name was taken.
pub fn regenerate_name(object: &mut Value) -> Result<String, ApiError> {
    let meta = metadata_mut(object)?;
    let base = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = format!("{base}{}", name_suffix());
    meta.insert("name".into(), json!(name));
    Ok(name)
}

/// Metadata of a new object: name (or generateName), uid, creationTimestamp, generation.
pub fn prepare_create(object: &mut Value, res: &ResourceInfo) -> Result<String, ApiError> {
    let meta = metadata_mut(object)?;
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if let Some(base) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            name = format!("{base}{}", name_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    if name.is_empty() {
        let causes = [FieldCause::required(
            "metadata.name",
            "name or generateName is required",
        )];
        return Err(ApiError::from_status(
            &atrest_api::validation::invalid_status(&res.group, &res.kind, "", &causes),
        ));
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if res.builtin.is_none() || res.builtin == Some(Builtin::CustomResourceDefinition) {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    Ok(name)
}

/// Carries over what a client may not change on update (uid, creationTimestamp, generation)
/// and bumps generation when a custom resource's spec changes.
pub fn prepare_update(
    object: &mut Value,
    existing: &Value,
    res: &ResourceInfo,
) -> Result<(), ApiError> {
    let old_meta = existing
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let spec_changed = object.get("spec") != existing.get("spec");
    let meta = metadata_mut(object)?;
    if let Some(uid) = meta
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        if Some(uid) != old_meta.get("uid").and_then(Value::as_str) {
            return Err(ApiError::new(
                409,
                Reason::Conflict,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old_meta["uid"].as_str().unwrap_or("")
                ),
            ));
        }
    }
    for field in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if (res.builtin.is_none() || res.builtin == Some(Builtin::CustomResourceDefinition))
        && spec_changed
    {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            + 1;
        meta.insert("generation".into(), json!(generation));
    }
    Ok(())
}

/// Objects are stored with the storage version's apiVersion, whichever served version the
/// client used (custom resource versions share one schema here: no conversion).
pub fn to_storage_version(object: &mut Value, res: &ResourceInfo) {
    if let Some(obj) = object.as_object_mut() {
        obj.insert(
            "apiVersion".into(),
            json!(res.api_version(res.storage_version())),
        );
    }
}

/// Kind-specific defaults of the built-in types.
pub fn apply_defaults(object: &mut Value, res: &ResourceInfo) -> Result<(), ApiError> {
    match res.model().defaults() {
        Defaults::Secret => default_secret(object),
        Defaults::Namespace => {
            let name = crate::objects::object_name(object);
            let meta = metadata_mut(object)?;
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            let obj = object
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("not an object"))?;
            let section =
                |obj: &mut serde_json::Map<String, Value>, field: &str| -> Result<(), ApiError> {
                    let v = obj.entry(field).or_insert_with(|| json!({}));
                    if v.is_null() {
                        *v = json!({});
                    }
                    if v.is_object() {
                        Ok(())
                    } else {
                        Err(ApiError::bad_request(format!(
                            "Namespace {field} must be an object"
                        )))
                    }
                };
            section(obj, "spec")?;
            section(obj, "status")?;
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("finalizers")
                    .or_insert_with(|| json!(["kubernetes"]));
            }
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                status.entry("phase").or_insert_with(|| json!("Active"));
            }
            Ok(())
        }
        Defaults::CustomResourceDefinition => default_crd(object),
        Defaults::None => Ok(()),
    }
}

fn default_secret(object: &mut Value) -> Result<(), ApiError> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("not an object"))?;
    if let Some(string_data) = obj.remove("stringData") {
        let entries = match string_data {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(ApiError::bad_request("stringData must be a map of strings")),
        };
        let data = obj.entry("data").or_insert_with(|| json!({}));
        if data.is_null() {
            *data = json!({});
        }
        let data = data
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("data must be a map"))?;
        for (k, v) in entries {
            let text = v.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("stringData[{k:?}] must be a string"))
            })?;
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
            );
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("type".into(), json!("Opaque"));
        }
        _ => {}
    }
    Ok(())
}

fn default_crd(object: &mut Value) -> Result<(), ApiError> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let names = spec.get("names").cloned().unwrap_or_else(|| json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            accepted["singular"] = json!(kind.to_lowercase());
        }
    }
    if accepted.get("listKind").is_none() {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            accepted["listKind"] = json!(format!("{kind}List"));
        }
    }
    if let Some(n) = object.pointer_mut("/spec/names") {
        *n = accepted.clone();
    }
    let storage: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let now = now_rfc3339();
    let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("not an object"))?;
    obj.insert(
        "status".into(),
        json!({
            "acceptedNames": accepted,
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "storedVersions": storage,
        }),
    );
    Ok(())
}

/// A CRD's `status.storedVersions` accumulates: every version objects may still be stored
/// in stays listed (upstream keeps them until a storage migration removes them).
pub fn carry_stored_versions(object: &mut Value, old: &Value) {
    let mut versions: Vec<Value> = old
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in object
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("storedVersions".into(), Value::Array(versions));
    }
}

/// Structural checks of a CRD that the server relies on to serve it (its name is checked by
/// `atrest_api::validation`).
pub fn validate_crd(object: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let text = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (pointer, field) in [
        ("/group", "spec.group"),
        ("/names/plural", "spec.names.plural"),
        ("/names/kind", "spec.names.kind"),
    ] {
        if text(pointer).is_empty() {
            causes.push(FieldCause::required(field, ""));
        }
    }
    let group = text("/group");
    if !group.is_empty() && !group.contains('.') {
        causes.push(FieldCause::invalid(
            "spec.group",
            &group,
            "should be a domain with at least one dot",
        ));
    }
    if group == "apiextensions.k8s.io" {
        causes.push(FieldCause::invalid(
            "spec.group",
            &group,
            "is reserved for the built-in CustomResourceDefinition API",
        ));
    }
    let scope = text("/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(FieldCause::invalid(
            "spec.scope",
            &scope,
            "must be Namespaced or Cluster",
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(FieldCause::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    } else if versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count()
        != 1
    {
        causes.push(FieldCause::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    #[test]
    fn secret_string_data_is_folded() {
        let mut s = json!({"stringData": {"a": "b"}, "data": {"c": "ZA=="}});
        default_secret(&mut s).unwrap();
        assert_eq!(
            s,
            json!({"data": {"a": "Yg==", "c": "ZA=="}, "type": "Opaque"})
        );
    }
}
