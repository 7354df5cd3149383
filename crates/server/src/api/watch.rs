//! Watches: the current state as ADDED events when no resourceVersion is named, then the
//! store's changes through the selectors, until the timeout or shutdown.

use std::sync::Arc;

use atrest_storage::{StorageError, StorageEvent};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{Api, Reply};
use crate::bodies;
use crate::objects::set_resource_version;
use crate::options::{VersionParam, WatchOptions};
use crate::resources::ResourceInfo;
use crate::status::ApiError;

impl Api {
    pub(super) async fn watch(
        self: &Arc<Self>,
        res: &ResourceInfo,
        ns: Option<&str>,
        options: WatchOptions,
    ) -> Result<Reply, ApiError> {
        let filter = bodies::Filter::new(&options.selectors, res)?;
        let mut initial = Vec::new();
        let from = match options.resource_version {
            VersionParam::At(rv) => rv.next()?,
            VersionParam::Unset | VersionParam::Any => {
                // No resourceVersion: the current state as ADDED events, then changes.
                let page = self.objects.list(res, ns, None, 0, None).await?;
                for item in page.items.into_iter().filter(|o| filter.matches(&o.object)) {
                    initial.push(event_line("ADDED", &item.object));
                }
                page.revision.checked_add(1).ok_or_else(|| {
                    ApiError::internal("the store revision is at its largest value")
                })?
            }
        };
        // The previous version is needed only to tell objects entering or leaving a selector.
        let stream = self
            .objects
            .watch(res, ns, from, !filter.is_empty())
            .await?;
        let timeout = options.timeout;
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

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_event(e: &ApiError) -> Bytes {
    event_line("ERROR", &e.to_status())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::status::Reason;

    #[test]
    fn event_lines_are_one_json_document_each() {
        let line = event_line("ADDED", &json!({"kind": "Secret"}));
        assert_eq!(
            &line[..],
            b"{\"object\":{\"kind\":\"Secret\"},\"type\":\"ADDED\"}\n"
        );
        let error = error_event(&ApiError::new(410, Reason::Expired, "too old"));
        let v: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["object"]["reason"], "Expired");
        assert_eq!(v["object"]["code"], 410);
    }
}
