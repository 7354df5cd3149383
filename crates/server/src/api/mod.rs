//! The REST verbs over the encrypting object store: get, list, watch, create, update,
//! patch, delete and deletecollection for every served resource. [`Api::handle`] parses a
//! request's options once ([`crate::options`]) and hands them to `read` (get, list),
//! `watch`, `write` (create, update, patch, status) or `delete` (delete,
//! deletecollection, the namespace and CRD cascades).

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::bodies;
use crate::defaults;
use crate::objects::{ObjectStore, StoredObject, Unreadable};
use crate::options::{DeleteOptions, RequestOptions, Verb, WriteOptions};
use crate::request::{Query, ResourcePath};
use crate::resources::{Builtin, Registry, ResourceInfo, StorageEncoding};
use crate::status::{ApiError, Reason};

mod delete;
mod read;
mod watch;
mod write;

pub use write::Writer;

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
    /// How often a watch with `allowWatchBookmarks=true` sends a BOOKMARK.
    bookmark_interval: std::time::Duration,
}

/// Upstream's bookmark frequency (the watch cache sends one about every minute).
pub const DEFAULT_BOOKMARK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A response body: one JSON document (answered in protobuf when the client prefers it
/// and the kind has a protobuf form), or a stream of watch events in `content_type`.
pub enum Reply {
    Json(u16, Value),
    Stream {
        content_type: &'static str,
        events: futures::stream::BoxStream<'static, Bytes>,
    },
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(code, _) => write!(f, "Reply::Json({code})"),
            Reply::Stream { content_type, .. } => write!(f, "Reply::Stream({content_type})"),
        }
    }
}

/// What the client accepts, as far as the server's answer shape goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accept {
    pub table: bool,
    /// The client prefers `application/vnd.kubernetes.protobuf` (client-go's typed clients
    /// send `application/vnd.kubernetes.protobuf, */*`).
    pub protobuf: bool,
    /// On `/api` and `/apis`: the aggregated discovery version the client prefers, if any.
    pub discovery: Option<DiscoveryVersion>,
}

/// `apidiscovery.k8s.io` versions served (`v2beta1` for kubectl 1.27-1.29).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryVersion {
    V2,
    V2beta1,
}

impl DiscoveryVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryVersion::V2 => "v2",
            DiscoveryVersion::V2beta1 => "v2beta1",
        }
    }
}

/// One entry of an `Accept` header: type/subtype, parameters but `q`, and `q`.
#[derive(Debug)]
struct MediaRange<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
    /// `q` in thousandths (1000 when absent).
    quality: u16,
}

impl MediaRange<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// The header's media ranges, most preferred first (by `q`, then order); `q=0` dropped.
fn media_ranges(header: &str) -> Vec<MediaRange<'_>> {
    let mut ranges: Vec<MediaRange<'_>> = header
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let mut range = MediaRange {
                essence,
                params: Vec::new(),
                quality: 1000,
            };
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
                if k == "q" {
                    range.quality = v
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .map(|q| (q * 1000.0).round() as u16)
                        .unwrap_or(0);
                } else {
                    range.params.push((k, v));
                }
            }
            (range.quality > 0).then_some(range)
        })
        .collect();
    // Stable: equal preferences keep the client's order.
    ranges.sort_by_key(|r| std::cmp::Reverse(r.quality));
    ranges
}

impl Accept {
    pub fn parse(header: &str) -> Self {
        let ranges = media_ranges(header);
        let protobuf = ranges
            .iter()
            .find(|r| {
                matches!(
                    r.essence.as_str(),
                    "application/json"
                        | "application/vnd.kubernetes.protobuf"
                        | "application/*"
                        | "*/*"
                ) && r.param("as").is_none()
            })
            .is_some_and(|r| r.essence == "application/vnd.kubernetes.protobuf");
        let discovery = ranges
            .iter()
            .find_map(|r| {
                let json = r.essence == "application/json";
                match (r.param("g"), r.param("v"), r.param("as")) {
                    (Some("apidiscovery.k8s.io"), Some(v), Some("APIGroupDiscoveryList"))
                        if json =>
                    {
                        match v {
                            "v2" => Some(Some(DiscoveryVersion::V2)),
                            "v2beta1" => Some(Some(DiscoveryVersion::V2beta1)),
                            _ => None,
                        }
                    }
                    (_, _, Some(_)) => None,
                    _ if json || matches!(r.essence.as_str(), "application/*" | "*/*") => {
                        Some(None)
                    }
                    _ => None,
                }
            })
            .flatten();
        Accept {
            table: atrest_api::table::accepts_table_v1(header),
            protobuf,
            discovery,
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
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
        }
    }

    /// Sets how often watches that allow bookmarks get one (a zero interval is taken as
    /// one millisecond).
    pub fn with_bookmark_interval(mut self, interval: std::time::Duration) -> Self {
        self.bookmark_interval = interval.max(std::time::Duration::from_millis(1));
        self
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
                Err(e) if e.reason == Reason::AlreadyExists => {}
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
                    Reason::NotFound,
                    "the server could not find the requested resource",
                )
            })
    }

    /// Dispatches one resource request: the verb, its options parsed once from the query,
    /// then the read, watch, write or delete module.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle(
        self: &Arc<Self>,
        method: &http::Method,
        path: &ResourcePath,
        query: &Query,
        content_type: &str,
        accept: Accept,
        writer: &Writer<'_>,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let res = self.resource(path)?;
        if path.subresource.is_some() {
            return self
                .subresource(method, &res, path, query, content_type, writer, body)
                .await;
        }
        let ns = path.namespace.as_deref();
        let name = path.name.as_deref();
        let not_allowed =
            || ApiError::method_not_allowed(format!("{method} is not supported on this path"));
        let verb = Verb::of(method, name.is_some(), query);
        // Options are parsed before anything else is looked at (dryRun first).
        let options = match verb {
            Some(verb) => RequestOptions::parse(verb, query)?,
            None => {
                RequestOptions::parse(Verb::Get, query)?;
                return Err(not_allowed());
            }
        };
        if res.namespaced && ns.is_none() && name.is_some() {
            return Err(ApiError::new(
                404,
                Reason::NotFound,
                "the server could not find the requested resource",
            ));
        }
        match (options, verb, name) {
            (RequestOptions::Get, _, Some(name)) => self.get(&res, ns, name).await.map(|mut o| {
                // Served in the version asked for (no conversion between CR versions).
                o["apiVersion"] = json!(res.api_version(&path.version));
                Reply::Json(200, o)
            }),
            (RequestOptions::Watch(options), _, None) => {
                self.watch(&res, ns, options, accept).await
            }
            (RequestOptions::List(options), _, None) => self
                .list(&res, &path.version, ns, &options, accept)
                .await
                .map(|l| Reply::Json(200, l)),
            (RequestOptions::Write(options), Some(Verb::Create), None) => self
                .create(&res, path, options, writer, content_type, &body)
                .await
                .map(|o| Reply::Json(201, o)),
            (RequestOptions::Write(options), Some(Verb::Update), Some(name)) => self
                .update(&res, path, options, writer, name, content_type, &body)
                .await
                .map(|o| Reply::Json(200, o)),
            (RequestOptions::Write(options), Some(Verb::Patch), Some(name)) => self
                .patch(&res, path, options, writer, name, content_type, &body)
                .await
                .map(|(o, created)| Reply::Json(if created { 201 } else { 200 }, o)),
            (RequestOptions::Delete { dry_run }, _, Some(name)) => {
                let options = DeleteOptions::parse(dry_run, &body)?;
                self.delete(&res, ns, name, &options)
                    .await
                    .map(|o| Reply::Json(200, o))
            }
            (RequestOptions::DeleteCollection { selectors, dry_run }, _, None) => self
                .delete_collection(&res, ns, &selectors, dry_run)
                .await
                .map(|o| Reply::Json(200, o)),
            (
                RequestOptions::Get
                | RequestOptions::List(_)
                | RequestOptions::Watch(_)
                | RequestOptions::Write(_)
                | RequestOptions::Delete { .. }
                | RequestOptions::DeleteCollection { .. },
                _,
                _,
            ) => Err(not_allowed()),
        }
    }

    /// `GET` and `PUT` on `status`, the one subresource served (namespaces and custom
    /// resources have it).
    #[allow(clippy::too_many_arguments)]
    async fn subresource(
        self: &Arc<Self>,
        method: &http::Method,
        res: &ResourceInfo,
        path: &ResourcePath,
        query: &Query,
        content_type: &str,
        writer: &Writer<'_>,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let sub = path.subresource.as_deref().unwrap_or("");
        let name = path.name.as_deref().unwrap_or("");
        let ns = path.namespace.as_deref();
        let has_status = res.model().status_subresource();
        match (sub, method.as_str()) {
            ("status", "GET") if has_status => {
                self.get(res, ns, name).await.map(|o| Reply::Json(200, o))
            }
            ("status", "PUT") if has_status => {
                let options = WriteOptions::parse(query)?;
                self.update_status(res, path, name, options, writer, content_type, &body)
                    .await
                    .map(|o| Reply::Json(200, o))
            }
            _ => Err(ApiError::new(
                404,
                Reason::NotFound,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_table() {
        assert!(
            Accept::parse("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").table
        );
        assert!(!Accept::parse("application/json").table);
        assert!(Accept::parse("application/vnd.kubernetes.protobuf, */*").protobuf);
        assert!(Accept::parse("application/vnd.kubernetes.protobuf;stream=watch").protobuf);
        assert!(
            Accept::parse("application/json;q=0.5, application/vnd.kubernetes.protobuf").protobuf
        );
        assert!(!Accept::parse("application/json, application/vnd.kubernetes.protobuf").protobuf);
        assert!(!Accept::parse("application/vnd.kubernetes.protobuf;q=0, */*").protobuf);
        assert!(!Accept::parse("").protobuf);
        assert!(!Accept::parse(";;,,q=").protobuf);
    }

    #[test]
    fn accept_aggregated_discovery() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Accept::parse(kubectl).discovery, Some(DiscoveryVersion::V2));
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            Accept::parse(old).discovery,
            Some(DiscoveryVersion::V2beta1)
        );
        assert_eq!(Accept::parse("application/json").discovery, None);
        assert_eq!(Accept::parse("application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList").discovery, None);
        assert_eq!(
            Accept::parse("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList")
                .discovery,
            None
        );
    }
}
