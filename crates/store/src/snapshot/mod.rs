//! A read-only store over an etcd snapshot file (`etcdctl snapshot save`), or a copy of an
//! etcd member's `member/snap/db`: the recovery path from a backup, with no etcd running.
//!
//! etcd keeps its key space in the bbolt bucket `key`: each write is a record keyed by its
//! revision (`main: u64 BE, '_', sub: u64 BE`, plus `t` for a delete's tombstone) whose
//! value is an `mvccpb.KeyValue` protobuf. The state at a revision is the latest record of
//! each key at or below it, minus the keys whose latest record is a tombstone. Bucket
//! `meta` holds `finishedCompactRev`. A snapshot from `etcdctl snapshot save` ends in the
//! SHA-256 of the database, which is checked.
//!
//! The file is read into memory once; the current state is indexed by key (values stay in
//! the file's bytes). Every write operation fails with a clear error.

mod bolt;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::Digest;

use crate::types::StoreMetrics;
use crate::{KeyValue, LeaseId, ListRequest, ListResponse, Result, Store, StoreError, WatchStream};

use bolt::{Bolt, Bucket};

const SHA256_LEN: usize = 32;

/// One version of a key, its value as a range of the file.
#[derive(Debug, Clone)]
struct Version {
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
    value: Range<usize>,
}

/// One record of the `key` bucket.
#[derive(Debug)]
struct Record {
    revision: i64,
    tombstone: bool,
    key: Range<usize>,
    version: Version,
}

/// An etcd snapshot file, open for reading. `Debug` shows no keys or values.
pub struct SnapshotStore {
    file: PathBuf,
    bolt: Bolt,
    keys: Bucket,
    current: BTreeMap<Vec<u8>, Version>,
    revision: i64,
    compacted: i64,
    metrics: Arc<StoreMetrics>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("file", &self.file)
            .field("bolt", &self.bolt)
            .field("keys", &self.current.len())
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .finish()
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> std::result::Result<u64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| "protobuf varint runs past the record".to_string())?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("protobuf varint longer than 10 bytes".into())
}

/// Decodes an `mvccpb.KeyValue` at `base..base + bytes.len()` of the file: key, revisions,
/// lease and the value's range.
fn decode_key_value(
    bytes: &[u8],
    base: usize,
) -> std::result::Result<(Range<usize>, Version), String> {
    let mut at = 0;
    let mut key = base..base;
    let mut version = Version {
        create_revision: 0,
        mod_revision: 0,
        lease: 0,
        value: base..base,
    };
    while at < bytes.len() {
        let tag = varint(bytes, &mut at)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                // Go's int64 fields: two's complement in the varint.
                let v = varint(bytes, &mut at)? as i64;
                match field {
                    2 => version.create_revision = v,
                    3 => version.mod_revision = v,
                    6 => version.lease = v,
                    _ => {}
                }
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| "protobuf length overflows".to_string())?;
                let end = at
                    .checked_add(len)
                    .filter(|e| *e <= bytes.len())
                    .ok_or_else(|| "protobuf field runs past the record".to_string())?;
                match field {
                    1 => key = base + at..base + end,
                    5 => version.value = base + at..base + end,
                    _ => {}
                }
                at = end;
            }
            1 => at += 8,
            5 => at += 4,
            other => return Err(format!("protobuf wire type {other} in a KeyValue")),
        }
        if at > bytes.len() {
            return Err("protobuf field runs past the record".into());
        }
    }
    Ok((key, version))
}

/// A revision key: 8 bytes big-endian main revision, `_`, 8 bytes sub revision, and `t` for
/// a tombstone.
fn decode_revision(key: &[u8]) -> std::result::Result<(i64, bool), String> {
    let tombstone = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return Err(format!("revision key of {} bytes", key.len())),
    };
    if key[8] != b'_' {
        return Err("revision key without its `_` separator".into());
    }
    let mut main = [0u8; 8];
    main.copy_from_slice(&key[..8]);
    let main = i64::from_be_bytes(main);
    if main < 0 {
        return Err(format!("negative revision {main}"));
    }
    Ok((main, tombstone))
}

impl SnapshotStore {
    /// Reads and indexes the snapshot file.
    pub async fn open(file: &Path) -> Result<Self> {
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(file))
            .await
            .map_err(|e| StoreError::Backend(format!("reading the snapshot: {e}")))?
    }

    fn open_blocking(file: PathBuf) -> Result<Self> {
        let bad = |message: String| {
            StoreError::Backend(format!("etcd snapshot {}: {message}", file.display()))
        };
        let mut data = std::fs::read(&file).map_err(|e| bad(format!("cannot read: {e}")))?;
        // etcd's own test for a snapshot checksum: a size 32 bytes past a multiple of 512.
        if data.len() % 512 == SHA256_LEN && data.len() > SHA256_LEN {
            let split = data.len() - SHA256_LEN;
            let digest = sha2::Sha256::digest(&data[..split]);
            if digest.as_slice() != &data[split..] {
                return Err(bad(
                    "the SHA-256 at its end does not match its contents: the file is corrupt \
                     or truncated"
                        .into(),
                ));
            }
            data.truncate(split);
        }
        let bolt = Bolt::open(data).map_err(&bad)?;
        let keys = bolt
            .bucket(b"key")
            .map_err(&bad)?
            .ok_or_else(|| bad("no `key` bucket: not an etcd database".into()))?;
        let compacted = match bolt.bucket(b"meta").map_err(&bad)? {
            Some(meta) => {
                let mut found = 0;
                bolt.walk(meta, &mut |entry| {
                    if bolt.bytes(entry.key.clone()) == b"finishedCompactRev" {
                        let value = bolt.bytes(entry.value.clone());
                        let first: [u8; 8] = value
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .ok_or_else(|| "finishedCompactRev is truncated".to_string())?;
                        found = i64::from_be_bytes(first);
                    }
                    Ok(())
                })
                .map_err(&bad)?;
                found
            }
            None => 0,
        };
        let mut store = SnapshotStore {
            file: file.clone(),
            bolt,
            keys,
            current: BTreeMap::new(),
            revision: compacted,
            compacted,
            metrics: Arc::new(StoreMetrics::default()),
        };
        let mut current = BTreeMap::new();
        let mut revision = compacted;
        store
            .records(&mut |record| {
                revision = revision.max(record.revision);
                let key = store.bolt.bytes(record.key.clone()).to_vec();
                if record.tombstone {
                    current.remove(&key);
                } else {
                    current.insert(key, record.version);
                }
                Ok(())
            })
            .map_err(&bad)?;
        store.current = current;
        store.revision = revision;
        Ok(store)
    }

    /// Every record of the `key` bucket, in revision order.
    fn records(
        &self,
        f: &mut dyn FnMut(Record) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        self.bolt.walk(self.keys, &mut |entry| {
            if entry.is_bucket {
                return Err("a nested bucket inside the `key` bucket".into());
            }
            let (revision, tombstone) = decode_revision(self.bolt.bytes(entry.key.clone()))
                .map_err(|e| format!("record at offset {}: {e}", entry.key.start))?;
            let (key, version) =
                decode_key_value(self.bolt.bytes(entry.value.clone()), entry.value.start)
                    .map_err(|e| format!("record of revision {revision}: {e}"))?;
            if key.is_empty() {
                return Err(format!("record of revision {revision} has no key"));
            }
            f(Record {
                revision,
                tombstone,
                key,
                version,
            })
        })
    }

    fn key_value(&self, key: &[u8], version: &Version, with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if with_value {
                self.bolt.bytes(version.value.clone()).to_vec()
            } else {
                Vec::new()
            },
            create_revision: version.create_revision,
            mod_revision: version.mod_revision,
            lease: version.lease,
        }
    }

    /// The state at an older revision (a walk of the records up to it).
    fn state_at(&self, revision: i64) -> Result<BTreeMap<Vec<u8>, Version>> {
        let mut state = BTreeMap::new();
        self.records(&mut |record| {
            if record.revision <= revision {
                let key = self.bolt.bytes(record.key.clone()).to_vec();
                if record.tombstone {
                    state.remove(&key);
                } else {
                    state.insert(key, record.version);
                }
            }
            Ok(())
        })
        .map_err(|e| StoreError::Backend(format!("etcd snapshot {}: {e}", self.file.display())))?;
        Ok(state)
    }

    fn read_only(&self) -> StoreError {
        StoreError::InvalidArgument(format!(
            "the etcd snapshot {} is read-only (restore it with `etcdutl snapshot restore`, \
             start etcd on it and give --etcd-servers to write)",
            self.file.display()
        ))
    }

    fn list_in(&self, state: &BTreeMap<Vec<u8>, Version>, request: &ListRequest) -> Vec<KeyValue> {
        let start = match &request.start_after {
            Some(after) if after.as_slice() >= request.prefix.as_slice() => {
                std::ops::Bound::Excluded(after.clone())
            }
            _ => std::ops::Bound::Included(request.prefix.clone()),
        };
        state
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&request.prefix))
            .map(|(k, v)| self.key_value(k, v, !request.keys_only))
            .collect()
    }
}

#[async_trait]
impl Store for SnapshotStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.current.get(key).map(|v| self.key_value(key, v, true)))
    }

    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        let revision = match request.revision {
            Some(r) if r > 0 => r,
            _ => self.revision,
        };
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: self.compacted,
            });
        }
        let older;
        let state = if revision == self.revision {
            &self.current
        } else {
            older = self.state_at(revision)?;
            &older
        };
        let mut items = self.list_in(state, &request);
        let total = items.len();
        let more = request.limit != 0 && total > request.limit;
        if more {
            items.truncate(request.limit);
        }
        let remaining = total - items.len();
        Ok(ListResponse {
            items,
            revision,
            more,
            remaining_count: request
                .count_remaining
                .then(|| i64::try_from(remaining).unwrap_or(i64::MAX)),
        })
    }

    async fn create(&self, _key: &[u8], _value: &[u8], _lease: Option<LeaseId>) -> Result<i64> {
        Err(self.read_only())
    }

    async fn update(
        &self,
        _key: &[u8],
        _value: &[u8],
        _expected_mod_revision: i64,
        _lease: Option<LeaseId>,
    ) -> Result<i64> {
        Err(self.read_only())
    }

    async fn update_many(&self, _updates: Vec<crate::CasUpdate>) -> Result<Vec<Result<i64>>> {
        Err(self.read_only())
    }

    async fn delete(
        &self,
        _key: &[u8],
        _expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        Err(self.read_only())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.revision)
    }

    async fn watch(&self, _prefix: &[u8], _from_revision: i64) -> Result<WatchStream> {
        Err(StoreError::InvalidArgument(format!(
            "the etcd snapshot {} cannot be watched: it does not change",
            self.file.display()
        )))
    }

    async fn compact(&self, _revision: i64) -> Result<()> {
        Err(self.read_only())
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.compacted)
    }

    async fn grant_lease(&self, _ttl: Duration) -> Result<LeaseId> {
        Err(self.read_only())
    }

    async fn keep_alive(&self, _lease: LeaseId) -> Result<()> {
        Err(self.read_only())
    }

    async fn revoke_lease(&self, _lease: LeaseId) -> Result<()> {
        Err(self.read_only())
    }

    async fn history(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        self.records(&mut |record| {
            let key = self.bolt.bytes(record.key.clone());
            if !record.tombstone && key.starts_with(prefix) {
                out.push(self.key_value(key, &record.version, true));
            }
            Ok(())
        })
        .map_err(|e| StoreError::Backend(format!("etcd snapshot {}: {e}", self.file.display())))?;
        // Records come in revision order; a stable sort by key keeps it within each key.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn metrics(&self) -> Arc<StoreMetrics> {
        Arc::clone(&self.metrics)
    }

    fn describe(&self) -> String {
        format!(
            "etcd snapshot {} (read-only, revision {})",
            self.file.display(),
            self.revision
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_protobuf_and_revision_keys() {
        // key "/a" (field 1), create 5 (2), mod 7 (3), version 2 (4), value "xy" (5), lease 9 (6)
        let record = [
            0x0a, 2, b'/', b'a', 0x10, 5, 0x18, 7, 0x20, 2, 0x2a, 2, b'x', b'y', 0x30, 9,
        ];
        let (key, v) = decode_key_value(&record, 100).unwrap();
        assert_eq!(key, 102..104);
        assert_eq!(v.value, 112..114);
        assert_eq!((v.create_revision, v.mod_revision, v.lease), (5, 7, 9));
        for cut in 1..record.len() {
            // Every truncation is an error or a shorter record, never a panic.
            let _ = decode_key_value(&record[..cut], 0);
        }
        assert!(decode_key_value(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], 0).is_err());
        let mut rev = 42u64.to_be_bytes().to_vec();
        rev.push(b'_');
        rev.extend(0u64.to_be_bytes());
        assert_eq!(decode_revision(&rev).unwrap(), (42, false));
        rev.push(b't');
        assert_eq!(decode_revision(&rev).unwrap(), (42, true));
        assert!(decode_revision(&rev[..10]).is_err());
    }
}
