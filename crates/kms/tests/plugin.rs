//! The KMS v2 client against real plugins on real unix sockets: atrest's plugin (key files)
//! and a plugin that answers like upstream's test mock, through the provider chain.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atrest_encryption::kms::KmsError;
use atrest_encryption::{
    EncryptedObject, EncryptionConfig, GroupResource, ParseOptions, ProviderChain,
};
use atrest_kms::plugin::{KeyFiles, PluginService};
use atrest_kms::proto::v2;
use atrest_kms::{Endpoint, GrpcKmsConnector};
use prost::Message;
use tokio::sync::oneshot;

const AAD: &[u8] = b"/registry/secrets/ns/one";

fn kms_config(name: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: {name}\n          endpoint: {endpoint}\n          timeout: 2s\n"
    )
}

fn new_chain(name: &str, endpoint: &str) -> ProviderChain {
    let yaml = kms_config(name, endpoint);
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "test.yaml", ParseOptions::default()).unwrap();
    ProviderChain::build(&config, &GrpcKmsConnector::default()).unwrap()
}

/// A running in-process plugin; dropping the sender stops it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(mut self) {
        drop(self.stop.take());
        self.task.await.unwrap().unwrap();
    }
}

fn start_files(url: &str, files: &[&Path], create: bool) -> Running {
    let keys = KeyFiles::load(
        &files.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>(),
        create,
    )
    .unwrap();
    let endpoint = Endpoint::parse(url).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        atrest_kms::plugin::serve(&endpoint, Arc::new(keys), async {
            let _ = rx.await;
        })
        .await
    });
    Running {
        stop: Some(tx),
        task,
    }
}

fn secrets() -> GroupResource {
    GroupResource::parse("secrets")
}

#[tokio::test]
async fn atrest_plugin_over_a_socket_file_writes_upstream_values() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let url = format!("unix://{}", socket.display());
    let kek = dir.path().join("kek1");
    let plugin = start_files(&url, &[&kek], true);
    // The key file is new, private, and not the key id.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&kek).unwrap();

    let chain = new_chain("files", &url);
    assert!(chain.refresh_kms().await.is_empty());
    let t = chain.for_resource(&secrets());
    let written = t.encrypt(b"the plaintext", AAD).await.unwrap();
    let payload = written
        .stored
        .strip_prefix(b"k8s:enc:kms:v2:files:".as_slice())
        .expect("upstream's KMS v2 prefix");
    let object = EncryptedObject::decode(payload).unwrap();
    object.validate().unwrap();
    assert_eq!(object.encrypted_dek_source_type, 1, "HKDF seed");
    assert!(object.key_id.starts_with("kek-"));
    assert!(!object.key_id.contains(key_text.trim()));
    assert_eq!(
        written.provider.kms_key_id.as_deref(),
        Some(object.key_id.as_str())
    );

    let read = t.decrypt(&written.stored, AAD).await.unwrap();
    assert_eq!(read.plaintext, b"the plaintext");
    assert!(!read.stale);
    // The storage key is authenticated.
    assert!(t
        .decrypt(&written.stored, b"/registry/secrets/ns/other")
        .await
        .is_err());

    // A fresh process (a new chain, an empty cache) unwraps the seed through the plugin.
    let other = new_chain("files", &url);
    let read = other
        .for_resource(&secrets())
        .decrypt(&written.stored, AAD)
        .await
        .unwrap();
    assert_eq!(read.plaintext, b"the plaintext");

    plugin.stop().await;
    assert!(!socket.exists(), "the socket file is removed on stop");
}

#[tokio::test]
async fn abstract_socket_and_rotation_in_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("atrest-kms-test-{}", std::process::id());
    let url = format!("unix:///@{name}");
    let k1 = dir.path().join("k1");
    let k2 = dir.path().join("k2");
    let plugin = start_files(&url, &[&k1], true);
    let chain = new_chain("rot", &url);
    let t = chain.for_resource(&secrets());
    let old = t.encrypt(b"old", AAD).await.unwrap();
    let old_id = old.provider.kms_key_id.clone().unwrap();
    plugin.stop().await;

    // Rotate: a new first key, the old one still unwraps.
    let plugin = start_files(&url, &[&k2, &k1], true);
    // Give the restarted listener a moment to be reachable on the reused channel.
    let mut refreshed = false;
    for _ in 0..50 {
        if chain.refresh_kms().await.is_empty() {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed, "the plugin came back");
    let new = t.encrypt(b"new", AAD).await.unwrap();
    let new_id = new.provider.kms_key_id.clone().unwrap();
    assert_ne!(old_id, new_id, "a new KEK gives a new key id");
    let read_old = t.decrypt(&old.stored, AAD).await.unwrap();
    assert_eq!(read_old.plaintext, b"old");
    assert!(read_old.stale, "a value under the old key id is stale");
    let read_new = t.decrypt(&new.stored, AAD).await.unwrap();
    assert!(!read_new.stale);
    plugin.stop().await;
}

#[tokio::test]
async fn outage_reads_keep_working_writes_refuse_naming_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let url = format!("unix://{}", socket.display());
    let kek = dir.path().join("kek");
    let plugin = start_files(&url, &[&kek], true);
    let yaml = kms_config("outage", &url);
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "t.yaml", ParseOptions::default()).unwrap();
    // Writes expire at once: every write after the outage needs a healthy Status.
    let connector = GrpcKmsConnector::new(
        None,
        atrest_encryption::kms::KmsLifecycle {
            write_state_ttl: Duration::from_millis(1),
            healthy_poll: Duration::from_secs(60),
            unhealthy_poll: Duration::from_secs(60),
        },
    );
    let chain = ProviderChain::build(&config, &connector).unwrap();
    let t = chain.for_resource(&secrets());
    let written = t.encrypt(b"kept", AAD).await.unwrap();
    plugin.stop().await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let read = t.decrypt(&written.stored, AAD).await.unwrap();
    assert_eq!(read.plaintext, b"kept", "reads never expire");
    let err = t.encrypt(b"refused", AAD).await.unwrap_err().to_string();
    assert!(err.contains("\"outage\""), "{err}");
    assert!(err.contains("writes are refused"), "{err}");
    assert!(err.contains(&socket.display().to_string()), "{err}");
    let failures = chain.refresh_kms().await;
    assert!(matches!(failures.as_slice(), [(n, KmsError::Unavailable { .. })] if n == "outage"));
}

/// Upstream's test mock: `Encrypt` is base64 with key id "1" and one annotation.
#[derive(Debug, Default)]
struct Base64Mock;

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for Base64Mock {
    async fn status(
        &self,
        _r: tonic::Request<v2::StatusRequest>,
    ) -> Result<tonic::Response<v2::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(v2::StatusResponse {
            version: "v2beta1".into(),
            healthz: "ok".into(),
            key_id: "1".into(),
        }))
    }
    async fn encrypt(
        &self,
        r: tonic::Request<v2::EncryptRequest>,
    ) -> Result<tonic::Response<v2::EncryptResponse>, tonic::Status> {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(r.into_inner().plaintext);
        Ok(tonic::Response::new(v2::EncryptResponse {
            ciphertext: text.into_bytes(),
            key_id: "1".into(),
            annotations: [(
                "local-kek.kms.kubernetes.io".to_string(),
                b"encrypted-local-kek".to_vec(),
            )]
            .into_iter()
            .collect(),
        }))
    }
    async fn decrypt(
        &self,
        r: tonic::Request<v2::DecryptRequest>,
    ) -> Result<tonic::Response<v2::DecryptResponse>, tonic::Status> {
        use base64::Engine as _;
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(r.into_inner().ciphertext)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(v2::DecryptResponse { plaintext }))
    }
}

fn fixtures() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    p.join("kmsv2_HKDF_SEED.etcdvalue.bin")
        .exists()
        .then_some(p)
}

#[tokio::test]
async fn upstream_fixture_decrypts_through_a_mock_plugin_over_grpc() {
    let Some(fixtures) = fixtures() else {
        eprintln!("note: shared/fixtures is not on this machine; skipping");
        return;
    };
    let stored = std::fs::read(fixtures.join("kmsv2_HKDF_SEED.etcdvalue.bin")).unwrap();
    let plaintext = std::fs::read(fixtures.join("kmsv2_HKDF_SEED.plaintext.bin")).unwrap();
    let name = format!("atrest-kms-mock-{}", std::process::id());
    let endpoint = Endpoint::parse(&format!("unix:///@{name}")).unwrap();
    let listener = endpoint.listen().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                v2::key_management_service_server::KeyManagementServiceServer::new(Base64Mock),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let chain = new_chain("kms-provider", &format!("unix:///@{name}"));
    let key = b"/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/dek-source-hkdf-sha256-xnonce-aes-gcm-seed";
    let read = chain
        .for_resource(&secrets())
        .decrypt(&stored, key)
        .await
        .unwrap();
    assert_eq!(read.plaintext, plaintext);
    assert_eq!(read.provider.kms_key_id.as_deref(), Some("1"));
    // Key id "1" is the mock's current one: not stale.
    assert!(!read.stale);
    drop(tx);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_plugin_status_does_a_real_wrap_and_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("k");
    let keys = KeyFiles::load(&[kek], true).unwrap();
    let service = PluginService::new(Arc::new(keys));
    use v2::key_management_service_server::KeyManagementService as _;
    let status = service
        .status(tonic::Request::new(v2::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    assert!(status.key_id.starts_with("kek-"));
    // A ciphertext under an unknown key id, or damaged, is refused.
    let wrapped = service
        .encrypt(tonic::Request::new(v2::EncryptRequest {
            plaintext: vec![7; 32],
            uid: "u".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut damaged = wrapped.ciphertext.clone();
    if let Some(b) = damaged.last_mut() {
        *b ^= 1;
    }
    let refused = service
        .decrypt(tonic::Request::new(v2::DecryptRequest {
            ciphertext: damaged,
            uid: "u".into(),
            key_id: wrapped.key_id.clone(),
            annotations: Default::default(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let back = service
        .decrypt(tonic::Request::new(v2::DecryptRequest {
            ciphertext: wrapped.ciphertext,
            uid: "u".into(),
            key_id: wrapped.key_id,
            annotations: Default::default(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, vec![7; 32]);
}

#[test]
fn a_loose_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("k");
    atrest_kms::plugin::create_key_file(&kek).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyFiles::load(&[kek], false).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

/// Counts plugin calls as the client reports them.
#[derive(Debug, Default)]
struct CallCounter(std::sync::atomic::AtomicUsize);

impl atrest_encryption::kms::KmsObserver for CallCounter {
    fn plugin_call(&self, _p: &str, _m: &'static str, _c: &str, _e: Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn steady_state_writes_and_own_reads_make_no_plugin_calls() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let url = format!("unix://{}", socket.display());
    let plugin = start_files(&url, &[&dir.path().join("k")], true);
    let counter = Arc::new(CallCounter::default());
    let yaml = kms_config("steady", &url);
    let config =
        EncryptionConfig::parse(yaml.as_bytes(), "t.yaml", ParseOptions::default()).unwrap();
    let connector = GrpcKmsConnector::new(Some(counter.clone()), Default::default());
    let chain = ProviderChain::build(&config, &connector).unwrap();
    assert!(chain.refresh_kms().await.is_empty());
    let primed = counter.0.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(primed, 2, "Status and one Encrypt of the seed");
    let t = chain.for_resource(&secrets());
    for i in 0..10_000 {
        let key = format!("/registry/secrets/ns/s{i}");
        let written = t.encrypt(b"value", key.as_bytes()).await.unwrap();
        if i % 1000 == 0 {
            let read = t.decrypt(&written.stored, key.as_bytes()).await.unwrap();
            assert_eq!(read.plaintext, b"value");
        }
    }
    assert_eq!(
        counter.0.load(std::sync::atomic::Ordering::SeqCst),
        primed,
        "no plugin call per write or per read of this process's own values"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    // A socket file nobody listens on any more (a killed plugin leaves one).
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let url = format!("unix://{}", socket.display());
    let plugin = start_files(&url, &[&dir.path().join("k")], true);
    let chain = new_chain("stale", &url);
    assert!(
        chain.refresh_kms().await.is_empty(),
        "the plugin serves on the replaced socket"
    );
    // A second plugin on the same live socket refuses to start.
    let err = Endpoint::parse(&url).unwrap().listen().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // A regular file is never replaced.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    let err = Endpoint::Path(file.clone()).listen().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    plugin.stop().await;
}

/// A KMS v1 plugin that answers like upstream's v1 test mock (base64).
#[derive(Debug, Default)]
struct Base64MockV1;

#[tonic::async_trait]
impl atrest_kms::proto::v1beta1::key_management_service_server::KeyManagementService
    for Base64MockV1
{
    async fn version(
        &self,
        _r: tonic::Request<atrest_kms::proto::v1beta1::VersionRequest>,
    ) -> Result<tonic::Response<atrest_kms::proto::v1beta1::VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            atrest_kms::proto::v1beta1::VersionResponse {
                version: "v1beta1".into(),
                runtime_name: "mock".into(),
                runtime_version: "0".into(),
            },
        ))
    }
    async fn decrypt(
        &self,
        r: tonic::Request<atrest_kms::proto::v1beta1::DecryptRequest>,
    ) -> Result<tonic::Response<atrest_kms::proto::v1beta1::DecryptResponse>, tonic::Status> {
        use base64::Engine as _;
        let plain = base64::engine::general_purpose::STANDARD
            .decode(r.into_inner().cipher)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(
            atrest_kms::proto::v1beta1::DecryptResponse { plain },
        ))
    }
    async fn encrypt(
        &self,
        r: tonic::Request<atrest_kms::proto::v1beta1::EncryptRequest>,
    ) -> Result<tonic::Response<atrest_kms::proto::v1beta1::EncryptResponse>, tonic::Status> {
        use base64::Engine as _;
        let request = r.into_inner();
        if request.version != "v1beta1" {
            return Err(tonic::Status::invalid_argument("version"));
        }
        let cipher = base64::engine::general_purpose::STANDARD
            .encode(request.plain)
            .into_bytes();
        Ok(tonic::Response::new(
            atrest_kms::proto::v1beta1::EncryptResponse { cipher },
        ))
    }
}

#[tokio::test]
async fn kms_v1_plugins_are_reached_over_v1beta1() {
    let name = format!("atrest-kms-v1-{}", std::process::id());
    let url = format!("unix:///@{name}");
    let listener = Endpoint::parse(&url).unwrap().listen().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                atrest_kms::proto::v1beta1::key_management_service_server::KeyManagementServiceServer::new(
                    Base64MockV1,
                ),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          name: old\n          endpoint: {url}\n"
    );
    let options = ParseOptions {
        allow_kms_v1: true,
        ..ParseOptions::default()
    };
    let config = EncryptionConfig::parse(yaml.as_bytes(), "t.yaml", options).unwrap();
    let chain = ProviderChain::build(&config, &GrpcKmsConnector::default()).unwrap();
    let t = chain.for_resource(&secrets());
    let written = t.encrypt(b"v1 value", AAD).await.unwrap();
    assert!(written.stored.starts_with(b"k8s:enc:kms:v1:old:"));
    let read = t.decrypt(&written.stored, AAD).await.unwrap();
    assert_eq!(read.plaintext, b"v1 value");
    drop(tx);
    server.await.unwrap().unwrap();
}
