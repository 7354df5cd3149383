//! Object validation with upstream's field causes and messages, for `Status`
//! responses of reason `Invalid` (HTTP 422).
//!
//! Checked, as `k8s.io/kubernetes/pkg/apis/core/validation` does:
//!
//! - `metadata.name` (or `generateName`): DNS-1123 subdomain for secrets,
//!   configmaps, CRDs and custom resources, DNS-1123 label for namespaces;
//!   `metadata.namespace` required (a DNS-1123 label) for namespaced kinds
//!   and forbidden for cluster-scoped ones;
//! - `metadata.labels` keys (qualified names) and values, `metadata.annotations`
//!   keys and their 256 KiB total size;
//! - Secret `data` keys (config keys), the 1 MiB total of decoded values,
//!   and the keys each built-in `type` requires (`tls.crt`/`tls.key`,
//!   `ssh-privatekey`, `username` or `password`, `.dockercfg` /
//!   `.dockerconfigjson` holding JSON, the service-account name annotation);
//! - CRD names: `<spec.names.plural>.<spec.group>`;
//! - ConfigMap `data` / `binaryData` keys, no key in both, the 1 MiB total;
//! - on update: Secret `type` is immutable, and `immutable: true` secrets
//!   and configmaps refuse changes to `data`/`binaryData` and to `immutable`.
//!
//! Causes never carry Secret or ConfigMap values: bad values quoted are
//! names, keys, label values and the Secret type, as upstream.
//!
//! # Not supported
//!
//! - `ownerReferences` / `finalizers` / `managedFields` checks, CRD schema
//!   and custom resource OpenAPI validation; a docker config that is not
//!   JSON is reported as `invalid JSON`, not with Go's decoder message.

use std::fmt;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::kind::{Kind, NameRule, Rules};

const DNS1123_LABEL_FORMAT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERROR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FORMAT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERROR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FORMAT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERROR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FORMAT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_ERROR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Longest DNS-1123 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest name part of a qualified name, and longest label value.
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// `TotalAnnotationSizeLimitB`: keys plus values of all annotations.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;
/// `core.MaxSecretSize`: total decoded data of a Secret or ConfigMap.
pub const MAX_SECRET_SIZE_BYTES: usize = 1024 * 1024;
/// Upstream's message for fields that may not change.
pub const FIELD_IMMUTABLE_MESSAGE: &str = "field is immutable";
const IMMUTABLE_SET_MESSAGE: &str = "field is immutable when `immutable` is set";

/// `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 'f')`.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut text = format!("{message} (e.g. ");
    for (index, example) in examples.iter().enumerate() {
        if index > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text.push_str(&format!("regex used for validation is '{format}')"));
    text
}

fn max_length_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

fn is_alphanumeric_lower(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

fn matches_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_alphanumeric_lower(first)
                && is_alphanumeric_lower(last)
                && bytes
                    .iter()
                    .all(|&byte| is_alphanumeric_lower(byte) || byte == b'-')
        }
        _ => false,
    }
}

fn matches_qualified_name_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `IsDNS1123Label`: upstream's messages, empty when valid.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_length_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        errors.push(regex_error(
            DNS1123_LABEL_ERROR,
            DNS1123_LABEL_FORMAT,
            &["my-name", "123-abc"],
        ));
    }
    errors
}

/// `IsDNS1123Subdomain`: upstream's messages, empty when valid.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_length_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !value.split('.').all(matches_dns1123_label) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERROR,
            DNS1123_SUBDOMAIN_FORMAT,
            &["example.com"],
        ));
    }
    errors
}

/// `IsQualifiedName` (label and annotation keys): an optional DNS-1123
/// subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|message| format!("prefix part {message}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERROR, QUALIFIED_NAME_FORMAT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_length_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERROR,
                QUALIFIED_NAME_FORMAT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// `IsValidLabelValue`: empty, or at most 63 characters of
/// `[A-Za-z0-9._-]` starting and ending with an alphanumeric.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > QUALIFIED_NAME_MAX_LENGTH {
        errors.push(max_length_error(QUALIFIED_NAME_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERROR,
            LABEL_VALUE_FORMAT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// `IsConfigMapKey` (Secret and ConfigMap data keys).
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_length_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let well_formed = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'));
    if !well_formed {
        errors.push(regex_error(
            CONFIG_KEY_ERROR,
            CONFIG_KEY_FORMAT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errors.push("must not be '.'".to_owned());
    } else if value == ".." {
        errors.push("must not be '..'".to_owned());
    } else if value.starts_with("..") {
        errors.push("must not start with '..'".to_owned());
    }
    errors
}

/// `field.ErrorType`, shown as a `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseType {
    /// `FieldValueInvalid` ("Invalid value").
    Invalid,
    /// `FieldValueRequired` ("Required value").
    Required,
    /// `FieldValueForbidden` ("Forbidden").
    Forbidden,
    /// `FieldValueTooLong` ("Too long").
    TooLong,
    /// `FieldValueDuplicate` ("Duplicate value").
    Duplicate,
    /// `FieldValueNotSupported` ("Unsupported value").
    NotSupported,
}

impl CauseType {
    /// The `reason` string, e.g. `FieldValueInvalid`.
    pub fn reason(self) -> &'static str {
        match self {
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::Required => "FieldValueRequired",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::NotSupported => "FieldValueNotSupported",
        }
    }

    /// Go's `ErrorType.String()`, e.g. `Invalid value`.
    pub fn label(self) -> &'static str {
        match self {
            CauseType::Invalid => "Invalid value",
            CauseType::Required => "Required value",
            CauseType::Forbidden => "Forbidden",
            CauseType::TooLong => "Too long",
            CauseType::Duplicate => "Duplicate value",
            CauseType::NotSupported => "Unsupported value",
        }
    }
}

/// One field error (`field.Error`), i.e. one `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// The error type.
    pub cause_type: CauseType,
    /// The field path, e.g. `metadata.name` or `data[bad key]`.
    pub field: String,
    /// `ErrorBody()`: `Invalid value: "Bad_Name": a lowercase ...`.
    pub message: String,
}

impl FieldCause {
    /// `field.Invalid` with a string bad value (quoted as Go's `%q`).
    pub fn invalid(field: impl Into<String>, bad_value: &str, detail: &str) -> FieldCause {
        let mut message = format!("{}: {}", CauseType::Invalid.label(), go_quote(bad_value));
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldCause {
            cause_type: CauseType::Invalid,
            field: field.into(),
            message,
        }
    }

    fn without_value(cause_type: CauseType, field: impl Into<String>, detail: &str) -> FieldCause {
        let mut message = cause_type.label().to_owned();
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldCause {
            cause_type,
            field: field.into(),
            message,
        }
    }

    /// `field.Required`.
    pub fn required(field: impl Into<String>, detail: &str) -> FieldCause {
        FieldCause::without_value(CauseType::Required, field, detail)
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> FieldCause {
        FieldCause::without_value(CauseType::Forbidden, field, detail)
    }

    /// `field.TooLong` with a byte limit.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> FieldCause {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        FieldCause::without_value(
            CauseType::TooLong,
            field,
            &format!("may not be more than {max_bytes} {unit}"),
        )
    }

    /// The `StatusCause` JSON: `{"reason", "message", "field"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "reason": self.cause_type.reason(),
            "message": self.message,
            "field": self.field,
        })
    }
}

impl fmt::Display for FieldCause {
    /// Go's `field.Error.Error()`: `<field>: <body>`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message)
    }
}

/// Go's `%q` of a string: JSON-style escapes are close enough for the
/// printable ASCII names and keys checked here; other characters are kept.
fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            control if control.is_control() => {
                quoted.push_str(&format!("\\x{:02x}", u32::from(control)))
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// The `Status.message` of an `Invalid` error: `Secret "Bad_Name" is invalid:
/// metadata.name: Invalid value: ...`; several causes are listed as
/// `[cause, cause]`. `qualified_kind` is `Kind` for the core group and
/// `Kind.group` otherwise (Go's `GroupKind.String()`).
pub fn invalid_status_message(qualified_kind: &str, name: &str, causes: &[FieldCause]) -> String {
    let quoted_name = go_quote(name);
    match causes {
        [] => format!("{qualified_kind} {quoted_name} is invalid"),
        [cause] => format!("{qualified_kind} {quoted_name} is invalid: {cause}"),
        _ => {
            let listed: Vec<String> = causes.iter().map(ToString::to_string).collect();
            format!(
                "{qualified_kind} {quoted_name} is invalid: [{}]",
                listed.join(", ")
            )
        }
    }
}

/// The whole 422 `Status` object for `causes` (`errors.NewInvalid`).
pub fn invalid_status(group: &str, kind: &str, name: &str, causes: &[FieldCause]) -> Value {
    let qualified_kind = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let mut details = Map::new();
    details.insert("name".to_owned(), json!(name));
    if !group.is_empty() {
        details.insert("group".to_owned(), json!(group));
    }
    details.insert("kind".to_owned(), json!(kind));
    details.insert(
        "causes".to_owned(),
        Value::Array(causes.iter().map(FieldCause::to_json).collect()),
    );
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_status_message(&qualified_kind, name, causes),
        "reason": "Invalid",
        "details": details,
        "code": 422,
    })
}

fn name_errors(kind: Kind, name: &str) -> Vec<String> {
    match kind.name_rule() {
        NameRule::Dns1123Label => is_dns1123_label(name),
        NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
    }
}

fn string_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn object_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a Map<String, Value>> {
    object.pointer(pointer).and_then(Value::as_object)
}

/// `ValidateObjectMeta` (name, namespace, labels, annotations).
fn validate_metadata(kind: Kind, object: &Value, causes: &mut Vec<FieldCause>) {
    let name = string_at(object, "/metadata/name");
    let generate_name = string_at(object, "/metadata/generateName");
    if name.is_empty() && generate_name.is_empty() {
        causes.push(FieldCause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if !name.is_empty() {
        for message in name_errors(kind, name) {
            causes.push(FieldCause::invalid("metadata.name", name, &message));
        }
    } else {
        // A prefix: the random suffix makes a trailing '-' fine.
        let prefix = generate_name.strip_suffix('-').unwrap_or(generate_name);
        let prefix = if prefix.is_empty() { "a" } else { prefix };
        for message in name_errors(kind, prefix) {
            causes.push(FieldCause::invalid(
                "metadata.generateName",
                generate_name,
                &message,
            ));
        }
    }

    let namespace = string_at(object, "/metadata/namespace");
    if kind.namespaced() {
        if namespace.is_empty() {
            causes.push(FieldCause::required("metadata.namespace", ""));
        } else {
            for message in is_dns1123_label(namespace) {
                causes.push(FieldCause::invalid(
                    "metadata.namespace",
                    namespace,
                    &message,
                ));
            }
        }
    } else if !namespace.is_empty() {
        causes.push(FieldCause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(labels) = object_at(object, "/metadata/labels") {
        for (key, value) in labels {
            for message in is_qualified_name(key) {
                causes.push(FieldCause::invalid("metadata.labels", key, &message));
            }
            let value = value.as_str().unwrap_or("");
            for message in is_valid_label_value(value) {
                causes.push(FieldCause::invalid("metadata.labels", value, &message));
            }
        }
    }

    if let Some(annotations) = object_at(object, "/metadata/annotations") {
        let mut total_size = 0;
        for (key, value) in annotations {
            for message in is_qualified_name(&key.to_lowercase()) {
                causes.push(FieldCause::invalid("metadata.annotations", key, &message));
            }
            total_size += key.len() + value.as_str().map_or(0, str::len);
        }
        if total_size > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
            causes.push(FieldCause::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT_BYTES,
            ));
        }
    }
}

/// Decoded length of a base64 data value (its string length if it does not
/// decode, which the codec would have refused earlier anyway).
fn decoded_length(value: &Value) -> usize {
    let text = value.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_or(text.len(), |bytes| bytes.len())
}

fn validate_data_keys(path: &str, data: &Map<String, Value>, causes: &mut Vec<FieldCause>) {
    for key in data.keys() {
        for message in is_config_map_key(key) {
            causes.push(FieldCause::invalid(format!("{path}[{key}]"), key, &message));
        }
    }
}

/// Validates an object for create (`Validate<Kind>`): every cause found, in
/// upstream's order (metadata first, map keys sorted).
pub fn validate_create(kind: Kind, object: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    validate_metadata(kind, object, &mut causes);
    match kind.rules() {
        Rules::Secret => {
            let empty = Map::new();
            let data = object_at(object, "/data").unwrap_or(&empty);
            validate_data_keys("data", data, &mut causes);
            let total: usize = data.values().map(decoded_length).sum();
            if total > MAX_SECRET_SIZE_BYTES {
                causes.push(FieldCause::too_long("data", MAX_SECRET_SIZE_BYTES));
            }
            validate_secret_type(object, data, &mut causes);
        }
        Rules::CustomResourceDefinition => {
            let name = string_at(object, "/metadata/name");
            let plural = string_at(object, "/spec/names/plural");
            let group = string_at(object, "/spec/group");
            if !name.is_empty() && name != format!("{plural}.{group}") {
                causes.push(FieldCause::invalid(
                    "metadata.name",
                    name,
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
        }
        Rules::ConfigMap => {
            let empty = Map::new();
            let data = object_at(object, "/data").unwrap_or(&empty);
            let binary_data = object_at(object, "/binaryData").unwrap_or(&empty);
            for key in data.keys() {
                for message in is_config_map_key(key) {
                    causes.push(FieldCause::invalid(format!("data[{key}]"), key, &message));
                }
                if binary_data.contains_key(key) {
                    causes.push(FieldCause::invalid(
                        format!("data[{key}]"),
                        key,
                        "duplicate of key present in binaryData",
                    ));
                }
            }
            validate_data_keys("binaryData", binary_data, &mut causes);
            let total: usize = data
                .values()
                .map(|value| value.as_str().map_or(0, str::len))
                .sum::<usize>()
                + binary_data.values().map(decoded_length).sum::<usize>();
            if total > MAX_SECRET_SIZE_BYTES {
                // Upstream names the whole object (an empty path).
                causes.push(FieldCause::too_long("", MAX_SECRET_SIZE_BYTES));
            }
        }
        Rules::MetadataOnly => {}
    }
    causes
}

/// The per-type rules of `ValidateSecret` (required keys; docker configs
/// must be JSON). Values are never quoted: upstream, too, reports
/// `<secret contents redacted>` for an undecodable docker config.
fn validate_secret_type(object: &Value, data: &Map<String, Value>, causes: &mut Vec<FieldCause>) {
    let require = |key: &str, causes: &mut Vec<FieldCause>| {
        if !data.contains_key(key) {
            causes.push(FieldCause::required(format!("data[{key}]"), ""));
        }
    };
    let require_json = |key: &str, causes: &mut Vec<FieldCause>| match data.get(key) {
        None => causes.push(FieldCause::required(format!("data[{key}]"), "")),
        Some(value) => {
            let decoded = value
                .as_str()
                .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
                .unwrap_or_default();
            if serde_json::from_slice::<Value>(&decoded).is_err() {
                causes.push(FieldCause::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    "invalid JSON",
                ));
            }
        }
    };
    match string_at(object, "/type") {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let named = object_at(object, "/metadata/annotations")
                .and_then(|annotations| annotations.get(annotation))
                .and_then(Value::as_str)
                .is_some_and(|name| !name.is_empty());
            if !named {
                causes.push(FieldCause::required(
                    format!("metadata.annotations[{annotation}]"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => require_json(".dockercfg", causes),
        "kubernetes.io/dockerconfigjson" => require_json(".dockerconfigjson", causes),
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            require("username", causes);
            require("password", causes);
        }
        "kubernetes.io/ssh-auth" => require("ssh-privatekey", causes),
        "kubernetes.io/tls" => {
            require("tls.crt", causes);
            require("tls.key", causes);
        }
        _ => {}
    }
}

fn is_immutable(object: &Value) -> bool {
    object.get("immutable").and_then(Value::as_bool) == Some(true)
}

/// Validates an update of `old` to `new`: everything [`validate_create`]
/// checks on `new`, then the update rules (Secret `type` immutability,
/// `immutable: true` secrets and configmaps).
pub fn validate_update(kind: Kind, new: &Value, old: &Value) -> Vec<FieldCause> {
    let mut causes = validate_create(kind, new);
    let empty = Value::Object(Map::new());
    let field = |object: &Value, name: &str| -> Value {
        object.get(name).cloned().unwrap_or_else(|| empty.clone())
    };
    match kind.rules() {
        Rules::Secret => {
            let new_type = string_at(new, "/type");
            if new_type != string_at(old, "/type") {
                causes.push(FieldCause::invalid(
                    "type",
                    new_type,
                    FIELD_IMMUTABLE_MESSAGE,
                ));
            }
            if is_immutable(old) {
                if !is_immutable(new) {
                    causes.push(FieldCause::forbidden("immutable", IMMUTABLE_SET_MESSAGE));
                }
                if field(new, "data") != field(old, "data") {
                    causes.push(FieldCause::forbidden("data", IMMUTABLE_SET_MESSAGE));
                }
            }
        }
        Rules::ConfigMap if is_immutable(old) => {
            if !is_immutable(new) {
                causes.push(FieldCause::forbidden("immutable", IMMUTABLE_SET_MESSAGE));
            }
            if field(new, "data") != field(old, "data") {
                causes.push(FieldCause::forbidden("data", IMMUTABLE_SET_MESSAGE));
            }
            if field(new, "binaryData") != field(old, "binaryData") {
                causes.push(FieldCause::forbidden("binaryData", IMMUTABLE_SET_MESSAGE));
            }
        }
        Rules::ConfigMap | Rules::CustomResourceDefinition | Rules::MetadataOnly => {}
    }
    causes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const CONFIG_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

    fn secret(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"ok.key": "c2VjcmV0"}, "type": "Opaque"
        })
    }

    #[test]
    fn string_validators() {
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert_eq!(is_dns1123_subdomain("Bad_Name"), [SUBDOMAIN_MESSAGE]);
        assert_eq!(is_dns1123_subdomain(&"A".repeat(254)).len(), 2);
        assert!(is_dns1123_label("my-name").is_empty());
        assert_eq!(
            is_dns1123_label("a.b"),
            ["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]
        );
        assert!(is_qualified_name("example.com/My_Name.1").is_empty());
        assert_eq!(is_qualified_name("/x"), ["prefix part must be non-empty"]);
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert_eq!(
            is_qualified_name(&"k".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
        assert!(is_valid_label_value("").is_empty());
        assert_eq!(is_valid_label_value("-x").len(), 1);
        assert!(is_config_map_key("KEY_name-1.x").is_empty());
        assert_eq!(is_config_map_key("a b"), [CONFIG_KEY_MESSAGE]);
        assert_eq!(is_config_map_key(".."), ["must not be '..'"]);
        assert_eq!(is_config_map_key("..x"), ["must not start with '..'"]);
    }

    #[test]
    fn secret_name_message_matches_upstream() {
        let causes = validate_create(Kind::SECRET, &secret("Bad_Name"));
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].to_json(),
            json!({
                "reason": "FieldValueInvalid",
                "message": format!("Invalid value: \"Bad_Name\": {SUBDOMAIN_MESSAGE}"),
                "field": "metadata.name"
            })
        );
        assert_eq!(
            invalid_status_message("Secret", "Bad_Name", &causes),
            format!("Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_MESSAGE}")
        );
        let status = invalid_status("", "Secret", "Bad_Name", &causes);
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["kind"], "Secret");
        assert!(status["details"].get("group").is_none());
        assert!(validate_create(Kind::SECRET, &secret("good.name")).is_empty());
    }

    #[test]
    fn metadata_rules() {
        let mut object = json!({"metadata": {}});
        assert_eq!(
            validate_create(Kind::CONFIG_MAP, &object),
            [
                FieldCause::required("metadata.name", "name or generateName is required"),
                FieldCause::required("metadata.namespace", ""),
            ]
        );
        assert_eq!(
            FieldCause::required("metadata.namespace", "").message,
            "Required value"
        );
        object["metadata"] = json!({"generateName": "web-", "namespace": "default"});
        assert!(validate_create(Kind::CONFIG_MAP, &object).is_empty());

        let namespace = json!({"metadata": {"name": "a.b", "namespace": "x"}});
        let causes = validate_create(Kind::NAMESPACE, &namespace);
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].field, "metadata.name");
        assert_eq!(
            causes[1].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );

        let labelled = json!({"metadata": {
            "name": "c", "namespace": "default",
            "labels": {"bad key": "ok", "good": "-bad"},
            "annotations": {"example.com/Note": "x", "bad key": "y"}
        }});
        let causes = validate_create(Kind::CONFIG_MAP, &labelled);
        let summary: Vec<(&str, &str)> = causes
            .iter()
            .map(|cause| (cause.field.as_str(), cause.cause_type.reason()))
            .collect();
        assert_eq!(
            summary,
            [
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.annotations", "FieldValueInvalid"),
            ]
        );
        assert!(causes[1]
            .message
            .starts_with("Invalid value: \"-bad\": a valid label"));

        let big = json!({"metadata": {
            "name": "c", "namespace": "default",
            "annotations": {"a": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES)}
        }});
        assert_eq!(
            validate_create(Kind::CONFIG_MAP, &big),
            [FieldCause {
                cause_type: CauseType::TooLong,
                field: "metadata.annotations".to_owned(),
                message: "Too long: may not be more than 262144 bytes".to_owned(),
            }]
        );
    }

    #[test]
    fn secret_and_config_map_data() {
        let mut object = secret("s");
        object["data"] = json!({"bad key": "c2VjcmV0"});
        let causes = validate_create(Kind::SECRET, &object);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data[bad key]");
        assert_eq!(
            causes[0].message,
            format!("Invalid value: \"bad key\": {CONFIG_KEY_MESSAGE}")
        );
        assert!(!causes[0].message.contains("c2VjcmV0"));

        let huge =
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_SECRET_SIZE_BYTES + 1]);
        object["data"] = json!({"a": huge});
        assert_eq!(
            validate_create(Kind::SECRET, &object),
            [FieldCause::too_long("data", MAX_SECRET_SIZE_BYTES)]
        );

        let config_map = json!({
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"a": "1", "b c": "2"}, "binaryData": {"a": "AA=="}
        });
        let causes = validate_create(Kind::CONFIG_MAP, &config_map);
        let messages: Vec<String> = causes.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "data[a]: Invalid value: \"a\": duplicate of key present in binaryData".to_owned(),
                format!("data[b c]: Invalid value: \"b c\": {CONFIG_KEY_MESSAGE}"),
            ]
        );
        let too_big = json!({
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"a": "x".repeat(MAX_SECRET_SIZE_BYTES)}, "binaryData": {"b": "AA=="}
        });
        let causes = validate_create(Kind::CONFIG_MAP, &too_big);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "");
        assert_eq!(causes[0].cause_type, CauseType::TooLong);
    }

    #[test]
    fn secret_type_rules_and_crd_names() {
        let mut object = secret("s");
        object["type"] = json!("kubernetes.io/tls");
        object["data"] = json!({"tls.crt": "Y2VydA=="});
        assert_eq!(
            validate_create(Kind::SECRET, &object)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["data[tls.key]: Required value"]
        );
        object["type"] = json!("kubernetes.io/dockerconfigjson");
        object["data"] = json!({".dockerconfigjson": "bm90IGpzb24="});
        let causes = validate_create(Kind::SECRET, &object);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"<secret contents redacted>\": invalid JSON"
        );
        object["type"] = json!("kubernetes.io/basic-auth");
        object["data"] = json!({"password": "cA=="});
        assert!(validate_create(Kind::SECRET, &object).is_empty());
        object["type"] = json!("kubernetes.io/service-account-token");
        assert_eq!(
            validate_create(Kind::SECRET, &object)[0].field,
            "metadata.annotations[kubernetes.io/service-account.name]"
        );

        let crd = json!({
            "metadata": {"name": "foo.example.com"},
            "spec": {"group": "example.com", "names": {"plural": "foos"}}
        });
        assert_eq!(
            validate_create(Kind::CUSTOM_RESOURCE_DEFINITION, &crd)[0].to_string(),
            "metadata.name: Invalid value: \"foo.example.com\": must be spec.names.plural+\".\"+spec.group"
        );
    }

    #[test]
    fn update_rules() {
        let old = secret("s");
        let mut new = old.clone();
        new["type"] = json!("example.com/custom");
        let causes = validate_update(Kind::SECRET, &new, &old);
        assert_eq!(
            causes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["type: Invalid value: \"example.com/custom\": field is immutable"]
        );

        let mut old = secret("s");
        old["immutable"] = json!(true);
        let mut new = old.clone();
        assert!(validate_update(Kind::SECRET, &new, &old).is_empty());
        new["data"] = json!({"ok.key": "b3RoZXI="});
        new["immutable"] = json!(false);
        let causes = validate_update(Kind::SECRET, &new, &old);
        assert_eq!(
            causes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        assert!(causes
            .iter()
            .all(|cause| !cause.message.contains("b3RoZXI=")));
        let message = invalid_status_message("Secret", "s", &causes);
        assert!(message.starts_with("Secret \"s\" is invalid: [immutable: Forbidden"));

        let old = json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "binaryData": {"b": "AA=="}});
        let mut new = old.clone();
        new["binaryData"] = json!({});
        let causes = validate_update(Kind::CONFIG_MAP, &new, &old);
        assert_eq!(
            causes,
            [FieldCause::forbidden("binaryData", IMMUTABLE_SET_MESSAGE)]
        );
        let mutable_old = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}});
        let mut new = mutable_old.clone();
        new["data"] = json!({"a": "2"});
        assert!(validate_update(Kind::CONFIG_MAP, &new, &mutable_old).is_empty());
    }
}
