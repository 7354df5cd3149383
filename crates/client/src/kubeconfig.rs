//! Reading a kubeconfig (the file kubectl uses): the current context's server, how to trust
//! it, and who to be. Paths in the file are relative to the file's directory. Credentials
//! are held zeroized on drop and never shown by `Debug`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::ClientError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    clusters: Vec<Named<RawCluster>>,
    #[serde(default)]
    users: Vec<Named<RawUser>>,
    #[serde(default)]
    contexts: Vec<Named<RawContext>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCluster {
    server: Option<String>,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawUser {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

impl std::fmt::Debug for RawUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawUser { <credentials redacted> }")
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawContext {
    cluster: String,
    #[serde(default)]
    user: String,
}

/// How to verify the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// CA certificates (PEM).
    Ca(Vec<u8>),
    /// `insecure-skip-tls-verify: true`: no verification at all.
    Insecure,
    /// Neither given: the server must present a certificate from a CA the caller adds.
    None,
}

/// Who to be.
pub enum Credentials {
    /// A client certificate chain and its key (PEM).
    Certificate {
        cert_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
    },
    /// A bearer token.
    Token(Zeroizing<String>),
    /// Anonymous.
    None,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Certificate { .. } => "Credentials::Certificate(<redacted>)",
            Credentials::Token(_) => "Credentials::Token(<redacted>)",
            Credentials::None => "Credentials::None",
        })
    }
}

/// The current context of a kubeconfig, resolved.
#[derive(Debug)]
pub struct Kubeconfig {
    /// `https://host:port` (no trailing slash).
    pub server: String,
    pub trust: Trust,
    pub credentials: Credentials,
    /// Name to verify the server certificate against (`tls-server-name`), if not the host.
    pub tls_server_name: Option<String>,
}

fn decode_data(what: &str, data: &str, file: &Path) -> Result<Vec<u8>, ClientError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ClientError::Kubeconfig {
            file: file.to_path_buf(),
            message: format!("{what} is not base64: {e}"),
        })
}

fn read_file(what: &str, path: &Path, base: &Path, file: &Path) -> Result<Vec<u8>, ClientError> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    std::fs::read(&full).map_err(|e| ClientError::Kubeconfig {
        file: file.to_path_buf(),
        message: format!("reading {what} {}: {e}", full.display()),
    })
}

impl Kubeconfig {
    /// Reads `path` and resolves its current context.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bytes = std::fs::read(path).map_err(|e| ClientError::Kubeconfig {
            file: path.to_path_buf(),
            message: format!("reading it: {e}"),
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses kubeconfig bytes; `path` names the file in errors and anchors relative paths.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ClientError> {
        let bad = |message: String| ClientError::Kubeconfig {
            file: path.to_path_buf(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let context = raw
            .contexts
            .iter()
            .find(|c| c.name == raw.current_context)
            .or_else(|| (raw.contexts.len() == 1).then(|| &raw.contexts[0]))
            .and_then(|c| c.item.as_ref())
            .ok_or_else(|| bad(format!("no context {:?}", raw.current_context)))?;
        let cluster = raw
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.item.as_ref())
            .ok_or_else(|| bad(format!("no cluster {:?}", context.cluster)))?;
        let default_user = RawUser::default();
        let user = raw
            .users
            .iter()
            .find(|u| u.name == context.user)
            .and_then(|u| u.item.as_ref())
            .unwrap_or(&default_user);
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| bad(format!("cluster {:?} has no server", context.cluster)))?
            .trim_end_matches('/')
            .to_string();
        if !server.starts_with("https://") {
            return Err(bad(format!("server {server:?} is not an https:// URL")));
        }
        let trust = if cluster.insecure_skip_tls_verify {
            Trust::Insecure
        } else if let Some(data) = &cluster.certificate_authority_data {
            Trust::Ca(decode_data("certificate-authority-data", data, path)?)
        } else if let Some(file) = &cluster.certificate_authority {
            Trust::Ca(read_file("certificate-authority", file, base, path)?)
        } else {
            Trust::None
        };
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(decode_data("client-certificate-data", d, path)?),
            (None, Some(f)) => Some(read_file("client-certificate", f, base, path)?),
            (None, None) => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(Zeroizing::new(decode_data("client-key-data", d, path)?)),
            (None, Some(f)) => Some(Zeroizing::new(read_file("client-key", f, base, path)?)),
            (None, None) => None,
        };
        let credentials = match (cert, key, &user.token, &user.token_file) {
            (Some(cert_pem), Some(key_pem), _, _) => Credentials::Certificate { cert_pem, key_pem },
            (Some(_), None, _, _) | (None, Some(_), _, _) => {
                return Err(bad(format!(
                    "user {:?} has a client certificate or key without the other",
                    context.user
                )))
            }
            (None, None, Some(token), _) => Credentials::Token(Zeroizing::new(token.clone())),
            (None, None, None, Some(file)) => {
                let bytes = read_file("tokenFile", file, base, path)?;
                let token =
                    String::from_utf8(bytes).map_err(|_| bad("tokenFile is not UTF-8".into()))?;
                Credentials::Token(Zeroizing::new(token.trim().to_string()))
            }
            (None, None, None, None) => Credentials::None,
        };
        Ok(Kubeconfig {
            server,
            trust,
            credentials,
            tls_server_name: cluster.tls_server_name.clone(),
        })
    }
}
