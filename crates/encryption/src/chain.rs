//! The provider chain: which providers apply to which resource, and the exact read and write
//! algorithms of kube-apiserver (spec a.6, a.7, b.1-b.3).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{EncryptionConfig, KmsApiVersion, ProviderConfig};
use crate::error::{BuildError, Operation, ProviderFailure, TransformError, TransformFailure};
use crate::kms::KmsConnector;
use crate::provider::{
    identity_open, KmsV1Provider, KmsV2Provider, Opened, ProviderId, ProviderKind, SharedKmsV1,
    SharedKmsV2, StaticProvider,
};
use crate::resource::GroupResource;

/// A decrypted value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    /// The provider and key that opened it.
    pub provider: ProviderId,
    /// Read by a provider or key that does not write: the next write of this object must
    /// re-encrypt it, even if the object is unchanged (spec b.5).
    pub stale: bool,
}

/// An encrypted value and the provider that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub stored: Vec<u8>,
    pub provider: ProviderId,
}

#[derive(Debug)]
enum Provider {
    Identity,
    Static(StaticProvider),
    KmsV2(SharedKmsV2),
    KmsV1(SharedKmsV1),
}

impl Provider {
    /// The outer prefix; identity's is empty and matches everything.
    fn prefix(&self) -> &[u8] {
        match self {
            Provider::Identity => b"",
            Provider::Static(p) => &p.prefix,
            Provider::KmsV2(p) => p.prefix(),
            Provider::KmsV1(p) => p.prefix(),
        }
    }

    fn label(&self) -> String {
        match self {
            Provider::Identity => "identity".into(),
            Provider::Static(p) => p.kind.as_str().into(),
            Provider::KmsV2(p) => format!("kms-v2:{}", p.name()),
            Provider::KmsV1(_) => "kms-v1".into(),
        }
    }
}

/// The ordered providers that apply to one resource.
#[derive(Debug)]
pub struct ResourceTransformer {
    resource: GroupResource,
    providers: Vec<Arc<Provider>>,
    /// No rule covers the resource: plain identity that refuses encrypted data, with no
    /// prefix fall-through (spec a.7 step 4).
    unmatched: bool,
}

impl ResourceTransformer {
    /// The resource this transformer was looked up for.
    pub fn resource(&self) -> &GroupResource {
        &self.resource
    }

    /// Whether a rule of the configuration covers this resource.
    pub fn is_configured(&self) -> bool {
        !self.unmatched
    }

    /// The kind of the provider that writes new values.
    pub fn write_kind(&self) -> ProviderKind {
        match self.providers.first().map(|p| p.as_ref()) {
            Some(Provider::Static(p)) => p.kind,
            Some(Provider::KmsV2(_)) => ProviderKind::KmsV2,
            Some(Provider::KmsV1(_)) => ProviderKind::KmsV1,
            Some(Provider::Identity) | None => ProviderKind::Identity,
        }
    }

    fn error(
        &self,
        operation: Operation,
        storage_key: &[u8],
        failure: TransformFailure,
    ) -> TransformError {
        TransformError {
            operation,
            storage_key: String::from_utf8_lossy(storage_key).into_owned(),
            resource: self.resource.clone(),
            failure,
        }
    }

    /// The provider and key that write new values: `identity` when the first provider is
    /// identity or no rule covers the resource. (For KMS v2 the plugin's key id is not part
    /// of it: that is learnt from the plugin.)
    pub fn write_provider(&self) -> ProviderId {
        match self.providers.first().map(|p| p.as_ref()) {
            Some(Provider::Static(p)) if !self.unmatched => match p.keys.first() {
                Some(k) => ProviderId::named(p.kind, k.name.as_str()),
                None => ProviderId::identity(),
            },
            Some(Provider::KmsV2(p)) if !self.unmatched => {
                ProviderId::named(ProviderKind::KmsV2, p.name())
            }
            Some(Provider::KmsV1(p)) if !self.unmatched => {
                ProviderId::named(ProviderKind::KmsV1, p.name())
            }
            _ => ProviderId::identity(),
        }
    }

    /// Encrypts with the first provider (and its first key). `storage_key` is the full store
    /// key of the object; GCM-based providers authenticate it.
    pub async fn encrypt(
        &self,
        plaintext: &[u8],
        storage_key: &[u8],
    ) -> Result<Encrypted, TransformError> {
        let first = match self.providers.first() {
            Some(p) if !self.unmatched => p,
            _ => {
                return Ok(Encrypted {
                    stored: plaintext.to_vec(),
                    provider: ProviderId::identity(),
                })
            }
        };
        let sealed = match first.as_ref() {
            Provider::Identity => Ok((plaintext.to_vec(), ProviderId::identity())),
            Provider::Static(p) => p.seal(plaintext, storage_key),
            Provider::KmsV2(p) => p.seal(plaintext, storage_key).await,
            Provider::KmsV1(p) => p.seal(plaintext, storage_key).await,
        };
        match sealed {
            Ok((stored, provider)) => Ok(Encrypted { stored, provider }),
            Err(e) => Err(self.error(
                Operation::Encrypt,
                storage_key,
                TransformFailure::Encrypt {
                    provider: ProviderId {
                        kind: self.write_kind(),
                        name: None,
                        kms_key_id: None,
                    },
                    error: e.to_string(),
                },
            )),
        }
    }

    /// Decrypts with upstream's algorithm: every provider whose prefix matches is tried in
    /// order; identity failures are silent; the first success wins and is stale unless it
    /// came from the first provider's first key.
    pub async fn decrypt(
        &self,
        stored: &[u8],
        storage_key: &[u8],
    ) -> Result<Decrypted, TransformError> {
        if self.unmatched {
            return match identity_open(stored) {
                Some(plaintext) => Ok(Decrypted {
                    plaintext,
                    provider: ProviderId::identity(),
                    stale: false,
                }),
                None => Err(self.error(
                    Operation::Decrypt,
                    storage_key,
                    TransformFailure::IdentityRefused,
                )),
            };
        }
        let mut failures: Vec<ProviderFailure> = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let prefix = provider.prefix();
            let Some(payload) = stored.strip_prefix(prefix) else {
                continue;
            };
            let opened: Result<Opened, Vec<ProviderFailure>> = match provider.as_ref() {
                Provider::Identity => match identity_open(payload) {
                    Some(plaintext) => Ok(Opened {
                        plaintext,
                        provider: ProviderId::identity(),
                        stale: false,
                    }),
                    // Identity refusing encrypted data must not stop later providers.
                    None => continue,
                },
                Provider::Static(p) => p.open(payload, storage_key),
                Provider::KmsV2(p) => p.open(payload, storage_key).await.map_err(|e| {
                    vec![ProviderFailure {
                        provider: provider.label(),
                        error: e.to_string(),
                    }]
                }),
                Provider::KmsV1(p) => p.open(payload, storage_key).await.map_err(|e| {
                    vec![ProviderFailure {
                        provider: provider.label(),
                        error: e.to_string(),
                    }]
                }),
            };
            match opened {
                Ok(o) => {
                    return Ok(Decrypted {
                        plaintext: o.plaintext,
                        provider: o.provider,
                        stale: o.stale || index != 0,
                    })
                }
                Err(mut f) => failures.append(&mut f),
            }
        }
        let failure = if failures.is_empty() {
            TransformFailure::NoMatchingPrefix
        } else {
            TransformFailure::Providers(failures)
        };
        Err(self.error(Operation::Decrypt, storage_key, failure))
    }
}

/// Every resource's providers, built once from a validated configuration.
#[derive(Debug)]
pub struct ProviderChain {
    rules: HashMap<GroupResource, Vec<Arc<Provider>>>,
    kms_v2: Vec<SharedKmsV2>,
    config_hash: String,
}

impl ProviderChain {
    /// Builds every provider (key schedules are computed here, once). KMS providers are
    /// connected through `kms`; nothing is called on them yet (see [`ProviderChain::refresh_kms`]).
    pub fn build(config: &EncryptionConfig, kms: &dyn KmsConnector) -> Result<Self, BuildError> {
        let mut rules: HashMap<GroupResource, Vec<Arc<Provider>>> = HashMap::new();
        let mut kms_v2 = Vec::new();
        for (i, rule) in config.rules().iter().enumerate() {
            let mut providers = Vec::with_capacity(rule.providers.len());
            for (j, p) in rule.providers.iter().enumerate() {
                let path = format!("resources[{i}].providers[{j}].{}", p.kind_name());
                let fail = |error: String| BuildError {
                    path: path.clone(),
                    provider: p.kind_name().into(),
                    error,
                };
                let built = match p {
                    ProviderConfig::Identity => Provider::Identity,
                    ProviderConfig::AesGcm(keys) => Provider::Static(
                        StaticProvider::new(ProviderKind::AesGcm, keys)
                            .map_err(|e| fail(e.to_string()))?,
                    ),
                    ProviderConfig::AesCbc(keys) => Provider::Static(
                        StaticProvider::new(ProviderKind::AesCbc, keys)
                            .map_err(|e| fail(e.to_string()))?,
                    ),
                    ProviderConfig::Secretbox(keys) => Provider::Static(
                        StaticProvider::new(ProviderKind::Secretbox, keys)
                            .map_err(|e| fail(e.to_string()))?,
                    ),
                    ProviderConfig::Kms(k) => match k.api_version {
                        KmsApiVersion::V2 => {
                            let service = kms.connect_v2(k).map_err(|e| fail(e.to_string()))?;
                            let provider = Arc::new(
                                KmsV2Provider::new(&k.name, k.timeout, service)
                                    .with_lifecycle(kms.lifecycle())
                                    .with_observer(kms.observer()),
                            );
                            kms_v2.push(provider.clone());
                            Provider::KmsV2(provider)
                        }
                        KmsApiVersion::V1 { cache_size } => {
                            let service = kms.connect_v1(k).map_err(|e| fail(e.to_string()))?;
                            Provider::KmsV1(Arc::new(KmsV1Provider::new(
                                &k.name, k.timeout, cache_size, service,
                            )))
                        }
                    },
                };
                providers.push(Arc::new(built));
            }
            for gr in &rule.resources {
                // Upstream appends: a resource named by several entries reads with all of
                // their providers, and the first entry's first provider writes.
                rules
                    .entry(gr.clone())
                    .or_default()
                    .extend(providers.iter().cloned());
            }
        }
        Ok(ProviderChain {
            rules,
            kms_v2,
            config_hash: config.hash().to_string(),
        })
    }

    /// The configuration hash (`sha256:<hex>` of the file) this chain was built from.
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// The transformer for a resource: exact rule, then `*.<group>`, then `*.*`, else an
    /// identity that refuses encrypted data.
    pub fn for_resource(&self, gr: &GroupResource) -> ResourceTransformer {
        let candidates = [
            gr.clone(),
            GroupResource::new(gr.group.clone(), "*"),
            GroupResource::new("*", "*"),
        ];
        for candidate in &candidates {
            if let Some(providers) = self.rules.get(candidate) {
                return ResourceTransformer {
                    resource: gr.clone(),
                    providers: providers.clone(),
                    unmatched: false,
                };
            }
        }
        ResourceTransformer {
            resource: gr.clone(),
            providers: Vec::new(),
            unmatched: true,
        }
    }

    /// Runs one health probe on every KMS v2 provider (Status, and Encrypt of a new seed when
    /// the key id changed). Returns the failures by provider name.
    pub async fn refresh_kms(&self) -> Vec<(String, crate::kms::KmsError)> {
        let mut failures = Vec::new();
        for p in &self.kms_v2 {
            if let Err(e) = p.refresh().await {
                failures.push((p.name().to_string(), e));
            }
        }
        failures
    }

    /// The health probe of every KMS v2 provider, as `/healthz/kms-providers` runs it: like
    /// [`ProviderChain::refresh_kms`], but a result younger than 20 s (3 s after a failure)
    /// is reused instead of asking the plugin again.
    pub async fn probe_kms(&self) -> Vec<(String, crate::kms::KmsError)> {
        let mut failures = Vec::new();
        for p in &self.kms_v2 {
            if let Err(e) = p.probe().await {
                failures.push((p.name().to_string(), e));
            }
        }
        failures
    }

    /// The KMS v2 providers, in configuration order.
    pub fn kms_v2_providers(&self) -> &[Arc<KmsV2Provider>] {
        &self.kms_v2
    }

    /// Whether any provider needs a KMS plugin.
    pub fn has_kms(&self) -> bool {
        !self.kms_v2.is_empty()
            || self
                .rules
                .values()
                .flatten()
                .any(|p| matches!(p.as_ref(), Provider::KmsV1(_)))
    }
}
