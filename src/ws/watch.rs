//! `GET /v1/ws/watch`: admins' maps and services follow live positions and events.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{admit, close, close_for_restart, Admitted, Conn, Received};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::fanout::{Scope, WatcherHandle};
use crate::geo::BBox;
use crate::limits::SocketKind;
use crate::protocol::codec::{DecodeError, Wire};
use crate::protocol::watch::{WatchIn, WatchOut};
use crate::state::AppState;

/// Most queued events written to a watcher's socket with one flush.
const EVENTS_PER_WRITE: usize = 256;

/// Least time between two snapshots of one socket. A snapshot reads every matching driver of the
/// fleet, so a client re-subscribing in a loop would make the hub do that work without bound
/// (issue 16); a map sending a subscribe per pan frame still gets its last view 250 ms later.
const SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Most driver ids in one subscription.
pub const MAX_SUBSCRIBED_DRIVERS: usize = 10_000;

/// Upgrade handler: 403 for a foreign browser origin, 401 without a valid token, 403 unless the
/// role is `admin` or `service`.
#[utoipa::path(get, path = "/v1/ws/watch", operation_id = "watch_socket", tag = "sockets", description = "The watch socket of maps: `subscribe` in, `snapshot`/`positions`/`event` out.", security(("bearer" = [])), responses((status = 101, description = "Switching Protocols: the WebSocket; frames in PROTOCOL.md (JSON, or protobuf with the `trackhub.v1.proto` subprotocol)"), (status = 401, body = crate::error::Problem), (status = 403, description = "Origin not allowed, or another role", body = crate::error::Problem)))]
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(
        &app,
        peer,
        &headers,
        caller,
        &[Role::Admin, Role::Service],
        ws,
    ) {
        Ok((admitted, ws)) => ws
            .on_upgrade(move |socket| session(app, admitted, socket))
            .into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn session(app: AppState, admitted: Admitted, socket: WebSocket) {
    let _guard = app.session_guard.clone();
    let mut conn = Conn::new(&app, socket, &admitted, "watch");
    let codec = conn.codec;
    let policy = super::close::POLICY;
    if !app.limits.admit_connection(admitted.ip) {
        let refusal = WatchOut::error("rate_limited", app.limits.over_connection_rate_message());
        conn.refuse(codec.encode_watch(&refusal), policy, "connection rate")
            .await;
        return;
    }
    let Some(_permit) = app
        .limits
        .watcher_socket(&super::watcher_identity(&admitted.claims))
    else {
        let message = app.limits.too_many_sockets_message(SocketKind::Watcher);
        let refusal = WatchOut::error("too_many_sockets", message);
        conn.refuse(codec.encode_watch(&refusal), policy, "too many sockets")
            .await;
        return;
    };
    let fleet = admitted.claims.fleet;
    let mut shutdown = app.shutdown.clone();
    let token_expiry = conn.token_expiry();
    let mut handle: WatcherHandle = app.hub.fanout.register(fleet.as_str().into());
    // Snapshot throttling: at most one per SNAPSHOT_INTERVAL; a subscribe sent sooner waits.
    let mut next_snapshot = tokio::time::Instant::now();
    let mut deferred: Option<WatchIn> = None;
    loop {
        // Each arm yields the frame to send; `continue` when there is none.
        let frame: Wire = tokio::select! {
            msg = conn.socket.recv() => {
                let data = match conn.received(msg).await {
                    Received::Data(data) => data,
                    Received::Nothing => continue,
                    Received::End => return,
                    Received::OverRate => {
                        let refusal = WatchOut::error("rate_limited", app.limits.over_rate_message());
                        conn.refuse(codec.encode_watch(&refusal), policy, "message rate").await;
                        return;
                    }
                };
                let Some(frame) = data.frame() else { continue };
                let subscribe = match codec.decode_watch(frame) {
                    Ok(subscribe) => subscribe,
                    Err(e) => {
                        let reply = WatchOut::error(e.code, e.message);
                        if !conn.send(codec.encode_watch(&reply)).await {
                            return;
                        }
                        continue;
                    }
                };
                if tokio::time::Instant::now() < next_snapshot {
                    // Too soon after the last snapshot: this one waits, replacing any that
                    // waited before it (a panning map only needs its last view).
                    deferred = Some(subscribe);
                    continue;
                }
                next_snapshot = tokio::time::Instant::now() + SNAPSHOT_INTERVAL;
                let reply = handle_subscribe(&app, &fleet, &handle, subscribe)
                    .unwrap_or_else(|e| WatchOut::error(e.code, e.message));
                codec.encode_watch(&reply)
            }
            _ = tokio::time::sleep_until(next_snapshot), if deferred.is_some() => {
                let subscribe = deferred.take().expect("guarded by the arm's condition");
                next_snapshot = tokio::time::Instant::now() + SNAPSHOT_INTERVAL;
                let reply = handle_subscribe(&app, &fleet, &handle, subscribe)
                    .unwrap_or_else(|e| WatchOut::error(e.code, e.message));
                codec.encode_watch(&reply)
            }
            event = handle.events.recv() => {
                let Some(event) = event else { return };
                // Whatever else is queued goes out with it, flushed once.
                // Each event is encoded once for all watchers (`SharedEvent`).
                let mut frames = vec![event.frame(codec)];
                while frames.len() < EVENTS_PER_WRITE {
                    let Ok(event) = handle.events.try_recv() else { break };
                    frames.push(event.frame(codec));
                }
                if !conn.send_all(frames).await {
                    return;
                }
                continue;
            }
            _ = handle.watcher.ready.notified() => {
                let changes = handle.watcher.take_pending();
                if changes.is_empty() {
                    continue;
                }
                // Each change's bytes are encoded once and shared with every other watcher.
                codec.encode_positions(&changes)
            }
            _ = handle.watcher.wake.notified() => {
                close_lagging(&mut conn.socket).await;
                return;
            }
            _ = conn.heartbeat.tick() => {
                if !conn.heartbeat.beat(&mut conn.socket).await {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep_until(token_expiry) => {
                let refusal = WatchOut::error("token_expired", "the token expired; reconnect with a fresh one");
                conn.refuse(codec.encode_watch(&refusal), super::close::UNAUTHENTICATED, "token expired").await;
                return;
            }
            _ = shutdown.recv() => {
                close_for_restart(&mut conn.socket).await;
                return;
            }
        };
        if !conn.send(frame).await {
            return;
        }
    }
}

async fn close_lagging(socket: &mut WebSocket) {
    close(
        socket,
        super::close::TRY_AGAIN_LATER,
        "too far behind; resubscribe for a fresh snapshot",
    )
    .await;
}

/// Applies a `subscribe` and returns the snapshot to send, or the error to send.
fn handle_subscribe(
    app: &AppState,
    fleet: &str,
    handle: &WatcherHandle,
    subscribe: WatchIn,
) -> Result<WatchOut, DecodeError> {
    let refuse = |code, message: String| DecodeError {
        code,
        message,
        seq: None,
    };
    let WatchIn::Subscribe { bbox, drivers } = subscribe;
    if bbox.is_none() && drivers.as_ref().is_none_or(|d| d.is_empty()) {
        return Err(refuse(
            "invalid_subscription",
            "subscribe needs a bbox and/or a non-empty drivers list".into(),
        ));
    }
    let bbox = bbox
        .map(|[w, s, e, n]| BBox::new(w, s, e, n))
        .transpose()
        .map_err(|m| refuse("invalid_bbox", m))?;
    let drivers: HashSet<String> = drivers.unwrap_or_default().into_iter().collect();
    if drivers.len() > MAX_SUBSCRIBED_DRIVERS {
        return Err(refuse(
            "invalid_subscription",
            format!("at most {MAX_SUBSCRIBED_DRIVERS} drivers per subscription"),
        ));
    }
    let scope = Scope {
        bbox,
        drivers,
        ..Scope::default()
    };
    // Scope first, then snapshot: a fix landing in between shows up in both, never in neither.
    handle.watcher.set_scope(scope.clone());
    let positions = app.hub.snapshot(fleet, &scope);
    Ok(WatchOut::Snapshot { positions })
}
