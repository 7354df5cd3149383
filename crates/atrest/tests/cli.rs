//! The offline commands, run as a user runs them.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use atrest_testkit::run_with_input;

fn atrest(args: &[&str], stdin: &[u8]) -> Output {
    run_with_input(Command::new(env!("CARGO_BIN_EXE_atrest")).args(args), stdin)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn init(dir: &Path, provider: &str, resources: &str) -> PathBuf {
    let path = dir.join(format!("{provider}.yaml"));
    let o = atrest(
        &[
            "config",
            "init",
            "--provider",
            provider,
            "--resources",
            resources,
            "-o",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

#[test]
fn init_writes_a_private_valid_file_with_a_fresh_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path(), "secretbox", "secrets,configmaps");
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let check = atrest(&["config", "check", a.to_str().unwrap()], b"");
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(!stderr(&check).contains("warning"), "{}", stderr(&check));
    // Refuses to overwrite without --force.
    let again = atrest(&["config", "init", "-o", a.to_str().unwrap()], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
    // Two runs never produce the same key.
    let p1 = atrest(&["config", "init"], b"");
    let p2 = atrest(&["config", "init"], b"");
    assert!(p1.status.success());
    assert_ne!(p1.stdout, p2.stdout);
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [Secrets]\n  providers: [{aescbc: {keys: [{name: a, secret: bad}]}}]\n",
    )
    .unwrap();
    let o = atrest(
        &["config", "check", bad.to_str().unwrap(), "-o", "json"],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let errors: Vec<String> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e.starts_with("resources[0].resources[0]:")));
    assert!(errors
        .iter()
        .any(|e| e.starts_with("resources[0].providers[0].aescbc.keys[0].secret:")));
}

#[test]
fn check_warns_about_weak_choices_and_loose_modes() {
    let dir = tempfile::tempdir().unwrap();
    let cbc = init(dir.path(), "aescbc", "secrets");
    std::fs::set_permissions(&cbc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = atrest(&["config", "check", cbc.to_str().unwrap()], b"");
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(err.contains("aescbc is not recommended"), "{err}");
    assert!(err.contains("file mode is 0644"), "{err}");
    let cm_only = init(dir.path(), "aesgcm", "configmaps");
    let err = stderr(&atrest(
        &["config", "check", cm_only.to_str().unwrap()],
        b"",
    ));
    assert!(err.contains("no rule covers secrets"), "{err}");
}

#[test]
fn encrypt_then_decrypt_every_provider() {
    let dir = tempfile::tempdir().unwrap();
    for provider in ["secretbox", "aesgcm", "aescbc"] {
        let cfg = init(dir.path(), provider, "secrets,pandas.awesome.bears.example");
        let cfg = cfg.to_str().unwrap();
        for key in [
            "/registry/secrets/ns/a",
            "/registry/awesome.bears.example/pandas/ns/p",
        ] {
            let plaintext = b"k8s\0some object bytes \xff\x00";
            let enc = atrest(
                &["encrypt", "--encryption-provider-config", cfg, "--key", key],
                plaintext,
            );
            assert!(enc.status.success(), "{}", stderr(&enc));
            assert!(enc
                .stdout
                .starts_with(format!("k8s:enc:{provider}:v1:key1:").as_bytes()));
            let dec = atrest(
                &[
                    "decrypt",
                    "--encryption-provider-config",
                    cfg,
                    "--key",
                    key,
                    "--report",
                    "json",
                ],
                &enc.stdout,
            );
            assert!(dec.status.success(), "{}", stderr(&dec));
            assert_eq!(dec.stdout, plaintext);
            let report: serde_json::Value = serde_json::from_str(stderr(&dec).trim()).unwrap();
            assert_eq!(report["provider"], provider);
            assert_eq!(report["keyName"], "key1");
            assert_eq!(report["stale"], false);
        }
    }
}

#[test]
fn decrypt_errors_name_the_key_and_never_print_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path(), "aesgcm", "secrets");
    let cfg = cfg.to_str().unwrap();
    let enc = atrest(
        &[
            "encrypt",
            "--encryption-provider-config",
            cfg,
            "--key",
            "/registry/secrets/ns/a",
        ],
        b"x",
    );
    let moved = atrest(
        &[
            "decrypt",
            "--encryption-provider-config",
            cfg,
            "--key",
            "/registry/secrets/ns/b",
        ],
        &enc.stdout,
    );
    assert_eq!(moved.status.code(), Some(1));
    assert!(moved.stdout.is_empty());
    let err = stderr(&moved);
    assert!(
        err.contains("/registry/secrets/ns/b") && err.contains("aesgcm:key1"),
        "{err}"
    );
    // The resource cannot be inferred: usage error naming the key.
    let o = atrest(
        &[
            "decrypt",
            "--encryption-provider-config",
            cfg,
            "--key",
            "/elsewhere/x",
        ],
        &enc.stdout,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/elsewhere/x"));
    // --resource overrides inference.
    let o = atrest(
        &[
            "decrypt",
            "--encryption-provider-config",
            cfg,
            "--key",
            "/registry/secrets/ns/a",
            "--resource",
            "configmaps",
        ],
        &enc.stdout,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("identity transformer tried to read encrypted data"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kms_provider_without_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kms.yaml");
    let o = atrest(
        &[
            "config",
            "init",
            "--provider",
            "kms",
            "--kms-name",
            "vault",
            "--kms-endpoint",
            "unix:///tmp/no-such.sock",
            "-o",
            cfg.to_str().unwrap(),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = atrest(
        &[
            "encrypt",
            "--encryption-provider-config",
            cfg.to_str().unwrap(),
            "--key",
            "/registry/secrets/a/b",
        ],
        b"x",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("unix:///tmp/no-such.sock"),
        "{}",
        stderr(&o)
    );
}

fn python_has_crypto() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography, nacl"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn crosscheck(args: &[&str], stdin: &[u8]) -> Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/crosscheck.py"
    );
    run_with_input(Command::new("python3").arg(script).args(args), stdin)
}

/// atrest's values decrypt with an independent implementation, and the other way round.
#[test]
fn interop_with_an_independent_implementation() {
    assert!(
        python_has_crypto(),
        "python3 with `cryptography` and `pynacl` is required (pip install cryptography pynacl; .ci/run installs them)"
    );
    let dir = tempfile::tempdir().unwrap();
    for provider in ["secretbox", "aesgcm", "aescbc"] {
        let cfg = init(dir.path(), provider, "secrets");
        let cfg = cfg.to_str().unwrap();
        let key = "/registry/secrets/interop/s1";
        for plaintext in [&b""[..], b"k8s\0x", &[7u8; 1000][..]] {
            let enc = atrest(
                &["encrypt", "--encryption-provider-config", cfg, "--key", key],
                plaintext,
            );
            assert!(enc.status.success());
            let theirs = crosscheck(&["decrypt", cfg, key], &enc.stdout);
            assert!(theirs.status.success(), "{provider}: {}", stderr(&theirs));
            assert_eq!(theirs.stdout, plaintext, "{provider}");

            let theirs = crosscheck(&["encrypt", cfg, key, provider, "key1"], plaintext);
            assert!(theirs.status.success(), "{provider}: {}", stderr(&theirs));
            let ours = atrest(
                &["decrypt", "--encryption-provider-config", cfg, "--key", key],
                &theirs.stdout,
            );
            assert!(ours.status.success(), "{provider}: {}", stderr(&ours));
            assert_eq!(ours.stdout, plaintext, "{provider}");
        }
    }
}
