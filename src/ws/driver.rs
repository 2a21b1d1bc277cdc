//! `GET /v1/ws/driver`: a driver's phone streams fixes and gets acks and check-ins back.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{admit, close, close_for_restart, Admitted, Conn, Received};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::hub::{Commit, DriverKey};
use crate::protocol::driver::{DriverMsg, DriverOut, Ping, Rejection};
use crate::protocol::time::now_ms;
use crate::store::track::WriterStopped;

/// Upgrade handler: 403 for a foreign browser origin, 401 without a valid token, 403 unless the
/// role is `driver`.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(&app, peer, &headers, caller, &[Role::Driver], ws) {
        Ok((admitted, ws)) => ws
            .on_upgrade(move |socket| session(app, admitted, socket))
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

async fn session(app: AppState, admitted: Admitted, socket: WebSocket) {
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
        conn.refuse(codec.encode_driver(&refusal), policy, "connection rate")
            .await;
        return;
    }
    let who = DriverKey {
        fleet: admitted.claims.fleet.as_str().into(),
        driver_id: admitted.claims.sub.as_str().into(),
    };
    let Some(_permit) = app.limits.driver_socket(&who) else {
        let message = format!(
            "this driver already has {} open sockets",
            app.limits.cfg.sockets_per_driver
        );
        let refusal = error("too_many_sockets", message, None);
        conn.refuse(codec.encode_driver(&refusal), policy, "too many sockets")
            .await;
        return;
    };
    let mut shutdown = app.shutdown.clone();
    let token_expiry = conn.token_expiry();
    loop {
        tokio::select! {
            msg = conn.socket.recv() => {
                let data = match conn.received(msg).await {
                    Received::Data(data) => data,
                    Received::Nothing => continue,
                    Received::End => return,
                    Received::OverRate => {
                        let refusal = error("rate_limited", app.limits.over_rate_message(), None);
                        conn.refuse(codec.encode_driver(&refusal), policy, "message rate").await;
                        return;
                    }
                };
                let Some(frame) = data.frame() else { continue };
                let (replies, forbidden) = handle_frame(&app, &who, codec.decode_driver(frame)).await;
                for reply in &replies {
                    if !conn.send(codec.encode_driver(reply)).await {
                        return;
                    }
                }
                if forbidden {
                    close(&mut conn.socket, super::close::FORBIDDEN, "forbidden").await;
                    return;
                }
            }
            _ = conn.heartbeat.tick() => {
                if !conn.heartbeat.beat(&mut conn.socket).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(token_expiry) => {
                let refusal = error("token_expired", "the token expired; reconnect with a fresh one", None);
                conn.refuse(codec.encode_driver(&refusal), super::close::UNAUTHENTICATED, "token expired").await;
                return;
            }
            _ = crate::app::draining(&mut shutdown) => {
                close_for_restart(&mut conn.socket).await;
                return;
            }
        }
    }
}

/// Turns one decoded frame into the replies to send: errors for refused fixes, check-ins, and a
/// final ack with the highest seq processed, sent once every fix up to it is committed (an ack
/// means durable). The flag is true when the frame tried to publish as another driver: the
/// session sends the replies, then closes with 4003.
async fn handle_frame(
    app: &AppState,
    who: &DriverKey,
    decoded: Result<DriverMsg, crate::protocol::codec::DecodeError>,
) -> (Vec<DriverOut>, bool) {
    if let Some(retry) = app.hub.pressure() {
        let refusal = unavailable(
            retry,
            "history storage is behind or unreachable; keep these fixes and resend them later",
        );
        return (vec![refusal], false);
    }
    let fixes = match &decoded {
        Ok(DriverMsg::Ping(_)) => 1,
        Ok(DriverMsg::Batch(pings)) => pings.len(),
        Err(_) => 0,
    };
    if let Err(wait) = app.limits.admit_fixes(who, fixes) {
        crate::metrics::fix_rejected("rate_limited");
        let refusal = DriverOut::Error {
            code: "rate_limited",
            message: format!(
                "more than {} fixes/s for this driver; keep these fixes and resend them",
                app.limits.cfg.fixes_per_driver_per_s
            ),
            seq: None,
            retry_after_ms: Some(wait.as_millis().max(1) as u64),
        };
        return (vec![refusal], false);
    }
    let order = app.hub.frame_order(who).await;
    let mut replies = Vec::new();
    let pings = match decoded {
        Ok(DriverMsg::Ping(ping)) => vec![Ok(ping)],
        Ok(DriverMsg::Batch(pings)) => pings,
        Err(e) => {
            if let Some(seq) = e.seq {
                app.hub.note_seq(who, seq);
            }
            crate::metrics::fix_rejected(e.code);
            replies.push(error(e.code, e.message, e.seq));
            Vec::new()
        }
    };
    for ping in pings {
        match ping {
            Ok(ping)
                if ping
                    .driver_id
                    .as_deref()
                    .is_some_and(|d| d != &*who.driver_id) =>
            {
                crate::metrics::fix_rejected("forbidden");
                replies.push(error(
                    "forbidden",
                    "a driver may only publish its own fixes",
                    Some(ping.seq),
                ));
                return (replies, true);
            }
            Ok(ping) => {
                if handle_ping(app, who, ping, &mut replies).await.is_err() {
                    replies.push(unavailable(
                        COMMIT_WAIT,
                        "this node is shutting down; keep these fixes and resend them",
                    ));
                    return (replies, false);
                }
            }
            Err(bad) => {
                if let Some(seq) = bad.seq {
                    app.hub.note_seq(who, seq);
                }
                crate::metrics::fix_rejected("invalid_message");
                replies.push(error("invalid_message", bad.message, bad.seq));
            }
        }
    }
    let highest = app.hub.highest_seq(who);
    drop(order);
    match app.hub.committed(COMMIT_WAIT).await {
        Commit::Done => replies.extend(highest.map(|seq| DriverOut::Ack { seq })),
        Commit::Stopped => replies.push(unavailable(
            COMMIT_WAIT,
            "this node is shutting down; keep these fixes and resend them",
        )),
        Commit::NotYet(retry) => replies.push(unavailable(
            retry,
            "these fixes are not committed yet; keep them and resend them later",
        )),
    }
    (replies, false)
}

async fn handle_ping(
    app: &AppState,
    who: &DriverKey,
    ping: Ping,
    replies: &mut Vec<DriverOut>,
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
        }
    }
    Ok(())
}
