//! atrest's Kubernetes API layer: object codecs and storage keys (the REST
//! handlers will be built on these).
#![forbid(unsafe_code)]

pub mod authn;
pub mod codec;
pub mod keys;
pub mod kubeconfig;
pub mod patch;
pub mod selector;
pub mod table;
pub mod tls;
pub mod validation;
