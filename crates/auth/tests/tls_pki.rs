//! The PKI atrest makes in its data dir: file modes, reloading, renewal rules, and that the
//! serving certificate verifies against the CA for the loopback names.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use atrest_auth::tls::{ensure_pki, Pki, ServingIdentity, TlsError};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::RootCertStore;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn verifies_for(pki: &Pki, name: &str) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_cert_der().unwrap()).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let id = pki.serving_identity().unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(
            &id.chain()[0],
            &id.chain()[1..],
            &name,
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn first_start_makes_private_files() {
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(data.path(), &[]).unwrap();
    assert_eq!(pki.generated(), ["ca", "server", "admin"]);
    let dir = data.path().join("pki");
    assert_eq!(pki.dir(), dir);
    assert_eq!(mode(&dir), 0o700);
    for key in ["ca.key", "server.key", "admin.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
        let pem = fs::read_to_string(dir.join(key)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    }
    for crt in ["ca.crt", "server.crt", "admin.crt"] {
        assert_eq!(mode(&dir.join(crt)), 0o644, "{crt}");
    }
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    // Keys never show in Debug.
    let debug = format!("{pki:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("redacted"));
}

#[test]
fn serving_cert_verifies_for_loopback_and_extra_hosts() {
    let data = tempfile::tempdir().unwrap();
    let pki = ensure_pki(
        data.path(),
        &["atrest.example".to_string(), "192.0.2.7".to_string()],
    )
    .unwrap();
    for name in [
        "127.0.0.1",
        "localhost",
        "::1",
        "atrest.example",
        "192.0.2.7",
    ] {
        assert!(verifies_for(&pki, name), "{name}");
    }
    for name in ["example.com", "10.0.0.1"] {
        assert!(!verifies_for(&pki, name), "{name}");
    }
}

#[test]
fn reload_keeps_everything_and_host_change_renews_only_the_serving_cert() {
    let data = tempfile::tempdir().unwrap();
    let first = ensure_pki(data.path(), &[]).unwrap();
    let again = ensure_pki(data.path(), &[]).unwrap();
    assert!(again.generated().is_empty(), "{:?}", again.generated());
    assert_eq!(first.ca_cert_pem(), again.ca_cert_pem());
    assert_eq!(first.server_cert_pem(), again.server_cert_pem());
    assert_eq!(first.admin_cert_pem(), again.admin_cert_pem());
    assert_eq!(
        first.admin_key_pem().expose_secret(),
        again.admin_key_pem().expose_secret()
    );

    // Same hosts in another spelling: nothing new.
    let same = ensure_pki(data.path(), &["LOCALHOST".into(), "[::1]".into()]).unwrap();
    assert!(same.generated().is_empty());

    let more = ensure_pki(data.path(), &["node1.example".into()]).unwrap();
    assert_eq!(more.generated(), ["server"]);
    assert_eq!(more.ca_cert_pem(), first.ca_cert_pem());
    assert_eq!(more.admin_cert_pem(), first.admin_cert_pem());
    assert_ne!(more.server_cert_pem(), first.server_cert_pem());
    assert!(verifies_for(&more, "node1.example"));
    assert!(!verifies_for(&first, "node1.example"));

    // A damaged serving certificate is made again; the CA stays.
    fs::write(data.path().join("pki/server.crt"), "garbage").unwrap();
    let fixed = ensure_pki(data.path(), &["node1.example".into()]).unwrap();
    assert_eq!(fixed.generated(), ["server"]);
    assert_eq!(fixed.ca_cert_pem(), first.ca_cert_pem());
    assert!(verifies_for(&fixed, "127.0.0.1"));
}

#[test]
fn leaf_signed_by_another_ca_is_replaced() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    ensure_pki(a.path(), &[]).unwrap();
    let pki_b = ensure_pki(b.path(), &[]).unwrap();
    // Put A's admin certificate and key into B: not signed by B's CA.
    for f in ["admin.crt", "admin.key"] {
        fs::copy(a.path().join("pki").join(f), b.path().join("pki").join(f)).unwrap();
    }
    let again = ensure_pki(b.path(), &[]).unwrap();
    assert_eq!(again.generated(), ["admin"]);
    assert_eq!(again.ca_cert_pem(), pki_b.ca_cert_pem());
}

#[test]
fn ca_is_never_replaced_silently() {
    let data = tempfile::tempdir().unwrap();
    ensure_pki(data.path(), &[]).unwrap();
    let pki = data.path().join("pki");
    let key = fs::read(pki.join("ca.key")).unwrap();

    fs::remove_file(pki.join("ca.key")).unwrap();
    let err = ensure_pki(data.path(), &[]).unwrap_err();
    assert!(matches!(err, TlsError::Ca(_)), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert!(pki.join("ca.crt").exists());

    // A key of another CA does not match.
    let other = tempfile::tempdir().unwrap();
    ensure_pki(other.path(), &[]).unwrap();
    let other_key = fs::read(other.path().join("pki/ca.key")).unwrap();
    fs::write(pki.join("ca.key"), &other_key).unwrap();
    let err = ensure_pki(data.path(), &[]).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let text = err.to_string();
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    fs::write(pki.join("ca.key"), &key).unwrap();
    assert!(ensure_pki(data.path(), &[]).unwrap().generated().is_empty());
}

#[test]
fn directory_mode_is_tightened() {
    let data = tempfile::tempdir().unwrap();
    let pki = data.path().join("pki");
    fs::create_dir(&pki).unwrap();
    fs::set_permissions(&pki, fs::Permissions::from_mode(0o755)).unwrap();
    ensure_pki(data.path(), &[]).unwrap();
    assert_eq!(mode(&pki), 0o700);
}

#[test]
fn user_given_files_load_with_errors_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    ensure_pki(data.path(), &[]).unwrap();
    let pki = data.path().join("pki");
    let crt = pki.join("server.crt");
    let key = pki.join("server.key");

    let id = ServingIdentity::from_files(&crt, &key).unwrap();
    assert_eq!(id.chain().len(), 1);
    assert!(!format!("{id:?}").contains("PRIVATE"));
    // A leaf signed by our CA is not self-issued: no trust anchor in the chain.
    assert!(id.trust_anchor_pem().is_none());
    let ca = ServingIdentity::from_files(&pki.join("ca.crt"), &pki.join("ca.key")).unwrap();
    assert!(ca.trust_anchor_pem().is_some());

    let missing = pki.join("nope.crt");
    let err = ServingIdentity::from_files(&missing, &key).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");

    let not_pem = data.path().join("bad.crt");
    fs::write(&not_pem, "hello").unwrap();
    let err = ServingIdentity::from_files(&not_pem, &key).unwrap_err();
    assert!(err.to_string().contains("bad.crt"), "{err}");

    // Swapped: the key file holds a certificate.
    let err = ServingIdentity::from_files(&crt, &crt).unwrap_err();
    assert!(err.to_string().contains("server.crt"), "{err}");
    assert!(err.to_string().contains("PRIVATE KEY block"), "{err}");

    // A key that is not the certificate's.
    let err = ServingIdentity::from_files(&crt, &pki.join("admin.key")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("admin.key") && text.contains("does not match"),
        "{text}"
    );
    assert!(!text.contains("BEGIN"), "{text}");
}
