//! `trackhub-loadtest`: many simulated drivers and watchers against running hubs, over real
//! WebSockets on loopback. Bounded in time (`--duration-s`), stops by itself.
//!
//! Each driver sends a frame of `--batch` fixes every `--batch` × `--fix-interval-ms` (a phone
//! that buffers fixes; `--batch 1` is one fix per frame), moving along a real trace (`--traces`)
//! or on a random walk. The newest fix of a frame is stamped with its send time. Acks give the
//! ack latency (frame sent → ack). Each watcher subscribes to a bbox around all drivers; every
//! position in a frame gives a fan-out latency: the fix's `ts` (its send time, on the same
//! machine as the hub, so the fix time at the hub plus the loopback hop) → frame received. It
//! includes the hub's coalescing flush interval. With `--stops-per-driver K` every driver gets
//! a trip of K stops on its path first. `--idle` only connects and holds the sockets.
//!
//! Output: a JSON report (stdout, and `--json FILE`), a summary with a progress bar (stderr), and
//! with `--plot FILE` a PNG of throughput and latency per second.

mod net;
mod paths;
mod plot;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use trackhub::auth::{load_secret, Keys, Role};
use trackhub::model::now_ms;
use trackhub::protocol::codec::{Codec, JSON_PROTOCOL, PROTO_PROTOCOL};
use trackhub::protocol::pb;
use trackhub::protocol::time::parse_ts;

use net::Sources;
use paths::{Path, Route};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "trackhub-loadtest",
    about = "Load generator for trackhub (loopback only)"
)]
struct Args {
    /// Hub base URL(s) the drivers connect to, comma-separated (drivers spread round-robin).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    hub: Vec<String>,
    /// Hub base URL(s) the watchers connect to (default: the driver hubs).
    #[arg(long, value_delimiter = ',')]
    watch_hub: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    drivers: usize,
    /// Interval between one driver's fixes, ms.
    #[arg(long, default_value_t = 1000)]
    fix_interval_ms: u64,
    /// Fixes per frame: a driver sends `batch` fixes every `batch` × `fix-interval-ms`.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    /// Watchers' codec: `json` (what the live map uses) or `proto` (services).
    #[arg(long, value_enum, default_value_t = Codec::Json)]
    watch_codec: Codec,
    /// Stops in each driver's trip, created over REST before the run (0: no trips).
    #[arg(long, default_value_t = 0)]
    stops_per_driver: usize,
    /// Fleet geofences created over REST before the run: circles of 100 m spread evenly at
    /// random over the area the drivers move in (0: none).
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Connect and hold the driver sockets without sending (memory per idle connection).
    #[arg(long)]
    idle: bool,
    /// Drivers ask for the hub's sampling hints (`?tracking=1`) and obey them: a tick sooner
    /// than the hinted interval after the last send sends nothing (issue 15).
    #[arg(long)]
    obey_tracking: bool,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Seconds at the start whose latencies are not counted (connections, snapshots).
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// New connections per second while connecting.
    #[arg(long, default_value_t = 5_000)]
    connect_rate: u64,
    /// Trace files whose paths the drivers follow (any format `trackhub replay` reads),
    /// comma-separated; default: random walks around `--center`.
    #[arg(long, value_delimiter = ',')]
    traces: Vec<PathBuf>,
    /// Centre of the random walks, `lat,lon` degrees (default: Porto).
    #[arg(long, default_value = "41.15,-8.61")]
    center: String,
    /// Loopback source addresses (127.0.0.1 ..= 127.0.0.N); default: enough for the sockets.
    #[arg(long)]
    source_addrs: Option<usize>,
    /// Fleet of the minted tokens; default: a new `loadtest-<unix s>` per run.
    #[arg(long)]
    fleet: Option<String>,
    /// The hub's data dir, to mint tokens with its secret (or set TRACKHUB_JWT_SECRET).
    #[arg(long, env = "TRACKHUB_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "TRACKHUB_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Redis the hubs share, to count PUBLISH commands per fix.
    #[arg(long)]
    redis_url: Option<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput and latency per second into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Counts per second of the run, and totals.
struct Counters {
    connected: AtomicU64,
    sent: AtomicU64,
    /// Fixes not sent because the hub's sampling hint did not need them (`--obey-tracking`).
    skipped: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    positions_seen: AtomicU64,
    sent_per_s: Vec<AtomicU64>,
    acked_per_s: Vec<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn new(seconds: u64) -> Self {
        let per_s = || (0..seconds + 30).map(|_| AtomicU64::new(0)).collect();
        Self {
            connected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            positions_seen: AtomicU64::new(0),
            sent_per_s: per_s(),
            acked_per_s: per_s(),
            first_error: Mutex::new(None),
        }
    }

    fn error(&self, what: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(what());
        }
    }
}

/// Latency samples: (second of the run, microseconds).
#[derive(Default)]
struct Samples {
    ack: Mutex<Vec<(u32, u32)>>,
    fanout: Mutex<Vec<(u32, u32)>>,
}

/// The clock of the run: seconds since the start, and whether latencies count yet.
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Clock {
    fn second(&self) -> usize {
        self.started.elapsed().as_secs() as usize
    }
}

fn ws_base(url: &str) -> String {
    let u = url.trim_end_matches('/');
    match u.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", u.trim_start_matches("http://")),
    }
}

/// The `p` quantile (0-1) of sorted microseconds, in ms.
fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

async fn redis_publish_calls(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// Samples of the hub's own `/metrics`: RSS, open sockets, check-ins.
async fn hub_metrics(hub: &str) -> Value {
    let Ok(r) = reqwest::get(format!("{}/metrics", hub.trim_end_matches('/'))).await else {
        return Value::Null;
    };
    let text = r.text().await.unwrap_or_default();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    json!({
        "rss_bytes": sum("process_resident_memory_bytes "),
        // utime + stime of the hub process (metrics-process reads /proc/<pid>/stat), s.
        "cpu_seconds": sum("process_cpu_seconds_total "),
        "sockets_open": sum("trackhub_sockets_open{"),
        "checkins": sum("trackhub_checkins_total{"),
        "track_backpressure": sum("trackhub_track_backpressure_total "),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = load_secret(&args.data_dir, args.jwt_secret.as_deref(), false)
        .context("no signing secret: pass --data-dir of the hub or TRACKHUB_JWT_SECRET")?;
    let keys = Arc::new(Keys::from_secret(&secret));
    let center = args
        .center
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)))
        .context("--center must be lat,lon")?;
    let fleet = args
        .fleet
        .clone()
        .unwrap_or_else(|| format!("loadtest-{}", now_ms() / 1000));
    let watch_hubs = if args.watch_hub.is_empty() {
        args.hub.clone()
    } else {
        args.watch_hub.clone()
    };
    let sockets = args.drivers + args.watchers;
    let nofile = trackhub::replay::raise_fd_limit();
    anyhow::ensure!(
        nofile as usize > sockets,
        "open-file limit {nofile} is below the {sockets} sockets asked for: raise `ulimit -Hn` (needs CAP_SYS_RESOURCE), or run several generators"
    );
    let sources = Arc::new(match args.source_addrs {
        Some(n) => Sources::for_connections(0, n),
        // At least 4: sockets of earlier runs linger in TIME_WAIT on their ports.
        None => Sources::for_connections(sockets, 4),
    });
    let routes: Arc<Vec<Route>> = Arc::new(paths::load_routes(&args.traces)?);
    let bbox = paths::bbox(&routes, center);

    if args.stops_per_driver > 0 {
        let t = Instant::now();
        create_trips(&args, &keys, &fleet, &routes, center).await?;
        eprintln!(
            "created {} trips of {} stops in {:.1} s",
            args.drivers,
            args.stops_per_driver,
            t.elapsed().as_secs_f64()
        );
    }

    if args.zones > 0 {
        let t = Instant::now();
        let area = if routes.is_empty() {
            [
                center.1 - 0.05,
                center.0 - 0.05,
                center.1 + 0.05,
                center.0 + 0.05,
            ]
        } else {
            bbox
        };
        create_zones(&args, &keys, &fleet, area).await?;
        eprintln!(
            "created {} geofences in {:.1} s",
            args.zones,
            t.elapsed().as_secs_f64()
        );
    }

    let counters = Arc::new(Counters::new(args.duration_s));
    let samples = Arc::new(Samples::default());
    let started = Instant::now();
    let clock = Clock {
        started,
        measure_from: started + Duration::from_secs(args.warmup_s),
        end: started + Duration::from_secs(args.duration_s),
    };
    let publish_before = match &args.redis_url {
        Some(u) => Some(redis_publish_calls(u).await?),
        None => None,
    };

    // The hub's memory before any socket: the base of the memory-per-socket figure.
    let hub_at_start = hub_metrics(&args.hub[0]).await;
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let url = format!(
            "{}/v1/ws/watch?access_token={}",
            ws_base(&watch_hubs[w % watch_hubs.len()]),
            keys.mint("loadtest-watcher", Role::Admin, &fleet, 86_400)
        );
        tasks.push(tokio::spawn(watcher(
            url,
            args.watch_codec,
            bbox,
            sources.clone(),
            counters.clone(),
            samples.clone(),
            clock,
        )));
    }
    let connect_spread_us = 1_000_000 * args.drivers as u64 / args.connect_rate.max(1);
    for d in 0..args.drivers {
        let url = format!(
            "{}/v1/ws/driver?access_token={}{}",
            ws_base(&args.hub[d % args.hub.len()]),
            keys.mint(&driver_id(d), Role::Driver, &fleet, 86_400),
            if args.obey_tracking {
                "&tracking=1"
            } else {
                ""
            }
        );
        // Connections spread at `--connect-rate`; sends then spread over one interval so fixes
        // arrive evenly, not in bursts.
        let connect_at = started
            + Duration::from_micros(connect_spread_us * d as u64 / args.drivers.max(1) as u64);
        let sim = Sim {
            n: d as u64,
            interval: Duration::from_millis(args.fix_interval_ms),
            batch: args.batch.max(1),
            idle: args.idle,
        };
        tasks.push(tokio::spawn(driver(
            url,
            sim,
            routes.clone(),
            center,
            connect_at,
            sources.clone(),
            counters.clone(),
            samples.clone(),
            clock,
        )));
    }

    let bar = indicatif::ProgressBar::new(args.duration_s);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}").expect("template"),
    );
    let mut last_sent = 0;
    let mut hub_at_end = Value::Null;
    let mut acked_at_end = 0;
    // The hub's CPU time and the fixes acked when the warm-up ends: CPU per fix is measured
    // over the same window as the throughput.
    let mut hub_at_warmup: Option<(Value, u64)> = None;
    while Instant::now() < clock.end {
        tokio::time::sleep(Duration::from_secs(1).min(clock.end - Instant::now())).await;
        let sent = counters.sent.load(Ordering::Relaxed);
        bar.set_position(started.elapsed().as_secs().min(args.duration_s));
        bar.set_message(format!(
            "connected {} | {} fixes/s | acked {} | errors {}",
            counters.connected.load(Ordering::Relaxed),
            sent - last_sent,
            counters.acked.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed)
        ));
        last_sent = sent;
        if hub_at_warmup.is_none() && started.elapsed() >= Duration::from_secs(args.warmup_s) {
            let acked = counters.acked.load(Ordering::Relaxed);
            hub_at_warmup = Some((hub_metrics(&args.hub[0]).await, acked));
        }
        if clock.end.saturating_duration_since(Instant::now()) < Duration::from_millis(1500)
            && hub_at_end.is_null()
        {
            // While every socket is still open.
            acked_at_end = counters.acked.load(Ordering::Relaxed);
            hub_at_end = hub_metrics(&args.hub[0]).await;
        }
    }
    bar.finish_and_clear();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let publish_calls = match (&args.redis_url, publish_before) {
        (Some(u), Some(before)) => Some(redis_publish_calls(u).await? - before),
        _ => None,
    };

    let ack = std::mem::take(&mut *samples.ack.lock().unwrap());
    let fan = std::mem::take(&mut *samples.fanout.lock().unwrap());
    let seconds = per_second(&counters, &ack, &fan, args.duration_s);
    let mut ack_us: Vec<u32> = ack.iter().map(|s| s.1).collect();
    let mut fan_us: Vec<u32> = fan.iter().map(|s| s.1).collect();
    ack_us.sort_unstable();
    fan_us.sort_unstable();
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    // Throughput over the measured window (after the warm-up).
    let measured: Vec<&plot::Second> = seconds
        .iter()
        .filter(|s| s.t >= args.warmup_s && s.t < args.duration_s)
        .collect();
    let fixes_per_s =
        measured.iter().map(|s| s.fixes_acked).sum::<u64>() as f64 / measured.len().max(1) as f64;
    // Hub CPU time (utime + stime) per fix acked between the end of the warm-up and the end,
    // µs: independent of the generator sharing the machine's cores. Only with one hub.
    let cpu_us_per_fix = match &hub_at_warmup {
        Some((warm, acked_warm)) if args.hub.len() == 1 && acked_at_end > *acked_warm => {
            let cpu = hub_at_end["cpu_seconds"].as_f64().unwrap_or(0.0)
                - warm["cpu_seconds"].as_f64().unwrap_or(0.0);
            Some(cpu * 1e6 / (acked_at_end - acked_warm) as f64)
        }
        _ => None,
    };
    // Hub RSS grown per socket open at the end (the sockets' cost with `--idle`), bytes.
    let connected = counters.connected.load(Ordering::Relaxed);
    let rss_per_socket = (connected > 0 && args.hub.len() == 1).then(|| {
        (hub_at_end["rss_bytes"].as_f64().unwrap_or(0.0)
            - hub_at_start["rss_bytes"].as_f64().unwrap_or(0.0))
            / connected as f64
    });
    let result = json!({
        "drivers": args.drivers,
        "watchers": args.watchers,
        "fix_interval_ms": args.fix_interval_ms,
        "batch": args.batch,
        "stops_per_driver": args.stops_per_driver,
        "zones": args.zones,
        "idle": args.idle,
        "duration_s": args.duration_s,
        "hubs": args.hub,
        "watch_hubs": watch_hubs,
        "source_addrs": sources.count(),
        "traces": args.traces,
        "connected": counters.connected.load(Ordering::Relaxed),
        "fixes_sent": sent,
        "fixes_skipped": counters.skipped.load(Ordering::Relaxed),
        "obey_tracking": args.obey_tracking,
        "fixes_acked": acked,
        "acks_lost": sent - acked.min(sent),
        "fixes_per_s": fixes_per_s,
        "hub_cpu_us_per_fix": cpu_us_per_fix,
        "hub_rss_per_socket_bytes": rss_per_socket,
        "hub_at_start": hub_at_start,
        "ack_p50_ms": percentile(&ack_us, 0.5),
        "ack_p99_ms": percentile(&ack_us, 0.99),
        "fanout_p50_ms": percentile(&fan_us, 0.5),
        "fanout_p99_ms": percentile(&fan_us, 0.99),
        "fanout_samples": fan_us.len(),
        "positions_seen": counters.positions_seen.load(Ordering::Relaxed),
        "errors": counters.errors.load(Ordering::Relaxed),
        "first_error": *counters.first_error.lock().unwrap(),
        "hub": hub_at_end,
        "redis_publish_calls": publish_calls,
        "redis_publish_per_fix": publish_calls.map(|c| c as f64 / sent.max(1) as f64),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    eprintln!("{}", summary(&result));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "trackhub-loadtest: {} drivers, {} fixes/frame every {} ms, {} watchers",
            args.drivers,
            args.batch,
            args.batch * args.fix_interval_ms,
            args.watchers
        );
        plot::draw(path, &title, &seconds)?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

fn driver_id(d: usize) -> String {
    format!("load-{d}")
}

/// A line for people.
fn summary(r: &Value) -> String {
    let ms = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.1} ms"));
    format!(
        "connected {} | fixes sent {} acked {} lost {} | {:.0} fixes/s | ack p50 {} p99 {} | fan-out p50 {} p99 {} | errors {} | hub RSS {:.0} MiB | hub CPU {} µs/fix",
        r["connected"],
        r["fixes_sent"],
        r["fixes_acked"],
        r["acks_lost"],
        r["fixes_per_s"].as_f64().unwrap_or(0.0),
        ms("ack_p50_ms"),
        ms("ack_p99_ms"),
        ms("fanout_p50_ms"),
        ms("fanout_p99_ms"),
        r["errors"],
        r["hub"]["rss_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
        r["hub_cpu_us_per_fix"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.1}")),
    )
}

fn per_second(
    counters: &Counters,
    ack: &[(u32, u32)],
    fan: &[(u32, u32)],
    duration_s: u64,
) -> Vec<plot::Second> {
    let n = duration_s as usize;
    let mut acks: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut fans: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(s, us) in ack {
        if let Some(v) = acks.get_mut(s as usize) {
            v.push(us);
        }
    }
    for &(s, us) in fan {
        if let Some(v) = fans.get_mut(s as usize) {
            v.push(us);
        }
    }
    (0..n)
        .map(|t| {
            acks[t].sort_unstable();
            fans[t].sort_unstable();
            plot::Second {
                t: t as u64,
                fixes_sent: counters.sent_per_s[t].load(Ordering::Relaxed),
                fixes_acked: counters.acked_per_s[t].load(Ordering::Relaxed),
                ack_p50_ms: percentile(&acks[t], 0.5),
                ack_p99_ms: percentile(&acks[t], 0.99),
                fanout_p50_ms: percentile(&fans[t], 0.5),
                fanout_p99_ms: percentile(&fans[t], 0.99),
            }
        })
        .collect()
}

/// Creates one trip per driver with `--stops-per-driver` stops on its path, 32 requests at once.
async fn create_trips(
    args: &Args,
    keys: &Keys,
    fleet: &str,
    routes: &[Route],
    center: (f64, f64),
) -> anyhow::Result<()> {
    let admin = keys.mint("loadtest-admin", Role::Admin, fleet, 86_400);
    let http = reqwest::Client::new();
    let base = args.hub[0].trim_end_matches('/').to_string();
    let mut requests = futures_util::stream::iter(0..args.drivers)
        .map(|d| {
            let mut path = Path::new(d as u64, routes, center);
            // Stops where the driver will be over the run, so the arrival check has geofences
            // to enter and leave (it drives through them: no check-ins).
            let step = args.duration_s as f64 / args.stops_per_driver as f64;
            let stops: Vec<Value> = (0..args.stops_per_driver)
                .map(|k| {
                    let (lat, lon) = path.position(k as f64 * step, step);
                    json!({"id": format!("s{k}"), "lat": lat, "lon": lon, "radius_m": 50})
                })
                .collect();
            let body =
                json!({"id": format!("trip-{d}"), "driver_id": driver_id(d), "stops": stops});
            let request = http
                .post(format!("{base}/v1/trips"))
                .bearer_auth(&admin)
                .json(&body)
                .send();
            async move {
                let r = request.await?;
                anyhow::ensure!(r.status() == 201, "POST /v1/trips: {}", r.status());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32);
    while let Some(done) = requests.next().await {
        done?;
    }
    Ok(())
}

/// Creates `--zones` circles of 100 m at random in `area` ([w, s, e, n]), 32 requests at once.
async fn create_zones(args: &Args, keys: &Keys, fleet: &str, area: [f64; 4]) -> anyhow::Result<()> {
    use rand::Rng;
    let admin = keys.mint("loadtest-admin", Role::Admin, fleet, 86_400);
    let http = reqwest::Client::new();
    let base = args.hub[0].trim_end_matches('/').to_string();
    let mut rng = rand::rng();
    let bodies: Vec<Value> = (0..args.zones)
        .map(|i| {
            let lon = rng.random_range(area[0]..area[2]);
            let lat = rng.random_range(area[1]..area[3]);
            json!({"id": format!("zone-{i}"), "circle": {"center": [lon, lat], "radius_m": 100}})
        })
        .collect();
    let mut requests = futures_util::stream::iter(bodies)
        .map(|body| {
            let request = http
                .post(format!("{base}/v1/geofences"))
                .bearer_auth(&admin)
                .json(&body)
                .send();
            async move {
                let r = request.await?;
                anyhow::ensure!(r.status() == 201, "POST /v1/geofences: {}", r.status());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32);
    while let Some(done) = requests.next().await {
        done?;
    }
    Ok(())
}

/// What one simulated driver does.
#[derive(Clone, Copy)]
struct Sim {
    n: u64,
    interval: Duration,
    batch: u64,
    idle: bool,
}

#[allow(clippy::too_many_arguments)]
async fn driver(
    url: String,
    sim: Sim,
    routes: Arc<Vec<Route>>,
    center: (f64, f64),
    connect_at: Instant,
    sources: Arc<Sources>,
    counters: Arc<Counters>,
    samples: Arc<Samples>,
    clock: Clock,
) {
    tokio::time::sleep_until(connect_at.into()).await;
    let ws = match net::connect(&url, &sources, None).await {
        Ok(ws) => ws,
        Err(e) => return counters.error(|| format!("driver connect: {e}")),
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    if sim.idle {
        // Hold the socket; reading answers the hub's pings.
        loop {
            tokio::select! {
                m = rx.next() => match m {
                    Some(Ok(_)) => continue,
                    _ => return counters.error(|| "idle socket closed by the hub".into()),
                },
                _ = tokio::time::sleep_until(clock.end.into()) => break,
            }
        }
        let _ = tx.close().await;
        return;
    }
    let mut path = Path::new(sim.n, &routes, center);
    let period = sim.interval * sim.batch as u32;
    // Frames in flight: (last seq, sent at, fixes).
    let mut inflight: VecDeque<(u64, Instant, u64)> = VecDeque::new();
    let mut mine = Vec::new();
    // Sends spread over one period.
    let first = tokio::time::Instant::now() + period.mul_f64((sim.n % 997) as f64 / 997.0);
    let mut tick = tokio::time::interval_at(first, period);
    let drive_start = Instant::now();
    // Seqs continue across runs (a phone's counter survives reconnects).
    let mut seq = now_ms() as u64 * 16;
    // The hub's sampling hint (`--obey-tracking`): least time between two sends.
    let mut min_gap = Duration::ZERO;
    let mut last_send: Option<Instant> = None;
    let on_ack =
        |upto: u64, inflight: &mut VecDeque<(u64, Instant, u64)>, mine: &mut Vec<(u32, u32)>| {
            let now = Instant::now();
            let second = clock.second();
            while inflight.front().is_some_and(|(s, _, _)| *s <= upto) {
                let (_, at, fixes) = inflight.pop_front().expect("front exists");
                counters.acked.fetch_add(fixes, Ordering::Relaxed);
                if let Some(c) = counters.acked_per_s.get(second) {
                    c.fetch_add(fixes, Ordering::Relaxed);
                }
                if at >= clock.measure_from && now < clock.end {
                    mine.push((
                        second as u32,
                        (now - at).as_micros().min(u32::MAX as u128) as u32,
                    ));
                }
            }
        };
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= clock.end { break; }
                if last_send.is_some_and(|t| t.elapsed() < min_gap) {
                    counters.skipped.fetch_add(sim.batch, Ordering::Relaxed);
                    continue;
                }
                last_send = Some(Instant::now());
                let now = now_ms();
                let step_s = sim.interval.as_secs_f64();
                let elapsed = drive_start.elapsed().as_secs_f64();
                let pings: Vec<Value> = (0..sim.batch)
                    .map(|i| {
                        seq += 1;
                        let back = (sim.batch - 1 - i) as f64 * step_s;
                        let (lat, lon) = path.position(elapsed - back, step_s);
                        json!({"seq": seq, "ts": now - (back * 1000.0) as i64, "lat": lat, "lon": lon,
                               "accuracy_m": 8.0, "speed_mps": path.speed_mps()})
                    })
                    .collect();
                let frame = if sim.batch == 1 {
                    pings.into_iter().next().expect("one ping").as_object().cloned().map(|mut o| {
                        o.insert("type".into(), "ping".into());
                        Value::Object(o)
                    }).expect("object")
                } else {
                    json!({"type": "batch", "pings": pings})
                };
                inflight.push_back((seq, Instant::now(), sim.batch));
                if let Err(e) = tx.send(Message::text(frame.to_string())).await {
                    counters.error(|| format!("driver send: {e}"));
                    break;
                }
                counters.sent.fetch_add(sim.batch, Ordering::Relaxed);
                if let Some(c) = counters.sent_per_s.get(clock.second()) {
                    c.fetch_add(sim.batch, Ordering::Relaxed);
                }
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        counters.error(|| format!("driver socket closed: {frame:?}"));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => { counters.error(|| format!("driver read: {e}")); break; }
                    None => { counters.error(|| "driver socket ended".into()); break; }
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match v["type"].as_str() {
                    Some("ack") => on_ack(v["seq"].as_u64().unwrap_or(0), &mut inflight, &mut mine),
                    Some("error") => counters.error(|| format!("driver error frame: {text}")),
                    Some("tracking") => {
                        min_gap = Duration::from_secs(v["interval_s"].as_u64().unwrap_or(0));
                    }
                    _ => {}
                }
            }
        }
    }
    // Collect the acks still in flight (bounded wait), then close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !inflight.is_empty() {
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(deadline, rx.next()).await
        else {
            break;
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if v["type"] == "ack" {
            on_ack(v["seq"].as_u64().unwrap_or(0), &mut inflight, &mut mine);
        }
    }
    let _ = tx.close().await;
    samples.ack.lock().unwrap().extend(mine);
}

async fn watcher(
    url: String,
    codec: Codec,
    bbox: [f64; 4],
    sources: Arc<Sources>,
    counters: Arc<Counters>,
    samples: Arc<Samples>,
    clock: Clock,
) {
    let protocol = match codec {
        Codec::Json => JSON_PROTOCOL,
        Codec::Proto => PROTO_PROTOCOL,
    };
    let mut ws = match net::connect(&url, &sources, Some(protocol)).await {
        Ok(ws) => ws,
        Err(e) => return counters.error(|| format!("watcher connect: {e}")),
    };
    let subscribed = match codec {
        Codec::Json => {
            let sub = json!({"type":"subscribe","bbox": bbox});
            ws.send(Message::text(sub.to_string())).await
        }
        Codec::Proto => {
            use prost::Message as _;
            let [west, south, east, north] = bbox;
            let sub = pb::WatchIn {
                msg: Some(pb::watch_in::Msg::Subscribe(pb::Subscribe {
                    bbox: Some(pb::BBox {
                        west,
                        south,
                        east,
                        north,
                    }),
                    drivers: Vec::new(),
                })),
            };
            ws.send(Message::binary(sub.encode_to_vec())).await
        }
    };
    if subscribed.is_err() {
        return counters.error(|| "watcher subscribe failed".into());
    }
    let mut mine = Vec::new();
    let mut fix_times = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(clock.end.into()) => break,
        };
        let Some(Ok(msg)) = msg else {
            counters.error(|| format!("watcher socket ended: {msg:?}"));
            break;
        };
        if let Message::Close(frame) = &msg {
            counters.error(|| format!("watcher closed by the hub: {frame:?}"));
            break;
        }
        let received = now_ms();
        fix_times.clear();
        // Only `positions` frames count (not the snapshot): each gives its fixes' device times.
        match (&msg, codec) {
            (Message::Text(text), Codec::Json) => {
                if let Ok(frame) = serde_json::from_str::<JsonFrame>(text.as_str()) {
                    if frame.kind == "positions" {
                        fix_times
                            .extend(frame.positions.iter().filter_map(|p| parse_ts(p.ts).ok()));
                    }
                }
            }
            (Message::Binary(bytes), Codec::Proto) => {
                use prost::Message as _;
                if let Ok(pb::WatchOut {
                    msg: Some(pb::watch_out::Msg::Positions(frame)),
                }) = pb::WatchOut::decode(bytes.as_ref())
                {
                    fix_times.extend(frame.positions.iter().map(|p| p.ts_ms));
                }
            }
            _ => continue,
        }
        counters
            .positions_seen
            .fetch_add(fix_times.len() as u64, Ordering::Relaxed);
        if Instant::now() >= clock.measure_from {
            let second = clock.second() as u32;
            mine.extend(
                fix_times
                    .iter()
                    .map(|ts| (second, ((received - ts).max(0) * 1000) as u32)),
            );
        }
    }
    let _ = ws.close(None).await;
    samples.fanout.lock().unwrap().extend(mine);
}

/// The parts of a JSON watcher frame the generator reads; everything else is skipped unparsed.
#[derive(serde::Deserialize)]
struct JsonFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    positions: Vec<JsonPosition<'a>>,
}

#[derive(serde::Deserialize)]
struct JsonPosition<'a> {
    #[serde(borrow)]
    ts: &'a str,
}
