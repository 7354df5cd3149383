//! Advice on a valid configuration: choices kube-apiserver accepts but an operator should
//! know about (`atrest config check` prints these as warnings).

use std::fmt;

use super::{EncryptionConfig, KmsApiVersion, ProviderConfig};
use crate::resource::GroupResource;

/// One piece of advice, tied to a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything worth warning about in `config`.
pub fn lint(config: &EncryptionConfig) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (i, rule) in config.rules().iter().enumerate() {
        let names: Vec<String> = rule.resources.iter().map(|r| r.to_string()).collect();
        let names = names.join(", ");
        if let Some(ProviderConfig::Identity) = rule.providers.first() {
            warnings.push(Warning {
                path: format!("resources[{i}].providers[0]"),
                message: format!(
                    "identity is the first provider, so new writes of {names} are stored unencrypted"
                ),
            });
        }
        for (j, provider) in rule.providers.iter().enumerate() {
            let path = format!("resources[{i}].providers[{j}]");
            match provider {
                ProviderConfig::AesCbc(_) if j == 0 => warnings.push(Warning {
                    path,
                    message: "aescbc is not recommended: CBC is unauthenticated and open to padding-oracle attacks; prefer secretbox, kms v2, or aesgcm with regular key rotation".into(),
                }),
                ProviderConfig::AesGcm(_) if j == 0 => warnings.push(Warning {
                    path,
                    message: "aesgcm uses random 96-bit nonces: rotate its write key before 200,000 writes (upstream guidance)".into(),
                }),
                ProviderConfig::Kms(k) if matches!(k.api_version, KmsApiVersion::V1 { .. }) => {
                    warnings.push(Warning {
                        path,
                        message: format!("kms provider {:?} uses the deprecated KMS v1 API; migrate to apiVersion: v2", k.name),
                    })
                }
                _ => {}
            }
        }
    }
    if config
        .providers_for(&GroupResource::new("", "secrets"))
        .is_empty()
    {
        warnings.push(Warning {
            path: "resources".into(),
            message: "no rule covers secrets: they are stored in plaintext".into(),
        });
    }
    warnings
}
