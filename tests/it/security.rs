//! Who may connect and what they may do, and the abuse limits, against a real hub: one test per
//! rule of tokens (HS256, RS256 from PEM, ES256 from JWKS, iss/aud/nbf/exp, `alg: none`,
//! algorithm confusion), roles and fleets, Origin and CORS, frame size, floods and socket counts.

use crate::common;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use trackhub::auth::{AuthConfig, Role};
use trackhub::limits::LimitsConfig;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;
const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "trackhub";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// Claims of an identity provider's token; `patch` overrides or removes (`null`) fields.
fn idp_claims(patch: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"sub":"D1","role":"driver","fleet":"f1","iss":ISSUER,"aud":AUDIENCE,
                       "iat":now,"exp":now + 600});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn idp_hub() -> TestHub {
    TestHub::start_with(|c| {
        c.auth = AuthConfig {
            public_key_files: vec![fixture("rsa_public.pem")],
            jwks_file: Some(fixture("jwks.json")),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
        };
    })
    .await
}

#[tokio::test]
async fn tokens_are_verified_by_algorithm_key_and_claims() {
    let hub = idp_hub().await;
    let driver = |token: &str| hub.ws_url("/v1/ws/driver", token);
    let no_token = hub.url("/v1/ws/driver").replacen("http://", "ws://", 1);
    assert_eq!(upgrade_status(&no_token, &[]).await, 401, "no token");
    assert_eq!(
        upgrade_status(&driver("garbage"), &[]).await,
        401,
        "garbage"
    );

    let ok = idp_claims(json!({}));
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "hub-minted HS256 (carries iss/aud)",
            hub.token(Role::Driver, "D1", "f1"),
            101,
        ),
        (
            "RS256, PEM key, no kid",
            sign(Algorithm::RS256, None, &rsa_key(), &ok),
            101,
        ),
        (
            "RS256, JWKS kid",
            sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &ok),
            101,
        ),
        (
            "ES256, JWKS kid",
            sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &ok),
            101,
        ),
        (
            "wrong key: HS256 with another secret",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(b"not the hub's"),
                &ok,
            ),
            401,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(ok.to_string().as_bytes())
            ),
            401,
        ),
        (
            "algorithm confusion: HS256 keyed with the RSA public key",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(&std::fs::read(fixture("rsa_public.pem")).unwrap()),
                &ok,
            ),
            401,
        ),
        (
            "ES256 under the RSA key's kid",
            sign(Algorithm::ES256, Some("rsa-1"), &ec_key(), &ok),
            401,
        ),
        (
            "expired beyond the 30 s leeway",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"exp": chrono::Utc::now().timestamp() - 120})),
            ),
            401,
        ),
        (
            "no exp",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"exp": null})),
            ),
            401,
        ),
        (
            "not yet valid (nbf in an hour)",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"nbf": chrono::Utc::now().timestamp() + 3600})),
            ),
            401,
        ),
        (
            "wrong audience",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"aud": "billing"})),
            ),
            401,
        ),
        (
            "no audience",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"aud": null})),
            ),
            401,
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"iss": "https://evil.example/"})),
            ),
            401,
        ),
        (
            "no role",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"role": null})),
            ),
            401,
        ),
        (
            "admin on the driver socket",
            sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &idp_claims(json!({"role": "admin"})),
            ),
            403,
        ),
    ];
    for (what, token, want) in &cases {
        assert_eq!(upgrade_status(&driver(token), &[]).await, *want, "{what}");
    }
    // The same token in the Authorization header instead of the query.
    let bearer = format!("Bearer {}", cases[1].1);
    let url = hub.url("/v1/ws/driver").replacen("http://", "ws://", 1);
    assert_eq!(
        upgrade_status(&url, &[("authorization", &bearer)]).await,
        101
    );

    let watch = |token: &str| hub.ws_url("/v1/ws/watch", token);
    assert_eq!(
        upgrade_status(&watch(&hub.token(Role::Driver, "D1", "f1")), &[]).await,
        403,
        "driver on the watch socket"
    );
    assert_eq!(
        upgrade_status(&watch(&hub.token(Role::Service, "svc", "f1")), &[]).await,
        101
    );

    // REST: 401 and 403 as problem+json.
    let r = hub.http.get(hub.url("/v1/drivers")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], 401);
    let (status, body) = hub
        .get_as("/v1/drivers", &hub.token(Role::Driver, "D1", "f1"))
        .await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (403, Some(403)),
        "{body}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn nobody_reads_or_writes_what_is_not_theirs() {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    let mut d1 = hub.driver("D1", "f1").await;
    d1.ping_acked(ping(1, now_ms() - 1000, LAT, LON)).await;

    // An admin of another fleet sees nothing of f1 and cannot check its driver in.
    assert_eq!(hub.get("/v1/trips/t1", "f2").await.0, 404);
    assert_eq!(hub.get("/v1/drivers/D1", "f2").await.0, 404);
    let (_, list) = hub.get("/v1/drivers", "f2").await;
    assert_eq!(list["drivers"], json!([]));
    let (status, _) = hub
        .post("/v1/trips/t1/stops/s1/checkin", "f2", &json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(hub.get("/v1/checkins", "f1").await.1["checkins"], json!([]));

    // A driver reads only its own data.
    let d2_token = hub.token(Role::Driver, "D2", "f1");
    assert_eq!(hub.get_as("/v1/drivers/D1", &d2_token).await.0, 403);
    assert_eq!(hub.get_as("/v1/drivers/D1/track", &d2_token).await.0, 403);
    assert_eq!(hub.post_as("/v1/trips", &d2_token, &trip).await.0, 403);

    // A driver publishing as another: an error frame for that fix, then close 4003.
    let mut d2 = hub.driver("D2", "f1").await;
    d2.send(&json!({"type":"ping","seq":1,"ts":now_ms(),"lat":LAT,"lon":LON,"driver_id":"D1"}))
        .await;
    let err = d2.json().await;
    assert_eq!(
        (err["code"].as_str(), err["seq"].as_u64()),
        (Some("forbidden"), Some(1))
    );
    assert_eq!(d2.close_code().await, Some(4003));
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT, "D1's position is untouched");
    assert_eq!(hub.get("/v1/drivers/D2", "f1").await.0, 404);
    hub.stop().await;
}

/// Issue 16: trip ids were one global key, so fleet f2 creating `t1` got 409 and learned that
/// another fleet had a trip `t1`. Ids are scoped per fleet: both fleets have their own `t1`, and
/// a check-in of one touches nothing of the other.
#[tokio::test]
async fn trip_ids_are_scoped_per_fleet() {
    let hub = TestHub::start().await;
    let trip = |driver: &str| json!({"id":"t1","driver_id":driver,"stops":[{"id":"s1","lat":LAT,"lon":LON},{"id":"s2","lat":LAT+0.01,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip("D1")).await.0, 201);
    let (status, body) = hub.post("/v1/trips", "f2", &trip("D9")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(hub.post("/v1/trips", "f1", &trip("D1")).await.0, 409);
    assert_eq!(hub.get("/v1/trips/t1", "f2").await.1["driver_id"], "D9");

    let (status, _) = hub
        .post("/v1/trips/t1/stops/s1/checkin", "f2", &json!({}))
        .await;
    assert_eq!(status, 201);
    let (_, f1_trip) = hub.get("/v1/trips/t1", "f1").await;
    assert_eq!(f1_trip["stops"][0]["status"], "pending");
    assert_eq!(hub.get("/v1/checkins", "f1").await.1["checkins"], json!([]));
    // f1 checks in its own s1 once (the check-in of f2's s1 did not take its place).
    let (status, _) = hub
        .post("/v1/trips/t1/stops/s1/checkin", "f1", &json!({}))
        .await;
    assert_eq!(status, 201);
    let (_, f2_checkins) = hub.get("/v1/checkins", "f2").await;
    assert_eq!(f2_checkins["checkins"].as_array().unwrap().len(), 1);
    // Both fleets complete their own trip.
    for fleet in ["f1", "f2"] {
        let (status, _) = hub
            .post("/v1/trips/t1/stops/s2/checkin", fleet, &json!({}))
            .await;
        assert_eq!(status, 201);
        assert_eq!(
            hub.get("/v1/trips/t1", fleet).await.1["status"],
            "completed"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn oversize_frames_and_floods_are_closed_with_the_right_code() {
    let hub = TestHub::start().await;
    // Over 64 KiB: 1009 (message too big).
    let mut d = hub.driver("D1", "f1").await;
    d.send_raw(Message::Text("x".repeat(65 * 1024).into()))
        .await;
    assert_eq!(d.close_code().await, Some(1009));

    // A flood past the default 20 msg/s (burst 40): `rate_limited`, then 1008, and the fixes
    // acked before it are kept.
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 100_000;
    for seq in 1..=100 {
        d.send(&ping(seq, t + seq as i64, LAT, LON)).await;
    }
    let mut acked = 0;
    let refusal = d
        .until(|f| {
            if f["type"] == "ack" {
                acked = f["seq"].as_u64().unwrap();
            }
            f["type"] == "error"
        })
        .await;
    assert_eq!(refusal["code"], "rate_limited");
    assert_eq!(d.close_code().await, Some(1008));
    assert!((40..100).contains(&acked), "acked {acked}");
    hub.wait_track("/v1/drivers/D1/track?from=0", "f1", acked)
        .await;
    hub.stop().await;
}

#[tokio::test]
async fn sockets_per_driver_and_connections_per_ip_are_capped() {
    let hub = TestHub::start_with(|c| {
        c.limits = LimitsConfig {
            sockets_per_driver: 2,
            conns_per_ip_per_s: 1,
            conn_burst_per_ip: 4,
            ..Default::default()
        }
    })
    .await;
    let a = hub.driver("D1", "f1").await;
    let mut b = hub.driver("D1", "f1").await;
    let mut c = hub.driver("D1", "f1").await;
    assert_eq!(c.json().await["code"], "too_many_sockets");
    assert_eq!(c.close_code().await, Some(1008));
    // The first two still work.
    b.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    a.close().await;
    // Fourth connection within the burst, fifth over it (the IP's bucket refills at 1/s; the
    // whole test runs well within a second of the first connection).
    let mut d = hub.driver("D1", "f1").await;
    d.ping_acked(ping(2, now_ms(), LAT, LON)).await;
    let mut e = hub.watcher("f1").await;
    assert_eq!(e.json().await["code"], "rate_limited");
    assert_eq!(e.close_code().await, Some(1008));
    hub.stop().await;
}

/// Issue 16: a watcher identity could open any number of sockets and streams, and every
/// subscribe built a full snapshot. Now: a cap per (fleet, sub) over watch sockets, stream
/// sockets and SSE together, and at most one snapshot per 250 ms per socket, the last subscribe
/// of a burst winning.
#[tokio::test]
async fn watcher_sockets_are_capped_per_identity_and_snapshots_throttled() {
    let hub = TestHub::start_with(|c| {
        c.limits = LimitsConfig {
            sockets_per_watcher: 3,
            ..Default::default()
        }
    })
    .await;
    let mut a = hub.driver("A", "f1").await;
    a.ping_acked(ping(1, now_ms() - 1000, LAT, LON)).await;
    let mut b = hub.driver("B", "f1").await;
    b.ping_acked(ping(1, now_ms() - 1000, LAT + 1.0, LON)).await;

    let mut w = hub.watcher("f1").await;
    // A burst of 9 subscribes around A, then one around B.
    let around =
        |lat: f64| json!({"type":"subscribe","bbox":[LON - 0.1, lat - 0.1, LON + 0.1, lat + 0.1]});
    for _ in 0..9 {
        w.send(&around(LAT)).await;
    }
    w.send(&around(LAT + 1.0)).await;
    let mut snapshots_of_a = 0;
    loop {
        let f = w.until(|f| f["type"] == "snapshot").await;
        let ids: Vec<&str> = f["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["driver_id"].as_str().unwrap())
            .collect();
        if ids == ["B"] {
            break;
        }
        assert_eq!(ids, ["A"]);
        snapshots_of_a += 1;
    }
    assert!(
        snapshots_of_a <= 2,
        "{snapshots_of_a} snapshots built for a burst of 9 (one immediately, the rest coalesced)"
    );

    // Same identity ("admin" of f1): a stream and an SSE stream fill the cap of 3.
    let mut s = hub.stream("f1", "mode=latest").await; // "billing": another identity
    assert_eq!(s.json().await["type"], "snapshot");
    let admin = hub.token(Role::Admin, "admin", "f1");
    let stream_url = format!("{}&mode=none", hub.ws_url("/v1/ws/stream", &admin));
    let _s2 = Ws::connect(&stream_url).await;
    let sse_url = hub.url("/v1/stream?mode=none");
    let (status, sse) = common::sse::Sse::connect(&hub.http, &sse_url, &admin, None).await;
    assert_eq!(status, 200);
    let mut over = hub.watcher("f1").await;
    assert_eq!(over.json().await["code"], "too_many_sockets");
    assert_eq!(over.close_code().await, Some(1008));
    let mut over = Ws::connect(&stream_url).await;
    assert_eq!(over.json().await["code"], "too_many_sockets");
    let (status, _) = common::sse::Sse::connect(&hub.http, &sse_url, &admin, None).await;
    assert_eq!(status, 429);
    // Closing one frees its place (the hub notices the closed SSE response asynchronously).
    drop(sse);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = common::sse::Sse::connect(&hub.http, &sse_url, &admin, None).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SSE slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_token_expires() {
    let hub = TestHub::start().await;
    let keys = &hub.running.as_ref().unwrap().state.keys;
    let token = keys.mint("D1", Role::Driver, "f1", 2);
    let mut d = Ws::connect(&hub.ws_url("/v1/ws/driver", &token)).await;
    d.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    let err = d.json().await;
    assert_eq!(err["code"], "token_expired");
    assert_eq!(d.close_code().await, Some(4001));
    hub.stop().await;
}

#[tokio::test]
async fn browser_origins_are_checked_and_rest_answers_cors() {
    let hub =
        TestHub::start_with(|c| c.allowed_origins = vec!["https://ops.example.com".into()]).await;
    let url = hub.ws_url("/v1/ws/watch", &hub.token(Role::Admin, "a", "f1"));
    let own = hub.base.clone();
    assert_eq!(
        upgrade_status(&url, &[("origin", "https://evil.example.com")]).await,
        403
    );
    assert_eq!(
        upgrade_status(&url, &[("origin", "https://ops.example.com")]).await,
        101
    );
    assert_eq!(
        upgrade_status(&url, &[("origin", &own)]).await,
        101,
        "same origin"
    );
    assert_eq!(upgrade_status(&url, &[]).await, 101, "not a browser");

    let preflight = |origin: &'static str| {
        hub.http
            .request(reqwest::Method::OPTIONS, hub.url("/v1/drivers"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let r = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let r = preflight("https://evil.example.com").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    hub.stop().await;
}

/// `?access_token=` is taken on WebSocket upgrades and SSE requests only (the browser requests
/// that cannot carry a header): on any other REST call it is ignored, so a token never has to
/// travel in a URL that proxies log (issue 16).
#[tokio::test]
async fn tokens_in_query_strings_only_on_socket_upgrades_and_sse() {
    let hub = TestHub::start().await;
    let admin = hub.token(Role::Admin, "ops", "f1");
    let plain = hub
        .http
        .get(hub.url(&format!(
            "/v1/drivers?bbox=-180,-90,180,90&access_token={admin}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status().as_u16(),
        401,
        "a REST call with the token in its URL"
    );
    let (status, _) = hub.get("/v1/drivers?bbox=-180,-90,180,90", "f1").await;
    assert_eq!(status, 200, "the same call with the header");
    let sse = hub
        .http
        .get(hub.url(&format!("/v1/stream?access_token={admin}")))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 200, "an EventSource request");
    drop(sse);
    let mut watcher = Ws::connect(&hub.ws_url("/v1/ws/watch", &admin)).await;
    watcher
        .send(&json!({"type":"subscribe","bbox":[-9,41,-8,42]}))
        .await;
    assert_eq!(watcher.json().await["type"], "snapshot", "a socket upgrade");
    hub.stop().await;
}

/// The data dir is 0700 and the SQLite database (with its webhook secrets) 0600 (issue 16).
#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_and_database_are_private_to_the_hub_user() {
    use std::os::unix::fs::PermissionsExt;
    let hub = TestHub::start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hub.data_dir), 0o700);
    let db = hub.data_dir.join("trackhub.db");
    if db.exists() {
        assert_eq!(mode(&db), 0o600);
    }
    assert_eq!(mode(&hub.data_dir.join("jwt_secret")), 0o600);
    hub.stop().await;
}

/// A driver's fixes share one budget over all its sockets: past it a frame is refused whole with
/// `rate_limited` and `retry_after_ms` (no ack, the socket stays open, the phone keeps the
/// fixes); acks of later frames stay below the refused seqs until they are resent; the resent
/// frame is acked (issue 16: 4 sockets × 20 frames/s × 1,000 fixes could degrade every tenant).
#[tokio::test]
async fn fixes_per_driver_are_budgeted_with_a_retry_hint() {
    let hub = TestHub::start_with(|c| {
        c.limits.fixes_per_driver_per_s = 10;
        c.limits.fix_burst_per_driver = 20;
    })
    .await;
    let t = now_ms() - 60_000;
    let batch = |from: u64, n: u64| {
        let pings: Vec<Value> = (from..from + n)
            .map(|s| ping(s, t + s as i64 * 100, LAT, LON))
            .collect();
        json!({"type": "batch", "pings": pings})
    };
    let mut a = hub.driver("D1", "f1").await;
    a.send(&batch(1, 20)).await;
    a.until_ack(20).await;
    // A second socket of the same driver shares the budget.
    let mut b = hub.driver("D1", "f1").await;
    b.send(&batch(21, 5)).await;
    let refusal = b.json().await;
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["code"], "rate_limited", "{refusal}");
    let wait = refusal["retry_after_ms"].as_u64().expect("a retry hint");
    assert!(wait > 0 && wait <= 1_000, "{refusal}");
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    // A newer fix taken before the refused ones are resent: the ack (cumulative) must not tell
    // the phone to drop 21..25, which the hub never took.
    b.send(&batch(26, 1)).await;
    let ack = b.until(|f| f["type"] == "ack").await;
    assert_eq!(ack["seq"], 20, "acks stay below the refused seqs: {ack}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    b.send(&batch(21, 5)).await;
    b.until_ack(26).await;
    let track = hub
        .wait_track("/v1/drivers/D1/track?from=0", "f1", 26)
        .await;
    assert_eq!(track["properties"]["count"], 26);
    hub.stop().await;
}
