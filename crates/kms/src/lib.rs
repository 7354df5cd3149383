//! KMS for atrest: the KMS plugin gRPC protocol (kubernetes/kms `v2` and the deprecated
//! `v1beta1`), a client that implements the encryption crate's KMS traits over a unix socket,
//! and a reference plugin (`atrest kms-plugin`) whose key-encryption keys live in key files or
//! in a PKCS#11 token.
//!
//! - [`endpoint`]: `unix:///path` and abstract `unix:///@name` endpoints.
//! - [`GrpcKmsConnector`]: what `ProviderChain::build` is given to reach real plugins.
//! - [`plugin`]: the plugin server and its key backends.
#![forbid(unsafe_code)]

mod client;
pub mod endpoint;
pub mod plugin;
pub mod proto;

pub use client::GrpcKmsConnector;
pub use endpoint::{Endpoint, EndpointError};
