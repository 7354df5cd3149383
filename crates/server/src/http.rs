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
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpListener;

use atrest_auth::authn::{is_public_path, AuthOutcome, Authenticator, UserInfo};

use crate::api::{Accept, Api, Reply};
use crate::authz;
use crate::discovery;
use crate::limits::{Activity, Gates, PAGE_LIMIT};
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
    /// What one client can make the server hold (`--max-connections` and the like).
    pub gates: Gates,
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

/// A 429 with the `Retry-After` that client-go and kubectl wait for before retrying.
fn too_many_response(e: &ApiError) -> Response<Body> {
    let mut response = error_response(e);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

/// Whether a request reads a whole collection at once: a list without a page `limit` (or
/// one above [`PAGE_LIMIT`]), or a watch that begins with the current state.
fn reads_whole_collection(verb: Option<crate::options::Verb>, query: &Query) -> bool {
    use crate::options::Verb;
    match verb {
        Some(Verb::List) => query
            .get("limit")
            .and_then(|l| l.parse::<u64>().ok())
            .is_none_or(|l| l == 0 || l > PAGE_LIMIT),
        Some(Verb::Watch) => {
            matches!(query.get("resourceVersion"), None | Some("0"))
                || query.flag("sendInitialEvents")
        }
        _ => false,
    }
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
        let (stop, stopped) = tokio::sync::watch::channel(false);
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
            let Some(slot) = self.gates.connection() else {
                self.api.objects.metrics.inc(
                    "atrest_refused_connections_total",
                    "Connections closed on accept because --max-connections were open.",
                    Vec::new(),
                );
                tracing::debug!(%peer, limit = self.gates.limits.max_connections, "connection refused: --max-connections reached");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(self.clone().connection(
                acceptor.clone(),
                tcp,
                peer,
                slot,
                stopped.clone(),
            ));
        }
        drop(listener);
        self.api.stop_watches();
        let _ = stop.send(true);
        tokio::select! {
            _ = self.gates.all_connections_closed() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
        }
    }

    /// One connection: the TLS handshake (bounded), then HTTP/1.1 or HTTP/2 until the
    /// client closes it, it stays idle past `--idle-connection-timeout-seconds`, or the server
    /// stops; the last two end it gracefully (in-progress requests finish).
    async fn connection(
        self: Arc<Self>,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        _slot: tokio::sync::OwnedSemaphorePermit,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let limits = self.gates.limits;
        let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not finished within --tls-handshake-timeout-seconds");
                return;
            }
        };
        let peer_certs: Option<Arc<Vec<CertificateDer<'static>>>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req| {
                let server = self.clone();
                let peer_certs = peer_certs.clone();
                let in_use = activity.begin();
                async move {
                    let response = server
                        .handle(req, peer_certs.as_deref().map(Vec::as_slice))
                        .await;
                    // The connection is in use until the response body has been sent.
                    Ok::<_, Infallible>(response.map(|body| {
                        body.map_frame(move |frame| {
                            let _ = &in_use;
                            frame
                        })
                        .boxed_unsync()
                    }))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let check_every = (limits.idle_timeout / 4).max(Duration::from_millis(100));
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stopped.wait_for(|stop| *stop), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep(check_every), if !closing => {
                    if activity.idle_for() >= limits.idle_timeout {
                        tracing::debug!(%peer, "closing a connection idle past --idle-connection-timeout-seconds");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
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
                let user_agent = req
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let writer = crate::api::Writer {
                    user_agent: &user_agent,
                };
                // The body first: a client sending it slowly holds its connection and the
                // bytes received, never a slot of the in-flight bound.
                let (body, _body_room) = match self.read_body(req.into_body()).await {
                    Ok(b) => b,
                    Err(e) if e.reason == Reason::TooManyRequests => return too_many_response(&e),
                    Err(e) => return error_response(&e),
                };
                let verb = crate::options::Verb::of(&method, rp.name.is_some(), &query);
                // Watches have their own bound (they stay open); reads of a whole
                // collection take turns; everything else counts against the in-flight bound.
                let mut turn = None;
                let mut watch_slot = None;
                let mut request_slot = None;
                let slots = match verb {
                    Some(crate::options::Verb::Watch) => self.gates.watch().map(|w| {
                        watch_slot = Some(w);
                    }),
                    _ => self.gates.request().map(|r| request_slot = Some(r)),
                };
                if let Err(e) = slots {
                    return too_many_response(&e);
                }
                if reads_whole_collection(verb, &query) {
                    match self.gates.unpaged_list().await {
                        Ok(t) => turn = Some(t),
                        Err(e) => return too_many_response(&e),
                    }
                }
                let reply = self
                    .api
                    .handle(&method, &rp, &query, &content_type, accept, &writer, body)
                    .await;
                drop(turn);
                drop(request_slot);
                match reply {
                    Ok(Reply::Json(code, v)) if accept.protobuf => object_response(code, &v),
                    Ok(Reply::Json(code, v)) => json_response(code, &v),
                    Ok(Reply::Stream {
                        content_type,
                        events,
                    }) => {
                        // The watch's slot is held until its stream ends.
                        let frames = events.map(move |b| {
                            let _ = &watch_slot;
                            Ok::<_, std::io::Error>(Frame::data(b))
                        });
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

    /// The request body, at most 3 MiB, received within `--request-timeout-seconds`, and its room
    /// under `--max-request-body-mib-in-flight` (held until the request is answered).
    async fn read_body(
        &self,
        mut body: Incoming,
    ) -> Result<(Bytes, Vec<tokio::sync::OwnedSemaphorePermit>), ApiError> {
        let limits = self.gates.limits;
        let receive = async {
            let mut buf = bytes::BytesMut::new();
            let mut room = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers carry nothing the API reads
                };
                if buf.len() + data.len() > MAX_BODY_BYTES {
                    return Err(ApiError::too_large(
                        "the request body is too large (limit 3 MiB)",
                    ));
                }
                room.extend(self.gates.body_bytes(data.len())?);
                buf.extend_from_slice(&data);
            }
            Ok((buf.freeze(), room))
        };
        match tokio::time::timeout(limits.request_timeout, receive).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::new(
                408,
                Reason::Timeout,
                format!(
                    "the request body was not received within {} s (--request-timeout-seconds)",
                    limits.request_timeout.as_secs()
                ),
            )),
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
