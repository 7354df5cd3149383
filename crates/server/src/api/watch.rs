//! Watches: the current state as ADDED events when no resourceVersion is named (or when a
//! watch-list asks for it with `sendInitialEvents=true`, closed by a BOOKMARK annotated
//! `k8s.io/initial-events-end`), then the store's changes through the selectors, with
//! periodic BOOKMARKs when allowed, until the timeout or shutdown. Events are JSON lines,
//! or for kinds with a protobuf form and a client that prefers it, length-prefixed
//! protobuf `WatchEvent` frames.

use std::sync::Arc;
use std::time::Duration;

use atrest_storage::{StorageError, StorageEvent};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{Accept, Api, Reply};
use crate::bodies;
use crate::objects::set_resource_version;
use crate::options::{VersionParam, WatchOptions};
use crate::resources::ResourceInfo;
use crate::status::{ApiError, Reason};

/// The annotation on the BOOKMARK that ends a watch-list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How long a watch-list waits for the store to reach a resourceVersion it was asked to be
/// not older than (upstream's watch cache waits 3 s, then answers "Too large resource
/// version").
const WAIT_FOR_REVISION: Duration = Duration::from_secs(3);

/// How watch events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// One JSON `{"type", "object"}` document per line.
    Json,
    /// `application/vnd.kubernetes.protobuf;stream=watch` frames.
    Protobuf,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }

    fn frame(self, event_type: &str, object: &Value) -> Bytes {
        match self {
            Encoding::Json => event_line(event_type, object),
            Encoding::Protobuf => {
                let (event_type, raw) = if event_type == "ERROR" {
                    (
                        event_type,
                        atrest_api::codec::encode_status_protobuf(object),
                    )
                } else {
                    match atrest_api::codec::encode_protobuf(object) {
                        Ok(raw) => (event_type, raw),
                        // Reported in the stream rather than dropped.
                        Err(e) => (
                            "ERROR",
                            atrest_api::codec::encode_status_protobuf(
                                &ApiError::internal(format!("cannot encode the object: {e}"))
                                    .to_status(),
                            ),
                        ),
                    }
                };
                Bytes::from(atrest_api::codec::encode_watch_frame(event_type, &raw))
            }
        }
    }
}

/// What the merged watch stream carries.
enum Item {
    Event(Box<Result<StorageEvent, StorageError>>),
    Bookmark,
    End,
}

/// The store revision an event was written at.
fn event_revision(event: &Result<StorageEvent, StorageError>) -> Option<i64> {
    match event {
        Ok(StorageEvent::Put { value, .. }) => Some(match value {
            Ok(v) => v.mod_revision,
            Err(u) => u.mod_revision,
        }),
        Ok(StorageEvent::Delete { revision, .. }) => Some(*revision),
        Err(_) => None,
    }
}

impl Api {
    pub(super) async fn watch(
        self: &Arc<Self>,
        res: &ResourceInfo,
        ns: Option<&str>,
        options: WatchOptions,
        accept: Accept,
    ) -> Result<Reply, ApiError> {
        let filter = bodies::Filter::new(&options.selectors, res)?;
        // Custom resources have no protobuf form: they are answered in JSON, as upstream.
        let encoding = if accept.protobuf && res.model().typed() {
            Encoding::Protobuf
        } else {
            Encoding::Json
        };
        let mut initial = Vec::new();
        // `reached`: the revision the watch is known to be complete up to (bookmarks carry it).
        let (from, reached) = match (options.send_initial_events, options.resource_version) {
            (None | Some(false), VersionParam::At(rv)) => (rv.next()?, rv.get()),
            (Some(false), VersionParam::Unset | VersionParam::Any) => {
                let now = self.objects.list(res, ns, None, 1, None).await?.revision;
                (next_revision(now)?, now)
            }
            (Some(true), _) | (None, VersionParam::Unset | VersionParam::Any) => {
                // The current state as ADDED events (a watch-list's state is not older
                // than the resourceVersion named).
                let page = self
                    .initial_state(res, ns, options.resource_version)
                    .await?;
                for item in page.items.into_iter().filter(|o| filter.matches(&o.object)) {
                    initial.push(encoding.frame("ADDED", &item.object));
                }
                if options.send_initial_events == Some(true) && options.allow_bookmarks {
                    initial.push(encoding.frame("BOOKMARK", &bookmark(res, page.revision, true)));
                }
                (next_revision(page.revision)?, page.revision)
            }
        };
        // The previous version is needed only to tell objects entering or leaving a selector.
        let stream = self
            .objects
            .watch(res, ns, from, !filter.is_empty())
            .await?;
        let events = stream
            .map(|event| Item::Event(Box::new(event)))
            .chain(futures::stream::once(async { Item::End }));
        let bookmarks = if options.allow_bookmarks {
            let interval = self.bookmark_interval;
            futures::stream::unfold((), move |()| async move {
                tokio::time::sleep(interval).await;
                Some((Item::Bookmark, ()))
            })
            .boxed()
        } else {
            futures::stream::pending().boxed()
        };
        let api = self.clone();
        let bookmark_of = {
            let kind = res.kind.clone();
            let api_version = res.api_version(res.storage_version());
            move |revision: i64| bookmark_object(&kind, &api_version, revision, false)
        };
        let mut reached = reached;
        let frames = futures::stream::select(events, bookmarks)
            .take_while(|item| std::future::ready(!matches!(item, Item::End)))
            .filter_map(move |item| {
                let frame = match item {
                    Item::Event(event) => {
                        let event = *event;
                        if let Some(r) = event_revision(&event) {
                            reached = reached.max(r);
                        }
                        api.watch_event(&filter, event)
                            .map(|(event_type, object)| encoding.frame(event_type, &object))
                    }
                    Item::Bookmark => Some(encoding.frame("BOOKMARK", &bookmark_of(reached))),
                    Item::End => None,
                };
                async move { frame }
            });
        let timeout = options.timeout;
        let mut stopping = self.stopping.subscribe();
        let deadline = async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        };
        let events = futures::stream::iter(initial)
            .chain(frames)
            .take_until(deadline);
        Ok(Reply::Stream {
            content_type: encoding.content_type(),
            events: events.boxed(),
        })
    }

    /// The current state of the collection, at a revision not older than `version` when
    /// one is named (waiting a little for a store that has not reached it yet).
    async fn initial_state(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        version: VersionParam,
    ) -> Result<crate::objects::ListPage, ApiError> {
        let started = tokio::time::Instant::now();
        loop {
            let page = self.objects.list(res, ns, None, 0, None).await?;
            let Some(wanted) = version.revision() else {
                return Ok(page);
            };
            if page.revision >= wanted.get() {
                return Ok(page);
            }
            if started.elapsed() >= WAIT_FOR_REVISION {
                let mut error = ApiError::new(
                    504,
                    Reason::Timeout,
                    format!(
                        "Too large resource version: {}, current: {}",
                        wanted.get(),
                        page.revision
                    ),
                );
                error.details = Some(json!({
                    "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                    "retryAfterSeconds": 1,
                }));
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One store event as a watch event (type and object), or `None` when the selectors
    /// hide it.
    fn watch_event(
        &self,
        filter: &bodies::Filter,
        event: Result<StorageEvent, StorageError>,
    ) -> Option<(&'static str, Value)> {
        match event {
            Ok(StorageEvent::Put { value, prev }) => {
                let current = match self.objects.decode_entry(value) {
                    Ok(o) => o,
                    Err(u) => return Some(("ERROR", u.error.to_status())),
                };
                let matches = filter.matches(&current.object);
                if current.is_creation() {
                    return matches.then_some(("ADDED", current.object));
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
                    (true, true) => Some(("MODIFIED", current.object)),
                    (false, true) => Some(("ADDED", current.object)),
                    (true, false) => Some(("DELETED", current.object)),
                    (false, false) => None,
                }
            }
            Ok(StorageEvent::Delete { prev, revision }) => {
                let mut object = match self.objects.decode_entry(prev) {
                    Ok(o) => o.object,
                    Err(u) => return Some(("ERROR", u.error.to_status())),
                };
                set_resource_version(&mut object, revision);
                filter.matches(&object).then_some(("DELETED", object))
            }
            Err(e) => Some(("ERROR", ApiError::internal(e.to_string()).to_status())),
        }
    }
}

fn next_revision(revision: i64) -> Result<i64, ApiError> {
    revision
        .checked_add(1)
        .ok_or_else(|| ApiError::internal("the store revision is at its largest value"))
}

/// A BOOKMARK's object: the watched kind with only `metadata.resourceVersion` (and, ending
/// a watch-list's initial events, the `k8s.io/initial-events-end` annotation), as upstream.
fn bookmark(res: &ResourceInfo, revision: i64, end_of_initial_events: bool) -> Value {
    bookmark_object(
        &res.kind,
        &res.api_version(res.storage_version()),
        revision,
        end_of_initial_events,
    )
}

fn bookmark_object(kind: &str, api_version: &str, revision: i64, end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if end {
        metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": metadata})
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn event_lines_are_one_json_document_each() {
        let line = event_line("ADDED", &json!({"kind": "Secret"}));
        assert_eq!(
            &line[..],
            b"{\"object\":{\"kind\":\"Secret\"},\"type\":\"ADDED\"}\n"
        );
        let error = Encoding::Json.frame(
            "ERROR",
            &ApiError::new(410, Reason::Expired, "too old").to_status(),
        );
        let v: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["object"]["reason"], "Expired");
        assert_eq!(v["object"]["code"], 410);
    }

    #[test]
    fn bookmarks_carry_only_the_revision() {
        let b = bookmark_object("Secret", "v1", 104, true);
        assert_eq!(
            serde_json::to_string(&json!({"type": "BOOKMARK", "object": b})).unwrap(),
            // kube-apiserver 1.36's initial-events-end bookmark, keys in serde_json's order.
            r#"{"object":{"apiVersion":"v1","kind":"Secret","metadata":{"annotations":{"k8s.io/initial-events-end":"true"},"resourceVersion":"104"}},"type":"BOOKMARK"}"#
        );
        let frame =
            Encoding::Protobuf.frame("BOOKMARK", &bookmark_object("Secret", "v1", 5, false));
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert!(frame[4..].starts_with(b"\x0a\x08BOOKMARK\x12"));
        // An object that cannot be encoded becomes an ERROR frame, not a panic.
        let frame = Encoding::Protobuf.frame(
            "ADDED",
            &json!({"apiVersion": "v1", "kind": "Secret", "data": 3}),
        );
        assert!(frame[4..].starts_with(b"\x0a\x05ERROR\x12"));
    }
}
