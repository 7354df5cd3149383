//! The status page: encryption coverage, keys, servers, rotation, history and KMS at a
//! glance, in a browser.
//!
//! - [`StatusPage`] answers every request under its base path (`/` for `atrest status
//!   --web`, `/ui/` inside `atrest serve`). Nothing is served without a session: a
//!   one-time login link (`<base>login?token=T`, minted by the host and printed for the
//!   operator) is exchanged for an HttpOnly, SameSite=Strict cookie and a redirect to the
//!   page; everything else without the cookie is 401.
//! - The store is scanned at most once per [`SCAN_INTERVAL`], however many viewers poll:
//!   the first request after the interval scans while the others wait for its result.
//! - Assets are compiled into the binary; the page loads nothing from elsewhere (its
//!   Content-Security-Policy forbids it) and writes text with `textContent` only.
//! - What it shows is names, counts and key names: the snapshot holds no key material and
//!   no object data, by construction (see [`snapshot`]).
#![forbid(unsafe_code)]

pub mod login;
pub mod snapshot;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use tokio::net::TcpListener;

pub use login::{LoginTokens, MemoryTokens, Sessions, StoreTokens, Token};
pub use snapshot::{ScanSource, Snapshot};

/// The shortest time between two scans of the store.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Only what the page itself needs: its own script, style and JSON.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Cookie name of the session.
pub const SESSION_COOKIE: &str = "atrest_ui_session";

struct Cached {
    at: Instant,
    body: Bytes,
    /// The last successful snapshot (shown with the error when a later scan fails).
    good: Option<Bytes>,
}

/// The page, its JSON and its login, under one base path.
pub struct StatusPage {
    base: String,
    source: ScanSource,
    tokens: Arc<dyn LoginTokens>,
    sessions: Sessions,
    /// `Secure` on the cookie (the page is served over HTTPS).
    secure: bool,
    cache: tokio::sync::Mutex<Option<Cached>>,
    scans: AtomicU64,
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPage")
            .field("base", &self.base)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// A response of the page.
pub type PageResponse = Response<Full<Bytes>>;

impl StatusPage {
    /// `base` ends with `/` (`/`, `/ui/`).
    pub fn new(base: &str, source: ScanSource, tokens: Arc<dyn LoginTokens>, secure: bool) -> Self {
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        StatusPage {
            base,
            source,
            tokens,
            sessions: Sessions::default(),
            secure,
            cache: tokio::sync::Mutex::new(None),
            scans: AtomicU64::new(0),
        }
    }

    /// The base path (ends with `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The login path for a token: `<base>login?token=<token>`.
    pub fn login_path(&self, token: &Token) -> String {
        format!("{}login?token={}", self.base, token.expose())
    }

    /// Answers one request whose path starts with the base (or is the base without its
    /// trailing slash).
    pub async fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> PageResponse {
        let path = uri.path();
        let Some(rest) = path
            .strip_prefix(self.base.as_str())
            .or_else(|| (path == self.base.trim_end_matches('/')).then_some(""))
        else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        if method != Method::GET && method != Method::HEAD {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the status page is read-only\n",
            );
        }
        if rest == "login" {
            return self.login(uri).await;
        }
        if !self.sessions.valid(session_cookie(headers).as_deref()) {
            return plain(
                StatusCode::UNAUTHORIZED,
                "not logged in: open the login link the server printed (atrest serve \
                 prints one on start, `atrest ui-url --data-dir DIR` mints another; \
                 `atrest status --web` prints one)\n",
            );
        }
        match rest {
            "" => {
                if path != self.base {
                    return redirect(&self.base, None);
                }
                asset(INDEX_HTML, "text/html; charset=utf-8")
            }
            "app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
            "style.css" => asset(STYLE_CSS, "text/css; charset=utf-8"),
            "api/status" => self.status_json().await,
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn login(&self, uri: &Uri) -> PageResponse {
        let token = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .map(str::to_string)
        });
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return plain(
                StatusCode::UNAUTHORIZED,
                "the login link has no token; use the whole link the server printed\n",
            );
        };
        match self.tokens.redeem(&token).await {
            Ok(true) => {
                let session = self.sessions.open();
                let cookie = format!(
                    "{SESSION_COOKIE}={}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}{}",
                    session.expose(),
                    self.base,
                    login::SESSION_TTL.as_secs(),
                    if self.secure { "; Secure" } else { "" }
                );
                redirect(&self.base, Some(cookie))
            }
            Ok(false) => plain(
                StatusCode::UNAUTHORIZED,
                "this login link was already used or has expired; mint another \
                 (`atrest ui-url --data-dir DIR`, or restart `atrest status --web`)\n",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "status page: checking a login token");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the login could not be checked (the store did not answer); try again\n",
                )
            }
        }
    }

    /// The latest snapshot as JSON: from the cache when younger than [`SCAN_INTERVAL`],
    /// else scanned now (one scan at a time: concurrent viewers wait for it).
    async fn status_json(&self) -> PageResponse {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.at.elapsed() < SCAN_INTERVAL {
                return json(c.body.clone());
            }
        }
        let number = self.scans.fetch_add(1, Ordering::Relaxed) + 1;
        let good = cache.as_ref().and_then(|c| c.good.clone());
        let (body, good) = match self.source.scan(number).await {
            Ok(snapshot) => match serde_json::to_vec(&snapshot) {
                Ok(bytes) => {
                    let bytes = Bytes::from(bytes);
                    (bytes.clone(), Some(bytes))
                }
                Err(e) => (
                    error_body(&format!("encoding the snapshot: {e}"), &good),
                    good,
                ),
            },
            Err(e) => {
                tracing::warn!(error = %e, "status page: scan failed");
                (error_body(&e, &good), good)
            }
        };
        *cache = Some(Cached {
            at: Instant::now(),
            body: body.clone(),
            good,
        });
        json(body)
    }

    /// How many scans have run.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }
}

/// `{"error": ..., "last": <last good snapshot or null>}`.
fn error_body(error: &str, good: &Option<Bytes>) -> Bytes {
    let last = good
        .as_ref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .unwrap_or(serde_json::Value::Null);
    Bytes::from(serde_json::json!({ "error": error, "last": last }).to_string())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_string())
        })
}

fn with_headers(mut response: PageResponse) -> PageResponse {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The login link carries a token: never pass the address on.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> PageResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_headers(response)
}

fn plain(status: StatusCode, text: &'static str) -> PageResponse {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn asset(text: &'static str, content_type: &'static str) -> PageResponse {
    build(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    )
}

fn json(body: Bytes) -> PageResponse {
    build(StatusCode::OK, "application/json", body)
}

fn redirect(to: &str, cookie: Option<String>) -> PageResponse {
    let mut response = build(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    response
}

/// Serves `page` over plain HTTP/1.1 on `listener` until `shutdown` resolves (`atrest
/// status --web`: loopback by default, so the cookie and token stay on the machine).
pub async fn serve_http(
    page: Arc<StatusPage>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "status page: accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let page = page.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let page = page.clone();
                async move {
                    let response = page.handle(req.method(), req.uri(), req.headers()).await;
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "status page: connection ended");
            }
        });
    }
}
