//! Service streams over Server-Sent Events (`GET /v1/stream`), and the query both stream
//! transports share (`/v1/ws/stream` uses [`stream_spec`] too).
//!
//! Query: `fleet` (must be the token's), `drivers=a,b`, `bbox=w,s,e,n`, `mode=latest|all|none`
//! (default `latest`), `types=a,b|none` (event types, default every type), `since=ID` (resume the
//! events after this id; for SSE the `Last-Event-ID` header a reconnecting `EventSource` sends
//! wins over it).
//!
//! SSE framing (WHATWG HTML, "Server-sent events"): `event: snapshot` / `event: positions` with
//! `{"positions":[…]}`; each durable event as `id: <log id>`, `event: <type>`, its JSON as data;
//! `event: error` with `{"code","message"}` before the server ends a stream (slow consumer,
//! expired token). Comments every 15 s keep idle connections open through proxies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::events::{check_retained, parse_drivers, parse_types};
use super::ApiQuery;
use crate::auth::{Caller, Claims, Role};
use crate::error::{ApiError, FieldError};
use crate::fanout::{Combine, Scope};
use crate::geo::BBox;
use crate::limits::{SocketKind, SocketPermit};
use crate::protocol::{EventView, PositionView};
use crate::state::AppState;
use crate::stream::{self, EventFilter, Mode, StreamItem, StreamSettings, StreamSpec};

/// Query of both stream transports.
#[derive(Debug, Default, Deserialize)]
pub struct StreamParams {
    fleet: Option<String>,
    drivers: Option<String>,
    bbox: Option<String>,
    mode: Option<String>,
    types: Option<String>,
    since: Option<i64>,
}

/// A validated stream subscription and the event id a stream without `since` starts after.
pub struct Subscription {
    pub spec: StreamSpec,
    pub start_id: i64,
}

/// Validates a stream query: 403 for another fleet, 422 for bad fields, 410 when `since` (or
/// `last_event_id`, which wins) is older than retention kept.
pub async fn stream_spec(
    app: &AppState,
    claims: &Claims,
    q: StreamParams,
    last_event_id: Option<&str>,
) -> Result<Subscription, ApiError> {
    if q.fleet.as_deref().is_some_and(|f| f != claims.fleet) {
        return Err(ApiError::Forbidden(format!(
            "this token reads fleet `{}` only",
            claims.fleet
        )));
    }
    let mut errors = Vec::new();
    let mode = match q.mode.as_deref().unwrap_or("latest") {
        "latest" => Mode::Latest,
        "all" => Mode::All,
        "none" => Mode::None,
        other => {
            errors.push(FieldError::new(
                "mode",
                format!("`{other}` is not one of latest, all, none"),
            ));
            Mode::None
        }
    };
    let bbox = q.bbox.as_deref().and_then(|text| {
        BBox::parse(text)
            .map_err(|m| errors.push(FieldError::new("bbox", m)))
            .ok()
    });
    let drivers = parse_drivers(q.drivers.as_deref(), &mut errors).unwrap_or_default();
    let types = parse_types(q.types.as_deref(), &mut errors);
    let since = match last_event_id {
        Some(text) => match text.trim().parse::<i64>() {
            Ok(id) if id >= 0 => Some(id),
            _ => {
                errors.push(FieldError::new("Last-Event-ID", "must be an event id ≥ 0"));
                None
            }
        },
        None => q.since,
    };
    if since.is_some_and(|s| s < 0) {
        errors.push(FieldError::new("since", "must be an event id ≥ 0"));
    }
    let events = match types {
        Some(None) => None,
        Some(Some(types)) => Some(EventFilter {
            since,
            types: Some(types),
        }),
        None => Some(EventFilter { since, types: None }),
    };
    if mode == Mode::None && events.is_none() {
        errors.push(FieldError::new(
            "mode",
            "`mode=none` with `types=none` leaves nothing to stream",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let mut start_id = 0;
    if let Some(events) = &events {
        match events.since {
            Some(since) => check_retained(app, since).await?,
            None => start_id = app.hub.store.latest_event_id().await?,
        }
    }
    Ok(Subscription {
        spec: StreamSpec {
            fleet: claims.fleet.as_str().into(),
            filter: Scope {
                bbox,
                drivers: drivers.into_iter().collect(),
                combine: Combine::Intersection,
            },
            mode,
            events,
        },
        start_id,
    })
}

impl Subscription {
    /// Starts the stream's producer; the transport reads the receiver.
    pub fn start(self, app: &AppState) -> tokio::sync::mpsc::Receiver<StreamItem> {
        stream::spawn(
            app.hub.clone(),
            settings(app),
            self.spec,
            self.start_id,
            app.shutdown.clone(),
        )
    }
}

/// The runtime settings of streams from the server config.
fn settings(app: &AppState) -> StreamSettings {
    StreamSettings {
        queue: app.cfg.events.stream_queue,
        reread: Duration::from_millis(app.cfg.events.reread_ms),
    }
}

/// `GET /v1/stream` (admin, service): the stream as `text/event-stream`.
pub async fn sse(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Caller,
    ApiQuery(q): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let ip = app.limits.client_ip(peer, &headers);
    if !app.limits.admit_connection(ip) {
        return Err(ApiError::TooManyRequests(
            app.limits.over_connection_rate_message().into(),
        ));
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let sub = stream_spec(&app, &caller.0, q, last_event_id).await?;
    let permit = app
        .limits
        .watcher_socket(&crate::ws::watcher_identity(&caller.0))
        .ok_or_else(|| {
            ApiError::TooManyRequests(app.limits.too_many_sockets_message(SocketKind::Watcher))
        })?;
    let rx = sub.start(&app);
    Ok(Sse::new(sse_events(rx, caller.0.expiry_deadline(), permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The producer's items as SSE events; ends after an error event (overflow, token expiry) or
/// when the producer stops (server draining).
fn sse_events(
    rx: tokio::sync::mpsc::Receiver<StreamItem>,
    expiry: tokio::time::Instant,
    permit: SocketPermit,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct State {
        rx: tokio::sync::mpsc::Receiver<StreamItem>,
        expiry: tokio::time::Instant,
        first: bool,
        ended: bool,
        /// Counts this stream against its identity's cap until the response body is dropped.
        _permit: SocketPermit,
    }
    let state = State {
        rx,
        expiry,
        _permit: permit,
        first: true,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        let item = tokio::select! {
            item = s.rx.recv() => item?,
            _ = tokio::time::sleep_until(s.expiry) => {
                s.ended = true;
                return Some((Ok(error_event("token_expired", "the token expired; reconnect with a fresh one")), s));
            }
        };
        let mut event = match item {
            StreamItem::Snapshot(ps) => positions_event("snapshot", &ps),
            StreamItem::Positions(ps) => positions_event("positions", &ps),
            StreamItem::Event(e) => {
                let view = EventView::from(&*e);
                let sse = SseEvent::default()
                    .event(view.kind.clone())
                    .data(serde_json::to_string(&view).unwrap_or_default());
                match e.id {
                    Some(id) => sse.id(id.to_string()),
                    None => sse,
                }
            }
            StreamItem::Overflow => {
                s.ended = true;
                error_event(
                    "slow_consumer",
                    "too far behind in `all` mode; reconnect (and read faster, or use mode=latest)",
                )
            }
        };
        if std::mem::take(&mut s.first) {
            // EventSource's reconnection delay (ms), set once.
            event = event.retry(Duration::from_secs(2));
        }
        Some((Ok(event), s))
    })
}

fn positions_event(name: &str, positions: &[crate::model::LivePosition]) -> SseEvent {
    let views: Vec<PositionView> = positions.iter().map(PositionView::from).collect();
    SseEvent::default()
        .event(name)
        .data(json!({ "positions": views }).to_string())
}

fn error_event(code: &str, message: &str) -> SseEvent {
    SseEvent::default()
        .event("error")
        .data(json!({ "code": code, "message": message }).to_string())
}
