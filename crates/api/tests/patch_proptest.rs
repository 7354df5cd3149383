//! Property tests of the three patch formats (JSON patch, merge patch, strategic merge
//! patch), which read client input: arbitrary bodies never panic, and the formats keep
//! their defining laws.
#![allow(clippy::unwrap_used)]

use atrest_api::kind::Kind;
use atrest_api::patch::{
    apply_json_patch, apply_merge_patch, apply_patch, apply_strategic_merge_patch, PatchType,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-d]",
        1 => proptest::sample::select(vec![
            "$patch".to_string(),
            "$retainKeys".to_string(),
            "$setElementOrder/a".to_string(),
            "$deleteFromPrimitiveList/b".to_string(),
            "~1".to_string(),
            "a/b".to_string(),
            "".to_string(),
        ]),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        proptest::sample::select(vec!["a", "", "replace", "delete", "merge", "/a", "0", "-"])
            .prop_map(Value::from),
    ]
}

/// Any JSON, with the keys and strings the patch code treats specially.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON without nulls, arrays or `$` directives: where merge and strategic merge agree.
fn plain_object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ];
    let tree = leaf.prop_recursive(3, 16, 3, |inner| {
        proptest::collection::btree_map("[a-c]", inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
    });
    proptest::collection::btree_map("[a-c]", tree, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn json_patch_op() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "x",
        ]),
        proptest::sample::select(vec![
            "", "/a", "/a/b", "/a/0", "/a/-", "/b/~1", "/c/~0", "a", "/9",
        ]),
        proptest::sample::select(vec!["/a", "/b", "", "/a/0"]),
        json_value(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bodies_never_panic(
        original in json_value(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        patch in json_value(),
    ) {
        let original = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": original});
        let patch_body = serde_json::to_vec(&patch).unwrap();
        for patch_type in PatchType::ALL {
            for kind in [Kind::SECRET, Kind::NAMESPACED_CUSTOM] {
                let _ = apply_patch(&original, patch_type, kind, &body);
                if let Ok(patched) = apply_patch(&original, patch_type, kind, &patch_body) {
                    prop_assert!(patched.is_object());
                }
            }
        }
    }

    #[test]
    fn json_patches_never_panic(
        document in json_value(),
        ops in proptest::collection::vec(json_patch_op(), 0..5),
    ) {
        let _ = apply_json_patch(&document, &Value::Array(ops));
    }

    #[test]
    fn strategic_merge_never_panics(original in json_value(), patch in json_value()) {
        let _ = apply_strategic_merge_patch(&original, &patch);
    }

    #[test]
    fn merge_patch_laws(target in json_value(), patch in json_value()) {
        let once = apply_merge_patch(&target, &patch);
        // Applying the same merge patch twice changes nothing more (RFC 7386 is idempotent).
        prop_assert_eq!(apply_merge_patch(&once, &patch), once.clone());
        // An empty patch object leaves an object as it is.
        if target.is_object() {
            prop_assert_eq!(apply_merge_patch(&target, &json!({})), target);
        }
    }

    #[test]
    fn strategic_merge_is_merge_on_plain_objects(target in plain_object(), patch in plain_object()) {
        prop_assert_eq!(
            apply_strategic_merge_patch(&target, &patch).unwrap(),
            apply_merge_patch(&target, &patch)
        );
    }

    #[test]
    fn json_patch_add_then_remove_is_identity(
        target in plain_object(),
        key in "[a-e]",
        value in json_value(),
    ) {
        let pointer = format!("/{key}");
        let added = apply_json_patch(&target, &json!([{"op": "add", "path": pointer, "value": value}])).unwrap();
        prop_assert_eq!(added.pointer(&pointer), Some(&value));
        // `test` agrees with what was added.
        let test = json!([{"op": "test", "path": pointer, "value": value}]);
        let tested = apply_json_patch(&added, &test);
        prop_assert!(tested.is_ok());
        let removed = apply_json_patch(&added, &json!([{"op": "remove", "path": pointer}])).unwrap();
        let mut expected = target.clone();
        expected.as_object_mut().unwrap().remove(&key);
        prop_assert_eq!(removed, expected);
    }
}
