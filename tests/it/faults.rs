//! Faults with real processes: what an acknowledgement promises when the hub is killed or its
//! database goes away. Each test starts what it breaks (a `trackhub serve` process, and for the
//! outage its own PostgreSQL instance made with `initdb`/`pg_ctl` on a free port): the machine's
//! shared PostgreSQL and Redis are never stopped.
//!
//! The drivers are simulated phones that behave as the protocol tells them to: one fix per frame
//! at a steady rate, every fix kept until an ack covers it, the buffer resent after a reconnect
//! or after `retry_after_ms` when the hub answers `unavailable`. At the end each phone stops
//! producing and waits until its buffer is empty; then every fix it ever produced must be in
//! history exactly once, and in particular every fix acknowledged before the fault.
//! Figures go to stderr (`--nocapture`) and into RELIABILITY.md.

use crate::common::cluster::{free_port, Proc};
use crate::common::{create_database, drop_database, temp_dir, ws_url, WAIT};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use trackhub::auth::{Keys, Role};
use trackhub::store::Store;

const SECRET: &str = "faults-test-secret-0123456789abcdef";
const FLEET: &str = "f1";

/// What one simulated phone saw, shared with the test while it runs.
#[derive(Default)]
struct PhoneStats {
    /// Highest seq produced so far (fix `seq` has device time `t0 + seq` s).
    produced: AtomicU64,
    /// Highest seq acknowledged.
    acked: AtomicU64,
    /// `unavailable` answers received.
    unavailable: AtomicU64,
    /// Connections made after the first.
    reconnects: AtomicU64,
    /// `checkin` frames received.
    checkins: AtomicU64,
}

/// A phone of our socket protocol: produces one fix per `every`, one fix per frame, keeps each
/// until acked; after a reconnect, or once `retry_after_ms` has passed after `unavailable`,
/// resends its whole buffer (as batches). Connects to `urls[0]` and moves to the next URL
/// whenever a connection fails (a load balancer's failover). Parked at `park` when given, else
/// driving north. Stops producing when `stop` is set, then runs until its buffer is empty (or
/// `drain_limit` passes).
async fn phone(
    urls: Vec<String>,
    park: Option<(f64, f64)>,
    t0: i64,
    every: Duration,
    stats: Arc<PhoneStats>,
    stop: Arc<AtomicBool>,
    drain_limit: Duration,
) {
    let mut node = 0usize;
    let mut buffer: BTreeMap<u64, Value> = BTreeMap::new();
    let mut next_seq = 1u64;
    let mut first = true;
    let mut stopped_at: Option<Instant> = None;
    'connection: loop {
        if stopped_at.is_some_and(|at| at.elapsed() > drain_limit) {
            return;
        }
        let url = &urls[node % urls.len()];
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !first {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        // Whatever is buffered goes first (the phone was offline).
        let mut resend_at = Some(tokio::time::Instant::now());
        let mut tick = tokio::time::interval(every);
        loop {
            if stop.load(Ordering::Relaxed) && stopped_at.is_none() {
                stopped_at = Some(Instant::now());
            }
            if let Some(at) = stopped_at {
                if buffer.is_empty() || at.elapsed() > drain_limit {
                    let _ = ws.close(None).await;
                    return;
                }
            }
            tokio::select! {
                _ = tick.tick(), if stopped_at.is_none() => {
                    let seq = next_seq;
                    next_seq += 1;
                    let (lat, lon) = park.unwrap_or((41.15 + seq as f64 * 1e-5, -8.61));
                    let fix = json!({"seq": seq, "ts": t0 + seq as i64 * 1000,
                                     "lat": lat, "lon": lon, "accuracy_m": 8.0});
                    buffer.insert(seq, fix.clone());
                    stats.produced.store(seq, Ordering::Relaxed);
                    if resend_at.is_none() {
                        let mut frame = fix;
                        frame["type"] = json!("ping");
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            continue 'connection;
                        }
                    }
                }
                _ = tokio::time::sleep_until(resend_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))), if resend_at.is_some() => {
                    resend_at = None;
                    let pending: Vec<Value> = buffer.values().cloned().collect();
                    for chunk in pending.chunks(500) {
                        let frame = json!({"type": "batch", "pings": chunk});
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            continue 'connection;
                        }
                    }
                    // Resend again if this round is not acked in a while (a frame lost with
                    // a killed connection is resent on reconnect anyway).
                    if buffer.is_empty() { continue; }
                }
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { continue 'connection };
                    let Message::Text(text) = msg else { continue };
                    let v: Value = serde_json::from_str(&text).expect("hub frames are JSON");
                    match v["type"].as_str() {
                        Some("ack") => {
                            let seq = v["seq"].as_u64().expect("ack seq");
                            buffer.retain(|s, _| *s > seq);
                            stats.acked.fetch_max(seq, Ordering::Relaxed);
                        }
                        Some("checkin") => {
                            stats.checkins.fetch_add(1, Ordering::Relaxed);
                        }
                        Some("error") if v["code"] == "unavailable" => {
                            stats.unavailable.fetch_add(1, Ordering::Relaxed);
                            let wait = v["retry_after_ms"].as_u64().expect("a retry hint");
                            resend_at = Some(tokio::time::Instant::now() + Duration::from_millis(wait));
                        }
                        Some("error") => panic!("unexpected error frame: {v}"),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// One `trackhub serve` process on a fixed port (so phones reconnect to the same address after
/// a restart), logging to `dir/hub-N.log`.
struct Hub {
    port: u16,
    dir: PathBuf,
    database_url: String,
    proc: Option<Proc>,
    starts: usize,
}

impl Hub {
    async fn start(dir: &Path, database_url: &str) -> Self {
        let mut hub = Self {
            port: free_port(),
            dir: dir.to_path_buf(),
            database_url: database_url.to_string(),
            proc: None,
            starts: 0,
        };
        hub.spawn().await;
        hub
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("hub-{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Starts the process and waits until it answers `/livez`.
    async fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("hub-{}.log", self.starts))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trackhub"))
            .args(["serve", "--max-msgs-per-s", "0", "--conn-rate-per-ip", "0"])
            .env("TRACKHUB_ADDR", format!("127.0.0.1:{}", self.port))
            .env("TRACKHUB_DATA_DIR", &self.dir)
            .env("DATABASE_URL", &self.database_url)
            .env("TRACKHUB_JWT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("trackhub binary runs");
        self.proc = Some(Proc::new(child));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT * 3;
        loop {
            let up = http.get(format!("{}/livez", self.base())).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "hub not up: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no drain, no flush.
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    async fn readyz(&self) -> Option<u16> {
        reqwest::get(format!("{}/readyz", self.base()))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }
}

/// Drivers `D0..Dn` streaming one fix per `every` each; returns their stats and tasks.
fn phones(
    hub: &Hub,
    n: usize,
    t0: i64,
    every: Duration,
    stop: &Arc<AtomicBool>,
    drain_limit: Duration,
) -> Vec<(String, Arc<PhoneStats>, tokio::task::JoinHandle<()>)> {
    let keys = Keys::from_secret(SECRET.as_bytes());
    (0..n)
        .map(|i| {
            let sub = format!("D{i}");
            let token = keys.mint(&sub, Role::Driver, FLEET, 3600);
            let url = ws_url(&hub.base(), "/v1/ws/driver", &token);
            let stats = Arc::new(PhoneStats::default());
            let task = tokio::spawn(phone(
                vec![url],
                None,
                t0,
                every,
                stats.clone(),
                stop.clone(),
                drain_limit,
            ));
            (sub, stats, task)
        })
        .collect()
}

fn total(
    phones: &[(String, Arc<PhoneStats>, tokio::task::JoinHandle<()>)],
    f: impl Fn(&PhoneStats) -> u64,
) -> u64 {
    phones.iter().map(|(_, s, _)| f(s)).sum()
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every phone's buffer drained (everything it produced was acked), and every produced fix is in
/// history exactly once: 1..=produced at `t0 + seq` s, nothing else. Returns (produced, stored).
async fn assert_history_complete(
    database_url: &str,
    t0: i64,
    phones: Vec<(String, Arc<PhoneStats>, tokio::task::JoinHandle<()>)>,
    log: impl Fn() -> String,
) -> (u64, u64) {
    let store = Store::connect(database_url).await.expect("store");
    let (mut produced_total, mut stored_total) = (0, 0);
    for (sub, stats, task) in phones {
        task.await.expect("phone task");
        let produced = stats.produced.load(Ordering::Relaxed);
        let acked = stats.acked.load(Ordering::Relaxed);
        assert_eq!(
            acked,
            produced,
            "{sub}: every fix produced was acked in the end\n{}",
            log()
        );
        let track = store
            .track(
                FLEET,
                &sub,
                t0,
                t0 + (produced as i64 + 10) * 1000,
                10_000_000,
            )
            .await
            .expect("track");
        let want: Vec<i64> = (1..=produced).map(|s| t0 + s as i64 * 1000).collect();
        let have: Vec<i64> = track.iter().map(|f| f.ts_ms).collect();
        assert_eq!(
            have.len(),
            want.len(),
            "{sub}: stored {} of {produced}",
            have.len()
        );
        assert_eq!(
            have, want,
            "{sub}: history holds exactly the fixes produced"
        );
        stored_total += have.len() as u64;
        produced_total += produced;
    }
    store.close().await;
    (produced_total, stored_total)
}

/// SIGKILL of a loaded hub, then a restart on the same database: every fix acknowledged before
/// the kill is in history, and the phones' resent buffers complete it.
async fn sigkill_loses_no_acked_fix(database_url: String, dir: PathBuf, store_name: &str) {
    const PHONES: usize = 40;
    let mut hub = Hub::start(&dir, &database_url).await;
    let t0 = trackhub::model::now_ms() - 86_400_000;
    let stop = Arc::new(AtomicBool::new(false));
    // 40 phones × 50 fixes/s = 2,000 fixes/s, one fix per frame.
    let phones = phones(
        &hub,
        PHONES,
        t0,
        Duration::from_millis(20),
        &stop,
        Duration::from_secs(60),
    );
    wait_until(Duration::from_secs(60), "10,000 fixes acked", || {
        total(&phones, |s| s.acked.load(Ordering::Relaxed)) >= 10_000
    })
    .await;
    hub.kill();
    let acked_at_kill: Vec<u64> = phones
        .iter()
        .map(|(_, s, _)| s.acked.load(Ordering::Relaxed))
        .collect();
    // Read before anything restarts: what survived the kill alone.
    let store = Store::connect(&database_url).await.expect("store");
    for ((sub, _, _), acked) in phones.iter().zip(&acked_at_kill) {
        let track = store
            .track(FLEET, sub, t0, t0 + (*acked as i64) * 1000, 10_000_000)
            .await
            .expect("track");
        assert_eq!(
            track.len() as u64,
            *acked,
            "{store_name}: {sub} had {acked} fixes acked before SIGKILL, {} are stored",
            track.len()
        );
    }
    store.close().await;
    let acked_total: u64 = acked_at_kill.iter().sum();
    hub.spawn().await;
    wait_until(
        Duration::from_secs(60),
        "every phone reconnected and acked again",
        || {
            phones
                .iter()
                .zip(&acked_at_kill)
                .all(|((_, s, _), a)| s.acked.load(Ordering::Relaxed) > *a + 50)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (produced, stored) = assert_history_complete(&database_url, t0, phones, || hub.log()).await;
    eprintln!(
        "faults/{store_name}: SIGKILL with {acked_total} fixes acked: all {acked_total} in history after the kill; \
         {produced} produced in all, {stored} stored, 0 lost, 0 duplicated"
    );
    hub.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sigkill_of_a_hub_on_sqlite_loses_no_acked_fix() {
    let dir = temp_dir();
    let url = trackhub::config::sqlite_url(&dir);
    sigkill_loses_no_acked_fix(url, dir, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sigkill_of_a_hub_on_postgres_loses_no_acked_fix() {
    let server = std::env::var("TRACKHUB_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("TRACKHUB_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (url, name) = create_database(&server).await;
    sigkill_loses_no_acked_fix(url, temp_dir(), "postgres").await;
    drop_database(&server, &name).await;
}

/// A PostgreSQL server of the test's own: `initdb` into a temp dir and `pg_ctl` on a free port
/// (as the `postgres` user when the test runs as root, which PostgreSQL refuses to run as).
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = temp_dir().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.parent().unwrap())
                .status()
                .expect("chown");
            assert!(
                ok.success(),
                "chown of the test's PostgreSQL dir to postgres"
            );
        }
        let pg = Self {
            bin,
            data: dir,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data.to_str().unwrap().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.up();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{} could not run: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let data = self.data.to_str().unwrap().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port, data
        );
        let log = format!("{data}/server.log");
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    /// `pg_ctl stop -m fast`: sessions are disconnected, as in a maintenance stop or failover.
    fn down(&self) {
        let data = self.data.to_str().unwrap().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", &data, "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap());
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, else Debian's
/// `/usr/lib/postgresql/<newest>/bin`. Panics (with what to install) when neither exists.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|b| b.join("initdb").exists())
        .expect("initdb not found: install PostgreSQL (bash scripts/ensure-services.sh does)")
}

/// How long the outage test keeps PostgreSQL down, seconds: `TRACKHUB_FAULT_OUTAGE_S`, 180 by
/// default (issue 16 asks for minutes, longer than every timeout in the hub's write path).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("TRACKHUB_FAULT_OUTAGE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    )
}

/// PostgreSQL stopped for minutes under a 50 fixes/s stream, then started again: the hub never
/// acks what it cannot store (socket phones get `unavailable` with a retry hint, an OsmAnd phone
/// 503 with `Retry-After`, and they keep their buffers), reports itself unready, stays up, and
/// once the database is back writes what it had queued and takes the resent buffers: every fix
/// produced is in history once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_down_for_minutes_loses_no_fix() {
    const PHONES: usize = 10;
    let pg = OwnPostgres::start();
    let dir = temp_dir();
    let mut hub = Hub::start(&dir, &pg.url()).await;
    let t0 = trackhub::model::now_ms() - 86_400_000;
    // A Traccar Client phone too (OsmAnd protocol), registered before the outage.
    let keys = Keys::from_secret(SECRET.as_bytes());
    let admin = keys.mint("ops", Role::Admin, FLEET, 3600);
    let http = reqwest::Client::new();
    let made: Value = http
        .post(format!("{}/v1/devices", hub.base()))
        .bearer_auth(&admin)
        .json(&json!({"id": "osm-1", "driver_id": "O1"}))
        .send()
        .await
        .expect("register a device")
        .json()
        .await
        .expect("device JSON");
    let device_key = made["key"].as_str().expect("device key").to_string();
    let osmand = |ts_s: i64| {
        format!(
            "{}/osmand?key={device_key}&id=osm-1&timestamp={ts_s}&lat=41.15&lon=-8.61&accuracy=8",
            hub.base()
        )
    };
    let report_ts = t0 / 1000 + 5;
    let stop = Arc::new(AtomicBool::new(false));
    // 10 phones × 5 fixes/s = 50 fixes/s, as in issue 16's measurement.
    let phones = phones(
        &hub,
        PHONES,
        t0,
        Duration::from_millis(200),
        &stop,
        Duration::from_secs(120),
    );
    wait_until(Duration::from_secs(30), "500 fixes acked", || {
        total(&phones, |s| s.acked.load(Ordering::Relaxed)) >= 500
    })
    .await;

    let down_for = outage();
    pg.down();
    let went_down = Instant::now();
    // The hub says so: phones are told to hold their fixes, and readiness fails.
    wait_until(
        Duration::from_secs(30),
        "every phone told `unavailable`",
        || {
            phones
                .iter()
                .all(|(_, s, _)| s.unavailable.load(Ordering::Relaxed) > 0)
        },
    )
    .await;
    let told_after = went_down.elapsed();
    assert_eq!(
        hub.readyz().await,
        Some(503),
        "readiness fails while the database is down"
    );
    // The OsmAnd phone is told the same: 503 with Retry-After, so it keeps the report.
    let refused = http
        .post(osmand(report_ts))
        .send()
        .await
        .expect("osmand answers");
    assert_eq!(refused.status().as_u16(), 503, "OsmAnd during the outage");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    let acked_early = total(&phones, |s| s.acked.load(Ordering::Relaxed));
    tokio::time::sleep(down_for.saturating_sub(went_down.elapsed())).await;
    let acked_late = total(&phones, |s| s.acked.load(Ordering::Relaxed));
    assert_eq!(
        acked_late, acked_early,
        "nothing is acked while the database is down"
    );
    let produced_down = total(&phones, |s| s.produced.load(Ordering::Relaxed));
    pg.up();
    let came_back = Instant::now();
    wait_until(
        Duration::from_secs(90),
        "every buffered fix acked after the database came back",
        || {
            phones.iter().all(|(_, s, _)| {
                s.acked.load(Ordering::Relaxed)
                    >= s.produced.load(Ordering::Relaxed).saturating_sub(10)
            })
        },
    )
    .await;
    let caught_up = came_back.elapsed();
    // The OsmAnd phone resends its report after Retry-After: now 200, committed, stored.
    let resent = http
        .post(osmand(report_ts))
        .send()
        .await
        .expect("osmand answers");
    assert_eq!(resent.status().as_u16(), 200, "OsmAnd after the outage");
    let store = Store::connect(&pg.url()).await.expect("store");
    let osm = store
        .track(FLEET, "O1", 0, i64::MAX, 10)
        .await
        .expect("track");
    assert_eq!(osm.len(), 1, "the resent report is stored once");
    assert_eq!(osm[0].ts_ms, report_ts * 1000);
    store.close().await;
    stop.store(true, Ordering::Relaxed);
    let unavailable = total(&phones, |s| s.unavailable.load(Ordering::Relaxed));
    let (produced, stored) = assert_history_complete(&pg.url(), t0, phones, || hub.log()).await;
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .wait_timeout(Duration::ZERO)
            .is_none(),
        "the hub stayed up"
    );
    eprintln!(
        "faults/postgres-outage: down {down_for:?}; phones told `unavailable` within {told_after:?} \
         ({unavailable} answers), {acked_early} acked before, none during; {produced_down} produced by the \
         restart; caught up {caught_up:?} after it; {produced} produced in all, {stored} stored, 0 lost"
    );
    hub.kill();
}

/// A webhook receiver on loopback that answers 200 and counts deliveries by event id.
async fn receiver() -> (String, Arc<std::sync::Mutex<BTreeMap<String, u32>>>) {
    let got: Arc<std::sync::Mutex<BTreeMap<String, u32>>> = Arc::default();
    let counts = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let counts = counts.clone();
            async move {
                let id = headers["trackhub-event-id"].to_str().unwrap().to_string();
                *counts.lock().unwrap().entry(id).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// Two nodes on PostgreSQL and Redis. Phones stream to node A (one of them parked at its only
/// stop, with a webhook on check-ins); node A is SIGKILLed mid-stream and the phones fail over
/// to node B with their buffers; then Redis is killed and restarted under the stream. Every
/// fix produced is in history once, the check-in is stored once, and its webhook is delivered
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fault_node_killed_while_drivers_move_and_redis_restarts() {
    use crate::common::cluster::Cluster;
    const PHONES: usize = 20;
    let mut c = Cluster::start(2).await;
    let (hook_url, deliveries) = receiver().await;
    let (status, body) = c
        .post(
            0,
            "/v1/webhooks",
            FLEET,
            &json!({"url": hook_url, "events": ["stop.checked_in"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (lat, lon) = (41.16, -8.62);
    let trip =
        json!({"id": "trip-p", "driver_id": "P", "stops": [{"id": "s1", "lat": lat, "lon": lon}]});
    assert_eq!(c.post(0, "/v1/trips", FLEET, &trip).await.0, 201);

    let t0 = trackhub::model::now_ms() - 86_400_000;
    let stop = Arc::new(AtomicBool::new(false));
    let mut phones = Vec::new();
    for i in 0..=PHONES {
        let (sub, park) = match i {
            PHONES => ("P".to_string(), Some((lat, lon))),
            i => (format!("D{i}"), None),
        };
        let token = c.token(Role::Driver, &sub, FLEET);
        let urls = vec![
            c.nodes[0].ws_url("/v1/ws/driver", &token),
            c.nodes[1].ws_url("/v1/ws/driver", &token),
        ];
        let stats = Arc::new(PhoneStats::default());
        let task = tokio::spawn(phone(
            urls,
            park,
            t0,
            // A fix per 100 ms of 1 s device time each (the nodes' default limit is 20 frames/s
            // per socket): P's 75 s dwell takes 7.5 s.
            Duration::from_millis(100),
            stats.clone(),
            stop.clone(),
            Duration::from_secs(60),
        ));
        phones.push((sub, stats, task));
    }
    wait_until(
        Duration::from_secs(60),
        "1,000 fixes acked on node A",
        || total(&phones, |s| s.acked.load(Ordering::Relaxed)) >= 1_000,
    )
    .await;
    c.nodes[0].kill();
    let acked_at_kill = total(&phones, |s| s.acked.load(Ordering::Relaxed));
    wait_until(
        Duration::from_secs(60),
        "every phone acked again on node B",
        || {
            phones
                .iter()
                .all(|(_, s, _)| s.reconnects.load(Ordering::Relaxed) > 0)
                && total(&phones, |s| s.acked.load(Ordering::Relaxed)) > acked_at_kill + 1_000
        },
    )
    .await;
    c.redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.redis.restart().await;
    let acked_at_redis = total(&phones, |s| s.acked.load(Ordering::Relaxed));
    wait_until(
        Duration::from_secs(60),
        "the stream goes on after Redis restarted, and P has streamed past its dwell",
        || {
            total(&phones, |s| s.acked.load(Ordering::Relaxed)) > acked_at_redis + 1_000
                && phones[PHONES].1.acked.load(Ordering::Relaxed) > 100
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let p_stats = phones[PHONES].1.clone();
    let (produced, stored) =
        assert_history_complete(&c.database_url, t0, phones, || c.log_of(1)).await;
    let announced = p_stats.checkins.load(Ordering::Relaxed);

    let store = Store::connect(&c.database_url).await.expect("store");
    let checkins = store
        .checkins(
            FLEET,
            &trackhub::store::CheckinFilter {
                trip_id: Some("trip-p".into()),
                driver_id: None,
                limit: 10,
            },
        )
        .await
        .expect("checkins");
    assert_eq!(
        checkins.len(),
        1,
        "the check-in is stored once: {checkins:?}"
    );
    store.close().await;
    wait_until(
        Duration::from_secs(30),
        "the check-in's webhook delivered",
        || !deliveries.lock().unwrap().is_empty(),
    )
    .await;
    // Time for a duplicate delivery to show up, were there one (the dispatcher polls every 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = deliveries.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "one check-in event: {delivered:?}");
    assert!(
        delivered.values().all(|n| *n == 1),
        "delivered once: {delivered:?}"
    );
    eprintln!(
        "faults/cluster: node A killed at {acked_at_kill} acked, phones moved to node B, Redis restarted at \
         {acked_at_redis}; {produced} produced, {stored} stored, 0 lost; check-in stored 1x, announced to P \
         {announced}x, webhook delivered 1x"
    );
    c.stop().await;
}
