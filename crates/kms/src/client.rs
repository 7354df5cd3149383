//! The KMS plugin client: gRPC over the provider's unix socket, as kube-apiserver's
//! (`:authority` `localhost`, insecure HTTP/2, the provider's `timeout` on every call).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_encryption::config::KmsConfig;
use atrest_encryption::kms::{
    KmsConnector, KmsEncryptResponse, KmsError, KmsLifecycle, KmsObserver, KmsStatus, KmsV1Service,
    KmsV2Service,
};
use hyper_util::rt::TokioIo;
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use crate::endpoint::Endpoint;
use crate::proto::{v1beta1, v2};

const V2_STATUS: &str = "/v2.KeyManagementService/Status";
const V2_ENCRYPT: &str = "/v2.KeyManagementService/Encrypt";
const V2_DECRYPT: &str = "/v2.KeyManagementService/Decrypt";
const V1_VERSION: &str = "/v1beta1.KeyManagementService/Version";
const V1_ENCRYPT: &str = "/v1beta1.KeyManagementService/Encrypt";
const V1_DECRYPT: &str = "/v1beta1.KeyManagementService/Decrypt";

/// Connects `kms` providers to their plugins over gRPC.
#[derive(Debug, Clone, Default)]
pub struct GrpcKmsConnector {
    observer: Option<Arc<dyn KmsObserver>>,
    lifecycle: KmsLifecycle,
}

impl GrpcKmsConnector {
    /// A connector whose providers report to `observer` and follow `lifecycle`.
    pub fn new(observer: Option<Arc<dyn KmsObserver>>, lifecycle: KmsLifecycle) -> Self {
        GrpcKmsConnector {
            observer,
            lifecycle,
        }
    }
}

impl KmsConnector for GrpcKmsConnector {
    fn connect_v2(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(Arc::new(GrpcKmsV2(Conn::new(
            config,
            self.observer.clone(),
        )?)))
    }

    fn connect_v1(&self, config: &KmsConfig) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Ok(Arc::new(GrpcKmsV1 {
            conn: Conn::new(config, self.observer.clone())?,
            version_checked: OnceCell::new(),
        }))
    }

    fn observer(&self) -> Option<Arc<dyn KmsObserver>> {
        self.observer.clone()
    }

    fn lifecycle(&self) -> KmsLifecycle {
        self.lifecycle
    }
}

/// One plugin connection, opened on first use (building a chain does no I/O).
struct Conn {
    name: String,
    url: String,
    endpoint: Endpoint,
    timeout: Duration,
    channel: OnceCell<Channel>,
    observer: Option<Arc<dyn KmsObserver>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("name", &self.name)
            .field("endpoint", &self.url)
            .finish()
    }
}

impl Conn {
    fn new(config: &KmsConfig, observer: Option<Arc<dyn KmsObserver>>) -> Result<Self, KmsError> {
        let endpoint =
            Endpoint::parse(&config.endpoint.url).map_err(|e| KmsError::Unavailable {
                name: config.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Conn {
            name: config.name.clone(),
            url: config.endpoint.url.clone(),
            endpoint,
            timeout: config.timeout,
            channel: OnceCell::new(),
            observer,
        })
    }

    async fn channel(&self) -> Result<Channel, KmsError> {
        self.channel
            .get_or_try_init(|| async {
                // The URI only sets `:authority`, which upstream's client sends as `localhost`;
                // the connector below decides where the bytes go.
                let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout);
                let target = self.endpoint.clone();
                let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                    let target = target.clone();
                    async move { target.connect().map(TokioIo::new) }
                });
                Ok::<_, KmsError>(endpoint.connect_with_connector_lazy(connector))
            })
            .await
            .cloned()
    }

    /// Maps a gRPC failure to an error naming the provider and endpoint.
    fn error(&self, status: &tonic::Status) -> KmsError {
        match status.code() {
            tonic::Code::Unavailable => KmsError::Unavailable {
                name: self.name.clone(),
                message: format!("{}: {}", self.url, describe(status)),
            },
            tonic::Code::DeadlineExceeded => KmsError::Timeout {
                name: self.name.clone(),
                timeout_ms: self.timeout.as_millis(),
            },
            code => KmsError::Rpc {
                name: self.name.clone(),
                code: code_name(code).to_string(),
                message: format!("{}: {}", self.url, describe(status)),
            },
        }
    }

    fn record(&self, method: &'static str, code: &str, started: Instant) {
        if let Some(o) = &self.observer {
            o.plugin_call(&self.name, method, code, started.elapsed());
        }
    }

    /// Runs one call, records its latency and outcome, and maps its error.
    async fn run<T, F, Fut>(&self, method: &'static str, call: F) -> Result<T, KmsError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self.channel().await?;
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, call(channel)).await {
            Ok(Ok(response)) => {
                self.record(method, "OK", started);
                Ok(response.into_inner())
            }
            Ok(Err(status)) => {
                self.record(method, code_name(status.code()), started);
                Err(self.error(&status))
            }
            Err(_) => {
                self.record(method, "DeadlineExceeded", started);
                Err(KmsError::Timeout {
                    name: self.name.clone(),
                    timeout_ms: self.timeout.as_millis(),
                })
            }
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

/// The status message, and the transport error behind it when there is one (a missing
/// socket shows as "No such file or directory").
fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// gRPC code names as grpc-go prints them (upstream's metric label values).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A KMS v2 plugin.
#[derive(Debug)]
struct GrpcKmsV2(Conn);

#[async_trait::async_trait]
impl KmsV2Service for GrpcKmsV2 {
    async fn status(&self) -> Result<KmsStatus, KmsError> {
        let c = &self.0;
        let r = c
            .run(V2_STATUS, |ch| async move {
                v2::key_management_service_client::KeyManagementServiceClient::new(ch)
                    .status(c.request(v2::StatusRequest {}))
                    .await
            })
            .await?;
        Ok(KmsStatus {
            version: r.version,
            healthz: r.healthz,
            key_id: r.key_id,
        })
    }

    async fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<KmsEncryptResponse, KmsError> {
        let c = &self.0;
        let request = v2::EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: uid.to_string(),
        };
        let r = c
            .run(V2_ENCRYPT, |ch| async move {
                v2::key_management_service_client::KeyManagementServiceClient::new(ch)
                    .encrypt(c.request(request))
                    .await
            })
            .await?;
        Ok(KmsEncryptResponse {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            annotations: r.annotations.into_iter().collect(),
        })
    }

    async fn decrypt(
        &self,
        uid: &str,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, KmsError> {
        let c = &self.0;
        let request = v2::DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: uid.to_string(),
            key_id: key_id.to_string(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        };
        let r = c
            .run(V2_DECRYPT, |ch| async move {
                v2::key_management_service_client::KeyManagementServiceClient::new(ch)
                    .decrypt(c.request(request))
                    .await
            })
            .await?;
        Ok(r.plaintext)
    }
}

/// A KMS v1 plugin (deprecated; read-side support): `Version` is checked once before the
/// first other call, as upstream does.
#[derive(Debug)]
struct GrpcKmsV1 {
    conn: Conn,
    version_checked: OnceCell<()>,
}

const V1_API_VERSION: &str = "v1beta1";

impl GrpcKmsV1 {
    async fn check_version(&self) -> Result<(), KmsError> {
        let c = &self.conn;
        self.version_checked
            .get_or_try_init(|| async {
                let r = c
                    .run(V1_VERSION, |ch| async move {
                        v1beta1::key_management_service_client::KeyManagementServiceClient::new(ch)
                            .version(c.request(v1beta1::VersionRequest {
                                version: V1_API_VERSION.into(),
                            }))
                            .await
                    })
                    .await?;
                if r.version != V1_API_VERSION {
                    return Err(KmsError::InvalidResponse {
                        name: c.name.clone(),
                        message: format!(
                            "KMS v1 plugin at {} speaks API version {:?}, want {V1_API_VERSION}",
                            c.url, r.version
                        ),
                    });
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl KmsV1Service for GrpcKmsV1 {
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.check_version().await?;
        let c = &self.conn;
        let request = v1beta1::EncryptRequest {
            version: V1_API_VERSION.into(),
            plain: plaintext.to_vec(),
        };
        let r = c
            .run(V1_ENCRYPT, |ch| async move {
                v1beta1::key_management_service_client::KeyManagementServiceClient::new(ch)
                    .encrypt(c.request(request))
                    .await
            })
            .await?;
        Ok(r.cipher)
    }

    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.check_version().await?;
        let c = &self.conn;
        let request = v1beta1::DecryptRequest {
            version: V1_API_VERSION.into(),
            cipher: ciphertext.to_vec(),
        };
        let r = c
            .run(V1_DECRYPT, |ch| async move {
                v1beta1::key_management_service_client::KeyManagementServiceClient::new(ch)
                    .decrypt(c.request(request))
                    .await
            })
            .await?;
        Ok(r.plain)
    }
}
