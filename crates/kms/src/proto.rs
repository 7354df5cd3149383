//! Code generated at build time from `proto/v2.proto` and `proto/v1beta1.proto`.

/// `package v2` (`/v2.KeyManagementService/{Status,Encrypt,Decrypt}`).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v2 {
    tonic::include_proto!("v2");
}

/// `package v1beta1` (deprecated KMS v1).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}
