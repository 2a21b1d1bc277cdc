//! `GET /v1/ws/stream`: service streams over a WebSocket (see `crate::stream` for what is sent
//! and `api::streams` for the query). Frames are the watcher's: `snapshot`, `positions`,
//! `event` (with its log `id`) and `error`, in JSON or protobuf as negotiated. The client sends
//! nothing but pongs; a data frame gets an `unsupported_message` error.
//!
//! Close codes: 1013 after a `slow_consumer` error (an `all` stream fell behind), 4001 when the
//! token expires, 1012 when the server drains.

use std::net::SocketAddr;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::query::{stream_spec, StreamParams, Subscription};
use super::StreamItem;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::limits::SocketKind;
use crate::protocol::watch::WatchOut;
use crate::state::AppState;
use crate::ws::{admit, close_for_restart, watcher_identity, Admitted, Conn, Received};

/// Upgrade handler: the socket checks of the watcher (origin, token, role `admin` or `service`),
/// then the stream query (422 bad fields, 403 another fleet, 410 `since` past retention).
#[utoipa::path(get, path = "/v1/ws/stream", operation_id = "stream_socket", tag = "streams", params(StreamParams), security(("bearer" = [])), responses((status = 101, description = "Switching Protocols: the WebSocket; frames in PROTOCOL.md (JSON, or protobuf with the `trackhub.v1.proto` subprotocol)"), (status = 401, body = crate::error::Problem), (status = 403, description = "Origin not allowed, or another role", body = crate::error::Problem), (status = 410, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    query: Result<ApiQuery<StreamParams>, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    let (admitted, ws) = match admit(
        &app,
        peer,
        &headers,
        caller,
        &[Role::Admin, Role::Service],
        ws,
    ) {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    let sub = match query {
        Ok(ApiQuery(q)) => stream_spec(&app, &admitted.claims, q, None).await,
        Err(e) => Err(e),
    };
    let sub = match sub {
        Ok(sub) => sub,
        Err(refused) => return refused.into_response(),
    };
    ws.on_upgrade(move |socket| session(app, admitted, socket, sub))
        .into_response()
}

async fn session(app: AppState, admitted: Admitted, socket: WebSocket, sub: Subscription) {
    let _guard = app.session_guard.clone();
    let mut conn = Conn::new(&app, socket, &admitted, "stream");
    let codec = conn.codec;
    if !app.limits.admit_connection(admitted.ip) {
        let refusal = WatchOut::error("rate_limited", app.limits.over_connection_rate_message());
        conn.refuse(
            codec.encode_watch(&refusal),
            crate::ws::close::POLICY,
            "connection rate",
        )
        .await;
        return;
    }
    let Some(_permit) = app
        .limits
        .watcher_socket(&watcher_identity(&admitted.claims))
    else {
        let message = app.limits.too_many_sockets_message(SocketKind::Watcher);
        let refusal = WatchOut::error("too_many_sockets", message);
        conn.refuse(
            codec.encode_watch(&refusal),
            crate::ws::close::POLICY,
            "too many sockets",
        )
        .await;
        return;
    };
    let mut rx = sub.start(&app);
    let token_expiry = conn.token_expiry();
    loop {
        let frame = tokio::select! {
            msg = conn.socket.recv() => {
                match conn.received(msg).await {
                    Received::Data(_) => WatchOut::error("unsupported_message", "a stream takes no messages; set the filter in the URL"),
                    Received::Nothing => continue,
                    Received::End => return,
                    Received::OverRate => {
                        let refusal = WatchOut::error("rate_limited", app.limits.over_rate_message());
                        conn.refuse(codec.encode_watch(&refusal), crate::ws::close::POLICY, "message rate").await;
                        return;
                    }
                }
            }
            item = rx.recv() => match item {
                Some(StreamItem::Snapshot(positions)) => WatchOut::Snapshot { positions },
                Some(StreamItem::Positions(positions)) => WatchOut::Positions { positions },
                Some(StreamItem::Event(event)) => WatchOut::Event { event },
                Some(StreamItem::Overflow) => {
                    let refusal = WatchOut::error("slow_consumer", "too far behind in `all` mode; reconnect (and read faster, or use mode=latest)");
                    conn.refuse(codec.encode_watch(&refusal), crate::ws::close::TRY_AGAIN_LATER, "slow consumer").await;
                    return;
                }
                // The producer stops only when the server drains.
                None => {
                    close_for_restart(&mut conn.socket).await;
                    return;
                }
            },
            _ = conn.heartbeat.tick() => {
                if !conn.heartbeat.beat(&mut conn.socket).await {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep_until(token_expiry) => {
                let refusal = WatchOut::error("token_expired", "the token expired; reconnect with a fresh one");
                conn.refuse(codec.encode_watch(&refusal), crate::ws::close::UNAUTHENTICATED, "token expired").await;
                return;
            }
        };
        if !conn.send(codec.encode_watch(&frame)).await {
            return;
        }
    }
}
