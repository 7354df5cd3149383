//! The encrypted storage layer against both real backends: what reaches the store is
//! ciphertext under upstream's keys, reads report provider, key and staleness, writes are
//! compare-and-swap, and one unreadable value never hides the others.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use atrest_encryption::kms::NoKmsConnector;
use atrest_encryption::{
    EncryptionConfig, GroupResource, ParseOptions, ProviderChain, ProviderKind,
};
use atrest_storage::{
    ChainHandle, EncryptedStore, KeyPrefix, ListOptions, RewriteOutcome, ScanRange, StorageError,
    StorageEvent, StorageKey, Updated,
};
use atrest_store::{CompactionPolicy, Store, StoreConfig};
use atrest_testkit::etcd::EtcdCluster;
use futures::StreamExt;

const AESGCM_1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="; // 32 bytes
const AESGCM_2: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="; // 32 bytes

fn chain(yaml: &str) -> ProviderChain {
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "test.yaml", ParseOptions::default()).unwrap();
    ProviderChain::build(&config, &NoKmsConnector).unwrap()
}

fn aesgcm(first: (&str, &str), second: Option<(&str, &str)>) -> String {
    let mut keys = format!(
        "          - name: {}\n            secret: {}\n",
        first.0, first.1
    );
    if let Some((name, secret)) = second {
        keys.push_str(&format!(
            "          - name: {name}\n            secret: {secret}\n"
        ));
    }
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n{keys}      - identity: {{}}\n"
    )
}

fn secrets() -> GroupResource {
    GroupResource::new("", "secrets")
}

/// What keeps a store's data alive until the test ends (dropped, never read).
#[allow(dead_code)]
enum Backing {
    Dir(tempfile::TempDir),
    Etcd(EtcdCluster),
}

async fn embedded() -> (Arc<dyn Store>, Backing) {
    let dir = tempfile::tempdir().unwrap();
    let store = atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.path().to_path_buf(),
        compaction: CompactionPolicy::disabled(),
    })
    .await
    .unwrap();
    (store, Backing::Dir(dir))
}

async fn etcd() -> (Arc<dyn Store>, Backing) {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let store = atrest_store::open(StoreConfig::etcd(cluster.endpoints()))
        .await
        .unwrap();
    (store, Backing::Etcd(cluster))
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _backing) = crate::embedded().await;
                    crate::$name(store).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _backing) = crate::etcd().await;
                    crate::$name(store).await;
                }
            )*
        }
    };
}

both_backends!(
    reads_report_provider_key_and_staleness,
    updates_are_compare_and_swap_and_skip_unchanged,
    lists_report_unreadable_values_beside_the_others,
    scans_infer_resources_and_skip_atrest_records,
    batched_rewrite_moves_values_to_the_write_key,
    watch_decrypts_events,
);

async fn reads_report_provider_key_and_staleness(store: Arc<dyn Store>) {
    let handle = ChainHandle::new(chain(&aesgcm(("one", AESGCM_1), None)));
    let storage = EncryptedStore::new(store.clone(), handle.clone(), KeyPrefix::default());
    let key = storage.key(&secrets(), Some("ns"), "a").unwrap();
    assert_eq!(key.as_str(), "/registry/secrets/ns/a");
    let written = storage.create(&key, b"k8s\0plain", None).await.unwrap();
    assert_eq!(written.provider.to_string(), "aesgcm:one");
    // The store holds upstream's envelope, not the plaintext.
    let raw = store.get(key.as_bytes()).await.unwrap().unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:one:"));
    assert!(!raw.value.windows(b"plain".len()).any(|w| w == b"plain"));
    let value = storage.get(&key).await.unwrap().unwrap();
    assert_eq!(value.plaintext, b"k8s\0plain");
    assert_eq!(value.provider.kind, ProviderKind::AesGcm);
    assert_eq!(value.provider.name.as_deref(), Some("one"));
    assert!(!value.stale);
    assert_eq!(value.mod_revision, written.revision);
    // A new first key: the old value reads, stale.
    handle.replace(chain(&aesgcm(("two", AESGCM_2), Some(("one", AESGCM_1)))));
    let value = storage.get(&key).await.unwrap().unwrap();
    assert!(value.stale);
    assert_eq!(value.provider.to_string(), "aesgcm:one");
    // Without the old key it cannot be read; the error names the key, resource and keys
    // tried, and carries the revision a delete needs.
    handle.replace(chain(&aesgcm(("two", AESGCM_2), None)));
    match storage.get(&key).await {
        Err(StorageError::Unreadable(u)) => {
            assert_eq!(u.mod_revision, written.revision);
            let text = u.to_string();
            assert!(text.contains("/registry/secrets/ns/a"), "{text}");
            assert!(text.contains("secrets"), "{text}");
        }
        other => panic!("expected unreadable, got {other:?}"),
    }
    storage.delete(&key, written.revision).await.unwrap();
    assert!(storage.get(&key).await.unwrap().is_none());
    // Bytes are bound to their key: the same value moved to another key does not open.
    handle.replace(chain(&aesgcm(("one", AESGCM_1), None)));
    let a = storage.key(&secrets(), Some("ns"), "moved-from").unwrap();
    let b = storage.key(&secrets(), Some("ns"), "moved-to").unwrap();
    storage.create(&a, b"k8s\0x", None).await.unwrap();
    let raw = store.get(a.as_bytes()).await.unwrap().unwrap();
    store.create(b.as_bytes(), &raw.value, None).await.unwrap();
    assert!(matches!(
        storage.get(&b).await,
        Err(StorageError::Unreadable(_))
    ));
}

async fn updates_are_compare_and_swap_and_skip_unchanged(store: Arc<dyn Store>) {
    let handle = ChainHandle::new(chain(&aesgcm(("one", AESGCM_1), None)));
    let storage = EncryptedStore::new(store.clone(), handle.clone(), KeyPrefix::default());
    let key = storage.key(&secrets(), Some("ns"), "u").unwrap();
    storage.create(&key, b"v1", None).await.unwrap();
    let v1 = storage.get(&key).await.unwrap().unwrap();
    assert_eq!(
        storage.update(&v1, b"v1").await.unwrap(),
        Updated::Unchanged
    );
    let Updated::Written(w2) = storage.update(&v1, b"v2").await.unwrap() else {
        panic!("a change must be written");
    };
    // The version read before is now outdated: compare-and-swap refuses it.
    let err = storage.update(&v1, b"v3").await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let err = storage.delete(&key, v1.mod_revision).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    // A stale value is rewritten even when its bytes are unchanged.
    handle.replace(chain(&aesgcm(("two", AESGCM_2), Some(("one", AESGCM_1)))));
    let v2 = storage.get(&key).await.unwrap().unwrap();
    assert_eq!(v2.mod_revision, w2.revision);
    assert!(v2.stale);
    let Updated::Written(w3) = storage.update(&v2, b"v2").await.unwrap() else {
        panic!("a stale value must be rewritten");
    };
    assert_eq!(w3.provider.to_string(), "aesgcm:two");
    let v3 = storage.get(&key).await.unwrap().unwrap();
    assert!(!v3.stale);
    assert_eq!(v3.plaintext, b"v2");
    let err = storage.create(&key, b"again", None).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

async fn lists_report_unreadable_values_beside_the_others(store: Arc<dyn Store>) {
    let handle = ChainHandle::new(chain(&aesgcm(("one", AESGCM_1), None)));
    let storage = EncryptedStore::new(store.clone(), handle.clone(), KeyPrefix::default());
    for name in ["a", "b", "c", "d"] {
        let key = storage.key(&secrets(), Some("ns"), name).unwrap();
        storage.create(&key, name.as_bytes(), None).await.unwrap();
    }
    // "b" is tampered with, and a key outside the layout sits under the collection.
    let b = store.get(b"/registry/secrets/ns/b").await.unwrap().unwrap();
    let mut tampered = b.value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    store
        .update(b"/registry/secrets/ns/b", &tampered, b.mod_revision, None)
        .await
        .unwrap();
    store
        .create(b"/registry/secrets/ns/x/extra", b"?", None)
        .await
        .unwrap();
    let collection = storage.collection(&secrets(), None).unwrap();
    let page = storage
        .list(&collection, ListOptions::default())
        .await
        .unwrap();
    let names: Vec<&str> = page.values.iter().map(|v| v.key.name()).collect();
    assert_eq!(names, ["a", "c", "d"]);
    let bad: Vec<String> = page.unreadable.iter().map(|u| u.key_text()).collect();
    assert_eq!(
        bad,
        ["/registry/secrets/ns/b", "/registry/secrets/ns/x/extra"]
    );
    // Pages chain at one revision.
    let first = storage
        .list(
            &collection,
            ListOptions {
                limit: 2,
                count_remaining: true,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(first.more);
    assert_eq!(first.remaining, Some(3));
    let key = storage.key(&secrets(), Some("ns"), "e").unwrap();
    storage.create(&key, b"e", None).await.unwrap();
    let second = storage
        .list(
            &collection,
            ListOptions {
                start_after: first.last_key.clone(),
                revision: Some(first.revision),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = second.values.iter().map(|v| v.key.name()).collect();
    assert_eq!(names, ["c", "d"], "the later write is not in this snapshot");
    // Deleting a whole collection removes unreadable values too.
    assert_eq!(storage.delete_every(&collection).await.unwrap(), 6);
    let page = storage
        .list(&collection, ListOptions::default())
        .await
        .unwrap();
    assert!(page.values.is_empty() && page.unreadable.is_empty());
}

async fn scans_infer_resources_and_skip_atrest_records(store: Arc<dyn Store>) {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n          - name: one\n            secret: {AESGCM_1}\n  - resources: ['*.cr.bar.com']\n    providers:\n      - secretbox:\n          keys:\n          - name: sb\n            secret: {AESGCM_2}\n"
    );
    let handle = ChainHandle::new(chain(&yaml));
    let prefix = KeyPrefix::new("/custom/prefix");
    let storage = EncryptedStore::new(store.clone(), handle, prefix.clone());
    let foos = GroupResource::new("cr.bar.com", "foos");
    let cm = GroupResource::new("", "configmaps");
    for (resource, ns, name) in [
        (&secrets(), Some("ns"), "s"),
        (&foos, Some("ns"), "f"),
        (&cm, Some("ns"), "c"),
    ] {
        let key = storage.key(resource, ns, name).unwrap();
        storage.create(&key, b"x", None).await.unwrap();
    }
    store
        .create(b"/custom/prefix/atrest/servers/me", b"{}", None)
        .await
        .unwrap();
    store
        .create(b"/other/secrets/ns/outside", b"x", None)
        .await
        .unwrap();
    let page = storage
        .scan(&ScanRange::Everything, None, None, 0)
        .await
        .unwrap();
    let seen: Vec<(String, String)> = page
        .entries
        .iter()
        .map(|e| {
            let v = e.as_ref().unwrap();
            (v.key.resource().to_string(), v.provider.to_string())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("configmaps".to_string(), "identity".to_string()),
            ("foos.cr.bar.com".to_string(), "secretbox:sb".to_string()),
            ("secrets".to_string(), "aesgcm:one".to_string()),
        ]
    );
    // Paged scans see every key once.
    let mut after = None;
    let mut revision = None;
    let mut count = 0;
    loop {
        let page = storage
            .scan(&ScanRange::Everything, after.clone(), revision, 1)
            .await
            .unwrap();
        count += page.entries.len();
        revision = Some(page.revision);
        after = page.last_key.clone();
        if !page.more {
            break;
        }
    }
    assert_eq!(count, 3);
    let parsed = StorageKey::parse(b"/custom/prefix/cr.bar.com/foos/ns/f", &prefix).unwrap();
    assert_eq!(parsed.resource(), &foos);
}

async fn batched_rewrite_moves_values_to_the_write_key(store: Arc<dyn Store>) {
    let handle = ChainHandle::new(chain(&aesgcm(("one", AESGCM_1), None)));
    let storage = EncryptedStore::new(store.clone(), handle.clone(), KeyPrefix::default());
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    for i in 0..200 {
        let key = storage
            .key(&secrets(), Some("ns"), &format!("s{i:03}"))
            .unwrap();
        let lease = (i == 0).then_some(lease);
        storage
            .create(&key, format!("value {i}").as_bytes(), lease)
            .await
            .unwrap();
    }
    handle.replace(chain(&aesgcm(("two", AESGCM_2), Some(("one", AESGCM_1)))));
    let collection = storage.collection(&secrets(), None).unwrap();
    let page = storage
        .list(&collection, ListOptions::default())
        .await
        .unwrap();
    assert!(page.values.iter().all(|v| v.stale));
    // Concurrent writers: s005 is changed, s006 deleted before the rewrite lands.
    let s005 = &page.values[5];
    storage.update(s005, b"changed").await.unwrap();
    storage
        .delete(&page.values[6].key, page.values[6].mod_revision)
        .await
        .unwrap();
    let outcomes = storage.rewrite(&page.values).await.unwrap();
    assert_eq!(outcomes.len(), 200);
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (5, RewriteOutcome::Conflict) | (6, RewriteOutcome::Deleted) => {}
            (5 | 6, other) => panic!("s{i:03}: {other:?}"),
            (_, RewriteOutcome::Rewritten(w)) => assert_eq!(w.provider.to_string(), "aesgcm:two"),
            (_, other) => panic!("s{i:03}: {other:?}"),
        }
    }
    let page = storage
        .list(&collection, ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.values.len(), 199);
    for v in &page.values {
        assert!(!v.stale, "{}", v.key);
        assert_eq!(v.provider.to_string(), "aesgcm:two", "{}", v.key);
        let expected = if v.key.name() == "s005" {
            "changed".to_string()
        } else {
            format!("value {}", v.key.name()[1..].parse::<u32>().unwrap())
        };
        assert_eq!(v.plaintext, expected.as_bytes(), "{}", v.key);
    }
    assert_eq!(page.values[0].lease, lease, "the rewrite kept the lease");
}

async fn watch_decrypts_events(store: Arc<dyn Store>) {
    let handle = ChainHandle::new(chain(&aesgcm(("one", AESGCM_1), None)));
    let storage = EncryptedStore::new(store.clone(), handle, KeyPrefix::default());
    let collection = storage.collection(&secrets(), Some("ns")).unwrap();
    let mut events = storage.watch(&collection, 0, true).await.unwrap();
    let key = collection.key(None, "w").unwrap();
    storage.create(&key, b"one", None).await.unwrap();
    let v = storage.get(&key).await.unwrap().unwrap();
    storage.update(&v, b"two").await.unwrap();
    let v = storage.get(&key).await.unwrap().unwrap();
    storage.delete(&key, v.mod_revision).await.unwrap();
    match next(&mut events).await {
        StorageEvent::Put { value, prev: None } => {
            let value = value.unwrap();
            assert!(value.is_creation());
            assert_eq!(value.plaintext, b"one");
        }
        other => panic!("{other:?}"),
    }
    match next(&mut events).await {
        StorageEvent::Put {
            value,
            prev: Some(prev),
        } => {
            assert_eq!(value.unwrap().plaintext, b"two");
            assert_eq!(prev.unwrap().plaintext, b"one");
        }
        other => panic!("{other:?}"),
    }
    match next(&mut events).await {
        StorageEvent::Delete { prev, revision } => {
            assert_eq!(prev.unwrap().plaintext, b"two");
            assert!(revision > v.mod_revision);
        }
        other => panic!("{other:?}"),
    }
}

async fn next(events: &mut atrest_storage::EventStream) -> StorageEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("no watch error")
}
