//! TLS for the API server: the PKI atrest makes for itself on first start, loading
//! user-given serving certificates, and the rustls [`ServerConfig`] the server listens with.
//!
//! # Files in the data dir
//!
//! ```text
//! <data-dir>/pki/            0700
//!     ca.crt                 0644  self-signed CA "atrest-ca" (ECDSA P-256, 10 years)
//!     ca.key                 0600  its PKCS#8 private key
//!     server.crt             0644  serving certificate signed by the CA (1 year), SANs:
//!                                  localhost, 127.0.0.1, ::1 and the extra hosts
//!     server.key             0600
//!     admin.crt              0644  client certificate CN=atrest-admin, O=system:masters (1 year)
//!     admin.key              0600
//! ```
//!
//! Every file is written to a temporary file in the same directory (created with its final
//! mode, so a key is never readable by others, not even for a moment), synced and renamed.
//!
//! On later starts [`ensure_pki`] loads what is there. The CA is never replaced: a missing
//! half (a `ca.crt` without `ca.key` or the reverse), a key that does not match, or an
//! expired CA is an error that tells the operator what to remove. The serving certificate is
//! made again when its host list differs from the one asked for, when it was not signed by
//! the CA, or when it expires within [`RENEW_BEFORE`]; the admin certificate likewise (except
//! for the host list).
//!
//! All keys come from the OS CSPRNG (rcgen with ring). Private key bytes are held in
//! [`SecretBytes`], which zeroizes them on drop and never shows them in `Debug`; no error of
//! this module holds key material.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// Common name of the CA atrest makes.
pub const CA_COMMON_NAME: &str = "atrest-ca";
/// Common name (user name) of the admin client certificate.
pub const ADMIN_USER: &str = "atrest-admin";
/// Organization (group) of the admin client certificate.
pub const ADMIN_GROUP: &str = "system:masters";
/// Name of the PKI directory inside the data dir.
pub const PKI_DIR: &str = "pki";
/// Hosts every serving certificate atrest makes is valid for.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Validity of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of the serving and admin certificates.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A leaf certificate expiring within this time is made again at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start to be valid this long before they are made (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);

/// ALPN protocols the server offers, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors of this module. None holds key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but cannot be used; `reason` never quotes key material.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The CA cannot be used and will not be replaced silently.
    #[error("{0}")]
    Ca(String),
    #[error("invalid host {host:?} for the serving certificate: {reason}")]
    BadHost { host: String, reason: String },
    #[error("generating {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error(transparent)]
    File(#[from] atrest_files::FileError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_file(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Secret bytes (a PEM private key, a token): zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The secret itself; do not log it.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        SecretBytes::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

/// The certificates and keys under `<data-dir>/pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    server_cert_pem: String,
    server_key_pem: SecretBytes,
    admin_cert_pem: String,
    admin_key_pem: SecretBytes,
    hosts: Vec<String>,
    generated: Vec<&'static str>,
}

impl Pki {
    /// `<data-dir>/pki`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }
    /// The CA certificate as DER.
    pub fn ca_cert_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        CertificateDer::from_pem_slice(self.ca_cert_pem.as_bytes()).map_err(|e| {
            bad_file(
                &self.dir.join("ca.crt"),
                format!("no PEM certificate ({e})"),
            )
        })
    }
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }
    pub fn server_key_pem(&self) -> &SecretBytes {
        &self.server_key_pem
    }
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }
    pub fn admin_key_pem(&self) -> &SecretBytes {
        &self.admin_key_pem
    }
    /// The hosts (DNS names and IPs) the serving certificate is valid for.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
    /// What [`ensure_pki`] made on this call (`"ca"`, `"server"`, `"admin"`); empty when
    /// everything was loaded. For a log line at start.
    pub fn generated(&self) -> &[&'static str] {
        &self.generated
    }
    /// The serving certificate and key, ready for [`server_config`].
    pub fn serving_identity(&self) -> Result<ServingIdentity, TlsError> {
        ServingIdentity::from_pem(
            self.server_cert_pem.as_bytes(),
            &self.dir.join("server.crt"),
            self.server_key_pem.expose_secret(),
            &self.dir.join("server.key"),
        )
    }
    /// The admin client certificate chain and key (for a rustls client, e.g. in tests).
    pub fn admin_identity(&self) -> Result<ServingIdentity, TlsError> {
        ServingIdentity::from_pem(
            self.admin_cert_pem.as_bytes(),
            &self.dir.join("admin.crt"),
            self.admin_key_pem.expose_secret(),
            &self.dir.join("admin.key"),
        )
    }
}

/// A certificate chain (leaf first) and its private key.
pub struct ServingIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ServingIdentity {
    /// Loads `--tls-cert-file` (PEM, leaf first, intermediates may follow) and
    /// `--tls-private-key-file` (PEM: PKCS#8, PKCS#1 or SEC1). Errors name the file.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let cert_pem = fs::read(cert_file).map_err(io_err(cert_file))?;
        let key_pem = Zeroizing::new(fs::read(key_file).map_err(io_err(key_file))?);
        Self::from_pem(&cert_pem, cert_file, &key_pem, key_file)
    }

    fn from_pem(
        cert_pem: &[u8],
        cert_file: &Path,
        key_pem: &[u8],
        key_file: &Path,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_file(cert_file, format!("invalid PEM ({e})")))?;
        if chain.is_empty() {
            return Err(bad_file(cert_file, "no CERTIFICATE block found"));
        }
        for (i, der) in chain.iter().enumerate() {
            X509Certificate::from_der(der).map_err(|e| {
                bad_file(
                    cert_file,
                    format!("certificate {} is not valid X.509 ({e})", i + 1),
                )
            })?;
        }
        // The PEM error type may quote nothing of the key, but say only what kind it was.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            let what = match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found",
                _ => "invalid PEM private key",
            };
            bad_file(key_file, what)
        })?;
        let identity = ServingIdentity { chain, key };
        // Check that the key belongs to the leaf certificate, naming both files.
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(|e| bad_file(key_file, format!("unsupported private key ({e})")))?;
        let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), signing_key);
        certified.keys_match().map_err(|_| {
            bad_file(
                key_file,
                format!(
                    "private key does not match the certificate in {}",
                    cert_file.display()
                ),
            )
        })?;
        Ok(identity)
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key (DER). Do not log it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The PEM of the chain's last certificate if it is self-issued (a root CA or a
    /// self-signed certificate): what a client must trust to reach this server. `None` when
    /// the chain ends below a root the client is expected to have already.
    pub fn trust_anchor_pem(&self) -> Option<String> {
        let last = self.chain.last()?;
        let (_, cert) = X509Certificate::from_der(last).ok()?;
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            return None;
        }
        Some(cert_pem_from_der(last))
    }
}

fn cert_pem_from_der(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Invariant: base64 output is ASCII, so any chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The rustls server configuration: ring provider, TLS 1.2 and 1.3, ALPN `h2` then
/// `http/1.1`. With `client_ca`, client certificates signed by one of those CAs are verified
/// and accepted but not required (bearer tokens and anonymous health checks still connect);
/// a client certificate that does not verify fails the handshake.
pub fn server_config(
    serving: &ServingIdentity,
    client_ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca.clone())
                    .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(serving.chain.clone(), serving.key.clone_key())
        .map_err(|e| TlsError::Config(format!("serving certificate: {e}")))?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Makes or loads the PKI under `<data_dir>/pki/` (see the module docs). `hosts` are extra
/// DNS names or IP addresses for the serving certificate, beyond [`DEFAULT_HOSTS`].
pub fn ensure_pki(data_dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
    let dir = data_dir.join(PKI_DIR);
    ensure_private_dir(&dir)?;
    let wanted_hosts = normalize_hosts(hosts)?;
    let now = OffsetDateTime::now_utc();
    let mut generated = Vec::new();

    // The CA: load both halves or make both; anything in between is an error.
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let (ca_cert_pem, ca_key_pem) = match (ca_crt.exists(), ca_key.exists()) {
        (true, true) => {
            let cert_pem = read_string(&ca_crt)?;
            let key_pem = SecretBytes::new(fs::read(&ca_key).map_err(io_err(&ca_key))?);
            check_ca(&ca_crt, &cert_pem, &ca_key, &key_pem, now)?;
            (cert_pem, key_pem)
        }
        (false, false) => {
            let (cert_pem, key_pem) = generate_ca(now)?;
            write_file(&ca_key, key_pem.expose_secret(), 0o600)?;
            write_file(&ca_crt, cert_pem.as_bytes(), 0o644)?;
            generated.push("ca");
            (cert_pem, key_pem)
        }
        (has_crt, _) => {
            let (present, missing) = if has_crt {
                (&ca_crt, &ca_key)
            } else {
                (&ca_key, &ca_crt)
            };
            return Err(TlsError::Ca(format!(
                "{} exists but {} does not; atrest will not replace its CA on its own \
                 (restore the missing file, or remove {} to make a new CA and new client \
                 credentials)",
                present.display(),
                missing.display(),
                dir.display()
            )));
        }
    };
    let ca_key_pair = key_pair_from_pem(&ca_key, &ca_key_pem)?;
    let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| bad_file(&ca_crt, format!("invalid PEM ({e})")))?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key_pair)
        .map_err(|e| bad_file(&ca_crt, format!("cannot sign with this CA ({e})")))?;
    let (_, ca_x509) = X509Certificate::from_der(&ca_der)
        .map_err(|e| bad_file(&ca_crt, format!("not valid X.509 ({e})")))?;

    // No leaf outlives the CA that signed it.
    let ca_not_after =
        OffsetDateTime::from_unix_timestamp(ca_x509.validity().not_after.timestamp())
            .map_err(|e| bad_file(&ca_crt, format!("invalid notAfter ({e})")))?;
    let leaf_params = |now| -> Result<CertificateParams, TlsError> {
        let mut params = leaf_params(now)?;
        params.not_after = params.not_after.min(ca_not_after);
        Ok(params)
    };

    // The serving certificate.
    let server_crt = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let (server_cert_pem, server_key_pem) =
        match load_leaf(&server_crt, &server_key, &ca_x509, now, |cert| {
            cert_hosts(cert).is_some_and(|h| h == wanted_hosts)
        })? {
            Some(pair) => pair,
            None => {
                let mut params = leaf_params(now)?;
                params
                    .distinguished_name
                    .push(DnType::CommonName, "atrest-apiserver");
                params.subject_alt_names = wanted_hosts
                    .iter()
                    .map(|h| host_san(h))
                    .collect::<Result<_, _>>()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                let pair = issue(&params, &issuer, "the serving certificate")?;
                write_file(&server_key, pair.1.expose_secret(), 0o600)?;
                write_file(&server_crt, pair.0.as_bytes(), 0o644)?;
                generated.push("server");
                pair
            }
        };

    // The admin client certificate.
    let admin_crt = dir.join("admin.crt");
    let admin_key = dir.join("admin.key");
    let (admin_cert_pem, admin_key_pem) =
        match load_leaf(&admin_crt, &admin_key, &ca_x509, now, |cert| {
            let cn: Vec<_> = cert
                .subject()
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect();
            let o: Vec<_> = cert
                .subject()
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect();
            cn == [ADMIN_USER] && o == [ADMIN_GROUP]
        })? {
            Some(pair) => pair,
            None => {
                let mut params = leaf_params(now)?;
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, ADMIN_GROUP);
                params
                    .distinguished_name
                    .push(DnType::CommonName, ADMIN_USER);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let pair = issue(&params, &issuer, "the admin client certificate")?;
                write_file(&admin_key, pair.1.expose_secret(), 0o600)?;
                write_file(&admin_crt, pair.0.as_bytes(), 0o644)?;
                generated.push("admin");
                pair
            }
        };

    Ok(Pki {
        dir,
        ca_cert_pem,
        server_cert_pem,
        server_key_pem,
        admin_cert_pem,
        admin_key_pem,
        hosts: wanted_hosts.into_iter().collect(),
        generated,
    })
}

fn ensure_private_dir(dir: &Path) -> Result<(), TlsError> {
    Ok(atrest_files::ensure_private_dir(dir)?)
}

/// Writes a private key (0600) or a certificate (0644) atomically, replacing the old one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    Ok(atrest_files::write_atomic(
        path,
        bytes,
        mode,
        atrest_files::Existing::Replace,
    )?)
}

fn read_string(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn key_pair_from_pem(path: &Path, pem: &SecretBytes) -> Result<KeyPair, TlsError> {
    let text = std::str::from_utf8(pem.expose_secret())
        .map_err(|_| bad_file(path, "private key file is not PEM text"))?;
    KeyPair::from_pem(text).map_err(|_| bad_file(path, "not a usable PEM private key"))
}

fn check_ca(
    crt: &Path,
    cert_pem: &str,
    key: &Path,
    key_pem: &SecretBytes,
    now: OffsetDateTime,
) -> Result<(), TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| bad_file(crt, format!("invalid PEM ({e})")))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| bad_file(crt, format!("not valid X.509 ({e})")))?;
    if !cert.is_ca() {
        return Err(bad_file(crt, "not a CA certificate"));
    }
    let key_pair = key_pair_from_pem(key, key_pem)?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key_pair) {
        return Err(TlsError::Ca(format!(
            "{} does not belong to {}; atrest will not replace its CA on its own",
            key.display(),
            crt.display()
        )));
    }
    if cert.validity().not_after.timestamp() <= now.unix_timestamp() {
        return Err(TlsError::Ca(format!(
            "the CA in {} has expired; atrest will not replace it on its own (remove {} to \
             make a new CA and new client credentials)",
            crt.display(),
            crt.parent().unwrap_or(crt).display()
        )));
    }
    Ok(())
}

/// Loads a leaf certificate and key if both exist, were signed by the CA, match, are not
/// about to expire and pass `fits`. `Ok(None)` means: make a new one.
fn load_leaf(
    crt: &Path,
    key: &Path,
    ca: &X509Certificate<'_>,
    now: OffsetDateTime,
    fits: impl Fn(&X509Certificate<'_>) -> bool,
) -> Result<Option<(String, SecretBytes)>, TlsError> {
    if !crt.exists() || !key.exists() {
        return Ok(None);
    }
    let cert_pem = read_string(crt)?;
    let key_pem = SecretBytes::new(fs::read(key).map_err(io_err(key))?);
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return Ok(None);
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return Ok(None);
    };
    let Ok(key_pair) = key_pair_from_pem(key, &key_pem) else {
        return Ok(None);
    };
    let renew_at = now.unix_timestamp() + RENEW_BEFORE.as_secs() as i64;
    let usable = cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
        && cert.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key_pair)
        && cert.validity().not_after.timestamp() > renew_at
        && fits(&cert);
    Ok(usable.then_some((cert_pem, key_pem)))
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        TlsError::Generate {
            what: "a serial number",
            reason: "the OS random source failed".into(),
        }
    })?;
    // Positive and of full length (Go rejects negative serial numbers).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn base_params(now: OffsetDateTime, validity: Duration) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn leaf_params(now: OffsetDateTime) -> Result<CertificateParams, TlsError> {
    let mut params = base_params(now, LEAF_VALIDITY)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn new_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| TlsError::Generate {
        what,
        reason: e.to_string(),
    })
}

fn generate_ca(now: OffsetDateTime) -> Result<(String, SecretBytes), TlsError> {
    let what = "the CA";
    let key = new_key(what)?;
    let mut params = base_params(now, CA_VALIDITY)?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate {
        what,
        reason: e.to_string(),
    })?;
    Ok((cert.pem(), SecretBytes::from(key.serialize_pem())))
}

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'_, &KeyPair>,
    what: &'static str,
) -> Result<(String, SecretBytes), TlsError> {
    let key = new_key(what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| TlsError::Generate {
            what,
            reason: e.to_string(),
        })?;
    Ok((cert.pem(), SecretBytes::from(key.serialize_pem())))
}

/// The default hosts plus `extra`, normalized (IPs in canonical form, DNS names lowercase),
/// deduplicated and sorted.
fn normalize_hosts(extra: &[String]) -> Result<BTreeSet<String>, TlsError> {
    let mut out = BTreeSet::new();
    for h in DEFAULT_HOSTS
        .iter()
        .copied()
        .chain(extra.iter().map(|s| s.as_str()))
    {
        let h = h.trim();
        if h.is_empty() {
            continue;
        }
        let h = h
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(h);
        let norm = match h.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let lower = h.to_ascii_lowercase();
                let valid = lower.len() <= 253
                    && lower.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                    });
                if !valid {
                    return Err(TlsError::BadHost {
                        host: h.to_string(),
                        reason: "neither an IP address nor a DNS name".into(),
                    });
                }
                lower
            }
        };
        out.insert(norm);
    }
    Ok(out)
}

fn host_san(host: &str) -> Result<SanType, TlsError> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(host.to_string().try_into().map_err(
            |e: rcgen::Error| TlsError::BadHost {
                host: host.to_string(),
                reason: e.to_string(),
            },
        )?)),
    }
}

/// The SANs of a certificate, normalized like [`normalize_hosts`]; `None` if it has an
/// entry of another kind.
fn cert_hosts(cert: &X509Certificate<'_>) -> Option<BTreeSet<String>> {
    let san = cert.subject_alternative_name().ok()??;
    let mut out = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                out.insert(d.to_ascii_lowercase());
            }
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).ok()?),
                    _ => return None,
                };
                out.insert(ip.to_string());
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        let h =
            normalize_hosts(&["Example.COM".into(), "[::1]".into(), " 10.0.0.1 ".into()]).unwrap();
        let v: Vec<_> = h.into_iter().collect();
        assert_eq!(
            v,
            ["10.0.0.1", "127.0.0.1", "::1", "example.com", "localhost"]
        );
        assert!(normalize_hosts(&["bad host".into()]).is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes([redacted; 7 bytes])");
    }

    #[test]
    fn pem_from_der_round_trips() {
        let der = vec![7u8; 100];
        let pem = cert_pem_from_der(&der);
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), &der[..]);
    }
}
