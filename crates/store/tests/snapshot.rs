//! The read-only snapshot store against snapshots a real etcd saved (`etcdctl snapshot
//! save`): the same keys, values and revisions as the live etcd, with deleted and
//! overwritten keys, compaction, a database of many pages with overflow values, older
//! revisions, and corrupt or truncated files failing with an error (never a panic).

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use atrest_store::{ListRequest, Store, StoreConfig, StoreError};
use common::etcd::EtcdCluster;

fn save_snapshot(cluster: &EtcdCluster, file: &Path) {
    let out = Command::new(atrest_testkit::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&cluster.endpoints()[0])
        .arg("snapshot")
        .arg("save")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn live(cluster: &EtcdCluster) -> Arc<dyn Store> {
    atrest_store::open(StoreConfig::etcd(cluster.endpoints()))
        .await
        .unwrap()
}

async fn snapshot(file: &Path) -> atrest_store::Result<Arc<dyn Store>> {
    atrest_store::open(StoreConfig::Snapshot {
        file: file.to_path_buf(),
    })
    .await
}

async fn all(
    store: &dyn Store,
    prefix: &[u8],
    revision: Option<i64>,
) -> Vec<atrest_store::KeyValue> {
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

/// Pages of `limit` through the whole prefix, as the scans do.
async fn paged(store: &dyn Store, prefix: &[u8], limit: usize) -> Vec<atrest_store::KeyValue> {
    let mut out = Vec::new();
    let mut request = ListRequest {
        prefix: prefix.to_vec(),
        limit,
        count_remaining: true,
        ..ListRequest::default()
    };
    loop {
        let page = store.list(request.clone()).await.unwrap();
        let remaining = page.remaining_count.unwrap();
        out.extend(page.items.iter().cloned());
        if !page.more {
            assert_eq!(remaining, 0);
            return out;
        }
        assert!(remaining > 0);
        request.start_after = page.items.last().map(|kv| kv.key.clone());
        request.revision = Some(page.revision);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_what_the_live_etcd_holds() {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let etcd = live(&cluster).await;
    let dir = tempfile::tempdir().unwrap();

    // Created, overwritten, deleted, deleted and re-created, leased; then many keys and
    // values bigger than a page (overflow pages), so the tree has branch pages.
    let created = etcd
        .create(b"/registry/secrets/a/kept", b"v1", None)
        .await
        .unwrap();
    let rev = etcd
        .create(b"/registry/secrets/a/over", b"old", None)
        .await
        .unwrap();
    let over = etcd
        .update(b"/registry/secrets/a/over", b"new", rev, None)
        .await
        .unwrap();
    etcd.create(b"/registry/secrets/a/gone", b"x", None)
        .await
        .unwrap();
    let (deleted_at, _) = etcd
        .delete(b"/registry/secrets/a/gone", None)
        .await
        .unwrap();
    etcd.create(b"/registry/secrets/a/again", b"1", None)
        .await
        .unwrap();
    etcd.delete(b"/registry/secrets/a/again", None)
        .await
        .unwrap();
    etcd.create(b"/registry/secrets/a/again", b"2", None)
        .await
        .unwrap();
    let lease = etcd
        .grant_lease(std::time::Duration::from_secs(600))
        .await
        .unwrap();
    etcd.create(b"/registry/leased", b"l", Some(lease))
        .await
        .unwrap();
    let big = vec![0x5au8; 100 * 1024];
    etcd.create(b"/registry/configmaps/a/big", &big, None)
        .await
        .unwrap();
    for i in 0..3000 {
        let key = format!("/registry/configmaps/bulk/{i:05}");
        let value = format!("{i}-{}", "v".repeat(i % 700));
        etcd.create(key.as_bytes(), value.as_bytes(), None)
            .await
            .unwrap();
    }
    let file = dir.path().join("snap.db");
    save_snapshot(&cluster, &file);

    let snap = snapshot(&file).await.unwrap();
    assert!(snap.describe().contains("read-only"), "{}", snap.describe());
    assert_eq!(
        snap.current_revision().await.unwrap(),
        etcd.current_revision().await.unwrap()
    );
    let want = all(etcd.as_ref(), b"", None).await;
    assert_eq!(want.len(), 3000 + 5);
    assert_eq!(all(snap.as_ref(), b"", None).await, want);
    assert_eq!(paged(snap.as_ref(), b"/registry/", 777).await, want);
    assert_eq!(
        all(snap.as_ref(), b"/registry/secrets/", None).await,
        all(etcd.as_ref(), b"/registry/secrets/", None).await
    );

    let kept = snap
        .get(b"/registry/secrets/a/kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.value.as_slice(), kept.mod_revision),
        (&b"v1"[..], created)
    );
    let over_kv = snap
        .get(b"/registry/secrets/a/over")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (over_kv.value.as_slice(), over_kv.mod_revision),
        (&b"new"[..], over)
    );
    assert_eq!(snap.get(b"/registry/secrets/a/gone").await.unwrap(), None);
    let again = snap
        .get(b"/registry/secrets/a/again")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.value, b"2");
    assert_eq!(again.create_revision, again.mod_revision);
    assert_eq!(
        snap.get(b"/registry/leased").await.unwrap().unwrap().lease,
        lease
    );
    assert_eq!(
        snap.get(b"/registry/configmaps/a/big")
            .await
            .unwrap()
            .unwrap()
            .value,
        big
    );

    // An older revision: the deleted key is there as it was before its delete.
    let before = all(snap.as_ref(), b"/registry/secrets/", Some(deleted_at - 1)).await;
    assert_eq!(
        before,
        all(etcd.as_ref(), b"/registry/secrets/", Some(deleted_at - 1)).await
    );
    assert!(before
        .iter()
        .any(|kv| kv.key == b"/registry/secrets/a/gone"));

    // History: every retained version, as the live etcd's.
    assert_eq!(
        snap.history(b"/registry/secrets/").await.unwrap(),
        etcd.history(b"/registry/secrets/").await.unwrap()
    );

    // Writes fail, and say why.
    let err = snap.create(b"/registry/x", b"y", None).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(snap
        .update(b"/registry/secrets/a/kept", b"z", created, None)
        .await
        .is_err());
    assert!(snap.compact(over).await.is_err());

    // After a compaction the snapshot knows the compacted revision and refuses older reads.
    etcd.compact(over).await.unwrap();
    let compacted = dir.path().join("compacted.db");
    save_snapshot(&cluster, &compacted);
    let snap = snapshot(&compacted).await.unwrap();
    assert_eq!(snap.compacted_revision().await.unwrap(), over);
    assert_eq!(all(snap.as_ref(), b"", None).await, want);
    let err = snap
        .list(ListRequest {
            revision: Some(over - 1),
            ..ListRequest::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    drop(cluster);
}

/// Runs `open` on `bytes` written to a file: it must return (an error or a store), not panic.
async fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> atrest_store::Result<Arc<dyn Store>> {
    let file: PathBuf = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    snapshot(&file).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_snapshots_are_errors() {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::single)
        .await
        .unwrap();
    let etcd = live(&cluster).await;
    for i in 0..400 {
        let key = format!("/registry/secrets/ns/{i:04}");
        etcd.create(key.as_bytes(), &vec![b'x'; 300], None)
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    save_snapshot(&cluster, &file);
    drop(cluster);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        bytes.len() % 512,
        32,
        "etcdctl's snapshot ends in its SHA-256"
    );

    // Truncated anywhere: the checksum or the page count says so.
    for cut in [
        bytes.len() - 1,
        bytes.len() - 33,
        bytes.len() / 2,
        4096 + 32,
        100,
        0,
    ] {
        let err = open_bytes(dir.path(), "cut.db", &bytes[..cut])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cut.db"), "{text}");
        assert!(
            text.contains("truncated") || text.contains("corrupt") || text.contains("too short"),
            "cut at {cut}: {text}"
        );
    }
    // One flipped byte: the SHA-256 does not match.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    let err = open_bytes(dir.path(), "flip.db", &flipped)
        .await
        .unwrap_err();
    assert!(
        !format!("{err:?}").contains("xxxxxxxx"),
        "errors show no values"
    );
    assert!(err.to_string().contains("SHA-256"), "{err}");

    // Without the checksum (a copied member/snap/db), damage reaches the page reader: it
    // must never panic, and a damaged meta or page header is an error.
    let db = &bytes[..bytes.len() - 32];
    let intact = open_bytes(dir.path(), "db", db).await.unwrap();
    assert_eq!(all(intact.as_ref(), b"/registry/", None).await.len(), 400);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failures = 0;
    for round in 0..300 {
        let mut damaged = db.to_vec();
        for _ in 0..(1 + round % 8) {
            let at = (next() as usize) % damaged.len();
            damaged[at] = next() as u8;
        }
        match open_bytes(dir.path(), "damaged.db", &damaged).await {
            Ok(store) => {
                // Whatever opened must answer without panicking.
                let _ = store.list(ListRequest::default()).await;
                let _ = store.history(b"").await;
            }
            Err(_) => failures += 1,
        }
    }
    assert!(failures > 0, "no damage was detected in 300 rounds");
    // Both meta pages zeroed: not a bbolt file.
    let mut no_meta = db.to_vec();
    no_meta[..8192].fill(0);
    let err = open_bytes(dir.path(), "nometa.db", &no_meta)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a bbolt database"), "{err}");
    // A page that claims to be another page.
    let mut wrong_id = db.to_vec();
    let last_page = (db.len() / 4096 - 1) * 4096;
    wrong_id[last_page..last_page + 8].copy_from_slice(&9999u64.to_le_bytes());
    if let Err(err) = open_bytes(dir.path(), "wrongid.db", &wrong_id).await {
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
