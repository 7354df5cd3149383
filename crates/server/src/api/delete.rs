//! Deletes: one object (preconditions, KEP-3926's removal of unreadable values, the
//! namespace and CRD cascades) and deletecollection through the same path.

use serde_json::{json, Value};

use super::{list_failure, Api};
use crate::bodies;
use crate::defaults;
use crate::objects::{object_name, set_resource_version, StoredObject};
use atrest_api::kind::Cascade;

use crate::options::{DeleteOptions, Selectors};
use crate::resources::{Builtin, ResourceInfo};
use crate::status::{self, ApiError, Reason};

/// Namespaces upstream refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

impl Api {
    pub(super) async fn delete(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let dry = options.dry_run;
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
            Err(u) if options.ignore_store_read_error => {
                tracing::warn!(key = key.as_str(), error = %u.error, "deleting an unreadable object on request (ignoreStoreReadErrorWithClusterBreakingPotential)");
                if !dry {
                    self.objects.delete(res, &key, u.mod_revision).await?;
                    if res.model().cascade() == Cascade::NamespaceContents {
                        self.empty_namespace(name).await?;
                    }
                    self.after_write(res).await?;
                }
                return Ok(status::success(name, &res.group, &res.plural, None));
            }
            Err(u) => return Err(u.error),
        };
        if let Some(pre_rv) = &options.precondition_resource_version {
            if *pre_rv != existing.mod_revision.to_string() {
                return Err(ApiError::conflict(&res.group, &res.plural, name));
            }
        }
        if let Some(pre_uid) = &options.precondition_uid {
            if Some(pre_uid.as_str())
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
        let revision = match res.model().cascade() {
            Cascade::NamespaceContents => self.delete_namespace(res, &existing, name).await?,
            Cascade::CustomResources => {
                self.delete_custom_resources(&existing.object).await?;
                self.objects
                    .delete(res, &key, existing.mod_revision)
                    .await?
            }
            Cascade::None => {
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
    pub(super) async fn delete_collection(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        selectors: &Selectors,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let filter = bodies::Filter::new(selectors, res)?;
        let page = self.objects.list(res, ns, None, 0, None).await?;
        if !page.failures.is_empty() {
            return Err(list_failure(res, page.failures));
        }
        let options = DeleteOptions {
            dry_run: dry,
            ..DeleteOptions::default()
        };
        let mut deleted = Vec::new();
        for item in page.items.into_iter().filter(|o| filter.matches(&o.object)) {
            let name = object_name(&item.object);
            let item_ns = item
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            match self.delete(res, item_ns.as_deref(), &name, &options).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"kind": res.list_kind(), "apiVersion": res.api_version(res.storage_version()), "metadata": {}, "items": deleted}),
        )
    }
}
