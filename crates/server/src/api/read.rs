//! Reads: get one object, list a collection (paginated, at one revision, filtered, as a
//! list or a Table).

use serde_json::{json, Value};

use super::{list_failure, Accept, Api};
use crate::bodies;
use crate::options::{Continue, ListOptions};
use crate::resources::ResourceInfo;
use crate::status::ApiError;

impl Api {
    pub(super) async fn get(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.existing(res, ns, name).await.map(|o| o.object)
    }

    pub(super) async fn list(
        &self,
        res: &ResourceInfo,
        version: &str,
        ns: Option<&str>,
        options: &ListOptions,
        accept: Accept,
    ) -> Result<Value, ApiError> {
        let filter = bodies::Filter::new(&options.selectors, res)?;
        let limit = options.limit;
        let mut start_after = options
            .continue_from
            .as_ref()
            .map(|c| c.start_after.clone());
        let mut revision = options.read_revision();
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
                    .map(|k| Continue::encode(page.revision, k));
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
            return bodies::table(res, version, &items, options.include_object, &metadata);
        }
        let api_version = res.api_version(res.storage_version());
        Ok(
            json!({"kind": res.list_kind(), "apiVersion": api_version, "metadata": metadata, "items": items}),
        )
    }
}
