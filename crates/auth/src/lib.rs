//! Serving security for `atrest serve`: the PKI atrest makes for itself and the rustls
//! configuration it listens with (`tls`), authentication by client certificate or bearer
//! token (`authn`), and the admin kubeconfig (`kubeconfig`). Files are written through
//! `atrest-files`.
#![forbid(unsafe_code)]

pub mod authn;
pub mod kubeconfig;
pub mod tls;
