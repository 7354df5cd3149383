//! Writes: create (with generated names), update, patch (re-read and retried on a lost
//! compare-and-swap) and the status subresource, each through the same defaulting,
//! normalisation and validation.

use atrest_api::managed::{self, Managers};
use atrest_api::patch::PatchType;
use serde_json::{json, Value};

use super::{Api, GENERATE_NAME_RETRIES, PATCH_RETRIES};
use crate::bodies;
use crate::defaults;
use crate::objects::{object_name, set_resource_version, StoredObject};
use crate::options::{invalid_option, FieldValidation, WriteOptions};
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
        writer: &Writer<'_>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let object = request_object(res, path, &options, content_type, body)?;
        let fields = Fields::Update(writer.update(res, &options, path, ""));
        self.create_object(res, path, &options, object, fields)
            .await
    }

    /// Creates `object` after the create rules (metadata, defaults, validation), with its
    /// managed fields as `fields` says; with `dryRun`, everything but the write.
    async fn create_object(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: &WriteOptions,
        mut object: Value,
        fields: Fields,
    ) -> Result<Value, ApiError> {
        self.require_namespace(res, path.namespace.as_deref())
            .await?;
        let asked_finalizers = object.pointer("/spec/finalizers").is_some();
        let generated = defaults::wants_generated_name(&object);
        let mut name = defaults::prepare_create(&mut object, res)?;
        defaults::to_storage_version(&mut object, res);
        defaults::apply_defaults(&mut object, res)?;
        let mut object = bodies::normalize(res, object)?;
        bodies::validate(res, &object, None)?;
        let managers = match fields {
            Fields::Update(op) => {
                // What upstream's field manager sees: the object before the namespace
                // strategy adds its finalizer.
                let mut seen = object.clone();
                if res.builtin == Some(Builtin::Namespace) && !asked_finalizers {
                    if let Some(spec) = seen.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("finalizers");
                    }
                }
                let request = request_managers(&object);
                op.record(res, request.as_ref(), &empty_object(res), &seen)
            }
            Fields::Set(managers) => managers,
        };
        managed::set_managed_fields(&mut object, &managers);
        if options.dry_run {
            return Ok(object);
        }
        // A generated name that is taken is generated again, as kube-apiserver does.
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
        fields: Fields,
    ) -> Result<Value, ApiError> {
        defaults::prepare_update(&mut object, &existing.object, res)?;
        defaults::to_storage_version(&mut object, res);
        defaults::apply_defaults(&mut object, res)?;
        if res.builtin == Some(Builtin::CustomResourceDefinition) {
            defaults::carry_stored_versions(&mut object, &existing.object);
        }
        let mut object = bodies::normalize(res, object)?;
        bodies::validate(res, &object, Some(&existing.object))?;
        let managers = match fields {
            Fields::Update(op) => {
                // Managed fields the client sent replace the stored ones (upstream lets
                // clients edit them); otherwise the stored ones carry over.
                let request = if op.subresource.is_empty() {
                    request_managers(&object)
                } else {
                    None
                };
                op.record(res, request.as_ref(), &existing.object, &object)
            }
            Fields::Set(managers) => managers,
        };
        managed::set_managed_fields(&mut object, &managers);
        if dry {
            let mut object = object;
            set_resource_version(&mut object, existing.mod_revision);
            return Ok(object);
        }
        let updated = self.objects.update(res, existing, object).await?;
        self.after_write(res).await?;
        Ok(updated)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn update(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        writer: &Writer<'_>,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let object = request_object(res, path, &options, content_type, body)?;
        if object_name(&object) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object_name(&object)
            )));
        }
        let existing = self.existing(res, path.namespace.as_deref(), name).await?;
        check_resource_version(&object, &existing, res, name)?;
        let fields = Fields::Update(writer.update(res, &options, path, ""));
        self.write_update(res, &existing, object, options.dry_run, fields)
            .await
    }

    /// `PUT .../status`: changes only `status`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn update_status(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        name: &str,
        options: WriteOptions,
        writer: &Writer<'_>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let ns = path.namespace.as_deref();
        let incoming = bodies::decode(content_type, body)?;
        let existing = self.existing(res, ns, name).await?;
        check_resource_version(&incoming, &existing, res, name)?;
        let mut object = existing.object.clone();
        if let Some(status) = incoming.get("status") {
            object["status"] = status.clone();
        }
        let fields = Fields::Update(writer.update(res, &options, path, "status"));
        self.write_update(res, &existing, object, options.dry_run, fields)
            .await
    }

    /// A PATCH: an apply patch is server-side apply ([`Api::apply`]); the other types
    /// are applied to the stored object. Returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn patch(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        writer: &Writer<'_>,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(Value, bool), ApiError> {
        if PatchType::from_content_type(content_type) == Some(PatchType::ApplyPatch) {
            return self.apply(res, path, options, name, body).await;
        }
        if options.force {
            return Err(invalid_option(
                "force",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
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
            check_object(&mut patched, res, path, &options, &duplicates)?;
            if object_name(&patched) != name {
                return Err(ApiError::bad_request("the patch changes the object's name"));
            }
            check_resource_version(&patched, &existing, res, name)?;
            let fields = Fields::Update(writer.update(res, &options, path, ""));
            match self
                .write_update(res, &existing, patched, options.dry_run, fields)
                .await
                .map(|o| (o, false))
            {
                // A concurrent write won the compare-and-swap: re-read and re-apply.
                Err(e) if e.reason == Reason::Conflict => last_conflict = Some(e),
                other => return other,
            }
        }
        Err(last_conflict.unwrap_or_else(|| ApiError::conflict(&res.group, &res.plural, name)))
    }

    /// Server-side apply: the configuration merged into the stored object (or created),
    /// owned by `fieldManager`; fields other managers own with other values are a 409
    /// unless `force`. A configuration that changes nothing rewrites nothing, unless the
    /// stored value is stale (then it is re-encrypted with the current write key).
    async fn apply(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        options: WriteOptions,
        name: &str,
        body: &[u8],
    ) -> Result<(Value, bool), ApiError> {
        let Some(manager) = options.field_manager.clone() else {
            return Err(invalid_option(
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        };
        let mut config = managed::parse_apply_config(body).map_err(ApiError::bad_request)?;
        check_object(&mut config, res, path, &options, &[])?;
        match object_name(&config).as_str() {
            "" => {
                defaults::metadata_mut(&mut config)?.insert("name".into(), json!(name));
            }
            n if n == name => {}
            n => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
        }
        let api_version = res.api_version(&path.version);
        let ignored = managed::reset_fields(res.model());
        let now = defaults::now_rfc3339();
        let ctx = managed::Context {
            schema: &res.field_schema,
            ignored: &ignored,
            manager: &manager,
            api_version: &api_version,
            subresource: "",
            now: &now,
        };
        let mut last_conflict = None;
        for _ in 0..PATCH_RETRIES {
            let Some(existing) = self
                .objects
                .get(res, path.namespace.as_deref(), name)
                .await?
            else {
                let (object, managers) = managed::apply(
                    &ctx,
                    &Managers::default(),
                    &empty_object(res),
                    &config,
                    options.force,
                )
                .map_err(|e| apply_error(&e))?;
                match self
                    .create_object(res, path, &options, object, Fields::Set(managers))
                    .await
                {
                    // Created meanwhile: apply to what is there now.
                    Err(e) if e.reason == Reason::AlreadyExists => {
                        last_conflict = Some(e);
                        continue;
                    }
                    other => return other.map(|o| (o, true)),
                }
            };
            let current = Managers::decode(&existing.object).unwrap_or_default();
            let (merged, managers) =
                managed::apply(&ctx, &current, &existing.object, &config, options.force)
                    .map_err(|e| apply_error(&e))?;
            check_resource_version(&merged, &existing, res, name)?;
            match self
                .write_update(
                    res,
                    &existing,
                    merged,
                    options.dry_run,
                    Fields::Set(managers),
                )
                .await
            {
                Err(e) if e.reason == Reason::Conflict => last_conflict = Some(e),
                other => return other.map(|o| (o, false)),
            }
        }
        Err(last_conflict.unwrap_or_else(|| ApiError::conflict(&res.group, &res.plural, name)))
    }
}

/// Who is writing: the request's `User-Agent`, from which a manager is named when the
/// request names none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Writer<'a> {
    pub user_agent: &'a str,
}

impl Writer<'_> {
    /// The update operation of a create, update, patch or status update.
    fn update(
        &self,
        res: &ResourceInfo,
        options: &WriteOptions,
        path: &ResourcePath,
        subresource: &'static str,
    ) -> UpdateOp {
        UpdateOp {
            manager: options
                .field_manager
                .clone()
                .unwrap_or_else(|| managed::manager_from_user_agent(self.user_agent)),
            api_version: res.api_version(&path.version),
            subresource,
        }
    }
}

/// An `Update` operation's manager.
#[derive(Debug)]
struct UpdateOp {
    manager: String,
    api_version: String,
    subresource: &'static str,
}

impl UpdateOp {
    /// The managers after this operation changed `live` into `new` (starting from
    /// `request`'s managers when the client sent some, else `live`'s).
    fn record(
        &self,
        res: &ResourceInfo,
        request: Option<&Managers>,
        live: &Value,
        new: &Value,
    ) -> Managers {
        let base = request
            .cloned()
            .unwrap_or_else(|| Managers::decode(live).unwrap_or_default());
        // The main resource may not set its status; the status subresource sets only it.
        let ignored = if self.subresource.is_empty() {
            managed::reset_fields(res.model())
        } else {
            managed::FieldSet::new()
        };
        let now = defaults::now_rfc3339();
        let ctx = managed::Context {
            schema: &res.field_schema,
            ignored: &ignored,
            manager: &self.manager,
            api_version: &self.api_version,
            subresource: self.subresource,
            now: &now,
        };
        managed::update(&ctx, &base, live, new)
    }
}

/// How a write's managed fields are made.
#[derive(Debug)]
enum Fields {
    /// Recorded for an update operation.
    Update(UpdateOp),
    /// Already computed (server-side apply).
    Set(Managers),
}

/// The managed fields a client sent with the object, when there are some and they are
/// well-formed.
fn request_managers(object: &Value) -> Option<Managers> {
    Managers::decode(object)
        .ok()
        .filter(|m| !m.entries.is_empty())
}

/// The object a create starts from, as upstream's field manager sees it: Go's zero value
/// of the kind (a namespace has empty `spec` and `status`).
fn empty_object(res: &ResourceInfo) -> Value {
    if res.builtin == Some(Builtin::Namespace) {
        json!({"spec": {}, "status": {}})
    } else {
        json!({})
    }
}

/// Upstream's 409 for an apply that conflicts with other managers; a 422 for a
/// configuration whose lists it cannot merge.
fn apply_error(error: &managed::ApplyError) -> ApiError {
    let conflicts = match error {
        managed::ApplyError::Conflicts(c) => c,
        managed::ApplyError::Invalid(message) => {
            return ApiError::new(422, Reason::Invalid, message.clone())
        }
    };
    let causes: Vec<Value> = conflicts
        .0
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager),
                "field": c.field,
            })
        })
        .collect();
    let mut e = ApiError::new(409, Reason::Conflict, conflicts.to_string());
    e.details = Some(json!({ "causes": causes }));
    e
}

/// The object a create or update sends, decoded and checked against the request (type,
/// unknown fields, namespace).
fn request_object(
    res: &ResourceInfo,
    path: &ResourcePath,
    options: &WriteOptions,
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
    options: &WriteOptions,
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
