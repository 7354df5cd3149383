//! atrest's Kubernetes-compatible API server: the REST verbs kubectl uses over an
//! etcd-shaped store, with every value encrypted per an `EncryptionConfiguration` exactly as
//! kube-apiserver stores it.
//!
//! Request flow: [`http`] (TLS, authentication, routing) -> [`options`] (the query, parsed
//! once per verb) -> [`api`] (verbs: read, watch, write, delete) ->
//! [`bodies`]/[`defaults`] (decode, default, validate) -> [`objects`] (encode, encrypt with
//! the storage key as AAD, compare-and-swap) -> `atrest_store::Store`.
#![forbid(unsafe_code)]

pub mod api;
pub mod authz;
pub mod bodies;
pub mod defaults;
pub mod discovery;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod migration;
pub mod objects;
pub mod options;
pub mod request;
pub mod resources;
pub mod serve;
pub mod status;
