//! Reading typed fields out of the JSON object model with Go `encoding/json`
//! semantics (missing or `null` means the zero value; a wrong JSON type is an
//! error naming the field path), and writing them back with `omitempty`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::CodecError;

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits
/// tolerated (it is not `Strict`).
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    GO_STD_BASE64.encode(bytes)
}

/// A JSON object being read, with its path for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    path: &'a str,
}

pub(crate) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Fields<'a> {
    /// `null` or missing reads as an empty object.
    pub(crate) fn new(value: Option<&'a Value>, path: &'a str) -> Result<Self, CodecError> {
        match value {
            None | Some(Value::Null) => Ok(Fields { map: None, path }),
            Some(Value::Object(map)) => Ok(Fields {
                map: Some(map),
                path,
            }),
            Some(other) => Err(CodecError::invalid_field(path, "object", other)),
        }
    }

    pub(crate) fn path(&self) -> &'a str {
        self.path
    }

    /// The field's value, treating `null` as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .and_then(|map| map.get(key))
            .filter(|value| !value.is_null())
    }

    pub(crate) fn string(&self, key: &str) -> Result<String, CodecError> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(CodecError::invalid_field(
                &child_path(self.path, key),
                "string",
                other,
            )),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, CodecError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(CodecError::invalid_field(
                &child_path(self.path, key),
                "boolean",
                other,
            )),
        }
    }

    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, CodecError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                CodecError::invalid_field(&child_path(self.path, key), "64-bit integer", value)
            }),
        }
    }

    pub(crate) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, CodecError> {
        let path = child_path(self.path, key);
        let mut out = BTreeMap::new();
        for (entry_key, value) in self.object_entries(key, &path)? {
            let text = match value {
                Value::Null => String::new(),
                Value::String(text) => text.clone(),
                other => {
                    return Err(CodecError::invalid_field(
                        &format!("{path}[{entry_key:?}]"),
                        "string",
                        other,
                    ))
                }
            };
            out.insert(entry_key.clone(), text);
        }
        Ok(out)
    }

    /// A `map[string][]byte`: values are base64; `null` is Go's nil slice.
    pub(crate) fn bytes_map(
        &self,
        key: &str,
    ) -> Result<BTreeMap<String, Option<Vec<u8>>>, CodecError> {
        let path = child_path(self.path, key);
        let mut out = BTreeMap::new();
        for (entry_key, value) in self.object_entries(key, &path)? {
            let bytes = match value {
                Value::Null => None,
                Value::String(text) => {
                    Some(
                        GO_STD_BASE64
                            .decode(text)
                            .map_err(|_| CodecError::InvalidBase64 {
                                path: format!("{path}[{entry_key:?}]"),
                            })?,
                    )
                }
                other => {
                    return Err(CodecError::invalid_field(
                        &format!("{path}[{entry_key:?}]"),
                        "base64 string",
                        other,
                    ))
                }
            };
            out.insert(entry_key.clone(), bytes);
        }
        Ok(out)
    }

    fn object_entries(
        &self,
        key: &str,
        path: &str,
    ) -> Result<impl Iterator<Item = (&'a String, &'a Value)>, CodecError> {
        match self.get(key) {
            None => Ok(None.into_iter().flatten()),
            Some(Value::Object(map)) => Ok(Some(map.iter()).into_iter().flatten()),
            Some(other) => Err(CodecError::invalid_field(path, "object", other)),
        }
    }

    pub(crate) fn string_list(&self, key: &str) -> Result<Vec<String>, CodecError> {
        let path = child_path(self.path, key);
        self.list(key, &path)?
            .iter()
            .enumerate()
            .map(|(index, value)| match value {
                Value::Null => Ok(String::new()),
                Value::String(text) => Ok(text.clone()),
                other => Err(CodecError::invalid_field(
                    &format!("{path}[{index}]"),
                    "string",
                    other,
                )),
            })
            .collect()
    }

    /// The elements of a list field (`null`/missing: none).
    pub(crate) fn list(&self, key: &str, path: &str) -> Result<&'a [Value], CodecError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(CodecError::invalid_field(path, "array", other)),
        }
    }
}

/// Builds a JSON object with Go's `omitempty` rules.
#[derive(Debug, Default)]
pub(crate) struct ObjectBuilder {
    map: Map<String, Value>,
}

impl ObjectBuilder {
    pub(crate) fn new() -> Self {
        ObjectBuilder::default()
    }

    pub(crate) fn build(self) -> Value {
        Value::Object(self.map)
    }

    pub(crate) fn value(&mut self, key: &str, value: Value) {
        self.map.insert(key.to_owned(), value);
    }

    /// A string without `omitempty`.
    pub(crate) fn string(&mut self, key: &str, value: &str) {
        self.value(key, Value::String(value.to_owned()));
    }

    pub(crate) fn string_omitempty(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.string(key, value);
        }
    }

    pub(crate) fn opt_bool(&mut self, key: &str, value: Option<bool>) {
        if let Some(flag) = value {
            self.value(key, Value::Bool(flag));
        }
    }

    pub(crate) fn opt_i64(&mut self, key: &str, value: Option<i64>) {
        if let Some(number) = value {
            self.value(key, Value::from(number));
        }
    }

    pub(crate) fn string_map_omitempty(&mut self, key: &str, map: &BTreeMap<String, String>) {
        if !map.is_empty() {
            let object = map
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            self.value(key, Value::Object(object));
        }
    }

    pub(crate) fn bytes_map_omitempty(
        &mut self,
        key: &str,
        map: &BTreeMap<String, Option<Vec<u8>>>,
    ) {
        if !map.is_empty() {
            let object = map
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        None => Value::Null,
                        Some(bytes) => Value::String(base64_encode(bytes)),
                    };
                    (k.clone(), value)
                })
                .collect();
            self.value(key, Value::Object(object));
        }
    }

    pub(crate) fn string_list_omitempty(&mut self, key: &str, list: &[String]) {
        if !list.is_empty() {
            let items = list.iter().map(|s| Value::String(s.clone())).collect();
            self.value(key, Value::Array(items));
        }
    }
}
