//! Embedded-store guarantees beyond the conformance suite: crash durability, several
//! processes on one data dir, and compaction really removing old values from the files.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use atrest_store::{CompactionPolicy, ListRequest, Store, StoreConfig, StoreError, WatchEvent};
use futures::StreamExt;

const CHILD_DATA_DIR_ENV: &str = "ATREST_STORE_CRASH_CHILD_DATA_DIR";
const CHILD_WRITERS: usize = 8;
/// Acknowledged writes seen before the parent pulls the plug.
const ACKS_BEFORE_KILL: usize = 1500;

async fn open(dir: &Path) -> Arc<dyn Store> {
    atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.to_path_buf(),
        compaction: CompactionPolicy::disabled(),
    })
    .await
    .unwrap()
}

fn crash_value(key: &str) -> Vec<u8> {
    // Big enough to span SQLite overflow pages; derived from the key so it can be checked.
    key.as_bytes().iter().copied().cycle().take(3000).collect()
}

/// Not a test of its own: the body of the child process `kill_9_loses_no_acknowledged_write`
/// starts. Without the environment variable it does nothing.
#[test]
fn crash_child_writer() {
    let Ok(data_dir) = std::env::var(CHILD_DATA_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = open(Path::new(&data_dir)).await;
        let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut writers = Vec::new();
        for writer in 0..CHILD_WRITERS {
            let store = Arc::clone(&store);
            let stdout = Arc::clone(&stdout);
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("/crash/{writer}/{n:08}");
                    let revision = store
                        .create(key.as_bytes(), &crash_value(&key), None)
                        .await
                        .unwrap();
                    // Printed only after the store acknowledged the write.
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {key} {revision}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acked, killed_after) = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        let mut killed_after = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(ack) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (key, revision) = ack.split_once(' ').unwrap();
            acked.push((key.to_string(), revision.parse::<i64>().unwrap()));
            if acked.len() == ACKS_BEFORE_KILL {
                // SIGKILL while the writers have more batches in flight.
                child.kill().unwrap();
                killed_after = Some(acked.len());
            }
        }
        // Lines already in the pipe when the child died were acknowledged too.
        child.wait().unwrap();
        (acked, killed_after)
    })
    .await
    .unwrap();
    assert!(
        killed_after.is_some(),
        "child wrote only {} keys",
        acked.len()
    );

    let store = open(dir.path()).await;
    let current = store.current_revision().await.unwrap();
    eprintln!(
        "child killed after {} acknowledged writes; {} acknowledged in total; {current} revisions on disk",
        killed_after.unwrap_or(0),
        acked.len()
    );
    for (key, revision) in &acked {
        let kv = store
            .get(key.as_bytes())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} (revision {revision}) lost"));
        assert_eq!(kv.mod_revision, *revision, "{key}");
        assert_eq!(kv.value, crash_value(key), "{key}");
        assert!(*revision <= current);
    }
    // The store keeps working after the crash: new revisions continue above the old ones.
    let next = store.create(b"/crash/after", b"x", None).await.unwrap();
    assert!(next > current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_writes_are_seen_live() {
    use tokio::io::AsyncBufReadExt;
    const ACKS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut watch = store.watch(b"/crash/", 0).await.unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child_revisions = std::collections::BTreeMap::new();
    let mut own_revisions = Vec::new();
    while child_revisions.len() < ACKS {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("child exited early");
        let Some(ack) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (key, revision) = ack.split_once(' ').unwrap();
        let revision: i64 = revision.parse().unwrap();
        // The child's acknowledged write is visible here at once...
        let kv = store.get(key.as_bytes()).await.unwrap().unwrap();
        assert_eq!(kv.mod_revision, revision);
        child_revisions.insert(revision, key.to_string());
        // ...while this process writes too, with its own distinct revisions.
        let own = format!("/parent/{}", child_revisions.len());
        own_revisions.push(store.create(own.as_bytes(), b"p", None).await.unwrap());
    }
    child.kill().await.unwrap();
    for revision in &own_revisions {
        assert!(
            !child_revisions.contains_key(revision),
            "revision {revision} used twice"
        );
    }
    // The watch delivers the other process's writes, in revision order.
    let mut seen = Vec::new();
    while seen.len() < ACKS {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        seen.push(event.revision());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "events out of order");
    let first_acked: Vec<i64> = child_revisions.keys().copied().collect();
    assert!(
        first_acked
            .iter()
            .all(|r| seen.contains(r) || *r > *seen.last().unwrap()),
        "watch skipped an acknowledged write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_openers_of_one_data_dir_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = open(dir.path()).await;
    let offline = open(dir.path()).await;

    let mut watch = server.watch(b"/mp/", 0).await.unwrap();
    let r1 = server.create(b"/mp/a", b"1", None).await.unwrap();
    assert_eq!(
        offline.get(b"/mp/a").await.unwrap().unwrap().mod_revision,
        r1
    );
    let r2 = offline.update(b"/mp/a", b"2", r1, None).await.unwrap();
    assert!(r2 > r1);
    // A stale compare from the other opener loses.
    assert!(matches!(
        server.update(b"/mp/a", b"3", r1, None).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(server.current_revision().await.unwrap(), r2);

    // Both write concurrently: revisions stay unique and every write lands.
    let mut tasks = Vec::new();
    for (name, store) in [("s", Arc::clone(&server)), ("o", Arc::clone(&offline))] {
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..50 {
                let key = format!("/mp/{name}{i}");
                revisions.push(store.create(key.as_bytes(), b"x", None).await.unwrap());
            }
            revisions
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(task.await.unwrap());
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 100);
    let listed = offline
        .list(ListRequest::prefix(b"/mp/".to_vec()))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 101);

    // The server's watch sees the other opener's writes (it polls the table).
    let mut seen = Vec::new();
    while seen.len() < 102 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        seen.push(event.revision());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "events out of order");
    assert!(seen.contains(&r2));
}

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_removes_old_values_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let old_small = b"OLD-PLAINTEXT-small-4c1d9".to_vec();
    let old_big: Vec<u8> = b"OLD-PLAINTEXT-big-77e0a-"
        .iter()
        .copied()
        .cycle()
        .take(20_000)
        .collect();
    let deleted_marker = b"OLD-PLAINTEXT-deleted-93b2".to_vec();
    let current_marker = b"CURRENT-CIPHERTEXT-5f8e".to_vec();

    let r = store
        .create(b"/registry/secrets/ns/a", &old_small, None)
        .await
        .unwrap();
    let r = store
        .update(b"/registry/secrets/ns/a", &old_big, r, None)
        .await
        .unwrap();
    store
        .update(b"/registry/secrets/ns/a", &current_marker, r, None)
        .await
        .unwrap();
    store
        .create(b"/registry/secrets/ns/b", &deleted_marker, None)
        .await
        .unwrap();
    store.delete(b"/registry/secrets/ns/b", None).await.unwrap();
    for i in 0..200 {
        let key = format!("/registry/configmaps/ns/filler{i}");
        store
            .create(key.as_bytes(), &[b'f'; 500], None)
            .await
            .unwrap();
    }
    for marker in [&old_small[..], &old_big[..64], &deleted_marker[..]] {
        assert!(
            !files_contain(dir.path(), marker).is_empty(),
            "test setup: marker should be on disk before compaction"
        );
    }

    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    assert_eq!(
        store
            .metrics()
            .compaction_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    for marker in [&old_small[..], &old_big[..64], &deleted_marker[..]] {
        let found = files_contain(dir.path(), marker);
        assert!(
            found.is_empty(),
            "{} still in {found:?} after compaction",
            String::from_utf8_lossy(marker)
        );
    }
    // The current value is still there and readable.
    assert!(!files_contain(dir.path(), &current_marker).is_empty());
    let kv = store.get(b"/registry/secrets/ns/a").await.unwrap().unwrap();
    assert_eq!(kv.value, current_marker);
    assert!(store
        .history(b"/registry/secrets/")
        .await
        .unwrap()
        .iter()
        .all(|kv| kv.value == current_marker));

    // And after closing the store as well.
    drop(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for marker in [&old_small[..], &old_big[..64], &deleted_marker[..]] {
        assert!(files_contain(dir.path(), marker).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_scrub_is_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.path().to_path_buf(),
        compaction: CompactionPolicy {
            enabled: true,
            // Never compacts by itself here: only retries the blocked scrub.
            keep_revisions: 1_000_000,
            keep_duration: Duration::ZERO,
            interval: Duration::from_millis(50),
        },
    })
    .await
    .unwrap();
    let marker = b"OLD-PLAINTEXT-blocked-0c7a".to_vec();
    let r = store
        .create(b"/registry/secrets/ns/s", &marker, None)
        .await
        .unwrap();
    store
        .update(b"/registry/secrets/ns/s", b"new", r, None)
        .await
        .unwrap();

    // Another process holding an old snapshot keeps the WAL from being truncated.
    let reader = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM kine", [], |r| r.get(0))
        .unwrap();

    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    let metrics = store.metrics();
    assert_eq!(
        metrics
            .compaction_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        !files_contain(dir.path(), &marker).is_empty(),
        "test setup: the blocked checkpoint should leave the old value on disk"
    );

    // Once the reader is gone, the automatic compactor finishes the scrub.
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let scrubbed = common::eventually(Duration::from_secs(10), || async {
        files_contain(dir.path(), &marker).is_empty()
    })
    .await;
    assert!(
        scrubbed,
        "old value still on disk: {:?}",
        files_contain(dir.path(), &marker)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.path().to_path_buf(),
        compaction: CompactionPolicy {
            enabled: true,
            keep_revisions: 10,
            keep_duration: Duration::ZERO,
            interval: Duration::from_millis(50),
        },
    })
    .await
    .unwrap();
    let mut revision = store.create(b"/auto/k", b"0", None).await.unwrap();
    for i in 1..60 {
        revision = store
            .update(b"/auto/k", i.to_string().as_bytes(), revision, None)
            .await
            .unwrap();
    }
    let compacted = common::eventually(Duration::from_secs(10), || async {
        store.compacted_revision().await.unwrap() == revision - 10
    })
    .await;
    assert!(
        compacted,
        "compacted revision {}",
        store.compacted_revision().await.unwrap()
    );
    let metrics = store.metrics();
    assert!(
        metrics
            .compactions
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        metrics
            .compaction_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The window is kept: history of the last 10 revisions is there, older is gone.
    let history = store.history(b"/auto/").await.unwrap();
    assert_eq!(history.len(), 11);
    assert!(matches!(
        store.watch(b"/auto/", revision - 20).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = store.watch(b"/auto/", revision - 5).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Put { .. }));
    assert_eq!(first.revision(), revision - 5);
}

#[tokio::test]
async fn data_dir_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("atrest-data");
    let store = open(&data_dir).await;
    store.create(b"/k", b"v", None).await.unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn unwritable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = atrest_store::open(StoreConfig::embedded(&file))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
