//! `k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta` and its parts, in both
//! directions, with gogo's emission rules (see spec g.4).

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{write_go_json, KeyOrder};
use super::model::{child_path, Fields, ObjectBuilder};
use super::time::Time;
use super::wire::{FieldHeader, Reader, Writer};
use super::CodecError;

/// Decodes one map entry message `{1: key, 2: value}`; returns the key and
/// the value bytes (`None` when the entry has no value field, Go's nil).
pub(crate) fn decode_map_entry<'a>(
    mut entry: Reader<'a>,
) -> Result<(String, Option<&'a [u8]>), CodecError> {
    let mut key = String::new();
    let mut value = None;
    while let Some(header) = entry.next_field()? {
        match header.number {
            1 => key = entry.read_string(header)?,
            2 => value = Some(entry.read_bytes(header)?),
            _ => entry.skip(header)?,
        }
    }
    Ok((key, value))
}

/// Decodes a `map<string,string>` entry into `map`.
pub(crate) fn decode_string_entry(
    reader: &mut Reader<'_>,
    header: FieldHeader,
    message: &'static str,
    map: &mut BTreeMap<String, String>,
) -> Result<(), CodecError> {
    let entry = reader.read_message(header, message)?;
    let offset = header.offset;
    let (key, value) = decode_map_entry(entry)?;
    let value = match value {
        None => String::new(),
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| CodecError::InvalidUtf8 {
                message,
                field: 2,
                offset,
            })?
            .to_owned(),
    };
    map.insert(key, value);
    Ok(())
}

/// Decodes a `map<string,bytes>` entry into `map`. gogo's decoder starts
/// each value as an empty (non-nil) slice, so a missing value reads as empty.
pub(crate) fn decode_bytes_entry(
    reader: &mut Reader<'_>,
    header: FieldHeader,
    message: &'static str,
    map: &mut BTreeMap<String, Option<Vec<u8>>>,
) -> Result<(), CodecError> {
    let entry = reader.read_message(header, message)?;
    let (key, value) = decode_map_entry(entry)?;
    map.insert(key, Some(value.unwrap_or_default().to_vec()));
    Ok(())
}

/// Writes a `map<string,string>`: one entry per key, keys ascending, the
/// value always written.
pub(crate) fn encode_string_map(writer: &mut Writer, field: u32, map: &BTreeMap<String, String>) {
    for (key, value) in map {
        let mut entry = Writer::new();
        entry.string_field(1, key);
        entry.string_field(2, value);
        writer.bytes_field(field, &entry.into_bytes());
    }
}

/// Writes a `map<string,bytes>`: a nil value (JSON `null`) omits field 2.
pub(crate) fn encode_bytes_map(
    writer: &mut Writer,
    field: u32,
    map: &BTreeMap<String, Option<Vec<u8>>>,
) {
    for (key, value) in map {
        let mut entry = Writer::new();
        entry.string_field(1, key);
        if let Some(bytes) = value {
            entry.bytes_field(2, bytes);
        }
        writer.bytes_field(field, &entry.into_bytes());
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct OwnerReference {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
}

impl OwnerReference {
    fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = OwnerReference::default();
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out.kind = reader.read_string(header)?,
                3 => out.name = reader.read_string(header)?,
                4 => out.uid = reader.read_string(header)?,
                5 => out.api_version = reader.read_string(header)?,
                6 => out.controller = Some(reader.read_bool(header)?),
                7 => out.block_owner_deletion = Some(reader.read_bool(header)?),
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    fn encode(&self, writer: &mut Writer) {
        writer.string_field(1, &self.kind);
        writer.string_field(3, &self.name);
        writer.string_field(4, &self.uid);
        writer.string_field(5, &self.api_version);
        if let Some(flag) = self.controller {
            writer.bool_field(6, flag);
        }
        if let Some(flag) = self.block_owner_deletion {
            writer.bool_field(7, flag);
        }
    }

    fn to_json(&self) -> Value {
        let mut out = ObjectBuilder::new();
        // None of these four has omitempty in Go.
        out.string("apiVersion", &self.api_version);
        out.string("kind", &self.kind);
        out.string("name", &self.name);
        out.string("uid", &self.uid);
        out.opt_bool("controller", self.controller);
        out.opt_bool("blockOwnerDeletion", self.block_owner_deletion);
        out.build()
    }

    fn from_json(fields: Fields<'_>) -> Result<Self, CodecError> {
        Ok(OwnerReference {
            api_version: fields.string("apiVersion")?,
            kind: fields.string("kind")?,
            name: fields.string("name")?,
            uid: fields.string("uid")?,
            controller: fields.opt_bool("controller")?,
            block_owner_deletion: fields.opt_bool("blockOwnerDeletion")?,
        })
    }
}

/// `FieldsV1` holds raw JSON; `None` inside `Some` is a message without its
/// `Raw` field (Go shows it as `null`).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ManagedFieldsEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<Time>,
    fields_type: String,
    fields_v1: Option<Option<Vec<u8>>>,
    subresource: String,
}

impl ManagedFieldsEntry {
    fn decode(mut reader: Reader<'_>) -> Result<Self, CodecError> {
        let mut out = ManagedFieldsEntry::default();
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => out.manager = reader.read_string(header)?,
                2 => out.operation = reader.read_string(header)?,
                3 => out.api_version = reader.read_string(header)?,
                4 => out.time = Some(Time::decode(reader.read_message(header, "Time")?)?),
                6 => out.fields_type = reader.read_string(header)?,
                7 => {
                    let mut fields_v1 = reader.read_message(header, "FieldsV1")?;
                    let mut raw = None;
                    while let Some(inner) = fields_v1.next_field()? {
                        match inner.number {
                            1 => raw = Some(fields_v1.read_bytes(inner)?.to_vec()),
                            _ => fields_v1.skip(inner)?,
                        }
                    }
                    out.fields_v1 = Some(raw);
                }
                8 => out.subresource = reader.read_string(header)?,
                _ => reader.skip(header)?,
            }
        }
        Ok(out)
    }

    fn encode(&self, writer: &mut Writer) {
        writer.string_field(1, &self.manager);
        writer.string_field(2, &self.operation);
        writer.string_field(3, &self.api_version);
        if let Some(time) = self.time {
            let mut nested = Writer::new();
            time.encode(&mut nested);
            writer.bytes_field(4, &nested.into_bytes());
        }
        writer.string_field(6, &self.fields_type);
        if let Some(raw) = &self.fields_v1 {
            let mut nested = Writer::new();
            if let Some(raw) = raw {
                nested.bytes_field(1, raw);
            }
            writer.bytes_field(7, &nested.into_bytes());
        }
        writer.string_field(8, &self.subresource);
    }

    fn to_json(&self, path: &str) -> Result<Value, CodecError> {
        let mut out = ObjectBuilder::new();
        out.string_omitempty("manager", &self.manager);
        out.string_omitempty("operation", &self.operation);
        out.string_omitempty("apiVersion", &self.api_version);
        // A set-but-zero pointer time would show as `null` in Go, which reads
        // back as unset; omitting it keeps decode(encode(x)) == x.
        if let Some(time) = self.time.filter(|time| !time.is_zero()) {
            out.value("time", time.to_json(&child_path(path, "time"))?);
        }
        out.string_omitempty("fieldsType", &self.fields_type);
        match &self.fields_v1 {
            None => {}
            // Go shows a FieldsV1 without Raw as `null`, i.e. unset.
            Some(None) => {}
            Some(Some(raw)) => {
                // Go copies Raw verbatim into the JSON, so it must be JSON.
                let parsed =
                    serde_json::from_slice(raw).map_err(|_| CodecError::InvalidFieldsV1 {
                        path: child_path(path, "fieldsV1"),
                    })?;
                out.value("fieldsV1", parsed);
            }
        }
        out.string_omitempty("subresource", &self.subresource);
        Ok(out.build())
    }

    fn from_json(fields: Fields<'_>) -> Result<Self, CodecError> {
        let path = fields.path();
        let time = match fields.get("time") {
            None => None,
            Some(value) => Some(Time::from_json(value, &child_path(path, "time"))?),
        };
        // Written compactly with the field-set key order structured-merge-diff
        // uses, so that what kube-apiserver stored re-encodes byte-identically.
        let fields_v1 = fields.get("fieldsV1").map(|value| {
            let mut raw = Vec::new();
            write_go_json(&mut raw, value, KeyOrder::FieldSet);
            Some(raw)
        });
        Ok(ManagedFieldsEntry {
            manager: fields.string("manager")?,
            operation: fields.string("operation")?,
            api_version: fields.string("apiVersion")?,
            time,
            fields_type: fields.string("fieldsType")?,
            fields_v1,
            subresource: fields.string("subresource")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjectMeta {
    name: String,
    generate_name: String,
    namespace: String,
    self_link: String,
    uid: String,
    resource_version: String,
    generation: i64,
    creation_timestamp: Time,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner_references: Vec<OwnerReference>,
    finalizers: Vec<String>,
    managed_fields: Vec<ManagedFieldsEntry>,
}

impl Default for ObjectMeta {
    fn default() -> Self {
        ObjectMeta {
            name: String::new(),
            generate_name: String::new(),
            namespace: String::new(),
            self_link: String::new(),
            uid: String::new(),
            resource_version: String::new(),
            generation: 0,
            creation_timestamp: Time::ZERO,
            deletion_timestamp: None,
            deletion_grace_period_seconds: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            owner_references: Vec::new(),
            finalizers: Vec::new(),
            managed_fields: Vec::new(),
        }
    }
}

impl ObjectMeta {
    /// Decodes into `self`, merging as protobuf does when the field repeats.
    pub(crate) fn decode_into(&mut self, mut reader: Reader<'_>) -> Result<(), CodecError> {
        while let Some(header) = reader.next_field()? {
            match header.number {
                1 => self.name = reader.read_string(header)?,
                2 => self.generate_name = reader.read_string(header)?,
                3 => self.namespace = reader.read_string(header)?,
                4 => self.self_link = reader.read_string(header)?,
                5 => self.uid = reader.read_string(header)?,
                6 => self.resource_version = reader.read_string(header)?,
                7 => self.generation = reader.read_int64(header)?,
                8 => self.creation_timestamp = Time::decode(reader.read_message(header, "Time")?)?,
                9 => {
                    self.deletion_timestamp =
                        Some(Time::decode(reader.read_message(header, "Time")?)?)
                }
                10 => self.deletion_grace_period_seconds = Some(reader.read_int64(header)?),
                11 => {
                    decode_string_entry(&mut reader, header, "ObjectMeta.labels", &mut self.labels)?
                }
                12 => decode_string_entry(
                    &mut reader,
                    header,
                    "ObjectMeta.annotations",
                    &mut self.annotations,
                )?,
                13 => self.owner_references.push(OwnerReference::decode(
                    reader.read_message(header, "OwnerReference")?,
                )?),
                14 => self.finalizers.push(reader.read_string(header)?),
                17 => self.managed_fields.push(ManagedFieldsEntry::decode(
                    reader.read_message(header, "ManagedFieldsEntry")?,
                )?),
                _ => reader.skip(header)?,
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        writer.string_field(1, &self.name);
        writer.string_field(2, &self.generate_name);
        writer.string_field(3, &self.namespace);
        writer.string_field(4, &self.self_link);
        writer.string_field(5, &self.uid);
        writer.string_field(6, &self.resource_version);
        writer.int64_field(7, self.generation);
        let mut created = Writer::new();
        self.creation_timestamp.encode(&mut created);
        writer.bytes_field(8, &created.into_bytes());
        if let Some(time) = self.deletion_timestamp {
            let mut deleted = Writer::new();
            time.encode(&mut deleted);
            writer.bytes_field(9, &deleted.into_bytes());
        }
        if let Some(seconds) = self.deletion_grace_period_seconds {
            writer.int64_field(10, seconds);
        }
        encode_string_map(writer, 11, &self.labels);
        encode_string_map(writer, 12, &self.annotations);
        for owner in &self.owner_references {
            let mut nested = Writer::new();
            owner.encode(&mut nested);
            writer.bytes_field(13, &nested.into_bytes());
        }
        for finalizer in &self.finalizers {
            writer.string_field(14, finalizer);
        }
        for entry in &self.managed_fields {
            let mut nested = Writer::new();
            entry.encode(&mut nested);
            writer.bytes_field(17, &nested.into_bytes());
        }
    }

    pub(crate) fn to_json(&self) -> Result<Value, CodecError> {
        let mut out = ObjectBuilder::new();
        out.string_omitempty("name", &self.name);
        out.string_omitempty("generateName", &self.generate_name);
        out.string_omitempty("namespace", &self.namespace);
        out.string_omitempty("selfLink", &self.self_link);
        out.string_omitempty("uid", &self.uid);
        out.string_omitempty("resourceVersion", &self.resource_version);
        if self.generation != 0 {
            out.value("generation", Value::from(self.generation));
        }
        // A struct, so `omitempty` never drops it: the zero time shows as null.
        out.value(
            "creationTimestamp",
            self.creation_timestamp
                .to_json("metadata.creationTimestamp")?,
        );
        if let Some(time) = self.deletion_timestamp.filter(|time| !time.is_zero()) {
            out.value(
                "deletionTimestamp",
                time.to_json("metadata.deletionTimestamp")?,
            );
        }
        out.opt_i64(
            "deletionGracePeriodSeconds",
            self.deletion_grace_period_seconds,
        );
        out.string_map_omitempty("labels", &self.labels);
        out.string_map_omitempty("annotations", &self.annotations);
        if !self.owner_references.is_empty() {
            let items = self
                .owner_references
                .iter()
                .map(OwnerReference::to_json)
                .collect();
            out.value("ownerReferences", Value::Array(items));
        }
        out.string_list_omitempty("finalizers", &self.finalizers);
        if !self.managed_fields.is_empty() {
            let items = self
                .managed_fields
                .iter()
                .enumerate()
                .map(|(index, entry)| entry.to_json(&format!("metadata.managedFields[{index}]")))
                .collect::<Result<_, _>>()?;
            out.value("managedFields", Value::Array(items));
        }
        Ok(out.build())
    }

    pub(crate) fn from_json(fields: Fields<'_>) -> Result<Self, CodecError> {
        let path = fields.path();
        let time_field = |key: &str| -> Result<Option<Time>, CodecError> {
            fields
                .get(key)
                .map(|value| Time::from_json(value, &child_path(path, key)))
                .transpose()
        };
        let owner_path = child_path(path, "ownerReferences");
        let owner_references = fields
            .list("ownerReferences", &owner_path)?
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let item_path = format!("{owner_path}[{index}]");
                OwnerReference::from_json(Fields::new(Some(value), &item_path)?)
            })
            .collect::<Result<_, _>>()?;
        let managed_path = child_path(path, "managedFields");
        let managed_fields = fields
            .list("managedFields", &managed_path)?
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let item_path = format!("{managed_path}[{index}]");
                ManagedFieldsEntry::from_json(Fields::new(Some(value), &item_path)?)
            })
            .collect::<Result<_, _>>()?;
        Ok(ObjectMeta {
            name: fields.string("name")?,
            generate_name: fields.string("generateName")?,
            namespace: fields.string("namespace")?,
            self_link: fields.string("selfLink")?,
            uid: fields.string("uid")?,
            resource_version: fields.string("resourceVersion")?,
            generation: fields.opt_i64("generation")?.unwrap_or(0),
            creation_timestamp: time_field("creationTimestamp")?.unwrap_or(Time::ZERO),
            deletion_timestamp: time_field("deletionTimestamp")?,
            deletion_grace_period_seconds: fields.opt_i64("deletionGracePeriodSeconds")?,
            labels: fields.string_map("labels")?,
            annotations: fields.string_map("annotations")?,
            owner_references,
            finalizers: fields.string_list("finalizers")?,
            managed_fields,
        })
    }
}
