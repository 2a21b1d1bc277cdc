//! The customer's tracking page: `/t/{token}`, opened from a link a dispatcher made for one
//! stop (`POST /v1/trips/{trip_id}/stops/{stop_id}/links`). No login: the token is the
//! capability, and it opens only this:
//! - the stop (its name, position, window, status and ETA; never its trip, fleet or other stops);
//! - how many of the trip's pending stops come before it ("3 stops before yours");
//! - the driver's live position (no driver id) **only while this stop is the driver's next
//!   stop**, as the hub's ETA refresh decided it (the `next_stop` of its live position);
//! - after the check-in, "delivered at …", until a grace period later (`--link-grace-s`), when
//!   the link answers 410 like a revoked or expired one.
//!
//! `GET /t/{token}` is the page (embedded, as the map), `GET /t/{token}/status` the JSON view,
//! `GET /t/{token}/live` the same view over Server-Sent Events whenever it changes (`event:
//! status`), then `event: gone` when the link ends. Every request is rate-limited per client IP
//! (`--public-rate-per-ip`); live streams per link are capped like watcher sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::Serialize;

use crate::error::ApiError;
use crate::limits::SocketKind;
use crate::model::{now_ms, DriverKey, StopStatus};
use crate::protocol::time::format_ts;
use crate::state::AppState;
use crate::store::links::LinkRecord;

/// How often a live stream looks at the driver's position (memory), ms.
const POSITION_EVERY_MS: u64 = 1_000;
/// How often a live stream re-reads the stop from the database when no event of its fleet
/// woke it, ms (ETAs are stored every few seconds; check-ins wake it at once).
const STOP_EVERY_MS: i64 = 5_000;

/// What the page shows. Times RFC 3339 UTC, degrees WGS84.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LinkView {
    /// `upcoming` (other stops first), `next` (the driver is on the way here), `delivered`.
    pub state: &'static str,
    pub stop: StopPublic,
    /// Pending stops of the trip before this one (0 when next or delivered).
    pub stops_before: usize,
    /// The driver's position, only while this stop is next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverPublic>,
    /// When the driver checked in here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// When this link stops working.
    pub expires_at: String,
}

/// The stop, as its customer may see it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StopPublic {
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub status: &'static str,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    /// Pending: the latest ETA.
    pub eta: Option<String>,
    /// Pending with a window: the ETA is past its end.
    pub late: bool,
}

/// The driver's position, without its id.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DriverPublic {
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Device time of the fix.
    pub ts: String,
}

/// A link that opens a page: the record and what it needs from the trip.
struct Opened {
    link: LinkRecord,
    driver: DriverKey,
    view: LinkView,
}

fn admit(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let ip = app.limits.client_ip(peer, headers);
    app.limits
        .admit_public_request(ip)
        .map_err(|retry_after| ApiError::RateLimited {
            message: "too many requests from this address; retry later".into(),
            retry_after,
        })
}

/// Reads the link and its stop; 404 for a token that was never issued, 410 for a revoked or
/// expired link (and one whose stop was delivered longer than the grace period ago).
async fn open(app: &AppState, token: &str) -> Result<Opened, ApiError> {
    let not_found = || ApiError::NotFound("no such tracking link".into());
    if token.len() > 64 {
        return Err(not_found());
    }
    let link = app
        .hub
        .store
        .link_by_hash(&crate::store::links::token_hash(token))
        .await?
        .ok_or_else(not_found)?;
    let now = now_ms();
    if link.revoked_at.is_some() {
        return Err(ApiError::Gone("this tracking link was revoked".into()));
    }
    if now >= link.expires_at {
        return Err(ApiError::Gone("this tracking link has expired".into()));
    }
    let trip = app
        .hub
        .store
        .trip(&link.fleet, &link.trip_id)
        .await?
        .ok_or_else(|| ApiError::Gone("this delivery no longer exists".into()))?;
    let Some(index) = trip.stops.iter().position(|s| s.id == link.stop_id) else {
        return Err(ApiError::Gone("this delivery no longer exists".into()));
    };
    let stop = &trip.stops[index];
    let grace_ends = stop.checked_in_at.map(|t| t + app.cfg.link_grace_s * 1000);
    if grace_ends.is_some_and(|end| now >= end) {
        return Err(ApiError::Gone("this tracking link has expired".into()));
    }
    let pending = stop.status == StopStatus::Pending;
    let stops_before = if pending {
        trip.stops[..index]
            .iter()
            .filter(|s| s.status == StopStatus::Pending)
            .count()
    } else {
        0
    };
    let view = LinkView {
        state: if !pending { "delivered" } else { "upcoming" },
        stop: StopPublic {
            name: stop.name.clone(),
            lat: stop.lat,
            lon: stop.lon,
            status: stop.status.as_str(),
            window_start: stop.window_start.map(format_ts),
            window_end: stop.window_end.map(format_ts),
            eta: stop.eta.filter(|_| pending).map(format_ts),
            late: pending && stop.late,
        },
        stops_before,
        driver: None,
        delivered_at: stop.checked_in_at.map(format_ts),
        expires_at: format_ts(grace_ends.map_or(link.expires_at, |g| g.min(link.expires_at))),
    };
    Ok(Opened {
        driver: DriverKey::new(&trip.fleet, &trip.driver_id),
        link,
        view,
    })
}

/// The view with the driver's live position, when this stop is its next stop (the node's live
/// index holds every driver of the fleet, whichever node serves it).
fn with_driver(app: &AppState, opened: &Opened) -> LinkView {
    let mut view = opened.view.clone();
    if view.state == "delivered" {
        return view;
    }
    let live = app
        .hub
        .position(&opened.driver.fleet, &opened.driver.driver_id);
    let next = live.as_ref().and_then(|p| p.next_stop.as_ref());
    if let (Some(p), Some(n)) = (&live, next) {
        if *n.key.trip_id == *opened.link.trip_id && *n.key.stop_id == *opened.link.stop_id {
            view.state = "next";
            view.stops_before = 0;
            view.stop.eta = Some(format_ts(n.eta_ms));
            view.driver = Some(DriverPublic {
                lat: p.fix.lat,
                lon: p.fix.lon,
                heading_deg: p.fix.heading_deg,
                ts: format_ts(p.fix.ts_ms),
            });
        }
    }
    view
}

/// Headers of every public answer: the token is in the URL, so no referrer leaves the page
/// and nothing is cached or indexed.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

/// `GET /t/{token}`: the tracking page (it reads its token from the address and follows
/// `/t/{token}/live`).
#[utoipa::path(get, path = "/t/{token}", operation_id = "tracking_page", tag = "links", params(("token" = String, Path, description = "The link's token")), responses((status = 200, description = "The page", content_type = "text/html", body = String), (status = 429, description = "Over the per-IP rate", body = crate::error::Problem)))]
pub async fn page(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(_token): Path<String>,
) -> Result<Response, ApiError> {
    admit(&app, peer, &headers)?;
    Ok(private(crate::web::tracking_page(&app)))
}

/// `GET /t/{token}/status`: the page's view now.
#[utoipa::path(get, path = "/t/{token}/status", operation_id = "tracking_status", tag = "links", params(("token" = String, Path, description = "The link's token")), responses((status = 200, description = "What the page shows", body = LinkView), (status = 404, description = "No such link", body = crate::error::Problem), (status = 410, description = "Revoked, expired, or delivered past the grace period", body = crate::error::Problem), (status = 429, description = "Over the per-IP rate", body = crate::error::Problem)))]
pub async fn status(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    admit(&app, peer, &headers)?;
    let opened = open(&app, &token).await?;
    Ok(private(Json(with_driver(&app, &opened)).into_response()))
}

/// `GET /t/{token}/live`: the view as Server-Sent Events, `event: status` each time it changes,
/// `event: gone` (`{"status":410|404,"detail"}`) when the link ends.
#[utoipa::path(get, path = "/t/{token}/live", operation_id = "tracking_live", tag = "links", params(("token" = String, Path, description = "The link's token")), responses((status = 200, description = "`text/event-stream` of `status` views, then `gone`", content_type = "text/event-stream", body = String), (status = 404, description = "No such link", body = crate::error::Problem), (status = 410, description = "Revoked, expired, or delivered past the grace period", body = crate::error::Problem), (status = 429, description = "Over the per-IP rate, or too many viewers of this link", body = crate::error::Problem)))]
pub async fn live(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    admit(&app, peer, &headers)?;
    let opened = open(&app, &token).await?;
    // Viewers of one link count like one identity's watcher sockets.
    let identity = DriverKey::new(&opened.link.fleet, &format!("link:{}", opened.link.id));
    let permit = app.limits.watcher_socket(&identity).ok_or_else(|| {
        ApiError::TooManyRequests(app.limits.too_many_sockets_message(SocketKind::Watcher))
    })?;
    let stream = live_views(app, token, opened, permit);
    Ok(private(
        Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    ))
}

fn live_views(
    app: AppState,
    token: String,
    first: Opened,
    permit: crate::limits::SocketPermit,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |tx| async move {
        let _permit = permit;
        let mut feed = app.hub.feed.subscribe(&first.link.fleet.as_str().into());
        let mut opened = first;
        let mut read_at = now_ms();
        let mut sent: Option<LinkView> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(POSITION_EVERY_MS));
        let mut shutdown = app.shutdown.clone();
        let mut feed_open = true;
        loop {
            let view = with_driver(&app, &opened);
            if sent.as_ref() != Some(&view) {
                let data = serde_json::to_string(&view).unwrap_or_default();
                if tx
                    .send(SseEvent::default().event("status").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = Some(view);
            }
            let woken = tokio::select! {
                _ = tick.tick() => false,
                changed = feed.changed(), if feed_open => {
                    feed_open = changed.is_ok();
                    feed_open
                }
                _ = shutdown.recv() => return,
            };
            if woken || now_ms() - read_at >= STOP_EVERY_MS {
                read_at = now_ms();
                match open(&app, &token).await {
                    Ok(o) => opened = o,
                    Err(e @ (ApiError::Gone(_) | ApiError::NotFound(_))) => {
                        let (status, detail) = match &e {
                            ApiError::Gone(d) => (410, d.clone()),
                            other => (404, other.to_string()),
                        };
                        let data = serde_json::json!({"status": status, "detail": detail});
                        let _ = tx
                            .send(SseEvent::default().event("gone").data(data.to_string()))
                            .await;
                        return;
                    }
                    // The database is briefly unavailable: keep what we have, retry later.
                    Err(e) => tracing::warn!(error = %e, "tracking page: stop not re-read"),
                }
            }
        }
    })
}

/// A stream fed by a task through a small channel (the task ends when the client leaves: its
/// sends fail).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}
