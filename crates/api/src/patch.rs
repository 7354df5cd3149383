//! PATCH bodies applied to objects, as kube-apiserver applies them.
//!
//! Objects and patches are [`serde_json::Value`]s in the Kubernetes JSON API
//! shape (see [`crate::codec`]). Everything here is pure: the caller parses
//! the request, picks the [`PatchType`] from its `Content-Type`, checks it
//! against [`Kind::supports`], and stores what [`apply_patch`]
//! returns after the usual validation (name/namespace must not change, field
//! validation, ...).
//!
//! # Supported
//!
//! - `application/merge-patch+json`: RFC 7386 ([`apply_merge_patch`]).
//! - `application/json-patch+json`: RFC 6902 ([`apply_json_patch`]): `add`,
//!   `remove`, `replace`, `move`, `copy`, `test`, `~0`/`~1` escapes, `-` to
//!   append; at most [`MAX_JSON_PATCH_OPERATIONS`] operations, as upstream.
//! - `application/strategic-merge-patch+json` for built-in kinds
//!   ([`apply_strategic_merge_patch`]): maps merge (null deletes); lists are
//!   replaced except `metadata.finalizers` (set merge) and
//!   `metadata.ownerReferences` (merge by `uid`), as the `patchStrategy` tags
//!   of `ObjectMeta` say. Namespace `spec.finalizers` has no tag and is
//!   replaced. Directives: `$patch: replace|delete` on maps and in merging
//!   lists of maps, `$retainKeys`, `$setElementOrder/<field>`,
//!   `$deleteFromPrimitiveList/<field>`, with upstream's ordering rules
//!   (patch order first, then the live order).
//!
//! # Not supported
//!
//! - `application/apply-patch+yaml` (server-side apply) needs the object's
//!   managed fields: [`crate::managed::apply`] does it, and [`apply_patch`]
//!   refuses it ([`PatchError::ApplyPatchUnsupported`]).
//! - Strategic merge patch of custom resources: refused, as upstream does
//!   (415); [`Kind::supports`] says so before the body is read.
//! - evanphx/json-patch's negative array indices (a Go extension to RFC 6902).
//! - Where upstream copies a strategic patch value verbatim into a field the
//!   object does not have yet, directives and nulls inside it are processed
//!   here against an empty value instead (upstream would store `$patch` keys
//!   as data and fail later).

use serde_json::{Map, Value};

use crate::kind::Kind;

/// Upstream's limit on the number of operations in one JSON patch
/// (`maxJSONPatchOperations` in the apiserver's patch handler).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch formats kube-apiserver accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    JsonPatch,
    /// `application/merge-patch+json` (RFC 7386).
    MergePatch,
    /// `application/strategic-merge-patch+json`.
    StrategicMergePatch,
    /// `application/apply-patch+yaml` (server-side apply, see `crate::managed`).
    ApplyPatch,
}

impl PatchType {
    /// Every patch type, in upstream's order of the 415 message.
    pub const ALL: [PatchType; 4] = [
        PatchType::JsonPatch,
        PatchType::MergePatch,
        PatchType::StrategicMergePatch,
        PatchType::ApplyPatch,
    ];

    /// The patch type of a `Content-Type` header value; parameters such as
    /// `; charset=utf-8` are ignored and the media type is matched
    /// case-insensitively. `None` for anything else (upstream answers 415).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        PatchType::ALL
            .into_iter()
            .find(|patch_type| media_type.eq_ignore_ascii_case(patch_type.content_type()))
    }

    /// The media type, e.g. `application/merge-patch+json`.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::JsonPatch => "application/json-patch+json",
            PatchType::MergePatch => "application/merge-patch+json",
            PatchType::StrategicMergePatch => "application/strategic-merge-patch+json",
            PatchType::ApplyPatch => "application/apply-patch+yaml",
        }
    }
}

impl Kind {
    /// Whether upstream accepts `patch_type` for this kind.
    pub fn supports(self, patch_type: PatchType) -> bool {
        self.patch_types().contains(&patch_type)
    }

    /// Upstream's 415 `Status.message` for a patch `Content-Type` this kind
    /// does not accept: `the body of the request was in an unknown format -
    /// accepted media types include: application/json-patch+json, ...`.
    pub fn unsupported_media_type_message(self) -> String {
        let accepted: Vec<&str> = self
            .patch_types()
            .iter()
            .map(|patch_type| patch_type.content_type())
            .collect();
        format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        )
    }
}

/// Why a patch could not be applied. Messages name the place (JSON pointer,
/// field path, operation index), never a value from the object or patch,
/// since those may be secret data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The `Content-Type` is not a patch type this kind accepts (415).
    #[error("{message}")]
    UnsupportedMediaType {
        /// Upstream's message listing the accepted media types.
        message: String,
    },
    /// An apply patch is not a patch of the object alone: the server applies it with the
    /// object's managed fields (`crate::managed::apply`).
    #[error("an apply patch (application/apply-patch+yaml) is applied with the object's managed fields, not as a patch")]
    ApplyPatchUnsupported,
    /// The body is not JSON; `detail` is the parser's position message.
    #[error("invalid JSON in patch body: {detail}")]
    InvalidJson {
        /// Where the JSON broke (no content from the body).
        detail: String,
    },
    /// A merge or strategic merge patch body is not a JSON object.
    #[error("patch body must be a JSON object")]
    PatchNotAnObject,
    /// A JSON patch body is not a JSON array of operations.
    #[error("json patch body must be a JSON array of operations")]
    JsonPatchNotAnArray,
    /// More than [`MAX_JSON_PATCH_OPERATIONS`] operations (413 upstream).
    #[error("The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {count}")]
    TooManyOperations {
        /// How many operations the body held.
        count: usize,
    },
    /// A JSON patch operation is malformed (missing `op`/`path`/`value`/
    /// `from`, unknown `op`, bad pointer syntax).
    #[error("json patch operation {index}: {reason}")]
    InvalidOperation {
        /// Zero-based index of the operation in the patch.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON patch operation does not apply to the document (422 upstream).
    #[error("json patch operation {index} ({op} {path}): {reason}")]
    OperationFailed {
        /// Zero-based index of the operation in the patch.
        index: usize,
        /// The operation name, e.g. `remove`.
        op: String,
        /// The JSON pointer that failed (`path`, or `from` for move/copy).
        path: String,
        /// Why, e.g. `path not found`.
        reason: &'static str,
    },
    /// A JSON patch `test` operation found a different value (422 upstream).
    #[error("json patch operation {index}: test failed at {path}")]
    TestFailed {
        /// Zero-based index of the operation in the patch.
        index: usize,
        /// The tested JSON pointer.
        path: String,
    },
    /// A strategic merge patch directive is malformed or misplaced.
    #[error("strategic merge patch at {path}: {reason}")]
    InvalidDirective {
        /// Field path of the map holding the directive (`.` for the root).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `$`-key that is not a strategic merge patch directive.
    #[error("strategic merge patch at {path}: unknown directive {key:?}")]
    UnknownDirective {
        /// Field path of the map holding the key.
        path: String,
        /// The key, e.g. `$foo`.
        key: String,
    },
    /// A list cannot be merged as the patch asks (missing merge key, mixed
    /// element types, list of lists).
    #[error("strategic merge patch at {path}: {reason}")]
    InvalidList {
        /// Field path of the list.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The original object or the patch result is not a JSON object.
    #[error("patched object must be a JSON object")]
    ResultNotAnObject,
}

impl PatchError {
    /// The HTTP status upstream answers with: 415 for an unaccepted patch
    /// type, 413 for too many operations, 422 when a well-formed JSON patch
    /// does not apply, 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::UnsupportedMediaType { .. } | PatchError::ApplyPatchUnsupported => 415,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::OperationFailed { .. } | PatchError::TestFailed { .. } => 422,
            _ => 400,
        }
    }
}

/// Applies a PATCH `body` of `patch_type` to `original` (an object of `kind`).
///
/// Refuses patch types `kind` does not accept ([`PatchError::UnsupportedMediaType`],
/// e.g. strategic merge of a custom resource) and apply patches
/// ([`PatchError::ApplyPatchUnsupported`]). The result is always a JSON object.
pub fn apply_patch(
    original: &Value,
    patch_type: PatchType,
    kind: Kind,
    body: &[u8],
) -> Result<Value, PatchError> {
    if !kind.supports(patch_type) {
        return Err(PatchError::UnsupportedMediaType {
            message: kind.unsupported_media_type_message(),
        });
    }
    if patch_type == PatchType::ApplyPatch {
        return Err(PatchError::ApplyPatchUnsupported);
    }
    if !original.is_object() {
        return Err(PatchError::ResultNotAnObject);
    }
    let patch: Value = serde_json::from_slice(body).map_err(|error| PatchError::InvalidJson {
        // serde_json's syntax errors carry only a category and position
        // when parsing into `Value`, so no body content leaks.
        detail: error.to_string(),
    })?;
    let patched = match patch_type {
        PatchType::JsonPatch => apply_json_patch(original, &patch)?,
        PatchType::MergePatch => {
            if !patch.is_object() {
                return Err(PatchError::PatchNotAnObject);
            }
            apply_merge_patch(original, &patch)
        }
        PatchType::StrategicMergePatch => apply_strategic_merge_patch(original, &patch)?,
        PatchType::ApplyPatch => return Err(PatchError::ApplyPatchUnsupported),
    };
    if patched.is_object() {
        Ok(patched)
    } else {
        Err(PatchError::ResultNotAnObject)
    }
}

// ---------------------------------------------------------------------------
// RFC 7386 JSON merge patch

/// RFC 7386 `MergePatch(target, patch)`: objects merge recursively, `null`
/// removes a member, anything else (arrays included) replaces.
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let mut result = target.clone();
    merge_patch_in_place(&mut result, patch);
    result
}

fn merge_patch_in_place(target: &mut Value, patch: &Value) {
    let Value::Object(patch_members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_members) = target {
        for (key, patch_value) in patch_members {
            if patch_value.is_null() {
                target_members.remove(key);
            } else {
                let slot = target_members.entry(key.clone()).or_insert(Value::Null);
                merge_patch_in_place(slot, patch_value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// RFC 6902 JSON patch

/// Applies an RFC 6902 JSON patch (`operations` must be an array) to
/// `document`. Operations apply in order to a copy; the first failure aborts
/// the whole patch.
pub fn apply_json_patch(document: &Value, operations: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = operations else {
        return Err(PatchError::JsonPatchNotAnArray);
    };
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
        });
    }
    let mut document = document.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_json_patch_operation(&mut document, index, operation)?;
    }
    Ok(document)
}

/// Why one pointer-addressed step failed.
#[derive(Debug, Clone, Copy)]
enum PointerFailure {
    NotFound,
    IndexOutOfRange,
    InvalidIndex,
    NotAContainer,
}

impl PointerFailure {
    fn reason(self) -> &'static str {
        match self {
            PointerFailure::NotFound => "path not found",
            PointerFailure::IndexOutOfRange => "array index out of range",
            PointerFailure::InvalidIndex => "invalid array index",
            PointerFailure::NotAContainer => "parent is neither an object nor an array",
        }
    }
}

fn apply_json_patch_operation(
    document: &mut Value,
    index: usize,
    operation: &Value,
) -> Result<(), PatchError> {
    let invalid = |reason: String| PatchError::InvalidOperation { index, reason };
    let Value::Object(fields) = operation else {
        return Err(invalid("operation must be a JSON object".to_owned()));
    };
    let string_field = |name: &str| -> Result<&str, PatchError> {
        match fields.get(name) {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(invalid(format!("{name:?} must be a string"))),
            None => Err(invalid(format!("missing {name:?}"))),
        }
    };
    let op = string_field("op")?;
    let path_text = string_field("path")?;
    let path = parse_pointer(path_text)
        .ok_or_else(|| invalid(format!("invalid JSON pointer in \"path\": {path_text:?}")))?;
    let value = || {
        fields
            .get("value")
            .cloned()
            .ok_or_else(|| invalid(format!("missing \"value\" for {op:?}")))
    };
    let from = || -> Result<(String, Vec<String>), PatchError> {
        let from_text = string_field("from")?;
        let from = parse_pointer(from_text)
            .ok_or_else(|| invalid(format!("invalid JSON pointer in \"from\": {from_text:?}")))?;
        Ok((from_text.to_owned(), from))
    };
    let failed = |at: &str, failure: PointerFailure| PatchError::OperationFailed {
        index,
        op: op.to_owned(),
        path: at.to_owned(),
        reason: failure.reason(),
    };
    match op {
        "add" => {
            let value = value()?;
            pointer_add(document, &path, value).map_err(|failure| failed(path_text, failure))
        }
        "remove" => pointer_remove(document, &path)
            .map(drop)
            .map_err(|failure| failed(path_text, failure)),
        "replace" => {
            let value = value()?;
            let target =
                pointer_get_mut(document, &path).map_err(|failure| failed(path_text, failure))?;
            *target = value;
            Ok(())
        }
        "move" => {
            let (from_text, from) = from()?;
            if from == path {
                return Ok(());
            }
            if path.len() > from.len() && path.starts_with(&from) {
                return Err(PatchError::OperationFailed {
                    index,
                    op: op.to_owned(),
                    path: path_text.to_owned(),
                    reason: "cannot move a value into one of its children",
                });
            }
            let moved =
                pointer_remove(document, &from).map_err(|failure| failed(&from_text, failure))?;
            pointer_add(document, &path, moved).map_err(|failure| failed(path_text, failure))
        }
        "copy" => {
            let (from_text, from) = from()?;
            let copied = pointer_get_mut(document, &from)
                .map_err(|failure| failed(&from_text, failure))?
                .clone();
            pointer_add(document, &path, copied).map_err(|failure| failed(path_text, failure))
        }
        "test" => {
            let expected = value()?;
            let actual =
                pointer_get_mut(document, &path).map_err(|failure| failed(path_text, failure))?;
            if json_equal(actual, &expected) {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    index,
                    path: path_text.to_owned(),
                })
            }
        }
        _ => Err(invalid(format!("unknown op {op:?}"))),
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens; `None` if it
/// is not a valid pointer (no leading `/`, `~` not followed by `0` or `1`).
fn parse_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').map(unescape_token).collect()
}

fn unescape_token(token: &str) -> Option<String> {
    let mut unescaped = String::with_capacity(token.len());
    let mut characters = token.chars();
    while let Some(character) = characters.next() {
        if character == '~' {
            match characters.next() {
                Some('0') => unescaped.push('~'),
                Some('1') => unescaped.push('/'),
                _ => return None,
            }
        } else {
            unescaped.push(character);
        }
    }
    Some(unescaped)
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn parse_array_index(token: &str) -> Result<usize, PointerFailure> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|byte| byte.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(PointerFailure::InvalidIndex);
    }
    token
        .parse::<usize>()
        .map_err(|_| PointerFailure::IndexOutOfRange)
}

fn pointer_get_mut<'a>(
    document: &'a mut Value,
    tokens: &[String],
) -> Result<&'a mut Value, PointerFailure> {
    let mut current = document;
    for token in tokens {
        current = match current {
            Value::Object(members) => members.get_mut(token).ok_or(PointerFailure::NotFound)?,
            Value::Array(elements) => {
                if token == "-" {
                    return Err(PointerFailure::IndexOutOfRange);
                }
                let position = parse_array_index(token)?;
                elements
                    .get_mut(position)
                    .ok_or(PointerFailure::IndexOutOfRange)?
            }
            _ => return Err(PointerFailure::NotFound),
        };
    }
    Ok(current)
}

fn pointer_add(
    document: &mut Value,
    tokens: &[String],
    value: Value,
) -> Result<(), PointerFailure> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match pointer_get_mut(document, parent_tokens)? {
        Value::Object(members) => {
            members.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(elements) => {
            if last == "-" {
                elements.push(value);
                return Ok(());
            }
            let position = parse_array_index(last)?;
            if position > elements.len() {
                return Err(PointerFailure::IndexOutOfRange);
            }
            elements.insert(position, value);
            Ok(())
        }
        _ => Err(PointerFailure::NotAContainer),
    }
}

fn pointer_remove(document: &mut Value, tokens: &[String]) -> Result<Value, PointerFailure> {
    // Removing the whole document is not meaningful for an API object.
    let (last, parent_tokens) = tokens.split_last().ok_or(PointerFailure::NotFound)?;
    match pointer_get_mut(document, parent_tokens)? {
        Value::Object(members) => members.remove(last).ok_or(PointerFailure::NotFound),
        Value::Array(elements) => {
            if last == "-" {
                return Err(PointerFailure::IndexOutOfRange);
            }
            let position = parse_array_index(last)?;
            if position >= elements.len() {
                return Err(PointerFailure::IndexOutOfRange);
            }
            Ok(elements.remove(position))
        }
        _ => Err(PointerFailure::NotAContainer),
    }
}

/// RFC 6902 §4.6 equality: numbers compare by value (`1` equals `1.0`),
/// objects regardless of member order, arrays element-wise.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            left == right
                || match (left.as_f64(), right.as_f64()) {
                    (Some(left), Some(right)) => left == right,
                    _ => false,
                }
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| json_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, left)| right.get(key).is_some_and(|right| json_equal(left, right)))
        }
        _ => left == right,
    }
}

// ---------------------------------------------------------------------------
// Kubernetes strategic merge patch

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// How a list field merges, from the Go type's `patchStrategy` /
/// `patchMergeKey` tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No tag: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: set union.
    MergeScalars,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
    MergeByKey(&'static str),
}

/// The list strategy of the field at `path` (map keys from the object root).
/// Only `ObjectMeta` has tagged lists among the kinds served; Secret,
/// ConfigMap, Namespace (`spec.finalizers` is untagged) and
/// CustomResourceDefinition lists are replaced.
fn list_strategy(path: &[String]) -> ListStrategy {
    match path {
        [metadata, field] if metadata == "metadata" => match field.as_str() {
            "finalizers" => ListStrategy::MergeScalars,
            "ownerReferences" => ListStrategy::MergeByKey("uid"),
            _ => ListStrategy::Replace,
        },
        _ => ListStrategy::Replace,
    }
}

fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.join(".")
    }
}

fn invalid_directive(path: &[String], reason: impl Into<String>) -> PatchError {
    PatchError::InvalidDirective {
        path: display_path(path),
        reason: reason.into(),
    }
}

fn invalid_list(path: &[String], reason: impl Into<String>) -> PatchError {
    PatchError::InvalidList {
        path: display_path(path),
        reason: reason.into(),
    }
}

/// Applies a Kubernetes strategic merge patch to a built-in object
/// (`StrategicMergeMapPatch` with kube-apiserver's options: null values the
/// original lacks are dropped, `$deleteFromPrimitiveList` lists are applied).
///
/// Both `original` and `patch` must be JSON objects. Custom resources must
/// not come here (see [`Kind::supports`]).
pub fn apply_strategic_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
        return Err(if patch.is_object() {
            PatchError::ResultNotAnObject
        } else {
            PatchError::PatchNotAnObject
        });
    };
    let mut path = Vec::new();
    merge_map(original.clone(), patch.clone(), &mut path).map(Value::Object)
}

/// `mergeMap`: merges `patch` into `original` (the map at `path`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            // Upstream returns the rest of the patch as the new map; merging
            // it into nothing also drops its nulls and applies nested
            // directives.
            Some("replace") => merge_map(Map::new(), patch, path),
            Some("delete") => Ok(Map::new()),
            _ => Err(invalid_directive(
                path,
                "$patch in a map must be \"replace\" or \"delete\"",
            )),
        };
    }

    if let Some(retain_keys) = patch.remove(RETAIN_KEYS_DIRECTIVE) {
        apply_retain_keys(&mut original, &patch, &retain_keys, path)?;
    }

    let order_keys: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for order_key in order_keys {
        let order = patch.remove(&order_key).unwrap_or(Value::Null);
        let field = &order_key[SET_ELEMENT_ORDER_PREFIX.len()..];
        apply_set_element_order(&mut original, &mut patch, field, order, path)?;
    }

    let mut deletion_lists = Vec::new();
    for (key, patch_value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            if field.is_empty() {
                return Err(invalid_directive(
                    path,
                    "$deleteFromPrimitiveList needs a field name",
                ));
            }
            deletion_lists.push((field.to_owned(), patch_value));
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::UnknownDirective {
                path: display_path(path),
                key,
            });
        }
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        path.push(key.clone());
        let merged = match original.remove(&key) {
            Some(Value::Object(original_members)) if patch_value.is_object() => {
                let Value::Object(patch_members) = patch_value else {
                    unreachable!("checked by the guard")
                };
                Value::Object(merge_map(original_members, patch_members, path)?)
            }
            Some(Value::Array(original_elements)) if patch_value.is_array() => {
                let Value::Array(patch_elements) = patch_value else {
                    unreachable!("checked by the guard")
                };
                merge_list_field(original_elements, patch_elements, path)?
            }
            // Absent, or of a different JSON type: the patch value is taken,
            // with its own nulls and directives resolved.
            _ => fresh_value(patch_value, path)?,
        };
        path.pop();
        original.insert(key, merged);
    }

    for (field, to_delete) in deletion_lists {
        let Value::Array(to_delete) = to_delete else {
            return Err(invalid_directive(
                path,
                format!("$deleteFromPrimitiveList/{field} must be a list"),
            ));
        };
        if let Some(Value::Array(elements)) = original.get_mut(&field) {
            path.push(field.clone());
            if list_strategy(path) != ListStrategy::MergeScalars {
                let error = invalid_directive(
                    path,
                    "$deleteFromPrimitiveList applies only to merging lists of scalars",
                );
                return Err(error);
            }
            path.pop();
            elements.retain(|element| !to_delete.contains(element));
        }
    }
    Ok(original)
}

/// A patch value for a field the original does not have (or has with
/// another JSON type).
fn fresh_value(patch_value: Value, path: &mut Vec<String>) -> Result<Value, PatchError> {
    match patch_value {
        Value::Object(members) => Ok(Value::Object(merge_map(Map::new(), members, path)?)),
        Value::Array(elements) => merge_list_field(Vec::new(), elements, path),
        scalar => Ok(scalar),
    }
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain_keys: &Value,
    path: &[String],
) -> Result<(), PatchError> {
    let Value::Array(retain_keys) = retain_keys else {
        return Err(invalid_directive(path, "$retainKeys must be a list"));
    };
    let retained: Vec<&str> = retain_keys.iter().filter_map(Value::as_str).collect();
    if retained.len() != retain_keys.len() {
        return Err(invalid_directive(path, "$retainKeys must list strings"));
    }
    for (key, value) in patch {
        let exempt = value.is_null()
            || key == DIRECTIVE_MARKER
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX);
        if !exempt && !retained.contains(&key.as_str()) {
            return Err(invalid_directive(
                path,
                format!("field {key:?} is in the patch but not in $retainKeys"),
            ));
        }
    }
    original.retain(|key, _| retained.contains(&key.as_str()));
    Ok(())
}

/// `mergePatchIntoOriginal` for one `$setElementOrder/<field>`: merges the
/// field's patch list (if any) and orders the result by the directive, then
/// the live order.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: Value,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    if field.is_empty() {
        return Err(invalid_directive(
            path,
            "$setElementOrder needs a field name",
        ));
    }
    let Value::Array(order) = order else {
        return Err(invalid_directive(
            path,
            format!("$setElementOrder/{field} must be a list"),
        ));
    };
    path.push(field.to_owned());
    let original_list = match original.get(field) {
        None => None,
        Some(Value::Array(elements)) => Some(elements.clone()),
        Some(_) => return Err(invalid_list(path, "the live value is not a list")),
    };
    let patch_list = match patch.remove(field) {
        None => None,
        Some(Value::Array(elements)) => Some(elements),
        Some(_) => return Err(invalid_list(path, "the patch value is not a list")),
    };
    let strategy = list_strategy(path);
    let merge_key = match strategy {
        ListStrategy::MergeByKey(key) => Some(key),
        _ => None,
    };
    if let Some(patch_list) = &patch_list {
        validate_patch_against_order(patch_list, &order, merge_key, path)?;
    }
    let merged = match (&original_list, patch_list) {
        (None, None) => {
            path.pop();
            return Ok(());
        }
        (Some(original_list), None) => original_list.clone(),
        (None, Some(patch_list)) => patch_list,
        (Some(original_list), Some(patch_list)) => {
            match merge_list_field(original_list.clone(), patch_list, path)? {
                Value::Array(merged) => merged,
                other => {
                    path.pop();
                    original.insert(field.to_owned(), other);
                    return Ok(());
                }
            }
        }
    };
    let server_order = original_list.unwrap_or_default();
    let (patch_items, server_only) = partition_by_presence(merged, &order, merge_key);
    let ordered =
        normalize_element_order(patch_items, server_only, &order, &server_order, merge_key);
    path.pop();
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch list's items (deletions aside)
/// must appear in the directive's list, in the same relative order.
fn validate_patch_against_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &[String],
) -> Result<(), PatchError> {
    let kept: Vec<&Value> = patch_list
        .iter()
        .filter(|item| !has_directive(item))
        .collect();
    let mut patch_index = 0;
    let mut order_index = 0;
    while patch_index < kept.len() && order_index < order.len() {
        if same_item(kept[patch_index], &order[order_index], merge_key) {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < kept.len() {
        return Err(invalid_directive(
            path,
            "the order in the patch list does not match its $setElementOrder list",
        ));
    }
    Ok(())
}

fn has_directive(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|members| members.contains_key(DIRECTIVE_MARKER))
}

/// Upstream's `index` equality: scalars by value, objects by merge key.
fn same_item(left: &Value, right: &Value, merge_key: Option<&str>) -> bool {
    match merge_key {
        None => left == right,
        Some(key) => left.get(key) == right.get(key),
    }
}

fn position_in(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    list.iter()
        .position(|candidate| same_item(item, candidate, merge_key))
}

/// Merges a list field by its strategy (`mergeSliceHandler`).
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    path: &mut Vec<String>,
) -> Result<Value, PatchError> {
    match list_strategy(path) {
        ListStrategy::Replace => Ok(Value::Array(patch)),
        ListStrategy::MergeScalars => merge_list(original, patch, None, path).map(Value::Array),
        ListStrategy::MergeByKey(key) => {
            merge_list(original, patch, Some(key), path).map(Value::Array)
        }
    }
}

/// JSON type names as Go's `reflect.TypeOf` tells the decoded values apart.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// `mergeSlice`: merges a list with `patchStrategy:"merge"`.
fn merge_list(
    mut original: Vec<Value>,
    mut patch: Vec<Value>,
    merge_key: Option<&'static str>,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let mut element_type = None;
    for element in original.iter().chain(&patch) {
        let this_type = json_type(element);
        if this_type == "list" {
            return Err(invalid_list(path, "lists of lists cannot be merged"));
        }
        match element_type {
            None => element_type = Some(this_type),
            Some(seen) if seen != this_type => {
                return Err(invalid_list(path, "list element types are not identical"));
            }
            Some(_) => {}
        }
    }

    let merged = if element_type != Some("map") {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for element in original.iter().chain(&patch) {
            if !merged.contains(element) {
                merged.push(element.clone());
            }
        }
        merged
    } else {
        let Some(key) = merge_key else {
            return Err(invalid_list(path, "cannot merge lists without merge key"));
        };
        // `mergeSliceWithSpecialElements`.
        let mut plain_patch = Vec::with_capacity(patch.len());
        let mut replace = false;
        for element in patch {
            let directive = element.get(DIRECTIVE_MARKER).cloned();
            match directive {
                None => plain_patch.push(element),
                Some(Value::String(directive)) if directive == "delete" => {
                    let Some(key_value) = element.get(key) else {
                        return Err(invalid_list(
                            path,
                            format!("$patch: delete element has no merge key {key:?}"),
                        ));
                    };
                    original.retain(|item| item.get(key) != Some(key_value));
                }
                Some(Value::String(directive)) if directive == "replace" => replace = true,
                Some(Value::String(directive)) if directive == "merge" => {
                    return Err(invalid_directive(
                        path,
                        "merging lists cannot yet be specified in the patch",
                    ));
                }
                Some(_) => {
                    return Err(invalid_directive(
                        path,
                        "$patch in a list element must be \"replace\" or \"delete\"",
                    ));
                }
            }
        }
        if replace {
            original = plain_patch;
            patch = Vec::new();
        } else {
            patch = plain_patch;
        }
        // `mergeSliceWithoutSpecialElements`.
        for element in &patch {
            let Some(key_value) = element.get(key) else {
                return Err(invalid_list(
                    path,
                    format!("an element has no merge key {key:?}"),
                ));
            };
            let existing = original
                .iter()
                .position(|item| item.get(key) == Some(key_value));
            let Value::Object(element_members) = element.clone() else {
                unreachable!("element types were checked to be maps")
            };
            match existing {
                Some(position) => {
                    let Value::Object(original_members) = std::mem::take(&mut original[position])
                    else {
                        unreachable!("element types were checked to be maps")
                    };
                    original[position] =
                        Value::Object(merge_map(original_members, element_members, path)?);
                }
                None => original.push(Value::Object(merge_map(Map::new(), element_members, path)?)),
            }
        }
        if original.iter().any(|item| item.get(key).is_none()) {
            return Err(invalid_list(
                path,
                format!("an element has no merge key {key:?}"),
            ));
        }
        original.clone()
    };

    let (patch_items, server_only) = partition_by_presence(merged, &patch, merge_key);
    Ok(normalize_element_order(
        patch_items,
        server_only,
        &patch,
        &original,
        merge_key,
    ))
}

/// Splits `items` into those present in `present_in` and the rest.
fn partition_by_presence(
    items: Vec<Value>,
    present_in: &[Value],
    merge_key: Option<&str>,
) -> (Vec<Value>, Vec<Value>) {
    items
        .into_iter()
        .partition(|item| position_in(present_in, item, merge_key).is_some())
}

/// `normalizeElementOrder`: patch items in patch order, server-only items in
/// live order, then interleaved by the live order (`mergeSortedSlice`).
fn normalize_element_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    sort_by_order(&mut patch_items, patch_order, merge_key);
    sort_by_order(&mut server_only, server_order, merge_key);

    let mut merged = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(left_item), Some(right_item)) => {
                match (
                    position_in(server_order, left_item, merge_key),
                    position_in(server_order, right_item, merge_key),
                ) {
                    (Some(left_position), Some(right_position)) => left_position < right_position,
                    // Upstream puts the patch item first when either side is
                    // not in the live list.
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        merged.extend(next);
    }
    merged
}

/// Stable sort by position in `order`; items absent from it go last (every
/// caller passes items that are all present).
fn sort_by_order(items: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    items.sort_by_key(|item| position_in(order, item, merge_key).unwrap_or(usize::MAX));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(target: Value, patch: Value) -> Value {
        apply_merge_patch(&target, &patch)
    }

    #[test]
    fn rfc7386_appendix_a_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merge(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn rfc7386_section3_example() {
        let target = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        assert_eq!(
            merge(target, patch),
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    fn json_patch(document: Value, operations: Value) -> Result<Value, PatchError> {
        apply_json_patch(&document, &operations)
    }

    #[test]
    fn rfc6902_appendix_a_successes() {
        let cases = [
            // A.1 add an object member
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"baz":"qux","foo":"bar"}),
            ),
            // A.2 add an array element
            (
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}]),
                json!({"foo":["bar","qux","baz"]}),
            ),
            // A.3 remove an object member
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}]),
                json!({"foo":"bar"}),
            ),
            // A.4 remove an array element
            (
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}]),
                json!({"foo":["bar","baz"]}),
            ),
            // A.5 replace a value
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}]),
                json!({"baz":"boo","foo":"bar"}),
            ),
            // A.6 move a value
            (
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
                json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
            ),
            // A.7 move an array element
            (
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
                json!({"foo":["all","cows","eat","grass"]}),
            ),
            // A.8 test a value: success
            (
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([
                    {"op":"test","path":"/baz","value":"qux"},
                    {"op":"test","path":"/foo/1","value":2}
                ]),
                json!({"baz":"qux","foo":["a",2,"c"]}),
            ),
            // A.10 add a nested member object
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
                json!({"foo":"bar","child":{"grandchild":{}}}),
            ),
            // A.11 ignore unrecognised members
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux","xyz":123}]),
                json!({"foo":"bar","baz":"qux"}),
            ),
            // A.14 ~ escape ordering
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}]),
                json!({"/":9,"~1":10}),
            ),
            // A.16 add an array value
            (
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
                json!({"foo":["bar",["abc","def"]]}),
            ),
            // copy, and ~1 in a path
            (
                json!({"a/b":{"c":1}}),
                json!([{"op":"copy","from":"/a~1b","path":"/d"}]),
                json!({"a/b":{"c":1},"d":{"c":1}}),
            ),
            // test compares numbers by value
            (
                json!({"n":1}),
                json!([{"op":"test","path":"/n","value":1.0}]),
                json!({"n":1}),
            ),
            // the empty pointer is the whole document
            (
                json!({"a":1}),
                json!([{"op":"replace","path":"","value":{"b":2}}]),
                json!({"b":2}),
            ),
        ];
        for (document, operations, expected) in cases {
            assert_eq!(
                json_patch(document.clone(), operations.clone()).unwrap(),
                expected,
                "{operations}"
            );
        }
    }

    #[test]
    fn rfc6902_appendix_a_errors() {
        // A.9 test a value: error
        assert_eq!(
            json_patch(
                json!({"baz":"qux"}),
                json!([{"op":"test","path":"/baz","value":"bar"}])
            ),
            Err(PatchError::TestFailed {
                index: 0,
                path: "/baz".to_owned()
            })
        );
        // A.12 add to a nonexistent target
        let error = json_patch(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
        )
        .unwrap_err();
        assert!(
            matches!(
                &error,
                PatchError::OperationFailed {
                    index: 0,
                    reason: "path not found",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.http_status(), 422);
        // A.15 comparing strings and numbers
        assert!(matches!(
            json_patch(
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":"10"}])
            ),
            Err(PatchError::TestFailed { index: 0, .. })
        ));
    }

    #[test]
    fn json_patch_operation_errors_name_the_operation_and_not_values() {
        let document = json!({"data":{"password":"c2VjcmV0"},"list":[1,2]});
        let cases = [
            (
                json!([{"op":"remove","path":"/data/missing"}]),
                "path not found",
            ),
            (
                json!([{"op":"replace","path":"/list/2","value":0}]),
                "array index out of range",
            ),
            (
                json!([{"op":"add","path":"/list/01","value":0}]),
                "invalid array index",
            ),
            (
                json!([{"op":"add","path":"/list/3","value":0}]),
                "array index out of range",
            ),
            (
                json!([{"op":"remove","path":"/list/-"}]),
                "array index out of range",
            ),
            (
                json!([{"op":"move","from":"/data","path":"/data/inner"}]),
                "cannot move a value into one of its children",
            ),
        ];
        for (operations, reason) in cases {
            match json_patch(document.clone(), operations.clone()) {
                Err(PatchError::OperationFailed {
                    index: 0,
                    reason: actual,
                    ..
                }) => assert_eq!(actual, reason, "{operations}"),
                other => panic!("{operations}: {other:?}"),
            }
        }
        let error = json_patch(
            document.clone(),
            json!([{"op":"test","path":"/data/password","value":"x"}]),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"));

        let invalid = [
            json!([{"path":"/a"}]),
            json!([{"op":"add","path":"/a"}]),
            json!([{"op":"frobnicate","path":"/a"}]),
            json!([{"op":"add","path":"a","value":1}]),
            json!([{"op":"add","path":"/a~2","value":1}]),
            json!([{"op":"move","path":"/a"}]),
            json!(["add"]),
        ];
        for operations in invalid {
            assert!(
                matches!(
                    json_patch(document.clone(), operations.clone()),
                    Err(PatchError::InvalidOperation { index: 0, .. })
                ),
                "{operations}"
            );
        }
        // Later operations report their own index; earlier ones are undone.
        assert!(matches!(
            json_patch(
                document.clone(),
                json!([{"op":"add","path":"/x","value":1},{"op":"remove","path":"/y"}])
            ),
            Err(PatchError::OperationFailed { index: 1, .. })
        ));
        assert_eq!(
            json_patch(document, json!({"op":"add"})),
            Err(PatchError::JsonPatchNotAnArray)
        );
    }

    #[test]
    fn json_patch_operation_limit() {
        let operation = json!({"op":"test","path":"","value":{}});
        let operations = Value::Array(vec![operation; MAX_JSON_PATCH_OPERATIONS + 1]);
        let error = json_patch(json!({}), operations).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        assert_eq!(error.http_status(), 413);
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s1",
                "namespace": "default",
                "finalizers": ["a", "b"],
                "annotations": {"keep": "yes"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "o1", "uid": "u1"},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "o2", "uid": "u2"}
                ]
            },
            "data": {"a": "b2xk", "b": "Yg=="},
            "type": "Opaque"
        })
    }

    fn strategic(original: &Value, patch: Value) -> Result<Value, PatchError> {
        apply_patch(
            original,
            PatchType::StrategicMergePatch,
            Kind::SECRET,
            patch.to_string().as_bytes(),
        )
    }

    #[test]
    fn strategic_kubectl_apply_body_from_the_log() {
        // The body kubectl v1.32 `apply` sent (requests-*.log).
        let body = br#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"annotations\":{},\"name\":\"s1\",\"namespace\":\"default\"},\"stringData\":{\"a\":\"changed\"},\"type\":\"Opaque\"}\n"}}}"#;
        let patched = apply_patch(
            &secret(),
            PatchType::StrategicMergePatch,
            Kind::SECRET,
            body,
        )
        .unwrap();
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(annotations["keep"], "yes");
        assert!(
            annotations["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap()
                .contains("changed")
        );
        assert_eq!(patched["data"], secret()["data"]);
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn strategic_maps_merge_and_null_deletes() {
        let patched = strategic(
            &secret(),
            json!({"data": {"a": "bmV3", "b": null, "c": "Yw=="}, "metadata": {"annotations": null}}),
        )
        .unwrap();
        assert_eq!(patched["data"], json!({"a": "bmV3", "c": "Yw=="}));
        assert!(patched["metadata"].get("annotations").is_none());
        // A null for a field the object lacks is dropped, not stored.
        let patched = strategic(
            &secret(),
            json!({"immutable": null, "stringData": {"x": null}}),
        )
        .unwrap();
        assert!(patched.get("immutable").is_none());
        assert_eq!(patched["stringData"], json!({}));
    }

    #[test]
    fn strategic_map_directives() {
        let patched = strategic(
            &secret(),
            json!({"data": {"$patch": "replace", "z": "eg=="}}),
        )
        .unwrap();
        assert_eq!(patched["data"], json!({"z": "eg=="}));
        let patched = strategic(&secret(), json!({"data": {"$patch": "delete"}})).unwrap();
        assert_eq!(patched["data"], json!({}));
        let error = strategic(&secret(), json!({"data": {"$patch": "merge"}})).unwrap_err();
        assert!(matches!(error, PatchError::InvalidDirective { ref path, .. } if path == "data"));
        let error = strategic(&secret(), json!({"data": {"$frob": "x"}})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "strategic merge patch at data: unknown directive \"$frob\""
        );
        let patched = strategic(
            &secret(),
            json!({"data": {"$retainKeys": ["a", "c"], "c": "Yw=="}}),
        )
        .unwrap();
        assert_eq!(patched["data"], json!({"a": "b2xk", "c": "Yw=="}));
        assert!(strategic(
            &secret(),
            json!({"data": {"$retainKeys": ["a"], "c": "Yw=="}})
        )
        .is_err());
    }

    #[test]
    fn strategic_finalizers_merge_as_a_set() {
        // Patch items first, then the live ones (upstream's mergeSortedSlice).
        let patched =
            strategic(&secret(), json!({"metadata": {"finalizers": ["c", "a"]}})).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let patched = strategic(
            &secret(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
        // kubectl apply's shape: order directive plus additions and deletions.
        let patched = strategic(
            &secret(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["b", "c"],
                "$deleteFromPrimitiveList/finalizers": ["a"],
                "finalizers": ["c"]
            }}),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["b", "c"]));
        let patched = strategic(
            &secret(),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["b", "a"]));
        let error = strategic(
            &secret(),
            json!({"metadata": {"$setElementOrder/finalizers": ["b"], "finalizers": ["c"]}}),
        )
        .unwrap_err();
        assert!(
            matches!(error, PatchError::InvalidDirective { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn strategic_owner_references_merge_by_uid() {
        let patched = strategic(
            &secret(),
            json!({"metadata": {"ownerReferences": [
                {"uid": "u2", "name": "renamed"},
                {"uid": "u3", "apiVersion": "v1", "kind": "Secret", "name": "o3"},
                {"uid": "u1", "$patch": "delete"}
            ]}}),
        )
        .unwrap();
        let names: Vec<&str> = patched["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|reference| reference["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["renamed", "o3"]);
        let error = strategic(
            &secret(),
            json!({"metadata": {"ownerReferences": [{"name": "no-uid"}]}}),
        )
        .unwrap_err();
        assert!(
            matches!(error, PatchError::InvalidList { ref path, .. } if path == "metadata.ownerReferences")
        );
        let patched = strategic(
            &secret(),
            json!({"metadata": {"ownerReferences": [{"$patch": "replace"}, {"uid": "u9", "name": "only"}]}}),
        )
        .unwrap();
        assert_eq!(
            patched["metadata"]["ownerReferences"],
            json!([{"uid": "u9", "name": "only"}])
        );
    }

    #[test]
    fn strategic_untagged_lists_are_replaced() {
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "n", "managedFields": [{"manager": "a"}]},
            "spec": {"finalizers": ["kubernetes", "x"]}, "status": {"phase": "Active"}
        });
        let patched = apply_patch(
            &namespace,
            PatchType::StrategicMergePatch,
            Kind::NAMESPACE,
            br#"{"spec":{"finalizers":["y"]},"metadata":{"managedFields":[{"manager":"b"}]}}"#,
        )
        .unwrap();
        assert_eq!(patched["spec"]["finalizers"], json!(["y"]));
        assert_eq!(
            patched["metadata"]["managedFields"],
            json!([{"manager": "b"}])
        );
    }

    #[test]
    fn patch_types_per_kind() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::StrategicMergePatch)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert!(Kind::SECRET.supports(PatchType::StrategicMergePatch));
        assert!(!Kind::NAMESPACED_CUSTOM.supports(PatchType::StrategicMergePatch));
        let error = apply_patch(
            &json!({}),
            PatchType::StrategicMergePatch,
            Kind::NAMESPACED_CUSTOM,
            b"{}",
        )
        .unwrap_err();
        assert_eq!(error.http_status(), 415);
        assert_eq!(
            error.to_string(),
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        );
        assert_eq!(
            apply_patch(&json!({}), PatchType::ApplyPatch, Kind::SECRET, b"{}"),
            Err(PatchError::ApplyPatchUnsupported)
        );
        let custom = json!({"apiVersion": "x.io/v1", "kind": "Foo", "metadata": {"name": "f"}, "spec": {"a": 1}});
        let patched = apply_patch(
            &custom,
            PatchType::MergePatch,
            Kind::NAMESPACED_CUSTOM,
            br#"{"spec":{"a":null,"b":[2]}}"#,
        )
        .unwrap();
        assert_eq!(patched["spec"], json!({"b": [2]}));
        assert!(matches!(
            apply_patch(
                &custom,
                PatchType::MergePatch,
                Kind::NAMESPACED_CUSTOM,
                b"{"
            ),
            Err(PatchError::InvalidJson { .. })
        ));
        assert_eq!(
            apply_patch(
                &custom,
                PatchType::MergePatch,
                Kind::NAMESPACED_CUSTOM,
                b"[1]"
            ),
            Err(PatchError::PatchNotAnObject)
        );
        assert_eq!(
            apply_patch(
                &custom,
                PatchType::JsonPatch,
                Kind::NAMESPACED_CUSTOM,
                br#"[{"op":"replace","path":"","value":3}]"#
            ),
            Err(PatchError::ResultNotAnObject)
        );
    }

    proptest::proptest! {
        #[test]
        fn merge_patch_of_a_diff_free_patch_is_identity(keys in proptest::collection::btree_map("[a-c]{1,2}", 0u8..4, 0..6)) {
            let document: Value = serde_json::to_value(&keys).unwrap();
            proptest::prop_assert_eq!(apply_merge_patch(&document, &json!({})), document.clone());
            proptest::prop_assert_eq!(apply_strategic_merge_patch(&document, &json!({})).unwrap(), document);
        }
    }
}
