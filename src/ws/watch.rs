//! `GET /v1/ws/watch`: admins' maps and services follow live positions and events.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{authorize, close, close_for_restart, inbound, limits, send_text, Heartbeat, Inbound};
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::fanout::{Scope, WatcherHandle};
use crate::geo::BBox;
use crate::protocol::watch::{WatchIn, WatchOut};
use crate::protocol::{EventView, PositionView};

/// Most driver ids in one subscription.
pub const MAX_SUBSCRIBED_DRIVERS: usize = 10_000;

/// Upgrade handler: 401 without a valid token, 403 unless the role is `admin` or `service`.
pub async fn upgrade(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    let claims = match authorize(caller, &[Role::Admin, Role::Service]) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    limits(ws)
        .on_upgrade(move |socket| session(app, claims.fleet, socket))
        .into_response()
}

fn encode(frame: &WatchOut) -> String {
    serde_json::to_string(frame).expect("wire types serialize")
}

async fn session(app: AppState, fleet: String, mut socket: WebSocket) {
    let _guard = app.session_guard.clone();
    let mut shutdown = app.shutdown.clone();
    let mut handle: WatcherHandle = app.hub.fanout.register(fleet.as_str().into());
    let mut heartbeat = Heartbeat::new(Duration::from_secs(app.cfg.idle_timeout_s));
    let mut flush = tokio::time::interval(Duration::from_millis(app.cfg.flush_interval_ms));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Each arm yields the frame to send, if any; `None` from an arm that ends the session.
        let frame: Option<WatchOut> = tokio::select! {
            msg = socket.recv() => {
                heartbeat.heard();
                match inbound(&mut socket, msg).await {
                    Inbound::Text(text) => Some(handle_subscribe(&app, &fleet, &handle, text.as_str())
                        .unwrap_or_else(|(code, message)| WatchOut::Error { code, message })),
                    Inbound::Binary => Some(WatchOut::Error { code: "unsupported_frame", message: "send JSON text frames".into() }),
                    Inbound::Control => continue,
                    Inbound::End => return,
                }
            }
            event = handle.events.recv() => {
                let Some(event) = event else { return };
                Some(WatchOut::Event { event: Box::new(EventView::from(&*event)) })
            }
            _ = flush.tick() => {
                if handle.watcher.is_lagging() {
                    close_lagging(&mut socket).await;
                    return;
                }
                let positions = handle.watcher.take_pending();
                if positions.is_empty() {
                    continue;
                }
                Some(WatchOut::Positions { positions: positions.iter().map(PositionView::from).collect() })
            }
            _ = handle.watcher.wake.notified() => {
                close_lagging(&mut socket).await;
                return;
            }
            _ = heartbeat.tick() => {
                if !heartbeat.beat(&mut socket).await {
                    return;
                }
                continue;
            }
            _ = crate::app::draining(&mut shutdown) => {
                close_for_restart(&mut socket).await;
                return;
            }
        };
        if let Some(frame) = frame {
            if !send_text(&mut socket, encode(&frame)).await {
                return;
            }
        }
    }
}

async fn close_lagging(socket: &mut WebSocket) {
    close(
        socket,
        close::TRY_AGAIN_LATER,
        "too far behind; resubscribe for a fresh snapshot",
    )
    .await;
}

/// Applies a `subscribe` and returns the snapshot to send, or an error frame's code and message.
fn handle_subscribe(
    app: &AppState,
    fleet: &str,
    handle: &WatcherHandle,
    text: &str,
) -> Result<WatchOut, (&'static str, String)> {
    let msg: WatchIn = serde_json::from_str(text).map_err(|e| {
        (
            if e.is_data() {
                "invalid_message"
            } else {
                "invalid_json"
            },
            e.to_string(),
        )
    })?;
    let WatchIn::Subscribe { bbox, drivers } = msg;
    if bbox.is_none() && drivers.as_ref().is_none_or(|d| d.is_empty()) {
        return Err((
            "invalid_subscription",
            "subscribe needs a bbox and/or a non-empty drivers list".into(),
        ));
    }
    let bbox = bbox
        .map(|[w, s, e, n]| BBox::new(w, s, e, n))
        .transpose()
        .map_err(|m| ("invalid_bbox", m))?;
    let drivers: HashSet<String> = drivers.unwrap_or_default().into_iter().collect();
    if drivers.len() > MAX_SUBSCRIBED_DRIVERS {
        return Err((
            "invalid_subscription",
            format!("at most {MAX_SUBSCRIBED_DRIVERS} drivers per subscription"),
        ));
    }
    let scope = Scope { bbox, drivers };
    // Scope first, then snapshot: a fix landing in between shows up in both, never in neither.
    handle.watcher.set_scope(scope.clone());
    let positions = app
        .hub
        .snapshot(fleet, &scope)
        .iter()
        .map(PositionView::from)
        .collect();
    Ok(WatchOut::Snapshot { positions })
}
