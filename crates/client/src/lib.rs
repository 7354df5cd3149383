//! A small client for any Kubernetes API server (atrest's or kube-apiserver): the current
//! context of a kubeconfig, HTTPS over rustls with a client certificate or a bearer token,
//! JSON requests on a pool of kept-alive HTTP/1.1 connections.
//!
//! It is what operations use when they work through the API instead of the store
//! (`atrest reencrypt --via-api`), and to read servers' `/metrics`.
#![forbid(unsafe_code)]

pub mod kubeconfig;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use zeroize::Zeroizing;

pub use kubeconfig::{Credentials, Kubeconfig, Trust};

/// Everything that can go wrong talking to an API server. Never shows credentials.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig cannot be used.
    #[error("kubeconfig {}: {message}", file.display())]
    Kubeconfig { file: PathBuf, message: String },
    /// TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server could not be reached or the connection broke.
    #[error("{server}: {message}")]
    Connection { server: String, message: String },
    /// The server answered with an error status.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A client of one API server.
pub struct KubeClient {
    server: String,
    authority: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    token: Option<Zeroizing<String>>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (`insecure-skip-tls-verify: true`), still checking that
/// the handshake signatures are valid for the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeClient {
    /// A client for the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, ClientError> {
        Self::new(Kubeconfig::load(path)?)
    }

    /// A client for a resolved kubeconfig.
    pub fn new(config: Kubeconfig) -> Result<Self, ClientError> {
        let tls_err = |e: rustls::Error| ClientError::Tls(e.to_string());
        let authority = config
            .server
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ClientError::Tls(format!("server {:?} has no host", config.server)))?
            .to_string();
        let (host, _) = split_authority(&authority);
        let name = config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| ClientError::Tls(format!("{name:?} is not a server name")))?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = match &config.trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
            Trust::Ca(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
                    roots.add(cert).map_err(tls_err)?;
                }
                builder.with_root_certificates(roots)
            }
            Trust::None => builder.with_root_certificates(rustls::RootCertStore::empty()),
        };
        let (tls, token) = match config.credentials {
            Credentials::Certificate { cert_pem, key_pem } => {
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|_| ClientError::Tls("client key: not a PEM private key".into()))?;
                (
                    builder.with_client_auth_cert(chain, key).map_err(tls_err)?,
                    None,
                )
            }
            Credentials::Token(token) => (builder.with_no_client_auth(), Some(token)),
            Credentials::None => (builder.with_no_client_auth(), None),
        };
        Ok(KubeClient {
            server: config.server,
            authority,
            server_name,
            tls: Arc::new(tls),
            token,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A TLS connection to the server with nothing sent on it yet: for tools that hold
    /// connections open or write requests by hand (the exhaustion tests, load tools).
    pub async fn open_tls(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let fail = |message: String| ClientError::Connection {
            server: self.server.clone(),
            message,
        };
        let (host, port) = split_authority(&self.authority);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(format!("connecting: {e}")))?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake: {e}")))
    }

    /// The head of an HTTP/1.1 request written by hand on [`open_tls`](Self::open_tls):
    /// request line, `Host`, the credentials of the kubeconfig, and `Content-Length` when
    /// given. It holds the bearer token: zeroized when dropped.
    pub fn request_head(
        &self,
        method: &str,
        path: &str,
        content_length: Option<usize>,
    ) -> Zeroizing<Vec<u8>> {
        use std::fmt::Write as _;
        let token_len = self.token.as_ref().map_or(0, |t| t.len());
        // One allocation large enough for the whole head: no copy of the token is left
        // behind by a reallocation.
        let mut head = Zeroizing::new(String::with_capacity(
            256 + method.len() + path.len() + self.authority.len() + token_len,
        ));
        let _ = write!(
            head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.authority
        );
        if let Some(token) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(token.as_str());
            head.push_str("\r\n");
        }
        if let Some(n) = content_length {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {n}\r\n"
            );
        }
        head.push_str("\r\n");
        Zeroizing::new(std::mem::take(&mut *head).into_bytes())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let fail = |message: String| ClientError::Connection {
            server: self.server.clone(),
            message,
        };
        let tls = self.open_tls().await?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }

    /// Sends one request (`path` with its query) and returns the answer, whatever its
    /// status.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let payload = body.map(|b| b.to_string().into_bytes());
        let content_type = body.map(|_| "application/json");
        self.request_bytes(method, path, content_type, payload.unwrap_or_default())
            .await
    }

    /// Sends one request with a body of `content_type` (a patch type, protobuf...).
    pub async fn request_bytes(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<Response, ClientError> {
        let fail = |message: String| ClientError::Connection {
            server: self.server.clone(),
            message,
        };
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut send = match pooled {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        if send.ready().await.is_err() {
            send = self.connect().await?;
        }
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "atrest");
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.as_str()),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| fail(format!("building the request: {e}")))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| fail(format!("request: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(send);
        Ok(Response { status, body })
    }

    /// GET a text page (`/metrics`), an error for any status but 2xx.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let response = self.request(http::Method::GET, path, None).await?;
        if !(200..300).contains(&response.status) {
            return Err(ClientError::Status {
                method: "GET".into(),
                path: path.into(),
                status: response.status,
                message: String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// GET and parse JSON, an error for any status but 2xx.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let response = self.request(http::Method::GET, path, None).await?;
        ok_json("GET", path, &response)
    }
}

/// The JSON body of a 2xx answer, or the error it names.
pub fn ok_json(
    method: &str,
    path: &str,
    response: &Response,
) -> Result<serde_json::Value, ClientError> {
    let status_error = |message: String| ClientError::Status {
        method: method.into(),
        path: path.into(),
        status: response.status,
        message,
    };
    if !(200..300).contains(&response.status) {
        let message = response
            .json()
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect()
            });
        return Err(status_error(message));
    }
    response
        .json()
        .map_err(|e| status_error(format!("the answer is not JSON: {e}")))
}

/// `host:port` (IPv6 in brackets) → (host, port), port 443 when absent.
fn split_authority(authority: &str) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(443);
            return (host.to_string(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(443)),
        None => (authority.to_string(), 443),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    #[test]
    fn authorities_split() {
        assert_eq!(
            split_authority("127.0.0.1:6443"),
            ("127.0.0.1".into(), 6443)
        );
        assert_eq!(split_authority("[::1]:8443"), ("::1".into(), 8443));
        assert_eq!(split_authority("example.com"), ("example.com".into(), 443));
    }

    #[test]
    fn kubeconfig_with_a_token_and_relative_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), b"pem").unwrap();
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443/\n    certificate-authority: ca.pem\nusers:\n- name: u\n  user:\n    token: sekret-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";
        let path = dir.path().join("kubeconfig");
        let config = Kubeconfig::parse(text.as_bytes(), &path).unwrap();
        assert_eq!(config.server, "https://127.0.0.1:6443");
        assert!(matches!(&config.trust, Trust::Ca(pem) if pem == b"pem"));
        assert!(
            matches!(&config.credentials, Credentials::Token(t) if t.as_str() == "sekret-token")
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("sekret-token"), "{shown}");
    }

    #[test]
    fn bad_kubeconfigs_name_the_file_and_the_problem() {
        let path = Path::new("/tmp/kc");
        for (text, needle) in [
            ("clusters: []\ncontexts: []\ncurrent-context: a\n", "no context"),
            (
                "clusters: []\ncontexts:\n- name: a\n  context:\n    cluster: nope\ncurrent-context: a\n",
                "no cluster",
            ),
            (
                "clusters:\n- name: c\n  cluster:\n    server: http://x:1\ncontexts:\n- name: a\n  context:\n    cluster: c\ncurrent-context: a\n",
                "not an https",
            ),
            (
                "clusters:\n- name: c\n  cluster:\n    server: https://x:1\n    certificate-authority-data: '!!'\ncontexts:\n- name: a\n  context:\n    cluster: c\ncurrent-context: a\n",
                "not base64",
            ),
        ] {
            let err = Kubeconfig::parse(text.as_bytes(), path).unwrap_err().to_string();
            assert!(err.contains("/tmp/kc") && err.contains(needle), "{err}");
        }
    }
}
