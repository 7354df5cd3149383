//! The provider chain in force, shared by everything that reads or writes values.

use std::sync::{Arc, RwLock};

use atrest_encryption::ProviderChain;

/// The live provider chain; replaced as a whole when the configuration is reloaded, so a
/// request always encrypts and decrypts with one consistent configuration.
#[derive(Debug, Clone)]
pub struct ChainHandle(Arc<RwLock<Arc<ProviderChain>>>);

impl ChainHandle {
    /// A handle holding `chain`.
    pub fn new(chain: ProviderChain) -> Self {
        ChainHandle(Arc::new(RwLock::new(Arc::new(chain))))
    }

    /// The chain in force now.
    pub fn current(&self) -> Arc<ProviderChain> {
        // Replacing the Arc is the only write: a poisoned lock still holds a whole chain.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new chain in force for every later call.
    pub fn replace(&self, chain: ProviderChain) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
    }
}
