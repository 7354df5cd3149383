//! atrest's Kubernetes API layer: the object model without HTTP (codecs, patches, selectors,
//! tables, validation) and serving security (TLS/PKI, authentication, kubeconfig). Storage
//! keys live in `atrest-storage`.
#![forbid(unsafe_code)]

pub mod authn;
pub mod codec;
pub mod kubeconfig;
pub mod patch;
pub mod selector;
pub mod table;
pub mod tls;
pub mod validation;
