//! `GET /v1/ws/driver`: a driver's phone streams fixes and gets acks and check-ins back.

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{authorize, close_for_restart, inbound, limits, send_text, Heartbeat, Inbound};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::hub::DriverKey;
use crate::protocol::driver::{DriverIn, DriverOut, Ping, Rejection, MAX_BATCH};
use crate::protocol::time::{format_ts, now_ms};

/// Upgrade handler: 401 without a valid token, 403 unless the role is `driver`.
pub async fn upgrade(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    let claims = match authorize(caller, &[Role::Driver]) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    let who = DriverKey {
        fleet: claims.fleet.as_str().into(),
        driver_id: claims.sub.as_str().into(),
    };
    limits(ws)
        .on_upgrade(move |socket| session(app, who, socket))
        .into_response()
}

async fn session(app: AppState, who: DriverKey, mut socket: WebSocket) {
    let _guard = app.session_guard.clone();
    let mut shutdown = app.shutdown.clone();
    let mut heartbeat = Heartbeat::new(Duration::from_secs(app.cfg.idle_timeout_s));
    loop {
        tokio::select! {
            msg = socket.recv() => {
                heartbeat.heard();
                let replies = match inbound(&mut socket, msg).await {
                    Inbound::Text(text) => handle_text(&app, &who, text.as_str()).await,
                    Inbound::Binary => vec![DriverOut::Error { code: "unsupported_frame", message: "send JSON text frames".into(), seq: None }],
                    Inbound::Control => Vec::new(),
                    Inbound::End => return,
                };
                for reply in replies {
                    let json = serde_json::to_string(&reply).expect("wire types serialize");
                    if !send_text(&mut socket, json).await {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if !heartbeat.beat(&mut socket).await {
                    return;
                }
            }
            _ = crate::app::draining(&mut shutdown) => {
                close_for_restart(&mut socket).await;
                return;
            }
        }
    }
}

/// Turns one text frame into the replies to send: errors for refused fixes, check-ins, and a
/// final ack with the highest seq processed.
async fn handle_text(app: &AppState, who: &DriverKey, text: &str) -> Vec<DriverOut> {
    let mut replies = Vec::new();
    let msg: DriverIn = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            let (code, seq) = if e.is_data() {
                ("invalid_message", seq_of_text(text))
            } else {
                ("invalid_json", None)
            };
            if let Some(seq) = seq {
                app.hub.note_seq(who, seq);
            }
            replies.push(DriverOut::Error {
                code,
                message: e.to_string(),
                seq,
            });
            push_ack(app, who, &mut replies);
            return replies;
        }
    };
    match msg {
        DriverIn::Ping(ping) => handle_ping(app, who, ping, &mut replies).await,
        DriverIn::Batch { pings } if pings.len() > MAX_BATCH => replies.push(DriverOut::Error {
            code: "batch_too_large",
            message: format!(
                "a batch holds at most {MAX_BATCH} pings; got {}",
                pings.len()
            ),
            seq: None,
        }),
        DriverIn::Batch { pings } => {
            for value in pings {
                match serde_json::from_value::<Ping>(value.clone()) {
                    Ok(ping) => handle_ping(app, who, ping, &mut replies).await,
                    Err(e) => {
                        let seq = value.get("seq").and_then(|s| s.as_u64());
                        if let Some(seq) = seq {
                            app.hub.note_seq(who, seq);
                        }
                        replies.push(DriverOut::Error {
                            code: "invalid_message",
                            message: e.to_string(),
                            seq,
                        });
                    }
                }
            }
        }
    }
    push_ack(app, who, &mut replies);
    replies
}

async fn handle_ping(app: &AppState, who: &DriverKey, ping: Ping, replies: &mut Vec<DriverOut>) {
    match ping.validate(now_ms(), app.hub.cfg.max_future_ms) {
        Err(Rejection { code, message }) => {
            app.hub.note_seq(who, ping.seq);
            replies.push(DriverOut::Error {
                code,
                message,
                seq: Some(ping.seq),
            });
        }
        Ok(fix) => {
            let done = app.hub.ingest(who, ping.seq, fix).await;
            replies.extend(done.checkins.into_iter().map(|c| DriverOut::Checkin {
                trip_id: c.key.trip_id.to_string(),
                stop_id: c.key.stop_id.to_string(),
                arrived_at: format_ts(c.arrived_at_ms),
                checked_in_at: format_ts(c.checked_in_at_ms),
            }));
        }
    }
}

fn push_ack(app: &AppState, who: &DriverKey, replies: &mut Vec<DriverOut>) {
    if let Some(seq) = app.hub.highest_seq(who) {
        replies.push(DriverOut::Ack { seq });
    }
}

/// The `seq` of a frame that parsed as JSON but not as a valid message, for the error frame.
fn seq_of_text(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("seq")?
        .as_u64()
}
