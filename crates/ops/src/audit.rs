//! `atrest status`: what is really stored, per resource, provider and key.
//!
//! Every key under the prefix is read at one revision, page by page, and decrypted with the
//! configuration given; counters are kept per resource, so memory does not grow with the
//! object count (only the first few unreadable keys of each resource are remembered).

use std::collections::BTreeMap;

use atrest_encryption::{GroupResource, ProviderChain, ProviderId, ProviderKind};
use atrest_storage::servers::{live_servers, unix_now};
use atrest_storage::{EncryptedStore, Entry, ReadError, ScanRange, StorageError};
use serde::Serialize;

use crate::progress::Progress;
use crate::scan::Scanner;

/// Unreadable keys remembered per resource (the rest are counted).
pub const EXAMPLES: usize = 5;

/// A provider and key as the audit shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// `identity`, `aescbc`, `aesgcm`, `secretbox`, `kms` (v2) or `kms-v1`.
    pub provider: String,
    /// The key name (static providers) or the KMS provider name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The KMS v2 key id recorded in the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl KeyRef {
    /// The key of a provider id.
    pub fn of(id: &ProviderId) -> Self {
        let provider = match id.kind {
            ProviderKind::KmsV2 => "kms",
            kind => kind.as_str(),
        };
        KeyRef {
            provider: provider.to_string(),
            key: id.name.clone(),
            key_id: id.kms_key_id.clone(),
        }
    }

    /// Whether values under it are encrypted.
    pub fn encrypts(&self) -> bool {
        self.provider != "identity"
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.provider)?;
        if let Some(key) = &self.key {
            write!(f, ":{key}")?;
        }
        if let Some(id) = &self.key_id {
            write!(f, " (key id {id})")?;
        }
        Ok(())
    }
}

/// How many objects one key protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCount {
    #[serde(flatten)]
    pub key: KeyRef,
    pub objects: u64,
    /// Whether this is the resource's write key (without the KMS key id, which only the
    /// plugin knows).
    pub write: bool,
}

/// A value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub reason: String,
}

/// The audit of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAudit {
    /// `secrets`, `pandas.awesome.bears.example`.
    pub resource: String,
    /// Whether a rule of the configuration names it (or a wildcard covers it).
    pub covered: bool,
    /// Who writes new values.
    pub write_key: KeyRef,
    pub objects: u64,
    /// Encrypted with the write key, not stale.
    pub current: u64,
    /// Readable, but not by the write key (rewrite needed).
    pub stale: u64,
    /// Stored without encryption (read by identity).
    pub plaintext: u64,
    /// Not readable with this configuration.
    pub undecryptable: u64,
    /// Objects per key that opened them.
    pub keys: Vec<KeyCount>,
    /// The first unreadable keys, with why.
    pub undecryptable_keys: Vec<Unreadable>,
}

impl ResourceAudit {
    /// Every object readable, encrypted and on the write key.
    pub fn up_to_date(&self) -> bool {
        self.stale == 0 && self.plaintext == 0 && self.undecryptable == 0
    }
}

/// A server that published a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerState {
    pub id: String,
    pub config_hash: String,
    pub heartbeat_age_seconds: f64,
    pub automatic_reload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
    /// Whether it has loaded the configuration file the audit used.
    pub matches_config: bool,
}

/// Keys under the prefix that are not storage keys of any resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unparsable {
    pub count: u64,
    pub examples: Vec<Unreadable>,
}

/// The whole audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Every object of every covered resource is readable, encrypted and on its write key.
    pub up_to_date: bool,
    /// The revision the store was read at.
    pub revision: i64,
    /// The store, as the backend describes itself.
    pub store: String,
    /// `sha256:<hex>` of the configuration the audit used.
    pub config_hash: String,
    pub objects: u64,
    pub resources: Vec<ResourceAudit>,
    pub unparsable_keys: Unparsable,
    pub servers: Vec<ServerState>,
}

impl Audit {
    /// The covered resources that are not up to date.
    pub fn problems(&self) -> impl Iterator<Item = &ResourceAudit> {
        self.resources
            .iter()
            .filter(|r| r.covered && !r.up_to_date())
    }
}

/// Tallies for one resource while scanning.
struct Tally {
    audit: ResourceAudit,
    keys: BTreeMap<KeyRef, u64>,
    write: KeyRef,
}

impl Tally {
    fn new(resource: &GroupResource, chain: &ProviderChain) -> Self {
        let transformer = chain.for_resource(resource);
        let write = KeyRef::of(&transformer.write_provider());
        Tally {
            audit: ResourceAudit {
                resource: resource.to_string(),
                covered: transformer.is_configured(),
                write_key: write.clone(),
                objects: 0,
                current: 0,
                stale: 0,
                plaintext: 0,
                undecryptable: 0,
                keys: Vec::new(),
                undecryptable_keys: Vec::new(),
            },
            keys: BTreeMap::new(),
            write,
        }
    }

    fn finish(mut self) -> ResourceAudit {
        let write = self.write;
        let covered = self.audit.covered;
        self.audit.keys = self
            .keys
            .into_iter()
            .map(|(key, objects)| KeyCount {
                write: covered && key.provider == write.provider && key.key == write.key,
                key,
                objects,
            })
            .collect();
        self.audit
    }
}

/// Which resources to audit: all of them, or only these.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Only these resources (`None`: every key under the prefix).
    pub resources: Option<Vec<GroupResource>>,
}

/// Audits the store through `storage` with the chain it holds.
pub async fn audit(
    storage: &EncryptedStore,
    options: &AuditOptions,
    progress: &dyn Progress,
) -> Result<Audit, StorageError> {
    let chain = storage.chain().current();
    let ranges: Vec<ScanRange> = match &options.resources {
        None => vec![ScanRange::Everything],
        Some(list) => list
            .iter()
            .map(|gr| storage.collection(gr, None).map(ScanRange::Collection))
            .collect::<Result<_, _>>()?,
    };
    let mut total = 0;
    for range in &ranges {
        total += storage.count(range, None).await?;
    }
    progress.phase("scanning", Some(total));
    let mut tallies: BTreeMap<GroupResource, Tally> = BTreeMap::new();
    let mut unparsable = Unparsable::default();
    let mut revision = None;
    for range in &ranges {
        let mut scanner = Scanner::new(storage, range.clone(), revision);
        while let Some(page) = scanner.next().await? {
            progress.advance(page.entries.len() as u64);
            for entry in page.entries {
                tally(&mut tallies, &mut unparsable, &chain, entry);
            }
        }
        revision = scanner.revision();
    }
    // Resources named but empty still show (as zero).
    if let Some(list) = &options.resources {
        for gr in list {
            tallies
                .entry(gr.clone())
                .or_insert_with(|| Tally::new(gr, &chain));
        }
    }
    progress.finish();
    let resources: Vec<ResourceAudit> = tallies.into_values().map(Tally::finish).collect();
    let objects = resources.iter().map(|r| r.objects).sum();
    let (records, _) = live_servers(storage.store().as_ref(), storage.prefix()).await?;
    let now = unix_now();
    let servers = records
        .into_iter()
        .map(|r| ServerState {
            matches_config: r.config_hash == chain.config_hash(),
            heartbeat_age_seconds: (now - r.heartbeat).max(0.0),
            id: r.id,
            config_hash: r.config_hash,
            automatic_reload: r.automatic_reload,
            last_reload_error: r.last_reload_error,
        })
        .collect();
    let up_to_date = resources.iter().all(|r| !r.covered || r.up_to_date());
    Ok(Audit {
        up_to_date,
        revision: revision.unwrap_or(0),
        store: storage.store().describe(),
        config_hash: chain.config_hash().to_string(),
        objects,
        resources,
        unparsable_keys: unparsable,
        servers,
    })
}

fn tally(
    tallies: &mut BTreeMap<GroupResource, Tally>,
    unparsable: &mut Unparsable,
    chain: &ProviderChain,
    entry: Entry,
) {
    match entry {
        Ok(value) => {
            let t = tallies
                .entry(value.key.resource().clone())
                .or_insert_with(|| Tally::new(value.key.resource(), chain));
            let key = KeyRef::of(&value.provider);
            t.audit.objects += 1;
            if !key.encrypts() {
                t.audit.plaintext += 1;
            } else if value.stale {
                t.audit.stale += 1;
            } else {
                t.audit.current += 1;
            }
            *t.keys.entry(key).or_default() += 1;
        }
        Err(u) => {
            let example = Unreadable {
                key: u.key_text(),
                reason: u.error.to_string(),
            };
            match &u.error {
                ReadError::Transform(e) => {
                    let t = tallies
                        .entry(e.resource.clone())
                        .or_insert_with(|| Tally::new(&e.resource, chain));
                    t.audit.objects += 1;
                    t.audit.undecryptable += 1;
                    if t.audit.undecryptable_keys.len() < EXAMPLES {
                        t.audit.undecryptable_keys.push(example);
                    }
                }
                ReadError::Key(_) => {
                    unparsable.count += 1;
                    if unparsable.examples.len() < EXAMPLES {
                        unparsable.examples.push(example);
                    }
                }
            }
        }
    }
}
