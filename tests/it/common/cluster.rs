//! Several hub *processes* (the real `trackhub serve` binary) on 127.0.0.1 ports, sharing one
//! PostgreSQL database and one Redis server that the harness starts on its own port, so a test can
//! kill and restart Redis without touching anyone else's.
//!
//! PostgreSQL: the server at `TRACKHUB_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! started by `scripts/ensure-services.sh`); each cluster gets a fresh database, dropped on `stop`.
//! Redis: `redis-server` from PATH (installed by the same script). A missing one fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use trackhub::auth::{Keys, Role};

use super::{create_database, drop_database, get_json, post_json, temp_dir, ws_url, Ws, WAIT};

/// A free TCP port on 127.0.0.1 (bound then released: fine for a test that starts at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Waits up to `limit` for the process to exit by itself; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        let child = self.0.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Redis server.
pub struct RedisServer {
    pub port: u16,
    proc: Proc,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = free_port();
        let mut r = Self {
            port,
            proc: Proc(None),
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: connections drop as in a crash).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.proc.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server not runnable ({e}): run `bash scripts/ensure-services.sh`")
            });
        self.proc = Proc(Some(child));
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `(calls of PUBLISH so far)` from INFO commandstats.
    pub async fn publish_calls(&self) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// One `trackhub serve` process.
pub struct Node {
    pub base: String,
    pub log: PathBuf,
    proc: Proc,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        ws_url(&self.base, path, token)
    }

    /// Stops the process (SIGKILL).
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// Hub nodes on one database and one Redis.
pub struct Cluster {
    pub redis: RedisServer,
    pub nodes: Vec<Node>,
    pub keys: Keys,
    pub http: reqwest::Client,
    pg_server: String,
    pub database_url: String,
    db_name: String,
    dir: PathBuf,
}

const SECRET: &str = "cluster-test-secret-0123456789abcdef";

impl Cluster {
    /// Starts Redis, a fresh PostgreSQL database and `n` hub processes, and waits until every
    /// node reports `ready` with its bus connected.
    pub async fn start(n: usize) -> Self {
        let redis = RedisServer::start().await;
        let pg_server = std::env::var("TRACKHUB_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let (database_url, db_name) = create_database(&pg_server).await;
        let mut cluster = Self {
            redis,
            nodes: Vec::new(),
            keys: Keys::from_secret(SECRET.as_bytes()),
            http: reqwest::Client::new(),
            pg_server,
            database_url,
            db_name,
            dir: temp_dir(),
        };
        for _ in 0..n {
            cluster.add_node().await;
        }
        cluster
    }

    /// Starts one more node and waits for it to be ready; returns its index.
    pub async fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let port = free_port();
        let data_dir = self.dir.join(format!("node{i}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = data_dir.join("hub.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trackhub"))
            .arg("serve")
            .env("TRACKHUB_ADDR", format!("127.0.0.1:{port}"))
            .env("TRACKHUB_DATA_DIR", &data_dir)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", self.redis.url())
            .env("TRACKHUB_JWT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            // The tests' webhook receivers listen on loopback.
            .env("TRACKHUB_WEBHOOK_ALLOW_PRIVATE", "true")
            // Streams must hear of other nodes' events through Redis, not by re-reading the log.
            .env("TRACKHUB_STREAM_REREAD_MS", "600000")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("trackhub binary runs");
        self.nodes.push(Node {
            base: format!("http://127.0.0.1:{port}"),
            log,
            proc: Proc(Some(child)),
        });
        self.wait_status(i, "ready").await;
        i
    }

    /// Waits until node `i`'s `/readyz` says `status`; panics (with the node's log) after `WAIT`.
    pub async fn wait_status(&self, i: usize, status: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self
                .http
                .get(self.nodes[i].url("/readyz"))
                .send()
                .await
                .ok();
            let body: Option<Value> = match got {
                Some(r) => r.json().await.ok(),
                None => None,
            };
            if body.as_ref().is_some_and(|b| b["status"] == status) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "node {i} not {status} within {WAIT:?}: {body:?}\n--- log ---\n{}",
                    self.log_of(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn token(&self, role: Role, sub: &str, fleet: &str) -> String {
        self.keys.mint(sub, role, fleet, 3600)
    }

    pub async fn driver(&self, node: usize, sub: &str, fleet: &str) -> Ws {
        let t = self.token(Role::Driver, sub, fleet);
        Ws::connect(&self.nodes[node].ws_url("/v1/ws/driver", &t)).await
    }

    /// A service's stream socket on node `i` (`/v1/ws/stream?{query}`).
    pub async fn stream(&self, node: usize, fleet: &str, query: &str) -> Ws {
        let t = self.token(Role::Service, "svc", fleet);
        Ws::connect(&format!(
            "{}&{query}",
            self.nodes[node].ws_url("/v1/ws/stream", &t)
        ))
        .await
    }

    pub async fn watcher(&self, node: usize, fleet: &str) -> Ws {
        let t = self.token(Role::Admin, "admin", fleet);
        Ws::connect(&self.nodes[node].ws_url("/v1/ws/watch", &t)).await
    }

    /// GET as an admin of `fleet` on node `i`: (status, JSON body).
    pub async fn get(&self, i: usize, path: &str, fleet: &str) -> (u16, Value) {
        let token = self.token(Role::Admin, "admin", fleet);
        get_json(&self.http, &self.nodes[i].url(path), &token).await
    }

    /// POST JSON as an admin of `fleet` on node `i`: (status, JSON body).
    pub async fn post(&self, i: usize, path: &str, fleet: &str, body: &Value) -> (u16, Value) {
        let token = self.token(Role::Admin, "admin", fleet);
        post_json(&self.http, &self.nodes[i].url(path), &token, body).await
    }

    /// Polls GET on node `i` until `pred` holds for the body; returns it. Panics after `within`.
    pub async fn poll(
        &self,
        i: usize,
        path: &str,
        fleet: &str,
        within: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, body) = self.get(i, path, fleet).await;
            if pred(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} on node {i}: condition not met within {within:?}; last body {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills every node and Redis, drops the database.
    pub async fn stop(mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        self.redis.kill();
        drop_database(&self.pg_server, &self.db_name).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
