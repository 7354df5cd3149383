//! Shared test support: the etcd harness, store fixtures and the conformance suite.
#![allow(dead_code)]

pub use atrest_testkit::etcd;
pub mod suite;

use std::sync::Arc;
use std::time::Duration;

use atrest_store::{CompactionPolicy, Store, StoreConfig};

/// Keeps a store's backing resources (temp dir or etcd processes) alive.
pub enum Backing {
    Dir(tempfile::TempDir),
    Etcd(etcd::EtcdCluster),
}

pub async fn sqlite_store() -> (Arc<dyn Store>, Backing) {
    let dir = tempfile::tempdir().unwrap();
    let store = atrest_store::open(StoreConfig::Embedded {
        data_dir: dir.path().to_path_buf(),
        compaction: CompactionPolicy::disabled(),
    })
    .await
    .unwrap();
    (store, Backing::Dir(dir))
}

pub async fn etcd_store() -> (Arc<dyn Store>, Backing) {
    let cluster = tokio::task::spawn_blocking(etcd::EtcdCluster::single)
        .await
        .unwrap();
    let store = atrest_store::open(StoreConfig::etcd(cluster.endpoints()))
        .await
        .unwrap();
    (store, Backing::Etcd(cluster))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
