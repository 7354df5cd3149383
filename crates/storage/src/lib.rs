//! atrest's storage layer: where objects meet the providers.
//!
//! [`EncryptedStore`] sits where upstream's etcd3 store applies its transformer: it speaks
//! storage keys and plaintext above, encrypted bytes below (the [`atrest_store::Store`]
//! trait), with the live [`ChainHandle`] in between. The API server and every offline
//! command (status, get, reencrypt) use it; nothing else reads or writes object values.
//!
//! - [`key`]: the one storage-key type and parser ([`StorageKey`], [`KeyPrefix`],
//!   [`Collection`]), upstream's layout and its exceptions.
//! - [`EncryptedStore`]: get, create, compare-and-swap update and delete, paginated lists
//!   and scans that report unreadable values beside the readable ones, a decrypting watch,
//!   and batched rewrites with the write key.
//! - [`servers`]: the heartbeat records servers publish, and reading them.
//!
//! The guarantees this layer relies on are in `DESIGN.md` beside this crate.
#![forbid(unsafe_code)]

mod chain;
mod encrypted;
mod error;
pub mod key;
pub mod servers;

pub use chain::ChainHandle;
pub use encrypted::{
    DecryptedValue, Direction, EncryptedStore, Entry, EventStream, ListOptions, Page, RevisionPage,
    RewriteOutcome, ScanPage, ScanRange, StorageEvent, TransformObserver, Updated, Written,
};
pub use error::{ReadError, StorageError, UnreadableValue};
pub use key::{Collection, KeyError, KeyPrefix, StorageKey};
