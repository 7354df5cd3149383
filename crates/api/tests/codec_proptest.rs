//! Property tests: hostile bytes never panic; random objects round-trip.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use atrest_api::codec::{
    decode_json_storage, decode_protobuf, decode_storage, encode_json_storage, encode_json_typed,
    encode_protobuf, normalize_builtin,
};
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An envelope around `raw` for one of the supported kinds.
fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = vec![
        0x0a,
        0x02,
        b'v',
        b'1',
        0x12,
        u8::try_from(kind.len()).unwrap(),
    ];
    type_meta.extend_from_slice(kind.as_bytes());
    let mut out = b"k8s\0".to_vec();
    out.push(0x0a);
    out.push(u8::try_from(type_meta.len()).unwrap());
    out.extend_from_slice(&type_meta);
    out.push(0x12);
    let mut len = raw.len();
    while len >= 0x80 {
        out.push(u8::try_from(len & 0x7f).unwrap() | 0x80);
        len >>= 7;
    }
    out.push(u8::try_from(len).unwrap());
    out.extend_from_slice(raw);
    out.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
    out
}

fn kind() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("Secret"), Just("ConfigMap"), Just("Namespace")]
}

/// Whatever decodes must re-encode, and re-decode to the same object.
fn check_stable(bytes: &[u8]) {
    if let Ok(object) = decode_protobuf(bytes) {
        let encoded = encode_protobuf(&object).unwrap();
        assert_eq!(decode_protobuf(&encoded).unwrap(), object);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_storage(&bytes);
        let _ = decode_json_storage(&bytes);
        check_stable(&bytes);
        let mut prefixed = b"k8s\0".to_vec();
        prefixed.extend_from_slice(&bytes);
        check_stable(&prefixed);
    }

    #[test]
    fn random_raw_messages_never_panic(
        kind in kind(),
        raw in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_stable(&envelope(kind, &raw));
    }

    #[test]
    fn mutated_fixtures_never_panic(
        file in prop_oneof![
            Just("core.v1.Secret.pb"),
            Just("core.v1.ConfigMap.pb"),
            Just("core.v1.Namespace.pb"),
            Just("kms-plaintext-secret.pb"),
        ],
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = fixture(file);
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        check_stable(&bytes);
        let end = cut.index(bytes.len() + 1);
        check_stable(&bytes[..end]);
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", "\\PC{1,20}"]
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("\\PC{0,12}", "\\PC{0,24}", 0..5)
}

fn bytes_map() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map(
        "[-._a-zA-Z0-9]{1,16}",
        prop::collection::vec(any::<u8>(), 0..64),
        0..5,
    )
}

/// Seconds within the years 0000-9999, or `None` for the zero time.
fn time() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(-62_167_219_200i64..253_402_300_800i64)
}

fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // civil_from_days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

fn insert_map(object: &mut Map<String, Value>, key: &str, map: &BTreeMap<String, String>) {
    if !map.is_empty() {
        object.insert(key.into(), json!(map));
    }
}

fn insert_bytes_map(object: &mut Map<String, Value>, key: &str, map: &BTreeMap<String, Vec<u8>>) {
    if !map.is_empty() {
        let encoded: Map<String, Value> = map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        object.insert(key.into(), Value::Object(encoded));
    }
}

prop_compose! {
    fn metadata()(
        name in name(),
        namespace in prop::option::of(name()),
        uid in prop::option::of("[0-9a-f-]{36}"),
        generation in prop::option::of(any::<i64>().prop_filter("non-zero", |g| *g != 0)),
        created in time(),
        deleted in time(),
        grace in prop::option::of(any::<i64>()),
        labels in string_map(),
        annotations in string_map(),
        finalizers in prop::collection::vec("\\PC{0,20}", 0..3),
        owner in prop::option::of((name(), any::<Option<bool>>(), any::<Option<bool>>())),
        managed in prop::option::of(("\\PC{0,10}", time())),
    ) -> Value {
        let mut meta = Map::new();
        meta.insert("name".into(), json!(name));
        if let Some(namespace) = namespace {
            meta.insert("namespace".into(), json!(namespace));
        }
        if let Some(uid) = uid {
            meta.insert("uid".into(), json!(uid));
        }
        if let Some(generation) = generation {
            meta.insert("generation".into(), json!(generation));
        }
        meta.insert("creationTimestamp".into(), created.map_or(Value::Null, |s| json!(rfc3339(s))));
        if let Some(deleted) = deleted {
            meta.insert("deletionTimestamp".into(), json!(rfc3339(deleted)));
        }
        if let Some(grace) = grace {
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        insert_map(&mut meta, "labels", &labels);
        insert_map(&mut meta, "annotations", &annotations);
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        if let Some((owner_name, controller, block)) = owner {
            let mut reference = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": ""});
            if let Some(controller) = controller {
                reference["controller"] = json!(controller);
            }
            if let Some(block) = block {
                reference["blockOwnerDeletion"] = json!(block);
            }
            meta.insert("ownerReferences".into(), json!([reference]));
        }
        if let Some((manager, time)) = managed {
            let mut entry = json!({
                "operation": "Update",
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {".": {}, "f:k": {}}, "f:type": {}},
            });
            if !manager.is_empty() {
                entry["manager"] = json!(manager);
            }
            if let Some(seconds) = time {
                entry["time"] = json!(rfc3339(seconds));
            }
            meta.insert("managedFields".into(), json!([entry]));
        }
        Value::Object(meta)
    }
}

prop_compose! {
    fn secret()(
        metadata in metadata(),
        data in bytes_map(),
        string_data in string_map(),
        secret_type in prop::option::of("[a-zA-Z./-]{1,30}"),
        immutable in any::<Option<bool>>(),
    ) -> Value {
        let mut object = Map::new();
        object.insert("apiVersion".into(), json!("v1"));
        object.insert("kind".into(), json!("Secret"));
        object.insert("metadata".into(), metadata);
        insert_bytes_map(&mut object, "data", &data);
        insert_map(&mut object, "stringData", &string_data);
        if let Some(secret_type) = secret_type {
            object.insert("type".into(), json!(secret_type));
        }
        if let Some(immutable) = immutable {
            object.insert("immutable".into(), json!(immutable));
        }
        Value::Object(object)
    }
}

prop_compose! {
    fn config_map()(
        metadata in metadata(),
        data in string_map(),
        binary_data in bytes_map(),
        immutable in any::<Option<bool>>(),
    ) -> Value {
        let mut object = Map::new();
        object.insert("apiVersion".into(), json!("v1"));
        object.insert("kind".into(), json!("ConfigMap"));
        object.insert("metadata".into(), metadata);
        insert_map(&mut object, "data", &data);
        insert_bytes_map(&mut object, "binaryData", &binary_data);
        if let Some(immutable) = immutable {
            object.insert("immutable".into(), json!(immutable));
        }
        Value::Object(object)
    }
}

prop_compose! {
    fn namespace()(
        metadata in metadata(),
        finalizers in prop::collection::vec("[a-z./]{1,20}", 0..3),
        phase in prop::option::of(prop_oneof![Just("Active"), Just("Terminating")]),
        condition in prop::option::of(("[A-Za-z]{1,20}", "True|False|Unknown", time(), "\\PC{0,20}")),
    ) -> Value {
        let mut spec = Map::new();
        if !finalizers.is_empty() {
            spec.insert("finalizers".into(), json!(finalizers));
        }
        let mut status = Map::new();
        if let Some(phase) = phase {
            status.insert("phase".into(), json!(phase));
        }
        if let Some((condition_type, state, time, message)) = condition {
            let mut condition = json!({
                "type": condition_type,
                "status": state,
                "lastTransitionTime": time.map_or(Value::Null, |s| json!(rfc3339(s))),
            });
            if !message.is_empty() {
                condition["message"] = json!(message);
            }
            status.insert("conditions".into(), json!([condition]));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": metadata,
            "spec": spec,
            "status": status,
        })
    }
}

fn check_round_trip(object: &Value) {
    let encoded = encode_protobuf(object).unwrap();
    let decoded = decode_protobuf(&encoded).unwrap();
    assert_eq!(&decoded, object);
    assert_eq!(encode_protobuf(&decoded).unwrap(), encoded);
    assert_eq!(&decode_storage(&encoded).unwrap(), object);
    assert_eq!(&normalize_builtin(object).unwrap(), object);
    let typed = encode_json_typed(object).unwrap();
    assert_eq!(&decode_storage(&typed).unwrap(), object);
}

/// JSON values as Kubernetes' unstructured decoding produces them: integers
/// fit int64, other numbers are finite floats.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Integral floats are written as integers (as Go does) and so read
        // back as integers; leave them out of the equality check.
        any::<f64>()
            .prop_filter("finite, not integral", |f| f.is_finite()
                && f.fract() != 0.0)
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        "[<>&\u{2028}\u{2029}\u{0}-\u{1f}\"\\\\]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn secrets_round_trip(object in secret()) {
        check_round_trip(&object);
    }

    #[test]
    fn config_maps_round_trip(object in config_map()) {
        check_round_trip(&object);
    }

    #[test]
    fn namespaces_round_trip(object in namespace()) {
        check_round_trip(&object);
    }

    #[test]
    fn json_storage_round_trips(
        fields in prop::collection::btree_map("\\PC{0,8}", json_value(), 0..6),
    ) {
        let object = Value::Object(fields.into_iter().collect());
        let stored = encode_json_storage(&object);
        prop_assert_eq!(stored.last(), Some(&b'\n'));
        prop_assert_eq!(decode_json_storage(&stored).unwrap(), object.clone());
        // No raw HTML-sensitive characters survive.
        prop_assert!(!stored.iter().any(|b| matches!(b, b'<' | b'>' | b'&')));
        // serde_json agrees on the content (it is valid JSON).
        let reparsed: Value = serde_json::from_slice(&stored).unwrap();
        prop_assert_eq!(reparsed, object);
    }
}
