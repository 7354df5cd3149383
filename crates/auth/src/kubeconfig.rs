//! `<data-dir>/admin.kubeconfig`: a kubeconfig for kubectl that trusts atrest's CA and
//! authenticates with the admin client certificate (`CN=atrest-admin, O=system:masters`).
//!
//! Cluster, user and context are all named `atrest` / `atrest-admin`; the file is written
//! 0600 through a temporary file and a rename, on every start (so it follows a renewed admin
//! certificate or a new address).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::tls::{Pki, TlsError, ADMIN_USER};

/// File name of the admin kubeconfig in the data dir.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// Cluster and context name in the kubeconfig.
pub const CLUSTER_NAME: &str = "atrest";

/// The server URL for a bind address and port as kubectl should dial it: `0.0.0.0` and
/// `::` become the loopback address, IPv6 addresses are bracketed.
pub fn server_url(bind_address: &str, port: u16) -> String {
    let host = match bind_address.trim() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("https://{host}:{port}")
}

/// Writes `<data_dir>/admin.kubeconfig` for `server_url` (e.g. `https://127.0.0.1:6443`),
/// trusting the PKI's CA. Returns the file's path.
pub fn write_admin_kubeconfig(
    data_dir: &Path,
    server_url: &str,
    pki: &Pki,
) -> Result<PathBuf, TlsError> {
    write_admin_kubeconfig_with_ca(
        data_dir,
        server_url,
        pki,
        Some(pki.ca_cert_pem().as_bytes()),
    )
}

/// Like [`write_admin_kubeconfig`], with the CA that signed the serving certificate given
/// separately (for `--tls-cert-file`: see `ServingIdentity::trust_anchor_pem`); `None`
/// leaves `certificate-authority-data` out, so kubectl uses the system roots.
pub fn write_admin_kubeconfig_with_ca(
    data_dir: &Path,
    server_url: &str,
    pki: &Pki,
    server_ca_pem: Option<&[u8]>,
) -> Result<PathBuf, TlsError> {
    let path = data_dir.join(ADMIN_KUBECONFIG);
    let yaml = render(server_url, pki, server_ca_pem);
    atrest_files::write_private(&path, yaml.as_bytes(), atrest_files::Existing::Replace)?;
    Ok(path)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn render(server_url: &str, pki: &Pki, server_ca_pem: Option<&[u8]>) -> Zeroizing<String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let ca_line = server_ca_pem
        .map(|pem| format!("    certificate-authority-data: {}\n", b64(pem)))
        .unwrap_or_default();
    let key_b64 = Zeroizing::new(b64(pki.admin_key_pem().expose_secret()));
    Zeroizing::new(format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {cluster}\n  \
         cluster:\n\
         {ca_line}    \
         server: {server}\n\
         users:\n\
         - name: {user}\n  \
         user:\n    \
         client-certificate-data: {cert}\n    \
         client-key-data: {key}\n\
         contexts:\n\
         - name: {cluster}\n  \
         context:\n    \
         cluster: {cluster}\n    \
         user: {user}\n\
         current-context: {cluster}\n\
         preferences: {{}}\n",
        cluster = CLUSTER_NAME,
        server = quoted(server_url),
        user = ADMIN_USER,
        cert = b64(pki.admin_cert_pem().as_bytes()),
        key = key_b64.as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(server_url("127.0.0.1", 6443), "https://127.0.0.1:6443");
        assert_eq!(server_url("0.0.0.0", 1), "https://127.0.0.1:1");
        assert_eq!(server_url("::", 2), "https://[::1]:2");
        assert_eq!(server_url("::1", 3), "https://[::1]:3");
        assert_eq!(server_url("example.com", 4), "https://example.com:4");
    }

    #[test]
    fn kubeconfig_is_valid_yaml_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::ensure_pki(dir.path(), &[]).unwrap();
        let path = write_admin_kubeconfig(dir.path(), "https://127.0.0.1:6443", &pki).unwrap();
        assert_eq!(path, dir.path().join(ADMIN_KUBECONFIG));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Config");
        assert_eq!(v["current-context"], "atrest");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let ca = b64
            .decode(
                v["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(ca, pki.ca_cert_pem().as_bytes());
        let key = b64
            .decode(v["users"][0]["user"]["client-key-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(key, pki.admin_key_pem().expose_secret());
        assert_eq!(v["contexts"][0]["context"]["user"], "atrest-admin");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "atrest");
    }
}
