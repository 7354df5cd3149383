//! Real TLS handshakes with `server_config`: rustls clients with and without the admin
//! certificate, a client certificate from another CA, and kubectl 1.32 (Go's TLS stack)
//! reading `/version` through the written admin kubeconfig.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest_auth::authn::{is_public_path, AuthOutcome, Authenticator, TokenFile, UserInfo};
use atrest_auth::kubeconfig::write_admin_kubeconfig;
use atrest_auth::tls::{ensure_pki, server_config, Pki};
use bytes::Bytes;
use http_body_util::Full;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(pki: &Pki, client_cert: Option<&Pki>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_cert_der().unwrap()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(p) => {
            let id = p.admin_identity().unwrap();
            builder
                .with_client_auth_cert(id.chain().to_vec(), id.private_key())
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Accepts one connection, authenticates it from its peer certificates (no header) and
/// sends the outcome back; the client gets one byte so both sides finish cleanly.
async fn one_handshake(pki: &Pki, client: Arc<ClientConfig>) -> Result<AuthOutcome, String> {
    let ca = pki.ca_cert_der().unwrap();
    let config = server_config(&pki.serving_identity().unwrap(), Some(&[ca])).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let certs: Option<Vec<CertificateDer<'static>>> = conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
        let outcome = Authenticator::new(None).authenticate(None, certs.as_deref());
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(outcome)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let client_result = async {
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    let server_result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .map_err(|_| "server timed out".to_string())?
        .unwrap();
    client_result?;
    server_result
}

#[tokio::test]
async fn admin_client_certificate_authenticates() {
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(data.path(), &[]).unwrap();
    let outcome = one_handshake(&pki, client_config(&pki, Some(&pki)))
        .await
        .unwrap();
    match outcome {
        AuthOutcome::Authenticated(UserInfo { name, groups, .. }) => {
            assert_eq!(name, "atrest-admin");
            assert!(groups.iter().any(|g| g == "system:masters"), "{groups:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_without_certificate_still_connects() {
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(data.path(), &[]).unwrap();
    let outcome = one_handshake(&pki, client_config(&pki, None))
        .await
        .unwrap();
    assert_eq!(outcome, AuthOutcome::Anonymous);
}

#[tokio::test]
async fn client_certificate_of_another_ca_fails_the_handshake() {
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(data.path(), &[]).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ensure_pki(other_dir.path(), &[]).unwrap();
    let result = one_handshake(&pki, client_config(&pki, Some(&other))).await;
    assert!(result.is_err(), "{result:?}");
}

/// Serves `/version` (public) and everything else only to authenticated users, like the
/// API server will; `/version` also says who asked, so the test can see the client cert.
async fn serve_https(listener: TcpListener, acceptor: TlsAcceptor, authn: Arc<Authenticator>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let authn = authn.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let certs: Option<Vec<CertificateDer<'static>>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let outcome = authn.authenticate(
                    req.headers()
                        .get(hyper::header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                    certs.as_deref(),
                );
                let path = req.uri().path().to_string();
                async move {
                    let (status, body) = match (&outcome, path.as_str()) {
                        (AuthOutcome::Authenticated(u), "/version") => (
                            200,
                            format!(
                                r#"{{"major":"1","minor":"32","gitVersion":"v1.32.0","platform":"{}"}}"#,
                                u.name
                            ),
                        ),
                        (AuthOutcome::Anonymous, p) if is_public_path(p) => (
                            200,
                            r#"{"major":"1","minor":"32","gitVersion":"v1.32.0","platform":"anonymous"}"#
                                .to_string(),
                        ),
                        (AuthOutcome::Authenticated(_), _) => (404, "{}".to_string()),
                        _ => (401, r#"{"kind":"Status","code":401}"#.to_string()),
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}

async fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let cache: PathBuf = home.join("cache");
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--request-timeout=20s")
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl timed out")
        .expect("run kubectl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_version_with_the_admin_kubeconfig() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipped: {KUBECTL} is not installed");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(data.path(), &[]).unwrap();
    let config = server_config(
        &pki.serving_identity().unwrap(),
        Some(&[pki.ca_cert_der().unwrap()]),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve_https(
        listener,
        TlsAcceptor::from(config),
        Arc::new(Authenticator::new(Some(
            TokenFile::parse(
                b"good-token-1,token-user,42,\"g1,g2\"\n",
                Path::new("t.csv"),
            )
            .unwrap(),
        ))),
    ));

    let home = tempfile::tempdir().unwrap();
    for url in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
    ] {
        let kubeconfig = write_admin_kubeconfig(data.path(), &url, &pki).unwrap();
        let out = kubectl(&kubeconfig, home.path(), &["version", "-o", "json"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{url}: kubectl failed: {stderr}\n{stdout}"
        );
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["serverVersion"]["gitVersion"], "v1.32.0", "{stdout}");
        assert_eq!(v["serverVersion"]["minor"], "32", "{stdout}");
        // The handler saw the admin client certificate, not an anonymous request.
        assert_eq!(v["serverVersion"]["platform"], "atrest-admin", "{stdout}");
    }

    // Bearer tokens from the token file: the right one authenticates kubectl without its
    // client certificate, a wrong one gets 401 (even on /version, as upstream).
    let text = std::fs::read_to_string(data.path().join("admin.kubeconfig")).unwrap();
    let with_token = |token: &str| -> PathBuf {
        let cfg: String = text
            .lines()
            .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
            .map(|l| {
                if l.trim() == "user:" {
                    format!("  user:\n    token: {token}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = data.path().join(format!("{token}.kubeconfig"));
        std::fs::write(&path, cfg).unwrap();
        path
    };
    let good = with_token("good-token-1");
    let out = kubectl(&good, home.path(), &["version", "-o", "json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["serverVersion"]["platform"], "token-user", "{stdout}");

    let bad = with_token("wrong-token-2");
    let out = kubectl(&bad, home.path(), &["get", "--raw", "/api"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be logged in") || stderr.contains("Unauthorized"),
        "{stderr}"
    );

    server.abort();
}
