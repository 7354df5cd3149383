//! What the page shows, gathered in one scan: the audit, the retained history, the
//! rotation recorded in the store, the keys of the configuration with the objects each
//! protects, and the KMS providers. Names, counts and key names only: nothing here holds
//! key material or object data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atrest_encryption::config::{EncryptionConfig, ProviderConfig};
use atrest_encryption::GroupResource;
use atrest_ops::audit::{audit, Audit, AuditOptions};
use atrest_ops::history::{audit_history, HistoryAudit};
use atrest_ops::rotate::{recorded, RotationState};
use atrest_ops::NoProgress as Silent;
use atrest_storage::servers::unix_now;
use atrest_storage::EncryptedStore;
use serde::Serialize;

/// One key of the configuration, and how many objects it protects now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigKey {
    /// `resources[i]` of the file.
    pub entry: usize,
    /// The entry's resources, as the file spells them.
    pub resources: Vec<String>,
    /// `aesgcm`, `aescbc`, `secretbox`, `kms`, `identity`.
    pub provider: String,
    /// The key name (static providers) or the KMS provider name; none for identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The entry's first provider and first key: it writes new values.
    pub write: bool,
    /// Objects of the resources this entry governs that this key opened.
    pub objects: u64,
}

/// A KMS provider of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsProvider {
    pub name: String,
    pub endpoint: String,
    /// `true`/`false` as the last probe found the plugin; absent when it was not probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rotation in the store, with what the page needs to draw its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub id: String,
    pub step: String,
    /// Every step, in order, so the page can show where it stands.
    pub steps: Vec<&'static str>,
    pub holder: String,
    pub started: f64,
    pub updated: f64,
    pub rewritten: u64,
    /// The objects of the rotated resources (what re-encryption rewrites).
    pub total: u64,
    pub rate: f64,
    pub entries: Vec<RotationEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationEntry {
    pub resources: Vec<String>,
    pub old_key: String,
    pub new_key: String,
}

/// Everything one scan found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Unix time the scan finished.
    pub scanned_at: f64,
    /// How long it took, in seconds.
    pub scan_seconds: f64,
    /// Which scan this is (1, 2, ...): viewers share scans.
    pub scan: u64,
    /// The configuration file read.
    pub config_file: String,
    pub audit: Audit,
    pub keys: Vec<ConfigKey>,
    pub history: HistoryAudit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    pub kms: Vec<KmsProvider>,
}

/// Where the chain comes from: `status --web` re-reads the file before every scan (a
/// rotation changes it); `serve` uses the chain its reload loop keeps current.
#[async_trait::async_trait]
pub trait ChainSource: Send + Sync {
    /// Makes `storage` read with the configuration in force and returns it, parsed.
    fn refresh(&self, storage: &EncryptedStore) -> Result<EncryptionConfig, String>;
    /// Health of each KMS provider, by name, where the host can probe it.
    async fn kms_health(&self, _storage: &EncryptedStore) -> Vec<(String, Result<(), String>)> {
        Vec::new()
    }
}

/// What a scan reads.
pub struct ScanSource {
    pub storage: EncryptedStore,
    pub config_file: PathBuf,
    pub chain: Box<dyn ChainSource>,
}

impl std::fmt::Debug for ScanSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanSource")
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

impl ScanSource {
    /// Runs one scan.
    pub async fn scan(&self, number: u64) -> Result<Snapshot, String> {
        let started = Instant::now();
        let config = self.chain.refresh(&self.storage)?;
        let options = AuditOptions::default();
        let audit = audit(&self.storage, &options, &Silent)
            .await
            .map_err(|e| format!("scanning the store: {e}"))?;
        let history = audit_history(&self.storage, &options, &Silent)
            .await
            .map_err(|e| format!("scanning the store's history: {e}"))?;
        let rotation = recorded(&self.storage)
            .await
            .map_err(|e| format!("reading the rotation state: {e}"))?
            .map(|(state, _)| rotation_view(&state, &audit));
        let keys = config_keys(&config, &audit);
        let health = self.chain.kms_health(&self.storage).await;
        let kms = config
            .kms_providers()
            .map(|k| {
                let probed = health.iter().find(|(name, _)| name == &k.name);
                KmsProvider {
                    name: k.name.clone(),
                    endpoint: k.endpoint.url.clone(),
                    healthy: probed.map(|(_, r)| r.is_ok()),
                    error: probed.and_then(|(_, r)| r.clone().err()),
                }
            })
            .collect();
        Ok(Snapshot {
            scanned_at: unix_now(),
            scan_seconds: started.elapsed().as_secs_f64(),
            scan: number,
            config_file: self.config_file.display().to_string(),
            audit,
            keys,
            history,
            rotation,
            kms,
        })
    }
}

/// The entries of the configuration that govern `gr`, as the chain looks them up: the
/// exact name, else `*.<group>`, else `*.*`; every entry naming the first of these that
/// any entry names (upstream appends the providers of entries naming the same resource).
fn governing_entries(config: &EncryptionConfig, gr: &GroupResource) -> Vec<usize> {
    let candidates = [
        gr.clone(),
        GroupResource::new(gr.group.clone(), "*"),
        GroupResource::new("*", "*"),
    ];
    for candidate in &candidates {
        let entries: Vec<usize> = config
            .rules()
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.resources.contains(candidate))
            .map(|(i, _)| i)
            .collect();
        if !entries.is_empty() {
            return entries;
        }
    }
    Vec::new()
}

fn provider_keys(p: &ProviderConfig) -> (String, Vec<Option<String>>) {
    match p {
        ProviderConfig::Identity => ("identity".into(), vec![None]),
        ProviderConfig::AesGcm(keys)
        | ProviderConfig::AesCbc(keys)
        | ProviderConfig::Secretbox(keys) => (
            p.kind_name().to_string(),
            keys.iter()
                .map(|k| Some(k.name.as_str().to_string()))
                .collect(),
        ),
        ProviderConfig::Kms(k) => ("kms".into(), vec![Some(k.name.clone())]),
    }
}

/// Every key of the configuration with the objects it protects.
pub fn config_keys(config: &EncryptionConfig, audit: &Audit) -> Vec<ConfigKey> {
    let mut keys = Vec::new();
    for (entry, rule) in config.rules().iter().enumerate() {
        let resources: Vec<String> = rule.resources.iter().map(|r| r.to_string()).collect();
        for (j, provider) in rule.providers.iter().enumerate() {
            let (kind, names) = provider_keys(provider);
            for (k, name) in names.into_iter().enumerate() {
                keys.push(ConfigKey {
                    entry,
                    resources: resources.clone(),
                    provider: kind.clone(),
                    key: name,
                    write: j == 0 && k == 0,
                    objects: 0,
                });
            }
        }
    }
    for resource in audit.resources.iter().filter(|r| r.covered) {
        let gr = GroupResource::parse(&resource.resource);
        let entries = governing_entries(config, &gr);
        for count in &resource.keys {
            // Credit the first governing entry that has this key (a key named in two
            // entries that govern the same resource opens the same values).
            if let Some(key) = keys.iter_mut().find(|k| {
                entries.contains(&k.entry)
                    && k.provider == count.key.provider
                    && k.key == count.key.key
            }) {
                key.objects += count.objects;
            }
        }
    }
    keys
}

fn rotation_view(state: &RotationState, audit: &Audit) -> Rotation {
    let rotated: Vec<GroupResource> = state
        .entries
        .iter()
        .flat_map(|e| e.resources.iter().map(|r| GroupResource::parse(r)))
        .collect();
    let wildcard = |gr: &GroupResource, pattern: &GroupResource| {
        (pattern.group == "*" || pattern.group == gr.group)
            && (pattern.resource == "*" || pattern.resource == gr.resource)
    };
    let total = audit
        .resources
        .iter()
        .filter(|r| {
            let gr = GroupResource::parse(&r.resource);
            rotated.iter().any(|p| wildcard(&gr, p))
        })
        .map(|r| r.objects)
        .sum();
    Rotation {
        id: state.id.clone(),
        step: state.step.as_str().to_string(),
        steps: atrest_ops::rotate::STEPS
            .iter()
            .map(|s| s.as_str())
            .collect(),
        holder: state.holder.clone(),
        started: state.started,
        updated: state.updated,
        rewritten: state.rewritten,
        total,
        rate: state.rate,
        entries: state
            .entries
            .iter()
            .map(|e| RotationEntry {
                resources: e.resources.clone(),
                old_key: e.old.to_string(),
                new_key: e.new.to_string(),
            })
            .collect(),
    }
}

/// `status --web`: the file is read before every scan, so a rotation's edits show.
#[derive(Debug)]
pub struct FileChain {
    pub path: PathBuf,
    pub parse: atrest_encryption::ParseOptions,
    /// Builds the chain of a parsed configuration (KMS connectors included).
    pub build: fn(&EncryptionConfig) -> Result<atrest_encryption::ProviderChain, String>,
}

#[async_trait::async_trait]
impl ChainSource for FileChain {
    fn refresh(&self, storage: &EncryptedStore) -> Result<EncryptionConfig, String> {
        let config = read_config(&self.path, self.parse)?;
        if config.hash() != storage.chain().current().config_hash() {
            let chain = (self.build)(&config)?;
            storage.chain().replace(chain);
        }
        Ok(config)
    }

    async fn kms_health(&self, storage: &EncryptedStore) -> Vec<(String, Result<(), String>)> {
        probe_kms(storage, &self.path, self.parse).await
    }
}

/// `atrest serve`: the chain is the server's own (its reload loop replaces it); the file
/// is parsed for the page's key table, and KMS plugins are probed as `/readyz` probes them.
#[derive(Debug)]
pub struct LiveChain {
    pub path: PathBuf,
    pub parse: atrest_encryption::ParseOptions,
}

#[async_trait::async_trait]
impl ChainSource for LiveChain {
    fn refresh(&self, _storage: &EncryptedStore) -> Result<EncryptionConfig, String> {
        read_config(&self.path, self.parse)
    }

    async fn kms_health(&self, storage: &EncryptedStore) -> Vec<(String, Result<(), String>)> {
        probe_kms(storage, &self.path, self.parse).await
    }
}

/// One health probe of every KMS v2 provider of the chain in force (Status, as `/readyz`
/// probes them), by the provider names of the file.
async fn probe_kms(
    storage: &EncryptedStore,
    path: &Path,
    parse: atrest_encryption::ParseOptions,
) -> Vec<(String, Result<(), String>)> {
    let chain = storage.chain().current();
    if !chain.has_kms() {
        return Vec::new();
    }
    let failures = chain.refresh_kms().await;
    let Ok(config) = read_config(path, parse) else {
        return Vec::new();
    };
    config
        .kms_providers()
        .map(|k| {
            let failed = failures.iter().find(|(name, _)| name == &k.name);
            (
                k.name.clone(),
                failed.map_or(Ok(()), |(_, e)| Err(e.to_string())),
            )
        })
        .collect()
}

/// Reads and parses a configuration file.
pub fn read_config(
    path: &Path,
    parse: atrest_encryption::ParseOptions,
) -> Result<EncryptionConfig, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    EncryptionConfig::parse(&bytes, &path.display().to_string(), parse).map_err(|e| e.to_string())
}
