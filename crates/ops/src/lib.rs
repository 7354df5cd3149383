//! Operations on encrypted data, over the storage layer: they work on atrest's own store and
//! on the etcd of any real cluster (the same keys and bytes), API server running or not.
//!
//! - [`audit`]: what is stored, per resource, provider and key (`atrest status`).
//! - [`inspect`]: one stored object, decrypted and decoded (`atrest get`).
//! - [`reencrypt`]: rewrite everything not on its write key, safely beside running servers
//!   (`atrest reencrypt`); [`via_api`] does it through any API server.
#![forbid(unsafe_code)]

pub mod audit;
pub mod inspect;
pub mod progress;
pub mod reencrypt;
pub mod scan;
pub mod via_api;

pub use progress::{NoProgress, Progress};
