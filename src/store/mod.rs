//! Persistence (sqlx): trips, stops, check-ins, track history and durable events.
//!
//! One code path for both back ends through sqlx's `Any` driver: SQLite (embedded mode, a file in
//! the data dir) or PostgreSQL (`DATABASE_URL=postgres://…`). Every time column is BIGINT unix ms
//! UTC and every coordinate DOUBLE PRECISION degrees, which both engines store natively.

pub mod devices;
pub mod etas;
pub mod event_record;
pub mod events;
pub mod evidence;
pub mod geofences;
pub mod links;
pub mod segments;
pub mod settings;
pub mod track;
pub mod webhooks;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::model::{
    now_ms, CheckinEvidence, CheckinSource, Event, EventKind, StopKey, StopStatus, TripStatus,
};
use events::append_event;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row already exists (e.g. a trip id in use).
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The caller passed something the store cannot record.
    #[error("invalid store call: {0}")]
    Invalid(&'static str),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Delays between attempts of a write that must not be given up on (a batch whose acks or
/// announcements wait on it): exponential from `min`, doubling up to `max`, with jitter
/// ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015), without end.
pub fn retry_delays(
    min: std::time::Duration,
    max: std::time::Duration,
) -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Which engine the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A stop to create, already validated.
#[derive(Debug, Clone)]
pub struct NewStop {
    pub id: String,
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    /// Time window, unix ms UTC (either end may be open).
    pub window_start_ms: Option<i64>,
    pub window_end_ms: Option<i64>,
    /// Time the driver spends at the stop, s.
    pub service_s: f64,
}

/// A trip to create, already validated.
#[derive(Debug, Clone)]
pub struct NewTrip {
    pub id: String,
    pub fleet: String,
    pub driver_id: String,
    pub stops: Vec<NewStop>,
}

/// A stored stop. Times unix ms UTC (device time of the fixes that decided them).
#[derive(Debug, Clone, PartialEq)]
pub struct StopRecord {
    pub id: String,
    pub position: i64,
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    pub status: StopStatus,
    pub arrived_at: Option<i64>,
    pub checked_in_at: Option<i64>,
    pub departed_at: Option<i64>,
    /// Time window, unix ms UTC.
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    /// Service time at the stop, s.
    pub service_s: f64,
    /// The latest ETA the node serving the driver stored, and when, unix ms UTC.
    pub eta: Option<i64>,
    pub eta_updated_at: Option<i64>,
    /// `stop.approaching` announced and not re-armed since (see `Store::record_stop_alert`).
    pub approaching: bool,
    /// Announced late (`stop.late` with `late: true`) and not recovered since.
    pub late: bool,
}

/// A stored trip with its stops in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TripRecord {
    pub id: String,
    pub fleet: String,
    pub driver_id: String,
    pub status: TripStatus,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub stops: Vec<StopRecord>,
}

/// Trip ids per statement when reading their stops: under SQLite's 999 bound parameters.
const STOPS_READ_SLICE: usize = 500;

/// A stored check-in.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinRecord {
    pub id: i64,
    pub fleet: String,
    pub trip_id: String,
    pub stop_id: String,
    pub driver_id: String,
    pub arrived_at: i64,
    pub checked_in_at: i64,
    pub departed_at: Option<i64>,
    pub source: CheckinSource,
    /// Why it happened; `None` for check-ins stored before migration 0011.
    pub evidence: Option<CheckinEvidence>,
}

/// What recording a check-in did.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinOutcome {
    /// `None` when the stop was already checked in (nothing written).
    pub checkin: Option<CheckinRecord>,
    /// Id of the `stop.checked_in` event in the log, when written.
    pub event_id: Option<i64>,
    /// The `trip.completed` event (already stored) when this check-in completed its trip.
    pub trip_completed: Option<Event>,
}

/// Filter for listing check-ins.
#[derive(Debug, Clone, Default)]
pub struct CheckinFilter {
    pub trip_id: Option<String>,
    pub driver_id: Option<String>,
    pub limit: i64,
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// What it was opened with, so a task on another runtime can open its own pool.
    url: std::sync::Arc<str>,
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and applies migrations.
    /// Pools 4 connections on SQLite (one writer at a time anyway), 16 on PostgreSQL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool_size = if url.starts_with("postgres") { 16 } else { 4 };
        Self::connect_with(url, pool_size).await
    }

    /// [`Store::connect`] with at most `pool_size` connections (≥ 1): tests use 1 to make
    /// every statement run on one connection, where prepared statements are cached.
    pub async fn connect_with(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        Self::open(url, pool_size, true).await
    }

    /// Another pool on the same database, without running migrations again: for a task on a
    /// runtime of its own (a PostgreSQL connection belongs to the runtime that opened it).
    pub async fn open_again(&self, pool_size: u32) -> Result<Self, StoreError> {
        Self::open(&self.url, pool_size, false).await
    }

    async fn open(url: &str, pool_size: u32, migrate: bool) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let pool = AnyPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; NORMAL sync is durable
                        // across application crashes, the usual trade-off for WAL.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        // A history transaction of 16k rows from thousands of drivers dirties
                        // thousands of pages; SQLite's default 2 MB cache spills them to the WAL
                        // mid-transaction (`pagerStress` in a perf profile). 64 MiB (a cap, not
                        // an allocation) holds a whole batch.
                        sqlx::query("PRAGMA cache_size = -65536")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        match (backend, migrate) {
            (_, false) => {}
            (Backend::Sqlite, true) => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            (Backend::Postgres, true) => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            url: url.into(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Round-trips a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection (after the writers have flushed).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates a trip and its stops in one transaction. `Conflict` when the id is taken.
    pub async fn insert_trip(&self, trip: &NewTrip, now_ms: i64) -> Result<TripRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO trips (id, fleet, driver_id, status, created_at) VALUES ($1, $2, $3, 'active', $4) \
             ON CONFLICT (fleet, id) DO NOTHING",
        )
        .bind(&trip.id)
        .bind(&trip.fleet)
        .bind(&trip.driver_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("trip `{}`", trip.id)));
        }
        for (i, s) in trip.stops.iter().enumerate() {
            sqlx::query(
                "INSERT INTO stops (fleet, trip_id, id, position, name, lat, lon, radius_m, status, \
                                    window_start, window_end, service_s) \
                 VALUES ($8, $1, $2, $3, $4, $5, $6, $7, 'pending', $9, $10, $11)",
            )
            .bind(&trip.id)
            .bind(&s.id)
            .bind(i as i64)
            .bind(s.name.clone())
            .bind(s.lat)
            .bind(s.lon)
            .bind(s.radius_m)
            .bind(&trip.fleet)
            .bind(s.window_start_ms)
            .bind(s.window_end_ms)
            .bind(s.service_s)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.trip(&trip.fleet, &trip.id)
            .await?
            .ok_or_else(|| StoreError::Db(sqlx::Error::RowNotFound))
    }

    /// One trip of a fleet with its stops, or `None`.
    pub async fn trip(&self, fleet: &str, id: &str) -> Result<Option<TripRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, fleet, driver_id, status, created_at, completed_at FROM trips WHERE fleet = $1 AND id = $2",
        )
        .bind(fleet)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut trip = trip_from_row(&row)?;
        trip.stops = self.stops_of(&trip.fleet, &trip.id).await?;
        Ok(Some(trip))
    }

    /// The active trips of one driver, oldest first, with stops (loaded when the driver's first
    /// fix reaches a node).
    pub async fn active_trips_of(
        &self,
        fleet: &str,
        driver_id: &str,
    ) -> Result<Vec<TripRecord>, StoreError> {
        self.active_trips_of_drivers(fleet, &[driver_id]).await
    }

    async fn stops_of(&self, fleet: &str, trip_id: &str) -> Result<Vec<StopRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, position, name, lat, lon, radius_m, status, arrived_at, checked_in_at, departed_at, \
                    window_start, window_end, service_s, eta, eta_updated_at, approaching_at, late_since \
             FROM stops WHERE fleet = $1 AND trip_id = $2 ORDER BY position",
        )
        .bind(fleet)
        .bind(trip_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stop_from_row).collect()
    }

    /// The newest `limit` trips of a fleet with `status` (`active` | `completed`; `None`: any),
    /// newest first, with their stops: two queries, whatever the count.
    pub async fn trips(
        &self,
        fleet: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TripRecord>, StoreError> {
        // `$2 IS NULL` needs a typed NULL on PostgreSQL; an empty string never matches a status.
        let status = status.unwrap_or("");
        let rows = sqlx::query(
            "SELECT id, fleet, driver_id, status, created_at, completed_at FROM trips \
             WHERE fleet = $1 AND ($2 = '' OR status = $2) ORDER BY created_at DESC, id LIMIT $3",
        )
        .bind(fleet)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut trips = rows
            .iter()
            .map(trip_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_stops(fleet, &mut trips).await?;
        Ok(trips)
    }

    /// The active trips of many drivers of one fleet with their stops, each driver's oldest
    /// first: what hydration needs for a batch of drivers (`hub::loader`). Two statements per
    /// 500 drivers (`STOPS_READ_SLICE`), where one driver at a time took 1 + one per trip.
    pub async fn active_trips_of_drivers(
        &self,
        fleet: &str,
        driver_ids: &[&str],
    ) -> Result<Vec<TripRecord>, StoreError> {
        let mut trips = Vec::new();
        for ids in driver_ids.chunks(STOPS_READ_SLICE) {
            let sql = format!(
                "SELECT id, fleet, driver_id, status, created_at, completed_at FROM trips \
                 WHERE status = 'active' AND fleet = $1 AND driver_id IN ({}) ORDER BY created_at, id",
                events::placeholders(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(fleet);
            for id in ids {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                trips.push(trip_from_row(&row)?);
            }
        }
        self.attach_stops(fleet, &mut trips).await?;
        Ok(trips)
    }

    /// Fills each trip's `stops` (by position), reading the stops of exactly these trips.
    async fn attach_stops(&self, fleet: &str, trips: &mut [TripRecord]) -> Result<(), StoreError> {
        // The stops of exactly these trips, by their key, a slice of ids per statement. A join
        // on the trips subquery instead took 24-30 s for 1,000 of 5,000 trips (SQLite 3.46 as
        // bundled scanned `stops` per trip; measured with `loadtest/map-frames.mjs`), against
        // a few ms this way.
        let mut stops = Vec::new();
        for ids in trips.chunks(STOPS_READ_SLICE) {
            let sql = format!(
                "SELECT trip_id, id, position, name, lat, lon, radius_m, status, arrived_at, \
                        checked_in_at, departed_at, window_start, window_end, service_s, eta, \
                        eta_updated_at, approaching_at, late_since \
                 FROM stops WHERE fleet = $1 AND trip_id IN ({})",
                events::placeholders(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(fleet);
            for trip in ids {
                query = query.bind(trip.id.clone());
            }
            stops.extend(query.fetch_all(&self.pool).await?);
        }
        let mut by_trip: std::collections::HashMap<String, Vec<StopRecord>> = Default::default();
        for row in &stops {
            let trip_id: String = row.try_get("trip_id")?;
            by_trip
                .entry(trip_id)
                .or_default()
                .push(stop_from_row(row)?);
        }
        for trip in trips.iter_mut() {
            trip.stops = by_trip.remove(&trip.id).unwrap_or_default();
            trip.stops.sort_by_key(|s| s.position);
        }
        Ok(())
    }

    /// Records a `stop.checked_in` event: the check-in, its stop's new status and the event in one
    /// transaction; completes the trip (and records `trip.completed`) when no stop is left
    /// pending. Exactly once per (trip, stop): a second call writes nothing and returns
    /// `checkin: None`. `Invalid` for any other kind of event.
    pub async fn record_checkin(
        &self,
        event: &Event,
        evidence: Option<CheckinEvidence>,
    ) -> Result<CheckinOutcome, StoreError> {
        let EventKind::StopCheckedIn {
            key,
            arrived_at_ms,
            checked_in_at_ms,
            source,
        } = &event.kind
        else {
            return Err(StoreError::Invalid(
                "record_checkin takes a stop.checked_in event",
            ));
        };
        let (fleet, driver_id, arrived_at_ms, checked_in_at_ms, source) = (
            &*event.fleet,
            &*event.driver_id,
            *arrived_at_ms,
            *checked_in_at_ms,
            *source,
        );
        let mut tx = self.pool.begin().await?;
        // Check-ins of one trip take its row lock first, so that of two concurrent check-ins of
        // its last two stops the second counts pending stops after the first committed: without
        // it each saw the other pending and `trip.completed` was never written (issue 16).
        // SQLite needs none: its single writer lock, taken by the INSERT below, serializes them.
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM trips WHERE fleet = $1 AND id = $2 FOR UPDATE")
                .bind(fleet)
                .bind(&*key.trip_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "INSERT INTO checkins (fleet, trip_id, stop_id, driver_id, arrived_at, checked_in_at, source, evidence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (fleet, trip_id, stop_id) DO NOTHING RETURNING id",
        )
        .bind(fleet)
        .bind(&*key.trip_id)
        .bind(&*key.stop_id)
        .bind(driver_id)
        .bind(arrived_at_ms)
        .bind(checked_in_at_ms)
        .bind(source.as_str())
        .bind(evidence.as_ref().map(|e| evidence::to_json(e).to_string()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(CheckinOutcome {
                checkin: None,
                event_id: None,
                trip_completed: None,
            });
        };
        let id: i64 = row.try_get(0)?;
        sqlx::query(
            "UPDATE stops SET status = 'arrived', arrived_at = $3, checked_in_at = $4 \
             WHERE fleet = $5 AND trip_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(&*key.trip_id)
        .bind(&*key.stop_id)
        .bind(arrived_at_ms)
        .bind(checked_in_at_ms)
        .bind(fleet)
        .execute(&mut *tx)
        .await?;
        let pending: i64 = sqlx::query(
            "SELECT COUNT(*) FROM stops WHERE fleet = $1 AND trip_id = $2 AND status = 'pending'",
        )
        .bind(fleet)
        .bind(&*key.trip_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let event_id = append_event(&mut tx, self.backend, event, now_ms()).await?;
        let mut trip_completed = None;
        if pending == 0 {
            let done = sqlx::query(
                "UPDATE trips SET status = 'completed', completed_at = $2 \
                 WHERE fleet = $3 AND id = $1 AND status = 'active'",
            )
            .bind(&*key.trip_id)
            .bind(checked_in_at_ms)
            .bind(fleet)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let mut completed = Event {
                    kind: EventKind::TripCompleted {
                        trip_id: key.trip_id.clone(),
                    },
                    ..event.clone()
                };
                completed.id =
                    Some(append_event(&mut tx, self.backend, &completed, now_ms()).await?);
                trip_completed = Some(completed);
            }
        }
        tx.commit().await?;
        Ok(CheckinOutcome {
            checkin: Some(CheckinRecord {
                id,
                fleet: fleet.to_string(),
                trip_id: key.trip_id.to_string(),
                stop_id: key.stop_id.to_string(),
                driver_id: driver_id.to_string(),
                arrived_at: arrived_at_ms,
                checked_in_at: checked_in_at_ms,
                departed_at: None,
                source,
                evidence,
            }),
            event_id: Some(event_id),
            trip_completed,
        })
    }

    /// Records a departure (once) with its event; returns the event's id, `None` when there
    /// was nothing to depart.
    pub async fn record_departure(
        &self,
        key: &StopKey,
        departed_at_ms: i64,
        event: &Event,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE stops SET status = 'departed', departed_at = $3 \
             WHERE fleet = $4 AND trip_id = $1 AND id = $2 AND status = 'arrived'",
        )
        .bind(&*key.trip_id)
        .bind(&*key.stop_id)
        .bind(departed_at_ms)
        .bind(&*event.fleet)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE checkins SET departed_at = $3 WHERE fleet = $4 AND trip_id = $1 AND stop_id = $2",
        )
        .bind(&*key.trip_id)
        .bind(&*key.stop_id)
        .bind(departed_at_ms)
        .bind(&*event.fleet)
        .execute(&mut *tx)
            .await?;
        let id = append_event(&mut tx, self.backend, event, now_ms()).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Appends events on their own (presence events), in order, in one transaction, with the
    /// stop segments the automatic-stop events open and close; returns their ids.
    pub async fn record_events(&self, events: &[Event]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            ids.push(append_event(&mut tx, self.backend, event, now_ms()).await?);
            segments::apply(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Check-ins of a fleet, newest first, filtered by trip and/or driver.
    pub async fn checkins(
        &self,
        fleet: &str,
        filter: &CheckinFilter,
    ) -> Result<Vec<CheckinRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, fleet, trip_id, stop_id, driver_id, arrived_at, checked_in_at, departed_at, source, evidence \
             FROM checkins WHERE fleet = $1 AND ($2 IS NULL OR trip_id = $2) AND ($3 IS NULL OR driver_id = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(fleet)
        .bind(filter.trip_id.clone())
        .bind(filter.driver_id.clone())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CheckinRecord {
                    id: r.try_get("id")?,
                    fleet: r.try_get("fleet")?,
                    trip_id: r.try_get("trip_id")?,
                    stop_id: r.try_get("stop_id")?,
                    driver_id: r.try_get("driver_id")?,
                    arrived_at: r.try_get("arrived_at")?,
                    checked_in_at: r.try_get("checked_in_at")?,
                    departed_at: r.try_get("departed_at")?,
                    source: CheckinSource::parse(&r.try_get::<String, _>("source")?)
                        .ok_or(StoreError::Invalid("unknown check-in source"))?,
                    evidence: r
                        .try_get::<Option<String>, _>("evidence")?
                        .as_deref()
                        .and_then(evidence::from_json),
                })
            })
            .collect()
    }
}

fn stop_from_row(r: &AnyRow) -> Result<StopRecord, StoreError> {
    Ok(StopRecord {
        id: r.try_get("id")?,
        position: r.try_get("position")?,
        name: r.try_get("name")?,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        radius_m: r.try_get("radius_m")?,
        status: StopStatus::parse(&r.try_get::<String, _>("status")?)
            .ok_or(StoreError::Invalid("unknown stop status"))?,
        arrived_at: r.try_get("arrived_at")?,
        checked_in_at: r.try_get("checked_in_at")?,
        departed_at: r.try_get("departed_at")?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        service_s: r.try_get("service_s")?,
        eta: r.try_get("eta")?,
        eta_updated_at: r.try_get("eta_updated_at")?,
        approaching: r.try_get::<Option<i64>, _>("approaching_at")?.is_some(),
        late: r.try_get::<Option<i64>, _>("late_since")?.is_some(),
    })
}

fn trip_from_row(row: &AnyRow) -> Result<TripRecord, StoreError> {
    Ok(TripRecord {
        id: row.try_get("id")?,
        fleet: row.try_get("fleet")?,
        driver_id: row.try_get("driver_id")?,
        status: TripStatus::parse(&row.try_get::<String, _>("status")?)
            .ok_or(StoreError::Invalid("unknown trip status"))?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        stops: Vec::new(),
    })
}
