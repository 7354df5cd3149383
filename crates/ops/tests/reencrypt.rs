//! The re-encryption engine's verification against a writer that keeps writing with the old
//! key until the verification starts: what that writer left must be found (by revision,
//! without re-reading everything) and rewritten, and the audit afterwards shows no stale
//! object.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_encryption::kms::NoKmsConnector;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use atrest_ops::audit::{audit, AuditOptions};
use atrest_ops::reencrypt::{reencrypt, ReencryptOptions};
use atrest_ops::{NoProgress, Progress};
use atrest_storage::{ChainHandle, EncryptedStore, KeyPrefix};
use atrest_store::{CompactionPolicy, StoreConfig};

fn chain(providers: &str) -> ProviderChain {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    );
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "test.yaml", ParseOptions::default()).unwrap();
    ProviderChain::build(&config, &NoKmsConnector).unwrap()
}

const OLD: &str = "      - secretbox:\n          keys:\n            - name: old\n              secret: N/hsuQeHOMNw8H6NO1g7rTjCdfNK7QVq1uqO7KQZL6E=\n";
const NEW: &str = "      - aesgcm:\n          keys:\n            - name: new\n              secret: er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=\n";

/// Stops the old-key writer as soon as the first verification begins.
struct StopAtVerification {
    stop: Arc<AtomicBool>,
    stopped: Arc<Mutex<bool>>,
}

impl Progress for StopAtVerification {
    fn phase(&self, name: &str, _total: Option<u64>) {
        if name == "verifying" {
            self.stop.store(true, Ordering::SeqCst);
            // Wait until the writer has acknowledged its last write.
            while !*self.stopped.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_with_the_old_key_during_the_first_pass_are_found_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.path().to_path_buf(),
        compaction: CompactionPolicy::disabled(),
    })
    .await
    .unwrap();
    let old = EncryptedStore::new(
        store.clone(),
        ChainHandle::new(chain(OLD)),
        KeyPrefix::default(),
    );
    let new = EncryptedStore::new(
        store.clone(),
        ChainHandle::new(chain(&format!("{NEW}{OLD}"))),
        KeyPrefix::default(),
    );
    let secrets = GroupResource::new("", "secrets");
    let n: u64 = 3000;
    for i in 0..n {
        let key = old.key(&secrets, Some("ns"), &format!("s{i:04}")).unwrap();
        old.create(&key, format!("v0-s{i:04}").as_bytes(), None)
            .await
            .unwrap();
    }
    // A server that never got the new configuration: it keeps rewriting with the old key.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(Mutex::new(false));
    let stale_writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (old, stop, stopped, stale_writes, secrets) = (
            old.clone(),
            stop.clone(),
            stopped.clone(),
            stale_writes.clone(),
            secrets.clone(),
        );
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                for i in (0..n).step_by(7) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = old.key(&secrets, Some("ns"), &format!("s{i:04}")).unwrap();
                    // The old configuration cannot open values already rewritten with the
                    // new key; those are left alone.
                    let Ok(Some(current)) = old.get(&key).await else {
                        continue;
                    };
                    let value = format!("v{round}-s{i:04}");
                    if old.update(&current, value.as_bytes()).await.is_ok() {
                        stale_writes.fetch_add(1, Ordering::SeqCst);
                    }
                    // New objects too, which the first pass cannot have seen.
                    let fresh = old
                        .key(&secrets, Some("ns"), &format!("x{round:03}{i:04}"))
                        .unwrap();
                    let value = format!("v{round}-x{round:03}{i:04}");
                    if old.create(&fresh, value.as_bytes(), None).await.is_ok() {
                        stale_writes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            *stopped.lock().unwrap() = true;
        })
    };
    // Let the writer get going, then re-encrypt.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let progress = StopAtVerification {
        stop: stop.clone(),
        stopped: stopped.clone(),
    };
    let report = reencrypt(&new, &ReencryptOptions::default(), &progress)
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(stale_writes.load(Ordering::SeqCst) > 0, "the writer wrote");
    assert!(report.complete(), "{report:?}");
    // The verification found what the writer left after the first pass and rewrote it.
    assert!(report.passes >= 3, "{report:?}");
    let result = audit(&new, &AuditOptions::default(), &NoProgress)
        .await
        .unwrap();
    let sec = result
        .resources
        .iter()
        .find(|r| r.resource == "secrets")
        .unwrap();
    assert!(sec.objects > n, "{sec:?}");
    assert_eq!((sec.current, sec.stale), (sec.objects, 0), "{sec:?}");
    // Every value is the last one someone wrote (the rewrites kept the writer's data).
    let collection = new.collection(&secrets, None).unwrap();
    let page = new
        .list(&collection, atrest_storage::ListOptions::default())
        .await
        .unwrap();
    for v in &page.values {
        let text = String::from_utf8(v.plaintext.clone()).unwrap();
        assert!(
            text.ends_with(&format!("-{}", v.key.name())),
            "{}: {text}",
            v.key
        );
        assert_eq!(v.provider.to_string(), "aesgcm:new", "{}", v.key);
    }
}
