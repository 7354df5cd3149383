//! `storagemigration.k8s.io` StorageVersionMigration: upstream's interface to re-encryption
//! (`kubectl apply -f migration.yaml && kubectl wait --for=condition=Succeeded ...`), run
//! by atrest's reencrypt engine instead of upstream's object-by-object migrator.
//!
//! Every server runs the controller; a migration is taken by whoever first writes its
//! `Running` condition (compare-and-swap on the object), and the taker renews an annotation
//! while it works, so a migration whose server died is taken over by another after
//! [`TAKEOVER_AFTER`]. Re-encryption is itself safe to run twice (compare-and-swap per
//! object), so a takeover never corrupts anything.

use std::sync::Arc;
use std::time::Duration;

use atrest_encryption::GroupResource;
use atrest_ops::reencrypt::{reencrypt, ReencryptOptions};
use atrest_ops::Progress;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::Api;
use crate::defaults::now_rfc3339;
use crate::metrics::Metrics;
use crate::resources::ResourceInfo;

pub const GROUP: &str = "storagemigration.k8s.io";
pub const PLURAL: &str = "storageversionmigrations";

/// Annotation holding the unix time the running server last renewed its claim.
const RENEWED: &str = "migration.atrest.io/renewed";
/// Annotation naming the server running it.
const HOLDER: &str = "migration.atrest.io/holder";
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// A `Running` migration whose claim is older than this is taken over.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(90);

const MIGRATED: &str = "storage_migrator_core_migrator_migrated_objects_total";
const MIGRATED_HELP: &str =
    "The total number of objects that have been migrated, labeled with the full resource name";
const REMAINING: &str = "storage_migrator_core_migrator_remaining_objects_total";
const REMAINING_HELP: &str =
    "The total number of objects that remain to be migrated, labeled with the full resource name";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn is_true(object: &Value, kind: &str) -> bool {
    condition(object, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// Whether this server should take the migration: not finished, and not running under a
/// live claim.
fn wants_work(object: &Value) -> bool {
    if is_true(object, "Succeeded") || is_true(object, "Failed") {
        return false;
    }
    if !is_true(object, "Running") {
        return true;
    }
    let renewed = object
        .pointer(&format!(
            "/metadata/annotations/{}",
            RENEWED.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    unix_now().saturating_sub(renewed) > TAKEOVER_AFTER.as_secs()
}

/// Sets one condition (replacing any of its type).
fn set_condition(object: &mut Value, kind: &str, status: bool, reason: &str, message: &str) {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    let conditions = &mut object["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
        list.push(json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastUpdateTime": now_rfc3339(),
            "reason": reason,
            "message": message,
        }));
    }
}

fn claim(object: &mut Value, server_id: &str) {
    let meta = &mut object["metadata"];
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"][RENEWED] = json!(unix_now().to_string());
    meta["annotations"][HOLDER] = json!(server_id);
}

/// The resource a migration names (`spec.resource.{group,resource}`).
fn target(object: &Value) -> Result<GroupResource, String> {
    let resource = object
        .pointer("/spec/resource/resource")
        .and_then(Value::as_str)
        .unwrap_or("");
    if resource.is_empty() {
        return Err("spec.resource.resource is required".into());
    }
    let group = object
        .pointer("/spec/resource/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(GroupResource::new(group, resource))
}

/// Feeds upstream's migrator metrics from the reencrypt engine's progress.
struct MigrationProgress {
    metrics: Arc<Metrics>,
    resource: String,
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    /// Only the rewriting pass counts (the verifying pass reads the same objects again).
    rewriting: std::sync::atomic::AtomicBool,
}

impl MigrationProgress {
    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![("resource", self.resource.clone())]
    }
}

impl Progress for MigrationProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rewriting.store(name == "rewriting", Relaxed);
        if name == "rewriting" {
            self.total.store(total.unwrap_or(0), Relaxed);
            self.done.store(0, Relaxed);
            self.metrics.set_gauge(
                REMAINING,
                REMAINING_HELP,
                self.labels(),
                total.unwrap_or(0) as f64,
            );
        }
    }

    fn advance(&self, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.rewriting.load(Relaxed) {
            return;
        }
        let done = self.done.fetch_add(n, Relaxed) + n;
        let total = self.total.load(Relaxed);
        self.metrics
            .add(MIGRATED, MIGRATED_HELP, self.labels(), n as f64);
        self.metrics.set_gauge(
            REMAINING,
            REMAINING_HELP,
            self.labels(),
            total.saturating_sub(done) as f64,
        );
    }

    fn finish(&self) {
        self.metrics
            .set_gauge(REMAINING, REMAINING_HELP, self.labels(), 0.0);
    }
}

/// Runs migrations as they are created, until the task is aborted.
pub async fn run(api: Arc<Api>, server_id: String) {
    loop {
        let Some(res) = api.registry().find(GROUP, PLURAL) else {
            return;
        };
        let page = match api.objects.list(&res, None, None, 0, None).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.message, "storage version migrations: listing");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for stored in page.items {
            if wants_work(&stored.object) {
                migrate(&api, &res, stored, &server_id).await;
            }
        }
        // Wake on the next change, or to look for abandoned claims.
        match api
            .objects
            .watch(&res, None, page.revision + 1, false)
            .await
        {
            Ok(mut events) => {
                let _ = tokio::time::timeout(TAKEOVER_AFTER / 3, events.next()).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

async fn migrate(
    api: &Arc<Api>,
    res: &ResourceInfo,
    stored: crate::objects::StoredObject,
    server_id: &str,
) {
    let name = crate::objects::object_name(&stored.object);
    let mut object = stored.object.clone();
    let gr = match target(&object) {
        Ok(gr) => gr,
        Err(message) => {
            set_condition(&mut object, "Failed", true, "InvalidResource", &message);
            let _ = api.objects.update(res, &stored, object).await;
            return;
        }
    };
    // Claim it: whoever writes Running first runs it.
    set_condition(
        &mut object,
        "Running",
        true,
        "Running",
        &format!("re-encrypting {gr} (server {server_id})"),
    );
    let revision = api
        .objects
        .storage
        .store()
        .current_revision()
        .await
        .unwrap_or(0);
    object["status"]["resourceVersion"] = json!(revision.to_string());
    claim(&mut object, server_id);
    if api.objects.update(res, &stored, object).await.is_err() {
        return; // someone else took it (or it changed): the next pass looks again
    }
    tracing::info!(migration = %name, resource = %gr, "storage version migration started");

    // Renew the claim while working.
    let renewer = {
        let api = api.clone();
        let res = res.clone();
        let name = name.clone();
        let server_id = server_id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Ok(Some(current)) = api.objects.get(&res, None, &name).await {
                    let mut object = current.object.clone();
                    claim(&mut object, &server_id);
                    let _ = api.objects.update(&res, &current, object).await;
                }
            }
        })
    };
    let progress = MigrationProgress {
        metrics: api.objects.metrics.clone(),
        resource: gr.to_string(),
        total: Default::default(),
        done: Default::default(),
        rewriting: Default::default(),
    };
    let options = ReencryptOptions {
        resources: Some(vec![gr.clone()]),
        ..ReencryptOptions::default()
    };
    let result = reencrypt(&api.objects.storage, &options, &progress).await;
    renewer.abort();

    // Record the outcome on the latest version (retrying lost compares).
    for _ in 0..10 {
        let Ok(Some(current)) = api.objects.get(res, None, &name).await else {
            return; // deleted meanwhile
        };
        let mut object = current.object.clone();
        match &result {
            Ok(report) if report.complete() => {
                set_condition(&mut object, "Running", false, "Succeeded", "");
                set_condition(
                    &mut object,
                    "Succeeded",
                    true,
                    "Succeeded",
                    &format!(
                        "{} of {} objects rewritten on the write key, {} already on it",
                        report.rewritten, report.scanned, report.already_current
                    ),
                );
            }
            Ok(report) => {
                set_condition(&mut object, "Running", false, "Failed", "");
                set_condition(
                    &mut object,
                    "Failed",
                    true,
                    "Unreadable",
                    &format!(
                        "{} objects cannot be read with this configuration ({} still stale); first: {}",
                        report.unreadable,
                        report.remaining_stale,
                        report
                            .unreadable_keys
                            .first()
                            .map(|u| format!("{}: {}", u.key, u.reason))
                            .unwrap_or_default()
                    ),
                );
            }
            Err(e) => {
                set_condition(&mut object, "Running", false, "Failed", "");
                set_condition(&mut object, "Failed", true, "Failed", &e.to_string());
            }
        }
        match api.objects.update(res, &current, object).await {
            Ok(_) => {
                tracing::info!(migration = %name, resource = %gr, succeeded = result.as_ref().is_ok_and(|r| r.complete()), "storage version migration finished");
                return;
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => {
                tracing::warn!(migration = %name, error = %e.message, "recording a migration's outcome");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_and_live_migrations_are_left_alone() {
        let mut m =
            json!({"metadata": {"name": "m"}, "spec": {"resource": {"resource": "secrets"}}});
        assert!(wants_work(&m));
        set_condition(&mut m, "Running", true, "Running", "");
        claim(&mut m, "a");
        assert!(!wants_work(&m), "claimed just now");
        m["metadata"]["annotations"][RENEWED] = json!("0");
        assert!(wants_work(&m), "an abandoned claim is taken over");
        set_condition(&mut m, "Succeeded", true, "Succeeded", "");
        assert!(!wants_work(&m));
        assert_eq!(target(&m).unwrap(), GroupResource::new("", "secrets"));
        assert!(target(&json!({"spec": {}})).is_err());
    }
}
