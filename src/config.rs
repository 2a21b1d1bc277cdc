//! Configuration of `trackhub serve`: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::geo::arrival::ArrivalConfig;
use crate::hub::HubConfig;

/// Flags of `trackhub serve`. Every one has a `TRACKHUB_…` variable (or `DATABASE_URL`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TRACKHUB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where the embedded database and the generated signing secret live.
    #[arg(long, env = "TRACKHUB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; default: `sqlite://<data-dir>/trackhub.db`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// `redis://host:port/db`: share positions and events with the other hub nodes through Redis
    /// pub/sub. Without it the hub is a single node (in-process fan-out).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// HS256 signing secret shared with other token issuers; default: generated in the data dir.
    #[arg(long, env = "TRACKHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A driver silent this long (server time) goes offline, seconds.
    #[arg(long, env = "TRACKHUB_PRESENCE_TIMEOUT_S", default_value_t = 120)]
    pub presence_timeout_s: u64,
    /// How far ahead of server time a fix may be stamped, seconds.
    #[arg(long, env = "TRACKHUB_MAX_FUTURE_S", default_value_t = 60)]
    pub max_future_s: u64,
    /// Watchers get coalesced positions once per this interval, ms.
    #[arg(long, env = "TRACKHUB_FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,
    /// Sockets silent this long are closed, seconds (the server pings at a third of it).
    #[arg(long, env = "TRACKHUB_IDLE_TIMEOUT_S", default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// Arrival dwell: time stationary inside a stop's radius before a check-in, seconds.
    #[arg(long, env = "TRACKHUB_DWELL_S", default_value_t = 75)]
    pub dwell_s: u64,
    /// Arrival: radius around the dwell centroid that still counts as stationary, metres.
    #[arg(long, env = "TRACKHUB_STATIONARY_RADIUS_M", default_value_t = 50.0)]
    pub stationary_radius_m: f64,
    /// Arrival: fixes with a worse reported accuracy are ignored, metres.
    #[arg(long, env = "TRACKHUB_MAX_ACCURACY_M", default_value_t = 50.0)]
    pub max_accuracy_m: f64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "TRACKHUB_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Redis pub/sub bus; `None` for a single node.
    pub redis_url: Option<String>,
    pub jwt_secret: Option<String>,
    pub hub: HubConfig,
    pub flush_interval_ms: u64,
    pub idle_timeout_s: u64,
}

impl ServeArgs {
    pub fn resolve(&self) -> ServerConfig {
        let arrival = ArrivalConfig {
            dwell_ms: self.dwell_s as i64 * 1000,
            stationary_radius_m: self.stationary_radius_m,
            max_accuracy_m: self.max_accuracy_m,
            ..ArrivalConfig::default()
        };
        ServerConfig {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            database_url: self
                .database_url
                .clone()
                .unwrap_or_else(|| sqlite_url(&self.data_dir)),
            redis_url: self.redis_url.clone().filter(|u| !u.is_empty()),
            jwt_secret: self.jwt_secret.clone(),
            hub: HubConfig {
                arrival,
                presence_timeout_ms: self.presence_timeout_s as i64 * 1000,
                max_future_ms: self.max_future_s as i64 * 1000,
            },
            flush_interval_ms: self.flush_interval_ms.max(1),
            idle_timeout_s: self.idle_timeout_s.max(3),
        }
    }
}

/// The embedded database URL for a data dir (created if missing).
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("trackhub.db").display()
    )
}

impl ServerConfig {
    /// Defaults for an embedded hub on `addr` with state in `data_dir` (used by tests).
    pub fn embedded(addr: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            addr,
            database_url: sqlite_url(&data_dir),
            data_dir,
            redis_url: None,
            jwt_secret: None,
            hub: HubConfig::default(),
            flush_interval_ms: 100,
            idle_timeout_s: 60,
        }
    }
}
