//! The PKCS#11 backend against a real SoftHSM token, initialised in a temp directory: wrap
//! and unwrap inside the token through the gRPC plugin, and a key that may encrypt but not
//! decrypt makes Status report unhealthy.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use atrest_encryption::kms::KmsError;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use atrest_kms::plugin::{Pkcs11Keys, Pkcs11Options};
use atrest_kms::{Endpoint, GrpcKmsConnector};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321";

/// A SoftHSM configuration and token in `dir`; false when SoftHSM is not installed.
fn init_token(dir: &Path) -> bool {
    if !Path::new(MODULE).exists() {
        eprintln!("note: SoftHSM ({MODULE}) is not installed (scripts/install-deps.sh); skipping");
        return false;
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // The module reads its configuration from the environment when it is initialised; this
    // test binary has one test, so nothing else reads the variable concurrently.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "atrest-test"])
        .args(["--pin", PIN, "--so-pin", "87654321"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn chain(url: &str) -> ProviderChain {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: hsm\n          endpoint: {url}\n"
    );
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "t.yaml", ParseOptions::default()).unwrap();
    ProviderChain::build(&config, &GrpcKmsConnector::default()).unwrap()
}

async fn serve(
    keys: Pkcs11Keys,
    url: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let endpoint = Endpoint::parse(url).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        atrest_kms::plugin::serve(&endpoint, Arc::new(keys), async {
            let _ = rx.await;
        })
        .await
    });
    (tx, task)
}

#[tokio::test]
async fn softhsm_token_wraps_inside_the_token_and_a_broken_unwrap_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    if !init_token(dir.path()) {
        return;
    }
    let url = format!("unix://{}", dir.path().join("hsm.sock").display());
    let options = Pkcs11Options {
        module: MODULE.into(),
        token_label: "atrest-test".into(),
        key_labels: vec!["kek-1".into()],
        create: true,
    };
    // Without --create-key a missing key is an error naming the label.
    let missing = Pkcs11Keys::open(
        &Pkcs11Options {
            create: false,
            ..options.clone()
        },
        PIN,
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("kek-1"), "{missing}");
    // A wrong PIN is refused.
    assert!(Pkcs11Keys::open(&options, "0000").is_err());

    let keys = Pkcs11Keys::open(&options, PIN).unwrap();
    let (stop, task) = serve(keys, &url).await;
    let c = chain(&url);
    assert!(c.refresh_kms().await.is_empty(), "healthy");
    let t = c.for_resource(&GroupResource::parse("secrets"));
    let aad = b"/registry/secrets/default/hsm";
    let written = t.encrypt(b"inside the token", aad).await.unwrap();
    assert!(written.stored.starts_with(b"k8s:enc:kms:v2:hsm:"));
    let key_id = written.provider.kms_key_id.clone().unwrap();
    assert!(key_id.starts_with("p11-"), "{key_id}");
    // A new process unwraps the seed in the token.
    let fresh = chain(&url);
    let read = fresh
        .for_resource(&GroupResource::parse("secrets"))
        .decrypt(&written.stored, aad)
        .await
        .unwrap();
    assert_eq!(read.plaintext, b"inside the token");
    drop(stop);
    task.await.unwrap().unwrap();

    // A key that may encrypt but not decrypt: wrap works, unwrap does not.
    {
        let p11 = Pkcs11::new(MODULE).unwrap();
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = p11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| p11.get_token_info(*s).unwrap().label().trim_end() == "atrest-test")
            .unwrap();
        let session = p11.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
            .unwrap();
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
                    Attribute::Decrypt(false),
                    Attribute::Label(b"encrypt-only".to_vec()),
                ],
            )
            .unwrap();
    }
    let broken = Pkcs11Keys::open(
        &Pkcs11Options {
            key_labels: vec!["encrypt-only".into()],
            create: false,
            ..options.clone()
        },
        PIN,
    )
    .unwrap();
    let (stop, task) = serve(broken, &url).await;
    let c = chain(&url);
    let failures = c.refresh_kms().await;
    match failures.as_slice() {
        [(name, KmsError::Unhealthy { message, .. })] => {
            assert_eq!(name, "hsm");
            assert!(message.contains("unwrap failed"), "{message}");
        }
        other => panic!("expected an unhealthy plugin, got {other:?}"),
    }
    drop(stop);
    task.await.unwrap().unwrap();
}
