//! The `trackhub` command: `serve`, `token`, `trips`, `devices`, `replay`, `eval-arrival`,
//! `eval-eta`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use trackhub::auth::{load_secret, Keys, Role};
use trackhub::config::{LogFormat, ServeArgs};
use trackhub::eval::{amazon, eta as eval_eta, profiles};
use trackhub::geo::arrival::ArrivalConfig;
use trackhub::replay::ReplayArgs;

#[derive(Parser)]
#[command(name = "trackhub", version, about = "Real-time fleet tracking hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (embedded defaults: SQLite in ./data, in-process bus, 127.0.0.1:8080).
    Serve(Box<ServeArgs>),
    /// Mint a token with the hub's secret; printed on the last line.
    Token(TokenArgs),
    /// Create, list and show trips on a running hub (admin REST calls).
    #[command(subcommand)]
    Trips(trackhub::admin::TripsCommand),
    /// Register, list and show the phones that report over the OsmAnd protocol.
    #[command(subcommand)]
    Devices(trackhub::admin::DevicesCommand),
    /// Replay recorded traces as live drivers over WebSockets.
    Replay(ReplayArgs),
    /// Score arrival detection on the Amazon delivery dataset.
    EvalArrival(EvalArgs),
    /// Score ETAs on real trips (Porto taxi, Go!Track) against naive baselines.
    EvalEta(EvalEtaArgs),
    /// Score automatic stops (stationary anywhere) on the Amazon delivery labels; count them on
    /// other traces (`--trace FILE`).
    EvalStops(EvalArgs),
}

#[derive(clap::Args)]
struct EvalEtaArgs {
    /// Trace files (any format `replay` reads); default: the Porto taxi training trips and the
    /// Go!Track trips in ../shared/data.
    #[arg(long = "trace")]
    traces: Vec<PathBuf>,
    /// Weight of the driver's own pace (see `EtaConfig::pace_weight`).
    #[arg(long)]
    pace_weight: Option<f64>,
    /// Print the approach curve learned from all the trips (the figures of `PRIOR_MPS`).
    #[arg(long)]
    learn: bool,
}

#[derive(clap::Args)]
struct TokenArgs {
    #[arg(long, env = "TRACKHUB_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "TRACKHUB_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    #[arg(long, value_enum)]
    role: Role,
    /// Subject: the driver id for drivers.
    #[arg(long)]
    sub: String,
    #[arg(long, default_value = trackhub::auth::DEFAULT_FLEET)]
    fleet: String,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: i64,
    /// `iss` to put in the token: the hub's `--jwt-issuer`, when it requires one.
    #[arg(long, env = "TRACKHUB_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// `aud` to put in the token: the hub's `--jwt-audience`, when it requires one.
    #[arg(long, env = "TRACKHUB_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The dataset's `data_anon` directory.
    #[arg(long, default_value = amazon::DATASET_DIR)]
    dataset: PathBuf,
    /// Use only the first N chunks.
    #[arg(long)]
    limit: Option<usize>,
    /// Dwell time to evaluate, seconds (default: the hub's default).
    #[arg(long)]
    dwell_s: Option<u64>,
    /// Stationary radius to evaluate, metres.
    #[arg(long)]
    stationary_radius_m: Option<f64>,
    /// Device behaviour to simulate (what the app would have sent of each trace): every,
    /// every-15s, every-30s, every-60s, traccar9, traccar10, osmand, or `all` for a table of
    /// every one. Default: every fix.
    #[arg(long, default_value = "every")]
    profile: String,
    /// eval-stops: also count automatic stops on these trace files (any format `replay` reads).
    #[arg(long)]
    trace: Vec<PathBuf>,
}

impl EvalArgs {
    /// The arrival configuration with this run's overrides, and the chunk files to score.
    fn config_and_chunks(&self) -> anyhow::Result<(ArrivalConfig, Vec<PathBuf>)> {
        let mut cfg = ArrivalConfig::default();
        if let Some(d) = self.dwell_s {
            cfg.dwell_ms = d as i64 * 1000;
        }
        if let Some(r) = self.stationary_radius_m {
            cfg.stationary_radius_m = r;
        }
        let mut paths = amazon::chunk_paths(&self.dataset)?;
        if let Some(n) = self.limit {
            paths.truncate(n);
        }
        Ok((cfg, paths))
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            trackhub::replay::raise_fd_limit();
            let running = trackhub::app::start(args.resolve()).await?;
            running.run_until_signal().await
        }
        Command::Token(args) => {
            let secret = load_secret(&args.data_dir, args.jwt_secret.as_deref(), false)?;
            let claims = trackhub::auth::AuthConfig {
                issuer: args.jwt_issuer,
                audience: args.jwt_audience,
                ..Default::default()
            };
            let token = Keys::from_config(&secret, &claims)?.mint(
                &args.sub,
                args.role,
                &args.fleet,
                args.ttl_s,
            );
            println!("{token}");
            Ok(())
        }
        Command::Trips(cmd) => trackhub::admin::trips(cmd).await,
        Command::Devices(cmd) => trackhub::admin::devices(cmd).await,
        Command::Replay(args) => {
            init_logging(LogFormat::Text);
            let summary = trackhub::replay::run(&args).await?;
            println!("{summary}");
            if summary.failed_drivers > 0 {
                anyhow::bail!("{} driver(s) failed", summary.failed_drivers);
            }
            Ok(())
        }
        Command::EvalStops(args) => {
            let (cfg, paths) = args.config_and_chunks()?;
            let s = trackhub::eval::stops::evaluate(&paths, &cfg, amazon::DEFAULT_ORIGIN)?;
            println!(
                "chunks {} | dwell {} s, radius {} m | TP {} FP {} FN {} (of which {} in one stop with the previous) (stops under 60 s: {}) | precision {:.4} recall {:.4} | stopped {:.0} min vs OnFoot {:.0} min",
                paths.len(),
                cfg.dwell_ms / 1000,
                cfg.stationary_radius_m,
                s.true_positives,
                s.false_positives,
                s.false_negatives,
                s.merged,
                s.short_stops,
                s.precision(),
                s.recall(),
                s.stopped_ms as f64 / 60_000.0,
                s.on_foot_ms as f64 / 60_000.0
            );
            for path in &args.trace {
                let traces = trackhub::replay::formats::read(path, None)?;
                let (mut stops, mut stopped_ms, mut span_ms) = (0, 0i64, 0i64);
                for t in &traces {
                    let mut d = trackhub::geo::stops::StopDetector::default();
                    let mut since = None;
                    for f in &t.fixes {
                        match d.observe(f, &cfg) {
                            Some(trackhub::geo::stops::Movement::Stopped { since_ms, .. }) => {
                                stops += 1;
                                since = Some(since_ms);
                            }
                            Some(trackhub::geo::stops::Movement::Moving { at_ms, .. }) => {
                                stopped_ms += since.take().map_or(0, |s| at_ms - s);
                            }
                            None => {}
                        }
                    }
                    let (a, b) = (t.fixes[0].ts_ms, t.fixes[t.fixes.len() - 1].ts_ms);
                    stopped_ms += since.map_or(0, |s| b - s);
                    span_ms += b - a;
                }
                println!(
                    "{} | traces {} | automatic stops {} | stopped {:.0} min of {:.0} min",
                    path.display(),
                    traces.len(),
                    stops,
                    stopped_ms as f64 / 60_000.0,
                    span_ms as f64 / 60_000.0
                );
            }
            Ok(())
        }
        Command::EvalEta(args) => {
            let mut cfg = trackhub::eta::EtaConfig::default();
            if let Some(w) = args.pace_weight {
                cfg.pace_weight = w;
            }
            let paths = if args.traces.is_empty() {
                vec![
                    PathBuf::from(eval_eta::PORTO),
                    PathBuf::from(eval_eta::GOTRACK),
                ]
            } else {
                args.traces
            };
            for path in paths {
                anyhow::ensure!(
                    path.exists(),
                    "{} not found: the real traces live in ../shared/data (see its README)",
                    path.display()
                );
                let read = trackhub::replay::formats::read(&path, None)?;
                let traces = eval_eta::prepare(read.into_iter().map(|t| t.fixes));
                let name = path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().to_string());
                let from_prior = name != eval_eta::PRIOR_SOURCE;
                if args.learn {
                    let l = eval_eta::learn(&traces, false);
                    println!(
                        "{name}: curve m/s {:?} | fleet travelled {:.2} m/s | median effective {:.2} m/s",
                        l.curve.speeds_mps().map(|v| (v * 10.0).round() / 10.0),
                        l.fleet_mps,
                        l.median_effective_mps
                    );
                }
                println!(
                    "{}",
                    eval_eta::table(&name, &eval_eta::evaluate(&cfg, &traces, from_prior))
                );
            }
            Ok(())
        }
        Command::EvalArrival(args) => {
            let (cfg, paths) = args.config_and_chunks()?;
            let names: Vec<&str> = if args.profile == "all" {
                profiles::PROFILES.to_vec()
            } else {
                vec![args.profile.as_str()]
            };
            println!(
                "chunks {} | dwell {} s, stationary radius {} m",
                paths.len(),
                cfg.dwell_ms / 1000,
                cfg.stationary_radius_m,
            );
            for name in names {
                let profile = profiles::Profile::parse(name)?;
                let r = amazon::evaluate_profile(&paths, &cfg, amazon::DEFAULT_ORIGIN, profile)?;
                let s = r.score;
                println!(
                    "profile {name} | fixes {} | TP {} FN {} FP {} TN {} duplicates {} | precision {:.4} recall {:.4} | median delay {}",
                    r.fixes_sent,
                    s.true_positives,
                    s.false_negatives,
                    s.false_positives,
                    s.true_negatives,
                    s.duplicates,
                    s.precision(),
                    s.recall(),
                    r.median_delay_s().map_or("-".to_string(), |d| format!("{d:.0} s"))
                );
                let kinds: Vec<String> = r
                    .by_evidence
                    .iter()
                    .map(|(kind, (real, false_))| format!("{kind} {real} real / {false_} false"))
                    .collect();
                println!("  check-ins by evidence: {}", kinds.join(", "));
            }
            Ok(())
        }
    }
}
