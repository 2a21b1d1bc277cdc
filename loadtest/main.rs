//! `trackhub-loadtest`: many simulated drivers and watchers against running hubs, over real
//! WebSockets on loopback. Bounded in time (`--duration-s`), stops by itself.
//!
//! Each driver sends one fix every `--fix-interval-ms`, stamped with the send time and moving at
//! 10 m/s on a random heading; its acks give the ack latency (send → ack). Each watcher subscribes
//! to a bbox around all drivers; every position in a frame gives a fan-out latency (the fix's
//! `ts`, i.e. its send time, → frame received), so it includes the hub's coalescing flush
//! interval. Drivers and watchers may be on different hubs (`--hub` vs `--watch-hub`): then the
//! fan-out latency is cross-node, through the Redis bus. With `--redis-url` the run also reports
//! the Redis PUBLISH commands per fix from `INFO commandstats`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use trackhub::auth::{load_secret, Keys, Role};
use trackhub::protocol::time::{now_ms, parse_ts};

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
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Seconds at the start whose latencies are not counted (connections, snapshots).
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Fleet of the minted tokens.
    #[arg(long, default_value = "loadtest")]
    fleet: String,
    /// Centre of the simulated drivers, `lat,lon` degrees (default: Porto).
    #[arg(long, default_value = "41.15,-8.61")]
    center: String,
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
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    positions_seen: AtomicU64,
}

/// Latency samples, microseconds.
#[derive(Default)]
struct Samples {
    ack_us: Mutex<Vec<u64>>,
    fanout_us: Mutex<Vec<u64>>,
}

fn ws_base(url: &str) -> String {
    let u = url.trim_end_matches('/');
    match u.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", u.trim_start_matches("http://")),
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    trackhub::replay::raise_fd_limit();
    let secret = load_secret(&args.data_dir, args.jwt_secret.as_deref(), false)
        .context("no signing secret: pass --data-dir of the hub or TRACKHUB_JWT_SECRET")?;
    let keys = Arc::new(Keys::from_secret(&secret));
    let (lat0, lon0) = args
        .center
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)))
        .context("--center must be lat,lon")?;
    let watch_hubs = if args.watch_hub.is_empty() {
        args.hub.clone()
    } else {
        args.watch_hub.clone()
    };

    let counters = Arc::new(Counters::default());
    let samples = Arc::new(Samples::default());
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup_s);
    let end = started + Duration::from_secs(args.duration_s);
    let publish_before = match &args.redis_url {
        Some(u) => Some(redis_publish_calls(u).await?),
        None => None,
    };

    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let url = format!(
            "{}/v1/ws/watch?access_token={}",
            ws_base(&watch_hubs[w % watch_hubs.len()]),
            keys.mint("loadtest-watcher", Role::Admin, &args.fleet, 86_400)
        );
        let bbox = [lon0 - 1.0, lat0 - 1.0, lon0 + 1.0, lat0 + 1.0];
        tasks.push(tokio::spawn(watcher(
            url,
            bbox,
            counters.clone(),
            samples.clone(),
            measure_from,
            end,
        )));
    }
    for d in 0..args.drivers {
        let id = format!("load-{d}");
        let url = format!(
            "{}/v1/ws/driver?access_token={}",
            ws_base(&args.hub[d % args.hub.len()]),
            keys.mint(&id, Role::Driver, &args.fleet, 86_400)
        );
        // Starts spread over one interval so fixes arrive evenly, not in bursts.
        let offset = Duration::from_micros(
            args.fix_interval_ms * 1000 * d as u64 / args.drivers.max(1) as u64,
        );
        tasks.push(tokio::spawn(driver(
            url,
            (lat0, lon0),
            d as u64,
            Duration::from_millis(args.fix_interval_ms),
            started + offset,
            counters.clone(),
            samples.clone(),
            measure_from,
            end,
        )));
    }

    let bar = indicatif::ProgressBar::new(args.duration_s);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}").expect("template"),
    );
    let mut last_sent = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
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
    }
    bar.finish_and_clear();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let publish_calls = match (&args.redis_url, publish_before) {
        (Some(u), Some(before)) => Some(redis_publish_calls(u).await? - before),
        _ => None,
    };

    let mut ack = std::mem::take(&mut *samples.ack_us.lock().unwrap());
    let mut fan = std::mem::take(&mut *samples.fanout_us.lock().unwrap());
    ack.sort_unstable();
    fan.sort_unstable();
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    let secs = args.duration_s as f64;
    let result = json!({
        "drivers": args.drivers,
        "watchers": args.watchers,
        "fix_interval_ms": args.fix_interval_ms,
        "duration_s": args.duration_s,
        "hubs": args.hub,
        "watch_hubs": watch_hubs,
        "connected": counters.connected.load(Ordering::Relaxed),
        "fixes_sent": sent,
        "fixes_acked": acked,
        "fixes_per_s": sent as f64 / secs,
        "ack_p50_ms": percentile(&ack, 0.5),
        "ack_p99_ms": percentile(&ack, 0.99),
        "fanout_p50_ms": percentile(&fan, 0.5),
        "fanout_p99_ms": percentile(&fan, 0.99),
        "fanout_samples": fan.len(),
        "positions_seen": counters.positions_seen.load(Ordering::Relaxed),
        "errors": counters.errors.load(Ordering::Relaxed),
        "redis_publish_calls": publish_calls,
        "redis_publish_per_fix": publish_calls.map(|c| c as f64 / sent.max(1) as f64),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn driver(
    url: String,
    center: (f64, f64),
    n: u64,
    interval: Duration,
    start_at: Instant,
    counters: Arc<Counters>,
    samples: Arc<Samples>,
    measure_from: Instant,
    end: Instant,
) {
    tokio::time::sleep_until(start_at.into()).await;
    let ws = match tokio_tungstenite::connect_async(&url).await {
        Ok((ws, _)) => ws,
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    // A random walk at 10 m/s from a point within ~5 km of the centre.
    let mut rng = StdRng::seed_from_u64(n);
    let (mut lat, mut lon) = (
        center.0 + rng.random_range(-0.05..0.05),
        center.1 + rng.random_range(-0.05..0.05),
    );
    let mut heading: f64 = rng.random_range(0.0..360.0);
    let step_m = 10.0 * interval.as_secs_f64();
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut my_acks = Vec::new();
    let mut tick = tokio::time::interval(interval);
    // Seqs continue across runs (a phone's counter survives reconnects): a run reusing the same
    // driver ids must not have its fixes acked as duplicates of the previous run's.
    let mut seq = now_ms() as u64 * 16;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end { break; }
                seq += 1;
                heading = (heading + rng.random_range(-15.0..15.0)).rem_euclid(360.0);
                lat += step_m * heading.to_radians().cos() / 111_195.0;
                lon += step_m * heading.to_radians().sin() / (111_195.0 * lat.to_radians().cos());
                let msg = json!({"type":"ping","seq":seq,"ts":now_ms(),"lat":lat,"lon":lon,"accuracy_m":8.0,"speed_mps":10.0,"heading_deg":heading});
                inflight.push_back((seq, Instant::now()));
                if tx.send(Message::Text(msg.to_string().into())).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            msg = rx.next() => {
                let Some(Ok(Message::Text(text))) = msg else {
                    if !matches!(msg, Some(Ok(_))) { counters.errors.fetch_add(1, Ordering::Relaxed); break; }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match v["type"].as_str() {
                    Some("ack") => {
                        let upto = v["seq"].as_u64().unwrap_or(0);
                        let now = Instant::now();
                        while inflight.front().is_some_and(|(s, _)| *s <= upto) {
                            let (_, at) = inflight.pop_front().expect("front exists");
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                            if at >= measure_from {
                                my_acks.push((now - at).as_micros() as u64);
                            }
                        }
                    }
                    Some("error") => { counters.errors.fetch_add(1, Ordering::Relaxed); }
                    _ => {}
                }
            }
        }
    }
    // Collect the acks still in flight (bounded wait), then close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !inflight.is_empty() {
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(deadline, rx.next()).await
        else {
            break;
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if v["type"] == "ack" {
            let upto = v["seq"].as_u64().unwrap_or(0);
            while inflight.front().is_some_and(|(s, _)| *s <= upto) {
                inflight.pop_front();
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = tx.close().await;
    samples.ack_us.lock().unwrap().extend(my_acks);
}

async fn watcher(
    url: String,
    bbox: [f64; 4],
    counters: Arc<Counters>,
    samples: Arc<Samples>,
    measure_from: Instant,
    end: Instant,
) {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let sub = json!({"type":"subscribe","bbox": bbox});
    if ws
        .send(Message::Text(sub.to_string().into()))
        .await
        .is_err()
    {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut mine = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(end.into()) => break,
        };
        let Some(Ok(msg)) = msg else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let Message::Text(text) = msg else { continue };
        let received = now_ms();
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if v["type"] != "positions" {
            continue;
        }
        let measuring = Instant::now() >= measure_from;
        for p in v["positions"].as_array().into_iter().flatten() {
            counters.positions_seen.fetch_add(1, Ordering::Relaxed);
            if let (true, Some(Ok(ts))) = (measuring, p["ts"].as_str().map(parse_ts)) {
                mine.push(((received - ts).max(0) * 1000) as u64);
            }
        }
    }
    let _ = ws.close(None).await;
    samples.fanout_us.lock().unwrap().extend(mine);
}
