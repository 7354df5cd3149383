//! `EncryptionConfiguration`: decoding, defaulting and validation, exactly as kube-apiserver
//! does them (spec section a).
//!
//! Parse, don't validate: [`EncryptionConfig::parse`] turns the file's bytes into a
//! [`EncryptionConfig`] whose keys are decoded and sized, whose KMS blocks are defaulted and
//! whose resource rules are known not to mask each other. Code holding an `EncryptionConfig`
//! never re-checks any of that.

mod duration;
mod lint;
mod raw;
pub mod template;

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use duration::{parse_go_duration, GoDuration};
pub use lint::{lint, Warning};
use raw::{RawEncryptionConfiguration, RawKey, RawKeys, RawKms, RawProviderConfiguration};

use crate::key::{Key, KeyName};
use crate::resource::GroupResource;

/// Sizes `aesgcm` and `aescbc` accept (AES-128/192/256), and the one `secretbox` accepts.
const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

/// The default KMS call timeout and v1 DEK cache size (upstream defaults.go).
const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_KMS_V1_CACHE_SIZE: i32 = 1000;

/// How to read a configuration file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// `--encryption-provider-config-automatic-reload` is on: KMS v1 names must be unique too.
    pub reload: bool,
    /// The `KMSv1` feature gate (off by default upstream since v1.29).
    pub allow_kms_v1: bool,
}

/// A validated `EncryptionConfiguration`.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    rules: Vec<ResourceRule>,
    hash: String,
}

/// One `resources[i]` entry: the resources it covers and its ordered providers.
#[derive(Debug, Clone)]
pub struct ResourceRule {
    pub resources: Vec<GroupResource>,
    pub providers: Vec<ProviderConfig>,
}

/// One provider element of a rule.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Identity,
    AesGcm(Vec<NamedKey>),
    AesCbc(Vec<NamedKey>),
    Secretbox(Vec<NamedKey>),
    Kms(KmsConfig),
}

impl ProviderConfig {
    /// The provider's name as it appears in the file (`aesgcm`, `kms`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            ProviderConfig::Identity => "identity",
            ProviderConfig::AesGcm(_) => "aesgcm",
            ProviderConfig::AesCbc(_) => "aescbc",
            ProviderConfig::Secretbox(_) => "secretbox",
            ProviderConfig::Kms(_) => "kms",
        }
    }
}

/// A key of a static provider: its public name and its secret bytes (already decoded and
/// checked to be of a size the provider accepts).
#[derive(Debug, Clone)]
pub struct NamedKey {
    pub name: KeyName,
    pub key: Key,
}

/// A defaulted `kms` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConfig {
    pub name: String,
    pub api_version: KmsApiVersion,
    pub endpoint: KmsEndpoint,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsApiVersion {
    /// KMS v1 with its DEK cache size (negative disables the cache).
    V1 {
        cache_size: i32,
    },
    V2,
}

/// Where a KMS plugin listens: a unix socket path, or a Linux abstract socket name
/// (`unix:///@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsEndpoint {
    /// The endpoint as written in the file.
    pub url: String,
    /// The socket path; for an abstract socket it begins with `@`.
    pub socket: String,
}

impl EncryptionConfig {
    /// Reads a configuration file's bytes (YAML or JSON), strictly, and validates it with every
    /// upstream rule. `source` names the file in error messages.
    pub fn parse(bytes: &[u8], source: &str, options: ParseOptions) -> Result<Self, ConfigError> {
        let hash = config_hash(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Empty {
                file: source.to_string(),
            });
        }
        let raw = decode(bytes, source)?;
        check_type_meta(&raw, source)?;
        let mut errors = Vec::new();
        let rules = validate(&raw, options, &mut errors);
        if errors.is_empty() {
            check_masking(&rules, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                file: source.to_string(),
                errors,
            });
        }
        let config = EncryptionConfig { rules, hash };
        if !options.allow_kms_v1 {
            if let Some(path) = config.first_kms_v1_path() {
                return Err(ConfigError::KmsV1Disabled {
                    file: source.to_string(),
                    path,
                });
            }
        }
        Ok(config)
    }

    pub fn rules(&self) -> &[ResourceRule] {
        &self.rules
    }

    /// `sha256:<hex>` of the file's raw bytes: upstream's config hash, reported in metrics
    /// and used to tell whether every server has loaded the same file.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Every KMS block, in file order.
    pub fn kms_providers(&self) -> impl Iterator<Item = &KmsConfig> {
        self.rules
            .iter()
            .flat_map(|r| r.providers.iter())
            .filter_map(|p| match p {
                ProviderConfig::Kms(k) => Some(k),
                _ => None,
            })
    }

    /// The rule that covers `gr` (upstream lookup: exact, then `*.<group>`, then `*.*`), with
    /// the providers of every entry that names it exactly, in file order.
    pub fn providers_for(&self, gr: &GroupResource) -> Vec<&ProviderConfig> {
        let group_wildcard = GroupResource::new(gr.group.clone(), "*");
        let any = GroupResource::new("*", "*");
        for candidate in [gr, &group_wildcard, &any] {
            let found: Vec<&ProviderConfig> = self
                .rules
                .iter()
                .filter(|rule| rule.resources.contains(candidate))
                .flat_map(|rule| rule.providers.iter())
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }

    fn first_kms_v1_path(&self) -> Option<String> {
        for (i, rule) in self.rules.iter().enumerate() {
            for (j, p) in rule.providers.iter().enumerate() {
                if let ProviderConfig::Kms(KmsConfig {
                    api_version: KmsApiVersion::V1 { .. },
                    ..
                }) = p
                {
                    return Some(format!("resources[{i}].providers[{j}].kms"));
                }
            }
        }
        None
    }
}

/// `sha256:` + lower-case hex of SHA-256 of the bytes (upstream's config hash).
pub fn config_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("encryption provider configuration file {file:?} is empty")]
    Empty { file: String },
    #[error("encryption provider configuration file {file:?} could not be decoded: {message}")]
    Decode { file: String, message: String },
    #[error("encryption provider configuration file {file:?}: got unexpected config type {api_version:?}/{kind:?}; want apiVersion \"apiserver.config.k8s.io/v1\", kind \"EncryptionConfiguration\"")]
    WrongType {
        file: String,
        api_version: String,
        kind: String,
    },
    #[error(
        "encryption provider configuration file {file:?} is invalid:\n{}",
        render_errors(errors)
    )]
    Invalid {
        file: String,
        errors: Vec<FieldError>,
    },
    #[error("encryption provider configuration file {file:?}: {path}: KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.")]
    KmsV1Disabled { file: String, path: String },
}

impl ConfigError {
    /// The individual field errors (one entry for errors that are not about a single field).
    pub fn field_errors(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { errors, .. } => errors.iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn render_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One validation failure, shaped like upstream's `field.Error`:
/// `<path>: <Required value|Invalid value: <value>>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    /// The offending value as shown in the message (`"REDACTED"` for secrets).
    Invalid(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FieldErrorKind::Required => write!(f, "{}: Required value: {}", self.path, self.detail),
            FieldErrorKind::Invalid(value) => {
                write!(
                    f,
                    "{}: Invalid value: {}: {}",
                    self.path, value, self.detail
                )
            }
        }
    }
}

fn required(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        kind: FieldErrorKind::Required,
        detail: detail.into(),
    }
}

fn invalid(
    path: impl Into<String>,
    value: impl Into<String>,
    detail: impl Into<String>,
) -> FieldError {
    FieldError {
        path: path.into(),
        kind: FieldErrorKind::Invalid(value.into()),
        detail: detail.into(),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn decode(bytes: &[u8], source: &str) -> Result<RawEncryptionConfiguration, ConfigError> {
    let decode_error = |message: String| ConfigError::Decode {
        file: source.to_string(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| decode_error(format!("not UTF-8: {e}")))?;
    let looks_like_json = text.trim_start().starts_with('{');
    if looks_like_json {
        // serde_json reports duplicate fields through the derived Deserialize impls.
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: RawEncryptionConfiguration = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| decode_error(format!("{}: {}", display_path(e.path()), e.inner())))?;
        de.end().map_err(|e| decode_error(e.to_string()))?;
        return Ok(raw);
    }
    // YAML is turned into a JSON value first, as upstream's decoder does; duplicate keys are
    // refused at the YAML level. Error snippets are off: they would quote file lines, and a
    // line may hold a key.
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    let value: serde_json::Value = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| decode_error(e.to_string()))?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| decode_error(format!("{}: {}", display_path(e.path()), e.inner())))
}

/// serde_path_to_error paths are `resources[0].providers`; the root is shown as `<root>`.
fn display_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." || s.is_empty() {
        "<root>".to_string()
    } else {
        s
    }
}

fn check_type_meta(raw: &RawEncryptionConfiguration, source: &str) -> Result<(), ConfigError> {
    let api_version = raw.api_version.as_deref().unwrap_or("");
    let kind = raw.kind.as_deref().unwrap_or("");
    match (api_version, kind) {
        ("apiserver.config.k8s.io/v1", "EncryptionConfiguration") => Ok(()),
        // A legacy alias kept upstream because old documentation used it.
        ("v1", "EncryptionConfig") => Ok(()),
        _ => Err(ConfigError::WrongType {
            file: source.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }),
    }
}

fn validate(
    raw: &RawEncryptionConfiguration,
    options: ParseOptions,
    errors: &mut Vec<FieldError>,
) -> Vec<ResourceRule> {
    let entries = match &raw.resources {
        Some(entries) if !entries.is_empty() => entries,
        _ => {
            errors.push(required("resources", "at least one resources is required"));
            return Vec::new();
        }
    };
    let mut kms_names: HashSet<String> = HashSet::new();
    let mut rules = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let r_path = format!("resources[{i}].resources");
        let p_path = format!("resources[{i}].providers");
        let resources = entry.resources.clone().unwrap_or_default();
        if resources.is_empty() {
            errors.push(required(
                &r_path,
                format!("at least one {r_path} is required"),
            ));
        }
        validate_overlap(&resources, &r_path, errors);
        validate_resource_names(&resources, &r_path, errors);

        let raw_providers = entry.providers.as_deref().unwrap_or_default();
        if raw_providers.is_empty() {
            errors.push(required(
                &p_path,
                format!("at least one {p_path} is required"),
            ));
        }
        let mut providers = Vec::with_capacity(raw_providers.len());
        for (j, provider) in raw_providers.iter().enumerate() {
            let path = format!("{p_path}[{j}]");
            if let Some(p) = validate_provider(provider, &path, &mut kms_names, options, errors) {
                providers.push(p);
            }
        }
        rules.push(ResourceRule {
            resources: resources.iter().map(|r| GroupResource::parse(r)).collect(),
            providers,
        });
    }
    rules
}

fn go_string_slice(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

fn validate_overlap(resources: &[String], path: &str, errors: &mut Vec<FieldError>) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let (mut duplicate, mut overlap) = (false, false);
    for (i, a) in parsed.iter().enumerate() {
        for (j, b) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b {
                duplicate = true;
                continue;
            }
            if a.is_any_group_any_resource()
                || (a.group == b.group && (a.is_wildcard_resource() || b.is_wildcard_resource()))
            {
                overlap = true;
            }
        }
    }
    if duplicate {
        errors.push(invalid(
            path,
            go_string_slice(resources),
            "the same resource cannot be specified multiple times",
        ));
    }
    if overlap {
        errors.push(invalid(
            path,
            go_string_slice(resources),
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ));
    }
}

fn validate_resource_names(resources: &[String], path: &str, errors: &mut Vec<FieldError>) {
    for (j, res) in resources.iter().enumerate() {
        let item = format!("{path}[{j}]");
        let gr = GroupResource::parse(res);
        let detail = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else if gr.group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
        } else if gr.group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if gr.group == "*" && gr.resource != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        errors.push(invalid(item, quoted(res), detail));
    }
}

fn validate_provider(
    provider: &RawProviderConfiguration,
    path: &str,
    kms_names: &mut HashSet<String>,
    options: ParseOptions,
    errors: &mut Vec<FieldError>,
) -> Option<ProviderConfig> {
    let set = [
        provider.kms.is_some(),
        provider.aesgcm.is_some(),
        provider.aescbc.is_some(),
        provider.secretbox.is_some(),
        provider.identity.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set == 0 {
        errors.push(invalid(
            path,
            "{}",
            "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
        ));
        return None;
    }
    if set > 1 {
        errors.push(invalid(
            path,
            "{...}",
            "more than one provider specified in a single element, should split into different list elements",
        ));
        return None;
    }
    if let Some(kms) = &provider.kms {
        let validated = validate_kms(kms, &format!("{path}.kms"), kms_names, options, errors);
        kms_names.insert(kms.name.clone().unwrap_or_default());
        return validated.map(ProviderConfig::Kms);
    }
    if let Some(keys) = &provider.aesgcm {
        return validate_keys(keys, &format!("{path}.aesgcm.keys"), AES_KEY_SIZES, errors)
            .map(ProviderConfig::AesGcm);
    }
    if let Some(keys) = &provider.aescbc {
        return validate_keys(keys, &format!("{path}.aescbc.keys"), AES_KEY_SIZES, errors)
            .map(ProviderConfig::AesCbc);
    }
    if let Some(keys) = &provider.secretbox {
        return validate_keys(
            keys,
            &format!("{path}.secretbox.keys"),
            SECRETBOX_KEY_SIZES,
            errors,
        )
        .map(ProviderConfig::Secretbox);
    }
    Some(ProviderConfig::Identity)
}

fn validate_keys(
    keys: &RawKeys,
    path: &str,
    sizes: &[usize],
    errors: &mut Vec<FieldError>,
) -> Option<Vec<NamedKey>> {
    let keys = keys.keys.as_deref().unwrap_or_default();
    if keys.is_empty() {
        errors.push(required(path, "at least one keys is required"));
        return None;
    }
    let before = errors.len();
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        if let Some(k) = validate_key(key, &format!("{path}[{i}]"), sizes, errors) {
            out.push(k);
        }
    }
    (errors.len() == before).then_some(out)
}

fn validate_key(
    key: &RawKey,
    path: &str,
    sizes: &[usize],
    errors: &mut Vec<FieldError>,
) -> Option<NamedKey> {
    let name = KeyName::new(key.name.clone().unwrap_or_default());
    if name.is_none() {
        errors.push(required(
            format!("{path}.name"),
            "name is a mandatory field for a key",
        ));
    }
    let secret_path = format!("{path}.secret");
    let secret = match &key.secret {
        Some(s) if !s.0.is_empty() => s,
        _ => {
            errors.push(required(
                secret_path,
                "secret is a mandatory field for a key",
            ));
            return None;
        }
    };
    let Ok(bytes) = Key::from_base64(&secret.0) else {
        errors.push(invalid(
            secret_path,
            quoted("REDACTED"),
            "secrets must be base64 encoded",
        ));
        return None;
    };
    if !sizes.contains(&bytes.len()) {
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        errors.push(invalid(
            secret_path,
            quoted("REDACTED"),
            format!(
                "secret is not of the expected length, got {}, expected one of [{}]",
                bytes.len(),
                sizes.join(" ")
            ),
        ));
        return None;
    }
    Some(NamedKey {
        name: name?,
        key: bytes,
    })
}

fn validate_kms(
    kms: &RawKms,
    path: &str,
    seen_names: &HashSet<String>,
    options: ParseOptions,
    errors: &mut Vec<FieldError>,
) -> Option<KmsConfig> {
    let before = errors.len();
    // Defaulting (upstream defaults.go), in its order.
    let api_version = kms
        .api_version
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "v1".to_string());
    let cache_size = match kms.cachesize {
        None if api_version == "v1" => Some(DEFAULT_KMS_V1_CACHE_SIZE),
        other => other,
    };
    let name = kms.name.clone().unwrap_or_default();

    // name
    let name_path = format!("{path}.name");
    if name.is_empty() {
        errors.push(required(
            &name_path,
            "name is a mandatory field for a provider",
        ));
    }
    if api_version != "v1" && name.contains(':') {
        errors.push(invalid(
            &name_path,
            quoted(&name),
            format!("invalid KMS provider name {name}, must not contain ':'"),
        ));
    }
    if (options.reload || api_version != "v1") && seen_names.contains(&name) {
        errors.push(invalid(
            &name_path,
            quoted(&name),
            format!("duplicate KMS provider name {name}, names must be unique"),
        ));
    }

    // timeout
    let timeout_path = format!("{path}.timeout");
    let timeout = match kms.timeout.as_deref() {
        None => Some(DEFAULT_KMS_TIMEOUT),
        Some(text) => match parse_go_duration(text) {
            Ok(d) if d.is_positive() => Some(d.magnitude),
            Ok(_) => {
                errors.push(invalid(
                    &timeout_path,
                    quoted(text),
                    "timeout should be a positive value",
                ));
                None
            }
            Err(e) => {
                errors.push(invalid(&timeout_path, quoted(text), e));
                None
            }
        },
    };

    // endpoint
    let endpoint_path = format!("{path}.endpoint");
    let endpoint = match kms.endpoint.as_deref().filter(|e| !e.is_empty()) {
        None => {
            errors.push(invalid(
                &endpoint_path,
                quoted(""),
                "endpoint is a mandatory field for a kms",
            ));
            None
        }
        Some(url) => match parse_kms_endpoint(url) {
            Ok(e) => Some(e),
            Err(detail) => {
                errors.push(invalid(&endpoint_path, quoted(url), detail));
                None
            }
        },
    };

    // cachesize
    let cache_path = format!("{path}.cachesize");
    if api_version != "v1" {
        if let Some(size) = cache_size {
            errors.push(invalid(
                &cache_path,
                size.to_string(),
                "cachesize is not supported in v2",
            ));
        }
    } else if cache_size == Some(0) {
        errors.push(invalid(
            &cache_path,
            "0",
            "cachesize should be a positive value, or negative to disable",
        ));
    }

    // apiVersion
    let version = match api_version.as_str() {
        "v1" => Some(KmsApiVersion::V1 {
            cache_size: cache_size.unwrap_or(DEFAULT_KMS_V1_CACHE_SIZE),
        }),
        "v2" => Some(KmsApiVersion::V2),
        _ => {
            errors.push(invalid(
                format!("{path}.apiVersion"),
                quoted(&api_version),
                "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
            ));
            None
        }
    };

    if errors.len() != before {
        return None;
    }
    Some(KmsConfig {
        name,
        api_version: version?,
        endpoint: endpoint?,
        timeout: timeout?,
    })
}

/// The parts of Go's `url.Parse` that matter for a KMS endpoint: a scheme, then (for `unix`)
/// the path, with `/@name` meaning the abstract socket `@name`.
fn parse_kms_endpoint(url: &str) -> Result<KmsEndpoint, String> {
    if url.chars().any(|c| c.is_ascii_control()) {
        return Err(format!("invalid endpoint for kms provider, error: parse {url:?}: net/url: invalid control character in URL"));
    }
    let scheme = match url.split_once(':') {
        Some(("", _)) => {
            return Err(format!(
                "invalid endpoint for kms provider, error: parse {url:?}: missing protocol scheme"
            ))
        }
        Some((s, _))
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            s.to_ascii_lowercase()
        }
        _ => String::new(),
    };
    if scheme != "unix" {
        return Err(format!(
            "unsupported scheme {scheme:?} for KMS provider, only unix is supported"
        ));
    }
    let after_scheme = &url[scheme.len() + 1..];
    // `unix://host/path`: the host (normally empty) is dropped, as upstream does.
    let path = match after_scheme.strip_prefix("//") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
        None => after_scheme,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let socket = match path.strip_prefix("/@") {
        Some(abstract_name) => format!("@{abstract_name}"),
        None => path.to_string(),
    };
    if socket.is_empty() || socket == "@" {
        return Err(format!(
            "invalid endpoint for kms provider, error: {url:?} names no socket path"
        ));
    }
    Ok(KmsEndpoint {
        url: url.to_string(),
        socket,
    })
}

/// Upstream's load-time masking rule (a.6): an explicit resource or `*.group` may come before
/// a covering wildcard, never after it, and a wildcard may not repeat.
fn check_masking(rules: &[ResourceRule], errors: &mut Vec<FieldError>) {
    let mut seen: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::new("*", "*");
    for (i, rule) in rules.iter().enumerate() {
        for (j, gr) in rule.resources.iter().enumerate() {
            let group_wildcard = GroupResource::new(gr.group.clone(), "*");
            let masking = if seen.contains(&group_wildcard) {
                Some(group_wildcard)
            } else if seen.contains(&any) {
                Some(any.clone())
            } else {
                None
            };
            if let Some(rule) = masking {
                errors.push(invalid(
                    format!("resources[{i}].resources[{j}]"),
                    quoted(&gr.to_string()),
                    format!(
                        "resource {:?} is masked by earlier rule {:?}",
                        gr.to_string(),
                        rule.to_string()
                    ),
                ));
            }
            seen.insert(gr.clone());
        }
    }
}
