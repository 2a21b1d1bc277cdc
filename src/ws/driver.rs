//! `GET /v1/ws/driver`: a driver's phone streams fixes and gets acks and check-ins back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::{admit, close, close_for_restart, Admitted, Conn, Received};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::hub::{Commit, Hub};
use crate::limits::SocketKind;
use crate::model::now_ms;
use crate::model::DriverKey;
use crate::protocol::driver::{DriverMsg, DriverOut, Ping, Rejection};
use crate::state::AppState;
use crate::store::track::WriterStopped;

/// Upgrade handler: 403 for a foreign browser origin, 401 without a valid token, 403 unless the
/// role is `driver`.
#[utoipa::path(get, path = "/v1/ws/driver", operation_id = "driver_socket", tag = "sockets", description = "The driver socket: `ping`/`batch` of fixes in, `ack`/`checkin`/`error` (and with `?tracking=1` `tracking`) out. Token in `Authorization` or `access_token`.", security(("bearer" = [])), responses((status = 101, description = "Switching Protocols: the WebSocket; frames in PROTOCOL.md (JSON, or protobuf with the `trackhub.v1.proto` subprotocol)"), (status = 401, body = crate::error::Problem), (status = 403, description = "Origin not allowed, or another role", body = crate::error::Problem)))]
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    // Opt-in, so that a phone built before `tracking` messages existed never meets one.
    let hints = query.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "tracking" && v == "1")
    });
    match admit(&app, peer, &headers, caller, &[Role::Driver], ws) {
        Ok((admitted, ws)) => ws
            .on_upgrade(move |socket| session(app, admitted, socket, hints))
            .into_response(),
        Err(refused) => refused.into_response(),
    }
}

fn error(code: &'static str, message: impl Into<String>, seq: Option<u64>) -> DriverOut {
    DriverOut::Error {
        code,
        message: message.into(),
        seq,
        retry_after_ms: None,
    }
}

/// The refusal that tells a phone to keep its fixes and resend them after `retry_after`.
fn unavailable(retry_after: Duration, message: &str) -> DriverOut {
    crate::metrics::fix_rejected("unavailable");
    DriverOut::Error {
        code: "unavailable",
        message: message.into(),
        seq: None,
        retry_after_ms: Some(retry_after.as_millis() as u64),
    }
}

/// Longest a frame's acknowledgement waits for its fixes to be committed (sooner when the writer
/// reports pressure). Past it the phone gets `unavailable` instead of an ack and keeps the
/// fixes; they are written when the database is back, and the resent copies are then acked as
/// duplicates.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Frames of one socket whose acks wait for their commit at once. The socket goes on reading
/// while they wait (acks are pipelined, in order): a socket that waited for each commit before
/// reading its next frame would cap every phone at one frame per commit cycle (measured: 25k of
/// 50k fixes/s offered, ack p99 30 s). At the bound the socket stops reading, and TCP pushes
/// back on the phone.
const MAX_ACKS_IN_FLIGHT: usize = 32;

/// The ack of one frame, resolving once its fixes are committed: `Some(ack)`, `Some(unavailable)`
/// when they could not be committed in time, `None` when there is nothing to acknowledge.
type PendingAck = BoxFuture<'static, Option<DriverOut>>;

/// What one frame gave: replies to send now (errors, check-ins), its ack to send once committed,
/// and whether it tried to publish as another driver (then the socket closes with 4003).
struct Handled {
    now: Vec<DriverOut>,
    ack: Option<PendingAck>,
    forbidden: bool,
}

impl Handled {
    fn refused(reply: DriverOut) -> Self {
        Self {
            now: vec![reply],
            ack: None,
            forbidden: false,
        }
    }
}

/// The ack of `highest`, once everything queued so far is committed.
fn ack_when_committed(hub: Arc<Hub>, highest: Option<u64>) -> PendingAck {
    Box::pin(async move {
        match hub.committed(COMMIT_WAIT).await {
            Commit::Done => highest.map(|seq| DriverOut::Ack { seq }),
            Commit::Stopped => Some(unavailable(
                COMMIT_WAIT,
                "this node is shutting down; keep these fixes and resend them",
            )),
            Commit::NotYet(retry) => Some(unavailable(
                retry,
                "these fixes are not committed yet; keep them and resend them later",
            )),
        }
    })
}

/// One driver socket, from admission to close.
///
/// Every open socket holds this future for its lifetime, so the large state machines it awaits
/// only while busy (the frame pipeline) or rarely (refusals, closes, heartbeats) are boxed:
/// inline, the largest of them would sit in every idle socket (the future went from 5.7 KB to
/// 2.0 KB; one allocation per frame instead; issue 21 measures idle sockets).
async fn session(app: AppState, admitted: Admitted, socket: WebSocket, hints: bool) {
    let _guard = app.session_guard.clone();
    let mut conn = Conn::new(&app, socket, &admitted, "driver");
    let codec = conn.codec;
    let policy = super::close::POLICY;
    if !app.limits.admit_connection(admitted.ip) {
        let refusal = error(
            "rate_limited",
            app.limits.over_connection_rate_message(),
            None,
        );
        Box::pin(conn.refuse(codec.encode_driver(&refusal), policy, "connection rate")).await;
        return;
    }
    let who = DriverKey::new(&admitted.claims.fleet, &admitted.claims.sub);
    let Some(_permit) = app.limits.driver_socket(&who) else {
        let message = app.limits.too_many_sockets_message(SocketKind::Driver);
        let refusal = error("too_many_sockets", message, None);
        Box::pin(conn.refuse(codec.encode_driver(&refusal), policy, "too many sockets")).await;
        return;
    };
    let mut shutdown = app.shutdown.clone();
    let token_expiry = conn.token_expiry();
    let mut acks: FuturesOrdered<PendingAck> = FuturesOrdered::new();
    loop {
        tokio::select! {
            Some(ack) = acks.next(), if !acks.is_empty() => {
                if let Some(ack) = ack {
                    if !conn.send(codec.encode_driver(&ack)).await {
                        return;
                    }
                }
            }
            msg = conn.socket.recv(), if acks.len() < MAX_ACKS_IN_FLIGHT => {
                let data = match conn.received(msg).await {
                    Received::Data(data) => data,
                    Received::Nothing => continue,
                    Received::End => return,
                    Received::OverRate => {
                        if !Box::pin(send_owed_acks(&mut conn, &mut acks)).await {
                            return;
                        }
                        let refusal = error("rate_limited", app.limits.over_rate_message(), None);
                        Box::pin(conn.refuse(codec.encode_driver(&refusal), policy, "message rate")).await;
                        return;
                    }
                };
                let Some(frame) = data.frame() else { continue };
                // Boxed: the frame's pipeline (ingest, arrival, check-in writes) is a large state
                // machine, and inline it would sit in every idle socket's task (5.7 KB of the
                // session's future); boxed, it is allocated only while a frame is handled.
                let handled =
                    Box::pin(handle_frame(&app, &who, codec.decode_driver(frame), hints)).await;
                for reply in &handled.now {
                    if !conn.send(codec.encode_driver(reply)).await {
                        return;
                    }
                }
                if handled.forbidden {
                    if Box::pin(send_owed_acks(&mut conn, &mut acks)).await {
                        Box::pin(close(&mut conn.socket, super::close::FORBIDDEN, "forbidden")).await;
                    }
                    return;
                }
                acks.extend(handled.ack);
            }
            _ = conn.heartbeat.tick() => {
                if !Box::pin(conn.heartbeat.beat(&mut conn.socket)).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(token_expiry) => {
                if !Box::pin(send_owed_acks(&mut conn, &mut acks)).await {
                    return;
                }
                let refusal = error("token_expired", "the token expired; reconnect with a fresh one", None);
                Box::pin(conn.refuse(codec.encode_driver(&refusal), super::close::UNAUTHENTICATED, "token expired")).await;
                return;
            }
            _ = shutdown.recv() => {
                // The acks already owed go out first: the writer is still running (it stops
                // after the sockets), so they come within a commit cycle.
                if Box::pin(send_owed_acks(&mut conn, &mut acks)).await {
                    Box::pin(close_for_restart(&mut conn.socket)).await;
                }
                return;
            }
        }
    }
}

/// Sends the acks of the frames already taken (each once its commit comes, or its
/// `unavailable` after [`COMMIT_WAIT`]) before the socket is closed; false when the socket
/// failed.
async fn send_owed_acks(conn: &mut Conn, acks: &mut FuturesOrdered<PendingAck>) -> bool {
    while let Some(ack) = acks.next().await {
        if let Some(ack) = ack {
            if !conn.send(conn.codec.encode_driver(&ack)).await {
                return false;
            }
        }
    }
    true
}

/// Runs one decoded frame: errors for refused fixes and check-ins to send now, and the ack of
/// the highest seq processed, to send once every fix up to it is committed (an ack means
/// durable). Frames refused whole (storage under pressure, over the driver's fix budget) get
/// their refusal and no ack.
async fn handle_frame(
    app: &AppState,
    who: &DriverKey,
    decoded: Result<DriverMsg, crate::protocol::codec::DecodeError>,
    hints: bool,
) -> Handled {
    // The seqs are collected only when the frame is refused (off the accepted path).
    let seqs = |decoded: &Result<DriverMsg, _>| -> Vec<u64> {
        match decoded {
            Ok(DriverMsg::Ping(p)) => vec![p.seq],
            Ok(DriverMsg::Batch(pings)) => pings.iter().flatten().map(|p| p.seq).collect(),
            Err(_) => Vec::new(),
        }
    };
    if let Some(retry) = app.hub.pressure() {
        app.hub.note_refused(who, seqs(&decoded));
        return Handled::refused(unavailable(
            retry,
            "history storage is behind or unreachable; keep these fixes and resend them later",
        ));
    }
    let fixes = match &decoded {
        Ok(DriverMsg::Ping(_)) => 1,
        Ok(DriverMsg::Batch(pings)) => pings.len(),
        Err(_) => 0,
    };
    if let Err(wait) = app.limits.admit_fixes(who, fixes) {
        app.hub.note_refused(who, seqs(&decoded));
        crate::metrics::fix_rejected("rate_limited");
        return Handled::refused(DriverOut::Error {
            code: "rate_limited",
            message: format!(
                "more than {} fixes/s for this driver; keep these fixes and resend them",
                app.limits.cfg.fixes_per_driver_per_s
            ),
            seq: None,
            retry_after_ms: Some(wait.as_millis().max(1) as u64),
        });
    }
    let order = app.hub.frame_order(who).await;
    let mut now = Vec::new();
    let pings = match decoded {
        Ok(DriverMsg::Ping(ping)) => vec![Ok(ping)],
        Ok(DriverMsg::Batch(pings)) => pings,
        Err(e) => {
            if let Some(seq) = e.seq {
                app.hub.note_seq(who, seq);
            }
            crate::metrics::fix_rejected(e.code);
            now.push(error(e.code, e.message, e.seq));
            Vec::new()
        }
    };
    let mut pings = pings.into_iter();
    while let Some(ping) = pings.next() {
        match ping {
            Ok(ping)
                if ping
                    .driver_id
                    .as_deref()
                    .is_some_and(|d| d != &*who.driver_id) =>
            {
                crate::metrics::fix_rejected("forbidden");
                now.push(error(
                    "forbidden",
                    "a driver may only publish its own fixes",
                    Some(ping.seq),
                ));
                return Handled {
                    now,
                    ack: None,
                    forbidden: true,
                };
            }
            Ok(ping) => {
                let seq = ping.seq;
                if handle_ping(app, who, ping, &mut now, hints).await.is_err() {
                    // This fix and the rest of the frame were not taken.
                    let rest = pings.by_ref().flatten().map(|p| p.seq);
                    app.hub.note_refused(who, std::iter::once(seq).chain(rest));
                    now.push(unavailable(
                        COMMIT_WAIT,
                        "this node is shutting down; keep these fixes and resend them",
                    ));
                    return Handled {
                        now,
                        ack: None,
                        forbidden: false,
                    };
                }
            }
            Err(bad) => {
                if let Some(seq) = bad.seq {
                    app.hub.note_seq(who, seq);
                }
                crate::metrics::fix_rejected("invalid_message");
                now.push(error("invalid_message", bad.message, bad.seq));
            }
        }
    }
    // Read before the frame lock is released: every seq up to it has its fix queued, so the
    // commit barrier the ack waits on covers them all.
    let highest = app.hub.highest_seq(who);
    drop(order);
    Handled {
        now,
        ack: Some(ack_when_committed(app.hub.clone(), highest)),
        forbidden: false,
    }
}

async fn handle_ping(
    app: &AppState,
    who: &DriverKey,
    ping: Ping,
    replies: &mut Vec<DriverOut>,
    hints: bool,
) -> Result<(), WriterStopped> {
    match ping.validate(now_ms(), app.hub.cfg.max_future_ms) {
        Err(Rejection { code, message, .. }) => {
            app.hub.note_seq(who, ping.seq);
            crate::metrics::fix_rejected(code);
            replies.push(error(code, message, Some(ping.seq)));
        }
        Ok(fix) => {
            let done = app.hub.ingest(who, Some(ping.seq), fix).await?;
            replies.extend(done.checkins.into_iter().map(|c| DriverOut::Checkin {
                trip_id: c.key.trip_id.to_string(),
                stop_id: c.key.stop_id.to_string(),
                arrived_at_ms: c.arrived_at_ms,
                checked_in_at_ms: c.checked_in_at_ms,
            }));
            replies.extend(done.tracking.filter(|_| hints).map(DriverOut::Tracking));
        }
    }
    Ok(())
}
