//! atrest's Kubernetes API layer: the object model without HTTP (codecs, patches, selectors,
//! tables, validation). Storage keys live in `atrest-storage`; serving security (TLS/PKI,
//! authentication, kubeconfig) in `atrest-auth`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod kind;
pub mod managed;
pub mod patch;
pub mod selector;
pub mod table;
pub mod validation;
