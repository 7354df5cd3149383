//! Real bytes written by Kubernetes decode to the upstream JSON and re-encode
//! byte-identically.
#![allow(clippy::unwrap_used)]

use atrest_api::codec::{
    decode_protobuf, decode_protobuf_envelope, decode_storage, encode_json_storage,
    encode_json_typed, encode_protobuf, normalize_builtin, CodecError,
};
use atrest_encryption::GroupResource;
use atrest_storage::{KeyPrefix, StorageKey};
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn check_upstream_fixture(kind: &str) {
    let pb = fixture(&format!("core.v1.{kind}.pb"));
    let expected: Value =
        serde_json::from_slice(&fixture(&format!("core.v1.{kind}.json"))).unwrap();
    let decoded = decode_protobuf(&pb).unwrap();
    assert_eq!(
        decoded, expected,
        "{kind}: protobuf decodes to the upstream JSON"
    );
    assert_eq!(
        encode_protobuf(&decoded).unwrap(),
        pb,
        "{kind}: re-encodes byte-identically"
    );
    assert_eq!(
        encode_protobuf(&expected).unwrap(),
        pb,
        "{kind}: the upstream JSON encodes to the upstream protobuf"
    );
    assert_eq!(decode_storage(&pb).unwrap(), expected);
    assert_eq!(normalize_builtin(&expected).unwrap(), expected);

    // Typed JSON: the upstream file's field order, compact, plus a newline.
    let json_file = fixture(&format!("core.v1.{kind}.json"));
    let mut compact = strip_json_whitespace(&json_file);
    compact.push(b'\n');
    let typed = encode_json_typed(&decoded).unwrap();
    assert_eq!(
        String::from_utf8(typed.clone()).unwrap(),
        String::from_utf8(compact).unwrap(),
        "{kind}: typed JSON in Go struct order"
    );
    assert_eq!(decode_storage(&typed).unwrap(), expected);
}

/// Removes insignificant whitespace from JSON text, keeping key order.
fn strip_json_whitespace(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !byte.is_ascii_whitespace() {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    out
}

#[test]
fn upstream_secret_fixture() {
    check_upstream_fixture("Secret");
}

#[test]
fn upstream_configmap_fixture() {
    check_upstream_fixture("ConfigMap");
}

#[test]
fn upstream_namespace_fixture() {
    check_upstream_fixture("Namespace");
}

#[test]
fn secret_stored_by_kube_apiserver_round_trips() {
    let pb = fixture("kms-plaintext-secret.pb");
    let decoded = decode_protobuf(&pb).unwrap();
    assert_eq!(decoded["metadata"]["namespace"], "kms-v2-legacy-data");
    assert_eq!(decoded["type"], "Opaque");
    assert_eq!(
        decoded["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:api_key": {}}, "f:type": {}})
    );
    assert!(decoded["metadata"]["managedFields"][0]
        .get("subresource")
        .is_none());
    assert_eq!(encode_protobuf(&decoded).unwrap(), pb);
    // The storage key (the AAD upstream's test used) from the object itself.
    let prefix = KeyPrefix::new("43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry");
    let key = StorageKey::object(
        &prefix,
        &GroupResource::new("", "secrets"),
        decoded["metadata"]["namespace"].as_str(),
        decoded["metadata"]["name"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        key.as_str(),
        "/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/dek-source-hkdf-sha256-xnonce-aes-gcm-seed"
    );
    // Typed JSON keeps structured-merge-diff's fieldsV1 order.
    let typed = String::from_utf8(encode_json_typed(&decoded).unwrap()).unwrap();
    assert!(
        typed.contains(r#""fieldsV1":{"f:data":{".":{},"f:api_key":{}},"f:type":{}}"#),
        "{typed}"
    );
}

#[test]
fn kubectl_create_secret_bodies() {
    for (file, name, key, value) in [
        ("kubectl-create-secret-s1.pb", "s1", "a", "Yg=="),
        ("kubectl-create-secret-s2.pb", "s2", "x", "eQ=="),
    ] {
        let body = fixture(file);
        let decoded = decode_protobuf(&body).unwrap();
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "creationTimestamp": null},
                "data": {key: value},
            }),
            "{file}"
        );
        assert_eq!(encode_protobuf(&decoded).unwrap(), body, "{file}");
    }
}

#[test]
fn kubectl_json_bodies_encode() {
    // `kubectl replace` sends JSON with stringData; the codec encodes what it
    // is given (merging stringData into data is the registry's job).
    let body = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","namespace":"default","resourceVersion":"2"},"stringData":{"a":"changed"},"type":"Opaque"}"#;
    let object: Value = serde_json::from_slice(body).unwrap();
    let pb = encode_protobuf(&object).unwrap();
    let mut expected = object.clone();
    expected["metadata"]["creationTimestamp"] = Value::Null;
    assert_eq!(decode_protobuf(&pb).unwrap(), expected);
    assert_eq!(normalize_builtin(&object).unwrap(), expected);
    assert_eq!(
        String::from_utf8(encode_json_typed(&object).unwrap()).unwrap(),
        "{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"s1\",\"namespace\":\"default\",\"resourceVersion\":\"2\",\"creationTimestamp\":null},\"stringData\":{\"a\":\"changed\"},\"type\":\"Opaque\"}\n"
    );
}

#[test]
fn unknown_fields_are_skipped() {
    // ObjectMeta with the retired clusterName (field 15, `7a 00`) and fields
    // of every other wire type appended.
    let mut meta = vec![0x0a, 0x02, b's', b'1'];
    meta.extend_from_slice(&[0x7a, 0x00]); // 15: empty string
    meta.extend_from_slice(&[0x80, 0x01, 0x96, 0x01]); // 16: varint 150
    meta.extend_from_slice(&[0x99, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]); // 19: fixed64
    meta.extend_from_slice(&[0xa5, 0x01, 1, 2, 3, 4]); // 20: fixed32
    meta.extend_from_slice(&[0xab, 0x01, 0x08, 0x01, 0xac, 0x01]); // 21: group
    let mut raw = vec![0x0a, u8::try_from(meta.len()).unwrap()];
    raw.extend_from_slice(&meta);
    raw.extend_from_slice(&[0x1a, 0x06]);
    raw.extend_from_slice(b"Opaque");
    let mut value = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Secret\x12".to_vec();
    value.push(u8::try_from(raw.len()).unwrap());
    value.extend_from_slice(&raw);
    value.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
    let decoded = decode_protobuf(&value).unwrap();
    assert_eq!(
        decoded,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "s1", "creationTimestamp": null}})
    );
}

#[test]
fn errors_name_the_problem() {
    let pb = fixture("core.v1.Secret.pb");
    // Cut anywhere: never a panic; cut inside the TypeMeta or raw fields
    // (after the 4-byte prefix and before the 4-byte trailer): an error.
    // (A cut right after TypeMeta leaves a valid envelope with empty raw.)
    for cut in 0..pb.len() {
        let result = decode_protobuf(&pb[..cut]);
        if (5..18).contains(&cut) || (19..pb.len() - 4).contains(&cut) {
            assert!(result.is_err(), "cut at {cut}");
        }
    }
    let error = decode_protobuf(&pb[..100]).unwrap_err();
    assert!(matches!(error, CodecError::Truncated { .. }), "{error}");
    assert!(error.to_string().contains("offset"), "{error}");

    let envelope = decode_protobuf_envelope(b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Secret").unwrap();
    assert_eq!(
        (envelope.api_version.as_str(), envelope.kind.as_str()),
        ("v1", "Secret")
    );

    let pod = b"k8s\0\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00\x1a\x00\x22\x00";
    assert!(matches!(
        decode_protobuf(pod),
        Err(CodecError::UnsupportedKind { .. })
    ));
    assert!(matches!(
        decode_storage(b"k8s:enc:aescbc:v1:key1:..."),
        Err(CodecError::Encrypted)
    ));
    assert!(matches!(decode_storage(b""), Err(CodecError::Empty)));
    assert!(matches!(
        decode_storage(b"\xd9\xd9\xf7\xa0"),
        Err(CodecError::CborNotSupported)
    ));

    // Wrong JSON type: the path is named, the value is not.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}});
    let message = encode_protobuf(&secret).unwrap_err().to_string();
    assert!(message.contains("data[\"k\"]"), "{message}");
    assert!(!message.contains("not base64!"), "{message}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"labels": {"a": 1}}});
    let message = encode_protobuf(&secret).unwrap_err().to_string();
    assert_eq!(
        message,
        "metadata.labels[\"a\"]: expected string, found number"
    );
}

#[test]
fn custom_resource_json_storage() {
    let object = json!({
        "apiVersion": "awesome.bears.example/v1",
        "kind": "Panda",
        "metadata": {"name": "p0", "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"html": "<b>&</b>", "n": 3, "f": 0.5}
    });
    let stored = encode_json_storage(&object);
    assert_eq!(
        String::from_utf8(stored.clone()).unwrap(),
        "{\"apiVersion\":\"awesome.bears.example/v1\",\"kind\":\"Panda\",\"metadata\":{\"creationTimestamp\":\"2024-01-01T00:00:00Z\",\"name\":\"p0\",\"namespace\":\"ns\"},\"spec\":{\"f\":0.5,\"html\":\"\\u003cb\\u003e\\u0026\\u003c/b\\u003e\",\"n\":3}}\n"
    );
    assert_eq!(decode_storage(&stored).unwrap(), object);
    assert_eq!(decode_storage(b"  \n{}").unwrap(), json!({}));
}
