//! Webhooks: every durable event a fleet's webhook subscribed to is POSTed to its URL, signed,
//! retried with exponential backoff and jitter for up to a day, then parked in a dead-letter list
//! an admin can redeliver from.
//!
//! Deliveries are rows written in the event's own transaction (see `store::events`), so none is
//! lost to a crash, and this dispatcher only reads them: ingest never waits for a receiver. Any
//! node may deliver any row: a row is claimed with a lease (`locked_until`), so a node that dies
//! mid-request leaves it to another after the lease. Delivery is therefore *at least once*:
//! receivers deduplicate by the `Trackhub-Event-Id` header (the event's log id).
//!
//! Each request carries, Stripe-style,
//! `Trackhub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, so a receiver
//! checks both authenticity and freshness (reject a `t` more than a few minutes old).

pub mod signature;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::model::now_ms;
use crate::protocol::EventView;
use crate::shutdown::Shutdown;
use crate::store::webhooks::DueDelivery;
use crate::store::Store;

/// Dispatcher settings.
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    /// Whole-request timeout. Default 10 s.
    pub timeout: Duration,
    /// Delay before the first retry; doubles per attempt with jitter added in `[0, delay)`.
    /// Default 5 s.
    pub retry_base: Duration,
    /// Longest delay between attempts. Default 1 h.
    pub retry_max: Duration,
    /// A delivery not done this long after its event (or its redelivery) is dead. Default 24 h.
    pub give_up_after: Duration,
    /// Requests in flight at once, per node. Default 16.
    pub concurrency: usize,
    /// Requests in flight at once for one fleet, per node. Default 4: a fleet whose receiver
    /// answers slowly (or never, until the timeout) holds a quarter of the slots, not all.
    pub fleet_concurrency: usize,
    /// How often due retries are looked for when no new event wakes the dispatcher. Default 1 s.
    pub poll: Duration,
    /// Deliver to private, loopback and link-local addresses too (`--webhook-allow-private`):
    /// for an operator whose receivers are on its own network. Default false: public only
    /// ([`target`]).
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3_600),
            give_up_after: Duration::from_secs(86_400),
            concurrency: 16,
            fleet_concurrency: 4,
            poll: Duration::from_secs(1),
            allow_private: false,
        }
    }
}

impl WebhookConfig {
    /// How long a claimed delivery stays reserved for this node: past it, another node may retry.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }

    /// Delay before attempt `attempts + 1`, after `attempts` (≥ 1) failed ones: exponential from
    /// `retry_base`, capped at `retry_max`, plus jitter ("Exponential Backoff And Jitter", AWS
    /// Architecture Blog, 2015) so that receivers coming back are not hit by every retry at once.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        ExponentialBuilder::new()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.retry_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.retry_max)
    }
}

/// Runs the dispatcher until `stop` turns true. `wake` follows the newest event id: a new event
/// may have queued deliveries, so look at once rather than at the next poll.
pub async fn run(
    store: Store,
    cfg: WebhookConfig,
    mut wake: watch::Receiver<i64>,
    mut stop: Shutdown,
) {
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.timeout)
        // A webhook URL is what the admin registered; following redirects would send signed
        // bodies wherever the receiver points.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names itself, past the address check below.
        .no_proxy()
        .user_agent(concat!("trackhub-webhooks/", env!("CARGO_PKG_VERSION")));
    if !cfg.allow_private {
        builder = builder.dns_resolver(Arc::new(target::PublicOnly));
    }
    let http = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client not built; webhooks are not delivered");
            return;
        }
    };
    let (total, per_fleet) = (cfg.concurrency.max(1), cfg.fleet_concurrency.max(1));
    // Requests in flight, and the fleet of each (by task id: a task that panicked is still
    // known when it is joined, so its fleet's count never stays taken).
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut fleet_of: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        while let Some(done) = in_flight.try_join_next_with_id() {
            fleet_of.remove(&finished(done));
        }
        let free = total.saturating_sub(in_flight.len());
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let mut busy: HashMap<&str, usize> = HashMap::new();
            for fleet in fleet_of.values() {
                *busy.entry(fleet).or_default() += 1;
            }
            let full: Vec<String> = busy
                .into_iter()
                .filter(|(_, n)| *n >= per_fleet)
                .map(|(fleet, _)| fleet.to_string())
                .collect();
            let lease_until = now_ms() + cfg.lease().as_millis() as i64;
            match store
                .claim_deliveries(now_ms(), lease_until, free as i64, &full)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook deliveries not claimed");
                    Vec::new()
                }
            }
        };
        let idle = claimed.is_empty();
        for delivery in claimed {
            let fleet = delivery.fleet.clone();
            let (store, http) = (store.clone(), http.clone());
            let task = in_flight.spawn(async move { attempt(&store, &http, &cfg, delivery).await });
            fleet_of.insert(task.id(), fleet);
        }
        if !idle {
            // One delivery per fleet per claim: claim again while slots are free.
            continue;
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(cfg.poll) => {}
            Some(done) = in_flight.join_next_with_id() => {
                fleet_of.remove(&finished(done));
            }
            _ = stop.recv() => {
                // In-flight requests are abandoned; their leases lapse and they are retried.
                in_flight.shutdown().await;
                return;
            }
        }
    }
}

/// The id of a joined request task, finished or panicked.
fn finished(done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((id, ())) => id,
        Err(e) => e.id(),
    }
}

/// One POST of one delivery, and its outcome recorded.
async fn attempt(store: &Store, http: &reqwest::Client, cfg: &WebhookConfig, d: DueDelivery) {
    let t = now_ms() / 1000;
    let started = Instant::now();
    // IP literals are not resolved, so the resolver cannot refuse them: checked here, before
    // each attempt (the URL may predate the operator's setting).
    let literal_ok = reqwest::Url::parse(&d.url)
        .map_err(|_| target::REFUSED)
        .and_then(|u| target::check_literal(&u, cfg.allow_private));
    let sent = match literal_ok {
        Ok(()) => Ok(send(http, &d, t).await),
        Err(refused) => Err(refused),
    };
    metrics::histogram!(crate::metrics::WEBHOOK_SECONDS).record(started.elapsed().as_secs_f64());
    let failure = match sent {
        Ok(Ok(r)) if r.status().is_success() => None,
        Ok(Ok(r)) => Some((
            Some(r.status().as_u16() as i64),
            format!("HTTP {}", r.status()),
        )),
        Ok(Err(e)) => Some((None, request_error(&e))),
        Err(refused) => Some((None, refused.to_string())),
    };
    record(store, cfg, &d, failure).await;
}

/// The request body: the event as on the wire (`/v1/events`), from the stored delivery. A body
/// the store cannot read back is sent as stored (the same shape, written by an older version).
fn wire_body(d: &DueDelivery) -> String {
    match crate::store::event_record::decode(&d.body) {
        Ok(event) => serde_json::to_string(&EventView::from(&event)).unwrap_or(d.body.clone()),
        Err(e) => {
            tracing::warn!(delivery = d.id, error = %e, "webhook body not readable; sent as stored");
            d.body.clone()
        }
    }
}

/// The POST of one delivery, signed.
async fn send(
    http: &reqwest::Client,
    d: &DueDelivery,
    t: i64,
) -> reqwest::Result<reqwest::Response> {
    let body = wire_body(d);
    http.post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Trackhub-Signature", signature::header(&d.secret, t, &body))
        .header("Trackhub-Event-Id", d.event_id.to_string())
        .header("Trackhub-Event-Type", &d.event_type)
        .header("Trackhub-Delivery-Id", d.id.to_string())
        .body(body)
        .send()
        .await
}

/// Records the outcome of one attempt: delivered, or failed with its retry (or dead).
async fn record(
    store: &Store,
    cfg: &WebhookConfig,
    d: &DueDelivery,
    failure: Option<(Option<i64>, String)>,
) {
    let now = now_ms();
    let attempts = d.attempts + 1;
    let recorded = match failure {
        None => {
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => "delivered")
                .increment(1);
            metrics::histogram!(crate::metrics::WEBHOOK_LAG_SECONDS)
                .record((now - d.window_start).max(0) as f64 / 1000.0);
            store.delivery_succeeded(d.id, attempts, now).await
        }
        Some((status, error)) => {
            let next = now + cfg.retry_delay(attempts as u32).as_millis() as i64;
            let give_up_at = d.window_start + cfg.give_up_after.as_millis() as i64;
            let next = (next <= give_up_at).then_some(next);
            let outcome = if next.is_some() { "failed" } else { "dead" };
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
            // The first failure and the last word at INFO/WARN (an operator learns that a
            // receiver is down, once, not at every retry); the retries in between at DEBUG.
            match (outcome, attempts) {
                ("dead", _) => {
                    tracing::warn!(delivery = d.id, url = %d.url, %error, attempts, "webhook delivery dead: no more retries")
                }
                (_, 1) => {
                    tracing::info!(delivery = d.id, url = %d.url, %error, "webhook delivery failed; retrying with backoff")
                }
                _ => {
                    tracing::debug!(delivery = d.id, url = %d.url, %error, attempts, "webhook attempt failed")
                }
            }
            store
                .delivery_failed(d.id, attempts, status, &error, next)
                .await
        }
    };
    if let Err(e) = recorded {
        // The lease lapses and the delivery is tried again: at least once, never lost.
        tracing::warn!(error = %e, delivery = d.id, "webhook outcome not recorded");
    }
}

/// A short, generic reason for a failed request, as tenants read it back in `last_error`: no
/// body or headers of the receiver, no detail of the network (issue 16: detailed errors made the
/// webhook list a port scanner).
fn request_error(e: &reqwest::Error) -> String {
    let refused = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .any(|e| e.to_string().contains(target::REFUSED));
    if refused {
        target::REFUSED.into()
    } else if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_with_jitter_and_stop_at_the_cap() {
        let cfg = WebhookConfig {
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3_600),
            ..WebhookConfig::default()
        };
        for attempts in 1..=12u32 {
            let d = cfg.retry_delay(attempts).as_secs_f64();
            let nominal = (5.0 * 2f64.powi(attempts as i32 - 1)).min(3_600.0);
            assert!(
                d >= nominal * 0.999 && d < 2.0 * nominal,
                "attempt {attempts}: {d}"
            );
        }
        let late = cfg.retry_delay(40).as_secs_f64();
        assert!((3_600.0..7_200.0).contains(&late));
        // Jitter: two schedules differ somewhere.
        let a: Vec<_> = (1..10).map(|n| cfg.retry_delay(n)).collect();
        let b: Vec<_> = (1..10).map(|n| cfg.retry_delay(n)).collect();
        assert_ne!(a, b);
    }
}
