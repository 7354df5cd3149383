//! Field ownership: `metadata.managedFields` as kube-apiserver's field manager records it
//! (structured-merge-diff's field sets, serialized as `FieldsV1`), for updates (the fields
//! a create, update or patch changed go to its manager) and for server-side apply (merge,
//! conflicts with other managers, pruning of fields an applier stopped applying).
//!
//! Everything here is pure: the server decides the manager, the time and the objects.
//!
//! # Model
//!
//! - [`FieldSet`]: a tree of [`PathElement`]s; a node is a *member* when the field itself
//!   is owned (a leaf, or a map or list item), and has children for owned fields inside it.
//! - [`Schema`]: what upstream's schema says about granularity: structs (named fields),
//!   maps (every key its own field), atomic values, and lists (atomic, `set`, or `map` with
//!   keys). Built-in kinds have theirs ([`Schema::for_kind`]); custom resources are read
//!   from the CRD's `openAPIV3Schema` ([`Schema::from_openapi`]) or deduced (objects are
//!   granular maps, lists atomic).
//! - [`Managers`]: the decoded `managedFields` entries.
//!
//! # Differences from upstream
//!
//! - The merge of associative lists keeps the live order and appends new items (upstream
//!   interleaves them in the applied order).
//! - Pruning removes the fields an applier no longer applies that nobody else owns, then
//!   the structs and maps it had applied that are left empty; upstream's general
//!   remove-and-add-back algorithm agrees with this for maps, structs and lists here.
//! - No cap on the number of `Update` entries (upstream merges the oldest past 10 into
//!   `ancient-changes`), and no `last-applied-configuration` interplay with client-side
//!   apply.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::kind::{Builtin, Kind};

// ---------------------------------------------------------------------------
// Paths and sets

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathElement {
    /// A struct field or map key (`f:name`).
    Field(String),
    /// An item of a list of maps, by its key fields (`k:{"uid":"..."}`), sorted by name;
    /// the values are JSON.
    Key(Vec<(String, Value)>),
    /// An item of a set (`v:"x"`).
    Value(Value),
    /// An item of a list by index (`i:0`; atomic lists have none, so this is rare).
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element.
    pub fn serialize(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let map: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub fn parse(text: &str) -> Result<PathElement, FieldSetError> {
        let bad = || FieldSetError::BadKey(text.to_string());
        let (prefix, rest) = text.split_once(':').ok_or_else(bad)?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => {
                let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                let Value::Object(map) = v else {
                    return Err(bad());
                };
                let mut fields: Vec<(String, Value)> = map.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(PathElement::Key(fields))
            }
            "v" => Ok(PathElement::Value(
                serde_json::from_str(rest).map_err(|_| bad())?,
            )),
            "i" => Ok(PathElement::Index(rest.parse().map_err(|_| bad())?)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for PathElement {
    /// Upstream's path text: `.name`, `[uid="x"]`, `[="x"]`, `[0]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let c = ka.cmp(kb).then_with(|| value_cmp(va, vb));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => value_cmp(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A path as upstream prints it in conflicts: `.data.key`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A bad `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSetError {
    #[error("invalid fieldsV1 key {0:?}")]
    BadKey(String),
    #[error("fieldsV1 must be a JSON object of objects")]
    NotAnObject,
    #[error("managedFields[{index}]: {message}")]
    Entry { index: usize, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

/// A set of field paths (structured-merge-diff's `fieldpath.Set`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    nodes: BTreeMap<PathElement, Node>,
}

impl FieldSet {
    pub fn new() -> Self {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds `path` as a member (the empty path is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    /// Whether `path` is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        match self.nodes.get(first) {
            None => false,
            Some(node) if rest.is_empty() => node.member,
            Some(node) => node.children.has(rest),
        }
    }

    /// Whether `path` is a member or has members under it.
    pub fn touches(&self, path: &[PathElement]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return !self.is_empty();
        };
        match self.nodes.get(first) {
            None => false,
            Some(_) if rest.is_empty() => true,
            Some(node) => node.children.touches(rest),
        }
    }

    fn prune(mut self) -> Self {
        self.nodes
            .retain(|_, node| node.member || !node.children.is_empty());
        self
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (pe, node) in &other.nodes {
            let mine = out.nodes.entry(pe.clone()).or_default();
            mine.member |= node.member;
            mine.children = mine.children.union(&node.children);
        }
        out
    }

    /// Members of `self` that are not members of `other` (children compared recursively).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, node) in &self.nodes {
            let theirs = other.nodes.get(pe);
            let member = node.member && !theirs.is_some_and(|t| t.member);
            let children = match theirs {
                Some(t) => node.children.difference(&t.children),
                None => node.children.clone(),
            };
            out.nodes.insert(pe.clone(), Node { member, children });
        }
        out.prune()
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, node) in &self.nodes {
            if let Some(t) = other.nodes.get(pe) {
                out.nodes.insert(
                    pe.clone(),
                    Node {
                        member: node.member && t.member,
                        children: node.children.intersection(&t.children),
                    },
                );
            }
        }
        out.prune()
    }

    /// `self` without everything at or under a member of `other`.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, node) in &self.nodes {
            match other.nodes.get(pe) {
                Some(t) if t.member => {}
                Some(t) => {
                    out.nodes.insert(
                        pe.clone(),
                        Node {
                            member: node.member,
                            children: node.children.recursive_difference(&t.children),
                        },
                    );
                }
                None => {
                    out.nodes.insert(pe.clone(), node.clone());
                }
            }
        }
        out.prune()
    }

    /// Every member path, in upstream's iteration order (a level's members, then its
    /// children's).
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, node) in &self.nodes {
            if node.member {
                prefix.push(pe.clone());
                out.push(prefix.clone());
                prefix.pop();
            }
        }
        for (pe, node) in &self.nodes {
            prefix.push(pe.clone());
            node.children.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Paths of nodes that have children, deepest first (for removing emptied parents).
    fn parent_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, node) in &self.nodes {
            if !node.children.is_empty() {
                prefix.push(pe.clone());
                node.children.parent_paths(prefix, out);
                out.push(prefix.clone());
                prefix.pop();
            }
        }
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (pe, node) in &self.nodes {
            let mut inner = match node.children.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if node.member && !node.children.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            map.insert(pe.serialize(), Value::Object(inner));
        }
        Value::Object(map)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldSetError> {
        let map = value.as_object().ok_or(FieldSetError::NotAnObject)?;
        let mut out = FieldSet::new();
        for (key, inner) in map {
            if key == "." {
                continue;
            }
            let pe = PathElement::parse(key)?;
            let inner_map = inner.as_object().ok_or(FieldSetError::NotAnObject)?;
            let children = FieldSet::from_fields_v1(inner)?;
            let member = inner_map.is_empty() || inner_map.contains_key(".");
            out.nodes.insert(pe, Node { member, children });
        }
        Ok(out.prune())
    }
}

// ---------------------------------------------------------------------------
// Schemas

/// How a list's items are identified.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// The whole list is one field.
    Atomic,
    /// Scalars, each its own field (`v:`).
    Set,
    /// Maps identified by these key fields (`k:`).
    Map {
        keys: Vec<String>,
        item: Box<Schema>,
    },
}

/// The granularity of a value, as upstream's schema gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    /// A scalar, or an atomic map: one field.
    Atomic,
    /// Named fields; keys not named are treated with `other` (a granular map entry) or,
    /// when `None`, as atomic struct fields.
    Struct {
        fields: Vec<(String, Schema)>,
        other: Option<Box<Schema>>,
    },
    /// Every key is its own field, each value of this schema.
    Map(Box<Schema>),
    List(ListType),
    /// No schema: objects are granular maps, lists atomic.
    Deduced,
}

fn s(fields: Vec<(&str, Schema)>) -> Schema {
    Schema::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        other: None,
    }
}

fn string_map() -> Schema {
    Schema::Map(Box::new(Schema::Atomic))
}

impl Schema {
    /// `ObjectMeta`: labels and annotations granular, finalizers a set, ownerReferences
    /// keyed by uid.
    pub fn object_meta() -> Schema {
        s(vec![
            ("labels", string_map()),
            ("annotations", string_map()),
            ("finalizers", Schema::List(ListType::Set)),
            (
                "ownerReferences",
                Schema::List(ListType::Map {
                    keys: vec!["uid".into()],
                    item: Box::new(s(vec![])),
                }),
            ),
        ])
    }

    /// The schema of a built-in kind (custom resources: [`Schema::for_custom`]).
    pub fn for_kind(kind: Kind) -> Schema {
        let top = |fields: Vec<(&str, Schema)>| {
            let mut all = vec![("metadata", Schema::object_meta())];
            all.extend(fields);
            s(all)
        };
        match kind {
            Kind::Builtin(Builtin::Secret) => {
                top(vec![("data", string_map()), ("stringData", string_map())])
            }
            Kind::Builtin(Builtin::ConfigMap) => {
                top(vec![("data", string_map()), ("binaryData", string_map())])
            }
            Kind::Builtin(Builtin::Namespace) => top(vec![
                (
                    "spec",
                    s(vec![("finalizers", Schema::List(ListType::Atomic))]),
                ),
                (
                    "status",
                    s(vec![(
                        "conditions",
                        Schema::List(ListType::Map {
                            keys: vec!["type".into()],
                            item: Box::new(s(vec![])),
                        }),
                    )]),
                ),
            ]),
            Kind::Builtin(Builtin::CustomResourceDefinition) | Kind::Custom { .. } => {
                Schema::for_custom(None)
            }
        }
    }

    /// A custom resource: `metadata` is `ObjectMeta`, the rest from the CRD's
    /// `openAPIV3Schema` when given, else deduced.
    pub fn for_custom(openapi: Option<&Value>) -> Schema {
        let mut schema = openapi.map_or(Schema::Deduced, Schema::from_openapi);
        match &mut schema {
            Schema::Struct { fields, .. } => {
                fields.retain(|(k, _)| k != "metadata");
                fields.push(("metadata".into(), Schema::object_meta()));
                schema
            }
            _ => Schema::Struct {
                fields: vec![("metadata".into(), Schema::object_meta())],
                other: Some(Box::new(Schema::Deduced)),
            },
        }
    }

    /// A structural schema: `properties` are struct fields, `additionalProperties` a map,
    /// `x-kubernetes-preserve-unknown-fields` deduced, `x-kubernetes-map-type: atomic` and
    /// `x-kubernetes-list-type` as upstream.
    pub fn from_openapi(schema: &Value) -> Schema {
        let ext = |k: &str| schema.get(k).and_then(Value::as_str);
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                if ext("x-kubernetes-map-type") == Some("atomic") {
                    return Schema::Atomic;
                }
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
                    .map(Schema::from_openapi);
                match (props, additional) {
                    (Some(props), additional) => Schema::Struct {
                        fields: props
                            .iter()
                            .map(|(k, v)| (k.clone(), Schema::from_openapi(v)))
                            .collect(),
                        other: additional
                            .or(preserve.then_some(Schema::Deduced))
                            .map(Box::new),
                    },
                    (None, Some(additional)) => Schema::Map(Box::new(additional)),
                    (None, None) if preserve => Schema::Deduced,
                    (None, None) => Schema::Map(Box::new(Schema::Deduced)),
                }
            }
            Some("array") => {
                let item = schema
                    .get("items")
                    .map_or(Schema::Deduced, Schema::from_openapi);
                match ext("x-kubernetes-list-type") {
                    Some("set") => Schema::List(ListType::Set),
                    Some("map") => Schema::List(ListType::Map {
                        keys: schema
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|ks| {
                                ks.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        item: Box::new(item),
                    }),
                    _ => Schema::List(ListType::Atomic),
                }
            }
            None if preserve => Schema::Deduced,
            _ => Schema::Atomic,
        }
    }

    /// The schema of the field `key` of a map or struct, and whether it is a named struct
    /// field (which `to_field_set` does not own by itself).
    fn field(&self, key: &str) -> (Schema, bool) {
        match self {
            Schema::Struct { fields, other } => match fields.iter().find(|(k, _)| k == key) {
                Some((_, schema)) => (schema.clone(), true),
                None => match other {
                    Some(o) => ((**o).clone(), false),
                    None => (Schema::Atomic, true),
                },
            },
            Schema::Map(item) => ((**item).clone(), false),
            Schema::Deduced => (Schema::Deduced, false),
            Schema::Atomic | Schema::List(_) => (Schema::Atomic, true),
        }
    }

    /// What kind of container `value` is under this schema.
    fn shape(&self, value: Option<&Value>) -> Shape<'_> {
        match self {
            Schema::Struct { .. } | Schema::Map(_) => Shape::Map,
            Schema::Deduced => match value {
                Some(Value::Array(_)) => Shape::Leaf,
                Some(Value::Object(_)) | None => Shape::Map,
                Some(_) => Shape::Leaf,
            },
            Schema::List(ListType::Atomic) | Schema::Atomic => Shape::Leaf,
            Schema::List(ListType::Set) => Shape::List(None),
            Schema::List(ListType::Map { keys, item }) => Shape::List(Some((keys, item))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape<'a> {
    Leaf,
    Map,
    /// A set (`None`) or a map list.
    List(Option<(&'a Vec<String>, &'a Schema)>),
}

/// The path element of a list item.
fn item_element(keys: Option<&Vec<String>>, item: &Value, index: usize) -> PathElement {
    match keys {
        None => {
            if item.is_object() || item.is_array() {
                PathElement::Index(index)
            } else {
                PathElement::Value(item.clone())
            }
        }
        Some(keys) => {
            let mut fields: Vec<(String, Value)> = keys
                .iter()
                .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            if fields.is_empty() {
                return PathElement::Index(index);
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            PathElement::Key(fields)
        }
    }
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

fn list_items<'a>(
    keys: Option<&Vec<String>>,
    list: Option<&'a Value>,
) -> Vec<(PathElement, Vec<&'a Value>)> {
    let mut out: Vec<(PathElement, Vec<&Value>)> = Vec::new();
    for (i, item) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pe = item_element(keys, item, i);
        match out.iter_mut().find(|(p, _)| *p == pe) {
            Some((_, items)) => items.push(item),
            None => out.push((pe, vec![item])),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Compare, field sets of objects, merge, removal

/// What changed between two objects (structured-merge-diff's `Comparison`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    fn exclude(&self, ignored: &FieldSet) -> Comparison {
        Comparison {
            added: self.added.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
        }
    }

    fn changed(&self) -> FieldSet {
        self.modified.union(&self.added)
    }
}

/// Compares `old` with `new` under `schema`.
pub fn compare(schema: &Schema, old: &Value, new: &Value) -> Comparison {
    let mut out = Comparison::default();
    compare_at(schema, Some(old), Some(new), &mut Vec::new(), &mut out);
    out
}

fn compare_leaf(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (lhs, rhs) {
        (None, _) => out.added.insert(path),
        (_, None) => out.removed.insert(path),
        (Some(l), Some(r)) if l != r => out.modified.insert(path),
        _ => {}
    }
}

fn compare_at(
    schema: &Schema,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let shape = schema.shape(rhs.or(lhs));
    let both_empty = is_empty_container(lhs) && is_empty_container(rhs);
    let mismatched = |v: Option<&Value>, want_obj: bool| {
        v.is_some_and(|v| {
            !v.is_null()
                && if want_obj {
                    !v.is_object()
                } else {
                    !v.is_array()
                }
        })
    };
    match shape {
        Shape::Map if !both_empty && !mismatched(lhs, true) && !mismatched(rhs, true) => {
            let empty = Map::new();
            let l = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let r = rhs.and_then(Value::as_object).unwrap_or(&empty);
            let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            for key in keys {
                let (child, _) = schema.field(key);
                path.push(PathElement::Field(key.clone()));
                compare_at(&child, l.get(key), r.get(key), path, out);
                path.pop();
            }
        }
        Shape::List(keys) if !both_empty && !mismatched(lhs, false) && !mismatched(rhs, false) => {
            let key_names = keys.map(|(k, _)| k);
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            let l = list_items(key_names, lhs);
            let r = list_items(key_names, rhs);
            let mut seen: Vec<&PathElement> = Vec::new();
            for (pe, _) in l.iter().chain(r.iter()) {
                if seen.contains(&pe) {
                    continue;
                }
                seen.push(pe);
                let li = l.iter().find(|(p, _)| p == pe).map(|(_, v)| v.as_slice());
                let ri = r.iter().find(|(p, _)| p == pe).map(|(_, v)| v.as_slice());
                path.push(pe.clone());
                match (li.unwrap_or(&[]), ri.unwrap_or(&[])) {
                    (l1, r1) if l1.len() <= 1 && r1.len() <= 1 => compare_at(
                        &item_schema,
                        l1.first().copied(),
                        r1.first().copied(),
                        path,
                        out,
                    ),
                    (l1, r1) if l1.len() >= 2 && r1.len() >= 2 => {
                        if l1 != r1 {
                            out.modified.insert(path);
                        }
                    }
                    (l1, r1) if l1.len() >= 2 => {
                        if let Some(first) = r1.first() {
                            compare_at(&item_schema, None, Some(first), path, out);
                        }
                        out.removed.insert(path);
                    }
                    (l1, _) => {
                        if let Some(first) = l1.first() {
                            compare_at(&item_schema, Some(first), None, path, out);
                        }
                        out.added.insert(path);
                    }
                }
                path.pop();
            }
        }
        Shape::Leaf | Shape::Map | Shape::List(_) => {
            compare_leaf(lhs, rhs, path, out);
            return;
        }
    }
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// The fields `value` sets (what an applied configuration owns).
pub fn to_field_set(schema: &Schema, value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    field_set_at(schema, value, &mut Vec::new(), &mut out);
    out
}

fn field_set_at(schema: &Schema, value: &Value, path: &mut Vec<PathElement>, out: &mut FieldSet) {
    match (schema.shape(Some(value)), value) {
        (Shape::Map, Value::Object(map)) => {
            for (key, child) in map {
                let (child_schema, named) = schema.field(key);
                path.push(PathElement::Field(key.clone()));
                field_set_at(&child_schema, child, path, out);
                let empty_map = child.as_object().is_some_and(Map::is_empty);
                if child.is_null() || empty_map || !named {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Shape::List(keys), Value::Array(_)) => {
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            for (pe, items) in list_items(keys.map(|(k, _)| k), Some(value)) {
                path.push(pe);
                if items.len() == 1 {
                    field_set_at(&item_schema, items[0], path, out);
                }
                out.insert(path);
                path.pop();
            }
        }
        (Shape::Map | Shape::List(_), Value::Null) => {}
        _ => out.insert(path),
    }
}

/// `config` merged into `live` (what an apply produces before pruning).
pub fn merge(schema: &Schema, live: &Value, config: &Value) -> Value {
    match (schema.shape(Some(config)), live, config) {
        (Shape::Map, Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (key, cv) in c {
                let (child, _) = schema.field(key);
                let merged = match l.get(key) {
                    Some(lv) => merge(&child, lv, cv),
                    None => cv.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::List(keys), Value::Array(l), Value::Array(c)) => {
            let names = keys.map(|(k, _)| k);
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            let mut out: Vec<Value> = Vec::new();
            let c_items: Vec<(PathElement, &Value)> = c
                .iter()
                .enumerate()
                .map(|(i, v)| (item_element(names, v, i), v))
                .collect();
            let mut used = vec![false; c_items.len()];
            for (i, lv) in l.iter().enumerate() {
                let pe = item_element(names, lv, i);
                match c_items.iter().position(|(p, _)| *p == pe) {
                    Some(j) => {
                        used[j] = true;
                        out.push(merge(&item_schema, lv, c_items[j].1));
                    }
                    None => out.push(lv.clone()),
                }
            }
            for (j, (_, cv)) in c_items.iter().enumerate() {
                if !used[j] {
                    out.push((*cv).clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes the field at `path` from `value`, if there.
fn remove_path(schema: &Schema, value: &mut Value, path: &[PathElement]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, value) {
        (PathElement::Field(key), Value::Object(map)) => {
            if rest.is_empty() {
                map.remove(key);
            } else if let Some(child) = map.get_mut(key) {
                let (child_schema, _) = schema.field(key);
                remove_path(&child_schema, child, rest);
            }
        }
        (pe, Value::Array(items)) => {
            let keys = match schema {
                Schema::List(ListType::Map { keys, item }) => Some((keys, item.as_ref())),
                _ => None,
            };
            let names = keys.map(|(k, _)| k);
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            let positions: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(i, v)| item_element(names, v, *i) == *pe)
                .map(|(i, _)| i)
                .collect();
            if rest.is_empty() {
                for i in positions.into_iter().rev() {
                    items.remove(i);
                }
            } else {
                for i in positions {
                    remove_path(&item_schema, &mut items[i], rest);
                }
            }
        }
        _ => {}
    }
}

fn get_path<'a>(schema: &Schema, value: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    match (first, value) {
        (PathElement::Field(key), Value::Object(map)) => {
            let (child_schema, _) = schema.field(key);
            get_path(&child_schema, map.get(key)?, rest)
        }
        (pe, Value::Array(items)) => {
            let keys = match schema {
                Schema::List(ListType::Map { keys, item }) => Some((keys, item.as_ref())),
                _ => None,
            };
            let names = keys.map(|(k, _)| k);
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            let item = items
                .iter()
                .enumerate()
                .find(|(i, v)| item_element(names, v, *i) == *pe)?
                .1;
            get_path(&item_schema, item, rest)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Managers

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// `2006-01-02T15:04:05Z`, or none.
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether `self` and `other` are the same manager (upstream's manager identifier:
    /// name, operation, subresource, and for updates the apiVersion).
    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How upstream names the manager in a conflict.
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

/// An object's managed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managers {
    pub entries: Vec<Entry>,
}

/// The fields upstream never records (its `stripMeta`): apiVersion, kind, and the
/// server-set metadata.
pub fn stripped_fields() -> FieldSet {
    let mut set = FieldSet::new();
    let f = |s: &str| PathElement::Field(s.to_string());
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[f("metadata"), f(field)]);
    }
    set
}

/// A conflict of an apply with another manager's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// How upstream names the manager: `"kubectl-patch" using v1`.
    pub manager: String,
    /// `.data.key`.
    pub field: String,
}

/// The conflicts of an apply, with upstream's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let [one] = self.0.as_slice() {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager, one.field
            );
        }
        let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &self.0 {
            by_manager.entry(&c.manager).or_default().push(&c.field);
        }
        let mut lines = Vec::new();
        for (manager, fields) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            for field in fields {
                lines.push(format!("- {field}"));
            }
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

impl Managers {
    /// The entries of `metadata.managedFields` (absent: none).
    pub fn decode(object: &Value) -> Result<Managers, FieldSetError> {
        let Some(list) = object.pointer("/metadata/managedFields") else {
            return Ok(Managers::default());
        };
        let Some(list) = list.as_array() else {
            if list.is_null() {
                return Ok(Managers::default());
            }
            return Err(FieldSetError::Entry {
                index: 0,
                message: "managedFields must be a list".into(),
            });
        };
        let mut entries = Vec::new();
        for (index, item) in list.iter().enumerate() {
            let err = |message: &str| FieldSetError::Entry {
                index,
                message: message.to_string(),
            };
            let text = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let operation = match text("operation").as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err(err("operation must be Apply or Update")),
            };
            let fields_type = text("fieldsType");
            if fields_type != "FieldsV1" {
                return Err(err("fieldsType must be FieldsV1"));
            }
            let fields = match item.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(v) => FieldSet::from_fields_v1(v).map_err(|e| err(&e.to_string()))?,
            };
            entries.push(Entry {
                manager: text("manager"),
                operation,
                api_version: text("apiVersion"),
                time: item.get("time").and_then(Value::as_str).map(str::to_string),
                subresource: text("subresource"),
                fields,
            });
        }
        Ok(Managers { entries })
    }

    /// The `managedFields` list, in upstream's order (operation, time, manager,
    /// apiVersion, subresource); `None` when there is no entry.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| {
            a.operation
                .cmp(&b.operation)
                .then_with(|| {
                    let t = |e: &Entry| e.time.clone().unwrap_or_default();
                    t(a).cmp(&t(b))
                })
                .then_with(|| a.manager.cmp(&b.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.subresource.cmp(&b.subresource))
        });
        let items = entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), Value::String(e.manager.clone()));
                m.insert(
                    "operation".into(),
                    Value::String(e.operation.as_str().into()),
                );
                m.insert("apiVersion".into(), Value::String(e.api_version.clone()));
                if let Some(t) = &e.time {
                    m.insert("time".into(), Value::String(t.clone()));
                }
                m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                m.insert("fieldsV1".into(), e.fields.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), Value::String(e.subresource.clone()));
                }
                Value::Object(m)
            })
            .collect();
        Some(Value::Array(items))
    }

    fn strip_all(&mut self, set: &FieldSet) {
        for e in &mut self.entries {
            e.fields = e.fields.difference(set);
        }
    }

    /// Takes `changed` away from every entry but `keep` and removes `removed`; drops
    /// entries left empty. Returns the conflicts (other entries' fields in `changed`).
    fn take(&mut self, keep: Option<&Entry>, cmp: &Comparison) -> Vec<(Entry, FieldSet)> {
        let changed = cmp.changed();
        let mut conflicts = Vec::new();
        for e in &mut self.entries {
            if keep.is_some_and(|k| k.same_manager(e)) {
                continue;
            }
            let conflict = e.fields.intersection(&changed);
            if !conflict.is_empty() {
                conflicts.push((e.clone(), conflict.clone()));
                e.fields = e.fields.difference(&conflict);
            }
            e.fields = e.fields.difference(&cmp.removed);
        }
        conflicts
    }

    fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
    }
}

/// What a field manager call works with.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub schema: &'a Schema,
    /// Fields the operation may not set (upstream's reset fields, e.g. `status`).
    pub ignored: &'a FieldSet,
    pub manager: &'a str,
    /// The apiVersion of the request (`v1`, `example.com/v1`).
    pub api_version: &'a str,
    /// `status` for the status subresource, else empty.
    pub subresource: &'a str,
    /// Now, `2006-01-02T15:04:05Z`.
    pub now: &'a str,
}

fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    out
}

/// An update (create, update, patch) from `live` to `new` by `ctx.manager`: the fields it
/// added or changed become its own (taken from other managers), removed fields leave every
/// entry. The entry's time changes only when it gained fields.
pub fn update(ctx: &Context<'_>, managers: &Managers, live: &Value, new: &Value) -> Managers {
    let mut managers = managers.clone();
    let strip = stripped_fields();
    managers.strip_all(&strip);
    let cmp = compare(
        ctx.schema,
        &without_managed_fields(live),
        &without_managed_fields(new),
    )
    .exclude(ctx.ignored);
    let cmp = Comparison {
        added: cmp.added.difference(&strip),
        modified: cmp.modified.difference(&strip),
        removed: cmp.removed.difference(&strip),
    };
    managers.take(None, &cmp);
    let gained = cmp.changed();
    if !gained.is_empty() {
        let me = Entry {
            manager: ctx.manager.to_string(),
            operation: Operation::Update,
            api_version: ctx.api_version.to_string(),
            time: Some(ctx.now.to_string()),
            subresource: ctx.subresource.to_string(),
            fields: gained.clone(),
        };
        match managers.entries.iter_mut().find(|e| e.same_manager(&me)) {
            Some(e) => {
                e.fields = e.fields.union(&gained);
                e.time = me.time;
            }
            None => managers.entries.push(me),
        }
    }
    managers.drop_empty();
    managers
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the configuration sets to other values (409).
    #[error("{0}")]
    Conflicts(Conflicts),
    /// The configuration lists an item of a set or keyed list twice, or one the list cannot
    /// identify (upstream refuses both).
    #[error("{0}")]
    Invalid(String),
}

impl std::error::Error for Conflicts {}

/// The first item of a set or keyed list that `value` holds twice, or that the list's
/// type cannot identify (upstream refuses both in an applied configuration).
fn duplicate_item(schema: &Schema, value: &Value, path: &mut Vec<PathElement>) -> Option<String> {
    match (schema.shape(Some(value)), value) {
        (Shape::Map, Value::Object(map)) => map.iter().find_map(|(key, child)| {
            path.push(PathElement::Field(key.clone()));
            let found = duplicate_item(&schema.field(key).0, child, path);
            path.pop();
            found
        }),
        (Shape::List(keys), Value::Array(_)) => {
            let item_schema = keys.map_or(Schema::Atomic, |(_, s)| s.clone());
            list_items(keys.map(|(k, _)| k), Some(value))
                .into_iter()
                .find_map(|(pe, items)| {
                    let unkeyed = matches!(pe, PathElement::Index(_));
                    path.push(pe);
                    let found = if unkeyed {
                        // A set item that is no scalar, a keyed item without its keys.
                        Some(format!(
                            "{} as an item its list type cannot identify",
                            path_string(path)
                        ))
                    } else if items.len() > 1 {
                        Some(format!("{} more than once", path_string(path)))
                    } else {
                        duplicate_item(&item_schema, items[0], path)
                    };
                    path.pop();
                    found
                })
        }
        _ => None,
    }
}

/// A server-side apply of `config` to `live` by `ctx.manager`: the merged and pruned
/// object and the new managers, or the conflicts with other managers (unless `force`,
/// which takes their fields).
pub fn apply(
    ctx: &Context<'_>,
    managers: &Managers,
    live: &Value,
    config: &Value,
    force: bool,
) -> Result<(Value, Managers), ApplyError> {
    if let Some(path) = duplicate_item(ctx.schema, config, &mut Vec::new()) {
        return Err(ApplyError::Invalid(format!(
            "the configuration lists {path}"
        )));
    }
    let strip = stripped_fields();
    let mut managers = managers.clone();
    managers.strip_all(&strip);
    let live = without_managed_fields(live);
    let config = without_managed_fields(config);
    let set = to_field_set(ctx.schema, &config)
        .difference(&strip)
        .recursive_difference(ctx.ignored);
    let me = Entry {
        manager: ctx.manager.to_string(),
        operation: Operation::Apply,
        api_version: ctx.api_version.to_string(),
        time: None,
        subresource: ctx.subresource.to_string(),
        fields: set.clone(),
    };
    let previous = managers.entries.iter().position(|e| e.same_manager(&me));
    let last = previous.map(|i| managers.entries[i].fields.clone());
    let mut merged = merge(ctx.schema, &live, &config);

    // Prune what this applier applied last time and no longer does, unless another
    // manager owns it.
    if let Some(last) = &last {
        let mut owned = set.clone();
        for e in &managers.entries {
            if !e.same_manager(&me) {
                owned = owned.union(&e.fields);
            }
        }
        for path in last.difference(&owned).paths() {
            if !owned.touches(&path) {
                remove_path(ctx.schema, &mut merged, &path);
            }
        }
        let mut parents = Vec::new();
        last.parent_paths(&mut Vec::new(), &mut parents);
        for path in parents {
            let emptied = get_path(ctx.schema, &merged, &path)
                .is_some_and(|v| is_empty_container(Some(v)) && !v.is_null());
            let was_empty =
                get_path(ctx.schema, &live, &path).is_some_and(|v| is_empty_container(Some(v)));
            if emptied && !was_empty && !owned.touches(&path) {
                remove_path(ctx.schema, &mut merged, &path);
            }
        }
    }

    let cmp = compare(ctx.schema, &live, &merged).exclude(ctx.ignored);
    let cmp = Comparison {
        added: cmp.added.difference(&strip),
        modified: cmp.modified.difference(&strip),
        removed: cmp.removed.difference(&strip),
    };
    let mut trial = managers.clone();
    let conflicts = trial.take(Some(&me), &cmp);
    if !force && !conflicts.is_empty() {
        let mut list = Vec::new();
        for (entry, fields) in conflicts {
            for path in fields.paths() {
                list.push(Conflict {
                    manager: entry.describe(),
                    field: path_string(&path),
                });
            }
        }
        list.sort_by(|a, b| {
            a.manager
                .cmp(&b.manager)
                .then_with(|| a.field.cmp(&b.field))
        });
        return Err(ApplyError::Conflicts(Conflicts(list)));
    }
    let mut managers = trial;
    let changed = merged != live;
    let mut me = me;
    me.time = if changed {
        Some(ctx.now.to_string())
    } else {
        previous.and_then(|i| managers.entries[i].time.clone())
    };
    match previous {
        Some(i) => managers.entries[i] = me,
        None => managers.entries.push(me),
    }
    managers.drop_empty();
    Ok((merged, managers))
}

/// The configuration of an apply patch (`application/apply-patch+yaml`: YAML or JSON),
/// which must be an object. Errors name the position, never the content.
pub fn parse_apply_config(body: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("the apply patch is not UTF-8: {e}"))?;
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    let value: Value = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| format!("error decoding YAML: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the apply patch must be a YAML or JSON object".to_string())
    }
}

/// Sets `object`'s `metadata.managedFields` to `managers` (removed when empty).
pub fn set_managed_fields(object: &mut Value, managers: &Managers) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match managers.encode() {
        Some(list) => {
            meta.insert("managedFields".into(), list);
        }
        None => {
            meta.remove("managedFields");
        }
    }
}

/// Upstream's reset fields of a kind's main resource: `status` for kinds with a status
/// subresource (namespaces, CRDs, custom resources).
pub fn reset_fields(kind: Kind) -> FieldSet {
    let mut set = FieldSet::new();
    if kind.status_subresource() || kind == Kind::CUSTOM_RESOURCE_DEFINITION {
        set.insert(&[PathElement::Field("status".into())]);
    }
    set
}

/// The manager upstream derives from a `User-Agent` when the request names none: the text
/// before the first `/`, printable characters only, at most 128 bytes.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > 128 {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ctx<'a>(schema: &'a Schema, ignored: &'a FieldSet, manager: &'a str) -> Context<'a> {
        Context {
            schema,
            ignored,
            manager,
            api_version: "v1",
            subresource: "",
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn fields(managers: &Managers, manager: &str) -> Value {
        managers
            .entries
            .iter()
            .find(|e| e.manager == manager)
            .map_or(Value::Null, |e| e.fields.to_fields_v1())
    }

    #[test]
    fn create_records_what_the_object_sets() {
        let schema = Schema::for_kind(Kind::SECRET);
        let none = FieldSet::new();
        let new = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "d", "uid": "u", "creationTimestamp": "x"},
            "data": {"a": "MQ==", "b": "Mg=="}, "type": "Opaque"});
        let m = update(
            &ctx(&schema, &none, "kubectl-create"),
            &Managers::default(),
            &json!({}),
            &new,
        );
        assert_eq!(
            fields(&m, "kubectl-create"),
            json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:type": {}})
        );
        assert_eq!(m.entries[0].time.as_deref(), Some("2026-01-01T00:00:00Z"));
        // A label added by another manager: a granular map entry of its own.
        let mut labelled = new.clone();
        labelled["metadata"]["labels"] = json!({"app": "web"});
        let m = update(&ctx(&schema, &none, "kubectl-label"), &m, &new, &labelled);
        assert_eq!(
            fields(&m, "kubectl-label"),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
        );
        assert_eq!(m.entries.len(), 2);
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let schema = Schema::for_kind(Kind::CONFIG_MAP);
        let none = FieldSet::new();
        let v1 = json!({"metadata": {"name": "c"}, "data": {"key": "one"}});
        let m = update(
            &ctx(&schema, &none, "kubectl-create"),
            &Managers::default(),
            &json!({}),
            &v1,
        );
        let v2 = json!({"metadata": {"name": "c"}, "data": {"key": "two", "k2": "x"}});
        let m = update(&ctx(&schema, &none, "kubectl-patch"), &m, &v1, &v2);
        // As kube-apiserver: kubectl-create keeps only the map itself.
        assert_eq!(fields(&m, "kubectl-create"), json!({"f:data": {}}));
        assert_eq!(
            fields(&m, "kubectl-patch"),
            json!({"f:data": {"f:k2": {}, "f:key": {}}})
        );
        // A removed field leaves its owner; an entry left empty goes.
        let v3 = json!({"metadata": {"name": "c"}, "data": {"key": "two"}});
        let m = update(&ctx(&schema, &none, "other"), &m, &v2, &v3);
        assert_eq!(
            fields(&m, "kubectl-patch"),
            json!({"f:data": {"f:key": {}}})
        );
        assert!(m.entries.iter().all(|e| e.manager != "other"));
    }

    #[test]
    fn namespace_status_is_not_recorded() {
        let schema = Schema::for_kind(Kind::NAMESPACE);
        let ignored = reset_fields(Kind::NAMESPACE);
        let new = json!({"metadata": {"name": "n", "labels": {"kubernetes.io/metadata.name": "n"}},
            "spec": {}, "status": {"phase": "Active"}});
        let m = update(
            &ctx(&schema, &ignored, "kubectl-create"),
            &Managers::default(),
            &json!({"spec": {}, "status": {}}),
            &new,
        );
        assert_eq!(
            fields(&m, "kubectl-create"),
            json!({"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}})
        );
    }

    #[test]
    fn apply_owns_the_applied_fields_and_detects_conflicts() {
        let schema = Schema::for_kind(Kind::SECRET);
        let none = FieldSet::new();
        let config = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2", "labels": {"a": "b"}},
            "stringData": {"k": "v"}, "data": {"d": "eA=="}});
        let (obj, m) = apply(
            &ctx(&schema, &none, "kubectl"),
            &Managers::default(),
            &json!({}),
            &config,
            false,
        )
        .unwrap();
        assert_eq!(
            fields(&m, "kubectl"),
            json!({"f:data": {"f:d": {}}, "f:metadata": {"f:labels": {"f:a": {}}}, "f:stringData": {"f:k": {}}})
        );
        assert_eq!(m.entries[0].operation, Operation::Apply);
        assert_eq!(obj["data"]["d"], "eA==");

        let schema = Schema::for_kind(Kind::CONFIG_MAP);
        let v1 = json!({"metadata": {"name": "c"}, "data": {"key": "one"}});
        let m = update(
            &ctx(&schema, &none, "kubectl-create"),
            &Managers::default(),
            &json!({}),
            &v1,
        );
        let v2 = json!({"metadata": {"name": "c"}, "data": {"key": "two", "k2": "x"}});
        let m = update(&ctx(&schema, &none, "kubectl-patch"), &m, &v1, &v2);
        let config = json!({"metadata": {"name": "c"}, "data": {"key": "a", "k2": "b"}});
        let e = apply(&ctx(&schema, &none, "m1"), &m, &v2, &config, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-patch\" using v1:\n- .data.k2\n- .data.key"
        );
        let one = json!({"metadata": {"name": "c"}, "data": {"key": "three"}});
        let e = apply(&ctx(&schema, &none, "m1"), &m, &v2, &one, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.key"
        );
        // The same value is shared ownership, not a conflict.
        let same = json!({"metadata": {"name": "c"}, "data": {"key": "two"}});
        let (_, shared) = apply(&ctx(&schema, &none, "m1"), &m, &v2, &same, false).unwrap();
        assert_eq!(
            fields(&shared, "kubectl-patch"),
            json!({"f:data": {"f:k2": {}, "f:key": {}}})
        );
        // Force takes the field.
        let (obj, forced) = apply(&ctx(&schema, &none, "m1"), &m, &v2, &one, true).unwrap();
        assert_eq!(obj["data"], json!({"key": "three", "k2": "x"}));
        assert_eq!(
            fields(&forced, "kubectl-patch"),
            json!({"f:data": {"f:k2": {}}})
        );
        assert_eq!(fields(&forced, "m1"), json!({"f:data": {"f:key": {}}}));
    }

    #[test]
    fn apply_prunes_what_it_stopped_applying() {
        let schema = Schema::for_kind(Kind::CONFIG_MAP);
        let none = FieldSet::new();
        let c =
            |data: Value| json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": data});
        let (v1, m) = apply(
            &ctx(&schema, &none, "a"),
            &Managers::default(),
            &json!({}),
            &c(json!({"p": "1", "q": "2"})),
            false,
        )
        .unwrap();
        let (v2, m) = apply(
            &ctx(&schema, &none, "a"),
            &m,
            &v1,
            &c(json!({"p": "1"})),
            false,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"p": "1"}));
        let config = json!({"metadata": {"name": "c", "labels": {"x": "y"}}});
        let (v3, m) = apply(&ctx(&schema, &none, "a"), &m, &v2, &config, false).unwrap();
        assert_eq!(v3.get("data"), None, "{v3}");
        assert_eq!(
            fields(&m, "a"),
            json!({"f:metadata": {"f:labels": {"f:x": {}}}})
        );
        // A field another manager also owns stays.
        let v4 = json!({"metadata": {"name": "c", "labels": {"x": "y", "z": "w"}}});
        let m = update(&ctx(&schema, &none, "b"), &m, &v3, &v4);
        let (v5, m) = apply(
            &ctx(&schema, &none, "a"),
            &m,
            &v4,
            &json!({"metadata": {"name": "c", "labels": {"x": "y", "z": "w"}}}),
            false,
        )
        .unwrap();
        let (v6, _) = apply(
            &ctx(&schema, &none, "a"),
            &m,
            &v5,
            &json!({"metadata": {"name": "c"}}),
            false,
        )
        .unwrap();
        assert_eq!(v6["metadata"]["labels"], json!({"z": "w"}));
    }

    #[test]
    fn a_minimal_apply_changes_nothing() {
        let schema = Schema::for_kind(Kind::SECRET);
        let none = FieldSet::new();
        let live = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "uid": "u1", "resourceVersion": "7"}, "data": {"a": "MQ=="}});
        let m = update(
            &ctx(&schema, &none, "kubectl-create"),
            &Managers::default(),
            &json!({}),
            &live,
        );
        let config = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"uid": "u1", "resourceVersion": "7"}});
        let (obj, after) = apply(
            &ctx(&schema, &none, "storage-version-migrator-controller"),
            &m,
            &live,
            &config,
            false,
        )
        .unwrap();
        assert_eq!(obj, live);
        assert_eq!(after, m);
    }

    #[test]
    fn lists_by_key_and_set() {
        let schema = Schema::for_kind(Kind::CONFIG_MAP);
        let none = FieldSet::new();
        let new = json!({"metadata": {"name": "c", "finalizers": ["a/b"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "1"}]}});
        let m = update(
            &ctx(&schema, &none, "m"),
            &Managers::default(),
            &json!({}),
            &new,
        );
        let got = fields(&m, "m");
        assert_eq!(
            got,
            json!({"f:metadata": {
                "f:finalizers": {".": {}, "v:\"a/b\"": {}},
                "f:ownerReferences": {".": {}, "k:{\"uid\":\"1\"}": {
                    ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}}}})
        );
        // Round trip through FieldsV1.
        assert_eq!(FieldSet::from_fields_v1(&got).unwrap().to_fields_v1(), got);
        let paths: Vec<String> = FieldSet::from_fields_v1(&got)
            .unwrap()
            .paths()
            .iter()
            .map(|p| path_string(p))
            .collect();
        assert!(
            paths.contains(&".metadata.ownerReferences[uid=\"1\"].name".to_string()),
            "{paths:?}"
        );
    }

    #[test]
    fn custom_resources_from_the_schema_or_deduced() {
        let none = FieldSet::new();
        let new = json!({"apiVersion": "e.com/v1", "kind": "Foo", "metadata": {"name": "f"},
            "spec": {"a": 1, "l": [1, 2]}});
        let deduced = Schema::for_custom(None);
        let m = update(
            &ctx(&deduced, &none, "m"),
            &Managers::default(),
            &json!({}),
            &new,
        );
        assert_eq!(
            fields(&m, "m"),
            json!({"f:spec": {".": {}, "f:a": {}, "f:l": {}}})
        );
        let openapi = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "a": {"type": "integer"}, "l": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "integer"}}}}}});
        let typed = Schema::for_custom(Some(&openapi));
        let set = to_field_set(&typed, &new).difference(&stripped_fields());
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:a": {}, "f:l": {"v:1": {}, "v:2": {}}}})
        );
    }

    #[test]
    fn managers_round_trip_and_sort() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "b", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}},
            {"manager": "a", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:type": {}}},
            {"manager": "z", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-02T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:x": {}}}
        ]}});
        let m = Managers::decode(&object).unwrap();
        let list = m.encode().unwrap();
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["z", "a", "b"]);
        assert!(
            Managers::decode(&json!({"metadata": {"managedFields": [{"operation": "Nope"}]}}))
                .is_err()
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
    }

    #[test]
    fn duplicate_items_are_refused() {
        let schema = Schema::for_kind(Kind::SECRET);
        let none = FieldSet::new();
        let config = json!({"metadata": {"name": "s", "finalizers": ["a", "a"]}});
        let e = apply(
            &ctx(&schema, &none, "m"),
            &Managers::default(),
            &json!({}),
            &config,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ApplyError::Invalid(
                "the configuration lists .metadata.finalizers[=\"a\"] more than once".into()
            )
        );
        let config = json!({"metadata": {"name": "s", "finalizers": [{"a": 1}]}});
        let e = apply(
            &ctx(&schema, &none, "m"),
            &Managers::default(),
            &json!({}),
            &config,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ApplyError::Invalid(
                "the configuration lists .metadata.finalizers[0] as an item its list type cannot identify".into()
            )
        );
    }

    #[test]
    fn apply_configs_are_yaml_or_json() {
        let v =
            parse_apply_config(b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"1\"\n").unwrap();
        assert_eq!(v["data"]["a"], "1");
        let v = parse_apply_config(br#"{"apiVersion":"v1","kind":"Secret"}"#).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert!(parse_apply_config(b"- a\n- b\n").is_err());
        assert!(parse_apply_config(b"a: 1\na: 2\n").is_err());
        assert!(parse_apply_config(b"a: [").is_err());
    }

    #[test]
    fn manager_names_from_user_agents() {
        assert_eq!(
            manager_from_user_agent("kubectl-create/v1.32.4 (linux/amd64) kubernetes/4cb5f07"),
            "kubectl-create"
        );
        assert_eq!(manager_from_user_agent(""), "");
        assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
    }
}

#[cfg(test)]
mod proptests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn element() -> impl Strategy<Value = PathElement> {
        prop_oneof![
            "[a-c]{1,2}".prop_map(PathElement::Field),
            "[a-c]".prop_map(|v| PathElement::Value(Value::String(v))),
            "[a-c]".prop_map(|k| PathElement::Key(vec![("uid".into(), Value::String(k))])),
            (0usize..3).prop_map(PathElement::Index),
        ]
    }

    fn set() -> impl Strategy<Value = FieldSet> {
        prop::collection::vec(prop::collection::vec(element(), 1..4), 0..8).prop_map(|paths| {
            let mut s = FieldSet::new();
            for p in paths {
                s.insert(&p);
            }
            s
        })
    }

    proptest! {
        #[test]
        fn fields_v1_round_trips(a in set()) {
            let text = a.to_fields_v1();
            prop_assert_eq!(FieldSet::from_fields_v1(&text).unwrap(), a);
        }

        #[test]
        fn set_algebra(a in set(), b in set()) {
            let u = a.union(&b);
            for p in a.paths().iter().chain(b.paths().iter()) {
                prop_assert!(u.has(p));
            }
            let d = a.difference(&b);
            for p in d.paths() {
                prop_assert!(a.has(&p) && !b.has(&p));
            }
            let i = a.intersection(&b);
            for p in i.paths() {
                prop_assert!(a.has(&p) && b.has(&p));
            }
            prop_assert_eq!(u.difference(&b), d);
            for p in a.recursive_difference(&b).paths() {
                prop_assert!((1..=p.len()).all(|n| !b.has(&p[..n])));
            }
        }
    }
}
