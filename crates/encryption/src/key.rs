//! Key material and key names.
//!
//! Every byte of key material in atrest lives in a [`Key`]: it is wiped when dropped and never
//! shown by `Debug`, so a stray `{:?}` in a log line cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// Secret key bytes (a provider key, a KMS seed or a data encryption key).
///
/// The bytes are zeroized on drop. `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Wraps bytes that are already key material. The caller's buffer is moved, not copied.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Key(Zeroizing::new(bytes))
    }

    /// A fresh key of `len` bytes from the operating system's CSPRNG.
    pub fn generate(len: usize) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut bytes)?;
        Ok(Key(bytes))
    }

    /// Decodes a standard-alphabet, padded base64 string the way Go's
    /// `base64.StdEncoding.DecodeString` does (which silently skips `\r` and `\n`).
    ///
    /// The error carries no part of the input.
    pub fn from_base64(text: &str) -> Result<Self, InvalidBase64> {
        use base64::Engine as _;
        let mut cleaned = Zeroizing::new(String::with_capacity(text.len()));
        cleaned.extend(text.chars().filter(|c| *c != '\r' && *c != '\n'));
        let mut out = Zeroizing::new(Vec::new());
        GO_STD_BASE64
            .decode_vec(cleaned.as_bytes(), &mut out)
            .map_err(|_| InvalidBase64)?;
        Ok(Key(out))
    }

    /// Standard base64 of the key, for writing a configuration file. The returned string is
    /// itself secret and is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<redacted {} bytes>)", self.0.len())
    }
}

/// The base64 text of a key could not be decoded. Deliberately carries nothing of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBase64;

/// Go's `base64.StdEncoding`: standard alphabet, padding required, but (unlike a strict
/// decoder) non-zero trailing bits in the last character are ignored.
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A random (version 4) UUID string from the OS CSPRNG (object uids, KMS call ids).
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // An identifier, not key material: should the CSPRNG fail, the next key generation
    // reports it; an all-zero UUID is still a valid string.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The name of a key inside an `aescbc`, `aesgcm` or `secretbox` provider. It is written into
/// every value as `<name>:`, so it is public; only the key bytes are secret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    /// Any non-empty string is a valid name upstream (even one containing `:`).
    pub fn new(name: impl Into<String>) -> Option<Self> {
        let name = name.into();
        (!name.is_empty()).then_some(KeyName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = Key::from_bytes(b"super-secret-key-material-000000".to_vec());
        let shown = format!("{key:?}");
        assert_eq!(shown, "Key(<redacted 32 bytes>)");
        assert!(!shown.contains("super"));
    }

    #[test]
    fn base64_like_go_std_encoding() {
        assert_eq!(Key::from_base64("YWJj").unwrap().as_bytes(), b"abc");
        // Go skips CR and LF anywhere.
        assert_eq!(Key::from_base64("YW\r\nJj\n").unwrap().as_bytes(), b"abc");
        // Padding is required, URL alphabet and spaces are rejected.
        assert_eq!(Key::from_base64("YWI"), Err(InvalidBase64));
        assert_eq!(Key::from_base64("YW-_"), Err(InvalidBase64));
        assert_eq!(Key::from_base64("YW Jj"), Err(InvalidBase64));
        // Non-canonical trailing bits are accepted, as Go's non-strict decoder does.
        assert_eq!(Key::from_base64("YR==").unwrap().as_bytes(), b"a");
    }

    #[test]
    fn generated_keys_differ() {
        let a = Key::generate(32).unwrap();
        let b = Key::generate(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
