//! Editing an EncryptionConfiguration for a key rotation: add the new key where it only
//! reads, promote it to write, remove the old key. Each edit is a pure function of the
//! document and is idempotent, so a resumed rotation can re-apply the step it was in.
//!
//! The document is edited as a generic tree (YAML or JSON, as the file was written) and
//! written back in the same syntax; comments in a YAML file do not survive the rewrite
//! (a backup of the original is kept beside it). Every result is validated with the same
//! parser the servers use before it is written.

use atrest_encryption::{EncryptionConfig, GroupResource, Key, ParseOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The static-key providers a rotation handles.
pub const STATIC_PROVIDERS: &[&str] = &["aesgcm", "aescbc", "secretbox"];

/// Why a configuration cannot be rotated or edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: no resource entry has a static-key provider (aesgcm, aescbc, secretbox) first{hint}")]
    NothingToRotate { file: String, hint: String },
    #[error("{file}: resources[{index}] ({resources}) has {provider} first; only aesgcm, aescbc and secretbox keys are rotated here (a KMS key is rotated in its plugin)")]
    NotStatic {
        file: String,
        index: usize,
        resources: String,
        provider: String,
    },
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

/// A provider and key name (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyName {
    pub provider: String,
    pub key: String,
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.key)
    }
}

/// One resource entry being rotated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRotation {
    /// `resources[index]` in the file.
    pub index: usize,
    /// Its resources, as the file spells them.
    pub resources: Vec<String>,
    /// The key that wrote before.
    pub old: KeyName,
    /// The key that writes after.
    pub new: KeyName,
}

/// A parsed configuration document.
#[derive(Debug, Clone)]
pub struct Document {
    tree: Value,
    json: bool,
    file: String,
}

fn provider_kind(block: &Value) -> Option<&str> {
    block
        .as_object()
        .and_then(|o| o.keys().next())
        .map(String::as_str)
}

impl Document {
    /// Parses `bytes` (YAML or JSON) of `file`.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, EditError> {
        let invalid = |message: String| EditError::Invalid {
            file: file.to_string(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))?;
        let json = text.trim_start().starts_with('{');
        let tree: Value = if json {
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        let doc = Document {
            tree,
            json,
            file: file.to_string(),
        };
        doc.validate()?;
        Ok(doc)
    }

    /// The document's bytes, in the syntax it was read in.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EditError> {
        let invalid = |message: String| EditError::Invalid {
            file: self.file.clone(),
            message,
        };
        if self.json {
            let mut out =
                serde_json::to_vec_pretty(&self.tree).map_err(|e| invalid(e.to_string()))?;
            out.push(b'\n');
            Ok(out)
        } else {
            serde_saphyr::to_string(&self.tree)
                .map(String::into_bytes)
                .map_err(|e| invalid(e.to_string()))
        }
    }

    /// Checks the document as the servers will read it.
    fn validate(&self) -> Result<EncryptionConfig, EditError> {
        let bytes = self.to_bytes()?;
        EncryptionConfig::parse(&bytes, &self.file, ParseOptions::default()).map_err(|e| {
            EditError::Invalid {
                file: self.file.clone(),
                message: e.to_string(),
            }
        })
    }

    fn entries(&self) -> &[Value] {
        self.tree["resources"].as_array().map_or(&[], Vec::as_slice)
    }

    fn providers_mut(&mut self, index: usize) -> Option<&mut Vec<Value>> {
        self.tree["resources"][index]["providers"].as_array_mut()
    }

    fn entry_resources(entry: &Value) -> Vec<String> {
        entry["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    }

    /// Which entries a rotation changes: those whose first provider is a static-key
    /// provider, or (with `only`) the entries that name one of those resources, which must
    /// then have one. `provider`: the new key's provider (default: the current one's).
    pub fn plan(
        &self,
        provider: Option<&str>,
        only: Option<&[GroupResource]>,
        new_key_name: &str,
    ) -> Result<Vec<EntryRotation>, EditError> {
        let mut plan = Vec::new();
        for (index, entry) in self.entries().iter().enumerate() {
            let resources = Self::entry_resources(entry);
            if let Some(only) = only {
                let named = resources
                    .iter()
                    .any(|r| only.contains(&GroupResource::parse(r)));
                if !named {
                    continue;
                }
            }
            let first = &entry["providers"][0];
            let kind = provider_kind(first).unwrap_or("").to_string();
            if !STATIC_PROVIDERS.contains(&kind.as_str()) {
                if only.is_some() {
                    return Err(EditError::NotStatic {
                        file: self.file.clone(),
                        index,
                        resources: resources.join(", "),
                        provider: kind,
                    });
                }
                continue;
            }
            let old_key = first[&kind]["keys"][0]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            plan.push(EntryRotation {
                index,
                resources,
                old: KeyName {
                    provider: kind.clone(),
                    key: old_key,
                },
                new: KeyName {
                    provider: provider.unwrap_or(&kind).to_string(),
                    key: new_key_name.to_string(),
                },
            });
        }
        if plan.is_empty() {
            return Err(EditError::NothingToRotate {
                file: self.file.clone(),
                hint: if only.is_some() {
                    " among the resources given".into()
                } else {
                    String::new()
                },
            });
        }
        Ok(plan)
    }

    /// Where the new key of `r` is: (provider block index, key index), if present.
    fn find(&self, r: &EntryRotation, key: &KeyName) -> Option<(usize, usize)> {
        let providers = self.entries().get(r.index)?["providers"].as_array()?;
        providers.iter().enumerate().find_map(|(p, block)| {
            let keys = block.get(&key.provider)?["keys"].as_array()?;
            let k = keys.iter().position(|k| k["name"] == key.key.as_str())?;
            Some((p, k))
        })
    }

    /// Whether the new key is in the file.
    pub fn has_new_key(&self, plan: &[EntryRotation]) -> bool {
        plan.iter().all(|r| self.find(r, &r.new).is_some())
    }

    /// Whether the new key writes (first key of the first provider).
    pub fn new_key_writes(&self, plan: &[EntryRotation]) -> bool {
        plan.iter().all(|r| self.find(r, &r.new) == Some((0, 0)))
    }

    /// Whether the old key is still in the file.
    pub fn has_old_key(&self, plan: &[EntryRotation]) -> bool {
        plan.iter().any(|r| self.find(r, &r.old).is_some())
    }

    /// Adds a fresh key (OS CSPRNG) for each entry, where it reads but does not write: the
    /// second key of the first provider, or (another provider) a new provider block second.
    pub fn add_new_keys(&mut self, plan: &[EntryRotation]) -> Result<(), EditError> {
        for r in plan {
            if self.find(r, &r.new).is_some() {
                continue;
            }
            let key = Key::generate(32).map_err(|e| EditError::Random(e.to_string()))?;
            let secret = key.to_base64();
            let entry = json!({"name": r.new.key, "secret": secret.as_str()});
            let same = r.new.provider == r.old.provider;
            let file = self.file.clone();
            let providers = self
                .providers_mut(r.index)
                .ok_or_else(|| EditError::Invalid {
                    file,
                    message: format!("resources[{}] has no providers", r.index),
                })?;
            if same {
                if let Some(keys) = providers[0][&r.old.provider]["keys"].as_array_mut() {
                    keys.insert(1.min(keys.len()), entry);
                }
            } else {
                providers.insert(1, json!({ r.new.provider.clone(): {"keys": [entry]} }));
            }
        }
        self.validate().map(drop)
    }

    /// Moves the new key to write: first key of its provider, that provider first.
    pub fn promote_new_keys(&mut self, plan: &[EntryRotation]) -> Result<(), EditError> {
        for r in plan {
            let Some((p, k)) = self.find(r, &r.new) else {
                continue;
            };
            let providers = match self.providers_mut(r.index) {
                Some(p) => p,
                None => continue,
            };
            if let Some(keys) = providers[p][&r.new.provider]["keys"].as_array_mut() {
                let key = keys.remove(k);
                keys.insert(0, key);
            }
            let block = providers.remove(p);
            providers.insert(0, block);
        }
        self.validate().map(drop)
    }

    /// Removes the old key; a provider block left without keys goes too.
    pub fn remove_old_keys(&mut self, plan: &[EntryRotation]) -> Result<(), EditError> {
        for r in plan {
            let Some((p, k)) = self.find(r, &r.old) else {
                continue;
            };
            let providers = match self.providers_mut(r.index) {
                Some(p) => p,
                None => continue,
            };
            let empty = match providers[p][&r.old.provider]["keys"].as_array_mut() {
                Some(keys) => {
                    keys.remove(k);
                    keys.is_empty()
                }
                None => false,
            };
            if empty {
                providers.remove(p);
            }
        }
        self.validate().map(drop)
    }

    /// Puts `identity` first in every resource entry (writes in plain text), every other
    /// provider kept after it in order, so everything stored encrypted still reads: the
    /// first step of turning encryption off. Whether anything changed.
    pub fn identity_first(&mut self) -> Result<bool, EditError> {
        let mut changed = false;
        for index in 0..self.entries().len() {
            let Some(providers) = self.providers_mut(index) else {
                continue;
            };
            if providers.first().and_then(provider_kind) == Some("identity") {
                continue;
            }
            providers.retain(|p| provider_kind(p) != Some("identity"));
            providers.insert(0, json!({"identity": {}}));
            changed = true;
        }
        self.validate().map(|_| changed)
    }

    /// Provider blocks of an entry, as `kind:first-key` (for messages and tests).
    pub fn describe_entry(&self, index: usize) -> Vec<String> {
        self.entries()
            .get(index)
            .and_then(|e| e["providers"].as_array())
            .into_iter()
            .flatten()
            .map(|block| {
                let kind = provider_kind(block).unwrap_or("?");
                let keys: Vec<&str> = block[kind]["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k["name"].as_str())
                    .collect();
                if keys.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}:{}", keys.join(","))
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: old\n              secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=\n      - identity: {}\n  - resources: [configmaps]\n    providers:\n      - identity: {}\n";

    #[test]
    fn a_rotation_within_one_provider() {
        let mut doc = Document::parse(CONFIG.as_bytes(), "enc.yaml").unwrap();
        let plan = doc.plan(None, None, "k2").unwrap();
        assert_eq!(plan.len(), 1, "configmaps (identity first) is not rotated");
        assert_eq!(plan[0].old.to_string(), "aescbc:old");
        assert!(!doc.has_new_key(&plan));
        doc.add_new_keys(&plan).unwrap();
        assert_eq!(doc.describe_entry(0), ["aescbc:old,k2", "identity"]);
        // Idempotent: adding again changes nothing (the same key stays).
        let once = doc.to_bytes().unwrap();
        doc.add_new_keys(&plan).unwrap();
        assert_eq!(doc.to_bytes().unwrap(), once);
        doc.promote_new_keys(&plan).unwrap();
        assert_eq!(doc.describe_entry(0), ["aescbc:k2,old", "identity"]);
        assert!(doc.new_key_writes(&plan));
        doc.remove_old_keys(&plan).unwrap();
        assert_eq!(doc.describe_entry(0), ["aescbc:k2", "identity"]);
        assert!(!doc.has_old_key(&plan));
        // What is written parses back, and secrets are real 32-byte keys.
        let bytes = doc.to_bytes().unwrap();
        let reread = Document::parse(&bytes, "enc.yaml").unwrap();
        assert_eq!(reread.describe_entry(0), ["aescbc:k2", "identity"]);
        assert_eq!(reread.describe_entry(1), ["identity"]);
    }

    #[test]
    fn identity_first_keeps_every_key_for_reading() {
        let mut doc = Document::parse(CONFIG.as_bytes(), "enc.yaml").unwrap();
        assert!(doc.identity_first().unwrap());
        assert_eq!(doc.describe_entry(0), ["identity", "aescbc:old"]);
        assert_eq!(doc.describe_entry(1), ["identity"]);
        let once = doc.to_bytes().unwrap();
        assert!(!doc.identity_first().unwrap(), "already first: no change");
        assert_eq!(doc.to_bytes().unwrap(), once);
    }

    #[test]
    fn a_rotation_to_another_provider() {
        let mut doc = Document::parse(CONFIG.as_bytes(), "enc.yaml").unwrap();
        let plan = doc.plan(Some("aesgcm"), None, "k2").unwrap();
        doc.add_new_keys(&plan).unwrap();
        assert_eq!(
            doc.describe_entry(0),
            ["aescbc:old", "aesgcm:k2", "identity"]
        );
        doc.promote_new_keys(&plan).unwrap();
        assert_eq!(
            doc.describe_entry(0),
            ["aesgcm:k2", "aescbc:old", "identity"]
        );
        doc.remove_old_keys(&plan).unwrap();
        assert_eq!(doc.describe_entry(0), ["aesgcm:k2", "identity"]);
    }

    #[test]
    fn json_stays_json_and_bad_choices_are_named() {
        let json = r#"{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{"resources":["secrets"],"providers":[{"identity":{}}]}]}"#;
        let doc = Document::parse(json.as_bytes(), "enc.json").unwrap();
        assert!(doc.to_bytes().unwrap().starts_with(b"{"));
        let err = doc.plan(None, None, "k").unwrap_err().to_string();
        assert!(
            err.contains("enc.json") && err.contains("static-key"),
            "{err}"
        );
        let err = doc
            .plan(None, Some(&[GroupResource::new("", "secrets")]), "k")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resources[0]") && err.contains("identity"),
            "{err}"
        );
        let err = Document::parse(b"resources: [", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.yaml"), "{err}");
    }
}
