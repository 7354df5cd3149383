//! Writes: create (with generated names), update, patch (re-read and retried on a lost
//! compare-and-swap) and the status subresource, each through the same defaulting,
//! normalisation and validation.

use serde_json::Value;

use super::{Api, GENERATE_NAME_RETRIES, PATCH_RETRIES};
use crate::bodies;
use crate::defaults;
use crate::objects::{object_name, set_resource_version, StoredObject};
use crate::options::{FieldValidation, WriteOptions};
use crate::request::ResourcePath;
use crate::resources::{Builtin, ResourceInfo};
use crate::status::{ApiError, Reason};

impl Api {
    pub(super) async fn require_namespace(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| res.namespaced) else {
            return Ok(());
        };
        let registry = self.registry();
        let Some(ns_res) = registry.find("", "namespaces") else {
            return Ok(());
        };
        match self.objects.get(&ns_res, None, ns).await? {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o)
                if o.object.pointer("/status/phase").and_then(Value::as_str)
                    == Some("Terminating") =>
            {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn create(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let mut object = request_object(res, path, options, content_type, body)?;
        self.require_namespace(res, path.namespace.as_deref())
            .await?;
        let generated = defaults::wants_generated_name(&object);
        let mut name = defaults::prepare_create(&mut object, res)?;
        defaults::to_storage_version(&mut object, res);
        defaults::apply_defaults(&mut object, res)?;
        let object = bodies::normalize(res, object)?;
        bodies::validate(res, &object, None)?;
        if options.dry_run {
            return Ok(object);
        }
        // A generated name that is taken is generated again, as kube-apiserver does.
        let mut object = object;
        let mut attempts = 0;
        let created = loop {
            match self
                .objects
                .create(res, path.namespace.as_deref(), &name, object.clone())
                .await
            {
                Err(e)
                    if generated
                        && e.reason == Reason::AlreadyExists
                        && attempts < GENERATE_NAME_RETRIES =>
                {
                    attempts += 1;
                    name = defaults::regenerate_name(&mut object)?;
                }
                other => break other?,
            }
        };
        self.after_write(res).await?;
        Ok(created)
    }

    /// Writes `object` over `existing` after the update rules (carried-over metadata,
    /// defaults, validation); with `dry`, everything but the write.
    async fn write_update(
        &self,
        res: &ResourceInfo,
        existing: &StoredObject,
        mut object: Value,
        dry: bool,
    ) -> Result<Value, ApiError> {
        defaults::prepare_update(&mut object, &existing.object, res)?;
        defaults::to_storage_version(&mut object, res);
        defaults::apply_defaults(&mut object, res)?;
        if res.builtin == Some(Builtin::CustomResourceDefinition) {
            defaults::carry_stored_versions(&mut object, &existing.object);
        }
        let object = bodies::normalize(res, object)?;
        bodies::validate(res, &object, Some(&existing.object))?;
        if dry {
            let mut object = object;
            set_resource_version(&mut object, existing.mod_revision);
            return Ok(object);
        }
        let updated = self.objects.update(res, existing, object).await?;
        self.after_write(res).await?;
        Ok(updated)
    }

    pub(super) async fn update(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let object = request_object(res, path, options, content_type, body)?;
        if object_name(&object) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object_name(&object)
            )));
        }
        let existing = self.existing(res, path.namespace.as_deref(), name).await?;
        check_resource_version(&object, &existing, res, name)?;
        self.write_update(res, &existing, object, options.dry_run)
            .await
    }

    /// `PUT .../status`: changes only `status`.
    pub(super) async fn update_status(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: WriteOptions,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let incoming = bodies::decode(content_type, body)?;
        let existing = self.existing(res, ns, name).await?;
        check_resource_version(&incoming, &existing, res, name)?;
        let mut object = existing.object.clone();
        if let Some(status) = incoming.get("status") {
            object["status"] = status.clone();
        }
        self.write_update(res, &existing, object, options.dry_run)
            .await
    }

    pub(super) async fn patch(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let mut last_conflict = None;
        // A merge patch names object fields: one named twice is refused as in a create.
        let duplicates = match options.field_validation {
            FieldValidation::Strict if bodies::is_merge_patch(content_type) => {
                bodies::duplicate_fields(body)
            }
            _ => Vec::new(),
        };
        for _ in 0..PATCH_RETRIES {
            let existing = self.existing(res, path.namespace.as_deref(), name).await?;
            let mut patched = bodies::apply_patch(res, content_type, &existing.object, body)?;
            check_object(&mut patched, res, path, options, &duplicates)?;
            if object_name(&patched) != name {
                return Err(ApiError::bad_request("the patch changes the object's name"));
            }
            check_resource_version(&patched, &existing, res, name)?;
            match self
                .write_update(res, &existing, patched, options.dry_run)
                .await
            {
                // A concurrent write won the compare-and-swap: re-read and re-apply.
                Err(e) if e.reason == Reason::Conflict => last_conflict = Some(e),
                other => return other,
            }
        }
        Err(last_conflict.unwrap_or_else(|| ApiError::conflict(&res.group, &res.plural, name)))
    }
}

/// The object a create or update sends, decoded and checked against the request (type,
/// unknown fields, namespace).
fn request_object(
    res: &ResourceInfo,
    path: &ResourcePath,
    options: WriteOptions,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut object = bodies::decode(content_type, body)?;
    // Duplicates are only visible in the bytes (a decoded object keeps the last).
    let duplicates = match options.field_validation {
        FieldValidation::Strict if !bodies::is_protobuf(content_type) => {
            bodies::duplicate_fields(body)
        }
        _ => Vec::new(),
    };
    check_object(&mut object, res, path, options, &duplicates)?;
    Ok(object)
}

/// apiVersion/kind, strict fields and namespace of an object against the request's path.
fn check_object(
    object: &mut Value,
    res: &ResourceInfo,
    path: &ResourcePath,
    options: WriteOptions,
    duplicates: &[String],
) -> Result<(), ApiError> {
    defaults::check_type(object, res, &path.version)?;
    bodies::check_fields(res, object, options.field_validation, duplicates)?;
    defaults::check_namespace(object, res, path.namespace.as_deref())
}

/// A client that names the resourceVersion it read gets a Conflict if the object changed.
fn check_resource_version(
    object: &Value,
    existing: &StoredObject,
    res: &ResourceInfo,
    name: &str,
) -> Result<(), ApiError> {
    let wanted = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !wanted.is_empty() && wanted.parse::<u64>().is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid resourceVersion {wanted:?} in metadata: it must be the decimal \
             resourceVersion the object was read at"
        )));
    }
    if !wanted.is_empty() && wanted != existing.mod_revision.to_string() {
        return Err(ApiError::conflict(&res.group, &res.plural, name));
    }
    Ok(())
}
