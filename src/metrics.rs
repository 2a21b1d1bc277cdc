//! Prometheus metrics (`GET /metrics`), recorded with the `metrics` facade.
//!
//! Names follow the Prometheus conventions: `_total` for counters, base units (seconds) in the
//! name. The recorder is process-wide, so several hubs in one process (tests) share it.

use std::sync::OnceLock;

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open sockets, by `endpoint` (`driver`, `watch`, `stream`) and token `role`.
pub const SOCKETS_OPEN: &str = "trackhub_sockets_open";
/// Drivers with a live position on this node (any fleet), sampled at scrape time.
pub const DRIVERS_ONLINE: &str = "trackhub_drivers_online";
/// Fixes ingested, by `outcome`: `accepted` (newest of its driver), `late` (history only),
/// `duplicate` (seq seen before).
pub const FIXES: &str = "trackhub_fixes_total";
/// Fixes or messages refused, by `reason`: the error code sent to the client.
pub const FIXES_REJECTED: &str = "trackhub_fixes_rejected_total";
/// Check-ins stored, by `source` (`auto`, `manual`).
pub const CHECKINS: &str = "trackhub_checkins_total";
/// Watchers closed with 1013 because their event queue filled (fan-out drops).
pub const FANOUT_LAGGING: &str = "trackhub_fanout_watchers_lagging_total";
/// Sockets dropped because a send failed or did not finish within `SEND_TIMEOUT` (a peer that
/// stopped reading: slow consumers), by `endpoint`.
pub const SEND_FAILURES: &str = "trackhub_socket_send_failures_total";
/// Coalesced `positions` frames sent to watchers and `latest`-mode streams.
pub const FANOUT_FRAMES: &str = "trackhub_fanout_frames_total";
/// Positions carried by those frames.
pub const FANOUT_POSITIONS: &str = "trackhub_fanout_positions_total";
/// Times ingest waited for room in the history queue (the database is behind).
pub const TRACK_BACKPRESSURE: &str = "trackhub_track_backpressure_total";
/// Failed attempts at a history batch (each is retried until it commits; acks wait for it).
pub const TRACK_RETRIES: &str = "trackhub_track_retries_total";
/// Rows per history INSERT batch.
pub const TRACK_BATCH_ROWS: &str = "trackhub_track_batch_rows";
/// Events per presence-log batch (one transaction).
pub const EVENT_BATCH_ROWS: &str = "trackhub_event_batch_rows";
/// Seconds one presence-log batch took to store.
pub const EVENT_BATCH_SECONDS: &str = "trackhub_event_batch_seconds";
/// Rows written to track history.
pub const TRACK_ROWS: &str = "trackhub_track_rows_total";
/// Seconds one history INSERT batch took.
pub const TRACK_BATCH_SECONDS: &str = "trackhub_track_batch_seconds";
/// Bus messages (positions, events) published to other nodes.
pub const BUS_PUBLISHED_MESSAGES: &str = "trackhub_bus_published_messages_total";
/// PUBLISH commands sent to Redis (one per fleet and kind per flush).
pub const BUS_PUBLISH_COMMANDS: &str = "trackhub_bus_publish_commands_total";
/// Seconds one pipelined flush to Redis took.
pub const BUS_FLUSH_SECONDS: &str = "trackhub_bus_flush_seconds";
/// Bus messages not published: queue full or Redis unreachable.
pub const BUS_DROPPED: &str = "trackhub_bus_dropped_total";
/// Payloads received from other nodes.
pub const BUS_RECEIVED_BATCHES: &str = "trackhub_bus_received_batches_total";
/// Payloads from other nodes that could not be decoded.
pub const BUS_DECODE_ERRORS: &str = "trackhub_bus_decode_errors_total";
/// Successful (re)subscriptions to Redis.
pub const BUS_CONNECTS: &str = "trackhub_bus_connects_total";
/// Seconds from a fix accepted on another node to its application here (clock skew included).
pub const BUS_LAG_SECONDS: &str = "trackhub_bus_lag_seconds";

/// Service streams in `all` mode disconnected because their queue filled (slow consumer).
pub const STREAM_OVERFLOWS: &str = "trackhub_stream_overflows_total";
/// Events sent on service streams (WebSocket and SSE), after any resume.
pub const STREAM_EVENTS: &str = "trackhub_stream_events_total";
/// Webhook delivery attempts by outcome: `delivered`, `failed` (will retry), `dead`.
pub const WEBHOOK_ATTEMPTS: &str = "trackhub_webhook_attempts_total";
/// Seconds one webhook POST took (answer or error).
pub const WEBHOOK_SECONDS: &str = "trackhub_webhook_request_seconds";
/// Seconds from an event being stored to its webhook delivery (retries included).
pub const WEBHOOK_LAG_SECONDS: &str = "trackhub_webhook_delivery_lag_seconds";
/// Events deleted by retention.
pub const EVENTS_PRUNED: &str = "trackhub_events_pruned_total";
/// Stored fixes deleted by track retention.
pub const FIXES_PRUNED: &str = "trackhub_fixes_pruned_total";

/// Installs the process-wide recorder once and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            // Up to the history writer's largest batch (`store::track::BATCH_ROWS`, 16,384).
            let rows = [
                1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 16_384.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &rows))
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed (an embedding program's): keep theirs.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Renders every metric, process metrics (CPU, RSS, open fds, threads; `metrics-process`)
/// sampled now.
pub fn render() -> String {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    let handle = handle();
    let process = PROCESS.get_or_init(|| {
        let c = metrics_process::Collector::default();
        c.describe();
        c
    });
    process.collect();
    handle.render()
}

/// Counters of the fix path, looked up once (a `counter!` per fix would hash its key each time).
#[derive(Debug, Clone)]
pub struct FixCounters {
    pub accepted: Counter,
    pub late: Counter,
    pub duplicate: Counter,
}

impl FixCounters {
    pub fn new() -> Self {
        Self {
            accepted: metrics::counter!(FIXES, "outcome" => "accepted"),
            late: metrics::counter!(FIXES, "outcome" => "late"),
            duplicate: metrics::counter!(FIXES, "outcome" => "duplicate"),
        }
    }
}

impl Default for FixCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// A refused fix or message, by the error code the client was sent.
pub fn fix_rejected(reason: &'static str) {
    metrics::counter!(FIXES_REJECTED, "reason" => reason).increment(1);
    activity()
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// What happened since the last activity log line: the INFO summary an operator reads without
/// a Prometheus (issue 20: at INFO the hub logged one line in 11 minutes of replays).
#[derive(Debug, Default)]
pub struct Activity {
    pub connections: std::sync::atomic::AtomicU64,
    pub disconnections: std::sync::atomic::AtomicU64,
    pub open: std::sync::atomic::AtomicI64,
    pub fixes: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
}

/// The process's activity counters.
pub fn activity() -> &'static Activity {
    static ACTIVITY: OnceLock<Activity> = OnceLock::new();
    ACTIVITY.get_or_init(Activity::default)
}

impl Activity {
    /// One INFO line with the counts since the last call (and the sockets open now), when
    /// anything happened: at most one line per call, so a minute's tick bounds the volume.
    pub fn log_and_reset(&self, period: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let connections = self.connections.swap(0, Relaxed);
        let disconnections = self.disconnections.swap(0, Relaxed);
        let fixes = self.fixes.swap(0, Relaxed);
        let refused = self.refused.swap(0, Relaxed);
        if connections + disconnections + fixes + refused == 0 {
            return;
        }
        tracing::info!(
            period,
            sockets_open = self.open.load(Relaxed),
            connections,
            disconnections,
            fixes,
            refused,
            "activity"
        );
    }
}

/// Counts one open socket in `trackhub_sockets_open` while it lives.
#[derive(Debug)]
pub struct SocketGauge(Gauge);

impl SocketGauge {
    pub fn open(endpoint: &'static str, role: &'static str) -> Self {
        let gauge = metrics::gauge!(SOCKETS_OPEN, "endpoint" => endpoint, "role" => role);
        gauge.increment(1.0);
        let a = activity();
        a.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        a.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for SocketGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
        let a = activity();
        a.disconnections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        a.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
