//! KEKs inside a PKCS#11 token (SoftHSM, an HSM): AES keys found by label; `C_Encrypt` /
//! `C_Decrypt` with `CKM_AES_GCM` run inside the token, so the key never leaves it.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{derive_key_id, BackendError, KekBackend, NONCE_LEN, TAG_LEN};

/// Which token and keys to use.
#[derive(Debug, Clone)]
pub struct Pkcs11Options {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    pub token_label: String,
    /// Key labels: the first wraps, all unwrap.
    pub key_labels: Vec<String>,
    /// Generate an AES-256 key in the token for a label that has none (sensitive, not
    /// extractable).
    pub create: bool,
}

struct TokenKey {
    label: String,
    key_id: String,
    handle: ObjectHandle,
}

/// AES keys in a PKCS#11 token.
pub struct Pkcs11Keys {
    module: PathBuf,
    token_label: String,
    keys: Vec<TokenKey>,
    // One logged-in session; PKCS#11 sessions are not to be used from two threads at once.
    session: Mutex<Session>,
    // Kept alive for the session (dropping it finalizes the library).
    _context: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Keys")
            .field("module", &self.module)
            .field("token", &self.token_label)
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.label).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn p11(what: &str, e: cryptoki::error::Error) -> BackendError {
    BackendError(format!("PKCS#11 {what}: {e}"))
}

impl Pkcs11Keys {
    /// Loads the module, finds the token by label, logs in with `pin` and finds (or with
    /// `create`, makes) each key.
    pub fn open(options: &Pkcs11Options, pin: &str) -> Result<Self, BackendError> {
        if options.key_labels.is_empty() {
            return Err(BackendError("no --key-label given".into()));
        }
        let context = Pkcs11::new(&options.module).map_err(|e| {
            BackendError(format!(
                "loading PKCS#11 module {}: {e}",
                options.module.display()
            ))
        })?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| p11("C_Initialize", e))?;
        let mut found = None;
        let mut labels = Vec::new();
        for slot in context
            .get_slots_with_token()
            .map_err(|e| p11("listing slots", e))?
        {
            let info = context
                .get_token_info(slot)
                .map_err(|e| p11("reading token info", e))?;
            let label = info.label().trim_end().to_string();
            if label == options.token_label {
                found = Some((slot, info.serial_number().trim_end().to_string()));
                break;
            }
            labels.push(label);
        }
        let Some((slot, serial)) = found else {
            return Err(BackendError(format!(
                "no token labelled {:?} in {} (tokens: {})",
                options.token_label,
                options.module.display(),
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            )));
        };
        let session = context
            .open_rw_session(slot)
            .map_err(|e| p11("opening a session", e))?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_string())))
            .map_err(|e| p11(&format!("logging in to token {:?}", options.token_label), e))?;
        let mut keys = Vec::new();
        for label in &options.key_labels {
            let handle = match find_key(&session, label)? {
                Some(h) => h,
                None if options.create => {
                    let h = create_key(&session, label)?;
                    tracing::info!(token = %options.token_label, key = %label, "generated an AES-256 key in the token (sensitive, not extractable)");
                    h
                }
                None => {
                    return Err(BackendError(format!(
                    "token {:?} has no AES secret key labelled {label:?} (--create-key makes one)",
                    options.token_label
                )))
                }
            };
            let id = session
                .get_attributes(handle, &[AttributeType::Id])
                .map_err(|e| p11("reading the key's CKA_ID", e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Id(id) => Some(id),
                    _ => None,
                })
                .unwrap_or_default();
            let key_id =
                derive_key_id("p11", &[serial.as_bytes(), label.as_bytes(), id.as_slice()]);
            keys.push(TokenKey {
                label: label.clone(),
                key_id,
                handle,
            });
        }
        Ok(Pkcs11Keys {
            module: options.module.clone(),
            token_label: options.token_label.clone(),
            keys,
            session: Mutex::new(session),
            _context: context,
        })
    }

    fn key(&self, key_id: &str) -> Result<&TokenKey, BackendError> {
        self.keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| BackendError(format!("no token key has key id {key_id:?}")))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // A panic inside a PKCS#11 call leaves no Rust-side state half-changed.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, BackendError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| p11("finding keys", e))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(BackendError(format!(
            "{} AES keys are labelled {label:?}; labels must be unique",
            more.len()
        ))),
    }
}

fn create_key(session: &Session, label: &str) -> Result<ObjectHandle, BackendError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| BackendError(format!("the OS random number generator failed: {e}")))?;
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ],
        )
        .map_err(|e| p11(&format!("generating key {label:?}"), e))
}

impl KekBackend for Pkcs11Keys {
    fn current_key_id(&self) -> String {
        // `open` guarantees at least one key.
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
        let mut iv = nonce;
        let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())
            .map_err(|e| p11("GCM parameters", e))?;
        let sealed = self
            .session()
            .encrypt(&Mechanism::AesGcm(params), key.handle, plaintext)
            .map_err(|e| p11(&format!("C_Encrypt with key {:?}", key.label), e))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let key = self.key(key_id)?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(BackendError("the ciphertext is too short".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(nonce);
        let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())
            .map_err(|e| p11("GCM parameters", e))?;
        self.session()
            .decrypt(&Mechanism::AesGcm(params), key.handle, body)
            .map(Zeroizing::new)
            .map_err(|e| p11(&format!("C_Decrypt with key {:?}", key.label), e))
    }

    fn describe(&self) -> String {
        format!(
            "PKCS#11 module {}, token {:?}, keys {}",
            self.module.display(),
            self.token_label,
            self.keys
                .iter()
                .map(|k| format!("{:?} ({})", k.label, k.key_id))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
