//! The REST verbs over the encrypting object store: get, list, watch, create, update,
//! patch, delete and deletecollection for every served resource.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use atrest_storage::{StorageError, StorageEvent};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::bodies;
use crate::defaults;
use crate::objects::{object_name, set_resource_version, ObjectStore, StoredObject, Unreadable};
use crate::request::{Query, ResourcePath};
use crate::resources::{Builtin, Registry, ResourceInfo, StorageEncoding};
use crate::status::{self, ApiError};

/// Namespaces that exist from the first start.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many more names are generated when a generated name is taken (upstream: 7).
const GENERATE_NAME_RETRIES: usize = 7;

/// How many times a patch is retried when a concurrent write wins the compare-and-swap.
const PATCH_RETRIES: usize = 5;

/// Largest storage value accepted (etcd's default request limit is 1.5 MiB; upstream keeps
/// Secrets and ConfigMaps to 1 MiB of data).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The API server's state shared by all requests.
#[derive(Debug)]
pub struct Api {
    pub objects: ObjectStore,
    /// The served resources and the store revision of the CRD list they were built from
    /// (an older list never replaces a newer one).
    registry: RwLock<(i64, Arc<Registry>)>,
    builtin_encoding: StorageEncoding,
    /// Set when the server shuts down: open watches end so that shutdown does not wait for
    /// them (clients re-establish them elsewhere, as they do with kube-apiserver).
    stopping: tokio::sync::watch::Sender<bool>,
}

/// A response body: one JSON document, or a stream of watch events.
pub enum Reply {
    Json(u16, Value),
    Stream(futures::stream::BoxStream<'static, Bytes>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(code, _) => write!(f, "Reply::Json({code})"),
            Reply::Stream(_) => f.write_str("Reply::Stream"),
        }
    }
}

/// What the client accepts, as far as the server's answer shape goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accept {
    pub table: bool,
    /// The client prefers `application/vnd.kubernetes.protobuf` (kubectl's typed clients).
    pub protobuf: bool,
}

impl Accept {
    pub fn parse(header: &str) -> Self {
        let first = header
            .split(',')
            .next()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        Accept {
            table: atrest_api::table::accepts_table_v1(header),
            protobuf: first.eq_ignore_ascii_case("application/vnd.kubernetes.protobuf"),
        }
    }
}

impl Api {
    pub fn new(objects: ObjectStore, builtin_encoding: StorageEncoding) -> Self {
        Api {
            objects,
            registry: RwLock::new((0, Arc::new(Registry::builtin(builtin_encoding)))),
            builtin_encoding,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every open watch (called when the server starts shutting down).
    pub fn stop_watches(&self) {
        self.stopping.send_replace(true);
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Re-reads every CRD from the store and rebuilds the served resources. Returns the
    /// revision the CRDs were read at, so a watch can continue from exactly there.
    pub async fn reload_crds(&self) -> Result<i64, ApiError> {
        let base = Registry::builtin(self.builtin_encoding);
        let Some(crd_res) = base.find("apiextensions.k8s.io", "customresourcedefinitions") else {
            return Err(ApiError::internal("the CRD resource is not registered"));
        };
        let page = self.objects.list(&crd_res, None, None, 0, None).await?;
        for u in &page.failures {
            tracing::error!(key = %String::from_utf8_lossy(&u.key), error = %u.error, "a CustomResourceDefinition cannot be read; its resources are not served");
        }
        let crds: Vec<Value> = page.items.into_iter().map(|o| o.object).collect();
        let registry = base.with_crds(crds.iter());
        let mut current = self.registry.write().unwrap_or_else(|p| p.into_inner());
        if page.revision >= current.0 {
            *current = (page.revision, Arc::new(registry));
        }
        Ok(page.revision)
    }

    /// Creates the default namespaces that do not exist yet (safe beside other servers).
    pub async fn ensure_default_namespaces(&self) -> Result<(), ApiError> {
        let registry = self.registry();
        let Some(ns) = registry.find("", "namespaces") else {
            return Ok(());
        };
        for name in DEFAULT_NAMESPACES {
            if self.objects.get(&ns, None, name).await?.is_some() {
                continue;
            }
            let mut object =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            defaults::prepare_create(&mut object, &ns)?;
            defaults::apply_defaults(&mut object, &ns)?;
            let object = bodies::normalize(&ns, object)?;
            match self.objects.create(&ns, None, name, object).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn resource(&self, path: &ResourcePath) -> Result<Arc<ResourceInfo>, ApiError> {
        self.registry()
            .lookup(&path.group, &path.version, &path.resource)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
    }

    /// Dispatches one resource request.
    pub async fn handle(
        self: &Arc<Self>,
        method: &http::Method,
        path: &ResourcePath,
        query: &Query,
        content_type: &str,
        accept: Accept,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let res = self.resource(path)?;
        if path.subresource.is_some() {
            return self
                .subresource(method, &res, path, query, content_type, body)
                .await;
        }
        let ns = path.namespace.as_deref();
        let dry = dry_run(query.get("dryRun"))?;
        if res.namespaced && ns.is_none() && path.name.is_some() {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        match (method.as_str(), path.name.as_deref()) {
            ("GET", Some(name)) => self.get(&res, ns, name).await.map(|mut o| {
                // Served in the version asked for (no conversion between CR versions).
                o["apiVersion"] = json!(res.api_version(&path.version));
                Reply::Json(200, o)
            }),
            ("GET", None) if query.flag("watch") => self.watch(&res, ns, query).await,
            ("GET", None) => self
                .list(&res, &path.version, ns, query, accept)
                .await
                .map(|l| Reply::Json(200, l)),
            ("POST", None) => self
                .create(&res, path, query, content_type, &body, dry)
                .await
                .map(|o| Reply::Json(201, o)),
            ("PUT", Some(name)) => self
                .update(&res, path, query, name, content_type, &body, dry)
                .await
                .map(|o| Reply::Json(200, o)),
            ("PATCH", Some(name)) => self
                .patch(&res, path, query, name, content_type, &body, dry)
                .await
                .map(|o| Reply::Json(200, o)),
            ("DELETE", Some(name)) => self
                .delete(&res, ns, name, &body, dry)
                .await
                .map(|o| Reply::Json(200, o)),
            ("DELETE", None) => self
                .delete_collection(&res, ns, query, dry)
                .await
                .map(|o| Reply::Json(200, o)),
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on this path"
            ))),
        }
    }

    async fn subresource(
        self: &Arc<Self>,
        method: &http::Method,
        res: &ResourceInfo,
        path: &ResourcePath,
        query: &Query,
        content_type: &str,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let sub = path.subresource.as_deref().unwrap_or("");
        let name = path.name.as_deref().unwrap_or("");
        let ns = path.namespace.as_deref();
        // Only namespaces and custom resources have a status subresource here.
        let has_status = res.builtin.is_none() || res.builtin == Some(Builtin::Namespace);
        match (sub, method.as_str()) {
            ("status", "GET") if has_status => {
                self.get(res, ns, name).await.map(|o| Reply::Json(200, o))
            }
            ("status", "PUT") if has_status => {
                let dry = dry_run(query.get("dryRun"))?;
                let incoming = bodies::decode(content_type, &body)?;
                let existing = self.existing(res, ns, name).await?;
                check_resource_version(&incoming, &existing, res, name)?;
                // A status update changes only `status`.
                let mut object = existing.object.clone();
                if let Some(status) = incoming.get("status") {
                    object["status"] = status.clone();
                }
                self.write_update(res, &existing, object, dry)
                    .await
                    .map(|o| Reply::Json(200, o))
            }
            _ => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    }

    /// A written CRD changes the served resources at once (other servers follow through
    /// their CRD watch).
    async fn after_write(&self, res: &ResourceInfo) -> Result<(), ApiError> {
        if res.builtin == Some(Builtin::CustomResourceDefinition) {
            self.reload_crds().await?;
        }
        Ok(())
    }

    async fn existing(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<StoredObject, ApiError> {
        self.objects
            .get(res, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    async fn get(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.existing(res, ns, name).await.map(|o| o.object)
    }

    async fn require_namespace(
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

    async fn create(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        query: &Query,
        content_type: &str,
        body: &[u8],
        dry: bool,
    ) -> Result<Value, ApiError> {
        let mut object = request_object(res, path, query, content_type, body)?;
        self.require_namespace(res, path.namespace.as_deref())
            .await?;
        let generated = defaults::wants_generated_name(&object);
        let mut name = defaults::prepare_create(&mut object, res)?;
        defaults::to_storage_version(&mut object, res);
        defaults::apply_defaults(&mut object, res)?;
        let object = bodies::normalize(res, object)?;
        bodies::validate(res, &object, None)?;
        if dry {
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
                        && e.reason == "AlreadyExists"
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

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        query: &Query,
        name: &str,
        content_type: &str,
        body: &[u8],
        dry: bool,
    ) -> Result<Value, ApiError> {
        let object = request_object(res, path, query, content_type, body)?;
        if object_name(&object) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object_name(&object)
            )));
        }
        let existing = self.existing(res, path.namespace.as_deref(), name).await?;
        check_resource_version(&object, &existing, res, name)?;
        self.write_update(res, &existing, object, dry).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        res: &ResourceInfo,
        path: &ResourcePath,
        query: &Query,
        name: &str,
        content_type: &str,
        body: &[u8],
        dry: bool,
    ) -> Result<Value, ApiError> {
        let mut last_conflict = None;
        for _ in 0..PATCH_RETRIES {
            let existing = self.existing(res, path.namespace.as_deref(), name).await?;
            let mut patched = bodies::apply_patch(res, content_type, &existing.object, body)?;
            check_object(&mut patched, res, path, query)?;
            if object_name(&patched) != name {
                return Err(ApiError::bad_request("the patch changes the object's name"));
            }
            check_resource_version(&patched, &existing, res, name)?;
            match self.write_update(res, &existing, patched, dry).await {
                // A concurrent write won the compare-and-swap: re-read and re-apply.
                Err(e) if e.reason == "Conflict" => last_conflict = Some(e),
                other => return other,
            }
        }
        Err(last_conflict.unwrap_or_else(|| ApiError::conflict(&res.group, &res.plural, name)))
    }

    async fn delete(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        body: &[u8],
        dry: bool,
    ) -> Result<Value, ApiError> {
        let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let dry = dry || options_dry_run(&options)?;
        if res.builtin == Some(Builtin::Namespace) && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let key = self.objects.key(res, ns, name)?;
        let found = self
            .objects
            .lookup(res, &key)
            .await?
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        let existing = match found {
            Ok(o) => o,
            // KEP-3926: a value that cannot be decrypted or decoded can still be removed when
            // the client says it accepts the risk (only then, and only for that reason).
            Err(u)
                if options
                    .get("ignoreStoreReadErrorWithClusterBreakingPotential")
                    .and_then(Value::as_bool)
                    == Some(true) =>
            {
                tracing::warn!(key = key.as_str(), error = %u.error, "deleting an unreadable object on request (ignoreStoreReadErrorWithClusterBreakingPotential)");
                if !dry {
                    self.objects.delete(res, &key, u.mod_revision).await?;
                    if res.builtin == Some(Builtin::Namespace) {
                        self.empty_namespace(name).await?;
                    }
                    self.after_write(res).await?;
                }
                return Ok(status::success(name, &res.group, &res.plural, None));
            }
            Err(u) => return Err(u.error),
        };
        if let Some(pre_rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if pre_rv != existing.mod_revision.to_string() {
                return Err(ApiError::conflict(&res.group, &res.plural, name));
            }
        }
        if let Some(pre_uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            if Some(pre_uid)
                != existing
                    .object
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
            {
                return Err(ApiError::conflict(&res.group, &res.plural, name));
            }
        }
        if dry {
            return Ok(existing.object);
        }
        let revision = match res.builtin {
            Some(Builtin::Namespace) => self.delete_namespace(res, &existing, name).await?,
            Some(Builtin::CustomResourceDefinition) => {
                self.delete_custom_resources(&existing.object).await?;
                self.objects
                    .delete(res, &key, existing.mod_revision)
                    .await?
            }
            _ => {
                self.objects
                    .delete(res, &key, existing.mod_revision)
                    .await?
            }
        };
        self.after_write(res).await?;
        let mut object = existing.object;
        set_resource_version(&mut object, revision);
        Ok(object)
    }

    /// Deleting a namespace: mark it Terminating (new content is refused from then on),
    /// remove what it holds, delete it with the revision of the Terminating write (so a
    /// concurrent change fails the delete rather than being lost), and sweep once more for
    /// anything created while the Terminating mark was being written. Synchronous, where
    /// upstream's namespace controller works in the background.
    async fn delete_namespace(
        &self,
        res: &ResourceInfo,
        existing: &StoredObject,
        name: &str,
    ) -> Result<i64, ApiError> {
        let mut terminating = existing.object.clone();
        if let Some(meta) = terminating
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            meta.insert("deletionTimestamp".into(), json!(defaults::now_rfc3339()));
        }
        if let Some(obj) = terminating.as_object_mut() {
            let status = obj.entry("status").or_insert_with(|| json!({}));
            if let Some(status) = status.as_object_mut() {
                status.insert("phase".into(), json!("Terminating"));
            }
        }
        let marked = self.objects.update(res, existing, terminating).await?;
        let marked_revision = marked
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::internal("the Terminating namespace has no resourceVersion")
            })?;
        self.empty_namespace(name).await?;
        let key = self.objects.key(res, None, name)?;
        let revision = self.objects.delete(res, &key, marked_revision).await?;
        self.empty_namespace(name).await?;
        Ok(revision)
    }

    /// Removes everything a namespace holds.
    async fn empty_namespace(&self, ns: &str) -> Result<(), ApiError> {
        for res in self.registry().all().iter().filter(|r| r.namespaced) {
            self.delete_all(res, Some(ns)).await?;
        }
        Ok(())
    }

    async fn delete_custom_resources(&self, crd: &Value) -> Result<(), ApiError> {
        if let Some(info) = ResourceInfo::from_crd(crd) {
            self.delete_all(&info, None).await?;
        }
        Ok(())
    }

    /// Deletes every key of a collection, readable or not.
    async fn delete_all(&self, res: &ResourceInfo, ns: Option<&str>) -> Result<(), ApiError> {
        self.objects.delete_every(res, ns).await
    }

    /// Deletes every matching object through the single-object delete (so namespaces and
    /// CRDs cascade); unreadable objects fail the request, naming their keys.
    async fn delete_collection(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        query: &Query,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let filter = bodies::Filter::from_query(query, res)?;
        let page = self.objects.list(res, ns, None, 0, None).await?;
        if !page.failures.is_empty() {
            return Err(list_failure(res, page.failures));
        }
        let mut deleted = Vec::new();
        for item in page.items.into_iter().filter(|o| filter.matches(&o.object)) {
            let name = object_name(&item.object);
            let item_ns = item
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            match self.delete(res, item_ns.as_deref(), &name, b"", dry).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"kind": res.list_kind(), "apiVersion": res.api_version(res.storage_version()), "metadata": {}, "items": deleted}),
        )
    }

    async fn list(
        &self,
        res: &ResourceInfo,
        version: &str,
        ns: Option<&str>,
        query: &Query,
        accept: Accept,
    ) -> Result<Value, ApiError> {
        let filter = bodies::Filter::from_query(query, res)?;
        let limit = query.usize("limit")?.unwrap_or(0);
        let (mut start_after, mut revision) = match query.get("continue") {
            Some(token) => {
                let (rev, key) = decode_continue(token)?;
                (Some(key), Some(rev))
            }
            None => (None, None),
        };
        // A resourceVersion on a first page means "not older than" upstream, which the
        // current revision satisfies; only `resourceVersionMatch=Exact` pins the read.
        if revision.is_none() && query.get("resourceVersionMatch") == Some("Exact") {
            revision = query
                .get("resourceVersion")
                .filter(|v| *v != "0")
                .map(|v| v.parse::<i64>())
                .transpose()
                .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?;
        }
        let mut items = Vec::new();
        let mut failures = Vec::new();
        let (list_revision, continue_token, remaining) = loop {
            let want = if limit == 0 { 0 } else { limit - items.len() };
            let page = self
                .objects
                .list(res, ns, start_after.clone(), want, revision)
                .await?;
            revision = Some(page.revision);
            failures.extend(page.failures);
            for item in page.items {
                if filter.matches(&item.object) {
                    items.push(item.object);
                }
            }
            start_after = page.last_key.clone();
            let full = limit != 0 && items.len() >= limit;
            if !page.more {
                break (page.revision, None, None);
            }
            if full {
                let token = start_after
                    .as_deref()
                    .map(|k| encode_continue(page.revision, k));
                break (page.revision, token, Some(page.remaining));
            }
        };
        if !failures.is_empty() {
            return Err(list_failure(res, failures));
        }
        let mut metadata = json!({"resourceVersion": list_revision.to_string()});
        if let Some(token) = &continue_token {
            metadata["continue"] = json!(token);
            if filter.is_empty() {
                if let Some(r) = remaining.filter(|r| *r > 0) {
                    metadata["remainingItemCount"] = json!(r);
                }
            }
        }
        if accept.table {
            return bodies::table(res, version, &items, query, &metadata);
        }
        let api_version = res.api_version(res.storage_version());
        Ok(
            json!({"kind": res.list_kind(), "apiVersion": api_version, "metadata": metadata, "items": items}),
        )
    }

    async fn watch(
        self: &Arc<Self>,
        res: &ResourceInfo,
        ns: Option<&str>,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let filter = bodies::Filter::from_query(query, res)?;
        let requested: Option<i64> = query
            .get("resourceVersion")
            .filter(|v| *v != "0")
            .map(str::parse)
            .transpose()
            .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?;
        let mut initial = Vec::new();
        let from = match requested {
            Some(rv) => rv
                .checked_add(1)
                .ok_or_else(|| ApiError::bad_request("invalid resourceVersion"))?,
            None => {
                // No resourceVersion: the current state as ADDED events, then changes.
                let page = self.objects.list(res, ns, None, 0, None).await?;
                for item in page.items.into_iter().filter(|o| filter.matches(&o.object)) {
                    initial.push(event_line("ADDED", &item.object));
                }
                page.revision + 1
            }
        };
        // The previous version is needed only to tell objects entering or leaving a selector.
        let stream = self
            .objects
            .watch(res, ns, from, !filter.is_empty())
            .await?;
        let timeout = query
            .usize("timeoutSeconds")?
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(Duration::from_secs(1800));
        let api = self.clone();
        let events = stream.filter_map(move |event| {
            let line = api.watch_event(&filter, event);
            async move { line }
        });
        let mut stopping = self.stopping.subscribe();
        let deadline = async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        };
        let events = futures::stream::iter(initial)
            .chain(events)
            .take_until(deadline);
        Ok(Reply::Stream(events.boxed()))
    }

    fn watch_event(
        &self,
        filter: &bodies::Filter,
        event: Result<StorageEvent, StorageError>,
    ) -> Option<Bytes> {
        match event {
            Ok(StorageEvent::Put { value, prev }) => {
                let current = match self.objects.decode_entry(value) {
                    Ok(o) => o,
                    Err(u) => return Some(error_event(&u.error)),
                };
                let matches = filter.matches(&current.object);
                if current.is_creation() {
                    return matches.then(|| event_line("ADDED", &current.object));
                }
                // With a selector, an object entering it is ADDED and one leaving it is
                // DELETED, as upstream's watch cache reports; without the previous value
                // (compacted), it is judged by the new one alone.
                let matched_before = match prev {
                    Some(prev) if !filter.is_empty() => match self.objects.decode_entry(*prev) {
                        Ok(o) => filter.matches(&o.object),
                        Err(_) => matches,
                    },
                    _ => matches,
                };
                match (matched_before, matches) {
                    (true, true) => Some(event_line("MODIFIED", &current.object)),
                    (false, true) => Some(event_line("ADDED", &current.object)),
                    (true, false) => Some(event_line("DELETED", &current.object)),
                    (false, false) => None,
                }
            }
            Ok(StorageEvent::Delete { prev, revision }) => {
                let mut object = match self.objects.decode_entry(prev) {
                    Ok(o) => o.object,
                    Err(u) => return Some(error_event(&u.error)),
                };
                set_resource_version(&mut object, revision);
                filter
                    .matches(&object)
                    .then(|| event_line("DELETED", &object))
            }
            Err(e) => Some(error_event(&ApiError::internal(e.to_string()))),
        }
    }
}

/// The object a create or update sends, decoded and checked against the request (type,
/// unknown fields, namespace).
fn request_object(
    res: &ResourceInfo,
    path: &ResourcePath,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut object = bodies::decode(content_type, body)?;
    check_object(&mut object, res, path, query)?;
    Ok(object)
}

/// apiVersion/kind, strict fields and namespace of an object against the request's path.
fn check_object(
    object: &mut Value,
    res: &ResourceInfo,
    path: &ResourcePath,
    query: &Query,
) -> Result<(), ApiError> {
    defaults::check_type(object, res, &path.version)?;
    bodies::check_fields(res, object, query)?;
    defaults::check_namespace(object, res, path.namespace.as_deref())
}

/// Namespaces upstream refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// `dryRun=All` (the only value upstream accepts); absent means a real write.
fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

/// `DeleteOptions.dryRun` (a list).
fn options_dry_run(options: &Value) -> Result<bool, ApiError> {
    let Some(list) = options.get("dryRun").and_then(Value::as_array) else {
        return Ok(false);
    };
    let mut dry = false;
    for v in list {
        dry |= dry_run(v.as_str())?;
    }
    Ok(dry)
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
    if !wanted.is_empty() && wanted != existing.mod_revision.to_string() {
        return Err(ApiError::conflict(&res.group, &res.plural, name));
    }
    Ok(())
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_event(e: &ApiError) -> Bytes {
    event_line("ERROR", &e.to_status())
}

/// One list error naming every key that could not be read (upstream aggregates them too).
fn list_failure(res: &ResourceInfo, failures: Vec<Unreadable>) -> ApiError {
    let causes: Vec<Value> = failures
        .iter()
        .map(|u| json!({"reason": "InternalError", "message": u.error.message, "field": String::from_utf8_lossy(&u.key)}))
        .collect();
    let keys: Vec<String> = failures
        .iter()
        .map(|u| String::from_utf8_lossy(&u.key).into_owned())
        .collect();
    let mut error = ApiError::internal(format!(
        "unable to read {} {} object(s): {}; delete them with ignoreStoreReadErrorWithClusterBreakingPotential=true if they cannot be recovered",
        failures.len(),
        res.group_resource(),
        keys.join(", ")
    ));
    error.details = Some(json!({"kind": res.plural, "causes": causes}));
    error
}

/// Continue tokens: base64 of `{"v":"meta.k8s.io/v1","rv":<rev>,"start":"<key>"}`, the shape
/// upstream uses (opaque to clients).
fn encode_continue(revision: i64, last_key: &[u8]) -> String {
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": revision, "start": String::from_utf8_lossy(last_key)});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, Vec<u8>), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rev, start.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, b"/registry/secrets/ns/a");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, b"/registry/secrets/ns/a".to_vec())
        );
        assert!(decode_continue("!!").is_err());
    }

    #[test]
    fn accept_table() {
        assert!(
            Accept::parse("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").table
        );
        assert!(!Accept::parse("application/json").table);
    }
}
