//! Position streams for services against a real hub: `all` mode keeps every fix in order per
//! driver at 10k fixes/s, a consumer that cannot keep up is disconnected with a reason (and
//! never silently thinned), and `latest` mode over SSE is filtered by drivers and bbox.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::sse::Sse;
use common::*;
use serde_json::{json, Value};
use trackhub::auth::Role;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

/// A hub whose drivers may send 100 batches/s each.
async fn hub(tweak: impl FnOnce(&mut trackhub::config::ServerConfig)) -> TestHub {
    TestHub::start_with(|c| {
        c.limits.msgs_per_s = 100;
        c.limits.msg_burst = 100;
        // These drivers send up to 25,000 fixes/s each: far past a phone's budget.
        c.limits.fixes_per_driver_per_s = 0;
        tweak(c);
    })
    .await
}

/// Fix `k` of driver `n`: 1 ms of device time apart, creeping north.
fn fix(n: usize, k: u64, t0: i64) -> Value {
    let (lat, lon) = offset(LAT, LON, k as f64 * 0.01, n as f64 * 100.0);
    ping(k + 1, t0 + k as i64, lat, lon)
}

/// Driver `n` sends `total` fixes as batches of `per_batch`, one batch per `every`, each acked.
async fn drive(d: &mut Ws, n: usize, total: u64, per_batch: u64, every: Duration, t0: i64) {
    let mut tick = tokio::time::interval(every);
    for start in (0..total).step_by(per_batch as usize) {
        tick.tick().await;
        let pings: Vec<Value> = (start..(start + per_batch).min(total))
            .map(|k| fix(n, k, t0))
            .collect();
        let last = pings.last().unwrap()["seq"].as_u64().unwrap();
        d.send(&json!({"type": "batch", "pings": pings})).await;
        d.until_ack(last).await;
    }
}

/// Device times per driver, in the order a stream delivered them.
fn record(frame: &Value, seen: &mut HashMap<String, Vec<i64>>) -> usize {
    let positions = frame["positions"].as_array().unwrap();
    for p in positions {
        let ts = trackhub::protocol::time::parse_ts(p["ts"].as_str().unwrap()).unwrap();
        seen.entry(p["driver_id"].as_str().unwrap().to_string())
            .or_default()
            .push(ts);
    }
    positions.len()
}

#[tokio::test]
async fn all_mode_keeps_every_fix_in_order_per_driver_at_10k_fixes_per_second() {
    const DRIVERS: usize = 10;
    const PER_DRIVER: u64 = 3_000; // 3 s at 1,000 fixes/s per driver: 30,000 fixes in all.
    let hub = hub(|_| {}).await;
    let t0 = now_ms() - 3_600_000;
    let mut stream = hub.stream("f1", "mode=all&types=none").await;
    assert_eq!(
        stream.json().await,
        json!({"type": "snapshot", "positions": []})
    );

    let mut drivers = Vec::new();
    for n in 0..DRIVERS {
        drivers.push(hub.driver(&format!("D{n}"), "f1").await);
    }
    let started = std::time::Instant::now();
    let senders = drivers.into_iter().enumerate().map(|(n, mut d)| {
        tokio::spawn(async move {
            // 100 fixes every 100 ms: 1,000 fixes/s per driver, 10,000/s for the ten.
            drive(&mut d, n, PER_DRIVER, 100, Duration::from_millis(100), t0).await;
            d
        })
    });
    let senders: Vec<_> = senders.collect();

    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut received = 0;
    while received < DRIVERS * PER_DRIVER as usize {
        let frame = stream.json().await;
        assert_eq!(frame["type"], "positions", "{frame}");
        received += record(&frame, &mut seen);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for s in senders {
        s.await.unwrap();
    }
    println!(
        "all mode: {received} fixes from {DRIVERS} drivers streamed in {elapsed:.2} s ({:.0} fixes/s)",
        received as f64 / elapsed
    );
    assert_eq!(received, DRIVERS * PER_DRIVER as usize, "nothing extra");
    for n in 0..DRIVERS {
        let want: Vec<i64> = (0..PER_DRIVER as i64).map(|k| t0 + k).collect();
        assert_eq!(seen[&format!("D{n}")], want, "D{n}: every fix, in order");
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_consumer_that_cannot_keep_up_is_disconnected_with_a_reason() {
    // Room for a few batches: a consumer that reads keeps up, one that does not overflows.
    let hub = hub(|c| c.events.stream_queue = 2_000).await;
    let t0 = now_ms() - 3_600_000;
    let token = hub.token(Role::Service, "slow", "f1");
    let url = format!(
        "{}&mode=all&types=none",
        hub.ws_url("/v1/ws/stream", &token)
    );
    // A 4 KiB receive window and no reading: the hub's writes block, its queue fills.
    let mut slow = Ws::connect_small_buffer(&url, 4_096).await;
    let mut d = hub.driver("D1", "f1").await;
    drive(&mut d, 0, 80_000, 500, Duration::from_millis(20), t0).await;

    // Now read: a prefix of the fixes in order and without gaps, then the reason, then 1013.
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut error = None;
    let code = loop {
        match slow.next().await {
            Frame::Json(f) if f["type"] == "positions" || f["type"] == "snapshot" => {
                record(&f, &mut seen);
            }
            Frame::Json(f) => error = Some(f),
            Frame::Closed(c) => break c.map(|c| u16::from(c.code)),
        }
    };
    let error = error.expect("an error frame before the close");
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "slow_consumer");
    assert_eq!(code, Some(1013));
    let got = seen.remove("D1").unwrap_or_default();
    println!(
        "slow consumer: got {} of 80000 fixes, then slow_consumer and 1013",
        got.len()
    );
    assert!(
        got.len() > 2_000 && got.len() < 80_000,
        "the consumer got what its buffers held, then was cut off: {}",
        got.len()
    );
    let want: Vec<i64> = (0..got.len() as i64).map(|k| t0 + k).collect();
    assert_eq!(got, want, "what it got is a gapless prefix, in order");

    // The hub is fine and the next consumer starts afresh.
    let mut next = hub.stream("f1", "mode=latest&types=none").await;
    let snap = next.json().await;
    assert_eq!(
        snap["positions"][0]["ts"],
        json!(trackhub::protocol::time::format_ts(t0 + 79_999))
    );
    hub.stop().await;
}

#[tokio::test]
async fn latest_mode_over_sse_is_filtered_by_drivers_and_bbox() {
    let hub = hub(|_| {}).await;
    let t0 = now_ms() - 60_000;
    let near = offset(LAT, LON, 0.0, 0.0);
    let far = offset(LAT, LON, 50_000.0, 0.0);
    let mut d1 = hub.driver("D1", "f1").await;
    let mut d2 = hub.driver("D2", "f1").await;
    let mut d3 = hub.driver("D3", "f1").await;
    d1.ping_acked(ping(1, t0, near.0, near.1)).await;
    d2.ping_acked(ping(1, t0, near.0, near.1)).await;
    d3.ping_acked(ping(1, t0, far.0, far.1)).await;

    // D1 and D3 asked for, inside a box around (LAT, LON): D1 only.
    let bbox = format!(
        "{},{},{},{}",
        LON - 0.05,
        LAT - 0.05,
        LON + 0.05,
        LAT + 0.05
    );
    let token = hub.token(Role::Service, "dispatch", "f1");
    let url = hub.url(&format!("/v1/stream?drivers=D1,D3&bbox={bbox}&types=none"));
    let (status, sse) = Sse::connect(&hub.http, &url, &token, None).await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    let snap = sse.next().await.unwrap();
    assert_eq!(snap.event, "snapshot");
    let ids: Vec<&str> = snap.data["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["driver_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["D1"]);

    // Ten fixes of D1 within one flush: coalesced to the latest; D2 and D3 never appear.
    let moves: Vec<Value> = (0..10)
        .map(|k| {
            ping(
                2 + k,
                t0 + 1_000 * (k as i64 + 1),
                near.0 + k as f64 * 1e-5,
                near.1,
            )
        })
        .collect();
    d2.ping_acked(ping(2, t0 + 500, near.0, near.1)).await;
    d3.ping_acked(ping(2, t0 + 500, far.0, far.1)).await;
    d1.send(&json!({"type": "batch", "pings": moves})).await;
    d1.until_ack(11).await;
    let mut last_ts = String::new();
    while last_ts != trackhub::protocol::time::format_ts(t0 + 10_000) {
        let e = sse.next().await.unwrap();
        assert_eq!(e.event, "positions", "{e:?}");
        for p in e.data["positions"].as_array().unwrap() {
            assert_eq!(p["driver_id"], "D1", "{e:?}");
            last_ts = p["ts"].as_str().unwrap().to_string();
        }
    }
    hub.stop().await;
}
