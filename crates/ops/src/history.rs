//! `atrest status --history`: what old revisions still hold. etcd keeps every version of a
//! key until compaction (and its pages until defragmentation); the embedded store keeps old
//! rows until compaction. After a migration those old versions may still be plaintext or on
//! keys that are gone: this reads every retained version (constant memory, a page at a time)
//! and reports them.

use std::collections::BTreeMap;

use atrest_encryption::GroupResource;
use atrest_storage::{EncryptedStore, ReadError, ScanRange, StorageError};
use futures::StreamExt;
use serde::Serialize;

use crate::audit::{AuditOptions, Unreadable, EXAMPLES};
use crate::progress::Progress;

/// The retained versions of one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceHistory {
    pub resource: String,
    /// Whether the configuration encrypts it.
    pub covered: bool,
    /// Retained versions (current ones included).
    pub versions: u64,
    /// Versions stored without encryption although the configuration encrypts the resource.
    pub plaintext: u64,
    /// Versions no key of the configuration opens (old keys, removed providers).
    pub unreadable: u64,
    /// The first findings, with their revision.
    pub examples: Vec<Unreadable>,
}

impl ResourceHistory {
    /// Findings in this resource.
    pub fn findings(&self) -> u64 {
        self.plaintext + self.unreadable
    }
}

/// The audit of the retained history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryAudit {
    /// No retained version is plaintext where the configuration encrypts, or unreadable.
    pub clean: bool,
    pub versions: u64,
    pub compacted_revision: i64,
    pub resources: Vec<ResourceHistory>,
}

/// Reads every retained version under the prefix (or of the chosen resources).
pub async fn audit_history(
    storage: &EncryptedStore,
    options: &AuditOptions,
    progress: &dyn Progress,
) -> Result<HistoryAudit, StorageError> {
    let chain = storage.chain().current();
    let ranges: Vec<ScanRange> = match &options.resources {
        None => vec![ScanRange::Everything],
        Some(list) => list
            .iter()
            .map(|gr| storage.collection(gr, None).map(ScanRange::Collection))
            .collect::<Result<_, _>>()?,
    };
    progress.phase("reading history", None);
    let mut by_resource: BTreeMap<GroupResource, ResourceHistory> = BTreeMap::new();
    let mut versions = 0;
    for range in &ranges {
        let prefix = storage.range_bytes(range);
        let mut pages = storage.history_pages(range, &prefix);
        while let Some(page) = pages.next().await {
            let page = page?;
            progress.advance(page.len() as u64);
            for entry in page {
                let (resource, finding) = match entry {
                    Ok(v) => {
                        let covered = chain.for_resource(v.key.resource()).is_configured();
                        let plain = covered && !v.provider.kind.encrypts();
                        let finding = plain.then(|| Unreadable {
                            key: format!("{} (revision {})", v.key, v.mod_revision),
                            reason: "stored in plaintext".into(),
                        });
                        (v.key.resource().clone(), finding.map(|f| (true, f)))
                    }
                    Err(u) => match &u.error {
                        ReadError::Transform(e) => (
                            e.resource.clone(),
                            Some((
                                false,
                                Unreadable {
                                    key: format!("{} (revision {})", u.key_text(), u.mod_revision),
                                    reason: u.error.to_string(),
                                },
                            )),
                        ),
                        // Not an object key: nothing the providers say about it.
                        ReadError::Key(_) => continue,
                    },
                };
                versions += 1;
                let r = by_resource
                    .entry(resource.clone())
                    .or_insert_with(|| ResourceHistory {
                        resource: resource.to_string(),
                        covered: chain.for_resource(&resource).is_configured(),
                        ..ResourceHistory::default()
                    });
                r.versions += 1;
                if let Some((plain, example)) = finding {
                    if plain {
                        r.plaintext += 1;
                    } else {
                        r.unreadable += 1;
                    }
                    if r.examples.len() < EXAMPLES {
                        r.examples.push(example);
                    }
                }
            }
        }
    }
    progress.finish();
    let resources: Vec<ResourceHistory> = by_resource.into_values().collect();
    Ok(HistoryAudit {
        clean: resources.iter().all(|r| r.findings() == 0),
        versions,
        compacted_revision: storage.store().compacted_revision().await?,
        resources,
    })
}
