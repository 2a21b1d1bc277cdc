//! Customer tracking links against a real hub: the page shows the driver only while its stop is
//! next, says "delivered" after the check-in and ends a grace period later, refuses revoked and
//! forged tokens, is rate-limited, and leaks nothing else (every byte the public side sent is
//! searched for the other drivers', trips', stops' and fleet's ids).

use crate::common;

use common::sse::Sse;
use common::*;
use serde_json::{json, Value};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;
const FLEET: &str = "fleet-secret-3";
const DRIVER: &str = "driver-secret-7";
const OTHER: &str = "other-driver-5";
const TRIP: &str = "trip-secret-9";

/// GET without credentials: (status, body, Retry-After).
async fn public(hub: &TestHub, path: &str) -> (u16, String, Option<String>) {
    let r = hub.http.get(hub.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.text().await.unwrap(), retry)
}

async fn wait_public(
    hub: &TestHub,
    path: &str,
    what: &str,
    seen: &mut String,
    pred: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body, _) = public(hub, path).await;
        seen.push_str(&body);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if pred(status, &v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: waited for {what}; last {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_link_shows_the_driver_only_while_its_stop_is_next_then_delivered_then_gone() {
    let hub = TestHub::start_with(|c| c.link_grace_s = 2).await;
    let north = |m: f64| LAT + m / M_PER_DEG;
    let (status, trip) = hub
        .post(
            "/v1/trips",
            FLEET,
            &json!({"id": TRIP, "driver_id": DRIVER, "stops": [
                {"id": "stop-secret-a", "name": "Depot", "lat": north(1_000.0), "lon": LON},
                {"id": "stop-mine", "name": "Rua das Flores 12", "lat": north(2_000.0), "lon": LON},
                {"id": "stop-secret-c", "name": "Secret other customer", "lat": north(3_000.0), "lon": LON},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{trip}");
    let (status, link) = hub
        .post(
            &format!("/v1/trips/{TRIP}/stops/stop-mine/links"),
            FLEET,
            &json!({"ttl_s": 3600}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    let token = link["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert_eq!(link["path"], format!("/t/{token}"));
    let path = format!("/t/{token}/status");

    // Everything the public side sends, to search for leaks at the end.
    let mut seen = String::new();
    let (status, page, _) = public(&hub, &format!("/t/{token}")).await;
    assert_eq!(status, 200);
    seen.push_str(&page);

    // Another driver of the fleet streams nearby all along.
    let mut other = hub.driver(OTHER, FLEET).await;
    other
        .ping_acked(ping(1, now_ms(), north(1_900.0), LON))
        .await;

    // Before: one stop first, no driver, the ETA once the driver reports.
    let mut d = hub.driver(DRIVER, FLEET).await;
    d.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    let v = wait_public(&hub, &path, "an ETA", &mut seen, |s, v| {
        s == 200 && v["stop"]["eta"].is_string()
    })
    .await;
    assert_eq!(v["state"], "upcoming", "{v}");
    assert_eq!(v["stops_before"], 1);
    assert!(
        v.get("driver").is_none(),
        "the driver is hidden before its stop is next: {v}"
    );
    assert_eq!(v["stop"]["name"], "Rua das Flores 12");

    // Live stream: the first view, then the driver once the first stop is checked in.
    let (status, live) =
        Sse::connect(&hub.http, &hub.url(&format!("/t/{token}/live")), "", None).await;
    assert_eq!(status, 200);
    let mut live = live.unwrap();
    let first = live.next().await.unwrap();
    assert_eq!(first.event, "status");
    assert_eq!(first.data["state"], "upcoming");
    seen.push_str(&first.data.to_string());

    let (status, _) = hub
        .post(
            &format!("/v1/trips/{TRIP}/stops/stop-secret-a/checkin"),
            FLEET,
            &json!({}),
        )
        .await;
    assert_eq!(status, 201);
    d.ping_acked(ping(2, now_ms(), north(1_500.0), LON)).await;
    let next = loop {
        let e = live.next().await.expect("live view");
        seen.push_str(&e.data.to_string());
        if e.data["state"] == "next" {
            break e.data;
        }
    };
    assert_eq!(next["driver"]["lat"].as_f64().unwrap(), north(1_500.0));
    assert_eq!(next["stops_before"], 0);
    assert!(next["stop"]["eta"].is_string());
    let v = wait_public(&hub, &path, "the driver", &mut seen, |s, v| {
        s == 200 && v["state"] == "next"
    })
    .await;
    assert!(v["driver"].is_object());

    // Delivered: the view says so (no driver), then the link ends after the grace period.
    let (status, _) = hub
        .post(
            &format!("/v1/trips/{TRIP}/stops/stop-mine/checkin"),
            FLEET,
            &json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let delivered = loop {
        let e = live.next().await.expect("live view");
        seen.push_str(&e.data.to_string());
        if e.data["state"] == "delivered" {
            break e.data;
        }
    };
    assert!(delivered["delivered_at"].is_string());
    assert!(delivered.get("driver").is_none());
    let gone = loop {
        let e = live.next().await.expect("a gone event");
        seen.push_str(&e.data.to_string());
        if e.event == "gone" {
            break e.data;
        }
    };
    assert_eq!(gone["status"], 410);
    assert!(live.next().await.is_none(), "the stream ends");
    wait_public(
        &hub,
        &path,
        "410 after the grace period",
        &mut seen,
        |s, _| s == 410,
    )
    .await;

    // Nothing but this stop was ever sent.
    for secret in [
        FLEET,
        DRIVER,
        OTHER,
        TRIP,
        "stop-secret-a",
        "stop-secret-c",
        "Depot",
        "Secret other customer",
        "stop-mine",
    ] {
        assert!(!seen.contains(secret), "the public page leaked `{secret}`");
    }
    assert!(
        !seen.contains(&format!("{:.5}", north(1_900.0))),
        "the other driver's position leaked"
    );
}

#[tokio::test]
async fn links_are_revocable_forged_tokens_refused_and_requests_rate_limited() {
    let hub = TestHub::start_with(|c| c.limits.public_per_ip_per_s = 2).await;
    let (status, _) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"id": "t1", "driver_id": "D", "stops": [{"id": "s1", "lat": LAT, "lon": LON}]}),
        )
        .await;
    assert_eq!(status, 201);
    // No link for unknown stops; bad lifetimes are named.
    assert_eq!(
        hub.post("/v1/trips/t1/stops/nope/links", "f1", &json!({}))
            .await
            .0,
        404
    );
    let (status, body) = hub
        .post("/v1/trips/t1/stops/s1/links", "f1", &json!({"ttl_s": 5}))
        .await;
    assert_eq!(status, 422, "{body}");
    // Another fleet cannot make one for this trip.
    assert_eq!(
        hub.post("/v1/trips/t1/stops/s1/links", "f2", &json!({}))
            .await
            .0,
        404
    );

    let (_, link) = hub
        .post("/v1/trips/t1/stops/s1/links", "f1", &json!({}))
        .await;
    let token = link["token"].as_str().unwrap();
    let id = link["id"].as_str().unwrap();
    assert_eq!(public(&hub, &format!("/t/{token}/status")).await.0, 200);
    // Listed without its token.
    let (_, list) = hub.get("/v1/trips/t1/stops/s1/links", "f1").await;
    assert_eq!(list["links"][0]["id"], id);
    assert!(!list.to_string().contains(token));

    // A forged token (right shape, never issued) and a mangled one: 404.
    let forged = "A".repeat(43);
    assert_eq!(public(&hub, &format!("/t/{forged}/status")).await.0, 404);
    assert_eq!(
        public(&hub, &format!("/t/{}x/status", &token[..42]))
            .await
            .0,
        404
    );

    // Revoked: 410 from then on, on the view and the live stream; a second revoke is 404.
    let del = hub
        .http
        .delete(hub.url(&format!("/v1/trips/t1/stops/s1/links/{id}")))
        .bearer_auth(hub.token(trackhub::auth::Role::Admin, "admin", "f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(public(&hub, &format!("/t/{token}/status")).await.0, 410);
    assert_eq!(public(&hub, &format!("/t/{token}/live")).await.0, 410);
    let again = hub
        .http
        .delete(hub.url(&format!("/v1/trips/t1/stops/s1/links/{id}")))
        .bearer_auth(hub.token(trackhub::auth::Role::Admin, "admin", "f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 404);

    // 2 requests/s per IP, burst 12: a flood is refused with 429 and a Retry-After.
    let mut refused = None;
    for _ in 0..30 {
        let (status, _, retry) = public(&hub, &format!("/t/{forged}/status")).await;
        if status == 429 {
            refused = retry;
            break;
        }
    }
    let retry: u64 = refused.expect("a flood is refused").parse().unwrap();
    assert!((1..=5).contains(&retry));
}
