//! Operations on encrypted data, over the storage layer: they work on atrest's own store and
//! on the etcd of any real cluster (the same keys and bytes), API server running or not.
//!
//! - [`audit`]: what is stored, per resource, provider and key (`atrest status`).
//! - [`history`]: old revisions that are plaintext or on keys that are gone
//!   (`atrest status --history`); [`purge`] compacts and defragments them away.
//! - [`inspect`]: one stored object, decrypted and decoded (`atrest get`).
//! - [`reencrypt`]: rewrite everything not on its write key, safely beside running servers
//!   (`atrest reencrypt`); [`via_api`] does it through any API server.
//! - [`rotate`]: add key → every server loaded → promote → reencrypt → drop the old key,
//!   resumable, state in the store (`atrest rotate`).
#![forbid(unsafe_code)]

pub mod audit;
pub mod history;
pub mod inspect;
pub mod progress;
pub mod purge;
pub mod reencrypt;
pub mod rotate;
pub mod scan;
pub mod via_api;

pub use progress::{NoProgress, Progress};
