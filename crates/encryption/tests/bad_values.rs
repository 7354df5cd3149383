//! The bad-value catalogue, per provider: a stored value that was truncated, tampered
//! with, moved to another storage key or written under another key is an error naming the
//! storage key and the provider, never output. (aescbc authenticates nothing: upstream's
//! format cannot detect a flipped bit or a moved value, which is why upstream does not
//! recommend it; its cases here are the ones the format can detect. secretbox, as upstream,
//! authenticates the value but not the storage key.)
#![allow(clippy::unwrap_used)]

mod common;

use atrest_encryption::{GroupResource, ProviderChain};
use common::{block_on, Base64Kms, Base64KmsConnector};

const KEY_A: &str = "er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=";
const KEY_B: &str = "N/hsuQeHOMNw8H6NO1g7rTjCdfNK7QVq1uqO7KQZL6E=";
const HERE: &[u8] = b"/registry/secrets/ns/here";
const THERE: &[u8] = b"/registry/secrets/ns/there";

fn config(provider: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - {provider}\n"
    )
}

fn keyed(kind: &str, secret: &str) -> String {
    config(&format!(
        "{kind}: {{keys: [{{name: k1, secret: '{secret}'}}]}}"
    ))
}

fn chain(yaml: &str) -> ProviderChain {
    ProviderChain::build(
        &common::parse(yaml),
        &Base64KmsConnector(Base64Kms::new("1")),
    )
    .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Truncated,
    TruncatedToPrefix,
    TagTampered,
    BodyTampered,
    Moved,
    WrongKey,
}

fn assert_refused(provider: &str, case: Case, writer: &ProviderChain, reader: &ProviderChain) {
    let secrets = GroupResource::new("", "secrets");
    let plaintext = b"k8s\0a secret value that is long enough to span several blocks";
    let written = block_on(writer.for_resource(&secrets).encrypt(plaintext, HERE)).unwrap();
    let mut stored = written.stored.clone();
    // `k8s:enc:<provider>:v1|v2:<name>:`: five colons; the ciphertext after it may hold more.
    let prefix_len = stored
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b':')
        .nth(4)
        .unwrap()
        .0
        + 1;
    let mut key = HERE;
    match case {
        Case::Truncated => stored.truncate(stored.len() - 5),
        Case::TruncatedToPrefix => stored.truncate(prefix_len),
        Case::TagTampered => *stored.last_mut().unwrap() ^= 0x01,
        Case::BodyTampered => stored[prefix_len + 30] ^= 0x80,
        Case::Moved => key = THERE,
        Case::WrongKey => {}
    }
    let result = block_on(reader.for_resource(&secrets).decrypt(&stored, key));
    let err = match result {
        Ok(read) => panic!(
            "{provider} {case:?}: decrypted to {} bytes instead of an error",
            read.plaintext.len()
        ),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains(std::str::from_utf8(key).unwrap()),
        "{provider} {case:?}: the error names the storage key: {err}"
    );
    assert!(
        err.contains(provider.split(':').next().unwrap()),
        "{provider} {case:?}: the error names the provider: {err}"
    );
    assert!(
        !err.contains("a secret value"),
        "{provider} {case:?}: {err}"
    );
}

#[test]
fn authenticated_providers_refuse_every_damaged_value() {
    let all = [
        Case::Truncated,
        Case::TruncatedToPrefix,
        Case::TagTampered,
        Case::BodyTampered,
        Case::Moved,
        Case::WrongKey,
    ];
    for kind in ["aesgcm", "secretbox"] {
        let writer = chain(&keyed(kind, KEY_A));
        let other_key = chain(&keyed(kind, KEY_B));
        for case in all {
            if kind == "secretbox" && case == Case::Moved {
                // Upstream's secretbox seals without additional data: a value moved to
                // another key of the same resource opens there too (byte compatibility
                // means atrest does the same; aesgcm and kms v2 bind the storage key).
                continue;
            }
            let reader = if case == Case::WrongKey {
                &other_key
            } else {
                &writer
            };
            assert_refused(kind, case, &writer, reader);
        }
    }
    // KMS v2: the EncryptedObject protobuf carries the wrapped seed; damage anywhere in it,
    // a move, or a value from another plugin's seed is refused.
    let kms = config("kms: {apiVersion: v2, name: plugin, endpoint: 'unix:///@atrest-bad.sock'}");
    let writer = chain(&kms);
    // (A value under another seed of the same plugin opens: the seed travels wrapped in the
    // value, as upstream's design has it. So there is no wrong-key case for kms.)
    for case in all.into_iter().filter(|c| *c != Case::WrongKey) {
        assert_refused("kms", case, &writer, &writer);
    }
}

#[test]
fn aescbc_refuses_what_its_format_can_detect() {
    let writer = chain(&keyed("aescbc", KEY_A));
    let other_key = chain(&keyed("aescbc", KEY_B));
    assert_refused("aescbc", Case::Truncated, &writer, &writer);
    assert_refused("aescbc", Case::TruncatedToPrefix, &writer, &writer);
    // Another key: the padding check fails (deterministic for these fixed keys and value).
    assert_refused("aescbc", Case::WrongKey, &writer, &other_key);
}
