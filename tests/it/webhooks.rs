//! Webhooks against a real hub and a real HTTP receiver on 127.0.0.1: signed deliveries retried
//! with backoff until the receiver answers, the dead-letter list and redelivery.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use trackhub::auth::Role;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// An HTTP receiver that fails the first `fail_first` requests with 500, and every request while
/// `down` is set with 503.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    calls: Arc<AtomicUsize>,
    fail_first: usize,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize, down: bool) -> (Self, String) {
        let r = Receiver {
            got: Arc::default(),
            calls: Arc::default(),
            fail_first,
            down: Arc::new(AtomicBool::new(down)),
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let r = state.clone();
                async move {
                    r.got.lock().unwrap().push(Received { headers, body });
                    let n = r.calls.fetch_add(1, Ordering::SeqCst);
                    if r.down.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else if n < r.fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    /// Waits until it has received `n` requests; returns them.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} of {n} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks `Trackhub-Signature: t=…,v1=…` against the secret, computed here independently.
fn signature_is_valid(r: &Received, secret: &str) -> bool {
    let header = r.headers["trackhub-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let age = now_ms() / 1000 - t.parse::<i64>().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    (0..60).contains(&age) && mac.verify_slice(&hex_decode(v1)).is_ok()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

async fn hub() -> TestHub {
    TestHub::start_with(|c| {
        c.webhooks.retry_base = Duration::from_millis(50);
        c.webhooks.retry_max = Duration::from_millis(400);
        c.webhooks.give_up_after = Duration::from_secs(2);
        c.webhooks.poll = Duration::from_millis(50);
    })
    .await
}

/// A one-stop trip checked in by hand; returns the `stop.checked_in` event from the log.
async fn manual_checkin(hub: &TestHub, trip: &str) -> Value {
    let body = json!({"id": trip, "driver_id": "D1", "stops": [{"id": "s1", "lat": 41.15, "lon": -8.61, "radius_m": 80}]});
    assert_eq!(hub.post("/v1/trips", "f1", &body).await.0, 201);
    let path = format!("/v1/trips/{trip}/stops/s1/checkin");
    assert_eq!(hub.post(&path, "f1", &json!({})).await.0, 201);
    let (_, log) = hub.get("/v1/events?types=stop.checked_in", "f1").await;
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["trip_id"] == trip)
        .cloned()
        .expect("the check-in is in the log")
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_signed_event_on_the_fourth_attempt() {
    let hub = hub().await;
    let (receiver, url) = Receiver::start(3, false).await;
    let secret = "whsec-0123456789abcdef";
    let (status, hook) = hub
        .post(
            "/v1/webhooks",
            "f1",
            &json!({"url": url, "events": ["stop.checked_in"], "secret": secret}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert!(hook.get("secret").is_none(), "a given secret is not echoed");

    let event = manual_checkin(&hub, "t1").await;
    let got = receiver.wait_for(4).await;
    for (i, r) in got.iter().enumerate() {
        assert!(signature_is_valid(r, secret), "attempt {i}: signature");
        assert_eq!(
            r.headers["trackhub-event-id"],
            event["id"].to_string().as_str()
        );
        assert_eq!(r.headers["trackhub-event-type"], "stop.checked_in");
        assert_eq!(r.headers["content-type"], "application/json");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body, event, "the body is the event as the log has it");
    }
    // Delivered: recorded with its 4 attempts; nothing else was sent (trip.completed and
    // driver.online were not subscribed to).
    let path = format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    let delivery = loop {
        let (_, list) = hub.get(&path, "f1").await;
        let d = list["deliveries"][0].clone();
        if d["status"] == "delivered" || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 4);
    assert_eq!(delivery["event_id"], event["id"]);
    assert_eq!(receiver.calls.load(Ordering::SeqCst), 4);
    hub.stop().await;
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_goes_to_the_dead_letter_list_and_can_be_redelivered() {
    let hub = hub().await;
    let (receiver, url) = Receiver::start(0, true).await;
    let (status, hook) = hub
        .post("/v1/webhooks", "f1", &json!({"url": url, "events": ["*"]}))
        .await;
    assert_eq!(status, 201);
    let secret = hook["secret"]
        .as_str()
        .expect("a generated secret, shown once")
        .to_string();
    assert_eq!(secret.len(), 64);
    let id = hook["id"].as_str().unwrap().to_string();

    let event = manual_checkin(&hub, "t1").await;
    // Retried until the 2 s window closes, then dead.
    let dead_path = format!("/v1/webhooks/{id}/deliveries?status=dead");
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let (_, list) = hub.get(&dead_path, "f1").await;
        if let Some(d) = list["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event_id"] == event["id"])
        {
            break d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dead["attempts"].as_i64().unwrap() >= 3, "{dead}");
    assert_eq!(dead["last_status"], 503);
    assert_eq!(dead["last_error"], "HTTP 503 Service Unavailable");

    // The receiver recovers; the admin redelivers from the dead-letter list.
    receiver.down.store(false, Ordering::SeqCst);
    let before = receiver.calls.load(Ordering::SeqCst);
    let redeliver = format!("/v1/webhooks/{id}/deliveries/{}/redeliver", dead["id"]);
    let (status, queued) = hub.post(&redeliver, "f1", &json!({})).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "pending");
    let got = receiver.wait_for(before + 1).await;
    let last = got.last().unwrap();
    assert!(signature_is_valid(last, &secret));
    assert_eq!(
        last.headers["trackhub-event-id"],
        event["id"].to_string().as_str()
    );

    // Unknown ids are 404; another fleet sees nothing of this webhook.
    assert_eq!(
        hub.post(
            &format!("/v1/webhooks/{id}/deliveries/999999/redeliver"),
            "f1",
            &json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        hub.post(
            &format!("/v1/webhooks/{id}/deliveries/x/redeliver"),
            "f1",
            &json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(hub.get(&dead_path, "f2").await.0, 404);
    assert_eq!(hub.get("/v1/webhooks", "f2").await.1["webhooks"], json!([]));
    hub.stop().await;
}

#[tokio::test]
async fn webhooks_are_validated_listed_without_secrets_and_deleted() {
    let hub = hub().await;
    for (body, field) in [
        (json!({"url": "ftp://x/y", "events": ["*"]}), "url"),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/h", "events": []}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "events": ["stop.arrived"]}),
            "events[0]",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "events": ["*"], "secret": "short"}),
            "secret",
        ),
    ] {
        let (status, problem) = hub.post("/v1/webhooks", "f1", &body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let driver = hub.token(Role::Driver, "D1", "f1");
    let body = json!({"url": "http://127.0.0.1:9/h", "events": ["*"]});
    assert_eq!(hub.post_as("/v1/webhooks", &driver, &body).await.0, 403);
    let (status, hook) = hub.post("/v1/webhooks", "f1", &body).await;
    assert_eq!(status, 201);
    let (_, list) = hub.get("/v1/webhooks", "f1").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(list["webhooks"][0].get("secret").is_none());
    assert_eq!(list["webhooks"][0]["events"], json!(["*"]));

    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let delete = |token: String| {
        let (http, url) = (hub.http.clone(), hub.url(&path));
        async move {
            http.delete(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(hub.token(Role::Admin, "a", "f2")).await, 404);
    assert_eq!(delete(hub.token(Role::Admin, "a", "f1")).await, 204);
    assert_eq!(delete(hub.token(Role::Admin, "a", "f1")).await, 404);
    assert_eq!(hub.get("/v1/webhooks", "f1").await.1["webhooks"], json!([]));

    // At most 16 webhooks per fleet (issue 16: unlimited); the 17th is a 409, other fleets are
    // not affected.
    for i in 0..16 {
        let body = json!({"url": format!("http://127.0.0.1:9/h{i}"), "events": ["*"]});
        assert_eq!(hub.post("/v1/webhooks", "f1", &body).await.0, 201, "{i}");
    }
    let (status, problem) = hub.post("/v1/webhooks", "f1", &body).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("16 webhooks"));
    assert_eq!(hub.post("/v1/webhooks", "f2", &body).await.0, 201);
    hub.stop().await;
}

/// A fleet whose receiver never answers (a tarpit) with a backlog of deliveries does not hold
/// up another fleet's (issue 16: deliveries were claimed in global due order, so a tarpit fleet
/// filled every request slot until its timeouts). Fleet f1's 30 events are due first; f2's one
/// event is still delivered long before f1's requests time out.
#[tokio::test]
async fn a_tarpit_fleet_does_not_starve_another_fleets_webhooks() {
    let hub = TestHub::start_with(|c| {
        c.webhooks.timeout = Duration::from_secs(60);
        c.webhooks.poll = Duration::from_millis(50);
    })
    .await;
    // Accepts connections and reads requests, never answers.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_url = format!("http://{}/hook", tarpit.local_addr().unwrap());
    let held = Arc::new(AtomicUsize::new(0));
    let counter = held.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = tarpit.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    let (fast, fast_url) = Receiver::start(0, false).await;
    for (fleet, url) in [("f1", &tarpit_url), ("f2", &fast_url)] {
        let body = json!({"url": url, "events": ["driver.online"]});
        assert_eq!(hub.post("/v1/webhooks", fleet, &body).await.0, 201);
    }
    let mut drivers = Vec::new();
    for i in 0..30 {
        let mut d = hub.driver(&format!("D{i}"), "f1").await;
        d.ping_acked(ping(1, now_ms() - 1000, 41.15, -8.61)).await;
        drivers.push(d);
    }
    // f1's deliveries are in flight (the tarpit holds them) before f2's event exists.
    let deadline = tokio::time::Instant::now() + WAIT;
    while held.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tarpit never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut f2 = hub.driver("E1", "f2").await;
    f2.ping_acked(ping(1, now_ms() - 1000, 41.15, -8.61)).await;
    // Within WAIT (10 s), far inside f1's 60 s timeouts.
    let got = fast.wait_for(1).await;
    assert!(got[0].body.contains("\"E1\""), "{}", got[0].body);
    let in_tarpit = held.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&in_tarpit),
        "f1 holds {in_tarpit} requests; its cap is 4"
    );
    hub.stop().await;
}

/// With the default policy a fleet admin cannot aim webhooks at the operator's network: targets
/// that are (or resolve to) loopback, private, link-local (the cloud metadata address) or
/// unique-local get 422; and a webhook registered while the operator allowed private targets is
/// refused at delivery once they are not, by the resolver, with the one generic error: the
/// receiver listening there is never called (issue 16).
#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let hub = TestHub::start_with(|c| {
        c.webhooks.allow_private = false;
        c.webhooks.retry_base = Duration::from_millis(50);
        c.webhooks.retry_max = Duration::from_millis(100);
        c.webhooks.poll = Duration::from_millis(50);
    })
    .await;
    let (receiver, url) = Receiver::start(0, false).await;
    let port = url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for target in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://127.0.0.1:6379/".to_string(),
        "http://10.0.0.7/hook".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://[::1]:8080/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://localhost:8080/".to_string(),
    ] {
        let (status, body) = hub
            .post(
                "/v1/webhooks",
                "f1",
                &json!({"url": target, "events": ["*"]}),
            )
            .await;
        assert_eq!(status, 422, "{target}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{body}");
    }

    // Registered while allowed, by name; then the operator turns private targets off.
    let mut hub = hub;
    hub.cfg.webhooks.allow_private = true;
    let mut hub = hub.restart().await;
    let by_name = format!("http://localhost:{port}/hook");
    let (status, hook) = hub
        .post(
            "/v1/webhooks",
            "f1",
            &json!({"url": by_name, "events": ["stop.checked_in"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    hub.cfg.webhooks.allow_private = false;
    let hub = hub.restart().await;
    manual_checkin(&hub, "t1").await;
    let path = format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    let delivery = loop {
        let (_, list) = hub.get(&path, "f1").await;
        let d = list["deliveries"][0].clone();
        if d["attempts"].as_i64().unwrap_or(0) >= 2 || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(delivery["attempts"].as_i64().unwrap() >= 2, "{delivery}");
    assert_eq!(
        delivery["last_error"], "target address not allowed",
        "{delivery}"
    );
    assert_eq!(delivery["last_status"], Value::Null);
    assert_eq!(
        receiver.calls.load(Ordering::SeqCst),
        0,
        "the receiver was never called"
    );
    hub.stop().await;
}
