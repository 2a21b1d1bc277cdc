//! Test harness: a real hub on an ephemeral port, real WebSocket and HTTP clients.
//!
//! Backend: SQLite in a temp data dir, or PostgreSQL when `TRACKHUB_TEST_DATABASE_URL` is set
//! (each hub gets a fresh database created on that server). Nothing is mocked.
#![allow(dead_code)]

pub mod cluster;
pub mod sse;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trackhub::app::{start, Running};
use trackhub::auth::Role;
use trackhub::config::ServerConfig;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub running: Option<Running>,
    pub base: String,
    pub data_dir: PathBuf,
    pub cfg: ServerConfig,
    pub http: reqwest::Client,
    /// (server URL, database name) of a per-test PostgreSQL database, dropped on `stop`.
    pg: Option<(String, String)>,
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trackhub-test-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A fresh PostgreSQL database on the server at `server_url` (whose path names an existing
/// database): (its URL, its name). Panics with the URL when the server is unreachable.
pub async fn create_database(server_url: &str) -> (String, String) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server_url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {server_url} unreachable ({e}): run `bash scripts/ensure-services.sh`")
        });
    let name = format!("trackhub_test_{:016x}", rand::random::<u64>());
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let (prefix, _) = server_url
        .rsplit_once('/')
        .expect("database URL has a path");
    (format!("{prefix}/{name}"), name)
}

/// Drops a database made by `create_database`, connections and all.
pub async fn drop_database(server_url: &str, name: &str) {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server_url)
        .await
        .expect("postgres");
    sqlx::Executor::execute(
        &mut conn,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
    )
    .await
    .expect("drop test database");
}

/// A fresh PostgreSQL database on the server named by `TRACKHUB_TEST_DATABASE_URL`:
/// (its URL, the server URL, its name), or None when the variable is unset.
/// A fresh PostgreSQL database (url, server url, name) when `TRACKHUB_TEST_DATABASE_URL` is set.
pub async fn fresh_postgres() -> Option<(String, String, String)> {
    let base = std::env::var("TRACKHUB_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let (url, name) = create_database(&base).await;
    Some((url, base, name))
}

impl TestHub {
    /// Starts a hub with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a hub after `tweak` adjusts its config.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let data_dir = temp_dir();
        let mut cfg = ServerConfig::embedded("127.0.0.1:0".parse().unwrap(), data_dir.clone());
        let pg = fresh_postgres().await;
        if let Some((url, _, _)) = &pg {
            cfg.database_url = url.clone();
        }
        // The tests' webhook receivers listen on loopback; tests of the address policy turn
        // this back off in `tweak`.
        cfg.webhooks.allow_private = true;
        tweak(&mut cfg);
        Self::start_cfg(cfg, pg.map(|(_, server, name)| (server, name))).await
    }

    async fn start_cfg(cfg: ServerConfig, pg: Option<(String, String)>) -> Self {
        let running = start(cfg.clone()).await.expect("hub starts");
        let base = format!("http://{}", running.addr);
        Self {
            data_dir: cfg.data_dir.clone(),
            running: Some(running),
            base,
            cfg,
            http: reqwest::Client::new(),
            pg,
        }
    }

    /// Stops (drains) and starts again on the same database and data dir.
    pub async fn restart(mut self) -> Self {
        self.running
            .take()
            .unwrap()
            .stop(Duration::from_secs(5))
            .await
            .unwrap();
        let mut cfg = self.cfg.clone();
        cfg.addr = "127.0.0.1:0".parse().unwrap();
        Self::start_cfg(cfg, self.pg.take()).await
    }

    /// Drains the hub and removes its data dir (and its PostgreSQL database).
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop(Duration::from_secs(5)).await.unwrap();
        }
        if let Some((server, name)) = self.pg.take() {
            drop_database(&server, &name).await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    pub fn token(&self, role: Role, sub: &str, fleet: &str) -> String {
        self.running
            .as_ref()
            .unwrap()
            .state
            .keys
            .mint(sub, role, fleet, 3600)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        ws_url(&self.base, path, token)
    }

    pub async fn driver(&self, sub: &str, fleet: &str) -> Ws {
        Ws::connect(&self.ws_url("/v1/ws/driver", &self.token(Role::Driver, sub, fleet))).await
    }

    /// A service's stream socket (`/v1/ws/stream?{query}`) for `fleet`.
    pub async fn stream(&self, fleet: &str, query: &str) -> Ws {
        let token = self.token(Role::Service, "billing", fleet);
        Ws::connect(&format!("{}&{query}", self.ws_url("/v1/ws/stream", &token))).await
    }

    pub async fn watcher(&self, fleet: &str) -> Ws {
        Ws::connect(&self.ws_url("/v1/ws/watch", &self.token(Role::Admin, "admin", fleet))).await
    }

    /// GET as an admin of `fleet`; returns (status, JSON body).
    pub async fn get(&self, path: &str, fleet: &str) -> (u16, Value) {
        self.get_as(path, &self.token(Role::Admin, "admin", fleet))
            .await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        get_json(&self.http, &self.url(path), token).await
    }

    /// Polls a track endpoint until it holds `count` points (history is written in batches in
    /// the background); panics after `WAIT`.
    pub async fn wait_track(&self, path: &str, fleet: &str, count: u64) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, track) = self.get(path, fleet).await;
            if track["properties"]["count"].as_u64() == Some(count) {
                return track;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: expected {count} points, have {}",
                track["properties"]["count"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET path` (as the fleet's admin) until `pred` holds for the body; returns it;
    /// panics after `WAIT` with `what` and the last body.
    pub async fn wait_get(
        &self,
        path: &str,
        fleet: &str,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, body) = self.get(path, fleet).await;
            if pred(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: waited for {what}; last: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn post(&self, path: &str, fleet: &str, body: &Value) -> (u16, Value) {
        self.post_as(path, &self.token(Role::Admin, "admin", fleet), body)
            .await
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        post_json(&self.http, &self.url(path), token, body).await
    }
}

/// The WebSocket URL of `path` on the hub at `base` (`http://…`), token in the query.
pub fn ws_url(base: &str, path: &str, token: &str) -> String {
    format!(
        "{}{path}?access_token={token}",
        base.replacen("http://", "ws://", 1)
    )
}

/// GET with a bearer token: (status, JSON body or `null`).
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(token).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POST a JSON body with a bearer token: (status, JSON body or `null`).
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A WebSocket client. Tests speak JSON values; on a `trackhub.v1.proto` socket they travel as
/// protobuf binary frames (see `wire`).
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Set on a protobuf socket: which messages its binary frames hold.
    proto: Option<wire::Edge>,
}

/// The subprotocol a test socket asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No `Sec-WebSocket-Protocol` header: the hub's default, JSON.
    Default,
    Json,
    Proto,
}

impl Codec {
    pub fn header(self) -> Option<&'static str> {
        match self {
            Codec::Default => None,
            Codec::Json => Some("trackhub.v1.json"),
            Codec::Proto => Some("trackhub.v1.proto"),
        }
    }
}

/// What a receive saw.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(Option<CloseFrame>),
}

impl Ws {
    pub async fn connect(url: &str) -> Self {
        let (inner, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self { inner, proto: None }
    }

    /// Connects with the client socket's receive buffer set to `bytes` (SO_RCVBUF), so that a
    /// client that stops reading makes the server's writes block soon (slow-consumer tests).
    pub async fn connect_small_buffer(url: &str, bytes: u32) -> Self {
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("ws URL with a host");
        let addr = tokio::net::lookup_host(authority)
            .await
            .expect("resolves")
            .next()
            .expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("TCP connects");
        let (inner, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Self { inner, proto: None }
    }

    /// Connects asking for `codec`; asserts the hub agreed to it.
    pub async fn connect_codec(url: &str, codec: Codec, edge: wire::Edge) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        if let Some(p) = codec.header() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        let (inner, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(chosen.as_deref(), codec.header(), "negotiated subprotocol");
        let proto = (codec == Codec::Proto).then_some(edge);
        Self { inner, proto }
    }

    pub async fn send(&mut self, v: &Value) {
        let msg = match self.proto {
            Some(edge) => Message::Binary(wire::encode(edge, v).into()),
            None => Message::Text(v.to_string().into()),
        };
        self.inner.send(msg).await.expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.inner.send(m).await.expect("send");
    }

    /// Next JSON frame or close, within `WAIT`.
    pub async fn next(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("frame within timeout");
            match msg {
                None => return Frame::Closed(None),
                Some(Err(e)) => panic!("socket error: {e}"),
                Some(Ok(Message::Text(t))) => {
                    assert!(self.proto.is_none(), "text frame on a protobuf socket: {t}");
                    return Frame::Json(serde_json::from_str(t.as_str()).expect("JSON frame"));
                }
                Some(Ok(Message::Binary(b))) => {
                    let edge = self.proto.expect("binary frame on a JSON socket");
                    return Frame::Json(wire::decode(edge, &b));
                }
                Some(Ok(Message::Close(c))) => return Frame::Closed(c),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next JSON frame; panics on close.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(v) => v,
            Frame::Closed(c) => panic!("socket closed: {c:?}"),
        }
    }

    /// Skips frames until one satisfies `pred`; panics after `WAIT`.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = tokio::time::timeout_at(deadline, self.json())
                .await
                .expect("expected frame within timeout");
            if pred(&v) {
                return v;
            }
        }
    }

    /// Waits for the close frame, skipping any JSON before it; returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Frame::Json(_) => continue,
                Frame::Closed(c) => return c.map(|c| u16::from(c.code)),
            }
        }
    }

    /// Sends a ping and waits for its ack (the hub processed every seq up to it).
    pub async fn ping_acked(&mut self, ping: Value) -> Vec<Value> {
        let seq = ping["seq"].as_u64().unwrap();
        self.send(&ping).await;
        self.until_ack(seq).await
    }

    /// Collects frames until an ack ≥ `seq`; returns everything received, ack included.
    pub async fn until_ack(&mut self, seq: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.json().await;
            let done = v["type"] == "ack" && v["seq"].as_u64().unwrap() >= seq;
            seen.push(v);
            if done {
                return seen;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }
}

/// The HTTP status of a socket upgrade (101 when it succeeded) with extra request headers.
pub async fn upgrade_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    trackhub::model::now_ms()
}

/// A ping frame.
pub fn ping(seq: u64, ts_ms: i64, lat: f64, lon: f64) -> Value {
    json!({"type": "ping", "seq": seq, "ts": ts_ms, "lat": lat, "lon": lon, "accuracy_m": 8.0})
}

/// Metres per degree of latitude (mean sphere).
pub const M_PER_DEG: f64 = 111_195.0;

/// (lat, lon) `north_m` north and `east_m` east of (lat0, lon0).
pub fn offset(lat0: f64, lon0: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    (
        lat0 + north_m / M_PER_DEG,
        lon0 + east_m / (M_PER_DEG * lat0.to_radians().cos()),
    )
}

/// Path to a shared dataset; panics with a clear message when the data is missing.
pub fn shared_data(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    assert!(
        p.exists(),
        "shared dataset missing: {} (tests read ../shared/data next to the project)",
        p.display()
    );
    p
}

impl TestHub {
    /// A driver socket asking for `codec`.
    pub async fn driver_codec(&self, sub: &str, fleet: &str, codec: Codec) -> Ws {
        let url = self.ws_url("/v1/ws/driver", &self.token(Role::Driver, sub, fleet));
        Ws::connect_codec(&url, codec, wire::Edge::Driver).await
    }

    /// An admin's watch socket asking for `codec`.
    pub async fn watcher_codec(&self, fleet: &str, codec: Codec) -> Ws {
        let url = self.ws_url("/v1/ws/watch", &self.token(Role::Admin, "admin", fleet));
        Ws::connect_codec(&url, codec, wire::Edge::Watch).await
    }
}
