//! core/v1 `Secret`, `ConfigMap` and `Namespace` messages.

use std::collections::BTreeMap;

use serde_json::Value;

use super::meta::{
    decode_bytes_entry, decode_string_entry, encode_bytes_map, encode_string_map, ObjectMeta,
};
use super::model::{child_path, Fields, ObjectBuilder};
use super::time::Time;
use super::wire::{Reader, Writer};
use super::CodecError;

/// Starts the JSON form of a decoded object: TypeMeta then metadata.
fn object_head(
    api_version: &str,
    kind: &str,
    metadata: &ObjectMeta,
) -> Result<ObjectBuilder, CodecError> {
    let mut out = ObjectBuilder::new();
    out.string_omitempty("kind", kind);
    out.string_omitempty("apiVersion", api_version);
    // ObjectMeta is a struct, so `omitempty` never drops it.
    out.value("metadata", metadata.to_json()?);
    Ok(out)
}

fn metadata_from_json(object: Fields<'_>) -> Result<ObjectMeta, CodecError> {
    ObjectMeta::from_json(Fields::new(object.get("metadata"), "metadata")?)
}

fn encode_metadata(writer: &mut Writer, metadata: &ObjectMeta) {
    let mut nested = Writer::new();
    metadata.encode(&mut nested);
    writer.bytes_field(1, &nested.into_bytes());
}

#[derive(Debug, Default)]
pub(crate) struct Secret {
    metadata: ObjectMeta,
    immutable: Option<bool>,
    data: BTreeMap<String, Option<Vec<u8>>>,
    string_data: BTreeMap<String, String>,
    secret_type: String,
}

impl Secret {
    pub(crate) fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = Secret::default();
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out
                    .metadata
                    .decode_into(reader.read_message(header, "ObjectMeta")?)?,
                2 => decode_bytes_entry(&mut reader, header, "Secret.data", &mut out.data)?,
                3 => out.secret_type = reader.read_string(header)?,
                4 => decode_string_entry(
                    &mut reader,
                    header,
                    "Secret.stringData",
                    &mut out.string_data,
                )?,
                5 => out.immutable = Some(reader.read_bool(header)?),
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        encode_metadata(writer, &self.metadata);
        encode_bytes_map(writer, 2, &self.data);
        writer.string_field(3, &self.secret_type);
        encode_string_map(writer, 4, &self.string_data);
        if let Some(flag) = self.immutable {
            writer.bool_field(5, flag);
        }
    }

    pub(crate) fn to_json(&self, api_version: &str, kind: &str) -> Result<Value, CodecError> {
        let mut out = object_head(api_version, kind, &self.metadata)?;
        out.opt_bool("immutable", self.immutable);
        out.bytes_map_omitempty("data", &self.data);
        out.string_map_omitempty("stringData", &self.string_data);
        out.string_omitempty("type", &self.secret_type);
        Ok(out.build())
    }

    pub(crate) fn from_json(object: Fields<'_>) -> Result<Self, CodecError> {
        Ok(Secret {
            metadata: metadata_from_json(object)?,
            immutable: object.opt_bool("immutable")?,
            data: object.bytes_map("data")?,
            string_data: object.string_map("stringData")?,
            secret_type: object.string("type")?,
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct ConfigMap {
    metadata: ObjectMeta,
    immutable: Option<bool>,
    data: BTreeMap<String, String>,
    binary_data: BTreeMap<String, Option<Vec<u8>>>,
}

impl ConfigMap {
    pub(crate) fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = ConfigMap::default();
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out
                    .metadata
                    .decode_into(reader.read_message(header, "ObjectMeta")?)?,
                2 => decode_string_entry(&mut reader, header, "ConfigMap.data", &mut out.data)?,
                3 => decode_bytes_entry(
                    &mut reader,
                    header,
                    "ConfigMap.binaryData",
                    &mut out.binary_data,
                )?,
                4 => out.immutable = Some(reader.read_bool(header)?),
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        encode_metadata(writer, &self.metadata);
        encode_string_map(writer, 2, &self.data);
        encode_bytes_map(writer, 3, &self.binary_data);
        if let Some(flag) = self.immutable {
            writer.bool_field(4, flag);
        }
    }

    pub(crate) fn to_json(&self, api_version: &str, kind: &str) -> Result<Value, CodecError> {
        let mut out = object_head(api_version, kind, &self.metadata)?;
        out.opt_bool("immutable", self.immutable);
        out.string_map_omitempty("data", &self.data);
        out.bytes_map_omitempty("binaryData", &self.binary_data);
        Ok(out.build())
    }

    pub(crate) fn from_json(object: Fields<'_>) -> Result<Self, CodecError> {
        Ok(ConfigMap {
            metadata: metadata_from_json(object)?,
            immutable: object.opt_bool("immutable")?,
            data: object.string_map("data")?,
            binary_data: object.bytes_map("binaryData")?,
        })
    }
}

#[derive(Debug, Clone)]
struct NamespaceCondition {
    condition_type: String,
    status: String,
    last_transition_time: Time,
    reason: String,
    message: String,
}

impl NamespaceCondition {
    fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = NamespaceCondition {
            condition_type: String::new(),
            status: String::new(),
            last_transition_time: Time::ZERO,
            reason: String::new(),
            message: String::new(),
        };
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out.condition_type = reader.read_string(header)?,
                2 => out.status = reader.read_string(header)?,
                4 => out.last_transition_time = Time::decode(reader.read_message(header, "Time")?)?,
                5 => out.reason = reader.read_string(header)?,
                6 => out.message = reader.read_string(header)?,
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    fn encode(&self, writer: &mut Writer) {
        writer.string_field(1, &self.condition_type);
        writer.string_field(2, &self.status);
        let mut time = Writer::new();
        self.last_transition_time.encode(&mut time);
        writer.bytes_field(4, &time.into_bytes());
        writer.string_field(5, &self.reason);
        writer.string_field(6, &self.message);
    }

    fn to_json(&self, path: &str) -> Result<Value, CodecError> {
        let mut out = ObjectBuilder::new();
        // `type` and `status` have no omitempty in Go.
        out.string("type", &self.condition_type);
        out.string("status", &self.status);
        out.value(
            "lastTransitionTime",
            self.last_transition_time
                .to_json(&child_path(path, "lastTransitionTime"))?,
        );
        out.string_omitempty("reason", &self.reason);
        out.string_omitempty("message", &self.message);
        Ok(out.build())
    }

    fn from_json(fields: Fields<'_>) -> Result<Self, CodecError> {
        let time_path = child_path(fields.path(), "lastTransitionTime");
        let last_transition_time = match fields.get("lastTransitionTime") {
            None => Time::ZERO,
            Some(value) => Time::from_json(value, &time_path)?,
        };
        Ok(NamespaceCondition {
            condition_type: fields.string("type")?,
            status: fields.string("status")?,
            last_transition_time,
            reason: fields.string("reason")?,
            message: fields.string("message")?,
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Namespace {
    metadata: ObjectMeta,
    finalizers: Vec<String>,
    phase: String,
    conditions: Vec<NamespaceCondition>,
}

impl Namespace {
    pub(crate) fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = Namespace::default();
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out
                    .metadata
                    .decode_into(reader.read_message(header, "ObjectMeta")?)?,
                2 => {
                    let mut spec = reader.read_message(header, "NamespaceSpec")?;
                    while let Some(inner) = spec.next_field()? {
                        match inner.number {
                            1 => out.finalizers.push(spec.read_string(inner)?),
                            _ => spec.skip(inner)?,
                        }
                    }
                }
                3 => {
                    let mut status = reader.read_message(header, "NamespaceStatus")?;
                    while let Some(inner) = status.next_field()? {
                        match inner.number {
                            1 => out.phase = status.read_string(inner)?,
                            2 => out.conditions.push(NamespaceCondition::decode(
                                status.read_message(inner, "NamespaceCondition")?,
                            )?),
                            _ => status.skip(inner)?,
                        }
                    }
                }
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        encode_metadata(writer, &self.metadata);
        let mut spec = Writer::new();
        for finalizer in &self.finalizers {
            spec.string_field(1, finalizer);
        }
        writer.bytes_field(2, &spec.into_bytes());
        let mut status = Writer::new();
        status.string_field(1, &self.phase);
        for condition in &self.conditions {
            let mut nested = Writer::new();
            condition.encode(&mut nested);
            status.bytes_field(2, &nested.into_bytes());
        }
        writer.bytes_field(3, &status.into_bytes());
    }

    pub(crate) fn to_json(&self, api_version: &str, kind: &str) -> Result<Value, CodecError> {
        let mut out = object_head(api_version, kind, &self.metadata)?;
        // spec and status are structs: always present, possibly `{}`.
        let mut spec = ObjectBuilder::new();
        spec.string_list_omitempty("finalizers", &self.finalizers);
        out.value("spec", spec.build());
        let mut status = ObjectBuilder::new();
        status.string_omitempty("phase", &self.phase);
        if !self.conditions.is_empty() {
            let items = self
                .conditions
                .iter()
                .enumerate()
                .map(|(index, condition)| condition.to_json(&format!("status.conditions[{index}]")))
                .collect::<Result<_, _>>()?;
            status.value("conditions", Value::Array(items));
        }
        out.value("status", status.build());
        Ok(out.build())
    }

    pub(crate) fn from_json(object: Fields<'_>) -> Result<Self, CodecError> {
        let spec = Fields::new(object.get("spec"), "spec")?;
        let status = Fields::new(object.get("status"), "status")?;
        let conditions = status
            .list("conditions", "status.conditions")?
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let path = format!("status.conditions[{index}]");
                NamespaceCondition::from_json(Fields::new(Some(value), &path)?)
            })
            .collect::<Result<_, _>>()?;
        Ok(Namespace {
            metadata: metadata_from_json(object)?,
            finalizers: spec.string_list("finalizers")?,
            phase: status.string("phase")?,
            conditions,
        })
    }
}
