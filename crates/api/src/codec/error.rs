//! The one error type of the codec layer.
//!
//! Messages name what was wrong and where (message and field number plus byte
//! offset for protobuf, a field path for the JSON model) but never echo input
//! values: request bodies and stored objects may hold Secret data.

use serde_json::Value;

/// Why bytes or an object could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Nothing to decode.
    #[error("empty value")]
    Empty,
    /// Protobuf was expected but the value does not start with `k8s\0`.
    #[error("not a Kubernetes protobuf value: it does not start with the 4-byte prefix k8s\\0")]
    MissingProtobufPrefix,
    /// A varint, length or fixed-width value runs past the end of its message.
    #[error("truncated protobuf in {message} at offset {offset}: needs {needed} bytes, {available} remain")]
    Truncated {
        /// Message being decoded.
        message: &'static str,
        /// Absolute byte offset (from the start of the value) of the item.
        offset: usize,
        /// Bytes the item claims or needs.
        needed: u64,
        /// Bytes left in the enclosing message.
        available: usize,
    },
    /// A varint longer than ten bytes.
    #[error("malformed varint in {message} at offset {offset}: longer than 10 bytes")]
    MalformedVarint {
        /// Message being decoded.
        message: &'static str,
        /// Absolute byte offset of the varint.
        offset: usize,
    },
    /// A field tag with number 0, an out-of-range number, an unknown wire
    /// type, or an unmatched end-group.
    #[error("invalid protobuf tag in {message} at offset {offset}: field {field}, wire type {wire_type}")]
    InvalidTag {
        /// Message being decoded.
        message: &'static str,
        /// Absolute byte offset of the tag.
        offset: usize,
        /// Field number in the tag.
        field: u64,
        /// Wire type in the tag.
        wire_type: u8,
    },
    /// A known field arrived with a wire type its declaration does not allow.
    #[error("wrong wire type {wire_type} for {message} field {field} at offset {offset}")]
    WrongWireType {
        /// Message being decoded.
        message: &'static str,
        /// Field number.
        field: u64,
        /// Wire type found.
        wire_type: u8,
        /// Absolute byte offset of the tag.
        offset: usize,
    },
    /// Unknown-field groups nested beyond the limit.
    #[error("protobuf groups nested deeper than {limit} at offset {offset}")]
    TooDeep {
        /// Absolute byte offset of the group that went too deep.
        offset: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// A protobuf string field that is not UTF-8.
    #[error("{message} field {field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Message being decoded.
        message: &'static str,
        /// Field number.
        field: u64,
        /// Absolute byte offset of the field's payload (or entry).
        offset: usize,
    },
    /// The object (or protobuf TypeMeta) has no `kind`.
    #[error("object has no kind")]
    MissingKind,
    /// The object (or protobuf TypeMeta) has no `apiVersion`.
    #[error("object of kind {kind} has no apiVersion")]
    MissingApiVersion {
        /// The object's kind.
        kind: String,
    },
    /// Not one of the kinds this codec encodes as protobuf.
    #[error("no protobuf codec for {kind} in {api_version} (supported: v1 Secret, ConfigMap, Namespace)")]
    UnsupportedKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// A field of the JSON object model has the wrong JSON type.
    #[error("{path}: expected {expected}, found {found}")]
    InvalidField {
        /// Field path, e.g. `metadata.labels["app"]`.
        path: String,
        /// The JSON type required.
        expected: &'static str,
        /// The JSON type found (never the value).
        found: &'static str,
    },
    /// A timestamp string that is not RFC 3339.
    #[error("{path}: not an RFC 3339 timestamp")]
    InvalidTime {
        /// Field path.
        path: String,
    },
    /// A timestamp whose year JSON cannot represent (outside 0000-9999).
    #[error("{path}: time {unix_seconds} (Unix seconds) is outside the years 0000-9999")]
    TimeOutOfRange {
        /// Field path.
        path: String,
        /// The stored Unix seconds.
        unix_seconds: i64,
    },
    /// A `[]byte` field whose JSON string is not standard padded base64.
    #[error("{path}: not valid base64")]
    InvalidBase64 {
        /// Field path.
        path: String,
    },
    /// `managedFields[].fieldsV1` raw bytes that are not JSON.
    #[error("{path}: raw bytes are not valid JSON")]
    InvalidFieldsV1 {
        /// Field path.
        path: String,
    },
    /// A JSON value that does not parse.
    #[error("invalid JSON ({category}) at line {line}, column {column}")]
    InvalidJson {
        /// `syntax`, `eof`, `data` or `io`.
        category: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A JSON storage value that is not an object.
    #[error("JSON storage value is not an object")]
    NotAnObject,
    /// CBOR storage (self-describe tag `d9 d9 f7`, alpha `CBORServingAndStorage`).
    #[error("CBOR storage values (self-describe tag d9d9f7) are not supported")]
    CborNotSupported,
    /// A value still encrypted by an encryption provider.
    #[error("value is encrypted (prefix k8s:enc:); decrypt it before decoding")]
    Encrypted,
    /// Neither protobuf, JSON nor CBOR.
    #[error("unrecognized storage encoding: the value starts with neither k8s\\0 (protobuf) nor {{ (JSON)")]
    UnrecognizedEncoding,
}

impl CodecError {
    pub(crate) fn invalid_field(path: &str, expected: &'static str, found: &Value) -> Self {
        CodecError::InvalidField {
            path: if path.is_empty() { "object" } else { path }.to_owned(),
            expected,
            found: json_type_name(found),
        }
    }

    /// Keeps only position and category: serde_json messages may quote input.
    pub(crate) fn from_json_error(error: serde_json::Error) -> Self {
        let category = match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        CodecError::InvalidJson {
            category,
            line: error.line(),
            column: error.column(),
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
