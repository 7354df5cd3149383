//! HTTPS serving: TLS accept loop (client certificates captured for authentication),
//! routing of the non-resource paths (`/version`, health, metrics, discovery, OpenAPI),
//! authentication, request metrics and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpListener;

use atrest_auth::authn::{is_public_path, AuthOutcome, Authenticator, UserInfo};

use crate::api::{Accept, Api, Reply};
use crate::authz;
use crate::discovery;
use crate::request::{parse_path, Query, Target};
use crate::status::{ApiError, Reason};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The largest request body accepted (upstream: 3 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A named readiness check (`/readyz/<name>`).
pub type Check =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Everything the HTTP layer needs.
pub struct HttpServer {
    pub api: Arc<Api>,
    pub authenticator: Authenticator,
    pub checks: Vec<(String, Check)>,
    /// Checks `/readyz` leaves out (`--readyz-exclude-kms`); `/healthz` still runs them.
    pub readyz_excluded: Vec<String>,
    /// `host:port` clients should use (discovery's serverAddressByClientCIDRs).
    pub advertise: String,
    /// The status page under `/ui/` (its own login: browsers have no bearer token).
    pub ui: Option<Arc<atrest_web::StatusPage>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("advertise", &self.advertise)
            .finish()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// The store's own counters (compaction of the embedded store: a failure count that keeps
/// growing means old values, possibly plaintext, are not being removed).
fn store_metrics(m: &atrest_store::StoreMetrics) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    format!(
        "# HELP atrest_store_compactions_total Successful compactions of the store.\n# TYPE atrest_store_compactions_total counter\natrest_store_compactions_total {}\n\
         # HELP atrest_store_compaction_failures_total Failed compactions (or post-compaction scrubs) of the store.\n# TYPE atrest_store_compaction_failures_total counter\natrest_store_compaction_failures_total {}\n\
         # HELP atrest_store_compacted_revision The latest revision compacted by this process.\n# TYPE atrest_store_compacted_revision gauge\natrest_store_compacted_revision {}\n",
        m.compactions.load(Relaxed),
        m.compaction_failures.load(Relaxed),
        m.compacted_revision.load(Relaxed)
    )
}

/// An object or list in protobuf when the client asked for it and its kind has a protobuf
/// codec (Status, Table and custom resources stay JSON);
/// JSON otherwise (clients list JSON as their fallback).
fn object_response(code: u16, value: &Value) -> Response<Body> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let encoded = if atrest_api::codec::has_protobuf_codec(api_version, kind) {
        atrest_api::codec::encode_protobuf(value)
    } else if atrest_api::codec::list_item_kind(api_version, kind).is_some() {
        atrest_api::codec::encode_protobuf_list(value)
    } else {
        return json_response(code, value);
    };
    match encoded {
        Ok(bytes) => Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")
            .body(full(bytes))
            .unwrap_or_else(|_| Response::new(full(""))),
        Err(_) => json_response(code, value),
    }
}

fn text_response(code: u16, text: String, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(full(text))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

impl HttpServer {
    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish (up to `grace`).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let acceptor = acceptor.clone();
            let server = self.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let peer_certs: Option<Arc<Vec<CertificateDer<'static>>>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    let peer_certs = peer_certs.clone();
                    async move {
                        Ok::<_, Infallible>(
                            server
                                .handle(req, peer_certs.as_deref().map(Vec::as_slice))
                                .await,
                        )
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        self.api.stop_watches();
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if let Some(ui) = self
            .ui
            .as_ref()
            .filter(|_| path == "/ui" || path.starts_with("/ui/"))
        {
            let page = ui.handle(&method, req.uri(), req.headers()).await;
            return page.map(|b| b.map_err(|never: Infallible| match never {}).boxed_unsync());
        }
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let outcome = self
            .authenticator
            .authenticate(authorization.as_deref(), peer_certs);
        let response = match outcome {
            AuthOutcome::Rejected(reason) => {
                tracing::debug!(%path, %reason, "authentication rejected");
                error_response(&ApiError::unauthorized())
            }
            AuthOutcome::Anonymous if !is_public_path(&path) => {
                error_response(&ApiError::unauthorized())
            }
            AuthOutcome::Authenticated(user) => self.route(req, Some(user)).await,
            AuthOutcome::Anonymous => self.route(req, None).await,
        };
        let verb = method.as_str().to_string();
        self.api.objects.metrics.inc(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, path group and HTTP response code.",
            vec![("verb", verb.clone()), ("code", response.status().as_u16().to_string())],
        );
        self.api.objects.metrics.observe(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb.",
            crate::metrics::request_buckets,
            vec![("verb", verb)],
            started.elapsed(),
        );
        tracing::debug!(%method, %path, code = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        response
    }

    /// `user`: `None` only for public paths (health, version).
    async fn route(&self, req: Request<Incoming>, user: Option<UserInfo>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let superuser = user.as_ref().is_some_and(authz::is_superuser);
        match path.as_str() {
            "/version" => return json_response(200, &discovery::version()),
            "/metrics" if !superuser => {
                let user = user.unwrap_or_else(|| UserInfo {
                    name: "system:anonymous".into(),
                    uid: String::new(),
                    groups: Vec::new(),
                });
                return error_response(&authz::forbidden_path(&user, "get", &path));
            }
            "/metrics" => {
                let mut text = self.api.objects.metrics.render();
                text.push_str(&store_metrics(&self.api.objects.storage.store().metrics()));
                return text_response(200, text, "text/plain; version=0.0.4");
            }
            "/openapi/v3" => {
                return json_response(200, &discovery::openapi_index(&self.api.registry()))
            }
            "/openapi/v2" => {
                return Response::builder()
                    .status(200)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(full(discovery::openapi_v2_protobuf()))
                    .unwrap_or_else(|_| Response::new(full("")))
            }
            _ => {}
        }
        for probe in ["/healthz", "/livez", "/readyz"] {
            if path == probe || path.starts_with(&format!("{probe}/")) {
                return self.health(probe, &path, req.uri().query()).await;
            }
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            let registry = self.api.registry();
            let doc = match gv.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => discovery::openapi_document(&registry, "", v),
                ["apis", g, v] => discovery::openapi_document(&registry, g, v),
                _ => None,
            };
            return match doc {
                Some(d) => json_response(200, &d),
                None => error_response(&ApiError::new(
                    404,
                    Reason::NotFound,
                    "the server could not find the requested resource",
                )),
            };
        }
        let target = match parse_path(&path) {
            Ok(t) => t,
            Err(e) => return error_response(&e),
        };
        match target {
            Target::Other => error_response(&ApiError::new(
                404,
                Reason::NotFound,
                "the server could not find the requested resource",
            )),
            Target::Discovery {
                group,
                version,
                legacy,
            } => {
                if method != Method::GET {
                    return error_response(&ApiError::method_not_allowed("discovery is read-only"));
                }
                let registry = self.api.registry();
                let accept = Accept::parse(
                    req.headers()
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                );
                if let (Some(v), None, None) = (accept.discovery, &group, &version) {
                    let body =
                        serde_json::to_vec(&discovery::aggregated(&registry, legacy, v.as_str()))
                            .unwrap_or_default();
                    return Response::builder()
                        .status(200)
                        .header(
                            header::CONTENT_TYPE,
                            discovery::aggregated_content_type(v.as_str()),
                        )
                        .header(header::VARY, "Accept")
                        .body(full(body))
                        .unwrap_or_else(|_| Response::new(full("")));
                }
                let doc = match (legacy, group.as_deref(), version.as_deref()) {
                    (true, None, None) => Some(discovery::core_versions(&self.advertise)),
                    (true, None, Some(v)) => discovery::resource_list(&registry, "", v),
                    (false, None, None) => Some(discovery::group_list(&registry)),
                    (false, Some(g), None) => discovery::group(&registry, g),
                    (false, Some(g), Some(v)) => discovery::resource_list(&registry, g, v),
                    _ => None,
                };
                match doc {
                    Some(d) => json_response(200, &d),
                    None => error_response(&ApiError::new(
                        404,
                        Reason::NotFound,
                        "the server could not find the requested resource",
                    )),
                }
            }
            Target::Resource(rp) => {
                let query = match Query::parse(req.uri().query()) {
                    Ok(q) => q,
                    Err(e) => return error_response(&e),
                };
                if !superuser {
                    let Some(user) = &user else {
                        return error_response(&ApiError::unauthorized());
                    };
                    return error_response(&authz::forbidden(
                        user,
                        authz::verb(&method, &rp, &query),
                        &rp,
                    ));
                }
                let content_type = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let accept = Accept::parse(
                    req.headers()
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                );
                let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return error_response(&ApiError::too_large(
                            "the request body is too large (limit 3 MiB)",
                        ))
                    }
                };
                match self
                    .api
                    .handle(&method, &rp, &query, &content_type, accept, body)
                    .await
                {
                    Ok(Reply::Json(code, v)) if accept.protobuf => object_response(code, &v),
                    Ok(Reply::Json(code, v)) => json_response(code, &v),
                    Ok(Reply::Stream {
                        content_type,
                        events,
                    }) => {
                        let frames = events.map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
                        Response::builder()
                            .status(200)
                            .header(header::CONTENT_TYPE, content_type)
                            .header(header::TRANSFER_ENCODING, "chunked")
                            .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
                            .unwrap_or_else(|_| Response::new(full("")))
                    }
                    Err(e) => error_response(&e),
                }
            }
        }
    }

    /// `/healthz`, `/livez`, `/readyz` and their per-check sub-paths, with `?verbose`.
    async fn health(&self, probe: &str, path: &str, query: Option<&str>) -> Response<Body> {
        let only = path
            .strip_prefix(probe)
            .and_then(|p| p.strip_prefix('/'))
            .filter(|p| !p.is_empty());
        let verbose = query.is_some_and(|q| {
            q.split('&')
                .any(|p| p == "verbose" || p.starts_with("verbose="))
        });
        // `?exclude=NAME` (repeatable), as kube-apiserver's health endpoints take it.
        let excluded: Vec<&str> = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|p| p.strip_prefix("exclude="))
            .collect();
        // Liveness does not depend on the store or KMS: a restart would not fix those.
        let checks: Vec<&(String, Check)> = if probe == "/livez" {
            Vec::new()
        } else {
            self.checks
                .iter()
                .filter(|(name, _)| {
                    let left_out = excluded.contains(&name.as_str())
                        || (probe == "/readyz" && self.readyz_excluded.contains(name));
                    !left_out
                })
                .collect()
        };
        let mut lines = vec!["[+]ping ok".to_string()];
        let mut failed = false;
        if only == Some("ping") {
            return text_response(200, "ok".into(), "text/plain; charset=utf-8");
        }
        let mut found = only.is_none();
        for (name, check) in checks {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            found = true;
            match check().await {
                Ok(()) => lines.push(format!("[+]{name} ok")),
                Err(reason) => {
                    failed = true;
                    tracing::warn!(check = name.as_str(), %reason, "health check failed");
                    lines.push(format!("[-]{name} failed: reason withheld"));
                }
            }
        }
        if !found {
            return text_response(
                404,
                format!(
                    "404 page not found: no check named {:?}",
                    only.unwrap_or("")
                ),
                "text/plain; charset=utf-8",
            );
        }
        let name = probe.trim_start_matches('/');
        if failed {
            lines.push(format!("{name} check failed"));
            return text_response(500, lines.join("\n") + "\n", "text/plain; charset=utf-8");
        }
        if verbose {
            lines.push(format!("{name} check passed"));
            return text_response(200, lines.join("\n") + "\n", "text/plain; charset=utf-8");
        }
        text_response(200, "ok".into(), "text/plain; charset=utf-8")
    }
}

/// Binds the listener, failing fast with a clear message when the port is in use.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}
