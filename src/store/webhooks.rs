//! Webhook subscriptions and their deliveries (the rows `store::events` writes beside each event).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

/// A webhook of one fleet. `events` lists event types, or is `["*"]` for every type.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub fleet: String,
    pub url: String,
    pub events: Vec<String>,
    /// HMAC key of the signatures; kept as given because signing needs it.
    pub secret: String,
    /// Unix ms UTC.
    pub created_at: i64,
}

/// One event's delivery to one webhook. Times unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub webhook_id: String,
    pub event_id: i64,
    pub event_type: String,
    /// `pending` | `delivered` | `dead`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// Start of the retry window: the event's storage, or the last redelivery.
    pub window_start: i64,
    /// HTTP status of the last attempt, when one came back.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// A delivery claimed for one attempt, with what the request needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub fleet: String,
    pub url: String,
    pub secret: String,
    pub event_id: i64,
    pub event_type: String,
    /// The event JSON, sent as is.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub window_start: i64,
}

/// Most webhooks one fleet may register (Stripe's limit per account, for the same reason: each
/// event fans out to every one of them).
pub const MAX_WEBHOOKS_PER_FLEET: i64 = 16;

/// `["a","b"]` as stored: `,a,b,`; `["*"]` as `*`.
fn events_column(events: &[String]) -> String {
    if events.iter().any(|e| e == "*") {
        "*".into()
    } else {
        format!(",{},", events.join(","))
    }
}

fn webhook_from_row(r: &AnyRow) -> Result<WebhookRecord, StoreError> {
    let events: String = r.try_get("events")?;
    Ok(WebhookRecord {
        id: r.try_get("id")?,
        fleet: r.try_get("fleet")?,
        url: r.try_get("url")?,
        events: events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect(),
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, status, attempts, \
     next_attempt_at, window_start, last_status, last_error, delivered_at";

fn delivery_from_row(r: &AnyRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        window_start: r.try_get("window_start")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

impl Store {
    /// Stores a webhook; events stored from now on are delivered to it. `Conflict` when the
    /// fleet already has [`MAX_WEBHOOKS_PER_FLEET`] (checked in the insert itself).
    pub async fn insert_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO webhooks (id, fleet, url, events, secret, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE (SELECT COUNT(*) FROM webhooks WHERE fleet = $2) < $7",
        )
        .bind(&w.id)
        .bind(&w.fleet)
        .bind(&w.url)
        .bind(events_column(&w.events))
        .bind(&w.secret)
        .bind(w.created_at)
        .bind(MAX_WEBHOOKS_PER_FLEET)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the fleet has {MAX_WEBHOOKS_PER_FLEET} webhooks, the most allowed; delete one first"
            )));
        }
        Ok(())
    }

    /// Webhooks of a fleet, oldest first.
    pub async fn webhooks(&self, fleet: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        sqlx::query("SELECT * FROM webhooks WHERE fleet = $1 ORDER BY created_at, id")
            .bind(fleet)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    /// One webhook of a fleet.
    pub async fn webhook(
        &self,
        fleet: &str,
        id: &str,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        sqlx::query("SELECT * FROM webhooks WHERE fleet = $1 AND id = $2")
            .bind(fleet)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    /// Deletes a webhook and its deliveries, pending ones included. False when not found.
    pub async fn delete_webhook(&self, fleet: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE fleet = $1 AND id = $2")
            .bind(fleet)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM webhook_deliveries WHERE fleet = $1 AND webhook_id = $2")
            .bind(fleet)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Claims pending deliveries due at `now` that no node holds, for this node until
    /// `lease_until`: at most `limit`, **at most one per fleet**, the most overdue of each, and
    /// none of the fleets in `skip` (those at their in-flight cap). Claiming one per fleet per
    /// call is the fairness: a fleet with a backlog, or a receiver that answers slowly (a
    /// tarpit), gets its turn beside the others instead of taking every slot in due order
    /// (issue 16). Safe to run on several nodes at once: the outer conditions are re-checked on
    /// the locked row (PostgreSQL) or under the single writer (SQLite), so a row goes to one
    /// claimer.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let skip_clause = if skip.is_empty() {
            String::new()
        } else {
            let list = (0..skip.len())
                .map(|i| format!("${}", i + 4))
                .collect::<Vec<_>>()
                .join(", ");
            format!("AND fleet NOT IN ({list}) ")
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_until = $2 \
             WHERE id IN (SELECT id FROM ( \
                 SELECT id, next_attempt_at, ROW_NUMBER() OVER ( \
                     PARTITION BY fleet ORDER BY next_attempt_at, id) AS turn \
                 FROM webhook_deliveries WHERE status = 'pending' \
                 AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until < $1) \
                 {skip_clause}) due \
               WHERE turn = 1 ORDER BY next_attempt_at, id LIMIT $3) \
             AND status = 'pending' AND (locked_until IS NULL OR locked_until < $1) \
             RETURNING id, webhook_id, fleet, event_id, event_type, body, attempts, window_start"
        );
        let mut query = sqlx::query(&sql).bind(now).bind(lease_until).bind(limit);
        for fleet in skip {
            query = query.bind(fleet);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut due = Vec::with_capacity(rows.len());
        let mut hooks: Vec<(String, String, String)> = Vec::new(); // (id, url, secret)
        for r in &rows {
            let webhook_id: String = r.try_get("webhook_id")?;
            let (url, secret) = match hooks.iter().find(|h| h.0 == webhook_id) {
                Some(h) => (h.1.clone(), h.2.clone()),
                None => {
                    let Some(h) = sqlx::query("SELECT url, secret FROM webhooks WHERE id = $1")
                        .bind(&webhook_id)
                        .fetch_optional(&self.pool)
                        .await?
                    else {
                        continue; // deleted meanwhile; its deliveries go with it
                    };
                    let (url, secret): (String, String) = (h.try_get("url")?, h.try_get("secret")?);
                    hooks.push((webhook_id, url.clone(), secret.clone()));
                    (url, secret)
                }
            };
            due.push(DueDelivery {
                id: r.try_get("id")?,
                fleet: r.try_get("fleet")?,
                url,
                secret,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                body: r.try_get("body")?,
                attempts: r.try_get("attempts")?,
                window_start: r.try_get("window_start")?,
            });
        }
        Ok(due)
    }

    /// Records a 2xx answer.
    pub async fn delivery_succeeded(
        &self,
        id: i64,
        attempts: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2, delivered_at = $3, \
             last_status = 200, last_error = NULL, locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or dead when `None`.
    pub async fn delivery_failed(
        &self,
        id: i64,
        attempts: i64,
        status: Option<i64>,
        error: &str,
        next_attempt_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4, \
             status = CASE WHEN $5 IS NULL THEN 'dead' ELSE 'pending' END, \
             next_attempt_at = COALESCE($5, next_attempt_at), locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(status)
        .bind(error)
        .bind(next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deliveries of one webhook of a fleet, newest first, optionally of one status.
    pub async fn deliveries(
        &self,
        fleet: &str,
        webhook_id: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE fleet = $1 AND webhook_id = $2 \
             AND ($3 IS NULL OR status = $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(fleet)
        .bind(webhook_id)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delivery_from_row)
        .collect()
    }

    /// Puts a delivery (dead, or delivered: a replay) back in the queue, due now, with a fresh
    /// retry window. Returns it, or `None` when the fleet has no such delivery.
    pub async fn redeliver(
        &self,
        fleet: &str,
        webhook_id: &str,
        delivery_id: i64,
        now: i64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, window_start = $4, \
             locked_until = NULL WHERE fleet = $1 AND webhook_id = $2 AND id = $3 RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(fleet)
        .bind(webhook_id)
        .bind(delivery_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery_from_row)
        .transpose()
    }
}
