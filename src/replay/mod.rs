//! `trackhub replay`: recorded traces replayed as live drivers over real WebSockets.
//!
//! Every trace becomes one driver, all at once. With `--speed N` fix *k* is sent at
//! `start + (t_k − t_0) / N` of wall time while its `ts` keeps the recorded spacing, shifted so
//! the trace's last fix is stamped at the moment it is sent: the hub's detection, which runs on
//! device time, sees the same trace at any speed and gives the same check-ins.

pub mod formats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::auth::{load_secret, Keys, Role};
use crate::eval::amazon;
use crate::model::now_ms;
use crate::protocol::codec::{Codec, JSON_PROTOCOL, PROTO_PROTOCOL};
use crate::protocol::driver::MAX_BATCH;
use formats::Trace;

use crate::model::Fix;

/// Flags of `trackhub replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The hub's data dir, to mint tokens with its secret (or set TRACKHUB_JWT_SECRET).
    #[arg(long, env = "TRACKHUB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "TRACKHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Base URL of the hub.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// Replay N times faster than recorded (timestamps keep the recorded spacing).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Fleet of the minted tokens.
    #[arg(long, default_value = crate::auth::DEFAULT_FLEET)]
    pub fleet: String,
    /// `lat,lon` origin for Amazon chunks (metres from an unknown point).
    #[arg(long)]
    pub origin: Option<String>,
    /// Replay at most this many traces (drivers).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Send at most this many fixes per driver.
    #[arg(long)]
    pub max_fixes: Option<usize>,
    /// For Amazon chunks: first create a trip per driver with stops where `OnFoot` stretches of
    /// ≥ 60 s begin (must check in) and on stretches only driven past (must not).
    #[arg(long)]
    pub amazon_trips: bool,
    /// With `--amazon-trips`: create the trips and send no fixes (for a client that will drive
    /// them itself, as the driver app's browser test does).
    #[arg(long, requires = "amazon_trips")]
    pub trips_only: bool,
    /// Wire codec of the driver sockets (`Sec-WebSocket-Protocol`).
    #[arg(long, value_enum, default_value = "json")]
    pub codec: Codec,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Ask for the hub's sampling hints (`?tracking=1`) and obey them as our own app would:
    /// a fix is skipped when it comes sooner than the hinted interval after the last one sent
    /// (device time). The last fix of a trace is always sent.
    #[arg(long)]
    pub obey_tracking: bool,
    /// Trace files: CSV, GPX, Go!Track, Porto, cabspotting, Amazon chunks.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub drivers: usize,
    pub fixes_sent: u64,
    pub fixes_acked: u64,
    pub fixes_rejected: u64,
    pub checkins: u64,
    /// Fixes not sent because the hub's sampling hint did not need them (`--obey-tracking`).
    pub fixes_skipped: u64,
    /// Drivers whose socket failed before every fix was acked.
    pub failed_drivers: usize,
    pub trips_created: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "drivers {} | fixes sent {} acked {} rejected {} skipped {} | check-ins {} | trips created {} | failed drivers {}",
            self.drivers, self.fixes_sent, self.fixes_acked, self.fixes_rejected, self.fixes_skipped, self.checkins, self.trips_created, self.failed_drivers
        )
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    skipped: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    checkins: AtomicU64,
}

fn parse_origin(text: &str) -> anyhow::Result<(f64, f64)> {
    let (lat, lon) = text
        .split_once(',')
        .ok_or_else(|| anyhow!("--origin must be `lat,lon`"))?;
    Ok((lat.trim().parse()?, lon.trim().parse()?))
}

/// Replays the files and returns the totals. With `--amazon-trips`, a trip is created per chunk
/// that has labelled stops (`trips_created` counts those only).
pub async fn run(args: &ReplayArgs) -> anyhow::Result<Summary> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number");
    }
    raise_fd_limit();
    let origin = args.origin.as_deref().map(parse_origin).transpose()?;
    let secret = load_secret(&args.data_dir, args.jwt_secret.as_deref(), false)?;
    let keys = Keys::from_secret(&secret);
    let hub = args.hub.trim_end_matches('/').to_string();
    let ws_base = if let Some(rest) = hub.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", hub.trim_start_matches("http://"))
    };

    let mut traces: Vec<Trace> = Vec::new();
    let mut trips_created = 0;
    for path in &args.files {
        let mut found = formats::read(path, origin)?;
        if args.amazon_trips && formats::detect(path)? == formats::Format::Amazon {
            let chunk = amazon::read_chunk(path)?;
            let origin = origin.unwrap_or(amazon::DEFAULT_ORIGIN);
            for t in &found {
                if create_amazon_trip(&hub, &keys, &args.fleet, &t.driver_id, &chunk, origin)
                    .await?
                {
                    trips_created += 1;
                }
            }
        }
        traces.append(&mut found);
    }
    if args.trips_only {
        return Ok(Summary {
            trips_created,
            ..Summary::default()
        });
    }
    if let Some(limit) = args.limit {
        traces.truncate(limit);
    }
    if let Some(max) = args.max_fixes {
        traces.iter_mut().for_each(|t| t.fixes.truncate(max));
    }
    if traces.is_empty() {
        bail!("no fixes found in the given files");
    }
    // Two traces under one driver id would share its seq numbers: the hub would (rightly) ack
    // the second copy as duplicates and store nothing of it.
    let mut ids = std::collections::HashSet::new();
    if let Some(t) = traces.iter().find(|t| !ids.insert(t.driver_id.as_str())) {
        bail!("driver id `{}` appears in more than one trace", t.driver_id);
    }

    let total: u64 = traces.iter().map(|t| t.fixes.len() as u64).sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} fixes acked ({per_sec}) {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let start_ms = now_ms();
    let connect_slots = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(traces.len());
    let drivers = traces.len();
    for trace in traces {
        let token = keys.mint(&trace.driver_id, Role::Driver, &args.fleet, 7 * 86_400);
        let hints = if args.obey_tracking {
            "&tracking=1"
        } else {
            ""
        };
        let url = format!("{ws_base}/v1/ws/driver?access_token={token}{hints}");
        let codec = args.codec;
        let (counters, bar, slots, speed) = (
            counters.clone(),
            bar.clone(),
            connect_slots.clone(),
            args.speed,
        );
        tasks.push(tokio::spawn(async move {
            let driver = trace.driver_id.clone();
            drive(
                trace, url, codec, speed, start, start_ms, counters, bar, slots,
            )
            .await
            .with_context(|| format!("driver {driver}"))
        }));
    }
    let mut failed_drivers = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed_drivers += 1;
                bar.suspend(|| eprintln!("replay: {e:#}"));
            }
            Err(e) => {
                failed_drivers += 1;
                bar.suspend(|| eprintln!("replay: task failed: {e}"));
            }
        }
    }
    bar.finish_and_clear();
    Ok(Summary {
        drivers,
        fixes_sent: counters.sent.load(Ordering::Relaxed),
        // A skipped fix's seq is covered by the next ack (acks are cumulative): not acked.
        fixes_acked: counters.acked.load(Ordering::Relaxed)
            - counters.skipped.load(Ordering::Relaxed),
        fixes_skipped: counters.skipped.load(Ordering::Relaxed),
        fixes_rejected: counters.rejected.load(Ordering::Relaxed),
        checkins: counters.checkins.load(Ordering::Relaxed),
        failed_drivers,
        trips_created,
    })
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    trace: Trace,
    url: String,
    codec: Codec,
    speed: f64,
    start: Instant,
    start_ms: i64,
    counters: Arc<Counters>,
    bar: ProgressBar,
    slots: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let ws = {
        let _slot = slots.acquire().await?;
        let mut request = url.as_str().into_client_request()?;
        let protocol = match codec {
            Codec::Json => JSON_PROTOCOL,
            Codec::Proto => PROTO_PROTOCOL,
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse()?);
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| anyhow!("connect: {e}"))?
    };
    let (mut sink, mut stream) = ws.split();
    let n = trace.fixes.len() as u64;
    // The hub's latest sampling hint, ms (0: none: send every fix).
    let interval_ms = Arc::new(AtomicU64::new(0));
    let reader = {
        let counters = counters.clone();
        let interval_ms = interval_ms.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            while let Some(Ok(msg)) = stream.next().await {
                match reply_of(codec, msg) {
                    Reply::Ack(seq) => {
                        if seq > acked {
                            counters.acked.fetch_add(seq - acked, Ordering::Relaxed);
                            bar.inc(seq - acked);
                            acked = seq;
                        }
                        if acked >= n {
                            break;
                        }
                    }
                    Reply::Error => {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Reply::Checkin => {
                        counters.checkins.fetch_add(1, Ordering::Relaxed);
                    }
                    Reply::Tracking(secs) => interval_ms.store(secs * 1000, Ordering::Relaxed),
                    Reply::Other => {}
                }
            }
            acked
        })
    };
    let t0 = trace.fixes[0].ts_ms;
    let t_last = trace.fixes[trace.fixes.len() - 1].ts_ms;
    let span_ms = ((t_last - t0) as f64 / speed) as i64;
    let due = |f: &Fix| start + Duration::from_millis(((f.ts_ms - t0) as f64 / speed) as u64);
    let mut next_send = start;
    let mut last_sent_ts: Option<i64> = None;
    let mut i = 0;
    while i < trace.fixes.len() {
        tokio::time::sleep_until(due(&trace.fixes[i]).max(next_send).into()).await;
        // Everything due by now goes in one message, like a phone flushing its buffer, so a
        // fast replay stays within the hub's per-socket message rate.
        let now = Instant::now();
        let end = (i + 1..trace.fixes.len())
            .take(MAX_BATCH - 1)
            .find(|&j| due(&trace.fixes[j]) > now)
            .unwrap_or(trace.fixes.len().min(i + MAX_BATCH));
        // Recorded spacing, ending at "now" for the last fix; never stamped in the future.
        // Obeying a sampling hint: a fix sooner than the interval after the last one sent is
        // skipped (the trace's last fix never is, so its ack covers every seq).
        let interval = interval_ms.load(Ordering::Relaxed) as i64;
        let last = trace.fixes.len() - 1;
        let mut pings: Vec<(u64, i64, &Fix)> = Vec::with_capacity(end - i);
        for k in i..end {
            let f = &trace.fixes[k];
            if k != last && last_sent_ts.is_some_and(|t| f.ts_ms - t < interval) {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            last_sent_ts = Some(f.ts_ms);
            let ts = (start_ms + span_ms - (t_last - f.ts_ms)).min(now_ms());
            pings.push((k as u64 + 1, ts, f));
        }
        i = end;
        if pings.is_empty() {
            continue;
        }
        sink.send(frame_of(codec, &pings))
            .await
            .map_err(|e| anyhow!("send: {e}"))?;
        counters
            .sent
            .fetch_add(pings.len() as u64, Ordering::Relaxed);
        next_send = now + SEND_INTERVAL;
    }
    let acked = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .map_err(|_| anyhow!("acks timed out"))??;
    let _ = sink.close().await;
    if acked < n {
        bail!("socket closed with {acked}/{n} fixes acked");
    }
    Ok(())
}

/// Least time between two messages of one replayed driver (10 messages/s, half the hub's default
/// per-socket rate).
const SEND_INTERVAL: Duration = Duration::from_millis(100);

/// One message with these pings (`seq`, device time ms, fix): a `ping` when there is one, a
/// `batch` otherwise, in the socket's codec.
fn frame_of(codec: Codec, pings: &[(u64, i64, &Fix)]) -> Message {
    match codec {
        Codec::Json => {
            let json: Vec<serde_json::Value> = pings
                .iter()
                .map(|(seq, ts, f)| {
                    let mut v =
                        json!({"type": "ping", "seq": seq, "ts": ts, "lat": f.lat, "lon": f.lon});
                    for (k, x) in [
                        ("accuracy_m", f.accuracy_m),
                        ("speed_mps", f.speed_mps),
                        ("heading_deg", f.heading_deg),
                    ] {
                        if let Some(x) = x {
                            v[k] = json!(x);
                        }
                    }
                    v
                })
                .collect();
            let frame = match <[_; 1]>::try_from(json) {
                Ok([one]) => one,
                Err(pings) => json!({"type": "batch", "pings": pings}),
            };
            Message::Text(frame.to_string().into())
        }
        Codec::Proto => {
            use crate::protocol::pb;
            let mut pbs: Vec<pb::Ping> = pings
                .iter()
                .map(|(seq, ts, f)| pb::Ping {
                    seq: *seq,
                    ts_ms: *ts,
                    lat: f.lat,
                    lon: f.lon,
                    accuracy_m: f.accuracy_m,
                    speed_mps: f.speed_mps,
                    heading_deg: f.heading_deg,
                    driver_id: None,
                    motion: None,
                })
                .collect();
            let msg = if pbs.len() == 1 {
                pb::driver_in::Msg::Ping(pbs.remove(0))
            } else {
                pb::driver_in::Msg::Batch(pb::Batch { pings: pbs })
            };
            Message::Binary(prost::Message::encode_to_vec(&pb::DriverIn { msg: Some(msg) }).into())
        }
    }
}

/// What the hub answered, as the replay counts it.
enum Reply {
    Ack(u64),
    Error,
    Checkin,
    /// A sampling hint: send at least every this many seconds.
    Tracking(u64),
    Other,
}

fn reply_of(codec: Codec, msg: Message) -> Reply {
    match (codec, msg) {
        (Codec::Json, Message::Text(text)) => {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                return Reply::Other;
            };
            match v["type"].as_str() {
                Some("ack") => Reply::Ack(v["seq"].as_u64().unwrap_or(0)),
                Some("error") => Reply::Error,
                Some("checkin") => Reply::Checkin,
                Some("tracking") => Reply::Tracking(v["interval_s"].as_u64().unwrap_or(0)),
                _ => Reply::Other,
            }
        }
        (Codec::Proto, Message::Binary(bytes)) => {
            use crate::protocol::pb::{driver_out::Msg, DriverOut};
            match <DriverOut as prost::Message>::decode(bytes.as_ref()).map(|m| m.msg) {
                Ok(Some(Msg::Ack(a))) => Reply::Ack(a.seq),
                Ok(Some(Msg::Error(_))) => Reply::Error,
                Ok(Some(Msg::Checkin(_))) => Reply::Checkin,
                Ok(Some(Msg::Tracking(t))) => Reply::Tracking(u64::from(t.interval_s)),
                _ => Reply::Other,
            }
        }
        _ => Reply::Other,
    }
}

async fn create_amazon_trip(
    hub: &str,
    keys: &Keys,
    fleet: &str,
    driver_id: &str,
    chunk: &amazon::Chunk,
    origin: (f64, f64),
) -> anyhow::Result<bool> {
    let stops: Vec<serde_json::Value> = amazon::geofences(chunk, origin)
        .iter()
        .map(|g| json!({"id": &*g.key.stop_id, "lat": g.lat, "lon": g.lon, "radius_m": g.radius_m}))
        .collect();
    if stops.is_empty() {
        // A chunk without a labelled stop gets no trip, and is not counted as one (issue 20:
        // the summary said "trips created 40" when 34 were).
        return Ok(false);
    }
    let admin = keys.mint("replay", Role::Admin, fleet, 3600);
    let trip_id = format!("{driver_id}-{:08x}", rand::random::<u32>());
    let resp = reqwest::Client::new()
        .post(format!("{hub}/v1/trips"))
        .bearer_auth(admin)
        .json(&json!({"id": trip_id, "driver_id": driver_id, "stops": stops}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating trip {trip_id}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(true)
}

/// Raises the open-file limit, every socket being a descriptor: the soft limit to the hard one,
/// and first, when running as root (CAP_SYS_RESOURCE), the hard one to `fs.nr_open` (the
/// kernel's ceiling, 1,048,576 by default) so 100k sockets fit. Returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let (Some(ceiling), Ok((_, hard))) = (nr_open, Resource::NOFILE.get()) {
        if ceiling > hard {
            // Refused unless privileged: then the hard limit stays as it is.
            let _ = Resource::NOFILE.set(ceiling, ceiling);
        }
    }
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0)
}
