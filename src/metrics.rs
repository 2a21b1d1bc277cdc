//! Prometheus metrics (`GET /metrics`), recorded with the `metrics` facade.
//!
//! Names follow the Prometheus conventions: `_total` for counters, base units (seconds) in the
//! name. The recorder is process-wide, so several hubs in one process (tests) share it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Fixes the history queue was full for and did not store (the database is behind).
pub const TRACK_SHED: &str = "trackhub_track_shed_total";
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

/// Installs the process-wide recorder once and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed (an embedding program's): keep theirs.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
