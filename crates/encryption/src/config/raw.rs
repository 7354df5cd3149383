//! The configuration file exactly as written: serde types with no meaning attached yet.
//!
//! Decoding is strict, like kube-apiserver's: unknown and duplicate fields are errors. Every
//! field is optional here so that a missing field becomes a validation error with a field path
//! (as upstream reports it) rather than a decoder error.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEncryptionConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub resources: Option<Vec<RawResourceConfiguration>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResourceConfiguration {
    pub resources: Option<Vec<String>>,
    pub providers: Option<Vec<RawProviderConfiguration>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProviderConfiguration {
    pub aesgcm: Option<RawKeys>,
    pub aescbc: Option<RawKeys>,
    pub secretbox: Option<RawKeys>,
    pub identity: Option<RawIdentity>,
    pub kms: Option<RawKms>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeys {
    pub keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKey {
    pub name: Option<String>,
    pub secret: Option<SecretText>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKms {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub name: Option<String>,
    pub cachesize: Option<i32>,
    pub endpoint: Option<String>,
    pub timeout: Option<String>,
}

/// The base64 text of a key: secret, so it is zeroized on drop and never printed.
pub(crate) struct SecretText(pub Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| SecretText(Zeroizing::new(s)))
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}
