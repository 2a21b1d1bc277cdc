//! Live ETAs of stops and the approaching/late state behind `stop.approaching` and `stop.late`.

use super::{events::append_event, Store, StoreError};
use crate::model::{now_ms, Event, EventKind, StopKey};

/// One stop's new ETA, unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct EtaRow {
    pub fleet: std::sync::Arc<str>,
    pub key: StopKey,
    pub eta_ms: i64,
    pub updated_at_ms: i64,
}

/// One fix of a driver before an automatic check-in: what the fleet's approach curve learns.
/// Degrees WGS84, unix ms UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApproachSample {
    pub stop_lat: f64,
    pub stop_lon: f64,
    pub arrived_at_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub ts_ms: i64,
}

/// ETA rows per UPDATE statement of [`Store::update_etas`]: 5 parameters each, 500 in all.
pub const ETA_WRITE_SLICE: usize = 100;

impl Store {
    /// The stored fixes of the fleet's last `checkins` automatic check-ins, each within
    /// `window_ms` before its arrival, at most `max_rows` in all (newest check-ins first): the
    /// history a node's ETA curve starts from.
    pub async fn approach_samples(
        &self,
        fleet: &str,
        checkins: i64,
        window_ms: i64,
        max_rows: i64,
    ) -> Result<Vec<ApproachSample>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT s.lat, s.lon, c.arrived_at, t.lat, t.lon, t.ts \
             FROM (SELECT fleet, trip_id, stop_id, driver_id, arrived_at, id FROM checkins \
                   WHERE fleet = $1 AND source = 'auto' ORDER BY id DESC LIMIT $2) c \
             JOIN stops s ON s.fleet = c.fleet AND s.trip_id = c.trip_id AND s.id = c.stop_id \
             JOIN track_points t ON t.fleet = c.fleet AND t.driver_id = c.driver_id \
                  AND t.ts >= c.arrived_at - $3 AND t.ts < c.arrived_at \
             ORDER BY c.id DESC, t.ts LIMIT $4",
        )
        .bind(fleet)
        .bind(checkins)
        .bind(window_ms)
        .bind(max_rows)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApproachSample {
                    stop_lat: r.try_get(0)?,
                    stop_lon: r.try_get(1)?,
                    arrived_at_ms: r.try_get(2)?,
                    lat: r.try_get(3)?,
                    lon: r.try_get(4)?,
                    ts_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Stores ETAs in one transaction (the node serving the driver writes them as it refreshes
    /// them, so `GET /v1/trips/{id}` on any node shows them). Only pending stops are touched.
    /// [`ETA_WRITE_SLICE`] rows per statement (`WITH v AS (VALUES …) UPDATE stops … FROM v`):
    /// a refresh of 10,000 drivers changes up to 100,000 ETAs, and one UPDATE per row held
    /// SQLite's write lock, and with it every history commit and ack, for most of a second.
    pub async fn update_etas(&self, rows: &[EtaRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for slice in rows.chunks(ETA_WRITE_SLICE) {
            let values = (0..slice.len())
                .map(|i| {
                    let p = 5 * i;
                    format!(
                        "(${}, ${}, ${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "WITH v (fleet, trip_id, stop_id, eta, updated_at) AS (VALUES {values}) \
                 UPDATE stops SET eta = v.eta, eta_updated_at = v.updated_at FROM v \
                 WHERE stops.fleet = v.fleet AND stops.trip_id = v.trip_id \
                 AND stops.id = v.stop_id AND stops.status = 'pending'"
            );
            let mut query = sqlx::query(&sql);
            for r in slice {
                query = query
                    .bind(&*r.fleet)
                    .bind(&*r.key.trip_id)
                    .bind(&*r.key.stop_id)
                    .bind(r.eta_ms)
                    .bind(r.updated_at_ms);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a `stop.approaching` or `stop.late` event with the stop state it changes, in one
    /// transaction, only if that state is not already so: `Ok(Some(id))` when recorded,
    /// `Ok(None)` when another node (or an earlier refresh) already did. This is what makes each
    /// crossing announced once across nodes and restarts. `Invalid` for any other kind.
    pub async fn record_stop_alert(&self, event: &Event) -> Result<Option<i64>, StoreError> {
        let (key, sql, at) = match &event.kind {
            EventKind::StopApproaching { key, .. } => (
                key,
                "UPDATE stops SET approaching_at = $1 \
                 WHERE fleet = $2 AND trip_id = $3 AND id = $4 AND status = 'pending' AND approaching_at IS NULL",
                Some(event.ts_ms),
            ),
            EventKind::StopLate { key, late: true, .. } => (
                key,
                "UPDATE stops SET late_since = $1 \
                 WHERE fleet = $2 AND trip_id = $3 AND id = $4 AND status = 'pending' AND late_since IS NULL",
                Some(event.ts_ms),
            ),
            EventKind::StopLate {
                key, late: false, ..
            } => (
                key,
                "UPDATE stops SET late_since = $1 \
                 WHERE fleet = $2 AND trip_id = $3 AND id = $4 AND status = 'pending' AND late_since IS NOT NULL",
                None,
            ),
            _ => {
                return Err(StoreError::Invalid(
                    "record_stop_alert takes stop.approaching or stop.late",
                ))
            }
        };
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(sql)
            .bind(at)
            .bind(&*event.fleet)
            .bind(&*key.trip_id)
            .bind(&*key.stop_id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let id = append_event(&mut tx, self.backend, event, now_ms()).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Re-arms `stop.approaching` for a stop the driver went back away from (past the
    /// hysteresis), so the next approach is announced again. No event.
    pub async fn rearm_approach(&self, fleet: &str, key: &StopKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stops SET approaching_at = NULL WHERE fleet = $1 AND trip_id = $2 AND id = $3",
        )
        .bind(fleet)
        .bind(&*key.trip_id)
        .bind(&*key.stop_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
