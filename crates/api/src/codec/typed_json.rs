//! JSON of the built-in kinds as Go's `encoding/json` writes the typed
//! structs: fields in struct declaration order (not sorted), maps sorted,
//! compact, HTML-escaped, trailing newline. This is the storage form with
//! `--storage-media-type application/json`, and the API's JSON responses.

use serde_json::Value;

use super::json::{write_go_json, write_string, KeyOrder};

/// How one level of an object is laid out.
#[derive(Debug)]
enum Shape {
    /// A Go struct: the listed fields in this order.
    Struct(&'static [(&'static str, Shape)]),
    /// A Go slice of the inner shape.
    List(&'static Shape),
    /// `fieldsV1`: raw bytes copied through (structured-merge-diff's order).
    FieldSet,
    /// Anything else (scalars, Go maps): written with sorted keys.
    Plain,
}

const TIME: Shape = Shape::Plain;

const OWNER_REFERENCE: Shape = Shape::Struct(&[
    ("apiVersion", Shape::Plain),
    ("kind", Shape::Plain),
    ("name", Shape::Plain),
    ("uid", Shape::Plain),
    ("controller", Shape::Plain),
    ("blockOwnerDeletion", Shape::Plain),
]);

const MANAGED_FIELDS_ENTRY: Shape = Shape::Struct(&[
    ("manager", Shape::Plain),
    ("operation", Shape::Plain),
    ("apiVersion", Shape::Plain),
    ("time", TIME),
    ("fieldsType", Shape::Plain),
    ("fieldsV1", Shape::FieldSet),
    ("subresource", Shape::Plain),
]);

const OBJECT_META: Shape = Shape::Struct(&[
    ("name", Shape::Plain),
    ("generateName", Shape::Plain),
    ("namespace", Shape::Plain),
    ("selfLink", Shape::Plain),
    ("uid", Shape::Plain),
    ("resourceVersion", Shape::Plain),
    ("generation", Shape::Plain),
    ("creationTimestamp", TIME),
    ("deletionTimestamp", TIME),
    ("deletionGracePeriodSeconds", Shape::Plain),
    ("labels", Shape::Plain),
    ("annotations", Shape::Plain),
    ("ownerReferences", Shape::List(&OWNER_REFERENCE)),
    ("finalizers", Shape::Plain),
    ("managedFields", Shape::List(&MANAGED_FIELDS_ENTRY)),
]);

const SECRET: Shape = Shape::Struct(&[
    ("kind", Shape::Plain),
    ("apiVersion", Shape::Plain),
    ("metadata", OBJECT_META),
    ("immutable", Shape::Plain),
    ("data", Shape::Plain),
    ("stringData", Shape::Plain),
    ("type", Shape::Plain),
]);

const CONFIG_MAP: Shape = Shape::Struct(&[
    ("kind", Shape::Plain),
    ("apiVersion", Shape::Plain),
    ("metadata", OBJECT_META),
    ("immutable", Shape::Plain),
    ("data", Shape::Plain),
    ("binaryData", Shape::Plain),
]);

const NAMESPACE_CONDITION: Shape = Shape::Struct(&[
    ("type", Shape::Plain),
    ("status", Shape::Plain),
    ("lastTransitionTime", TIME),
    ("reason", Shape::Plain),
    ("message", Shape::Plain),
]);

const NAMESPACE: Shape = Shape::Struct(&[
    ("kind", Shape::Plain),
    ("apiVersion", Shape::Plain),
    ("metadata", OBJECT_META),
    ("spec", Shape::Struct(&[("finalizers", Shape::Plain)])),
    (
        "status",
        Shape::Struct(&[
            ("phase", Shape::Plain),
            ("conditions", Shape::List(&NAMESPACE_CONDITION)),
        ]),
    ),
]);

/// Writes a normalised object of a typed kind (`kind` chooses the layout).
pub(crate) fn write_typed(out: &mut Vec<u8>, object: &Value, kind: super::TypedKind) {
    let shape = match kind {
        super::TypedKind::Secret => &SECRET,
        super::TypedKind::ConfigMap => &CONFIG_MAP,
        super::TypedKind::Namespace => &NAMESPACE,
    };
    write_shaped(out, object, shape);
}

fn write_shaped(out: &mut Vec<u8>, value: &Value, shape: &Shape) {
    match (shape, value) {
        (Shape::Struct(fields), Value::Object(map)) => {
            out.push(b'{');
            let mut first = true;
            for (key, field_shape) in fields.iter() {
                if let Some(field) = map.get(*key) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_string(out, key);
                    out.push(b':');
                    write_shaped(out, field, field_shape);
                }
            }
            out.push(b'}');
        }
        (Shape::List(item_shape), Value::Array(items)) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_shaped(out, item, item_shape);
            }
            out.push(b']');
        }
        (Shape::FieldSet, _) => write_go_json(out, value, KeyOrder::FieldSet),
        _ => write_go_json(out, value, KeyOrder::Sorted),
    }
}
