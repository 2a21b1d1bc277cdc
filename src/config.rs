//! Configuration of `trackhub serve`: flags, each with an environment variable.

use crate::eta::plan::AlertConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::AuthConfig;
use crate::geo::arrival::ArrivalConfig;
use crate::hub::HubConfig;
use crate::limits::LimitsConfig;
use crate::webhooks::WebhookConfig;

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
    /// PEM public keys of an identity provider (RS256 for RSA, ES256 for EC P-256), comma-separated.
    #[arg(long, env = "TRACKHUB_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_key: Vec<PathBuf>,
    /// A JWKS file (RFC 7517) of an identity provider, e.g. a saved `/.well-known/jwks.json`.
    #[arg(long, env = "TRACKHUB_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Required token issuer (`iss`), when set.
    #[arg(long, env = "TRACKHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required token audience (`aud`), when set.
    #[arg(long, env = "TRACKHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Browser origins allowed to open sockets and call REST (CORS), comma-separated, or `*`.
    /// Same-origin pages (the hub's own map) and non-browser clients are always allowed.
    #[arg(long, env = "TRACKHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Messages per second one socket may send (0: unlimited).
    #[arg(long, env = "TRACKHUB_MAX_MSGS_PER_S", default_value_t = LimitsConfig::default().msgs_per_s)]
    pub max_msgs_per_s: u32,
    /// Messages one socket may send in a burst.
    #[arg(long, env = "TRACKHUB_MAX_MSG_BURST", default_value_t = LimitsConfig::default().msg_burst)]
    pub max_msg_burst: u32,
    /// Fixes per second one driver may send over all its sockets and devices (0: no limit).
    #[arg(long, env = "TRACKHUB_MAX_FIXES_PER_DRIVER_PER_S", default_value_t = LimitsConfig::default().fixes_per_driver_per_s)]
    pub max_fixes_per_driver_per_s: u32,
    /// Fixes one driver may send in a burst (an offline buffer).
    #[arg(long, env = "TRACKHUB_MAX_FIX_BURST_PER_DRIVER", default_value_t = LimitsConfig::default().fix_burst_per_driver)]
    pub max_fix_burst_per_driver: u32,
    /// `/osmand` requests per second one device may make, burst ten times that (0: no limit).
    #[arg(long, env = "TRACKHUB_OSMAND_PER_DEVICE_PER_S", default_value_t = LimitsConfig::default().osmand_per_device_per_s)]
    pub osmand_per_device_per_s: u32,
    /// Requests per second per client IP to the public tracking pages `/t/…` (0: unlimited).
    #[arg(long, env = "TRACKHUB_PUBLIC_RATE_PER_IP", default_value_t = LimitsConfig::default().public_per_ip_per_s)]
    pub public_rate_per_ip: u32,
    /// Open driver sockets per driver.
    #[arg(long, env = "TRACKHUB_MAX_SOCKETS_PER_DRIVER", default_value_t = LimitsConfig::default().sockets_per_driver)]
    pub max_sockets_per_driver: u32,
    /// Open watcher sockets and streams (WebSocket and SSE) per identity (fleet and token `sub`).
    #[arg(long, env = "TRACKHUB_MAX_WATCH_SOCKETS_PER_IDENTITY", default_value_t = LimitsConfig::default().sockets_per_watcher)]
    pub max_watch_sockets_per_identity: u32,
    /// New sockets per second per client IP (0: unlimited, e.g. for load tests).
    #[arg(long, env = "TRACKHUB_CONN_RATE_PER_IP", default_value_t = LimitsConfig::default().conns_per_ip_per_s)]
    pub conn_rate_per_ip: u32,
    /// New sockets per client IP in a burst.
    #[arg(long, env = "TRACKHUB_CONN_BURST_PER_IP", default_value_t = LimitsConfig::default().conn_burst_per_ip)]
    pub conn_burst_per_ip: u32,
    /// Client IP from the rightmost `X-Forwarded-For` entry (only behind a proxy that sets it).
    #[arg(long, env = "TRACKHUB_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// A driver silent this long (server time) goes offline, seconds.
    #[arg(long, env = "TRACKHUB_PRESENCE_TIMEOUT_S", default_value_t = 120)]
    pub presence_timeout_s: u64,
    /// How far ahead of server time a fix may be stamped, seconds.
    #[arg(long, env = "TRACKHUB_MAX_FUTURE_S", default_value_t = 60)]
    pub max_future_s: u64,
    /// Watchers get coalesced positions once per this interval, ms.
    #[arg(long, env = "TRACKHUB_FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,
    /// `stop.approaching` fires when the next stop's ETA is at most this far ahead, seconds.
    #[arg(long, env = "TRACKHUB_APPROACH_ETA_S", default_value_t = AlertConfig::default().approach_eta_s)]
    pub approach_eta_s: f64,
    /// … or when the driver is at most this far from it, metres.
    #[arg(long, env = "TRACKHUB_APPROACH_DISTANCE_M", default_value_t = AlertConfig::default().approach_distance_m)]
    pub approach_distance_m: f64,
    /// A customer's tracking link keeps working this long after its stop's check-in (it shows
    /// "delivered at …"), then answers 410; seconds.
    #[arg(long, env = "TRACKHUB_LINK_GRACE_S", default_value_t = 3_600)]
    pub link_grace_s: u64,
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
    /// Log format: `text` (for people) or `json` (one object per line, for log shippers).
    #[arg(long, env = "TRACKHUB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT: how long open sockets get to close (after a 1012 close frame) before the
    /// hub stops waiting, flushes history and exits, seconds.
    #[arg(long, env = "TRACKHUB_DRAIN_TIMEOUT_S", default_value_t = 10)]
    pub drain_timeout_s: u64,
    /// Map tiles of the live map at `/` (`{z}/{x}/{y}` template, XYZ scheme). Empty: a plain
    /// background (offline installs). Default: OpenStreetMap's standard tiles, whose usage policy
    /// asks heavy users to run their own tile server.
    #[arg(long, env = "TRACKHUB_MAP_TILE_URL", default_value = MapConfig::OSM_TILES)]
    pub map_tile_url: String,
    /// Attribution shown under the map tiles (HTML allowed).
    #[arg(long, env = "TRACKHUB_MAP_TILE_ATTRIBUTION", default_value = MapConfig::OSM_ATTRIBUTION)]
    pub map_tile_attribution: String,
    /// Durable events older than this (server time of storage) are deleted, seconds (7 days).
    #[arg(long, env = "TRACKHUB_EVENT_RETENTION_S", default_value_t = EventsConfig::default().retention_s)]
    pub event_retention_s: u64,
    /// Stored fixes (track history) older than this many days (server time of storage) are
    /// deleted; 0 keeps them forever. 90 days: a quarter of delivery disputes and reports.
    #[arg(long, env = "TRACKHUB_TRACK_RETENTION_DAYS", default_value_t = 90)]
    pub track_retention_days: u64,
    /// Positions an `all`-mode stream may have queued before it is disconnected as too slow.
    #[arg(long, env = "TRACKHUB_STREAM_QUEUE", default_value_t = EventsConfig::default().stream_queue)]
    pub stream_queue: usize,
    /// How often a stream re-reads the event log when no wake-up came (a lost bus message), ms.
    #[arg(long, env = "TRACKHUB_STREAM_REREAD_MS", default_value_t = EventsConfig::default().reread_ms)]
    pub stream_reread_ms: u64,
    /// Webhook request timeout, seconds.
    #[arg(long, env = "TRACKHUB_WEBHOOK_TIMEOUT_S", default_value_t = 10)]
    pub webhook_timeout_s: u64,
    /// First webhook retry delay, ms; doubles per attempt, with jitter.
    #[arg(long, env = "TRACKHUB_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000)]
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two webhook attempts, seconds.
    #[arg(long, env = "TRACKHUB_WEBHOOK_RETRY_MAX_S", default_value_t = 3_600)]
    pub webhook_retry_max_s: u64,
    /// A webhook delivery still failing this long after its event goes to the dead-letter list,
    /// seconds (24 h).
    #[arg(long, env = "TRACKHUB_WEBHOOK_GIVE_UP_S", default_value_t = 86_400)]
    pub webhook_give_up_s: u64,
    /// Allow webhooks to private, loopback and link-local addresses (receivers on the
    /// operator's own network). Off by default: fleet admins may only target public addresses.
    #[arg(long, env = "TRACKHUB_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The live map's background tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapConfig {
    /// XYZ tile URL template; empty for a plain background.
    pub tile_url: String,
    /// Attribution HTML for the tiles.
    pub tile_attribution: String,
}

impl MapConfig {
    /// OpenStreetMap's standard tile layer.
    pub const OSM_TILES: &'static str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
    /// The attribution OpenStreetMap requires (ODbL).
    pub const OSM_ATTRIBUTION: &'static str =
        "&copy; <a href=\"https://www.openstreetmap.org/copyright\">OpenStreetMap</a> contributors";
}

impl Default for MapConfig {
    fn default() -> Self {
        Self {
            tile_url: Self::OSM_TILES.into(),
            tile_attribution: Self::OSM_ATTRIBUTION.into(),
        }
    }
}

/// The durable event log and the service streams that read it.
#[derive(Debug, Clone, Copy)]
pub struct EventsConfig {
    /// Retention of stored events, seconds. Default 7 days.
    pub retention_s: u64,
    /// Queue of an `all`-mode stream, positions. Default 16,384 (≈ 1.6 s of a 10k fixes/s fleet).
    pub stream_queue: usize,
    /// How often a stream re-reads the log without a wake-up (a lost bus message), ms.
    pub reread_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_s: 7 * 86_400,
            stream_queue: 16_384,
            reread_ms: 2_000,
        }
    }
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
    /// Identity-provider keys and required claims.
    pub auth: AuthConfig,
    /// Browser origins allowed besides the hub's own (`*`: any).
    pub allowed_origins: Vec<String>,
    pub limits: LimitsConfig,
    pub hub: HubConfig,
    pub flush_interval_ms: u64,
    pub idle_timeout_s: u64,
    pub events: EventsConfig,
    pub webhooks: WebhookConfig,
    pub map: MapConfig,
    /// How long a drain waits for sockets to close before flushing and exiting.
    pub drain_timeout: Duration,
    /// Stored fixes older than this (server time of storage) are deleted; `None` keeps them.
    pub track_retention: Option<Duration>,
    /// How long a tracking link works after its stop's check-in, s.
    pub link_grace_s: i64,
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
            auth: AuthConfig {
                public_key_files: self.jwt_public_key.clone(),
                jwks_file: self.jwks_file.clone(),
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
            },
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            limits: LimitsConfig {
                msgs_per_s: self.max_msgs_per_s,
                msg_burst: self.max_msg_burst,
                fixes_per_driver_per_s: self.max_fixes_per_driver_per_s,
                fix_burst_per_driver: self.max_fix_burst_per_driver,
                osmand_per_device_per_s: self.osmand_per_device_per_s,
                public_per_ip_per_s: self.public_rate_per_ip,
                sockets_per_driver: self.max_sockets_per_driver.max(1),
                sockets_per_watcher: self.max_watch_sockets_per_identity.max(1),
                conns_per_ip_per_s: self.conn_rate_per_ip,
                conn_burst_per_ip: self.conn_burst_per_ip,
                trust_forwarded_for: self.trust_forwarded_for,
            },
            hub: HubConfig {
                arrival,
                presence_timeout_ms: self.presence_timeout_s as i64 * 1000,
                max_future_ms: self.max_future_s as i64 * 1000,
                alerts: AlertConfig {
                    approach_eta_s: self.approach_eta_s.max(0.0),
                    approach_distance_m: self.approach_distance_m.max(0.0),
                    ..AlertConfig::default()
                },
                ..HubConfig::default()
            },
            link_grace_s: self.link_grace_s as i64,
            flush_interval_ms: self.flush_interval_ms.max(1),
            idle_timeout_s: self.idle_timeout_s.max(3),
            events: EventsConfig {
                retention_s: self.event_retention_s.max(1),
                stream_queue: self.stream_queue.max(1),
                reread_ms: self.stream_reread_ms.max(10),
            },
            webhooks: WebhookConfig {
                timeout: Duration::from_secs(self.webhook_timeout_s.max(1)),
                retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
                retry_max: Duration::from_secs(self.webhook_retry_max_s.max(1)),
                give_up_after: Duration::from_secs(self.webhook_give_up_s),
                allow_private: self.webhook_allow_private,
                ..WebhookConfig::default()
            },
            map: MapConfig {
                tile_url: self.map_tile_url.trim().to_string(),
                tile_attribution: self.map_tile_attribution.clone(),
            },
            drain_timeout: Duration::from_secs(self.drain_timeout_s),
            track_retention: (self.track_retention_days > 0)
                .then(|| Duration::from_secs(self.track_retention_days.saturating_mul(86_400))),
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
            auth: AuthConfig::default(),
            allowed_origins: Vec::new(),
            limits: LimitsConfig::default(),
            hub: HubConfig::default(),
            flush_interval_ms: 100,
            link_grace_s: 3_600,
            idle_timeout_s: 60,
            events: EventsConfig::default(),
            webhooks: WebhookConfig::default(),
            map: MapConfig::default(),
            drain_timeout: Duration::from_secs(10),
            track_retention: None,
        }
    }
}
