//! `meta.k8s.io/v1` `Table` responses, as kube-apiserver builds them for
//! `kubectl get` (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`).
//!
//! Columns follow upstream's printers:
//!
//! - secrets: `Name`, `Type`, `Data` (number of `data` keys), `Age`;
//! - configmaps: `Name`, `Data` (`data` plus `binaryData` keys), `Age`;
//! - namespaces: `Name`, `Status` (`status.phase`), `Age`;
//! - customresourcedefinitions: `Name`, `Created At` (RFC 3339; the
//!   apiserver's default table convertor);
//! - custom resources: `Name` then the CRD version's
//!   `additionalPrinterColumns`, or `Name`, `Age` when it has none (the
//!   apiextensions-apiserver serves `Age` only as the default: a CRD that
//!   lists columns lists its own `Age`).
//!
//! Ages are rendered like `duration.HumanDuration` against a caller-supplied
//! "now", so results are deterministic.
//!
//! # Not supported
//!
//! - `meta.k8s.io/v1beta1` tables (kubectl asks for v1 first).
//! - JSONPath beyond simple paths (`.a.b`, `.a[0]`, `.a['k.x']`, `\.`
//!   escapes): filters, wildcards, ranges and recursive descent give a
//!   [`TableError`] when a column is built.
//! - A `string` printer column holding an object or list is shown as
//!   compact JSON (Go prints `map[k:v]`).

pub use crate::codec::{format_rfc3339, parse_rfc3339};
use serde_json::{json, Map, Value};

use crate::kind::{Cell, Kind};

/// `metav1.ObjectMeta` `name` documentation, upstream's `Name` column
/// description.
pub const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` `creationTimestamp` documentation, upstream's `Age`
/// and `Created At` column description.
pub const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(crate) const SECRET_TYPE_DESCRIPTION: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
pub(crate) const SECRET_DATA_DESCRIPTION: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
pub(crate) const CONFIG_MAP_DATA_DESCRIPTION: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
pub(crate) const NAMESPACE_STATUS_DESCRIPTION: &str = "The status of the namespace";

/// What the rows' `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No `object` in rows.
    None,
    /// A `meta.k8s.io/v1` `PartialObjectMetadata` (upstream's default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`None`, `Metadata`,
    /// `Object`; absent or empty is `Metadata`).
    pub fn from_query(value: Option<&str>) -> Result<IncludeObject, TableError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(TableError::InvalidIncludeObject {
                value: other.to_owned(),
            }),
        }
    }
}

/// Everything besides the objects that goes into a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions<'a> {
    /// What each row's `object` holds.
    pub include_object: IncludeObject,
    /// "Now" for ages, in Unix seconds.
    pub now_unix_seconds: i64,
    /// The list's `metadata.resourceVersion` (omitted when `None` or empty).
    pub resource_version: Option<&'a str>,
    /// The list's `metadata.continue` token (omitted when `None` or empty).
    pub continue_token: Option<&'a str>,
    /// The list's `metadata.remainingItemCount`, if known.
    pub remaining_item_count: Option<i64>,
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `includeObject` is not `None`, `Metadata` or `Object`.
    #[error("includeObject: unsupported value: {value:?}: supported values: \"None\", \"Metadata\", \"Object\"")]
    InvalidIncludeObject {
        /// The value given.
        value: String,
    },
    /// A printer column is not an object with string `name`, `type`,
    /// `jsonPath`.
    #[error("additionalPrinterColumns[{index}]: {reason}")]
    InvalidPrinterColumn {
        /// Index of the column in `additionalPrinterColumns`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Whether an `Accept` header asks for a `meta.k8s.io/v1` `Table` (a media
/// range `application/json` with `as=Table`, `v=v1`, `g=meta.k8s.io`).
pub fn accepts_table_v1(accept: &str) -> bool {
    accept.split(',').any(|media_range| {
        let mut parts = media_range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or("");
        if !media_type.eq_ignore_ascii_case("application/json") {
            return false;
        }
        let (mut as_table, mut version, mut group) = (false, false, false);
        for parameter in parts {
            match parameter
                .split_once('=')
                .map(|(name, value)| (name.trim(), value.trim()))
            {
                Some(("as", "Table")) => as_table = true,
                Some(("v", "v1")) => version = true,
                Some(("g", "meta.k8s.io")) => group = true,
                _ => {}
            }
        }
        as_table && version && group
    })
}

/// The `additionalPrinterColumns` of `version` in a CRD object
/// (`spec.versions[name == version]`); empty when it has none.
pub fn printer_columns_for_version(crd: &Value, version: &str) -> Vec<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|versions| {
            versions
                .iter()
                .find(|entry| entry.get("name").and_then(Value::as_str) == Some(version))
        })
        .and_then(|entry| entry.get("additionalPrinterColumns"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// One printer column after parsing.
#[derive(Debug)]
struct CustomColumn {
    name: String,
    column_type: String,
    format: String,
    description: String,
    priority: i64,
    path: Vec<PathStep>,
}

/// A step of a simple JSONPath.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathStep {
    Field(String),
    Index(usize),
}

/// Builds a `meta.k8s.io/v1` `Table` listing `objects` (each a JSON API
/// object of the kind `kind` describes).
pub fn build_table(
    kind: Kind,
    printer_columns: &[Value],
    objects: &[Value],
    options: &TableOptions<'_>,
) -> Result<Value, TableError> {
    let now = options.now_unix_seconds;
    let mut column_definitions = vec![column("Name", "string", "name", NAME_DESCRIPTION, 0)];
    let rows_cells: Vec<Vec<Value>> = match kind.builtin() {
        Some(builtin) => {
            column_definitions.extend(
                builtin
                    .columns
                    .iter()
                    .map(|c| column(c.name, c.column_type, "", c.description, 0)),
            );
            objects
                .iter()
                .map(|object| {
                    let mut cells = vec![name_cell(object)];
                    cells.extend(
                        builtin
                            .columns
                            .iter()
                            .map(|c| builtin_cell(c.cell, object, now)),
                    );
                    cells
                })
                .collect()
        }
        None => {
            let columns = if printer_columns.is_empty() {
                vec![CustomColumn {
                    name: "Age".to_owned(),
                    column_type: "date".to_owned(),
                    format: String::new(),
                    description: CREATION_TIMESTAMP_DESCRIPTION.to_owned(),
                    priority: 0,
                    path: vec![
                        PathStep::Field("metadata".to_owned()),
                        PathStep::Field("creationTimestamp".to_owned()),
                    ],
                }]
            } else {
                printer_columns
                    .iter()
                    .enumerate()
                    .map(|(index, definition)| parse_printer_column(index, definition))
                    .collect::<Result<_, _>>()?
            };
            column_definitions.extend(columns.iter().map(|custom| {
                column(
                    &custom.name,
                    &custom.column_type,
                    &custom.format,
                    &custom.description,
                    custom.priority,
                )
            }));
            objects
                .iter()
                .map(|object| {
                    let mut cells = vec![name_cell(object)];
                    cells.extend(
                        columns
                            .iter()
                            .map(|custom| custom_cell(custom, object, now)),
                    );
                    cells
                })
                .collect()
        }
    };

    let rows: Vec<Value> = objects
        .iter()
        .zip(rows_cells)
        .map(|(object, cells)| {
            let mut row = Map::new();
            row.insert("cells".to_owned(), Value::Array(cells));
            match options.include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".to_owned(), partial_object_metadata(object));
                }
                IncludeObject::Object => {
                    row.insert("object".to_owned(), object.clone());
                }
            }
            Value::Object(row)
        })
        .collect();

    let mut metadata = Map::new();
    if let Some(resource_version) = options.resource_version.filter(|text| !text.is_empty()) {
        metadata.insert("resourceVersion".to_owned(), json!(resource_version));
    }
    if let Some(token) = options.continue_token.filter(|text| !text.is_empty()) {
        metadata.insert("continue".to_owned(), json!(token));
    }
    if let Some(count) = options.remaining_item_count {
        metadata.insert("remainingItemCount".to_owned(), json!(count));
    }
    Ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    }))
}

/// A `TableColumnDefinition` (every field is always serialised upstream).
fn column(name: &str, column_type: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({
        "name": name,
        "type": column_type,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// The `PartialObjectMetadata` upstream puts in rows by default.
pub fn partial_object_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn string_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn builtin_cell(cell: Cell, object: &Value, now: i64) -> Value {
    match cell {
        Cell::String(pointer) => Value::String(string_at(object, pointer).to_owned()),
        Cell::Count(pointers) => {
            Value::from(pointers.iter().map(|p| map_len(object, p)).sum::<u64>())
        }
        Cell::Age => Value::String(age(object, now)),
        Cell::CreatedAt => created_at(object),
    }
}

fn name_cell(object: &Value) -> Value {
    Value::String(string_at(object, "/metadata/name").to_owned())
}

fn map_len(object: &Value, pointer: &str) -> u64 {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |members| members.len() as u64)
}

/// `translateTimestampSince(metadata.creationTimestamp)`.
fn age(object: &Value, now: i64) -> String {
    match object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        Some(created) => human_duration(now - created),
        None => "<unknown>".to_owned(),
    }
}

/// The default convertor's `Created At`: RFC 3339 in UTC.
fn created_at(object: &Value) -> Value {
    match object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        Some(created) => Value::String(format_rfc3339(created)),
        // Go formats the zero time.
        None => Value::String("0001-01-01T00:00:00Z".to_owned()),
    }
}

fn parse_printer_column(index: usize, definition: &Value) -> Result<CustomColumn, TableError> {
    let invalid = |reason: String| TableError::InvalidPrinterColumn { index, reason };
    let text = |field: &str| definition.get(field).and_then(Value::as_str);
    let name = text("name").ok_or_else(|| invalid("missing \"name\"".to_owned()))?;
    let column_type = text("type").ok_or_else(|| invalid("missing \"type\"".to_owned()))?;
    let json_path = text("jsonPath").ok_or_else(|| invalid("missing \"jsonPath\"".to_owned()))?;
    let path = parse_simple_json_path(json_path)
        .ok_or_else(|| invalid(format!("unsupported JSONPath {json_path:?}")))?;
    let description = match text("description") {
        Some(description) if !description.is_empty() => description.to_owned(),
        _ => format!("Custom resource definition column (in JSONPath format): {json_path}"),
    };
    Ok(CustomColumn {
        name: name.to_owned(),
        column_type: column_type.to_owned(),
        format: text("format").unwrap_or("").to_owned(),
        description,
        priority: definition
            .get("priority")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        path,
    })
}

/// Parses `.a.b[0]['c.d']` (optionally wrapped in `{}`); `None` for anything
/// that is not a simple path.
fn parse_simple_json_path(path: &str) -> Option<Vec<PathStep>> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|inner| inner.strip_suffix('}'))
        .unwrap_or(path);
    let characters: Vec<char> = path.chars().collect();
    let mut steps = Vec::new();
    let mut position = 0;
    while position < characters.len() {
        match characters[position] {
            '.' => {
                position += 1;
                let mut field = String::new();
                while position < characters.len() {
                    match characters[position] {
                        '\\' if position + 1 < characters.len() => {
                            field.push(characters[position + 1]);
                            position += 2;
                        }
                        '.' | '[' => break,
                        '*' | '@' | '?' | '(' | ')' | ' ' | ']' => return None,
                        other => {
                            field.push(other);
                            position += 1;
                        }
                    }
                }
                if field.is_empty() {
                    return None;
                }
                steps.push(PathStep::Field(field));
            }
            '[' => {
                let close = characters[position..].iter().position(|&c| c == ']')? + position;
                let inside: String = characters[position + 1..close].iter().collect();
                let inside = inside.trim();
                let quoted = ['\'', '"'].iter().find_map(|&quote| {
                    inside
                        .strip_prefix(quote)
                        .and_then(|rest| rest.strip_suffix(quote))
                });
                match quoted {
                    Some(key) => steps.push(PathStep::Field(key.to_owned())),
                    None => {
                        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_digit()) {
                            return None;
                        }
                        steps.push(PathStep::Index(inside.parse().ok()?));
                    }
                }
                position = close + 1;
            }
            _ => return None,
        }
    }
    if steps.is_empty() {
        return None;
    }
    Some(steps)
}

fn evaluate_path<'a>(object: &'a Value, path: &[PathStep]) -> Option<&'a Value> {
    path.iter().try_fold(object, |current, step| match step {
        PathStep::Field(name) => current.get(name),
        PathStep::Index(index) => current.get(index),
    })
}

/// A custom column's cell: `cellForJSONValue` for typed columns, the printed
/// value for `string` ones, `null` when the path finds nothing.
fn custom_cell(column: &CustomColumn, object: &Value, now: i64) -> Value {
    let Some(value) = evaluate_path(object, &column.path) else {
        return Value::Null;
    };
    if value.is_null() {
        return Value::Null;
    }
    match column.column_type.as_str() {
        "string" => Value::String(print_value(value)),
        "integer" => match value {
            Value::Number(number) => number
                .as_i64()
                // Go's int64(float64) truncates toward zero.
                .or_else(|| number.as_f64().map(|float| float as i64))
                .map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "number" => match value {
            Value::Number(number) => number.as_f64().map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(flag) => Value::Bool(*flag),
            _ => Value::Null,
        },
        "date" => match value.as_str() {
            Some(text) => match parse_rfc3339(text) {
                Some(time) => Value::String(human_duration(now - time)),
                None => Value::String("<invalid>".to_owned()),
            },
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

/// How Go's JSONPath printer shows a value (`fmt.Fprint`).
fn print_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(integer), _) => integer.to_string(),
            (None, Some(integer)) => integer.to_string(),
            _ => number.as_f64().map_or_else(String::new, go_format_float),
        },
        Value::Bool(flag) => flag.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (`strconv` `'g'`, shortest): `%e` form when the
/// decimal exponent is below -4 or at least 6, e.g. `1e+06`.
fn go_format_float(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        value.to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// Kubernetes' `duration.HumanDuration` of a whole number of seconds:
/// `5s`, `3m20s`, `5h`, `2d3h`, `400d`, `2y10d`, ...; `<invalid>` for more
/// than a second in the future.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let rest = seconds % 60;
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{rest}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    /// 2024-01-10T12:00:00Z.
    const NOW: i64 = 1_704_888_000;

    fn options() -> TableOptions<'static> {
        TableOptions {
            now_unix_seconds: NOW,
            resource_version: Some("42"),
            ..TableOptions::default()
        }
    }

    fn column_names(table: &Value) -> Vec<&str> {
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|definition| definition["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn time_round_trips() {
        assert_eq!(parse_rfc3339("2024-01-10T12:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-10T13:00:00.123+01:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2024-01-10 12:00:00Z"), None);
        assert_eq!(format_rfc3339(NOW), "2024-01-10T12:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn human_durations_match_kubectl() {
        let cases = [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86_400, "8d"),
            (400 * 86_400, "400d"),
            (730 * 86_400, "2y"),
            (740 * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}");
        }
    }

    #[test]
    fn secrets_table() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s1", "namespace": "default", "creationTimestamp": "2024-01-10T11:57:00Z"},
            "data": {"a": "YQ==", "b": "Yg=="}, "type": "Opaque"
        });
        let table = build_table(Kind::SECRET, &[], &[secret], &options()).unwrap();
        assert_eq!(
            table,
            json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "42"},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
                    {"name": "Type", "type": "string", "format": "", "description": SECRET_TYPE_DESCRIPTION, "priority": 0},
                    {"name": "Data", "type": "string", "format": "", "description": SECRET_DATA_DESCRIPTION, "priority": 0},
                    {"name": "Age", "type": "string", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION, "priority": 0}
                ],
                "rows": [{
                    "cells": ["s1", "Opaque", 2, "3m"],
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"name": "s1", "namespace": "default", "creationTimestamp": "2024-01-10T11:57:00Z"}
                    }
                }]
            })
        );
        assert!(!table.to_string().contains("YQ=="));
    }

    #[test]
    fn configmaps_and_namespaces_tables() {
        let config_map = json!({
            "metadata": {"name": "c", "creationTimestamp": "2024-01-08T12:00:00Z"},
            "data": {"a": "1"}, "binaryData": {"b": "AA=="}
        });
        let table = build_table(
            Kind::CONFIG_MAP,
            &[],
            &[config_map],
            &TableOptions {
                include_object: IncludeObject::None,
                continue_token: Some("tok"),
                ..options()
            },
        )
        .unwrap();
        assert_eq!(column_names(&table), ["Name", "Data", "Age"]);
        assert_eq!(
            table["columnDefinitions"][1]["description"],
            CONFIG_MAP_DATA_DESCRIPTION
        );
        assert_eq!(table["rows"], json!([{"cells": ["c", 2, "2d"]}]));
        assert_eq!(
            table["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );

        let namespace = json!({
            "metadata": {"name": "kube-system", "creationTimestamp": null},
            "spec": {}, "status": {"phase": "Active"}
        });
        let table = build_table(Kind::NAMESPACE, &[], &[namespace], &options()).unwrap();
        assert_eq!(column_names(&table), ["Name", "Status", "Age"]);
        assert_eq!(
            table["columnDefinitions"][1]["description"],
            "The status of the namespace"
        );
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["kube-system", "Active", "<unknown>"])
        );

        let empty = build_table(Kind::NAMESPACE, &[], &[], &TableOptions::default()).unwrap();
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["metadata"], json!({}));
    }

    #[test]
    fn crd_table() {
        let crd = json!({"metadata": {"name": "foos.example.com", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let table = build_table(
            Kind::CUSTOM_RESOURCE_DEFINITION,
            &[],
            std::slice::from_ref(&crd),
            &TableOptions {
                include_object: IncludeObject::Object,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(column_names(&table), ["Name", "Created At"]);
        assert_eq!(table["columnDefinitions"][1]["type"], "date");
        assert_eq!(
            table["rows"],
            json!([{"cells": ["foos.example.com", "2024-01-01T00:00:00Z"], "object": crd}])
        );
    }

    #[test]
    fn custom_resource_tables() {
        let object = json!({
            "apiVersion": "example.com/v1", "kind": "Foo",
            "metadata": {"name": "f1", "creationTimestamp": "2024-01-10T11:59:55Z", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 3, "ratio": 1.5, "paused": false, "big": 1e22, "when": "2024-01-10T10:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let table = build_table(
            Kind::NAMESPACED_CUSTOM,
            &[],
            std::slice::from_ref(&object),
            &options(),
        )
        .unwrap();
        assert_eq!(column_names(&table), ["Name", "Age"]);
        assert_eq!(table["columnDefinitions"][1]["type"], "date");
        assert_eq!(table["rows"][0]["cells"], json!(["f1", "5s"]));

        let crd = json!({"spec": {"versions": [
            {"name": "v1beta1"},
            {"name": "v1", "additionalPrinterColumns": [
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1},
                {"name": "Ratio Text", "type": "string", "jsonPath": ".spec.ratio"},
                {"name": "Big", "type": "string", "jsonPath": ".spec.big"},
                {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused", "description": "Is it paused"},
                {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[0].type"},
                {"name": "App", "type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"},
                {"name": "App2", "type": "string", "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
                {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
                {"name": "When", "type": "date", "jsonPath": ".spec.when", "format": "date-time"}
            ]}
        ]}});
        let printer_columns = printer_columns_for_version(&crd, "v1");
        assert!(printer_columns_for_version(&crd, "v1beta1").is_empty());
        let table = build_table(
            Kind::NAMESPACED_CUSTOM,
            &printer_columns,
            &[object],
            &options(),
        )
        .unwrap();
        assert_eq!(
            column_names(&table),
            [
                "Name",
                "Replicas",
                "Ratio",
                "Ratio Text",
                "Big",
                "Paused",
                "Ready",
                "App",
                "App2",
                "Missing",
                "When"
            ]
        );
        assert_eq!(
            table["columnDefinitions"][1],
            json!({
                "name": "Replicas", "type": "integer", "format": "", "priority": 0,
                "description": "Custom resource definition column (in JSONPath format): .spec.replicas"
            })
        );
        assert_eq!(table["columnDefinitions"][2]["priority"], 1);
        assert_eq!(table["columnDefinitions"][5]["description"], "Is it paused");
        assert_eq!(table["columnDefinitions"][10]["format"], "date-time");
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["f1", 3, 1.5, "1.5", "1e+22", false, "Ready", "web", "web", null, "120m"])
        );

        let bad = [json!({"name": "X", "type": "string", "jsonPath": ".items[*].name"})];
        assert!(matches!(
            build_table(Kind::NAMESPACED_CUSTOM, &bad, &[], &options()),
            Err(TableError::InvalidPrinterColumn { index: 0, .. })
        ));
    }

    #[test]
    fn accept_and_include_object_parsing() {
        assert!(accepts_table_v1(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!accepts_table_v1("application/json"));
        assert!(!accepts_table_v1(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
        ));
        assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query(Some("None")),
            Ok(IncludeObject::None)
        );
        assert_eq!(
            IncludeObject::from_query(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert!(IncludeObject::from_query(Some("all")).is_err());
        assert_eq!(go_format_float(1e6), "1e+06");
        assert_eq!(go_format_float(123_456.0), "123456");
        assert_eq!(go_format_float(0.00001), "1e-05");
    }
}
