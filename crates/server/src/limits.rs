//! What one client can make the server hold: open connections, idle time, bytes of request
//! bodies being received, requests in flight, watches and lists of whole collections.
//!
//! Each bound is an `atrest serve` flag. The defaults keep the server under 256 MiB with
//! 2,000 idle TLS connections, 1,000 watches, slow request bodies and back-to-back unpaged
//! lists from one client, while it keeps answering the others (RELIABILITY.md has the
//! figures). Refusals are upstream's: 429 `TooManyRequests` with `Retry-After`, which
//! client-go and kubectl retry by themselves.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::status::{ApiError, Reason};

/// The bounds, as `atrest serve` was given them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingLimits {
    /// Open TCP connections; past it new ones are closed at once (`--max-connections`).
    pub max_connections: usize,
    /// Time a client has to finish the TLS handshake (`--tls-handshake-timeout-seconds`).
    pub handshake_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2: with a
    /// GOAWAY), as kube-apiserver's 90 s (`--idle-connection-timeout-seconds`).
    pub idle_timeout: Duration,
    /// Time to send a request's headers (HTTP/1.1) or its whole body
    /// (`--request-timeout-seconds`).
    pub request_timeout: Duration,
    /// Bytes of request bodies being received or handled at once, across all clients
    /// (`--max-request-body-mib-in-flight`).
    pub max_body_bytes_in_flight: usize,
    /// Requests other than watches in progress at once (`--max-requests-inflight`, upstream's
    /// flag and default).
    pub max_requests_inflight: usize,
    /// Open watches (`--max-watches`).
    pub max_watches: usize,
    /// Lists of a whole collection (no `limit`, or one above [`PAGE_LIMIT`]), and watches
    /// that begin with the whole collection, read at once; more wait their turn for up to
    /// `request_timeout` (`--max-unpaged-lists-inflight`).
    pub max_unpaged_lists: usize,
}

/// The largest `limit` that counts as a page (kubectl's chunk size is 500).
pub const PAGE_LIMIT: u64 = 500;

impl Default for ServingLimits {
    fn default() -> Self {
        ServingLimits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(60),
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_requests_inflight: 400,
            max_watches: 4096,
            max_unpaged_lists: 2,
        }
    }
}

/// The semaphores behind [`ServingLimits`].
#[derive(Debug)]
pub struct Gates {
    pub limits: ServingLimits,
    connections: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    unpaged_lists: Arc<Semaphore>,
}

/// What a refused request is told; names the flag that sets the bound.
fn too_many(what: &str, limit: usize, flag: &str) -> ApiError {
    ApiError::new(
        429,
        Reason::TooManyRequests,
        format!("too many requests: {what} (limit {limit}, {flag}); please try again later"),
    )
}

impl Gates {
    pub fn new(limits: ServingLimits) -> Self {
        // Zero would refuse everything: treat it as one.
        let sem = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        Gates {
            connections: sem(limits.max_connections),
            body_bytes: sem(limits.max_body_bytes_in_flight),
            requests: sem(limits.max_requests_inflight),
            watches: sem(limits.max_watches),
            unpaged_lists: sem(limits.max_unpaged_lists),
            limits,
        }
    }

    /// A slot for a new connection, or `None` when `--max-connections` are open.
    pub fn connection(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Waits until every connection has closed (at shutdown).
    pub async fn all_connections_closed(&self) {
        let all = u32::try_from(self.limits.max_connections.max(1)).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring only waits.
        let _ = self.connections.acquire_many(all).await;
    }

    /// Room for `bytes` more of a request body.
    pub fn body_bytes(&self, bytes: usize) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if bytes == 0 {
            return Ok(None);
        }
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        match self.body_bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => Ok(Some(p)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(too_many(
                "request bodies in flight",
                self.limits.max_body_bytes_in_flight,
                "--max-request-body-mib-in-flight",
            )),
        }
    }

    /// A slot for a request that is not a watch.
    pub fn request(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.requests.clone().try_acquire_owned().map_err(|_| {
            too_many(
                "requests in flight",
                self.limits.max_requests_inflight,
                "--max-requests-inflight",
            )
        })
    }

    /// A slot for a watch, held while it is open.
    pub fn watch(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| too_many("open watches", self.limits.max_watches, "--max-watches"))
    }

    /// A turn to read a whole collection, waiting up to `--request-timeout-seconds` for one.
    pub async fn unpaged_list(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let wait = self.unpaged_lists.clone().acquire_owned();
        match tokio::time::timeout(self.limits.request_timeout, wait).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(too_many(
                "lists of whole collections",
                self.limits.max_unpaged_lists,
                "--max-unpaged-lists-inflight",
            )),
        }
    }
}

/// Whether a connection is in use: requests in progress (a response counts until its body
/// has been sent) and when it last became idle.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    active: AtomicUsize,
    idle_since_ms: AtomicU64,
}

/// Held for as long as one request (and its response body) is in progress.
#[derive(Debug)]
pub struct InUse(Arc<Activity>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request as started.
    pub fn begin(self: &Arc<Self>) -> InUse {
        self.active.fetch_add(1, Ordering::AcqRel);
        InUse(self.clone())
    }

    /// How long the connection has had nothing in progress (zero while it has).
    pub fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = self.idle_since_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn small() -> Gates {
        Gates::new(ServingLimits {
            max_connections: 2,
            max_body_bytes_in_flight: 10,
            max_requests_inflight: 1,
            max_watches: 1,
            max_unpaged_lists: 1,
            request_timeout: Duration::from_millis(50),
            ..ServingLimits::default()
        })
    }

    #[test]
    fn each_gate_refuses_past_its_bound_and_frees_on_drop() {
        let gates = small();
        let a = gates.connection().unwrap();
        let _b = gates.connection().unwrap();
        assert!(gates.connection().is_none());
        drop(a);
        assert!(gates.connection().is_some());

        let held = gates.body_bytes(8).unwrap();
        let e = gates.body_bytes(3).unwrap_err();
        assert_eq!((e.code, e.reason), (429, Reason::TooManyRequests));
        assert!(
            e.message.contains("--max-request-body-mib-in-flight"),
            "{}",
            e.message
        );
        drop(held);
        assert!(gates.body_bytes(10).unwrap().is_some());
        assert!(gates.body_bytes(0).unwrap().is_none());

        let r = gates.request().unwrap();
        let e = gates.request().unwrap_err();
        assert!(
            e.message.contains("limit 1, --max-requests-inflight"),
            "{}",
            e.message
        );
        drop(r);
        let _again = gates.request().unwrap();

        let w = gates.watch().unwrap();
        assert!(gates.watch().unwrap_err().message.contains("--max-watches"));
        drop(w);
        let _again = gates.watch().unwrap();
    }

    #[tokio::test]
    async fn unpaged_lists_wait_their_turn_then_give_up() {
        let gates = Arc::new(small());
        let first = gates.unpaged_list().await.unwrap();
        let e = gates.unpaged_list().await.unwrap_err();
        assert!(
            e.message.contains("--max-unpaged-lists-inflight"),
            "{}",
            e.message
        );
        let waiting = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.unpaged_list().await.is_ok() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "the waiting list got the freed turn"
        );
    }

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_progress() {
        let activity = Activity::new();
        let request = activity.begin();
        let watch = activity.begin();
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(request);
        assert_eq!(
            activity.idle_for(),
            Duration::ZERO,
            "the watch is still open"
        );
        drop(watch);
        std::thread::sleep(Duration::from_millis(5));
        assert!(activity.idle_for() > Duration::ZERO);
    }
}
