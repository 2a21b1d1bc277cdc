//! The durable event log (outbox): appended in the transaction of the state change it records,
//! read back in id order by `GET /v1/events`, the service streams and, through the webhook
//! deliveries written beside each event, by webhooks.
//!
//! Ids come from the database (IDENTITY / AUTOINCREMENT), so they are global across nodes. A
//! reader that has seen id N must never later find a smaller id appear, or a consumer resuming
//! "after N" would miss it; so appends are serialized until commit: on PostgreSQL by a
//! transaction-scoped advisory lock taken just before the insert, on SQLite by its single writer.
//! Commit order is then id order. Event rates (check-ins, presence) are far below what one lock
//! serializes; fixes never take it.

use sqlx::Row;

use super::{event_record, Backend, Store, StoreError};
use crate::model::Event;

/// Key of the PostgreSQL advisory lock that orders event appends ("trackhub" in ASCII, folded).
const APPEND_LOCK: i64 = 0x7472_6163_6b68_7562;
/// Most events one read returns.
pub const MAX_EVENTS_PER_READ: i64 = 1_000;

/// Which events to read: those of `fleet` after `since`, optionally only some types or drivers.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Return events with `id > since`.
    pub since: i64,
    /// At most this many (capped at [`MAX_EVENTS_PER_READ`]).
    pub limit: i64,
    /// Only these types (`stop.checked_in`, …); `None`: every type.
    pub types: Option<Vec<String>>,
    /// Only these drivers; `None`: every driver.
    pub drivers: Option<Vec<String>>,
    /// The newest `limit` matching events, newest first, instead of the oldest in id order
    /// (what an events feed shows first); the page's `next_since` is then the log's head.
    pub newest_first: bool,
}

/// `a,b` as `,a,b,`: membership of `x` is then finding `,x,` in it (sqlx's `Any` driver cannot
/// bind arrays). Finding, not `LIKE`, so that `_` and `%` in ids are not wildcards.
fn comma_set(items: &Option<Vec<String>>) -> Option<String> {
    items.as_ref().map(|v| format!(",{},", v.join(",")))
}

/// The engine's "position of needle in haystack" function, `(haystack, needle)`, 0 when absent.
pub(crate) fn find_fn(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "instr",
        Backend::Postgres => "strpos",
    }
}

/// Appends `event` to the log inside `tx` and queues a delivery for every webhook of its fleet
/// that subscribed to its type. Returns the event's id.
pub(crate) async fn append_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    event: &Event,
    now_ms: i64,
) -> Result<i64, StoreError> {
    if backend == Backend::Postgres {
        // Held until commit or rollback: see the module docs.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    // The log keeps the id in its own column; the delivery body carries it.
    let payload = event_record::encode(event, None)?;
    let id: i64 = sqlx::query(
        "INSERT INTO events (fleet, type, ts, driver_id, payload, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&*event.fleet)
    .bind(event.kind.name())
    .bind(event.ts_ms)
    .bind(&*event.driver_id)
    .bind(payload)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    let body = event_record::encode(event, Some(id))?;
    let find = find_fn(backend);
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (webhook_id, fleet, event_id, event_type, body, next_attempt_at, window_start) \
         SELECT id, fleet, $1, $2, $3, $4, $4 FROM webhooks \
         WHERE fleet = $5 AND (events = '*' OR {find}(events, ',' || $2 || ',') > 0)"
    ))
    .bind(id)
    .bind(event.kind.name())
    .bind(body)
    .bind(now_ms)
    .bind(&*event.fleet)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// One read of the log: the matching events, and where the next read starts.
#[derive(Debug, Default)]
pub struct EventPage {
    /// Matching events, in id order, each with its `id`.
    pub events: Vec<Event>,
    /// The cursor for the next read: the last event returned when the page is full, else the
    /// newest id of the fleet's log when the read began, so a filtered reader moves past the rows
    /// it skipped instead of scanning them again at every read (issue 16).
    pub next_since: i64,
}

/// Up to this many drivers are matched with `IN (…)`, which the `events_by_fleet_driver` index
/// serves; longer lists fall back to one comma-set parameter scanned per row.
const MAX_DRIVERS_IN_LIST: usize = 256;

/// `$first, $first+1, …` for `n` parameters.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Events of `fleet` matching `q`, in id order, and the cursor to read on from
    /// ([`EventPage::next_since`]).
    ///
    /// The fleet's newest id is read first and bounds the query: appends commit in id order
    /// (module docs), so every event up to it is visible, and none after it is returned.
    pub async fn events(&self, fleet: &str, q: &EventQuery) -> Result<EventPage, StoreError> {
        let head: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events WHERE fleet = $1")
            .bind(fleet)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if head <= q.since {
            return Ok(EventPage {
                events: Vec::new(),
                next_since: q.since,
            });
        }
        let limit = q.limit.clamp(1, MAX_EVENTS_PER_READ);
        let mut sql = String::from(
            "SELECT id, payload FROM events WHERE fleet = $1 AND id > $2 AND id <= $3 ",
        );
        let mut next = 4;
        if let Some(types) = &q.types {
            sql += &format!("AND type IN ({}) ", placeholders(next, types.len().max(1)));
            next += types.len().max(1);
        }
        let drivers_in_list = q
            .drivers
            .as_ref()
            .filter(|d| d.len() <= MAX_DRIVERS_IN_LIST);
        match (&q.drivers, drivers_in_list) {
            (_, Some(drivers)) => {
                sql += &format!(
                    "AND driver_id IN ({}) ",
                    placeholders(next, drivers.len().max(1))
                );
                next += drivers.len().max(1);
            }
            (Some(_), None) => {
                let find = find_fn(self.backend);
                sql += &format!("AND {find}(${next}, ',' || driver_id || ',') > 0 ");
                next += 1;
            }
            (None, None) => {}
        }
        let order = if q.newest_first { "DESC" } else { "" };
        sql += &format!("ORDER BY id {order} LIMIT ${next}");
        let mut query = sqlx::query(&sql).bind(fleet).bind(q.since).bind(head);
        // An empty list matches nothing: bound as one value no type or id equals.
        let list = |items: &Vec<String>| {
            if items.is_empty() {
                vec![String::new()]
            } else {
                items.clone()
            }
        };
        if let Some(types) = &q.types {
            for t in list(types) {
                query = query.bind(t);
            }
        }
        match (&q.drivers, drivers_in_list) {
            (_, Some(drivers)) => {
                for d in list(drivers) {
                    query = query.bind(d);
                }
            }
            (Some(_), None) => query = query.bind(comma_set(&q.drivers)),
            (None, None) => {}
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        let events = rows
            .iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let payload: String = r.try_get("payload")?;
                let mut event = event_record::decode(&payload)?;
                event.id = Some(id);
                Ok(event)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next_since = match events.last() {
            Some(last) if events.len() as i64 == limit && !q.newest_first => {
                last.id.unwrap_or(q.since)
            }
            _ => head,
        };
        Ok(EventPage { events, next_since })
    }

    /// Drivers of the fleet with a presence event (`driver.online`/`driver.offline`, whose `ts`
    /// is server time) at or after `since_ms`, each with its latest such time (unix ms UTC): who
    /// the drivers panel lists when they have neither a live position nor an active trip (a
    /// node that restarts forgets who was online). At most `limit`.
    pub async fn recently_present(
        &self,
        fleet: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT driver_id, MAX(ts) AS last FROM events \
             WHERE fleet = $1 AND type IN ('driver.online', 'driver.offline') AND ts >= $2 \
             GROUP BY driver_id LIMIT $3",
        )
        .bind(fleet)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("driver_id")?, r.try_get("last")?)))
            .collect()
    }

    /// One driver's events with `from_ms <= ts <= to_ms` (device time), in log order, at most
    /// `limit`: what a report reads (stops, presence). Only what retention kept.
    pub async fn driver_events(
        &self,
        fleet: &str,
        driver_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, payload FROM events WHERE fleet = $1 AND driver_id = $2 \
             AND ts >= $3 AND ts <= $4 ORDER BY id LIMIT $5",
        )
        .bind(fleet)
        .bind(driver_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let mut event = event_record::decode(&r.try_get::<String, _>("payload")?)?;
                event.id = Some(r.try_get("id")?);
                Ok(event)
            })
            .collect()
    }

    /// The newest event id of the whole log (0 when empty): "now" for a consumer that does not
    /// resume.
    pub async fn latest_event_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Events with ids up to this were deleted by retention (0: none ever were).
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT pruned_through FROM event_retention WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Retention: deletes the prefix of the log recorded before `before_ms` (server time, unix
    /// ms UTC; rows from before recorded_at existed count by device time), and finished webhook
    /// deliveries of that age. The newest event is always kept, so `latest_event_id` never goes
    /// back. Returns how many events were deleted.
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cut: i64 = sqlx::query(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE COALESCE(recorded_at, ts) < $1 \
             AND id < (SELECT MAX(id) FROM events)",
        )
        .bind(before_ms)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let mut deleted = 0;
        if cut > 0 {
            deleted = sqlx::query("DELETE FROM events WHERE id <= $1")
                .bind(cut)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE event_retention SET pruned_through = $1 WHERE singleton = 1 AND pruned_through < $1",
            )
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND window_start < $1",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
