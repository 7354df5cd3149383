//! KEKs in files: 32 random bytes, base64, one key per file, mode 0600.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead;
use zeroize::Zeroizing;

use super::{derive_key_id, BackendError, KekBackend, NONCE_LEN};

struct FileKey {
    path: PathBuf,
    key_id: String,
    key: aead::LessSafeKey,
}

/// AES-256-GCM keys read from files; the first wraps, all unwrap.
pub struct KeyFiles {
    keys: Vec<FileKey>,
}

impl std::fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFiles")
            .field(
                "files",
                &self.keys.iter().map(|k| &k.path).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Creates a key file with 32 bytes from the OS CSPRNG (base64, mode 0600). Refuses to
/// overwrite an existing file.
pub fn create_key_file(path: &Path) -> Result<(), BackendError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|e| BackendError(format!("the OS random number generator failed: {e}")))?;
    let text =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_ref()) + "\n");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackendError(format!("creating key file {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| BackendError(format!("writing key file {}: {e}", path.display())))
}

fn load(path: &Path) -> Result<FileKey, BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: String| BackendError(format!("key file {}: {what}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:o} lets other users read it; chmod 600 it",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| fail("is not base64 (expected 32 random bytes, base64)".into()))?,
    );
    if bytes.len() != 32 {
        return Err(fail(format!(
            "holds {} bytes, an AES-256 key is 32",
            bytes.len()
        )));
    }
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, &bytes)
        .map_err(|_| fail("is not an AES-256 key".into()))?;
    Ok(FileKey {
        path: path.to_path_buf(),
        key_id: derive_key_id("kek", &[bytes.as_slice()]),
        key: aead::LessSafeKey::new(key),
    })
}

impl KeyFiles {
    /// Reads every file (at least one); with `create`, a file that does not exist is made
    /// first.
    pub fn load(paths: &[PathBuf], create: bool) -> Result<Self, BackendError> {
        if paths.is_empty() {
            return Err(BackendError("no --kek-file given".into()));
        }
        let mut keys: Vec<FileKey> = Vec::new();
        for p in paths {
            if create && !p.exists() {
                create_key_file(p)?;
                tracing::info!(path = %p.display(), "created a new key-encryption key file (mode 0600)");
            }
            let key = load(p)?;
            if let Some(dup) = keys.iter().find(|k| k.key_id == key.key_id) {
                return Err(BackendError(format!(
                    "key files {} and {} hold the same key",
                    dup.path.display(),
                    p.display()
                )));
            }
            keys.push(key);
        }
        Ok(KeyFiles { keys })
    }

    fn key(&self, key_id: &str) -> Result<&FileKey, BackendError> {
        self.keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| BackendError(format!("no key file holds key id {key_id:?}")))
    }
}

impl KekBackend for KeyFiles {
    fn current_key_id(&self) -> String {
        // `load` guarantees at least one key.
        self.keys
            .first()
            .map(|k| k.key_id.clone())
            .unwrap_or_default()
    }

    fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.key_id.clone()).collect()
    }

    fn seal(&self, key_id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, BackendError> {
        let key = self.key(key_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| BackendError(format!("the OS random number generator failed: {e}")))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + super::TAG_LEN);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        let tag = key
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut body,
            )
            .map_err(|_| BackendError("AES-GCM seal failed".into()))?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let key = self.key(key_id)?;
        let (nonce, body) = sealed.split_at(NONCE_LEN.min(sealed.len()));
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| BackendError("the ciphertext is too short".into()))?;
        let mut buf = Zeroizing::new(body.to_vec());
        let n = key
            .key
            .open_in_place(nonce, aead::Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| {
                BackendError(format!(
                    "the ciphertext does not open under key {key_id} (damaged, or made with another key)"
                ))
            })?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    fn describe(&self) -> String {
        format!(
            "key files {}",
            self.keys
                .iter()
                .map(|k| format!("{} ({})", k.path.display(), k.key_id))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
