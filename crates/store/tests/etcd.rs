//! etcd-only guarantees: no acknowledged write is lost when the leader dies mid-write,
//! and TLS (client certificates) works or fails with a clear error.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_store::{ListRequest, StoreConfig, StoreError, TlsFiles};
use common::etcd::EtcdCluster;

/// Index of the member that is the raft leader, asking each member directly.
async fn leader_index(cluster: &EtcdCluster) -> usize {
    for _ in 0..100 {
        for (index, endpoint) in cluster.endpoints().iter().enumerate() {
            let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
                continue;
            };
            let Ok(status) = client.status().await else {
                continue;
            };
            let member_id = status.header().map(|h| h.member_id()).unwrap_or(0);
            if status.leader() != 0 && status.leader() == member_id {
                return index;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no etcd leader found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_write_loses_no_acknowledged_write() {
    const WRITERS: usize = 6;
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::cluster(3))
        .await
        .unwrap();
    let store = atrest_store::open(StoreConfig::etcd(cluster.endpoints()))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<String, i64>::new()));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (store, stop, acknowledged, acked_count, failures) = (
            Arc::clone(&store),
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
            Arc::clone(&acked_count),
            Arc::clone(&failures),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("/kill/{writer}/{n:06}");
                n += 1;
                match store.create(key.as_bytes(), key.as_bytes(), None).await {
                    Ok(revision) => {
                        acknowledged.lock().unwrap().insert(key, revision);
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    // Not acknowledged: allowed to be lost, but recorded for the report.
                    Err(err) => failures.lock().unwrap().push(format!("{key}: {err}")),
                }
            }
        }));
    }
    let wait_for = |target: usize| {
        let acked_count = Arc::clone(&acked_count);
        async move {
            common::eventually(Duration::from_secs(60), || async {
                acked_count.load(Ordering::SeqCst) >= target
            })
            .await
        }
    };
    assert!(wait_for(300).await, "writes never got going");
    let leader = leader_index(&cluster).await;
    let acked_before_kill = acked_count.load(Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.kill(leader));
    // The two survivors elect a new leader and writes continue.
    assert!(
        wait_for(acked_before_kill + 300).await,
        "no progress after killing the leader; failures: {:?}",
        failures.lock().unwrap().iter().take(5).collect::<Vec<_>>()
    );
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let survivors: Vec<String> = cluster
        .endpoints()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
        .collect();
    let reader = atrest_store::open(StoreConfig::etcd(survivors))
        .await
        .unwrap();
    let mut stored = BTreeMap::new();
    let mut start_after = None;
    loop {
        let page = reader
            .list(ListRequest {
                prefix: b"/kill/".to_vec(),
                start_after: start_after.take(),
                limit: 500,
                ..ListRequest::default()
            })
            .await
            .unwrap();
        start_after = page.items.last().map(|kv| kv.key.clone());
        for kv in page.items {
            assert_eq!(kv.key, kv.value);
            stored.insert(String::from_utf8(kv.key).unwrap(), kv.mod_revision);
        }
        if !page.more {
            break;
        }
    }
    let acknowledged = acknowledged.lock().unwrap();
    for (key, revision) in acknowledged.iter() {
        assert_eq!(
            stored.get(key),
            Some(revision),
            "acknowledged write {key} at revision {revision} missing after leader loss"
        );
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "leader m{leader} killed after {acked_before_kill} writes; {} acknowledged, {} failed \
         (not acknowledged), {} stored",
        acknowledged.len(),
        failures.len(),
        stored.len()
    );
    // Failures must be explicit errors, never a hidden loss.
    for failure in failures.iter() {
        assert!(
            failure.contains("unavailable") || failure.contains("already exists"),
            "{failure}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::single_tls)
        .await
        .unwrap();
    let certs = cluster.tls.clone().unwrap();
    let tls = TlsFiles {
        ca_file: Some(certs.ca_file.clone()),
        cert_file: Some(certs.cert_file.clone()),
        key_file: Some(certs.key_file.clone()),
    };
    let store = atrest_store::open(StoreConfig::Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/registry".to_string(),
        tls: Some(tls.clone()),
    })
    .await
    .unwrap();
    let revision = store
        .create(b"/registry/secrets/ns/tls", b"v", None)
        .await
        .unwrap();
    assert_eq!(
        store
            .get(b"/registry/secrets/ns/tls")
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        revision
    );

    // Without a client certificate the server refuses us: a clear error, not a hang.
    let refused = atrest_store::open(StoreConfig::Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/registry".to_string(),
        tls: Some(TlsFiles {
            ca_file: Some(certs.ca_file.clone()),
            cert_file: None,
            key_file: None,
        }),
    })
    .await;
    let err = refused.unwrap_err();
    eprintln!("without a client certificate: {err}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, b"not a certificate").unwrap();
    let open = |tls: TlsFiles, endpoint: &str| {
        atrest_store::open(StoreConfig::Etcd {
            endpoints: vec![endpoint.to_string()],
            prefix: "/registry".to_string(),
            tls: Some(tls),
        })
    };
    let missing = dir.path().join("missing-ca.pem");
    let err = open(
        TlsFiles {
            ca_file: Some(missing),
            ..TlsFiles::default()
        },
        "https://127.0.0.1:1",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)));
    assert!(err.to_string().contains("--etcd-cafile"), "{err}");
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    let err = open(
        TlsFiles {
            ca_file: Some(not_pem.clone()),
            ..TlsFiles::default()
        },
        "https://127.0.0.1:1",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let err = open(
        TlsFiles {
            cert_file: Some(not_pem.clone()),
            ..TlsFiles::default()
        },
        "https://127.0.0.1:1",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--etcd-keyfile"), "{err}");

    let err = atrest_store::open(StoreConfig::etcd(["127.0.0.1:2379"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not an http:// or https:// URL"),
        "{err}"
    );
}
