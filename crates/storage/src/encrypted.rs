//! `EncryptedStore`: storage keys and plaintext over the store and the live provider chain,
//! where upstream's etcd3 store applies its transformer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_encryption::{GroupResource, ProviderChain, ProviderId, ResourceTransformer};
use atrest_store::{CasUpdate, KeyValue, LeaseId, ListRequest, Store, StoreError, WatchEvent};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::chain::ChainHandle;
use crate::error::{ReadError, StorageError, UnreadableValue};
use crate::key::{Collection, KeyError, KeyPrefix, StorageKey};

/// Pages of this many keys are decrypted on several threads at once.
const PARALLEL_DECRYPT_MIN: usize = 64;
/// `delete_every` gives up after this many passes that each met a concurrent writer.
const DELETE_EVERY_PASSES: usize = 100;

/// Which way a value went through the providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Encrypted for writing (upstream's `to_storage`).
    ToStorage,
    /// Decrypted after reading (upstream's `from_storage`).
    FromStorage,
}

impl Direction {
    /// Upstream's `transformation_type` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToStorage => "to_storage",
            Direction::FromStorage => "from_storage",
        }
    }
}

/// Told about every transformation, for metrics.
pub trait TransformObserver: Send + Sync + fmt::Debug {
    /// One value went through the providers of `resource`; `provider` is who did it, or
    /// `None` when it failed.
    fn transformed(
        &self,
        resource: &GroupResource,
        direction: Direction,
        provider: Option<&ProviderId>,
        elapsed: Duration,
    );
}

/// A stored value, decrypted. `Debug` shows the plaintext's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct DecryptedValue {
    /// Where it is stored.
    pub key: StorageKey,
    /// The storage bytes before encryption (protobuf `k8s\0...` or JSON).
    pub plaintext: Vec<u8>,
    /// The provider and key that opened it.
    pub provider: ProviderId,
    /// Read by a provider or key that does not write: the next write must re-encrypt it.
    pub stale: bool,
    /// Revision of the write that produced this version.
    pub mod_revision: i64,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: LeaseId,
}

impl DecryptedValue {
    /// Whether this version is the one that created the key (a watch's ADDED).
    pub fn is_creation(&self) -> bool {
        self.create_revision == self.mod_revision
    }
}

impl fmt::Debug for DecryptedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptedValue")
            .field("key", &self.key)
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .field("provider", &self.provider)
            .field("stale", &self.stale)
            .field("mod_revision", &self.mod_revision)
            .finish_non_exhaustive()
    }
}

/// One value as read: decrypted, or why not.
pub type Entry = Result<DecryptedValue, UnreadableValue>;

/// A value written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The revision of the write (the object's new resourceVersion).
    pub revision: i64,
    /// The provider and key that encrypted it.
    pub provider: ProviderId,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The bytes were unchanged and the value was not stale: nothing was written (spec b.5).
    Unchanged,
    /// The new value was written.
    Written(Written),
}

/// A page request for [`EncryptedStore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys after this one (the last key of the previous page).
    pub start_after: Option<Vec<u8>>,
    /// At most this many keys; 0: all of them (the store pages internally).
    pub limit: usize,
    /// Read at this revision; `None`: the current one.
    pub revision: Option<i64>,
    /// Also count the keys after this page.
    pub count_remaining: bool,
}

/// One page of a collection. Values that cannot be read are reported beside the readable
/// ones, so one bad value never hides the others.
#[derive(Debug)]
pub struct Page {
    /// The readable values, in key order.
    pub values: Vec<DecryptedValue>,
    /// The values that could not be read, in key order.
    pub unreadable: Vec<UnreadableValue>,
    /// The revision the page was read at (pass it to the next page).
    pub revision: i64,
    /// The last key of the page (the next page starts after it).
    pub last_key: Option<Vec<u8>>,
    /// Whether keys remain after this page.
    pub more: bool,
    /// How many keys remain, when asked for.
    pub remaining: Option<i64>,
}

/// What [`EncryptedStore::scan`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanRange {
    /// Every object key under the prefix (atrest's own records excluded); each key's
    /// resource is inferred from its segments.
    Everything,
    /// The objects of one collection.
    Collection(Collection),
}

/// One page of a scan: every key in order, each decrypted or not.
#[derive(Debug)]
pub struct ScanPage {
    /// The entries, in key order.
    pub entries: Vec<Entry>,
    /// The revision the page was read at.
    pub revision: i64,
    /// The last key read (the next page starts after it).
    pub last_key: Option<Vec<u8>>,
    /// Whether keys remain.
    pub more: bool,
}

/// One page of [`EncryptedStore::scan_revisions`]: keys and their mod revisions.
#[derive(Debug)]
pub struct RevisionPage {
    /// (key, mod revision), in key order.
    pub keys: Vec<(Vec<u8>, i64)>,
    /// The revision the page was read at.
    pub revision: i64,
    /// The last key read (the next page starts after it).
    pub last_key: Option<Vec<u8>>,
    /// Whether keys remain.
    pub more: bool,
}

/// What happened to one value of a batched rewrite.
#[derive(Debug)]
pub enum RewriteOutcome {
    /// Re-encrypted with the write key at this revision.
    Rewritten(Written),
    /// A concurrent writer changed the value first (it was written with the write key by
    /// that writer, or must be read again and rewritten).
    Conflict,
    /// The key was deleted meanwhile.
    Deleted,
    /// The value could not be rewritten.
    Failed(StorageError),
}

/// A change seen by [`EncryptedStore::watch`].
#[derive(Debug)]
pub enum StorageEvent {
    /// A value was created or updated.
    Put {
        /// The new version.
        value: Entry,
        /// The version it replaced, when asked for and still known.
        prev: Option<Box<Entry>>,
    },
    /// A value was deleted.
    Delete {
        /// The deleted version.
        prev: Entry,
        /// The revision of the delete.
        revision: i64,
    },
}

/// A stream of decrypted watch events; it ends after yielding an error.
pub type EventStream = BoxStream<'static, Result<StorageEvent, StorageError>>;

/// The encrypted store: the only way objects reach or leave the store.
///
/// Every value written is encrypted with the first provider of its resource, with the full
/// storage key as authenticated data; every value read is decrypted by upstream's algorithm
/// and marked stale when it was not read by the first provider's first key. Writes are
/// compare-and-swap on the mod revision the caller read.
#[derive(Debug, Clone)]
pub struct EncryptedStore {
    store: Arc<dyn Store>,
    chain: ChainHandle,
    prefix: KeyPrefix,
    observer: Option<Arc<dyn TransformObserver>>,
}

impl EncryptedStore {
    /// The encrypted view of `store` under `prefix`, with the chain in `chain`.
    pub fn new(store: Arc<dyn Store>, chain: ChainHandle, prefix: KeyPrefix) -> Self {
        EncryptedStore {
            store,
            chain,
            prefix,
            observer: None,
        }
    }

    /// Reports every transformation to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn TransformObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The key prefix (`--etcd-prefix`).
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The provider chain in force.
    pub fn chain(&self) -> &ChainHandle {
        &self.chain
    }

    /// The store underneath, for what is not an object value: revisions, health, leases and
    /// atrest's own records (`crate::servers`). Object values go through this type.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The objects of `resource` (in `namespace`).
    pub fn collection(
        &self,
        resource: &GroupResource,
        namespace: Option<&str>,
    ) -> Result<Collection, KeyError> {
        self.prefix.collection(resource, namespace)
    }

    /// The key of one object.
    pub fn key(
        &self,
        resource: &GroupResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<StorageKey, KeyError> {
        StorageKey::object(&self.prefix, resource, namespace, name)
    }

    /// The current version of `key`, decrypted. An unreadable value is
    /// [`StorageError::Unreadable`], which carries its mod revision.
    pub async fn get(&self, key: &StorageKey) -> Result<Option<DecryptedValue>, StorageError> {
        let Some(kv) = self.store.get(key.as_bytes()).await? else {
            return Ok(None);
        };
        let chain = self.chain.current();
        let transformer = chain.for_resource(key.resource());
        Ok(Some(
            open(&transformer, self.observer.as_deref(), key.clone(), kv).await?,
        ))
    }

    /// The stored bytes of `key` as they are, for showing them (`atrest get -o raw`).
    pub async fn get_stored(&self, key: &StorageKey) -> Result<Option<KeyValue>, StorageError> {
        Ok(self.store.get(key.as_bytes()).await?)
    }

    /// Creates `key` (fails with `AlreadyExists` if it exists).
    pub async fn create(
        &self,
        key: &StorageKey,
        plaintext: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Written, StorageError> {
        let (stored, provider) = self.encrypt(key, plaintext).await?;
        let revision = self.store.create(key.as_bytes(), &stored, lease).await?;
        Ok(Written { revision, provider })
    }

    /// Replaces `existing` with `plaintext`, compare-and-swap on its mod revision and keeping
    /// its lease. Unchanged bytes of a value that is not stale are not written.
    pub async fn update(
        &self,
        existing: &DecryptedValue,
        plaintext: &[u8],
    ) -> Result<Updated, StorageError> {
        if !existing.stale && existing.plaintext == plaintext {
            return Ok(Updated::Unchanged);
        }
        let (stored, provider) = self.encrypt(&existing.key, plaintext).await?;
        let revision = self
            .store
            .update(
                existing.key.as_bytes(),
                &stored,
                existing.mod_revision,
                Some(existing.lease),
            )
            .await?;
        Ok(Updated::Written(Written { revision, provider }))
    }

    /// Deletes `key` if it is still at `expected_mod_revision`; returns the delete's
    /// revision.
    pub async fn delete(
        &self,
        key: &StorageKey,
        expected_mod_revision: i64,
    ) -> Result<i64, StorageError> {
        let (revision, _) = self
            .store
            .delete(key.as_bytes(), Some(expected_mod_revision))
            .await?;
        Ok(revision)
    }

    /// Deletes every key of a collection, readable or not, each compare-and-swap on the
    /// revision it was listed at (a value changed meanwhile is listed again and deleted
    /// then). Returns how many keys were deleted.
    pub async fn delete_every(&self, collection: &Collection) -> Result<usize, StorageError> {
        let mut deleted = 0;
        for _ in 0..DELETE_EVERY_PASSES {
            let page = self
                .store
                .list(ListRequest {
                    prefix: collection.prefix().as_bytes().to_vec(),
                    limit: 500,
                    ..ListRequest::default()
                })
                .await?;
            if page.items.is_empty() {
                return Ok(deleted);
            }
            for kv in &page.items {
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => deleted += 1,
                    Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "deleting everything under {}: concurrent writers kept changing it",
            collection.prefix()
        ))
        .into())
    }

    async fn encrypt(
        &self,
        key: &StorageKey,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, ProviderId), StorageError> {
        let chain = self.chain.current();
        let transformer = chain.for_resource(key.resource());
        seal(&transformer, self.observer.as_deref(), key, plaintext)
            .await
            .map_err(|e| StorageError::Encrypt(Box::new(e)))
    }

    /// One page of a collection, decrypted.
    pub async fn list(
        &self,
        collection: &Collection,
        options: ListOptions,
    ) -> Result<Page, StorageError> {
        let response = self
            .store
            .list(ListRequest {
                prefix: collection.prefix().as_bytes().to_vec(),
                start_after: options.start_after,
                limit: options.limit,
                revision: options.revision,
                count_remaining: options.count_remaining,
                keys_only: false,
            })
            .await?;
        let last_key = response.items.last().map(|kv| kv.key.clone());
        let keyed = response
            .items
            .into_iter()
            .map(|kv| (collection.key_of(&kv.key), kv))
            .collect();
        let mut values = Vec::new();
        let mut unreadable = Vec::new();
        for entry in self.open_all(keyed).await {
            match entry {
                Ok(v) => values.push(v),
                Err(u) => unreadable.push(u),
            }
        }
        Ok(Page {
            values,
            unreadable,
            revision: response.revision,
            last_key,
            more: response.more,
            remaining: response.remaining_count,
        })
    }

    /// One page of every key in `range`, after `start_after`, at `revision` (`None`: the
    /// current one). Pages of a scan read at the first page's revision see one snapshot.
    pub async fn scan(
        &self,
        range: &ScanRange,
        start_after: Option<Vec<u8>>,
        revision: Option<i64>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        let response = self
            .list_range(range, start_after, revision, limit, false)
            .await?;
        let last_key = response.items.last().map(|kv| kv.key.clone());
        let keyed = response
            .items
            .into_iter()
            .filter_map(|kv| {
                let key = match range {
                    ScanRange::Everything => match StorageKey::parse(&kv.key, &self.prefix) {
                        Err(KeyError::Reserved { .. }) => return None,
                        other => other,
                    },
                    ScanRange::Collection(c) => c.key_of(&kv.key),
                };
                Some((key, kv))
            })
            .collect();
        Ok(ScanPage {
            entries: self.open_all(keyed).await,
            revision: response.revision,
            last_key,
            more: response.more,
        })
    }

    /// Every retained version (current and not yet compacted) of every key in `range`,
    /// decrypted, a page at a time in no particular order: what `status --history` audits
    /// for old plaintext and old keys. atrest's own records are left out.
    pub fn history_pages<'a>(
        &'a self,
        range: &'a ScanRange,
        prefix: &'a [u8],
    ) -> BoxStream<'a, Result<Vec<Entry>, StorageError>> {
        self.store
            .history_pages(prefix)
            .then(move |page| async move {
                let page = page?;
                let keyed = page
                    .into_iter()
                    .filter_map(|kv| {
                        let key = match range {
                            ScanRange::Everything => {
                                match StorageKey::parse(&kv.key, &self.prefix) {
                                    Err(KeyError::Reserved { .. }) => return None,
                                    other => other,
                                }
                            }
                            ScanRange::Collection(c) => c.key_of(&kv.key),
                        };
                        Some((key, kv))
                    })
                    .collect();
                Ok(self.open_all(keyed).await)
            })
            .boxed()
    }

    /// The key prefix a range covers.
    pub fn range_bytes(&self, range: &ScanRange) -> Vec<u8> {
        self.range_prefix(range).into_bytes()
    }

    /// About how many keys `range` holds at `revision` (for progress bars: it also counts
    /// atrest's own records under the prefix).
    pub async fn count(
        &self,
        range: &ScanRange,
        revision: Option<i64>,
    ) -> Result<u64, StorageError> {
        let response = self
            .store
            .list(ListRequest {
                prefix: self.range_prefix(range).into_bytes(),
                limit: 1,
                revision,
                count_remaining: true,
                ..ListRequest::default()
            })
            .await?;
        let remaining = u64::try_from(response.remaining_count.unwrap_or(0)).unwrap_or(0);
        Ok(response.items.len() as u64 + remaining)
    }

    /// One raw page of a range (values stay inside this type).
    async fn list_range(
        &self,
        range: &ScanRange,
        start_after: Option<Vec<u8>>,
        revision: Option<i64>,
        limit: usize,
        keys_only: bool,
    ) -> Result<atrest_store::ListResponse, StorageError> {
        Ok(self
            .store
            .list(ListRequest {
                prefix: self.range_prefix(range).into_bytes(),
                start_after,
                limit,
                revision,
                keys_only,
                ..ListRequest::default()
            })
            .await?)
    }

    fn range_prefix(&self, range: &ScanRange) -> String {
        match range {
            ScanRange::Everything => self.prefix.with_slash(),
            ScanRange::Collection(c) => c.prefix().to_owned(),
        }
    }

    /// One page of the keys in `range` with their mod revisions, without values (etcd sends
    /// none): enough to tell which objects changed since a revision. atrest's own records
    /// are left out, as in [`EncryptedStore::scan`].
    pub async fn scan_revisions(
        &self,
        range: &ScanRange,
        start_after: Option<Vec<u8>>,
        revision: Option<i64>,
        limit: usize,
    ) -> Result<RevisionPage, StorageError> {
        let response = self
            .list_range(range, start_after, revision, limit, true)
            .await?;
        let last_key = response.items.last().map(|kv| kv.key.clone());
        let reserved = self.prefix.reserved_root();
        let keys = response
            .items
            .into_iter()
            .filter(|kv| {
                !matches!(range, ScanRange::Everything) || !kv.key.starts_with(reserved.as_bytes())
            })
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        Ok(RevisionPage {
            keys,
            revision: response.revision,
            last_key,
            more: response.more,
        })
    }

    /// Decrypts many values, on several threads when there are many.
    async fn open_all(&self, keyed: Vec<(Result<StorageKey, KeyError>, KeyValue)>) -> Vec<Entry> {
        let chain = self.chain.current();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if keyed.len() < PARALLEL_DECRYPT_MIN || workers < 2 {
            return open_batch(&chain, self.observer.as_deref(), keyed).await;
        }
        let chunk = keyed.len().div_ceil(workers);
        let mut keyed = keyed;
        let mut chunks = Vec::new();
        while !keyed.is_empty() {
            let rest = keyed.split_off(chunk.min(keyed.len()));
            chunks.push(std::mem::replace(&mut keyed, rest));
        }
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let chain = chain.clone();
                let observer = self.observer.clone();
                tokio::spawn(async move { open_batch(&chain, observer.as_deref(), c).await })
            })
            .collect();
        let mut entries = Vec::new();
        for task in tasks {
            match task.await {
                Ok(mut part) => entries.append(&mut part),
                // A panic in a decrypt task is a bug; the caller gets the failure, not a
                // silently shorter page.
                Err(e) => {
                    return vec![Err(UnreadableValue {
                        key: Vec::new(),
                        mod_revision: 0,
                        error: ReadError::Key(KeyError::Malformed {
                            key: format!("decrypt task failed: {e}"),
                        }),
                    })]
                }
            }
        }
        entries
    }

    /// Re-encrypts each value's plaintext with its resource's write key and writes it back,
    /// compare-and-swap on the mod revision it was read at, in batched requests. A lost
    /// compare or a deleted key affects only that value.
    pub async fn rewrite(
        &self,
        values: &[DecryptedValue],
    ) -> Result<Vec<RewriteOutcome>, StorageError> {
        let chain = self.chain.current();
        let mut transformers: HashMap<&GroupResource, ResourceTransformer> = HashMap::new();
        let mut sealed: Vec<Result<ProviderId, StorageError>> = Vec::with_capacity(values.len());
        let mut updates = Vec::new();
        for value in values {
            let transformer = transformers
                .entry(value.key.resource())
                .or_insert_with(|| chain.for_resource(value.key.resource()));
            match seal(
                transformer,
                self.observer.as_deref(),
                &value.key,
                &value.plaintext,
            )
            .await
            {
                Ok((stored, provider)) => {
                    updates.push(CasUpdate {
                        key: value.key.as_bytes().to_vec(),
                        value: stored,
                        expected_mod_revision: value.mod_revision,
                        lease: value.lease,
                    });
                    sealed.push(Ok(provider));
                }
                Err(e) => sealed.push(Err(StorageError::Encrypt(Box::new(e)))),
            }
        }
        let mut results = self.store.update_many(updates).await?.into_iter();
        let mut outcomes = Vec::with_capacity(values.len());
        for s in sealed {
            let outcome = match s {
                Ok(provider) => match results.next() {
                    Some(Ok(revision)) => RewriteOutcome::Rewritten(Written { revision, provider }),
                    Some(Err(StoreError::Conflict { .. })) => RewriteOutcome::Conflict,
                    Some(Err(StoreError::NotFound { .. })) => RewriteOutcome::Deleted,
                    Some(Err(e)) => RewriteOutcome::Failed(e.into()),
                    None => RewriteOutcome::Failed(
                        StoreError::Backend("the store answered fewer updates than sent".into())
                            .into(),
                    ),
                },
                Err(e) => RewriteOutcome::Failed(e),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Decrypted events of `collection` from revision `from` (0: only future events).
    /// `with_prev`: also decrypt the version each event replaced.
    pub async fn watch(
        &self,
        collection: &Collection,
        from: i64,
        with_prev: bool,
    ) -> Result<EventStream, StorageError> {
        let events = self
            .store
            .watch(collection.prefix().as_bytes(), from)
            .await?;
        let this = self.clone();
        let collection = collection.clone();
        Ok(events
            .then(move |event| {
                let this = this.clone();
                let collection = collection.clone();
                async move {
                    let event = event?;
                    let chain = this.chain.current();
                    let transformer = chain.for_resource(collection.resource());
                    let observer = this.observer.as_deref();
                    let read = |kv: KeyValue| {
                        let key = collection.key_of(&kv.key);
                        let transformer = &transformer;
                        async move {
                            match key {
                                Ok(key) => open(transformer, observer, key, kv).await,
                                Err(e) => Err(UnreadableValue {
                                    key: kv.key,
                                    mod_revision: kv.mod_revision,
                                    error: e.into(),
                                }),
                            }
                        }
                    };
                    Ok(match event {
                        WatchEvent::Put { kv, prev } => {
                            let value = read(kv).await;
                            let prev = match prev.filter(|_| with_prev) {
                                Some(p) => Some(Box::new(read(p).await)),
                                None => None,
                            };
                            StorageEvent::Put { value, prev }
                        }
                        WatchEvent::Delete { prev, revision } => StorageEvent::Delete {
                            prev: read(prev).await,
                            revision,
                        },
                    })
                }
            })
            .boxed())
    }
}

/// Encrypts with the write provider of `transformer`, the key as authenticated data.
async fn seal(
    transformer: &ResourceTransformer,
    observer: Option<&dyn TransformObserver>,
    key: &StorageKey,
    plaintext: &[u8],
) -> Result<(Vec<u8>, ProviderId), atrest_encryption::TransformError> {
    let started = Instant::now();
    let result = transformer.encrypt(plaintext, key.as_bytes()).await;
    if let Some(o) = observer {
        o.transformed(
            key.resource(),
            Direction::ToStorage,
            result.as_ref().ok().map(|e| &e.provider),
            started.elapsed(),
        );
    }
    result.map(|e| (e.stored, e.provider))
}

/// Decrypts one value with `transformer`.
async fn open(
    transformer: &ResourceTransformer,
    observer: Option<&dyn TransformObserver>,
    key: StorageKey,
    kv: KeyValue,
) -> Entry {
    let started = Instant::now();
    let result = transformer.decrypt(&kv.value, key.as_bytes()).await;
    if let Some(o) = observer {
        o.transformed(
            key.resource(),
            Direction::FromStorage,
            result.as_ref().ok().map(|d| &d.provider),
            started.elapsed(),
        );
    }
    match result {
        Ok(d) => Ok(DecryptedValue {
            key,
            plaintext: d.plaintext,
            provider: d.provider,
            stale: d.stale,
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            lease: kv.lease,
        }),
        Err(e) => Err(UnreadableValue {
            key: kv.key,
            mod_revision: kv.mod_revision,
            error: ReadError::Transform(e),
        }),
    }
}

/// Decrypts values in order, looking each resource's transformer up once.
async fn open_batch(
    chain: &ProviderChain,
    observer: Option<&dyn TransformObserver>,
    keyed: Vec<(Result<StorageKey, KeyError>, KeyValue)>,
) -> Vec<Entry> {
    let mut transformers: HashMap<GroupResource, ResourceTransformer> = HashMap::new();
    let mut entries = Vec::with_capacity(keyed.len());
    for (key, kv) in keyed {
        let entry = match key {
            Ok(key) => {
                let transformer = transformers
                    .entry(key.resource().clone())
                    .or_insert_with(|| chain.for_resource(key.resource()));
                open(transformer, observer, key, kv).await
            }
            Err(e) => Err(UnreadableValue {
                key: kv.key,
                mod_revision: kv.mod_revision,
                error: e.into(),
            }),
        };
        entries.push(entry);
        // Decrypting a large page is CPU work with no await that yields: give the other
        // requests on this worker their turn (tokio's cooperative budget).
        tokio::task::consume_budget().await;
    }
    entries
}
