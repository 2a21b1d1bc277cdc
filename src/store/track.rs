//! Track history: every accepted fix, written in batches by a background task.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Backend, Store, StoreError};
use crate::model::{Fix, Motion};
use crate::shutdown::Shutdown;

/// Fixes waiting for the writer (≈ 0.65 s at 100k fixes/s, ≈ 8 MB). When it is full, ingest waits
/// for room (backpressure), counted in `trackhub_track_backpressure_total`. It also bounds a
/// drain: at most this many rows are left to write after the sockets close.
pub const TRACK_QUEUE: usize = 65_536;
/// A batch not committed this long (ms) after the writer began it makes the edges refuse new
/// fixes: the database is down or far behind, and new fixes would only wait unacknowledged in
/// memory. A full 16,384-row batch commits in well under a second on both stores at the loads
/// of BENCHMARKS.md, and an attempt against a stopped PostgreSQL can take up to the pool's 10 s
/// acquire timeout to fail, so the age of the batch, not a failed attempt, is what is watched.
const REFUSE_AFTER_WRITING: Duration = Duration::from_secs(2);
/// Retry hint given while refusing, seconds: about one backoff step of the writer at its cap.
pub const RETRY_AFTER_S: u64 = 5;
/// Most rows written in one transaction. Large, because with thousands of drivers each row lands
/// on its own driver's B-tree page: the more rows per commit, the more of them share a page
/// write (4,096 → 16,384 took SQLite from ~25k to ~40k rows/s at 10k drivers, BENCHMARKS.md).
pub const BATCH_ROWS: usize = 16_384;
/// Rows per INSERT statement, largest first: a batch is cut into statements of these sizes only,
/// so each connection prepares at most four statements and reuses them (a statement per batch
/// length would be prepared again for nearly every batch). 9 parameters a row: 1,152 at most.
const STATEMENT_ROWS: [usize; 4] = [128, 32, 8, 1];
/// Backoff between attempts at a failed batch: 50 ms doubling to 5 s, with jitter, forever. A
/// batch holds fixes whose acknowledgements wait on it, so it is never dropped.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(RETRY_AFTER_S);

/// One accepted fix of one driver.
#[derive(Debug, Clone)]
pub struct TrackPoint {
    pub fleet: Arc<str>,
    pub driver_id: Arc<str>,
    pub fix: Fix,
    /// Server receive time, unix ms UTC.
    pub received_ms: i64,
}

/// What the writer's queue carries: fixes, and barriers that fire once everything queued
/// before them is committed (group commit: one barrier per socket frame or OsmAnd request).
#[derive(Debug)]
enum Queued {
    Point(TrackPoint),
    Barrier(oneshot::Sender<()>),
}

/// The history writer's thread; [`WriterHandle::join`] returns once it has written everything
/// queued and closed its connection.
#[derive(Debug)]
pub struct WriterHandle(Option<std::thread::JoinHandle<()>>);

impl WriterHandle {
    /// Waits for the writer to finish (after its stop signal), off the async workers.
    pub async fn join(mut self) {
        if let Some(thread) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The writer has stopped (the node drains): nothing more can be stored through it, so nothing
/// more may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the history writer has stopped (the node is draining)")]
pub struct WriterStopped;

/// Sending half of the history writer. Cloned into the hub; when every clone is dropped the
/// writer drains what is queued, writes it and stops.
#[derive(Clone, Debug)]
pub struct TrackWriter {
    tx: mpsc::Sender<Queued>,
    /// True while the batch being written is older than [`REFUSE_AFTER_WRITING`]: set by the
    /// writer, watched by every ack that waits (no polling).
    stuck: watch::Receiver<bool>,
}

impl TrackWriter {
    /// Starts the writer on a thread of its own, with its own single-threaded runtime and its
    /// own pool of one connection to `store`'s database. When `stop` turns true the writer
    /// refuses new fixes, writes everything already queued and ends: join the handle to know
    /// history is flushed.
    ///
    /// Why a thread: on the shared runtime the writer task waited behind thousands of socket
    /// tasks between its statements (a round trip to the SQLite worker thread each): a
    /// 10,000-row batch took 0.58 s while the hub used 0.63 cores, and with acks waiting for
    /// commits that wait set the whole hub's throughput (BENCHMARKS.md, durable acks: 10k
    /// fixes/s acked on the shared runtime, 27.6k on its own thread, same load).
    pub fn spawn(store: Store, stop: Shutdown) -> (Self, WriterHandle) {
        let (tx, rx) = mpsc::channel(TRACK_QUEUE);
        let (stuck_tx, stuck) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("trackhub-history".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the history writer's runtime starts");
                runtime.block_on(async move {
                    let own = loop {
                        match store.open_again(1).await {
                            Ok(own) => break own,
                            Err(e) => {
                                tracing::warn!(error = %e, "history writer cannot open its connection; retrying");
                                tokio::time::sleep(RETRY_MAX).await;
                            }
                        }
                    };
                    run(own.clone(), rx, stop, stuck_tx).await;
                    own.close().await;
                });
            })
            .expect("the history writer's thread starts");
        (Self { tx, stuck }, WriterHandle(Some(thread)))
    }

    /// Queues one fix; waits only when the queue is full (the database has been behind for
    /// seconds). Queued is not stored: acknowledge after [`TrackWriter::committed`].
    pub async fn push(&self, point: TrackPoint) -> Result<(), WriterStopped> {
        self.send(Queued::Point(point)).await
    }

    /// Resolves once every fix queued before this call (by anyone) is committed: the group
    /// commit barrier an acknowledgement waits on. Waits as long as the database is down (the
    /// writer never drops a batch): bound it with a timeout at the edge.
    pub async fn committed(&self) -> Result<(), WriterStopped> {
        let (done, committed) = oneshot::channel();
        self.send(Queued::Barrier(done)).await?;
        committed.await.map_err(|_| WriterStopped)
    }

    async fn send(&self, item: Queued) -> Result<(), WriterStopped> {
        let item = match self.tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                metrics::counter!(crate::metrics::TRACK_BACKPRESSURE).increment(1);
                item
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriterStopped),
        };
        self.tx.send(item).await.map_err(|_| WriterStopped)
    }

    /// `Some(retry after)` when new fixes should be refused rather than queued: the batch being
    /// written has not committed within 2 s (the database is down or far behind). The edges
    /// answer with the hint (an `unavailable` error frame, 503 + `Retry-After`) so phones keep
    /// their buffers; fixes already queued are written when the database is back. A queue that
    /// is merely full while batches keep committing is not refused: ingest waits for room and
    /// sockets stop reading, so TCP slows the phones down (backpressure) without a resend.
    pub fn pressure(&self) -> Option<Duration> {
        (*self.stuck.borrow()).then_some(RETRY_MAX)
    }

    /// Resolves when [`TrackWriter::pressure`] turns on (at once if it is on); never if the
    /// writer has stopped.
    pub async fn under_pressure(&self) -> Duration {
        let mut stuck = self.stuck.clone();
        if stuck.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        RETRY_MAX
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Queued>,
    mut stop: Shutdown,
    stuck: watch::Sender<bool>,
) {
    let mut queued = Vec::with_capacity(BATCH_ROWS);
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut barriers = Vec::new();
    loop {
        // Batches form by themselves: while one INSERT runs, the next fixes queue up.
        let received = tokio::select! {
            n = rx.recv_many(&mut queued, BATCH_ROWS) => n,
            _ = stop.recv(), if !rx.is_closed() => { rx.close(); continue; }
        };
        if received == 0 {
            return;
        }
        for item in queued.drain(..) {
            match item {
                Queued::Point(p) => batch.push(p),
                Queued::Barrier(done) => barriers.push(done),
            }
        }
        // In key order the B-tree is walked once, left to right, instead of jumping between
        // drivers: fewer distinct pages touched per transaction, and each one touched once.
        batch.sort_unstable_by(|a, b| {
            (&a.fleet, &a.driver_id, a.fix.ts_ms).cmp(&(&b.fleet, &b.driver_id, b.fix.ts_ms))
        });
        if !batch.is_empty() {
            let write = write_until_committed(&store, &batch);
            tokio::pin!(write);
            tokio::select! {
                _ = &mut write => {}
                _ = tokio::time::sleep(REFUSE_AFTER_WRITING) => {
                    stuck.send_replace(true);
                    write.await;
                }
            }
            stuck.send_if_modified(|s| std::mem::replace(s, false));
        }
        batch.clear();
        for done in barriers.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes `batch`, retrying with backoff until it commits: a batch holds fixes whose acks wait
/// on it, so it is never dropped.
async fn write_until_committed(store: &Store, batch: &[TrackPoint]) {
    let mut backoff = super::retry_delays(RETRY_MIN, RETRY_MAX);
    let mut attempt = 0u64;
    loop {
        let started = std::time::Instant::now();
        match insert_batch(store, batch).await {
            Ok(()) => {
                metrics::counter!(crate::metrics::TRACK_ROWS).increment(batch.len() as u64);
                metrics::histogram!(crate::metrics::TRACK_BATCH_ROWS).record(batch.len() as f64);
                metrics::histogram!(crate::metrics::TRACK_BATCH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                if attempt > 0 {
                    tracing::info!(
                        attempts = attempt + 1,
                        rows = batch.len(),
                        "track batch written after the database came back"
                    );
                }
                return;
            }
            Err(e) => {
                attempt += 1;
                metrics::counter!(crate::metrics::TRACK_RETRIES).increment(1);
                // Loud once, then every 20th attempt: an outage of minutes is ~50 lines.
                if attempt == 1 || attempt % 20 == 0 {
                    tracing::warn!(error = %e, attempt, rows = batch.len(), "track batch failed; retrying until the database takes it (acks wait)");
                }
                tokio::time::sleep(backoff.next().unwrap_or(RETRY_MAX)).await;
            }
        }
    }
}

/// The batch in one transaction, as multi-row INSERTs of `STATEMENT_ROWS` sizes; a fix already
/// stored (same fleet, driver, ts) is skipped.
async fn insert_batch(store: &Store, rows: &[TrackPoint]) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    let mut rest = rows;
    while !rest.is_empty() {
        let n = STATEMENT_ROWS
            .into_iter()
            .find(|&n| n <= rest.len())
            .expect("the sizes end with 1");
        let (chunk, tail) = rest.split_at(n);
        let mut q = sqlx::query(insert_sql(store.backend(), n));
        for r in chunk {
            q = q
                .bind(&*r.fleet)
                .bind(&*r.driver_id)
                .bind(r.fix.ts_ms)
                .bind(r.fix.lat)
                .bind(r.fix.lon)
                .bind(nullable(r.fix.accuracy_m))
                .bind(nullable(r.fix.speed_mps))
                .bind(nullable(r.fix.heading_deg))
                .bind(r.received_ms)
                .bind(r.fix.motion.map_or("", Motion::as_str));
        }
        q.execute(&mut *tx).await?;
        rest = tail;
    }
    tx.commit().await?;
    Ok(())
}

/// An optional float as a parameter that is never SQL NULL: `None` is NaN, which the statement
/// turns back into NULL (`NULLIF(p, 'NaN')`; SQLite also stores a bound NaN as NULL).
///
/// Why: sqlx's `Any` driver binds a `None::<f64>` as a PostgreSQL FLOAT4 NULL (sqlx-core 0.8.6
/// and 0.9.0, `AnyArguments::convert_to` maps `Null(Double)` to `Option<f32>`). PostgreSQL
/// types a prepared statement's parameters from its first execution, and sqlx caches the
/// statement per connection, so once a batch with a missing accuracy prepared the INSERT, every
/// later batch on that connection with an accuracy failed with "incorrect binary data format in
/// bind parameter 6" (issue 16; `tests/it/store.rs`). A value that is always an f64 gives
/// the parameter one type, FLOAT8, whatever the first batch held.
fn nullable(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// `INSERT … VALUES (…),(…)` for `rows` rows (one of `STATEMENT_ROWS`), built once per backend.
///
/// PostgreSQL needs numbered parameters (`$1`…). SQLite gets anonymous `?` ones: sqlx looks up
/// every parameter's name before binding it, and SQLite finds a name by scanning its list of
/// named parameters, so `$N` names cost O(n²) per statement (20% of the hub's CPU at 17k
/// fixes/s in a `perf` profile), while anonymous ones have no list to scan.
fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    const COLS: usize = 10;
    let build = |numbered: bool| -> Vec<String> {
        STATEMENT_ROWS
            .iter()
            .map(|&n| {
                let values: Vec<String> = (0..n)
                    .map(|i| {
                        let params: Vec<String> = (1..=COLS)
                            .map(|c| {
                                let p = match numbered {
                                    true => format!("${}", i * COLS + c),
                                    false => "?".to_string(),
                                };
                                // accuracy_m, speed_mps, heading_deg: see `nullable`.
                                match c {
                                    6..=8 => format!("NULLIF({p}, 'NaN')"),
                                    // motion: '' for unknown (a text that is never NULL).
                                    10 => format!("NULLIF({p}, '')"),
                                    _ => p,
                                }
                            })
                            .collect();
                        format!("({})", params.join(","))
                    })
                    .collect();
                format!(
                    "INSERT INTO track_points (fleet, driver_id, ts, lat, lon, accuracy_m, speed_mps, heading_deg, received_at, motion) \
                     VALUES {} ON CONFLICT (fleet, driver_id, ts) DO NOTHING",
                    values.join(",")
                )
            })
            .collect()
    };
    let all = SQL.get_or_init(|| [build(false), build(true)]);
    let i = STATEMENT_ROWS
        .iter()
        .position(|&n| n == rows)
        .expect("a statement size");
    &all[usize::from(backend == Backend::Postgres)][i]
}

/// Drivers per statement of [`Store::recent_tracks`]: 2 + 200 bound parameters, far under
/// SQLite's 32,766 and PostgreSQL's 65,535, and 200 subqueries that each read one key range.
pub const RECENT_READ_SLICE: usize = 200;

impl Store {
    /// A driver's newest `limit` stored fixes, returned oldest first (hydration replays them).
    pub async fn recent_track(
        &self,
        fleet: &str,
        driver_id: &str,
        limit: i64,
    ) -> Result<Vec<Fix>, StoreError> {
        let mut tracks = self.recent_tracks(fleet, &[driver_id], limit).await?;
        Ok(tracks.remove(driver_id).unwrap_or_default())
    }

    /// The newest `limit` stored fixes of each of `driver_ids` (one fleet), oldest first per
    /// driver; drivers without fixes are absent. One statement per [`RECENT_READ_SLICE`]
    /// drivers: a `UNION ALL` of per-driver `ORDER BY ts DESC LIMIT` subqueries, so each walks
    /// its own end of the `(fleet, driver_id, ts)` key on SQLite and PostgreSQL alike.
    pub async fn recent_tracks(
        &self,
        fleet: &str,
        driver_ids: &[&str],
        limit: i64,
    ) -> Result<std::collections::HashMap<String, Vec<Fix>>, StoreError> {
        let mut tracks: std::collections::HashMap<String, Vec<Fix>> = Default::default();
        for ids in driver_ids.chunks(RECENT_READ_SLICE) {
            let sql = (0..ids.len())
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT driver_id, ts, lat, lon, accuracy_m, speed_mps, \
                         heading_deg, motion FROM track_points WHERE fleet = $1 AND driver_id = ${} \
                         ORDER BY ts DESC LIMIT $2) AS d{i}",
                        i + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut query = sqlx::query(&sql).bind(fleet).bind(limit);
            for id in ids {
                query = query.bind(*id);
            }
            for row in query.fetch_all(self.pool()).await? {
                let driver_id: String = row.try_get("driver_id")?;
                tracks
                    .entry(driver_id)
                    .or_default()
                    .push(fix_from_row(&row)?);
            }
        }
        for fixes in tracks.values_mut() {
            fixes.sort_by_key(|f| f.ts_ms);
        }
        Ok(tracks)
    }

    /// A driver's stored fixes with `from_ms <= ts <= to_ms`, oldest first, at most `limit`.
    pub async fn track(
        &self,
        fleet: &str,
        driver_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<Fix>, StoreError> {
        let rows = sqlx::query(
            "SELECT ts, lat, lon, accuracy_m, speed_mps, heading_deg, motion FROM track_points \
             WHERE fleet = $1 AND driver_id = $2 AND ts >= $3 AND ts <= $4 ORDER BY ts LIMIT $5",
        )
        .bind(fleet)
        .bind(driver_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(fix_from_row).collect()
    }

    /// Track retention: deletes the fixes stored (server time `received_at`, unix ms UTC)
    /// before `before_ms`, oldest first, a slice of [`PRUNE_SLICE_MS`] of storage time per
    /// statement so that no transaction holds the writer for long. Returns how many were deleted.
    pub async fn prune_track(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let oldest: Option<i64> = sqlx::query("SELECT MIN(received_at) FROM track_points")
                .fetch_one(self.pool())
                .await?
                .try_get(0)?;
            let Some(oldest) = oldest.filter(|&t| t < before_ms) else {
                return Ok(deleted);
            };
            let upto = oldest.saturating_add(PRUNE_SLICE_MS).min(before_ms);
            deleted += sqlx::query("DELETE FROM track_points WHERE received_at < $1")
                .bind(upto)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
    }
}

/// Storage time one pruning statement covers, ms: at 10,000 fixes/s, 100,000 rows.
pub const PRUNE_SLICE_MS: i64 = 10_000;

fn fix_from_row(r: &sqlx::any::AnyRow) -> Result<Fix, StoreError> {
    Ok(Fix {
        ts_ms: r.try_get("ts")?,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        accuracy_m: r.try_get("accuracy_m")?,
        speed_mps: r.try_get("speed_mps")?,
        heading_deg: r.try_get("heading_deg")?,
        motion: r
            .try_get::<Option<String>, _>("motion")?
            .as_deref()
            .and_then(Motion::parse),
    })
}
