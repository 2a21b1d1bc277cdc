//! Track history: every accepted fix, written in batches by a background task.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Backend, Store, StoreError};
use crate::geo::Fix;

/// Fixes waiting for the writer (≈ 0.65 s at 100k fixes/s, ≈ 8 MB). When it is full, ingest waits
/// for room (backpressure: acknowledgements slow down, so an acked fix is never dropped from
/// history), counted in `trackhub_track_backpressure_total`. It also bounds a drain: at most this
/// many rows are left to write after the sockets close.
pub const TRACK_QUEUE: usize = 65_536;
/// Most rows written in one transaction. Large, because with thousands of drivers each row lands
/// on its own driver's B-tree page: the more rows per commit, the more of them share a page
/// write (4,096 → 16,384 took SQLite from ~25k to ~40k rows/s at 10k drivers, BENCHMARKS.md).
pub const BATCH_ROWS: usize = 16_384;
/// Rows per INSERT statement, largest first: a batch is cut into statements of these sizes only,
/// so each connection prepares at most four statements and reuses them (a statement per batch
/// length would be prepared again for nearly every batch). 9 parameters a row: 1,152 at most.
const STATEMENT_ROWS: [usize; 4] = [128, 32, 8, 1];

/// One accepted fix of one driver.
#[derive(Debug, Clone)]
pub struct TrackPoint {
    pub fleet: Arc<str>,
    pub driver_id: Arc<str>,
    pub fix: Fix,
    /// Server receive time, unix ms UTC.
    pub received_ms: i64,
}

/// Sending half of the history writer. Cloned into the hub; when every clone is dropped the
/// writer drains what is queued, writes it and stops.
#[derive(Clone, Debug)]
pub struct TrackWriter {
    tx: mpsc::Sender<TrackPoint>,
}

impl TrackWriter {
    /// Starts the writer task on `store`. When `stop` turns true the writer refuses new fixes,
    /// writes everything already queued and ends: join the handle to know history is flushed.
    pub fn spawn(store: Store, stop: watch::Receiver<bool>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(TRACK_QUEUE);
        let task = tokio::spawn(run(store, rx, stop));
        (Self { tx }, task)
    }

    /// Queues one fix; waits only when the queue is full (the database has been behind for
    /// seconds), so the fix is acknowledged after it is queued for history.
    pub async fn push(&self, point: TrackPoint) {
        let point = match self.tx.try_send(point) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(point)) => {
                metrics::counter!(crate::metrics::TRACK_BACKPRESSURE).increment(1);
                point
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("track writer stopped; a fix was not stored");
                return;
            }
        };
        if self.tx.send(point).await.is_err() {
            tracing::error!("track writer stopped; a fix was not stored");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<TrackPoint>, mut stop: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    loop {
        // Batches form by themselves: while one INSERT runs, the next fixes queue up.
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH_ROWS) => n,
            _ = crate::app::draining(&mut stop), if !rx.is_closed() => { rx.close(); continue; }
        };
        if received == 0 {
            return;
        }
        // In key order the B-tree is walked once, left to right, instead of jumping between
        // drivers: fewer distinct pages touched per transaction, and each one touched once.
        batch.sort_unstable_by(|a, b| {
            (&a.fleet, &a.driver_id, a.fix.ts_ms).cmp(&(&b.fleet, &b.driver_id, b.fix.ts_ms))
        });
        let mut attempt = 0u32;
        loop {
            let started = std::time::Instant::now();
            match insert_batch(&store, &batch).await {
                Ok(()) => {
                    metrics::counter!(crate::metrics::TRACK_ROWS).increment(batch.len() as u64);
                    metrics::histogram!(crate::metrics::TRACK_BATCH_ROWS)
                        .record(batch.len() as f64);
                    metrics::histogram!(crate::metrics::TRACK_BATCH_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    break;
                }
                Err(e) if attempt < 8 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, rows = batch.len(), "track batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.len(), "track batch dropped after retries");
                    break;
                }
            }
        }
        batch.clear();
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
                .bind(r.fix.accuracy_m)
                .bind(r.fix.speed_mps)
                .bind(r.fix.heading_deg)
                .bind(r.received_ms);
        }
        q.execute(&mut *tx).await?;
        rest = tail;
    }
    tx.commit().await?;
    Ok(())
}

/// `INSERT … VALUES (…),(…)` for `rows` rows (one of `STATEMENT_ROWS`), built once per backend.
///
/// PostgreSQL needs numbered parameters (`$1`…). SQLite gets anonymous `?` ones: sqlx looks up
/// every parameter's name before binding it, and SQLite finds a name by scanning its list of
/// named parameters, so `$N` names cost O(n²) per statement (20% of the hub's CPU at 17k
/// fixes/s in a `perf` profile), while anonymous ones have no list to scan.
fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    const COLS: usize = 9;
    let build = |numbered: bool| -> Vec<String> {
        STATEMENT_ROWS
            .iter()
            .map(|&n| {
                let values: Vec<String> = (0..n)
                    .map(|i| {
                        let params: Vec<String> = (1..=COLS)
                            .map(|c| match numbered {
                                true => format!("${}", i * COLS + c),
                                false => "?".to_string(),
                            })
                            .collect();
                        format!("({})", params.join(","))
                    })
                    .collect();
                format!(
                    "INSERT INTO track_points (fleet, driver_id, ts, lat, lon, accuracy_m, speed_mps, heading_deg, received_at) \
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

impl Store {
    /// A driver's newest `limit` stored fixes, returned oldest first (hydration replays them).
    pub async fn recent_track(
        &self,
        fleet: &str,
        driver_id: &str,
        limit: i64,
    ) -> Result<Vec<Fix>, StoreError> {
        let rows = sqlx::query(
            "SELECT ts, lat, lon, accuracy_m, speed_mps, heading_deg FROM track_points \
             WHERE fleet = $1 AND driver_id = $2 ORDER BY ts DESC LIMIT $3",
        )
        .bind(fleet)
        .bind(driver_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut fixes = rows
            .iter()
            .map(fix_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        fixes.reverse();
        Ok(fixes)
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
            "SELECT ts, lat, lon, accuracy_m, speed_mps, heading_deg FROM track_points \
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
}

fn fix_from_row(r: &sqlx::any::AnyRow) -> Result<Fix, StoreError> {
    Ok(Fix {
        ts_ms: r.try_get("ts")?,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        accuracy_m: r.try_get("accuracy_m")?,
        speed_mps: r.try_get("speed_mps")?,
        heading_deg: r.try_get("heading_deg")?,
    })
}
