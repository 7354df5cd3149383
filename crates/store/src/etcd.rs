//! The etcd backend (etcd v3 API over gRPC). See `DESIGN.md` for the retry rules.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};

use crate::types::prefix_end;
use crate::{
    display_key, CasUpdate, KeyValue, LeaseId, ListRequest, ListResponse, Result, SpaceReport,
    Store, StoreError, StoreMetrics, TlsFiles, WatchEvent, WatchStream,
};

/// Transient failures are retried for this long (the attempt in flight included) before the
/// caller sees `Unavailable`. Long enough to ride out an etcd leader election (a few election
/// timeouts of etcd's default 1 s), short enough that a client of the API server gets its
/// 5xx within 10 s when etcd is gone or hung.
const RETRY_BUDGET: Duration = Duration::from_secs(7);
/// The budget while etcd is known to be unavailable (an operation ran out its budget and
/// nothing has succeeded since): one short try, so a request that makes several store calls
/// during an outage fails within about one budget, not one per call.
const DEGRADED_BUDGET: Duration = Duration::from_millis(1500);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Per-request deadline: a request to a dead member must not hang forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `open` waits for a first answer: a wrong address or TLS setup fails fast.
const OPEN_PROBE_BUDGET: Duration = Duration::from_secs(5);

/// Lists are read in pages of at most this many keys, at one revision, so no response is
/// bounded by gRPC's message limit however many keys a caller asks for. Not smaller: etcd
/// counts the rest of the range on every request, so many small pages cost it more CPU
/// than the data itself.
const LIST_PAGE_KEYS: usize = 5000;
/// The largest list response accepted. A page that is still larger (500 values of
/// several hundred KiB each) is re-read in halves.
const LIST_DECODE_LIMIT: usize = 64 * 1024 * 1024;
/// Inner transactions per batched request. etcd checks `--max-txn-ops` (default 128)
/// against the outer operations and the budget left for nested ones: `n` inner
/// transactions of one compare each pass when `n + 1 <= 128`.
const MAX_TXN_OPS: usize = 127;
/// Bytes of keys and values per batched transaction, below etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for the request's framing.
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// How an etcd failure should be handled.
enum Failure {
    /// Worth retrying (connection loss, no leader, leader changed, timeouts).
    Transient(String),
    /// The answer: retrying will not change it.
    Final(StoreError),
}

fn classify(err: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match err {
        E::TransportError(e) => Failure::Transient(format!("transport error: {e}")),
        E::IoError(e) => Failure::Transient(format!("i/o error: {e}")),
        E::GRpcStatus(status) => {
            let message = status.message().to_string();
            let code = status.code();
            if message.contains("required revision has been compacted") {
                // Filled in with the real compacted revision by the caller.
                return Failure::Final(StoreError::Compacted {
                    requested: 0,
                    compact_revision: 0,
                });
            }
            if message.contains("required revision is a future revision") {
                return Failure::Final(StoreError::FutureRevision {
                    requested: 0,
                    current: 0,
                });
            }
            if message.contains("requested lease not found") {
                return Failure::Final(StoreError::LeaseNotFound { lease: 0 });
            }
            // gRPC codes CANCELLED 1, UNKNOWN 2, DEADLINE_EXCEEDED 4, ABORTED 10, UNAVAILABLE 14.
            let transient = matches!(code as i32, 1 | 2 | 4 | 10 | 14)
                || message.contains("leader")
                || message.contains("timed out")
                || message.contains("too many requests");
            if transient {
                Failure::Transient(format!("etcd: {message} ({code:?})"))
            } else {
                Failure::Final(StoreError::Backend(format!("etcd: {message} ({code:?})")))
            }
        }
        E::LeaseKeepAliveError(message) if message.contains("not found") => {
            Failure::Final(StoreError::LeaseNotFound { lease: 0 })
        }
        E::WatchError(message) | E::LeaseKeepAliveError(message) => {
            Failure::Transient(format!("etcd stream: {message}"))
        }
        other => Failure::Final(StoreError::Backend(format!("etcd: {other}"))),
    }
}

fn to_key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
) -> std::result::Result<i64, etcd_client::Error> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| etcd_client::Error::Internal("etcd response without a header".to_string()))
}

/// The first key of a `get` inside a transaction's failure branch.
fn txn_get_first(response: &etcd_client::TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(to_key_value),
        _ => None,
    })
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty key".to_string()));
    }
    Ok(())
}

fn read_tls_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| StoreError::InvalidArgument(format!("reading {flag} {}: {e}", path.display())))
}

fn tls_options(tls: &TlsFiles) -> Result<TlsOptions> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        let pem = read_tls_file("--etcd-cafile", ca)?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(StoreError::InvalidArgument(format!(
                "--etcd-cafile {} holds no PEM certificate",
                ca.display()
            )));
        }
        options = options.ca_certificate(Certificate::from_pem(pem));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_tls_file("--etcd-certfile", cert)?;
            let key_pem = read_tls_file("--etcd-keyfile", key)?;
            if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(StoreError::InvalidArgument(format!(
                    "--etcd-certfile {} holds no PEM certificate",
                    cert.display()
                )));
            }
            if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                return Err(StoreError::InvalidArgument(format!(
                    "--etcd-keyfile {} holds no PEM private key",
                    key.display()
                )));
            }
            options = options.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(StoreError::InvalidArgument(
                "--etcd-certfile given without --etcd-keyfile".to_string(),
            ))
        }
        (None, Some(_)) => {
            return Err(StoreError::InvalidArgument(
                "--etcd-keyfile given without --etcd-certfile".to_string(),
            ))
        }
    }
    Ok(options)
}

/// The etcd-backed store.
pub(crate) struct EtcdStore {
    client: Client,
    /// How `client` was connected (TLS included), to reach each member on its own.
    options: ConnectOptions,
    endpoints: Vec<String>,
    prefix: String,
    metrics: Arc<StoreMetrics>,
    /// Set when an operation ran out its retry budget, cleared by the next success: while
    /// set, operations get `DEGRADED_BUDGET`.
    degraded: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// One transaction of nested compare-and-swap transactions: each inner transaction
    /// compares its key's mod revision and puts, or reads the key when the compare fails, so
    /// a lost compare never aborts the others. A retried request re-evaluates every compare;
    /// an inner put that an earlier, lost attempt applied shows up as exactly our bytes.
    async fn update_chunk(&self, chunk: &[CasUpdate]) -> Result<Vec<Result<i64>>> {
        for u in chunk {
            check_key(&u.key)?;
        }
        self.retry("batched update", |mut client, retried| async move {
            let inner: Vec<TxnOp> = chunk
                .iter()
                .map(|u| {
                    let put = PutOptions::new().with_lease(u.lease);
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::mod_revision(
                                u.key.as_slice(),
                                CompareOp::Equal,
                                u.expected_mod_revision,
                            )])
                            .and_then([TxnOp::put(u.key.as_slice(), u.value.as_slice(), Some(put))])
                            .or_else([TxnOp::get(u.key.as_slice(), None)]),
                    )
                })
                .collect();
            let response = client.txn(Txn::new().and_then(inner)).await?;
            let revision = header_revision(response.header())?;
            let answers = response.op_responses();
            if answers.len() != chunk.len() {
                return Ok(Err(StoreError::Backend(format!(
                    "etcd answered {} of {} batched updates",
                    answers.len(),
                    chunk.len()
                ))));
            }
            let results = chunk
                .iter()
                .zip(answers)
                .map(|(u, answer)| match answer {
                    TxnOpResponse::Txn(inner) if inner.succeeded() => Ok(revision),
                    TxnOpResponse::Txn(inner) => match txn_get_first(&inner) {
                        None => Err(StoreError::NotFound { key: u.key.clone() }),
                        Some(actual)
                            if retried
                                && actual.value == u.value
                                && actual.lease == u.lease
                                && actual.mod_revision > u.expected_mod_revision =>
                        {
                            Ok(actual.mod_revision)
                        }
                        Some(actual) => Err(StoreError::conflict(
                            &u.key,
                            u.expected_mod_revision,
                            Some(actual),
                        )),
                    },
                    _ => Err(StoreError::Backend(format!(
                        "etcd answered a batched update of {} with something else",
                        display_key(&u.key)
                    ))),
                })
                .collect();
            Ok(Ok(results))
        })
        .await
    }

    /// One etcd range request (at most `request.limit` keys, which must be small).
    async fn list_page(&self, request: &ListRequest) -> Result<ListResponse> {
        let start = match &request.start_after {
            // The smallest key after `after`.
            Some(after) if after.as_slice() >= request.prefix.as_slice() => {
                let mut next = after.clone();
                next.push(0);
                next
            }
            _ => request.prefix.clone(),
        };
        // etcd refuses an empty key; "\0" is the smallest non-empty key.
        let start = if start.is_empty() { vec![0] } else { start };
        let end = prefix_end(&request.prefix).unwrap_or_else(|| vec![0]);
        let revision = request.revision.filter(|r| *r > 0);
        let result = self
            .retry("list", |client, _| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let mut options = GetOptions::new().with_range(end);
                    if request.limit > 0 {
                        options =
                            options.with_limit(i64::try_from(request.limit).unwrap_or(i64::MAX));
                    }
                    if let Some(revision) = revision {
                        options = options.with_revision(revision);
                    }
                    if request.keys_only {
                        options = options.with_keys_only();
                    }
                    let response = client
                        .kv_client()
                        .max_decoding_message_size(LIST_DECODE_LIMIT)
                        .get(start, Some(options))
                        .await?;
                    let items: Vec<KeyValue> = response.kvs().iter().map(to_key_value).collect();
                    let read_at = match revision {
                        Some(revision) => revision,
                        None => header_revision(response.header())?,
                    };
                    let remaining_count = response.count() - items.len() as i64;
                    Ok(Ok(ListResponse {
                        more: response.more(),
                        items,
                        revision: read_at,
                        remaining_count: request.count_remaining.then_some(remaining_count.max(0)),
                    }))
                }
            })
            .await;
        match result {
            Ok(response) => Ok(response),
            Err(err) => Err(self.fill_revision_error(err, revision.unwrap_or(0)).await),
        }
    }

    pub(crate) async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&TlsFiles>,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "--etcd-servers: no endpoints given".to_string(),
            ));
        }
        for endpoint in endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(StoreError::InvalidArgument(format!(
                    "--etcd-servers: {endpoint:?} is not an http:// or https:// URL"
                )));
            }
        }
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // Fail fast when a member has no leader so the request is retried elsewhere.
            .with_require_leader(true);
        if let Some(tls) = tls {
            let tls = tls_options(tls)?;
            if endpoints.iter().any(|e| e.starts_with("http://")) {
                return Err(StoreError::InvalidArgument(
                    "--etcd-cafile/--etcd-certfile/--etcd-keyfile need https:// endpoints in \
                     --etcd-servers"
                        .to_string(),
                ));
            }
            options = options.with_tls(tls);
        } else if any_https {
            options = options.with_tls(TlsOptions::new());
        }
        let client = Client::connect(endpoints, Some(options.clone()))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to etcd at {}: {e}",
                    endpoints.join(",")
                ))
            })?;
        let store = EtcdStore {
            client,
            options,
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            metrics: Arc::new(StoreMetrics::default()),
            degraded: Arc::default(),
        };
        // Connecting is lazy: one request proves the endpoints (and TLS) actually work.
        store
            .retry_within(
                OPEN_PROBE_BUDGET,
                "first request",
                |mut client, _| async move {
                    client
                        .get(b"\0".to_vec(), Some(GetOptions::new().with_count_only()))
                        .await?;
                    Ok(Ok(()))
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(msg) => StoreError::Unavailable(format!(
                    "etcd at {} did not answer (is it running, and do --etcd-cafile, \
                     --etcd-certfile and --etcd-keyfile match its TLS setup?): {msg}",
                    endpoints.join(",")
                )),
                other => other,
            })?;
        Ok(store)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent.
    /// `attempt` receives whether an earlier attempt failed ambiguously (its request may have
    /// been applied), so guarded writes can recognise their own earlier success.
    async fn retry<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = std::result::Result<Result<T>, etcd_client::Error>>,
    {
        self.retry_within(RETRY_BUDGET, what, attempt).await
    }

    async fn retry_within<T, F, Fut>(
        &self,
        budget: Duration,
        what: &str,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = std::result::Result<Result<T>, etcd_client::Error>>,
    {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let budget = if self.degraded.load(Ordering::Relaxed) {
            budget.min(DEGRADED_BUDGET)
        } else {
            budget
        };
        let mut backoff = FIRST_BACKOFF;
        let mut retried = false;
        loop {
            // The attempt in flight counts against the budget too: a hung member must not
            // hold the caller for a whole per-request timeout past it.
            let remaining = budget.saturating_sub(started.elapsed());
            let outcome = match tokio::time::timeout(
                remaining,
                attempt(self.client.clone(), retried),
            )
            .await
            {
                Ok(outcome) => outcome.map_err(classify),
                Err(_) => Err(Failure::Transient(format!(
                    "etcd did not answer within {remaining:?}"
                ))),
            };
            match outcome {
                Ok(answer) => {
                    self.degraded.store(false, Ordering::Relaxed);
                    return answer;
                }
                Err(Failure::Final(err)) => return Err(err),
                Err(Failure::Transient(message)) => {
                    if started.elapsed() + backoff >= budget {
                        self.degraded.store(true, Ordering::Relaxed);
                        return Err(StoreError::Unavailable(format!(
                            "{what}: etcd unavailable, gave up after {:?}: {message}",
                            started.elapsed()
                        )));
                    }
                    tracing::debug!(%message, what, "transient etcd failure; retrying");
                    retried = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Whether reads at `revision` are refused because it is below the compacted revision.
    async fn is_compacted(&self, revision: i64) -> Result<bool> {
        self.retry("probing compaction", |mut client, _| async move {
            let options = GetOptions::new().with_count_only().with_revision(revision);
            match client.get(b"\0".to_vec(), Some(options)).await {
                Ok(_) => Ok(Ok(false)),
                Err(etcd_client::Error::GRpcStatus(status))
                    if status
                        .message()
                        .contains("required revision has been compacted") =>
                {
                    Ok(Ok(true))
                }
                Err(etcd_client::Error::GRpcStatus(status))
                    if status
                        .message()
                        .contains("required revision is a future revision") =>
                {
                    Ok(Ok(false))
                }
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// The compacted revision. etcd does not report it directly; reads below it are refused,
    /// so it is the lowest readable revision, found by binary search (about 20 reads).
    async fn fetch_compacted_revision(&self) -> Result<i64> {
        if !self.is_compacted(1).await? {
            return Ok(0);
        }
        // Invariant: `low` is compacted (unreadable), `high` is readable.
        let (mut low, mut high) = (1, self.current_revision().await?);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.is_compacted(middle).await? {
                low = middle;
            } else {
                high = middle;
            }
        }
        Ok(high)
    }

    /// Completes the placeholder numbers of revision errors from `classify`.
    async fn fill_revision_error(&self, err: StoreError, requested: i64) -> StoreError {
        match err {
            StoreError::Compacted { .. } => StoreError::Compacted {
                requested,
                compact_revision: self.fetch_compacted_revision().await.unwrap_or(0),
            },
            StoreError::FutureRevision { .. } => StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(0),
            },
            other => other,
        }
    }

    async fn open_watch(
        client: &mut Client,
        prefix: &[u8],
        start_revision: i64,
    ) -> std::result::Result<Result<(etcd_client::WatchStream, i64)>, etcd_client::Error> {
        let end = prefix_end(prefix).unwrap_or_else(|| vec![0]);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start_revision)
            .with_prev_key();
        let mut stream = client.watch(prefix.to_vec(), Some(options)).await?;
        match stream.message().await? {
            Some(response) if response.compact_revision() > 0 || response.canceled() => {
                Ok(Err(StoreError::Compacted {
                    requested: start_revision,
                    compact_revision: response.compact_revision(),
                }))
            }
            Some(response) => {
                let revision = header_revision(response.header())?;
                Ok(Ok((stream, revision)))
            }
            None => Err(etcd_client::Error::WatchError(
                "watch stream closed before it was created".to_string(),
            )),
        }
    }
}

fn map_event(event: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = event.kv()?;
    match event.event_type() {
        EventType::Put => Some(WatchEvent::Put {
            kv: to_key_value(kv),
            prev: event.prev_kv().map(to_key_value),
        }),
        EventType::Delete => Some(WatchEvent::Delete {
            revision: kv.mod_revision(),
            prev: event
                .prev_kv()
                .map(to_key_value)
                .unwrap_or_else(|| KeyValue {
                    key: kv.key().to_vec(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: 0,
                    lease: 0,
                }),
        }),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        check_key(key)?;
        self.retry("get", |mut client, _| async move {
            let response = client.get(key, None).await?;
            Ok(Ok(response.kvs().first().map(to_key_value)))
        })
        .await
    }

    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        // Read in pages at the revision of the first one: the caller sees one snapshot, and
        // no single etcd response is bounded by gRPC's message size.
        let wanted = request.limit;
        let mut page_keys = LIST_PAGE_KEYS;
        let mut items: Vec<KeyValue> = Vec::new();
        let mut start_after = request.start_after.clone();
        let mut revision = request.revision;
        loop {
            let want = if wanted == 0 {
                page_keys
            } else {
                page_keys.min(wanted - items.len())
            };
            let page = ListRequest {
                prefix: request.prefix.clone(),
                start_after: start_after.clone(),
                limit: want,
                revision,
                count_remaining: request.count_remaining,
                keys_only: request.keys_only,
            };
            let response = match self.list_page(&page).await {
                Err(StoreError::Backend(message))
                    if message.contains("message length too large") && page_keys > 1 =>
                {
                    page_keys /= 2;
                    continue;
                }
                other => other?,
            };
            revision = Some(response.revision);
            start_after = response.items.last().map(|kv| kv.key.clone());
            let page_len = response.items.len();
            items.extend(response.items);
            let full = wanted != 0 && items.len() >= wanted;
            if !response.more || full || page_len == 0 {
                return Ok(ListResponse {
                    items,
                    revision: response.revision,
                    more: response.more,
                    remaining_count: response.remaining_count,
                });
            }
        }
    }

    async fn create(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<i64> {
        check_key(key)?;
        let lease = lease.unwrap_or(0);
        let result = self
            .retry("create", |mut client, retried| async move {
                let put = PutOptions::new().with_lease(lease);
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, Some(put))])
                    .or_else([TxnOp::get(key, None)]);
                let response = client.txn(txn).await?;
                if response.succeeded() {
                    return Ok(Ok(header_revision(response.header())?));
                }
                match txn_get_first(&response) {
                    // An earlier attempt whose answer was lost did create it: our own bytes.
                    Some(actual) if retried && actual.value == value && actual.lease == lease => {
                        Ok(Ok(actual.mod_revision))
                    }
                    _ => Ok(Err(StoreError::AlreadyExists { key: key.to_vec() })),
                }
            })
            .await;
        match result {
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound { lease }),
            other => other,
        }
    }

    async fn update(
        &self,
        key: &[u8],
        value: &[u8],
        expected_mod_revision: i64,
        lease: Option<LeaseId>,
    ) -> Result<i64> {
        check_key(key)?;
        let lease = lease.unwrap_or(0);
        let expected = expected_mod_revision;
        let result = self
            .retry("update", |mut client, retried| async move {
                let put = PutOptions::new().with_lease(lease);
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                    .and_then([TxnOp::put(key, value, Some(put))])
                    .or_else([TxnOp::get(key, None)]);
                let response = client.txn(txn).await?;
                if response.succeeded() {
                    return Ok(Ok(header_revision(response.header())?));
                }
                match txn_get_first(&response) {
                    None => Ok(Err(StoreError::NotFound { key: key.to_vec() })),
                    // An earlier attempt whose answer was lost did apply: our own bytes.
                    Some(actual)
                        if retried
                            && actual.value == value
                            && actual.lease == lease
                            && actual.mod_revision > expected =>
                    {
                        Ok(Ok(actual.mod_revision))
                    }
                    Some(actual) => Ok(Err(StoreError::conflict(key, expected, Some(actual)))),
                }
            })
            .await;
        match result {
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound { lease }),
            other => other,
        }
    }

    async fn update_many(&self, updates: Vec<CasUpdate>) -> Result<Vec<Result<i64>>> {
        let mut results = Vec::with_capacity(updates.len());
        let mut rest = updates.as_slice();
        while !rest.is_empty() {
            // As many updates as fit one request (always at least one).
            let mut bytes = 0;
            let mut take = 0;
            for u in rest.iter().take(MAX_TXN_OPS) {
                bytes += u.key.len() * 2 + u.value.len();
                if take > 0 && bytes > MAX_TXN_BYTES {
                    break;
                }
                take += 1;
            }
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            match self.update_chunk(chunk).await {
                Ok(mut answers) => results.append(&mut answers),
                // One lease among them expired: etcd refuses the whole transaction, so each
                // update is tried alone and only that one fails.
                Err(StoreError::LeaseNotFound { .. }) => {
                    for u in chunk {
                        results.push(
                            self.update(&u.key, &u.value, u.expected_mod_revision, Some(u.lease))
                                .await,
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    }

    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        check_key(key)?;
        self.retry("delete", |mut client, _| async move {
            let guard = match expected_mod_revision {
                Some(expected) => Compare::mod_revision(key, CompareOp::Equal, expected),
                None => Compare::create_revision(key, CompareOp::Greater, 0),
            };
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::delete(
                    key,
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(key, None)]);
            let response = client.txn(txn).await?;
            if response.succeeded() {
                let revision = header_revision(response.header())?;
                let prev = response.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(to_key_value),
                    _ => None,
                });
                return Ok(match prev {
                    Some(prev) => Ok((revision, prev)),
                    None => Err(StoreError::Backend(format!(
                        "etcd deleted {} without returning the previous version",
                        display_key(key)
                    ))),
                });
            }
            Ok(match (txn_get_first(&response), expected_mod_revision) {
                (None, _) => Err(StoreError::NotFound { key: key.to_vec() }),
                (Some(actual), Some(expected)) => {
                    Err(StoreError::conflict(key, expected, Some(actual)))
                }
                (Some(_), None) => Err(StoreError::Backend(format!(
                    "etcd refused to delete existing key {}",
                    display_key(key)
                ))),
            })
        })
        .await
    }

    async fn current_revision(&self) -> Result<i64> {
        self.retry("current revision", |mut client, _| async move {
            let options = GetOptions::new().with_count_only();
            let response = client.get(b"\0".to_vec(), Some(options)).await?;
            Ok(Ok(header_revision(response.header())?))
        })
        .await
    }

    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream> {
        // etcd reports a compacted start revision only after creating the watch; check first
        // so the caller gets the error from `watch` itself, as from the embedded store.
        if from_revision > 0 && self.is_compacted(from_revision).await? {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compact_revision: self.fetch_compacted_revision().await?,
            });
        }
        let prefix = prefix.to_vec();
        let (stream, created_at) = self
            .retry("watch", |mut client, _| {
                let prefix = prefix.clone();
                async move { EtcdStore::open_watch(&mut client, &prefix, from_revision).await }
            })
            .await?;
        let next = if from_revision > 0 {
            from_revision
        } else {
            created_at + 1
        };
        let (events, receiver) = tokio::sync::mpsc::channel(256);
        tokio::spawn(pump_watch(
            self.client.clone(),
            prefix,
            stream,
            next,
            events,
        ));
        let mut receiver = receiver;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let result = self
            .retry("compact", |mut client, _| async move {
                let options = CompactionOptions::new().with_physical();
                client.compact(revision, Some(options)).await?;
                Ok(Ok(()))
            })
            .await;
        match result {
            Ok(()) => {
                self.metrics.record_compaction(revision);
                Ok(())
            }
            Err(err) => Err(self.fill_revision_error(err, revision).await),
        }
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.fetch_compacted_revision().await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(StoreError::InvalidArgument(format!(
                "lease TTL {ttl:?} is below the minimum of 1s"
            )));
        }
        // etcd TTLs are whole seconds: round up so a lease never lives shorter than asked.
        let seconds =
            i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        self.retry("grant lease", |mut client, _| async move {
            let response = client.lease_grant(seconds, None).await?;
            Ok(Ok(response.id()))
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let result = self
            .retry("lease keep-alive", |mut client, _| async move {
                // The client sends one keep-alive and waits for its answer.
                client.lease_keep_alive(lease).await?;
                Ok(Ok(()))
            })
            .await;
        match result {
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound { lease }),
            other => other,
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let result = self
            .retry("revoke lease", |mut client, _| async move {
                client.lease_revoke(lease).await?;
                Ok(Ok(()))
            })
            .await;
        match result {
            Err(StoreError::LeaseNotFound { .. }) => Err(StoreError::LeaseNotFound { lease }),
            other => other,
        }
    }

    async fn history(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        // The retained history is the state at the compacted revision plus every event
        // after it; etcd replays the events to a watch started just after compaction.
        let compacted = self.fetch_compacted_revision().await?;
        let current = self.current_revision().await?;
        let mut versions = Vec::new();
        if compacted > 0 {
            let mut start_after = None;
            loop {
                let page = self
                    .list(ListRequest {
                        prefix: prefix.to_vec(),
                        start_after: start_after.take(),
                        limit: 1000,
                        revision: Some(compacted),
                        ..ListRequest::default()
                    })
                    .await?;
                start_after = page.items.last().map(|kv| kv.key.clone());
                versions.extend(page.items);
                if !page.more {
                    break;
                }
            }
        }
        if current > compacted {
            let prefix = prefix.to_vec();
            let replayed = self
                .retry("history replay", |mut client, _| {
                    let prefix = prefix.clone();
                    async move { replay_history(&mut client, &prefix, compacted + 1, current).await }
                })
                .await?;
            versions.extend(replayed);
        }
        versions.sort_by(|a, b| (&a.key, a.mod_revision).cmp(&(&b.key, b.mod_revision)));
        versions.dedup_by(|a, b| a.key == b.key && a.mod_revision == b.mod_revision);
        Ok(versions)
    }

    fn history_pages<'a>(&'a self, prefix: &'a [u8]) -> crate::HistoryPages<'a> {
        // The state at the compacted revision, page by page, then every event after it, a
        // thousand revisions at a time.
        enum Phase {
            Start,
            AtCompacted {
                compacted: i64,
                current: i64,
                after: Option<Vec<u8>>,
            },
            Replay {
                from: i64,
                current: i64,
            },
            Done,
        }
        Box::pin(futures::stream::unfold(
            Phase::Start,
            move |phase| async move {
                let step = async {
                    match phase {
                        Phase::Start => {
                            let compacted = self.fetch_compacted_revision().await?;
                            let current = self.current_revision().await?;
                            let next = if compacted > 0 {
                                Phase::AtCompacted {
                                    compacted,
                                    current,
                                    after: None,
                                }
                            } else {
                                Phase::Replay { from: 1, current }
                            };
                            Ok(Some((Vec::new(), next)))
                        }
                        Phase::AtCompacted {
                            compacted,
                            current,
                            after,
                        } => {
                            let page = self
                                .list(ListRequest {
                                    prefix: prefix.to_vec(),
                                    start_after: after,
                                    limit: 1000,
                                    revision: Some(compacted),
                                    ..ListRequest::default()
                                })
                                .await?;
                            let next = if page.more {
                                Phase::AtCompacted {
                                    compacted,
                                    current,
                                    after: page.items.last().map(|kv| kv.key.clone()),
                                }
                            } else {
                                Phase::Replay {
                                    from: compacted + 1,
                                    current,
                                }
                            };
                            Ok(Some((page.items, next)))
                        }
                        Phase::Replay { from, current } if from <= current => {
                            let until = (from + 999).min(current);
                            let replayed = self
                                .retry("history replay", |mut client, _| async move {
                                    replay_history(&mut client, prefix, from, until).await
                                })
                                .await?;
                            Ok(Some((
                                replayed,
                                Phase::Replay {
                                    from: until + 1,
                                    current,
                                },
                            )))
                        }
                        Phase::Replay { .. } | Phase::Done => Ok(None),
                    }
                };
                let result: Result<Option<(Vec<KeyValue>, Phase)>> = step.await;
                match result {
                    Ok(Some((page, next))) => Some((Ok(page), next)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), Phase::Done)),
                }
            },
        ))
    }

    async fn defragment(&self) -> Result<Vec<SpaceReport>> {
        let members = self
            .retry("member list", |mut client, _| async move {
                let response = client.member_list().await?;
                Ok(Ok(response
                    .members()
                    .iter()
                    .filter_map(|m| m.client_urls().first().cloned())
                    .collect::<Vec<String>>()))
            })
            .await?;
        let mut reports = Vec::new();
        for url in members {
            let fail = |what: &str, e: etcd_client::Error| {
                StoreError::Unavailable(format!("{what} etcd member {url}: {e}"))
            };
            let mut member = Client::connect([url.as_str()], Some(self.options.clone()))
                .await
                .map_err(|e| fail("connecting to", e))?;
            let before = member
                .status()
                .await
                .map_err(|e| fail("status of", e))?
                .db_size();
            member
                .defragment()
                .await
                .map_err(|e| fail("defragmenting", e))?;
            let after = member
                .status()
                .await
                .map_err(|e| fail("status of", e))?
                .db_size();
            reports.push(SpaceReport {
                member: url.clone(),
                bytes_before: u64::try_from(before).unwrap_or(0),
                bytes_after: u64::try_from(after).unwrap_or(0),
            });
        }
        Ok(reports)
    }

    fn metrics(&self) -> Arc<StoreMetrics> {
        Arc::clone(&self.metrics)
    }

    fn describe(&self) -> String {
        format!(
            "etcd at {} (prefix {})",
            self.endpoints.join(","),
            self.prefix
        )
    }
}

/// Every put under `prefix` from `from` up to `until`. etcd's progress notifications cannot
/// say when a replay is complete (3.4 sends them before replayed events), so this watches the
/// whole keyspace, where every revision has at least one event, until `until` has been seen.
async fn replay_history(
    client: &mut Client,
    prefix: &[u8],
    from: i64,
    until: i64,
) -> std::result::Result<Result<Vec<KeyValue>>, etcd_client::Error> {
    let (mut stream, _) = match EtcdStore::open_watch(client, b"", from).await? {
        Ok(opened) => opened,
        Err(err) => return Ok(Err(err)),
    };
    let mut versions = Vec::new();
    loop {
        let Some(response) = stream.message().await? else {
            return Err(etcd_client::Error::WatchError(
                "history watch closed".to_string(),
            ));
        };
        if response.canceled() {
            return Ok(Err(StoreError::Compacted {
                requested: from,
                compact_revision: response.compact_revision(),
            }));
        }
        let mut reached_until = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // A revision's events (one transaction) arrive in one response: finish it.
            reached_until |= kv.mod_revision() >= until;
            if event.event_type() == EventType::Put
                && kv.mod_revision() <= until
                && kv.key().starts_with(prefix)
            {
                versions.push(to_key_value(kv));
            }
        }
        if reached_until {
            return Ok(Ok(versions));
        }
    }
}

/// Forwards watch events to the consumer, resuming after connection loss from the next
/// undelivered revision, so the consumer sees every event exactly once, in order.
async fn pump_watch(
    mut client: Client,
    prefix: Vec<u8>,
    mut stream: etcd_client::WatchStream,
    mut next: i64,
    events: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
) {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = events.closed() => return,
        };
        let failure = match message {
            Ok(Some(response)) => {
                if response.canceled() {
                    let err = if response.compact_revision() > 0 {
                        StoreError::Compacted {
                            requested: next,
                            compact_revision: response.compact_revision(),
                        }
                    } else {
                        StoreError::Unavailable(format!(
                            "etcd cancelled the watch on {}: {}",
                            display_key(&prefix),
                            response.cancel_reason()
                        ))
                    };
                    let _ = events.send(Err(err)).await;
                    return;
                }
                for event in response.events() {
                    let Some(event) = map_event(event) else {
                        continue;
                    };
                    if event.revision() < next {
                        continue; // Already delivered before a reconnect.
                    }
                    next = event.revision() + 1;
                    if events.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => "watch stream ended".to_string(),
            Err(err) => err.to_string(),
        };
        // Reconnect from the next undelivered revision, within the retry budget.
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            if started.elapsed() >= RETRY_BUDGET {
                let _ = events
                    .send(Err(StoreError::Unavailable(format!(
                        "watch on {} lost and not re-established: {failure}",
                        display_key(&prefix)
                    ))))
                    .await;
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match EtcdStore::open_watch(&mut client, &prefix, next).await {
                Ok(Ok((reopened, _))) => {
                    stream = reopened;
                    break;
                }
                Ok(Err(err)) => {
                    let _ = events.send(Err(err)).await;
                    return;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "re-establishing watch failed; retrying");
                }
            }
        }
    }
}
