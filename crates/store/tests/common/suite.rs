//! The conformance suite: every function runs unchanged against both backends.

use std::sync::Arc;
use std::time::Duration;

use atrest_store::{KeyValue, ListRequest, Store, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;

use super::eventually;

type DynStore = Arc<dyn Store>;

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10s"),
    }
}

async fn list_all(store: &DynStore, prefix: &[u8], revision: Option<i64>) -> Vec<KeyValue> {
    store
        .list(ListRequest {
            prefix: prefix.to_vec(),
            revision,
            ..ListRequest::default()
        })
        .await
        .unwrap()
        .items
}

fn keys(items: &[KeyValue]) -> Vec<Vec<u8>> {
    items.iter().map(|kv| kv.key.clone()).collect()
}

pub async fn create_get_and_already_exists(store: DynStore) {
    let key = b"/registry/secrets/default/db";
    assert_eq!(store.get(key).await.unwrap(), None);
    let before = store.current_revision().await.unwrap();
    let revision = store.create(key, b"v1", None).await.unwrap();
    assert!(revision > before);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.create_revision, revision);
    assert_eq!(kv.mod_revision, revision);
    assert_eq!(kv.lease, 0);

    let err = store.create(key, b"v2", None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { key: k } if k == key),
        "{err}"
    );
    assert!(
        err.to_string().contains("/registry/secrets/default/db"),
        "{err}"
    );
    assert_eq!(store.get(key).await.unwrap().unwrap().value, b"v1");

    // Empty values and binary keys are fine; empty keys are not.
    let binary = b"/registry/bin/\x00\xff";
    store.create(binary, b"", None).await.unwrap();
    assert_eq!(store.get(binary).await.unwrap().unwrap().value, b"");
    assert!(matches!(
        store.create(b"", b"x", None).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

pub async fn update_compare_and_swap(store: DynStore) {
    let key = b"/registry/configmaps/ns/cm";
    let created = store.create(key, b"one", None).await.unwrap();
    let updated = store.update(key, b"two", created, None).await.unwrap();
    assert!(updated > created);
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.value, b"two");
    assert_eq!(kv.create_revision, created);
    assert_eq!(kv.mod_revision, updated);

    // A stale revision loses and is told what is there now.
    match store.update(key, b"three", created, None).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, created);
            let actual = actual.unwrap();
            assert_eq!(actual.mod_revision, updated);
            assert_eq!(actual.value, b"two");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get(key).await.unwrap().unwrap().value, b"two");

    let missing = store
        .update(b"/registry/configmaps/ns/missing", b"x", 1, None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

pub async fn delete_compare_and_swap(store: DynStore) {
    let key = b"/registry/secrets/ns/gone";
    let created = store.create(key, b"secret", None).await.unwrap();
    let updated = store.update(key, b"secret2", created, None).await.unwrap();

    let stale = store.delete(key, Some(created)).await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict { actual: Some(kv), .. }) if kv.mod_revision == updated),
        "{stale:?}"
    );
    let (revision, prev) = store.delete(key, Some(updated)).await.unwrap();
    assert!(revision > updated);
    assert_eq!(prev.value, b"secret2");
    assert_eq!(prev.mod_revision, updated);
    assert_eq!(prev.create_revision, created);
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(matches!(
        store.delete(key, None).await,
        Err(StoreError::NotFound { .. })
    ));

    // Re-create after delete starts a new life; unconditional delete works.
    let recreated = store.create(key, b"again", None).await.unwrap();
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.create_revision, recreated);
    let (_, prev) = store.delete(key, None).await.unwrap();
    assert_eq!(prev.value, b"again");
}

pub async fn revisions_are_global_and_increasing(store: DynStore) {
    let mut last = store.current_revision().await.unwrap();
    for i in 0..5 {
        let key = format!("/registry/r/{i}");
        let created = store.create(key.as_bytes(), b"x", None).await.unwrap();
        assert!(created > last);
        let updated = store
            .update(key.as_bytes(), b"y", created, None)
            .await
            .unwrap();
        assert!(updated > created);
        let (deleted, _) = store.delete(key.as_bytes(), None).await.unwrap();
        assert!(deleted > updated);
        last = deleted;
    }
    // A failed write does not consume a revision.
    let current = store.current_revision().await.unwrap();
    let _ = store.update(b"/registry/r/none", b"x", 5, None).await;
    assert_eq!(store.current_revision().await.unwrap(), current);
}

pub async fn list_prefix_boundaries(store: DynStore) {
    let all: [&[u8]; 8] = [
        b"/a",
        b"/a/",
        b"/a/x",
        b"/a/y/z",
        b"/a/\xff\xfe",
        b"/a0",
        b"/b",
        b"/a-b",
    ];
    for key in all {
        store.create(key, key, None).await.unwrap();
    }
    let under_a = list_all(&store, b"/a/", None).await;
    assert_eq!(
        keys(&under_a),
        vec![
            b"/a/".to_vec(),
            b"/a/x".to_vec(),
            b"/a/y/z".to_vec(),
            b"/a/\xff\xfe".to_vec()
        ]
    );
    for kv in &under_a {
        assert_eq!(kv.value, kv.key);
    }
    // The empty prefix lists everything, in byte order.
    let everything = keys(&list_all(&store, b"", None).await);
    let mut expected: Vec<Vec<u8>> = all.iter().map(|k| k.to_vec()).collect();
    expected.sort();
    assert_eq!(everything, expected);
    assert!(list_all(&store, b"/c/", None).await.is_empty());
}

pub async fn paginated_list_reads_one_revision(store: DynStore) {
    for i in 0..10 {
        let key = format!("/p/{i:02}");
        store.create(key.as_bytes(), b"old", None).await.unwrap();
    }
    let first = store
        .list(ListRequest {
            prefix: b"/p/".to_vec(),
            limit: 3,
            count_remaining: true,
            ..ListRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        keys(&first.items),
        vec![b"/p/00".to_vec(), b"/p/01".to_vec(), b"/p/02".to_vec()]
    );
    assert!(first.more);
    assert_eq!(first.remaining_count, Some(7));
    let snapshot = first.revision;

    // Writes between pages must not show up in later pages of the same list.
    let five = store.get(b"/p/05").await.unwrap().unwrap();
    store
        .update(b"/p/05", b"new", five.mod_revision, None)
        .await
        .unwrap();
    store.delete(b"/p/07", None).await.unwrap();
    store.create(b"/p/05a", b"new", None).await.unwrap();

    let mut items = first.items;
    let mut start_after = items.last().map(|kv| kv.key.clone());
    let mut pages = 1;
    loop {
        let page = store
            .list(ListRequest {
                prefix: b"/p/".to_vec(),
                start_after: start_after.clone(),
                limit: 3,
                revision: Some(snapshot),
                // Counted at the list's revision, on the second page only.
                count_remaining: pages == 1,
                keys_only: false,
            })
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        pages += 1;
        start_after = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items);
        let expected_remaining = (pages == 2).then_some(4);
        assert_eq!(page.remaining_count, expected_remaining);
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 4);
    let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("/p/{i:02}").into_bytes()).collect();
    assert_eq!(keys(&items), expected);
    assert!(items.iter().all(|kv| kv.value == b"old"));

    let now = keys(&list_all(&store, b"/p/", None).await);
    assert!(now.contains(&b"/p/05a".to_vec()));
    assert!(!now.contains(&b"/p/07".to_vec()));
}

pub async fn list_at_revision_and_revision_errors(store: DynStore) {
    let key = b"/h/k";
    let r1 = store.create(key, b"v1", None).await.unwrap();
    let r2 = store.update(key, b"v2", r1, None).await.unwrap();
    let (r3, _) = store.delete(key, None).await.unwrap();
    store.create(b"/h/other", b"o", None).await.unwrap();

    assert_eq!(list_all(&store, b"/h/", Some(r1)).await[0].value, b"v1");
    assert_eq!(list_all(&store, b"/h/", Some(r2)).await[0].value, b"v2");
    assert_eq!(
        keys(&list_all(&store, b"/h/", Some(r3)).await),
        Vec::<Vec<u8>>::new()
    );

    let current = store.current_revision().await.unwrap();
    let future = store
        .list(ListRequest {
            prefix: b"/h/".to_vec(),
            revision: Some(current + 100),
            ..ListRequest::default()
        })
        .await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );

    store.compact(r3).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), r3);
    match store
        .list(ListRequest {
            prefix: b"/h/".to_vec(),
            revision: Some(r1),
            ..ListRequest::default()
        })
        .await
    {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, r1);
            assert_eq!(compact_revision, r3);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The state at the compacted revision and everything after stays readable.
    assert!(list_all(&store, b"/h/", Some(r3)).await.is_empty());
    assert_eq!(
        keys(&list_all(&store, b"/h/", None).await),
        vec![b"/h/other".to_vec()]
    );
    // Compacting again at or below the compacted revision is refused.
    assert!(matches!(
        store.compact(r2).await,
        Err(StoreError::Compacted { .. })
    ));
}

pub async fn watch_delivers_puts_and_deletes_with_previous(store: DynStore) {
    store.create(b"/w/before", b"b", None).await.unwrap();
    let mut watch = store.watch(b"/w/", 0).await.unwrap();

    let r1 = store.create(b"/w/k", b"v1", None).await.unwrap();
    store.create(b"/elsewhere", b"x", None).await.unwrap();
    let r2 = store.update(b"/w/k", b"v2", r1, None).await.unwrap();
    let (r3, _) = store.delete(b"/w/k", Some(r2)).await.unwrap();

    match next_event(&mut watch).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(
                (kv.key.as_slice(), kv.value.as_slice()),
                (&b"/w/k"[..], &b"v1"[..])
            );
            assert_eq!(kv.mod_revision, r1);
            assert_eq!(kv.create_revision, r1);
            assert_eq!(prev, None);
        }
        other => panic!("expected put, got {other:?}"),
    }
    match next_event(&mut watch).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(kv.value, b"v2");
            assert_eq!(kv.mod_revision, r2);
            let prev = prev.unwrap();
            assert_eq!(prev.value, b"v1");
            assert_eq!(prev.mod_revision, r1);
        }
        other => panic!("expected put, got {other:?}"),
    }
    match next_event(&mut watch).await {
        WatchEvent::Delete { prev, revision } => {
            assert_eq!(revision, r3);
            assert_eq!(prev.key, b"/w/k");
            assert_eq!(prev.value, b"v2");
            assert_eq!(prev.mod_revision, r2);
        }
        other => panic!("expected delete, got {other:?}"),
    }

    // A watch from an old revision replays history in order.
    let mut replay = store.watch(b"/w/", r1).await.unwrap();
    let revisions = [
        next_event(&mut replay).await.revision(),
        next_event(&mut replay).await.revision(),
        next_event(&mut replay).await.revision(),
    ];
    assert_eq!(revisions, [r1, r2, r3]);
    // ...and then continues live.
    let r4 = store.create(b"/w/live", b"l", None).await.unwrap();
    let live = next_event(&mut replay).await;
    assert_eq!((live.revision(), live.key()), (r4, &b"/w/live"[..]));
}

pub async fn watch_from_compacted_revision_fails(store: DynStore) {
    let r1 = store.create(b"/wc/k", b"1", None).await.unwrap();
    let r2 = store.update(b"/wc/k", b"2", r1, None).await.unwrap();
    let r3 = store.update(b"/wc/k", b"3", r2, None).await.unwrap();
    store.compact(r3).await.unwrap();
    match store.watch(b"/wc/", r1).await {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, r3),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("a watch from a compacted revision must fail"),
    }
    // From just after the compacted revision it works.
    let mut watch = store.watch(b"/wc/", r3 + 1).await.unwrap();
    let r4 = store.update(b"/wc/k", b"4", r3, None).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), r4);
}

pub async fn leases_expire_and_revoke(store: DynStore) {
    // Revoke: attached keys vanish at once, with a delete event.
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let mut watch = store.watch(b"/servers/", 0).await.unwrap();
    store
        .create(b"/servers/a", b"hb", Some(lease))
        .await
        .unwrap();
    assert_eq!(
        store.get(b"/servers/a").await.unwrap().unwrap().lease,
        lease
    );
    store.keep_alive(lease).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(store.get(b"/servers/a").await.unwrap(), None);
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Put { .. }
    ));
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Delete { .. }
    ));
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound { lease: l }) if l == lease
    ));
    assert!(matches!(
        store.create(b"/servers/b", b"hb", Some(lease)).await,
        Err(StoreError::LeaseNotFound { .. })
    ));

    // Expiry: without keep-alives the key disappears after the TTL.
    let short = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .create(b"/servers/c", b"hb", Some(short))
        .await
        .unwrap();
    let kept = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .create(b"/servers/d", b"hb", Some(kept))
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(20), || async {
        store.get(b"/servers/c").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "key of an expired lease still there after 20s");
    assert!(store.get(b"/servers/d").await.unwrap().is_some());
    assert!(matches!(
        store.keep_alive(short).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        store.grant_lease(Duration::from_millis(10)).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

/// N tasks race compare-and-swap increments on one key: exactly N succeed in the end.
pub async fn cas_race_counts_exactly(store: DynStore) {
    const TASKS: usize = 16;
    let key = b"/race/counter";
    store.create(key, b"0", None).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                let kv = store.get(key).await.unwrap().unwrap();
                let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                let next = (n + 1).to_string();
                match store
                    .update(key, next.as_bytes(), kv.mod_revision, None)
                    .await
                {
                    Ok(_) => return conflicts,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for handle in handles {
        conflicts += handle.await.unwrap();
    }
    let value = store.get(key).await.unwrap().unwrap().value;
    assert_eq!(
        value,
        TASKS.to_string().as_bytes(),
        "after {conflicts} conflicts"
    );
}

pub async fn history_lists_retained_versions(store: DynStore) {
    let r1 = store.create(b"/hist/a", b"a1", None).await.unwrap();
    let r2 = store.update(b"/hist/a", b"a2", r1, None).await.unwrap();
    let r3 = store.create(b"/hist/b", b"b1", None).await.unwrap();
    store.delete(b"/hist/b", None).await.unwrap();
    store.create(b"/other/x", b"x", None).await.unwrap();
    let versions: Vec<(Vec<u8>, Vec<u8>, i64)> = store
        .history(b"/hist/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect();
    assert_eq!(
        versions,
        vec![
            (b"/hist/a".to_vec(), b"a1".to_vec(), r1),
            (b"/hist/a".to_vec(), b"a2".to_vec(), r2),
            (b"/hist/b".to_vec(), b"b1".to_vec(), r3),
        ]
    );
    // After compaction only the state at the compacted revision and later remains.
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    let versions: Vec<Vec<u8>> = store
        .history(b"/hist/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.value)
        .collect();
    assert_eq!(versions, vec![b"a2".to_vec()]);
}

pub async fn errors_never_show_values(store: DynStore) {
    let secret = b"PLAINTEXT-PASSWORD-hunter2";
    let key = b"/registry/secrets/ns/s";
    let r = store.create(key, secret, None).await.unwrap();
    let errors = vec![
        store.create(key, secret, None).await.unwrap_err(),
        store.update(key, secret, r + 100, None).await.unwrap_err(),
        store.delete(key, Some(r + 100)).await.unwrap_err(),
    ];
    for err in errors {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("/registry/secrets/ns/s"), "{shown}");
    }
    let kv = store.get(key).await.unwrap().unwrap();
    assert!(!format!("{kv:?}").contains("hunter2"));
}

pub async fn update_many_applies_each_update_on_its_own(store: DynStore) {
    use atrest_store::CasUpdate;
    // More updates than one etcd transaction may hold (128), with more bytes than one
    // request may carry (about 1 MiB): the backend splits them.
    let value = vec![b'x'; 16 * 1024];
    let mut revisions = Vec::new();
    for i in 0..300 {
        let key = format!("/batch/k{i:04}");
        revisions.push(store.create(key.as_bytes(), b"old", None).await.unwrap());
    }
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .create(b"/batch/leased", b"old", Some(lease))
        .await
        .unwrap();
    let leased = store.get(b"/batch/leased").await.unwrap().unwrap();
    // k0007 changes concurrently; k0009 is deleted.
    store
        .update(b"/batch/k0007", b"theirs", revisions[7], None)
        .await
        .unwrap();
    store.delete(b"/batch/k0009", None).await.unwrap();
    let mut updates: Vec<CasUpdate> = (0..300)
        .map(|i| CasUpdate {
            key: format!("/batch/k{i:04}").into_bytes(),
            value: value.clone(),
            expected_mod_revision: revisions[i],
            lease: 0,
        })
        .collect();
    updates.push(CasUpdate {
        key: b"/batch/leased".to_vec(),
        value: b"new".to_vec(),
        expected_mod_revision: leased.mod_revision,
        lease,
    });
    let results = store.update_many(updates).await.unwrap();
    assert_eq!(results.len(), 301);
    for (i, result) in results.iter().enumerate().take(300) {
        match i {
            7 => assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "k0007: {result:?}"
            ),
            9 => assert!(
                matches!(result, Err(StoreError::NotFound { .. })),
                "k0009: {result:?}"
            ),
            _ => {
                let revision = *result.as_ref().unwrap();
                let kv = store
                    .get(format!("/batch/k{i:04}").as_bytes())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!((kv.value.len(), kv.mod_revision), (value.len(), revision));
            }
        }
    }
    assert!(results[300].is_ok(), "{:?}", results[300]);
    assert_eq!(
        store.get(b"/batch/k0007").await.unwrap().unwrap().value,
        b"theirs"
    );
    assert_eq!(store.get(b"/batch/k0009").await.unwrap(), None);
    let kv = store.get(b"/batch/leased").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"new"[..], lease));
    // The rewritten key still goes with its lease.
    store.revoke_lease(lease).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let store = store.clone();
            async move { store.get(b"/batch/leased").await.unwrap().is_none() }
        })
        .await,
        "the rewritten key lost its lease"
    );
}

pub async fn unlimited_list_of_many_megabytes(store: DynStore) {
    // 10,000 values of 1 KiB: far more than one gRPC message (4 MiB) holds.
    let value = vec![b'v'; 1024];
    let writes = (0..10_000).map(|i| {
        let store = store.clone();
        let value = value.clone();
        async move {
            store
                .create(format!("/big/k{i:05}").as_bytes(), &value, None)
                .await
                .unwrap()
        }
    });
    let mut writes = futures::stream::iter(writes).buffer_unordered(64);
    while writes.next().await.is_some() {}
    let all = list_all(&store, b"/big/", None).await;
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    let limited = store
        .list(ListRequest {
            prefix: b"/big/".to_vec(),
            limit: 2_500,
            count_remaining: true,
            ..ListRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.items.len(), 2_500);
    assert!(limited.more);
    assert_eq!(limited.remaining_count, Some(7_500));
    assert_eq!(limited.items[..], all[..2_500]);
}

pub async fn keys_only_lists_carry_revisions_without_values(store: DynStore) {
    let mut revisions = Vec::new();
    for i in 0..5 {
        let key = format!("/ko/k{i}");
        revisions.push(
            store
                .create(key.as_bytes(), b"secret-value", None)
                .await
                .unwrap(),
        );
    }
    let updated = store
        .update(b"/ko/k2", b"changed", revisions[2], None)
        .await
        .unwrap();
    revisions[2] = updated;
    let listed = store
        .list(ListRequest {
            prefix: b"/ko/".to_vec(),
            keys_only: true,
            limit: 3,
            ..ListRequest::default()
        })
        .await
        .unwrap();
    assert!(listed.more);
    assert_eq!(
        keys(&listed.items),
        vec![b"/ko/k0".to_vec(), b"/ko/k1".to_vec(), b"/ko/k2".to_vec()]
    );
    for (kv, revision) in listed.items.iter().zip(&revisions) {
        assert!(kv.value.is_empty(), "no value in a keys-only list");
        assert_eq!(kv.mod_revision, *revision);
    }
}

pub async fn history_pages_hold_every_retained_version_and_defragment_reports(store: DynStore) {
    let r1 = store.create(b"/hp/a", b"a1", None).await.unwrap();
    let r2 = store.update(b"/hp/a", b"a2", r1, None).await.unwrap();
    store.create(b"/hp/b", b"b1", None).await.unwrap();
    for i in 0..1500 {
        store
            .create(format!("/hp/many/{i:04}").as_bytes(), b"m", None)
            .await
            .unwrap();
    }
    store.update(b"/hp/a", b"a3", r2, None).await.unwrap();
    let mut paged = Vec::new();
    let mut pages = 0;
    let mut stream = store.history_pages(b"/hp/");
    while let Some(page) = stream.next().await {
        pages += 1;
        paged.extend(page.unwrap());
    }
    drop(stream);
    assert!(pages >= 2, "paged");
    let mut whole = store.history(b"/hp/").await.unwrap();
    paged.sort_by(|a, b| (&a.key, a.mod_revision).cmp(&(&b.key, b.mod_revision)));
    whole.sort_by(|a, b| (&a.key, a.mod_revision).cmp(&(&b.key, b.mod_revision)));
    assert_eq!(paged.len(), whole.len());
    assert_eq!(paged, whole);
    let a: Vec<&[u8]> = paged
        .iter()
        .filter(|kv| kv.key == b"/hp/a")
        .map(|kv| kv.value.as_slice())
        .collect();
    assert_eq!(a, [&b"a1"[..], b"a2", b"a3"]);
    let reports = store.defragment().await.unwrap();
    assert!(!reports.is_empty());
    assert!(
        reports
            .iter()
            .all(|r| r.bytes_before > 0 && r.bytes_after > 0),
        "{reports:?}"
    );
    // Data survives the rewrite.
    assert_eq!(store.get(b"/hp/a").await.unwrap().unwrap().value, b"a3");
}
