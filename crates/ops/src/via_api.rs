//! `atrest reencrypt --via-api`: the same job through any Kubernetes API server, for clusters
//! whose etcd is out of reach. Each object is listed (paginated) and written back unchanged;
//! the API server re-encrypts it with its current write key if it was stale and skips the
//! write otherwise (upstream b.5), so the object's resourceVersion tells which happened. A
//! conflict (someone wrote meanwhile) reads the object again and retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atrest_client::{ok_json, ClientError, KubeClient};
use atrest_encryption::{GroupResource, ProviderChain};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::progress::Progress;

/// Objects per list page.
pub const PAGE: usize = 500;
/// Writes in flight at once.
pub const WORKERS: usize = 8;
/// Conflicts retried per object.
const CONFLICT_RETRIES: usize = 5;
/// Failures remembered (the rest are counted).
const EXAMPLES: usize = 10;

/// Why the job could not run.
#[derive(Debug, thiserror::Error)]
pub enum ViaApiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A resource asked for is not served (or cannot be listed and updated).
    #[error("the API server does not serve {0} with list and update")]
    NotServed(String),
    /// Nothing says which resources to rewrite.
    #[error("say which resources to rewrite: --resources, or --encryption-provider-config to rewrite every resource it covers")]
    NoResources,
}

/// A resource as discovery describes it.
#[derive(Debug, Clone)]
pub struct ApiResource {
    pub resource: GroupResource,
    /// `v1`, `apps/v1`.
    pub group_version: String,
    pub kind: String,
    pub namespaced: bool,
}

impl ApiResource {
    fn base(&self) -> String {
        if self.resource.group.is_empty() {
            format!("/api/{}", self.group_version)
        } else {
            format!("/apis/{}", self.group_version)
        }
    }
}

/// Every resource the server lets us list and update (preferred versions only).
pub async fn discover(client: &KubeClient) -> Result<Vec<ApiResource>, ClientError> {
    let mut versions = vec![String::from("v1")];
    let groups = client.get_json("/apis").await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        if let Some(v) = g["preferredVersion"]["groupVersion"].as_str() {
            versions.push(v.to_string());
        }
    }
    let mut out = Vec::new();
    for gv in versions {
        let path = if gv == "v1" {
            "/api/v1".to_string()
        } else {
            format!("/apis/{gv}")
        };
        let list = match client.get_json(&path).await {
            Ok(l) => l,
            // An aggregated API that is down must not stop the rest.
            Err(ClientError::Status { .. }) => continue,
            Err(e) => return Err(e),
        };
        let group = gv.rsplit_once('/').map_or("", |(g, _)| g).to_string();
        for r in list["resources"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("");
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if name.is_empty()
                || name.contains('/')
                || !verbs.contains(&"list")
                || !verbs.contains(&"update")
            {
                continue;
            }
            out.push(ApiResource {
                resource: GroupResource::new(group.clone(), name),
                group_version: gv.clone(),
                kind: r["kind"].as_str().unwrap_or("").to_string(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
            });
        }
    }
    Ok(out)
}

/// What to rewrite.
#[derive(Debug, Clone, Default)]
pub struct ViaApiOptions {
    /// These resources; or, when `None`, every served resource that `covered_by` covers.
    pub resources: Option<Vec<GroupResource>>,
    pub covered_by: Option<Arc<ProviderChain>>,
    pub workers: usize,
}

/// What the job did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViaApiReport {
    pub resources: Vec<String>,
    /// Objects listed.
    pub listed: u64,
    /// Objects the server wrote again (their resourceVersion changed): they were stale.
    pub rewritten: u64,
    /// Objects the server left as they were (already on the write key).
    pub already_current: u64,
    /// Writes that met a concurrent change and were retried.
    pub retried: u64,
    /// Objects deleted before their write.
    pub skipped_deleted: u64,
    /// Objects whose write failed.
    pub failed: u64,
    pub failures: Vec<String>,
}

#[derive(Default)]
struct Tally {
    rewritten: AtomicU64,
    current: AtomicU64,
    retried: AtomicU64,
    deleted: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < EXAMPLES {
            f.push(what);
        }
    }
}

/// Rewrites every object of the chosen resources through the API server.
pub async fn reencrypt_via_api(
    client: Arc<KubeClient>,
    options: &ViaApiOptions,
    progress: &dyn Progress,
) -> Result<ViaApiReport, ViaApiError> {
    let served = discover(&client).await?;
    let chosen: Vec<ApiResource> = match (&options.resources, &options.covered_by) {
        (Some(list), _) => list
            .iter()
            .map(|gr| {
                served
                    .iter()
                    .find(|r| &r.resource == gr)
                    .cloned()
                    .ok_or_else(|| ViaApiError::NotServed(gr.to_string()))
            })
            .collect::<Result<_, _>>()?,
        (None, Some(chain)) => served
            .into_iter()
            .filter(|r| chain.for_resource(&r.resource).is_configured())
            .collect(),
        (None, None) => return Err(ViaApiError::NoResources),
    };
    let tally = Arc::new(Tally::default());
    let permits = Arc::new(Semaphore::new(options.workers.max(1)));
    let mut report = ViaApiReport {
        resources: chosen.iter().map(|r| r.resource.to_string()).collect(),
        ..ViaApiReport::default()
    };
    progress.phase("rewriting", None);
    for resource in &chosen {
        let mut tasks = JoinSet::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "{}/{}?limit={PAGE}",
                resource.base(),
                resource.resource.resource
            );
            if let Some(t) = &token {
                path.push_str("&continue=");
                path.push_str(&percent_encode(t));
            }
            let page = client.get_json(&path).await?;
            for mut item in page["items"].as_array().cloned().unwrap_or_default() {
                report.listed += 1;
                item["apiVersion"] = Value::String(resource.group_version.clone());
                item["kind"] = Value::String(resource.kind.clone());
                let permit =
                    permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| ClientError::Connection {
                            server: client.server().into(),
                            message: "the worker pool closed".into(),
                        })?;
                let (client, tally, resource) = (client.clone(), tally.clone(), resource.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    rewrite_one(&client, &tally, &resource, item).await;
                });
            }
            progress.advance(page["items"].as_array().map_or(0, |a| a.len() as u64));
            token = page["metadata"]["continue"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        while tasks.join_next().await.is_some() {}
    }
    progress.finish();
    report.rewritten = tally.rewritten.load(Ordering::Relaxed);
    report.already_current = tally.current.load(Ordering::Relaxed);
    report.retried = tally.retried.load(Ordering::Relaxed);
    report.skipped_deleted = tally.deleted.load(Ordering::Relaxed);
    report.failed = tally.failed.load(Ordering::Relaxed);
    report.failures =
        std::mem::take(&mut *tally.failures.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(report)
}

fn object_path(resource: &ApiResource, item: &Value) -> Option<String> {
    let name = item["metadata"]["name"].as_str()?;
    let plural = &resource.resource.resource;
    Some(match item["metadata"]["namespace"].as_str() {
        Some(ns) if resource.namespaced => {
            format!(
                "{}/namespaces/{ns}/{plural}/{}",
                resource.base(),
                percent_encode(name)
            )
        }
        _ => format!("{}/{plural}/{}", resource.base(), percent_encode(name)),
    })
}

async fn rewrite_one(client: &KubeClient, tally: &Tally, resource: &ApiResource, mut item: Value) {
    let Some(path) = object_path(resource, &item) else {
        tally.fail(format!("{}: an item without a name", resource.resource));
        return;
    };
    for attempt in 0..=CONFLICT_RETRIES {
        let before = item["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let answer = match client.request(http::Method::PUT, &path, Some(&item)).await {
            Ok(a) => a,
            Err(e) => return tally.fail(format!("PUT {path}: {e}")),
        };
        match answer.status {
            200 | 201 => {
                let after = answer
                    .json()
                    .ok()
                    .and_then(|v| v["metadata"]["resourceVersion"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let counter = if after != before {
                    &tally.rewritten
                } else {
                    &tally.current
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            404 => {
                tally.deleted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            409 if attempt < CONFLICT_RETRIES => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                match client.request(http::Method::GET, &path, None).await {
                    Ok(r) if r.status == 404 => {
                        tally.deleted.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(r) => match ok_json("GET", &path, &r) {
                        Ok(mut fresh) => {
                            fresh["apiVersion"] = Value::String(resource.group_version.clone());
                            fresh["kind"] = Value::String(resource.kind.clone());
                            item = fresh;
                        }
                        Err(e) => return tally.fail(e.to_string()),
                    },
                    Err(e) => return tally.fail(format!("GET {path}: {e}")),
                }
            }
            _ => {
                let e = ok_json("PUT", &path, &answer).err().map(|e| e.to_string());
                return tally
                    .fail(e.unwrap_or_else(|| format!("PUT {path}: HTTP {}", answer.status)));
            }
        }
    }
}

/// Percent-encodes what may not appear raw in a path segment or query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_and_names_are_encoded() {
        assert_eq!(
            percent_encode("eyJ2IjoibWV0YSJ9=="),
            "eyJ2IjoibWV0YSJ9%3D%3D"
        );
        assert_eq!(percent_encode("system:admin"), "system:admin");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
