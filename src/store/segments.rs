//! Stop segments (migration 0010): written with the `driver.stopped`/`driver.moving` events in
//! their transaction, read by reports.

use sqlx::Row;

use super::{Store, StoreError};
use crate::model::{Event, EventKind, StopSegment};

/// Writes what `event` means for the stop segments inside `tx`: a `driver.stopped` opens one
/// (a second copy of the same stop is ignored; one without a position writes nothing), a
/// `driver.moving` closes the stop it names, a `driver.offline` closes any stop still open.
/// Other events write nothing.
pub(crate) async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &Event,
) -> Result<(), StoreError> {
    match &event.kind {
        EventKind::DriverStopped {
            stopped_since_ms,
            unplanned,
        } => {
            // The hub always gives one; an event without would have no place to stand for.
            let Some((lat, lon)) = event.position else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO stop_segments (fleet, driver_id, started_at, confirmed_at, lat, lon, unplanned) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (fleet, driver_id, started_at) DO NOTHING",
            )
            .bind(&*event.fleet)
            .bind(&*event.driver_id)
            .bind(*stopped_since_ms)
            .bind(event.ts_ms)
            .bind(lat)
            .bind(lon)
            .bind(i64::from(*unplanned))
            .execute(&mut **tx)
            .await?;
        }
        EventKind::DriverMoving { stopped_since_ms } => {
            sqlx::query(
                "UPDATE stop_segments SET ended_at = $4 \
                 WHERE fleet = $1 AND driver_id = $2 AND started_at = $3 AND ended_at IS NULL",
            )
            .bind(&*event.fleet)
            .bind(&*event.driver_id)
            .bind(*stopped_since_ms)
            .bind(event.ts_ms)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::DriverOffline => {
            // A phone switched off while parked sends no `driver.moving`: its stop ends when the
            // hub took it offline, not at whatever time a report is read.
            sqlx::query(
                "UPDATE stop_segments SET ended_at = CASE WHEN started_at > $3 THEN started_at ELSE $3 END \
                 WHERE fleet = $1 AND driver_id = $2 AND ended_at IS NULL",
            )
            .bind(&*event.fleet)
            .bind(&*event.driver_id)
            .bind(event.ts_ms)
            .execute(&mut **tx)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

impl Store {
    /// One driver's stop segments that overlap `[from_ms, to_ms]` (device time, unix ms UTC),
    /// oldest first, at most `limit`. A stop still in progress has `to_ms: None`.
    pub async fn stop_segments(
        &self,
        fleet: &str,
        driver_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<StopSegment>, StoreError> {
        let rows = sqlx::query(
            "SELECT started_at, ended_at, lat, lon, unplanned FROM stop_segments \
             WHERE fleet = $1 AND driver_id = $2 AND started_at <= $4 \
             AND (ended_at IS NULL OR ended_at >= $3) ORDER BY started_at LIMIT $5",
        )
        .bind(fleet)
        .bind(driver_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StopSegment {
                    from_ms: r.try_get("started_at")?,
                    to_ms: r.try_get("ended_at")?,
                    lat: r.try_get("lat")?,
                    lon: r.try_get("lon")?,
                    unplanned: r.try_get::<i64, _>("unplanned")? != 0,
                })
            })
            .collect()
    }

    /// The fleet's stops still in progress: driver id → when the stop began (device time, unix
    /// ms UTC). One row per stopped driver (a later `driver.stopped` without its `driver.moving`
    /// cannot happen: a driver stops again only after it moved).
    pub async fn open_stop_segments(
        &self,
        fleet: &str,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT driver_id, MAX(started_at) AS since FROM stop_segments \
             WHERE fleet = $1 AND ended_at IS NULL GROUP BY driver_id",
        )
        .bind(fleet)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("driver_id")?, r.try_get("since")?)))
            .collect()
    }

    /// Retention: deletes the stops that ended (device time) before `before_ms`, as the track
    /// they lie on goes. Returns how many.
    pub async fn prune_stop_segments(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM stop_segments WHERE ended_at < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
