//! Known-answer vectors from an independent implementation, and real upstream values.

#![allow(clippy::unwrap_used)]

mod common;

use atrest_encryption::{
    EncryptionConfig, GroupResource, ParseOptions, ProviderChain, ProviderKind,
};
use common::{block_on, data, Base64Kms, Base64KmsConnector};
use serde_json::Value;

fn vectors() -> (ProviderChain, Value) {
    let config =
        EncryptionConfig::parse(&data("config.yaml"), "config.yaml", ParseOptions::default())
            .expect("the vectors' config is valid");
    let chain = ProviderChain::build(&config, &Base64Kms::connector()).expect("builds");
    let cases: Value = serde_json::from_slice(&data("cases.json")).expect("cases.json is JSON");
    (chain, cases)
}

#[test]
fn every_vector_decrypts_to_its_plaintext() {
    let (chain, cases) = vectors();
    let cases = cases["cases"].as_array().expect("cases array");
    assert!(
        cases.len() >= 90,
        "expected the full vector set, got {}",
        cases.len()
    );
    for case in cases {
        let resource = GroupResource::parse(case["resource"].as_str().unwrap());
        let key = case["key"].as_str().unwrap();
        let stored = hex::decode(case["stored_hex"].as_str().unwrap()).unwrap();
        let want = hex::decode(case["plaintext_hex"].as_str().unwrap()).unwrap();
        let note = case["note"].as_str().unwrap_or("");
        let got = block_on(
            chain
                .for_resource(&resource)
                .decrypt(&stored, key.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{key} ({note}): {e}"));
        assert_eq!(got.plaintext, want, "{key} ({note}): plaintext");
        assert_eq!(
            got.provider.kind.as_str(),
            case["provider"].as_str().unwrap(),
            "{key} ({note}): provider"
        );
        let key_name = case["key_name"].as_str().unwrap();
        assert_eq!(
            got.provider.name.as_deref().unwrap_or(""),
            key_name,
            "{key} ({note}): key name"
        );
        assert_eq!(
            got.stale,
            case["stale"].as_bool().unwrap(),
            "{key} ({note}): stale"
        );
    }
}

#[test]
fn every_must_fail_vector_errors() {
    let (chain, cases) = vectors();
    let cases = cases["must_fail"].as_array().expect("must_fail array");
    assert!(!cases.is_empty());
    for case in cases {
        let resource = GroupResource::parse(case["resource"].as_str().unwrap());
        let key = case["key"].as_str().unwrap();
        let stored = hex::decode(case["stored_hex"].as_str().unwrap()).unwrap();
        let note = case["note"].as_str().unwrap_or("");
        let result = block_on(
            chain
                .for_resource(&resource)
                .decrypt(&stored, key.as_bytes()),
        );
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{key} ({note}) must fail"));
        let message = err.to_string();
        // Every error names the storage key and the resource.
        assert!(message.contains(key), "{note}: {message}");
        assert!(message.contains(&resource.to_string()), "{note}: {message}");
    }
}

#[test]
fn must_fail_reasons_match_upstream_messages() {
    let (chain, cases) = vectors();
    let expect = [
        (
            "GCM value moved to another storage key (AAD mismatch)",
            "message authentication failed",
        ),
        (
            "GCM truncated below nonce size",
            "the stored data was shorter than the required size",
        ),
        (
            "secretbox ciphertext tampered",
            "output array was not large enough for encryption",
        ),
        (
            "unknown key name",
            "no matching key was found for the provided AES transformer",
        ),
        (
            "CBC: IV only, no blocks",
            "invalid PKCS7 data (empty or not padded)",
        ),
        (
            "CBC: not a multiple of the block size",
            "the stored data is not a multiple of the block size",
        ),
        (
            "provider not configured for this resource",
            "no matching prefix found",
        ),
        (
            "plaintext where no identity provider is listed",
            "no matching prefix found",
        ),
    ];
    for case in cases["must_fail"].as_array().unwrap() {
        let note = case["note"].as_str().unwrap();
        let Some((_, reason)) = expect.iter().find(|(n, _)| *n == note) else {
            continue;
        };
        let resource = GroupResource::parse(case["resource"].as_str().unwrap());
        let stored = hex::decode(case["stored_hex"].as_str().unwrap()).unwrap();
        let err = block_on(
            chain
                .for_resource(&resource)
                .decrypt(&stored, case["key"].as_str().unwrap().as_bytes()),
        )
        .unwrap_err();
        assert!(err.to_string().contains(reason), "{note}: got {err}");
    }
}

const KMS_FIXTURE_CONFIG: &str = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: kms-provider
          endpoint: unix:///@kms-provider.sock
"#;
const KMS_FIXTURE_KEY: &str =
    "/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/dek-source-hkdf-sha256-xnonce-aes-gcm-seed";

#[test]
fn upstream_kms_v2_hkdf_value_decrypts() {
    let config = common::parse(KMS_FIXTURE_CONFIG);
    let kms = Base64Kms::new("1");
    let chain = ProviderChain::build(&config, &Base64KmsConnector(kms.clone())).unwrap();
    let stored = data("kmsv2_HKDF_SEED.etcdvalue.bin");
    let want = data("kmsv2_HKDF_SEED.plaintext.bin");
    let t = chain.for_resource(&GroupResource::new("", "secrets"));
    let got = block_on(t.decrypt(&stored, KMS_FIXTURE_KEY.as_bytes())).expect("decrypts");
    assert_eq!(got.plaintext, want);
    assert_eq!(got.provider.kind, ProviderKind::KmsV2);
    assert_eq!(got.provider.name.as_deref(), Some("kms-provider"));
    assert_eq!(got.provider.kms_key_id.as_deref(), Some("1"));
    assert!(!got.stale, "same key id and the HKDF type: not stale");
    assert!(
        want.starts_with(b"k8s\0"),
        "the plaintext is a storage protobuf"
    );

    // The AAD binds it to its key.
    let moved = block_on(t.decrypt(&stored, b"/registry/secrets/kms-v2-legacy-data/other"));
    assert!(moved.is_err());
}

#[test]
fn upstream_kms_v2_value_is_stale_after_kek_rotation() {
    let config = common::parse(KMS_FIXTURE_CONFIG);
    let kms = Base64Kms::new("2");
    let chain = ProviderChain::build(&config, &Base64KmsConnector(kms)).unwrap();
    let t = chain.for_resource(&GroupResource::new("", "secrets"));
    let got = block_on(t.decrypt(
        &data("kmsv2_HKDF_SEED.etcdvalue.bin"),
        KMS_FIXTURE_KEY.as_bytes(),
    ))
    .unwrap();
    assert!(got.stale, "written under key id 1, plugin now reports 2");
}
