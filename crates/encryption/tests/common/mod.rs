//! Helpers shared by the integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use atrest_encryption::{EncryptionConfig, ParseOptions, ProviderChain};

pub fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading test data {path}: {e}"))
}

pub fn parse(yaml: &str) -> EncryptionConfig {
    EncryptionConfig::parse(yaml.as_bytes(), "test.yaml", ParseOptions::default())
        .unwrap_or_else(|e| panic!("config should be valid: {e}"))
}

pub fn chain(yaml: &str) -> ProviderChain {
    ProviderChain::build(&parse(yaml), &Base64Kms::connector()).expect("chain builds")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub use atrest_encryption::upstream_mock::{Base64Kms, Base64KmsConnector};
