//! What operators read: `/metrics` (Prometheus text), `/livez`, `/readyz`. This file is its own
//! test process, so the process-wide metrics recorder counts only what these tests do.

// Not in `tests/it`: the tests there share one process, and so would add to these counts.
#[path = "it/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

/// The value of one sample line (`name{labels} value`) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(hub: &TestHub) -> String {
    let r = hub.http.get(hub.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

/// Scrapes until `series` has `value`; panics after `WAIT` with the last scrape.
async fn until_sample(hub: &TestHub, series: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(hub).await;
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {value}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_sockets_fixes_rejections_checkins_and_the_process() {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","bbox":[-180,-90,180,90]}))
        .await;
    w.json().await;
    let mut d = hub.driver("D1", "f1").await;
    let t0 = now_ms() - 600_000;
    // Parked 20 m from the stop for 100 s (a check-in), one fix out of range, one replayed seq,
    // one late fix (older than the newest).
    let mut pings: Vec<serde_json::Value> = (0..=20)
        .map(|i| {
            let (lat, lon) = offset(LAT, LON, 20.0, 0.0);
            ping(1 + i, t0 + i as i64 * 5000, lat, lon)
        })
        .collect();
    pings.push(ping(22, t0 + 200_000, 200.0, LON));
    // A resend of seq 3 as it was sent (its own time). A seen seq on a *newer* fix would be
    // taken for a restarted counter and stored (tests/it/driver_socket.rs).
    let (lat3, lon3) = offset(LAT, LON, 20.0, 0.0);
    pings.push(ping(3, t0 + 2 * 5000, lat3, lon3));
    pings.push(ping(23, t0 + 1_000, LAT, LON));
    d.send(&json!({"type":"batch","pings":pings})).await;
    d.until_ack(23).await;
    w.until(|f| f["type"] == "positions").await;

    let text = until_sample(&hub, r#"trackhub_track_rows_total"#, 22.0).await;
    let get = |series: &str| sample(&text, series);
    assert_eq!(
        get(r#"trackhub_fixes_total{outcome="accepted"}"#),
        Some(21.0)
    );
    assert_eq!(get(r#"trackhub_fixes_total{outcome="late"}"#), Some(1.0));
    assert_eq!(
        get(r#"trackhub_fixes_total{outcome="duplicate"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"trackhub_fixes_rejected_total{reason="invalid_coordinates"}"#),
        Some(1.0)
    );
    assert_eq!(get(r#"trackhub_checkins_total{source="auto"}"#), Some(1.0));
    assert_eq!(
        get(r#"trackhub_sockets_open{endpoint="driver",role="driver"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"trackhub_sockets_open{endpoint="watch",role="admin"}"#),
        Some(1.0)
    );
    assert_eq!(get("trackhub_drivers_online"), Some(1.0));
    assert!(get("trackhub_fanout_frames_total").unwrap() >= 1.0);
    assert!(get("trackhub_fanout_positions_total").unwrap() >= 1.0);
    // History batches: sizes and latency; the presence log's (driver.online) too.
    assert!(get("trackhub_track_batch_rows_count").unwrap() >= 1.0);
    assert_eq!(get("trackhub_track_batch_rows_sum"), Some(22.0));
    assert!(get("trackhub_track_batch_seconds_count").unwrap() >= 1.0);
    assert!(get("trackhub_event_batch_rows_count").unwrap() >= 1.0);
    // Process metrics.
    assert!(get("process_resident_memory_bytes").unwrap() > 1e6);
    assert!(get("process_open_fds").unwrap() > 0.0);
    assert!(text.contains("process_cpu_seconds_total"));

    // Closed sockets leave the gauge.
    d.close().await;
    until_sample(
        &hub,
        r#"trackhub_sockets_open{endpoint="driver",role="driver"}"#,
        0.0,
    )
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn livez_and_readyz_report_the_process_and_its_dependencies() {
    let hub = TestHub::start().await;
    let (status, live) = get_json(&hub.http, &hub.url("/livez"), "").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("ok")));
    let (status, ready) = get_json(&hub.http, &hub.url("/readyz"), "").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["bus"], "local");
    hub.stop().await;
}
