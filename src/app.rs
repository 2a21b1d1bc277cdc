//! Start-up and shutdown: builds the one `AppState`, owns the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{load_secret, Keys};
use crate::bus::{self, Bus, Incoming};
use crate::config::ServerConfig;
use crate::fanout::feed::EventFeed;
use crate::fanout::Fanout;
use crate::hub::presence::{Emitter, PresenceLog};
use crate::hub::Hub;
use crate::limits::Limits;
use crate::model::now_ms;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::state::AppState;
use crate::store::track::TrackWriter;
use crate::store::Store;

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown_tx: ShutdownTrigger,
    sessions_rx: mpsc::Receiver<()>,
    server: JoinHandle<std::io::Result<()>>,
    /// Tasks that end by themselves when `shutdown` turns true: presence sweeper, webhook
    /// dispatcher, event retention.
    background: Vec<JoinHandle<()>>,
    bus_tasks: Option<(bus::redis::BusTasks, JoinHandle<()>)>,
    writer_stop: ShutdownTrigger,
    writer: crate::store::track::WriterHandle,
    presence_writer: JoinHandle<()>,
}

/// Opens the store, restores active trips, binds the listener and starts serving.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    private_files(&cfg.data_dir, &cfg.database_url)?;
    let secret = load_secret(&cfg.data_dir, cfg.jwt_secret.as_deref(), true)?;
    crate::metrics::handle();
    let store = Store::connect(&cfg.database_url).await?;
    let writer_stop = ShutdownTrigger::new();
    let (track, writer) = TrackWriter::spawn(store.clone(), writer_stop.subscribe());
    let shutdown_tx = ShutdownTrigger::new();
    let shutdown_rx = shutdown_tx.subscribe();
    let (bus, incoming) = match &cfg.redis_url {
        Some(url) => {
            let (bus, incoming, tasks) = bus::redis::start(url, shutdown_rx.clone())?;
            (bus, Some((incoming, tasks)))
        }
        None => (Bus::local(), None),
    };
    let emitter = Emitter {
        fanout: Fanout::new(),
        bus,
        feed: EventFeed::new(),
    };
    let flusher = tokio::spawn(Fanout::run_flusher(
        Arc::downgrade(&emitter.fanout),
        Duration::from_millis(cfg.flush_interval_ms),
        shutdown_rx.clone(),
    ));
    let (presence, presence_writer) =
        PresenceLog::spawn(store.clone(), emitter.clone(), writer_stop.subscribe());
    let hub = Arc::new(Hub::new(cfg.hub, store, track, presence, emitter));
    let bus_tasks =
        incoming.map(|(rx, tasks)| (tasks, tokio::spawn(apply_incoming(hub.clone(), rx))));

    let (session_guard, sessions_rx) = mpsc::channel(1);
    let state = AppState {
        hub: hub.clone(),
        keys: Arc::new(Keys::from_config(&secret, &cfg.auth)?),
        cfg: Arc::new(cfg.clone()),
        limits: Limits::new(cfg.limits),
        shutdown: shutdown_rx.clone(),
        session_guard,
    };

    let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
    let addr = listener.local_addr()?;
    let router = router(state.clone());
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.recv().await })
        .await
    });
    let webhooks = tokio::spawn(crate::webhooks::run(
        hub.store.clone(),
        cfg.webhooks,
        hub.feed.subscribe_all(),
        shutdown_rx.clone(),
    ));
    let retention = tokio::spawn(retention(
        hub.store.clone(),
        Duration::from_secs(cfg.events.retention_s),
        cfg.track_retention,
        shutdown_rx.clone(),
    ));
    let etas = tokio::spawn(hub.clone().run_eta_refresher(shutdown_rx.clone()));
    let sweeper = tokio::spawn(presence_sweeper(hub, state.limits.clone(), shutdown_rx));
    tracing::info!(
        %addr,
        database = %redact(&cfg.database_url),
        bus = cfg.redis_url.as_deref().map(redact).unwrap_or_else(|| "local".into()),
        "trackhub listening"
    );
    Ok(Running {
        addr,
        state,
        shutdown_tx,
        sessions_rx,
        server,
        background: vec![sweeper, webhooks, retention, flusher, etas],
        bus_tasks,
        writer_stop,
        writer,
        presence_writer,
    })
}

/// Creates the data dir and keeps it and the SQLite database private to the hub's user: 0700
/// and 0600 (issue 16: both were world-readable, and the database holds webhook secrets).
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
fn private_files(data_dir: &std::path::Path, database_url: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some(rest) = database_url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(rest.split('?').next().unwrap_or(rest));
            if !path.as_os_str().is_empty() && path != std::path::Path::new(":memory:") {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// Applies what other nodes publish, in arrival order; ends when the subscriber stops.
async fn apply_incoming(hub: Arc<Hub>, mut rx: mpsc::Receiver<Incoming>) {
    while let Some(incoming) = rx.recv().await {
        hub.apply_remote(incoming).await;
    }
}

/// Every route of the hub.
pub fn router(state: AppState) -> Router {
    let (router, doc) = openapi_router(&state.cfg.allowed_origins).split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(crate::web::routes())
        .with_state(state)
}

/// Every documented route and the OpenAPI document built from them: REST (with CORS), then
/// operations and sockets.
pub fn openapi_router(allowed_origins: &[String]) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::api::openapi::ApiDoc::openapi())
        .merge(crate::api::routes().layer(cors(allowed_origins)))
        .merge(crate::api::edge_routes())
}

/// CORS (Fetch standard) for the REST routes: the allowed origins (`*`: any) may call with a
/// bearer token; preflights are cached 10 minutes. No origins configured: same-origin only.
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = if allowed.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

async fn presence_sweeper(hub: Arc<Hub>, limits: Arc<Limits>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                hub.sweep_presence(now_ms());
                limits.sweep();
                ticks += 1;
                if ticks % 60 == 0 {
                    crate::metrics::activity().log_and_reset("60s");
                }
            }
            _ = shutdown.recv() => return,
        }
    }
}

/// Deletes events older than `events` (and finished webhook deliveries as old) and stored fixes
/// older than `track` (`None`: kept), checking a few times per retention period, at most hourly.
async fn retention(
    store: Store,
    events: Duration,
    track: Option<Duration>,
    mut shutdown: Shutdown,
) {
    let shortest = track.map_or(events, |t| t.min(events));
    let every = (shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(3_600));
    let mut tick = tokio::time::interval(every);
    let before = |age: Duration| now_ms().saturating_sub(age.as_millis() as i64);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match store.prune_events(before(events)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!(crate::metrics::EVENTS_PRUNED).increment(n);
                        tracing::info!(events = n, "event retention: deleted old events");
                    }
                    Err(e) => tracing::warn!(error = %e, "event retention failed; retrying later"),
                }
                let Some(track) = track else { continue };
                match store.prune_track(before(track)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!(crate::metrics::FIXES_PRUNED).increment(n);
                        tracing::info!(fixes = n, "track retention: deleted old fixes");
                    }
                    Err(e) => tracing::warn!(error = %e, "track retention failed; retrying later"),
                }
                if let Err(e) = store.prune_stop_segments(before(track)).await {
                    tracing::warn!(error = %e, "stop-segment retention failed; retrying later");
                }
            }
            _ = shutdown.recv() => return,
        }
    }
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => format!(
            "{}://…@{host}",
            scheme_user.split("://").next().unwrap_or("")
        ),
        None => url.to_string(),
    }
}

impl Running {
    /// Drains: stops accepting, closes sockets with 1012 (service restart), waits for them (at
    /// most `grace`), flushes track history, closes the database.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        let Running {
            state,
            shutdown_tx,
            mut sessions_rx,
            server,
            background,
            bus_tasks,
            writer_stop,
            writer,
            presence_writer,
            ..
        } = self;
        shutdown_tx.trigger();
        let store = state.hub.store.clone();
        drop(state);
        let drained = tokio::time::timeout(grace, async {
            let _ = server.await;
            while sessions_rx.recv().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("sockets still open after the grace period");
        }
        for task in background {
            let _ = task.await;
        }
        if let Some((tasks, applier)) = bus_tasks {
            tasks.join().await;
            let _ = applier.await;
        }
        writer_stop.trigger();
        writer.join().await;
        let _ = presence_writer.await;
        store.close().await;
        Ok(())
    }

    /// Waits for SIGINT/SIGTERM, then drains.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutdown signal: draining");
        let grace = self.state.cfg.drain_timeout;
        self.stop(grace).await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
