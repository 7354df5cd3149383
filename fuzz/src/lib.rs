//! The fuzz targets: everything atrest parses from bytes an attacker (or a corrupted disk)
//! controls. Each target must return normally for every input: a panic, an overflow or an
//! abort is a finding. Where a printer exists the target also checks the round trip.
//!
//! `src/bin/<target>.rs` wraps each in `afl::fuzz!`; `TARGETS` lists them for `run.sh`
//! and the corpus replay test.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use atrest_encryption::upstream_mock::Base64Kms;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use serde_json::Value;

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("envelope", envelope),
    ("kms_object", kms_object),
    ("config", config),
    ("storage_object", storage_object),
    ("json_object", json_object),
    ("label_selector", label_selector),
    ("field_selector", field_selector),
    ("json_patch", json_patch),
    ("merge_patch", merge_patch),
    ("strategic_patch", strategic_patch),
    ("apply_patch", apply_patch),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds (no I/O driver needed)")
    })
}

/// The known-answer vectors' configuration (every static provider, several key sizes).
const VECTORS_CONFIG: &str = include_str!("../../crates/encryption/tests/data/config.yaml");
/// The storage key the vectors authenticate.
const VECTORS_KEY: &[u8] = b"/registry/secrets/ns-935/s0";

fn vectors_chain() -> &'static ProviderChain {
    static CHAIN: OnceLock<ProviderChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let config = EncryptionConfig::parse(
            VECTORS_CONFIG.as_bytes(),
            "vectors.yaml",
            ParseOptions::default(),
        )
        .expect("the vectors' configuration is valid");
        ProviderChain::build(&config, &Base64Kms::connector()).expect("static providers build")
    })
}

/// A stored value read through every static provider (aescbc, aesgcm, secretbox, identity):
/// decryption either fails with an error or gives a plaintext that encrypts and decrypts
/// back to itself.
pub fn envelope(data: &[u8]) {
    let (selector, stored) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => return,
    };
    let resource = match selector % 3 {
        0 => "secrets",
        1 => "configmaps",
        _ => "deployments.apps",
    };
    let transformer = vectors_chain().for_resource(&GroupResource::parse(resource));
    runtime().block_on(async {
        if let Ok(read) = transformer.decrypt(stored, VECTORS_KEY).await {
            let written = transformer
                .encrypt(&read.plaintext, VECTORS_KEY)
                .await
                .expect("what decrypts, encrypts");
            let again = transformer
                .decrypt(&written.stored, VECTORS_KEY)
                .await
                .expect("what was just written decrypts");
            assert_eq!(again.plaintext, read.plaintext);
        }
    });
}

/// The configuration and storage key upstream's KMS v2 fixture was written with.
const KMS_CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms: {apiVersion: v2, name: kms-provider, endpoint: unix:///@kms-provider.sock}\n";
const KMS_KEY: &[u8] = b"/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/dek-source-hkdf-sha256-xnonce-aes-gcm-seed";
const KMS_PREFIX: &[u8] = b"k8s:enc:kms:v2:kms-provider:";

fn kms_chain() -> &'static ProviderChain {
    static CHAIN: OnceLock<ProviderChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let config =
            EncryptionConfig::parse(KMS_CONFIG.as_bytes(), "kms.yaml", ParseOptions::default())
                .expect("the KMS configuration is valid");
        ProviderChain::build(&config, &Base64Kms::connector()).expect("the KMS chain builds")
    })
}

/// A KMS v2 `EncryptedObject` (the bytes after `k8s:enc:kms:v2:<name>:`): decoded, validated,
/// its DEK unwrapped through the plugin and the value opened, or an error.
pub fn kms_object(data: &[u8]) {
    let mut stored = KMS_PREFIX.to_vec();
    stored.extend_from_slice(data.strip_prefix(KMS_PREFIX).unwrap_or(data));
    let transformer = kms_chain().for_resource(&GroupResource::parse("secrets"));
    runtime().block_on(async {
        let _ = transformer.decrypt(&stored, KMS_KEY).await;
    });
}

/// An `EncryptionConfiguration` in YAML or JSON: valid (and then its chain builds) or an
/// error naming the field.
pub fn config(data: &[u8]) {
    let options = ParseOptions {
        allow_kms_v1: data.first().is_some_and(|b| b & 1 == 1),
        ..ParseOptions::default()
    };
    if let Ok(config) = EncryptionConfig::parse(data, "fuzz.yaml", options) {
        let _ = ProviderChain::build(&config, &Base64Kms::connector());
    }
}

/// A stored object (`k8s\0` protobuf, or JSON): decoded or an error; what decodes
/// re-encodes.
pub fn storage_object(data: &[u8]) {
    if let Ok(object) = atrest_api::codec::decode_storage(data) {
        let _ = atrest_api::codec::encode_protobuf(&object);
        let _ = atrest_api::codec::encode_json_typed(&object);
    }
}

/// A JSON request body: parsed, normalised as a built-in kind, and encoded for storage.
pub fn json_object(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Ok(object) = atrest_api::codec::normalize_builtin(&value) {
            if let Ok(bytes) = atrest_api::codec::encode_protobuf(&object) {
                let _ = atrest_api::codec::decode_storage(&bytes);
            }
        }
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A `labelSelector` query parameter.
pub fn label_selector(data: &[u8]) {
    if let Some(selector) = text(data) {
        if let Ok(parsed) = atrest_api::selector::parse_label_selector(selector) {
            let _ = parsed.matches_object(&serde_json::json!({
                "metadata": {"labels": {"app": "x", "tier": "1"}}
            }));
        }
    }
}

/// A `fieldSelector` query parameter, for a namespaced kind.
pub fn field_selector(data: &[u8]) {
    if let Some(selector) = text(data) {
        if let Ok(parsed) = atrest_api::selector::parse_field_selector(
            selector,
            atrest_api::kind::Kind::SECRET,
        ) {
            let _ = parsed.matches(&serde_json::json!({
                "metadata": {"name": "a", "namespace": "b"}, "type": "Opaque"
            }));
        }
    }
}

/// A patch body and the object it applies to, split at the first NUL byte (without one,
/// the object is a small Secret).
fn patch_input(data: &[u8]) -> Option<(Value, Value)> {
    let (object, patch) = match data.iter().position(|b| *b == 0) {
        Some(at) => (
            serde_json::from_slice(&data[..at]).ok()?,
            serde_json::from_slice(&data[at + 1..]).ok()?,
        ),
        None => (
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "labels": {"a": "b"}},
                "data": {"k": "dg=="}
            }),
            serde_json::from_slice(data).ok()?,
        ),
    };
    Some((object, patch))
}

/// An RFC 6902 JSON patch.
pub fn json_patch(data: &[u8]) {
    if let Some((object, patch)) = patch_input(data) {
        let _ = atrest_api::patch::apply_json_patch(&object, &patch);
    }
}

/// An RFC 7386 merge patch; merging the same patch twice changes nothing more.
pub fn merge_patch(data: &[u8]) {
    if let Some((object, patch)) = patch_input(data) {
        let once = atrest_api::patch::apply_merge_patch(&object, &patch);
        let twice = atrest_api::patch::apply_merge_patch(&once, &patch);
        assert_eq!(once, twice, "a merge patch is idempotent");
    }
}

/// A strategic merge patch (directives, `$patch`, `$retainKeys`, list merge keys).
pub fn strategic_patch(data: &[u8]) {
    if let Some((object, patch)) = patch_input(data) {
        let _ = atrest_api::patch::apply_strategic_merge_patch(&object, &patch);
    }
}

/// A server-side apply configuration (YAML or JSON) applied to a stored Secret that has
/// managed fields, and the same bytes read as `FieldsV1`: parsing, applying and the
/// `FieldsV1` round trip never panic; an apply without conflicts applied again changes
/// nothing more.
pub fn apply_patch(data: &[u8]) {
    use atrest_api::kind::Kind;
    use atrest_api::managed::{self, FieldSet, Managers, Schema};
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(set) = FieldSet::from_fields_v1(&v) {
            let again = FieldSet::from_fields_v1(&set.to_fields_v1());
            assert_eq!(again.as_ref(), Ok(&set), "FieldsV1 round trip");
        }
    }
    let Ok(config) = managed::parse_apply_config(data) else {
        return;
    };
    let live = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "d", "labels": {"a": "b"},
            "finalizers": ["x"], "ownerReferences": [{"uid": "1", "name": "o"}],
            "managedFields": [{"manager": "kubectl-create", "operation": "Update",
                "apiVersion": "v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}}]},
        "data": {"k": "dg=="}, "type": "Opaque"});
    let Ok(managers) = Managers::decode(&live) else {
        return;
    };
    let none = FieldSet::new();
    for schema in [Schema::for_kind(Kind::SECRET), Schema::for_custom(None)] {
        let ctx = managed::Context {
            schema: &schema,
            ignored: &none,
            manager: "fuzz",
            api_version: "v1",
            subresource: "",
            now: "2026-01-01T00:00:00Z",
        };
        let _ = managed::apply(&ctx, &managers, &live, &config, false);
        if let Ok((merged, after)) = managed::apply(&ctx, &managers, &live, &config, true) {
            let _ = managed::update(&ctx, &after, &live, &merged);
            if let Ok((again, _)) = managed::apply(&ctx, &after, &merged, &config, true) {
                assert_eq!(again, merged, "applying the same configuration twice");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness is wired: upstream's KMS v2 value and a known-answer vector decrypt
    /// through the chains the targets use (a target that rejects everything finds nothing).
    #[test]
    fn the_seeds_decrypt_through_the_targets_chains() {
        let fixture = include_bytes!("../../crates/encryption/tests/data/kmsv2_HKDF_SEED.etcdvalue.bin");
        let plaintext = include_bytes!("../../crates/encryption/tests/data/kmsv2_HKDF_SEED.plaintext.bin");
        let kms = kms_chain().for_resource(&GroupResource::parse("secrets"));
        let read = runtime().block_on(kms.decrypt(fixture, KMS_KEY)).unwrap();
        assert_eq!(read.plaintext, plaintext);
        let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/envelope/case0")).unwrap();
        let secrets = vectors_chain().for_resource(&GroupResource::parse("secrets"));
        let read = runtime().block_on(secrets.decrypt(&seed[1..], VECTORS_KEY)).unwrap();
        assert!(!read.stale);
    }

    /// Every committed corpus file runs through its target (a regression run of what the
    /// fuzzer found interesting, without AFL).
    #[test]
    fn the_corpora_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut runs = 0;
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                runs += 1;
            }
        }
        assert!(runs >= super::TARGETS.len(), "every target has a corpus");
    }
}
