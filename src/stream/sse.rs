//! Service streams over Server-Sent Events (`GET /v1/stream`); the query is [`super::query`]'s.
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
use serde_json::json;

use super::query::{stream_spec, StreamParams};
use super::StreamItem;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::limits::{SocketKind, SocketPermit};
use crate::protocol::{EventView, PositionView};
use crate::state::AppState;

/// `GET /v1/stream` (admin, service): the stream as `text/event-stream`.
#[utoipa::path(get, path = "/v1/stream", operation_id = "stream_sse", tag = "streams", params(StreamParams), security(("bearer" = [])), responses((status = 200, description = "`text/event-stream`: snapshot, positions, events with their log id, error", content_type = "text/event-stream", body = String), (status = 410, body = crate::error::Problem), (status = 429, description = "Connection rate, or too many streams of this identity", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
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
