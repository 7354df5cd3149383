//! The embedded backend: SQLite, one row per revision (kine's model). See `DESIGN.md`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{oneshot, watch};

use crate::types::prefix_end;
use crate::{
    display_key, CompactionPolicy, KeyValue, LeaseId, ListRequest, ListResponse, Result,
    SpaceReport, Store, StoreError, StoreMetrics, WatchEvent, WatchStream,
};

/// Name of the database file inside the data dir.
pub(crate) const DB_FILE: &str = "state.db";

/// How long a connection waits for another connection's (or process's) lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the post-compaction checkpoint waits for readers to move off old WAL frames.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// Most writes applied in one group-commit transaction.
const MAX_BATCH: usize = 1024;
/// How often the writer looks for expired leases, and watches poll for other processes' writes.
const LEASE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Rows fetched per watch poll.
const WATCH_BATCH: i64 = 1000;
/// Read connections (and so concurrent reads): more only adds contention on 2-8 cores, and
/// bounding them keeps connections reused instead of opened per read under load.
const MAX_READERS: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name BLOB NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    value BLOB,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision ON kine (name, prev_revision);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE INDEX IF NOT EXISTS kine_lease ON kine (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Columns of a kine row, in the order `Row::from_sql` reads them.
const ROW_COLUMNS: &str =
    "k.id, k.name, k.created, k.deleted, k.create_revision, k.prev_revision, k.lease, k.value";

fn sqlite_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(
            format!("state.db is locked by another connection or process: {err}"),
        ),
        // Both clear up without a restart once the operator fixes the disk; the write that
        // hit them was rolled back, so nothing half-written stays behind.
        Some(ErrorCode::DiskFull) => {
            tracing::error!(%err, "the embedded store's disk is full: writes are refused until space is freed");
            StoreError::Unavailable(format!(
                "the embedded store's disk is full (no space left for state.db): {err}"
            ))
        }
        Some(ErrorCode::ReadOnly) => {
            tracing::error!(%err, "the embedded store's data directory is read-only: writes are refused");
            StoreError::Unavailable(format!(
                "the embedded store's data directory is read-only: {err}"
            ))
        }
        Some(ErrorCode::SystemIoFailure) => {
            tracing::error!(%err, "the embedded store hit an I/O error");
            StoreError::Unavailable(format!("the embedded store hit an I/O error: {err}"))
        }
        _ => StoreError::Backend(format!("sqlite: {err}")),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty key".to_string()));
    }
    Ok(())
}

/// One stored row (value of tombstones is `None`).
struct Row {
    id: i64,
    name: Vec<u8>,
    deleted: bool,
    create_revision: i64,
    prev_revision: i64,
    lease: i64,
    value: Option<Vec<u8>>,
}

impl Row {
    fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let id: i64 = row.get(0)?;
        let created: bool = row.get(2)?;
        let create_revision: i64 = row.get(4)?;
        Ok(Row {
            id,
            name: row.get(1)?,
            deleted: row.get(3)?,
            // A creating row stores 0 and means itself: saves an UPDATE per create.
            create_revision: if created { id } else { create_revision },
            prev_revision: row.get(5)?,
            lease: row.get(6)?,
            value: row.get(7)?,
        })
    }

    fn into_key_value(self) -> KeyValue {
        KeyValue {
            key: self.name,
            value: self.value.unwrap_or_default(),
            create_revision: self.create_revision,
            mod_revision: self.id,
            lease: self.lease,
        }
    }
}

fn latest_row(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM kine AS k WHERE k.name = ?1 ORDER BY k.id DESC LIMIT 1"
    ))?
    .query_row(params![key], Row::from_sql)
    .optional()
}

fn current_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kine'), 0)",
    )?
    .query_row([], |r| r.get(0))
}

fn compacted_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT value FROM meta WHERE name = 'compact_revision'), 0)",
    )?
    .query_row([], |r| r.get(0))
}

/// A write waiting for the writer thread.
enum WriteOp {
    Create {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Update {
        key: Vec<u8>,
        value: Vec<u8>,
        expected: i64,
        lease: LeaseId,
    },
    Delete {
        key: Vec<u8>,
        expected: Option<i64>,
    },
    GrantLease {
        ttl_ms: i64,
    },
    KeepAlive {
        lease: LeaseId,
    },
    RevokeLease {
        lease: LeaseId,
    },
    Compact {
        revision: i64,
    },
    /// Retry the vacuum/checkpoint of an earlier compaction that a reader blocked.
    Scrub,
    /// Rebuild the database file (VACUUM) and truncate the WAL.
    Defragment,
}

enum WriteOutcome {
    Revision(i64),
    Deleted(i64, KeyValue),
    Lease(LeaseId),
    Done,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// State shared by readers, watches and the compactor.
struct Shared {
    path: PathBuf,
    idle_readers: Mutex<Vec<Connection>>,
    /// One permit per read connection that may be in use at once.
    read_permits: tokio::sync::Semaphore,
    /// The latest revision committed by this process's writer (wakes watches early).
    committed: watch::Sender<i64>,
    metrics: Arc<StoreMetrics>,
    /// A compaction's vacuum/checkpoint has not completed yet (old values may linger).
    scrub_pending: AtomicBool,
}

impl Shared {
    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        Ok(conn)
    }

    /// Runs `f` in a read transaction (one consistent snapshot) on a pooled connection.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let shared = Arc::clone(self);
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("store is shutting down".to_string()))?;
        tokio::task::spawn_blocking(move || {
            let pooled = shared
                .idle_readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => shared.open_reader()?,
            };
            let result = (|| {
                let tx = conn.transaction().map_err(sqlite_error)?;
                let value = f(&tx)?;
                tx.finish().map_err(sqlite_error)?;
                Ok(value)
            })();
            let mut idle = shared
                .idle_readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() < MAX_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// The embedded SQLite store.
pub(crate) struct SqliteStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteRequest>,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(compactor) = self.compactor.take() {
            compactor.abort();
        }
    }
}

/// Creates the data dir (0700) and an empty database file (0600) if they are missing: the
/// file holds every stored value, and SQLite gives its `-wal`/`-shm` files the same mode.
fn create_private(data_dir: &Path, db_path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !data_dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| {
                StoreError::Backend(format!("creating data dir {}: {e}", data_dir.display()))
            })?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db_path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "creating {}: {e}",
            db_path.display()
        ))),
    }
}

fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    // auto_vacuum only takes effect on a new, empty database: it must precede the tables.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(sqlite_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{}: cannot switch to WAL mode (got {mode})",
            path.display()
        )));
    }
    // FULL: the WAL is fsynced at every commit, so an acknowledged write survives a crash.
    // secure_delete: compacted values are overwritten with zeros, not left in free space.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")
        .map_err(sqlite_error)?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// Creates and removes a file in `dir`.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

fn describe_io(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(30) => "read-only filesystem".to_string(), // EROFS
        Some(28) => "no space left on the device".to_string(), // ENOSPC
        _ => err.to_string(),
    }
}

impl SqliteStore {
    pub(crate) async fn open(data_dir: &Path, compaction: CompactionPolicy) -> Result<Self> {
        let data_dir = data_dir.to_path_buf();
        let path = data_dir.join(DB_FILE);
        let (writer_conn, path) = tokio::task::spawn_blocking(move || {
            create_private(&data_dir, &path)?;
            let conn = open_writer(&path).map_err(|e| {
                // SQLite says only "unable to open database file": find out whether the
                // directory itself refuses writes (a read-only filesystem, a full disk).
                if let Err(io) = probe_writable(&data_dir) {
                    return StoreError::Unavailable(format!(
                        "the data directory {} is not writable ({}): the embedded store \
                         writes state.db and its WAL there",
                        data_dir.display(),
                        describe_io(&io)
                    ));
                }
                match e {
                    StoreError::Backend(msg) => {
                        StoreError::Backend(format!("opening {}: {msg}", path.display()))
                    }
                    other => other,
                }
            })?;
            Ok::<_, StoreError>((conn, path))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;

        let start_revision = current_revision(&writer_conn).map_err(sqlite_error)?;
        let (committed, _) = watch::channel(start_revision);
        let shared = Arc::new(Shared {
            path,
            idle_readers: Mutex::new(Vec::new()),
            read_permits: tokio::sync::Semaphore::new(MAX_READERS),
            committed,
            metrics: Arc::new(StoreMetrics::default()),
            scrub_pending: AtomicBool::new(false),
        });
        let (writer, requests) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("atrest-store-writer".to_string())
            .spawn(move || writer_loop(writer_conn, requests, &writer_shared))
            .map_err(|e| StoreError::Backend(format!("starting writer thread: {e}")))?;

        let compactor = compaction.enabled.then(|| {
            tokio::spawn(compaction_loop(
                Arc::clone(&shared),
                writer.clone(),
                compaction,
            ))
        });
        Ok(SqliteStore {
            shared,
            writer,
            compactor,
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        submit(&self.writer, op).await
    }
}

async fn submit(writer: &mpsc::Sender<WriteRequest>, op: WriteOp) -> Result<WriteOutcome> {
    let (reply, outcome) = oneshot::channel();
    writer
        .send(WriteRequest { op, reply })
        .map_err(|_| StoreError::Backend("the store's writer thread has stopped".to_string()))?;
    outcome.await.map_err(|_| {
        StoreError::Backend("the store's writer thread stopped before answering".to_string())
    })?
}

fn unexpected_outcome() -> StoreError {
    StoreError::Backend("writer returned an outcome of the wrong kind".to_string())
}

// ---------------------------------------------------------------------------------------
// The writer thread: group commit.

fn writer_loop(mut conn: Connection, requests: mpsc::Receiver<WriteRequest>, shared: &Shared) {
    let mut next_lease_check = Instant::now();
    loop {
        let first = match requests.recv_timeout(LEASE_CHECK_INTERVAL) {
            Ok(request) => Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            // Every sender is gone: the store was dropped.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(first) = first {
            // Everything queued while the previous commit was syncing goes into this one.
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let (compactions, writes): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| {
                matches!(
                    r.op,
                    WriteOp::Compact { .. } | WriteOp::Scrub | WriteOp::Defragment
                )
            });
            if !writes.is_empty() {
                commit_batch(&mut conn, writes, shared);
            }
            for request in compactions {
                let result = match request.op {
                    WriteOp::Compact { revision } => compact(&mut conn, revision, shared),
                    WriteOp::Defragment => defragment(&conn),
                    _ => {
                        scrub_files(&conn, shared);
                        Ok(())
                    }
                };
                let _ = request.reply.send(result.map(|()| WriteOutcome::Done));
            }
        }
        if Instant::now() >= next_lease_check {
            if let Err(err) = expire_leases(&mut conn, shared) {
                tracing::warn!(error = %err, "expiring leases failed; will retry");
            }
            next_lease_check = Instant::now() + LEASE_CHECK_INTERVAL;
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: Vec<WriteRequest>, shared: &Shared) {
    let result = (|| -> Result<_> {
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let mut results = Vec::with_capacity(batch.len());
        for request in &batch {
            // A savepoint per write: a failed compare or constraint rolls back only that write.
            let savepoint = tx.savepoint().map_err(sqlite_error)?;
            let result = apply(&savepoint, &request.op);
            if result.is_ok() {
                savepoint.commit().map_err(sqlite_error)?;
            }
            // Dropping an uncommitted savepoint rolls it back.
            results.push(result);
        }
        let revision = current_revision(&tx).map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
        Ok((results, revision))
    })();
    match result {
        Ok((results, revision)) => {
            shared.committed.send_replace(revision);
            for (request, result) in batch.into_iter().zip(results) {
                let _ = request.reply.send(result);
            }
        }
        Err(err) => {
            // Nothing of the batch is durable: every waiter learns it was not acknowledged.
            for request in batch {
                let _ = request.reply.send(Err(match &err {
                    StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
                    StoreError::Backend(message) => StoreError::Backend(message.clone()),
                    other => StoreError::Backend(other.to_string()),
                }));
            }
        }
    }
}

fn lease_is_live(conn: &Connection, lease: LeaseId) -> Result<()> {
    if lease == 0 {
        return Ok(());
    }
    let live = conn
        .prepare_cached("SELECT 1 FROM leases WHERE id = ?1 AND expires_at_ms > ?2")
        .and_then(|mut s| s.exists(params![lease, now_ms()]))
        .map_err(sqlite_error)?;
    if live {
        Ok(())
    } else {
        Err(StoreError::LeaseNotFound { lease })
    }
}

/// Inserts one row, mapping a unique-index collision (a racing writer) to `on_collision`.
#[allow(clippy::too_many_arguments)]
fn insert_row(
    conn: &Connection,
    key: &[u8],
    created: bool,
    deleted: bool,
    create_revision: i64,
    prev_revision: i64,
    lease: LeaseId,
    value: Option<&[u8]>,
    old_value: Option<&[u8]>,
    on_collision: impl FnOnce() -> StoreError,
) -> Result<i64> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, \
             value, old_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                key,
                created,
                deleted,
                create_revision,
                prev_revision,
                lease,
                value,
                old_value
            ])
        });
    match inserted {
        Ok(_) => Ok(conn.last_insert_rowid()),
        Err(err)
            if err.sqlite_error_code() == Some(rusqlite::ffi::ErrorCode::ConstraintViolation) =>
        {
            Err(on_collision())
        }
        Err(err) => Err(sqlite_error(err)),
    }
}

fn delete_row(conn: &Connection, latest: Row) -> Result<(i64, KeyValue)> {
    let revision = insert_row(
        conn,
        &latest.name,
        false,
        true,
        latest.create_revision,
        latest.id,
        latest.lease,
        None,
        latest.value.as_deref(),
        || StoreError::conflict(&latest.name, latest.id, None),
    )?;
    Ok((revision, latest.into_key_value()))
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<WriteOutcome> {
    match op {
        WriteOp::Create { key, value, lease } => {
            check_key(key)?;
            let latest = latest_row(conn, key).map_err(sqlite_error)?;
            if latest.as_ref().is_some_and(|row| !row.deleted) {
                return Err(StoreError::AlreadyExists { key: key.clone() });
            }
            lease_is_live(conn, *lease)?;
            let prev_revision = latest.map_or(0, |row| row.id);
            let revision = insert_row(
                conn,
                key,
                true,
                false,
                0,
                prev_revision,
                *lease,
                Some(value),
                None,
                || StoreError::AlreadyExists { key: key.clone() },
            )?;
            Ok(WriteOutcome::Revision(revision))
        }
        WriteOp::Update {
            key,
            value,
            expected,
            lease,
        } => {
            check_key(key)?;
            let latest = match latest_row(conn, key).map_err(sqlite_error)? {
                Some(row) if !row.deleted => row,
                _ => return Err(StoreError::NotFound { key: key.clone() }),
            };
            if latest.id != *expected {
                return Err(StoreError::conflict(
                    key,
                    *expected,
                    Some(latest.into_key_value()),
                ));
            }
            lease_is_live(conn, *lease)?;
            let revision = insert_row(
                conn,
                key,
                false,
                false,
                latest.create_revision,
                latest.id,
                *lease,
                Some(value),
                latest.value.as_deref(),
                || StoreError::conflict(key, *expected, None),
            )?;
            Ok(WriteOutcome::Revision(revision))
        }
        WriteOp::Delete { key, expected } => {
            check_key(key)?;
            let latest = match latest_row(conn, key).map_err(sqlite_error)? {
                Some(row) if !row.deleted => row,
                _ => return Err(StoreError::NotFound { key: key.clone() }),
            };
            if let Some(expected) = expected {
                if latest.id != *expected {
                    return Err(StoreError::conflict(
                        key,
                        *expected,
                        Some(latest.into_key_value()),
                    ));
                }
            }
            let (revision, prev) = delete_row(conn, latest)?;
            Ok(WriteOutcome::Deleted(revision, prev))
        }
        WriteOp::GrantLease { ttl_ms } => {
            conn.prepare_cached("INSERT INTO leases (ttl_ms, expires_at_ms) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![ttl_ms, now_ms().saturating_add(*ttl_ms)]))
                .map_err(sqlite_error)?;
            Ok(WriteOutcome::Lease(conn.last_insert_rowid()))
        }
        WriteOp::KeepAlive { lease } => {
            let now = now_ms();
            let renewed = conn
                .prepare_cached(
                    "UPDATE leases SET expires_at_ms = ?2 + ttl_ms \
                     WHERE id = ?1 AND expires_at_ms > ?2",
                )
                .and_then(|mut s| s.execute(params![lease, now]))
                .map_err(sqlite_error)?;
            if renewed == 0 {
                return Err(StoreError::LeaseNotFound { lease: *lease });
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::RevokeLease { lease } => {
            if !end_lease(conn, *lease)? {
                return Err(StoreError::LeaseNotFound { lease: *lease });
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::Compact { .. } | WriteOp::Scrub | WriteOp::Defragment => Err(StoreError::Backend(
            "compaction cannot run inside a write batch".to_string(),
        )),
    }
}

/// Deletes every key attached to `lease` (each delete gets its revision) and the lease.
/// Returns whether the lease existed.
fn end_lease(conn: &Connection, lease: LeaseId) -> Result<bool> {
    let attached: Vec<Row> = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM kine AS k WHERE k.lease = ?1 AND k.deleted = 0 \
             AND k.id = (SELECT MAX(l.id) FROM kine AS l WHERE l.name = k.name) ORDER BY k.name"
        ))
        .and_then(|mut s| {
            s.query_map(params![lease], Row::from_sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    for row in attached {
        delete_row(conn, row)?;
    }
    let removed = conn
        .prepare_cached("DELETE FROM leases WHERE id = ?1")
        .and_then(|mut s| s.execute(params![lease]))
        .map_err(sqlite_error)?;
    Ok(removed > 0)
}

fn expire_leases(conn: &mut Connection, shared: &Shared) -> Result<()> {
    let expired_exist = conn
        .prepare_cached("SELECT 1 FROM leases WHERE expires_at_ms <= ?1")
        .and_then(|mut s| s.exists(params![now_ms()]))
        .map_err(sqlite_error)?;
    if !expired_exist {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    // Re-read under the write lock: another process may have expired them already.
    let expired: Vec<i64> = tx
        .prepare_cached("SELECT id FROM leases WHERE expires_at_ms <= ?1")
        .and_then(|mut s| {
            s.query_map(params![now_ms()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    for lease in expired {
        end_lease(&tx, lease)?;
    }
    let revision = current_revision(&tx).map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    shared.committed.send_replace(revision);
    Ok(())
}

/// Compacts history at and below `revision`, then scrubs the freed bytes from the files.
fn compact(conn: &mut Connection, revision: i64, shared: &Shared) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let current = current_revision(&tx).map_err(sqlite_error)?;
    let compacted = compacted_revision(&tx).map_err(sqlite_error)?;
    if revision <= compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compact_revision: compacted,
        });
    }
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    tx.execute_batch(&format!(
        "DELETE FROM kine WHERE id <= {revision} AND (deleted = 1 OR EXISTS (
             SELECT 1 FROM kine AS later
             WHERE later.name = kine.name AND later.id > kine.id AND later.id <= {revision}));
         UPDATE kine SET old_value = NULL WHERE id <= {revision} AND old_value IS NOT NULL;
         INSERT INTO meta (name, value) VALUES ('compact_revision', {revision})
             ON CONFLICT (name) DO UPDATE SET value = excluded.value;"
    ))
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    shared.metrics.record_compaction(revision);
    scrub_files(conn, shared);
    Ok(())
}

/// Returns freed pages to the OS and truncates the WAL, where pre-compaction page images
/// (with the old values) would otherwise stay. Failures are logged and counted, and the
/// automatic compactor retries until it succeeds.
/// VACUUM rebuilds the whole file from live pages only (with `secure_delete` the freed pages
/// were zeroed already; this also returns them to the file system), then the WAL is
/// checkpointed and truncated.
fn defragment(conn: &Connection) -> Result<()> {
    conn.execute_batch("VACUUM;").map_err(sqlite_error)?;
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(sqlite_error)?;
    if busy != 0 {
        return Err(StoreError::Backend(
            "the WAL could not be truncated: a reader holds an old snapshot; try again".into(),
        ));
    }
    Ok(())
}

fn scrub_files(conn: &Connection, shared: &Shared) {
    shared.scrub_pending.store(true, Ordering::SeqCst);
    let vacuumed = conn.execute_batch("PRAGMA incremental_vacuum;");
    // A reader holding an old snapshot blocks the truncation; the writer thread must not
    // stall every write for the full busy timeout waiting for it.
    let checkpoint = vacuumed
        .and_then(|()| conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT))
        .and_then(|()| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        });
    if let Err(err) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %err, "restoring the busy timeout failed");
    }
    match checkpoint {
        Ok(0) => shared.scrub_pending.store(false, Ordering::SeqCst),
        Ok(_) => {
            shared.metrics.record_compaction_failure();
            tracing::warn!(
                path = %shared.path.display(),
                "WAL checkpoint after compaction was blocked by a reader; \
                 old page images stay in the WAL until a retry succeeds"
            );
        }
        Err(err) => {
            shared.metrics.record_compaction_failure();
            tracing::warn!(path = %shared.path.display(), error = %err,
                "vacuum/checkpoint after compaction failed; will retry");
        }
    }
}

async fn compaction_loop(
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteRequest>,
    policy: CompactionPolicy,
) {
    // (when sampled, current revision then): revisions <= r were written before that time.
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut ticker = tokio::time::interval(policy.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let revisions = shared
            .read(|tx| {
                Ok((
                    current_revision(tx).map_err(sqlite_error)?,
                    compacted_revision(tx).map_err(sqlite_error)?,
                ))
            })
            .await;
        let (current, compacted) = match revisions {
            Ok(revisions) => revisions,
            Err(err) => {
                shared.metrics.record_compaction_failure();
                tracing::warn!(error = %err, "automatic compaction could not read the revision");
                continue;
            }
        };
        let now = Instant::now();
        samples.push_back((now, current));
        let old_enough = |sampled: Instant| now.duration_since(sampled) >= policy.keep_duration;
        while samples.len() > 1 && old_enough(samples[1].0) {
            samples.pop_front();
        }
        let by_time = match samples.front() {
            Some(&(sampled, revision)) if old_enough(sampled) => revision,
            _ => 0,
        };
        let target = by_time.min(current - policy.keep_revisions);
        if target <= compacted {
            if shared.scrub_pending.load(Ordering::SeqCst) {
                // The vacuum/checkpoint of an earlier compaction was blocked: retry it.
                if let Err(err) = submit(&writer, WriteOp::Scrub).await {
                    shared.metrics.record_compaction_failure();
                    tracing::warn!(error = %err, "retrying the post-compaction scrub failed");
                }
            }
            continue;
        }
        match submit(&writer, WriteOp::Compact { revision: target }).await {
            Ok(_) => tracing::debug!(revision = target, "compacted"),
            // Another process compacted further meanwhile: nothing to do.
            Err(StoreError::Compacted { .. }) => {}
            Err(err) => {
                shared.metrics.record_compaction_failure();
                tracing::warn!(revision = target, error = %err, "automatic compaction failed");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reads.

/// `name >= prefix AND name < prefix_end AND name > after` as SQL plus its parameters.
fn range_condition(prefix: &[u8], after: Option<&[u8]>) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = String::from("k.name >= ?");
    let mut values = vec![Value::Blob(prefix.to_vec())];
    if let Some(end) = prefix_end(prefix) {
        sql.push_str(" AND k.name < ?");
        values.push(Value::Blob(end));
    }
    if let Some(after) = after {
        sql.push_str(" AND k.name > ?");
        values.push(Value::Blob(after.to_vec()));
    }
    (sql, values)
}

fn list_at(tx: &Connection, request: &ListRequest) -> Result<ListResponse> {
    let current = current_revision(tx).map_err(sqlite_error)?;
    let compacted = compacted_revision(tx).map_err(sqlite_error)?;
    let revision = match request.revision {
        Some(revision) if revision > 0 => revision,
        _ => current,
    };
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compact_revision: compacted,
        });
    }
    let (range, mut values) = range_condition(&request.prefix, request.start_after.as_deref());
    let visible = "k.deleted = 0 AND k.id = \
         (SELECT MAX(v.id) FROM kine AS v WHERE v.name = k.name AND v.id <= ?)";
    values.push(revision.into());
    let limit = if request.limit == 0 {
        -1
    } else {
        // One extra row tells whether more remain.
        i64::try_from(request.limit).unwrap_or(i64::MAX - 1) + 1
    };
    let mut query_values = values.clone();
    query_values.push(limit.into());
    let mut items: Vec<KeyValue> = tx
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM kine AS k WHERE {range} AND {visible} \
             ORDER BY k.name LIMIT ?"
        ))
        .and_then(|mut s| {
            s.query_map(rusqlite::params_from_iter(query_values), Row::from_sql)?
                .map(|row| row.map(Row::into_key_value))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    if request.keys_only {
        for item in &mut items {
            item.value = Vec::new();
        }
    }
    let more = request.limit != 0 && items.len() > request.limit;
    let mut remaining_count = request.count_remaining.then_some(0);
    if more {
        items.truncate(request.limit);
    }
    if more && request.count_remaining {
        let last = items.last().map(|kv| kv.key.clone()).unwrap_or_default();
        let (range, mut values) = range_condition(&request.prefix, Some(&last));
        values.push(revision.into());
        remaining_count = tx
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM kine AS k WHERE {range} AND {visible}"
            ))
            .and_then(|mut s| s.query_row(rusqlite::params_from_iter(values), |r| r.get(0)))
            .map(Some)
            .map_err(sqlite_error)?;
    }
    Ok(ListResponse {
        items,
        revision,
        more,
        remaining_count,
    })
}

/// Events with revision in `(after, up_to]` under the prefix, oldest first.
fn poll_events(
    tx: &Connection,
    prefix: &[u8],
    after: i64,
) -> Result<(Vec<WatchEvent>, i64 /* new `after` */)> {
    let compacted = compacted_revision(tx).map_err(sqlite_error)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after + 1,
            compact_revision: compacted,
        });
    }
    let current = current_revision(tx).map_err(sqlite_error)?;
    if current <= after {
        return Ok((Vec::new(), after));
    }
    let (range, mut values) = range_condition(prefix, None);
    values.push(after.into());
    values.push(current.into());
    values.push(WATCH_BATCH.into());
    let rows = tx
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS}, k.old_value, p.lease FROM kine AS k \
             LEFT JOIN kine AS p ON p.id = k.prev_revision \
             WHERE {range} AND k.id > ? AND k.id <= ? ORDER BY k.id LIMIT ?"
        ))
        .and_then(|mut s| {
            s.query_map(rusqlite::params_from_iter(values), |r| {
                let row = Row::from_sql(r)?;
                let old_value: Option<Vec<u8>> = r.get(8)?;
                let prev_lease: Option<i64> = r.get(9)?;
                Ok((row, old_value, prev_lease))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    let reached = if rows.len() as i64 == WATCH_BATCH {
        rows.last().map_or(current, |(row, _, _)| row.id)
    } else {
        current
    };
    let events = rows
        .into_iter()
        .map(|(row, old_value, prev_lease)| {
            let prev = (row.prev_revision != 0 && !row.deleted && row.create_revision != row.id)
                .then(|| KeyValue {
                    key: row.name.clone(),
                    value: old_value.clone().unwrap_or_default(),
                    create_revision: row.create_revision,
                    mod_revision: row.prev_revision,
                    lease: prev_lease.unwrap_or(0),
                });
            if row.deleted {
                WatchEvent::Delete {
                    revision: row.id,
                    prev: KeyValue {
                        key: row.name,
                        value: old_value.unwrap_or_default(),
                        create_revision: row.create_revision,
                        mod_revision: row.prev_revision,
                        lease: row.lease,
                    },
                }
            } else {
                WatchEvent::Put {
                    kv: row.into_key_value(),
                    prev,
                }
            }
        })
        .collect();
    Ok((events, reached))
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let key = key.to_vec();
        self.shared
            .read(move |tx| {
                let row = latest_row(tx, &key).map_err(sqlite_error)?;
                Ok(row.filter(|r| !r.deleted).map(Row::into_key_value))
            })
            .await
    }

    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        self.shared.read(move |tx| list_at(tx, &request)).await
    }

    async fn create(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<i64> {
        let op = WriteOp::Create {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: lease.unwrap_or(0),
        };
        match self.write(op).await? {
            WriteOutcome::Revision(revision) => Ok(revision),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn update(
        &self,
        key: &[u8],
        value: &[u8],
        expected_mod_revision: i64,
        lease: Option<LeaseId>,
    ) -> Result<i64> {
        let op = WriteOp::Update {
            key: key.to_vec(),
            value: value.to_vec(),
            expected: expected_mod_revision,
            lease: lease.unwrap_or(0),
        };
        match self.write(op).await? {
            WriteOutcome::Revision(revision) => Ok(revision),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        let op = WriteOp::Delete {
            key: key.to_vec(),
            expected: expected_mod_revision,
        };
        match self.write(op).await? {
            WriteOutcome::Deleted(revision, prev) => Ok((revision, prev)),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn current_revision(&self) -> Result<i64> {
        self.shared
            .read(|tx| current_revision(tx).map_err(sqlite_error))
            .await
    }

    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream> {
        let prefix = prefix.to_vec();
        let (after, compacted) = self
            .shared
            .read(|tx| {
                Ok((
                    current_revision(tx).map_err(sqlite_error)?,
                    compacted_revision(tx).map_err(sqlite_error)?,
                ))
            })
            .await?;
        let after = if from_revision > 0 {
            if from_revision <= compacted {
                return Err(StoreError::Compacted {
                    requested: from_revision,
                    compact_revision: compacted,
                });
            }
            from_revision - 1
        } else {
            after
        };
        let (events, receiver) = tokio::sync::mpsc::channel(256);
        tokio::spawn(watch_loop(Arc::clone(&self.shared), prefix, after, events));
        let mut receiver = receiver;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        match self.write(WriteOp::Compact { revision }).await? {
            WriteOutcome::Done => Ok(()),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn defragment(&self) -> Result<Vec<SpaceReport>> {
        let size = |path: &Path| {
            let wal = path.with_extension("db-wal");
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
        };
        let before = size(&self.shared.path);
        match self.write(WriteOp::Defragment).await? {
            WriteOutcome::Done => {}
            _ => return Err(unexpected_outcome()),
        }
        Ok(vec![SpaceReport {
            member: self.shared.path.display().to_string(),
            bytes_before: before,
            bytes_after: size(&self.shared.path),
        }])
    }

    fn history_pages<'a>(&'a self, prefix: &'a [u8]) -> crate::HistoryPages<'a> {
        // Rows in revision order, a thousand at a time; `None` once the last page is out.
        Box::pin(futures::stream::unfold(
            Some(0i64),
            move |after| async move {
                let after = after?;
                let prefix = prefix.to_vec();
                let page = self
                    .shared
                    .read(move |tx| {
                        let (range, mut values) = range_condition(&prefix, None);
                        values.push(after.into());
                        tx.prepare_cached(&format!(
                            "SELECT {ROW_COLUMNS} FROM kine AS k WHERE {range} AND k.deleted = 0 \
                         AND k.id > ? ORDER BY k.id LIMIT 1000"
                        ))
                        .and_then(|mut s| {
                            s.query_map(rusqlite::params_from_iter(values), Row::from_sql)?
                                .map(|row| row.map(Row::into_key_value))
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .map_err(sqlite_error)
                    })
                    .await;
                match page {
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = page.last().map(|kv| kv.mod_revision);
                        Some((Ok(page), next))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            },
        ))
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.shared
            .read(|tx| compacted_revision(tx).map_err(sqlite_error))
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(StoreError::InvalidArgument(format!(
                "lease TTL {ttl:?} is below the minimum of 1s"
            )));
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        match self.write(WriteOp::GrantLease { ttl_ms }).await? {
            WriteOutcome::Lease(lease) => Ok(lease),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        match self.write(WriteOp::KeepAlive { lease }).await? {
            WriteOutcome::Done => Ok(()),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.write(WriteOp::RevokeLease { lease }).await? {
            WriteOutcome::Done => Ok(()),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn history(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let prefix = prefix.to_vec();
        self.shared
            .read(move |tx| {
                let (range, values) = range_condition(&prefix, None);
                tx.prepare(&format!(
                    "SELECT {ROW_COLUMNS} FROM kine AS k WHERE {range} AND k.deleted = 0 \
                     ORDER BY k.name, k.id"
                ))
                .and_then(|mut s| {
                    s.query_map(rusqlite::params_from_iter(values), Row::from_sql)?
                        .map(|row| row.map(Row::into_key_value))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)
            })
            .await
    }

    fn metrics(&self) -> Arc<StoreMetrics> {
        Arc::clone(&self.shared.metrics)
    }

    fn describe(&self) -> String {
        format!("embedded SQLite store {}", self.shared.path.display())
    }
}

async fn watch_loop(
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    mut after: i64,
    events: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
) {
    let mut committed = shared.committed.subscribe();
    loop {
        let watched = prefix.clone();
        let polled = shared
            .read(move |tx| poll_events(tx, &watched, after))
            .await;
        match polled {
            Ok((batch, reached)) => {
                let caught_up = batch.is_empty();
                for event in batch {
                    if events.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                after = reached;
                if !caught_up {
                    continue;
                }
            }
            Err(err) => {
                if !matches!(err, StoreError::Compacted { .. }) {
                    tracing::warn!(prefix = %display_key(&prefix), error = %err, "watch failed");
                }
                let _ = events.send(Err(err)).await;
                return;
            }
        }
        // Woken at once by this process's commits; the timeout catches other processes'.
        tokio::select! {
            _ = committed.changed() => {}
            () = tokio::time::sleep(WATCH_POLL_INTERVAL) => {}
            () = events.closed() => return,
        }
    }
}
