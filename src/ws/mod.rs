//! WebSocket edges: `driver` (phones publishing fixes) and `watch` (maps and services).

pub mod driver;
pub mod watch;

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};

use crate::auth::{Caller, Claims, Role};
use crate::error::ApiError;

/// Largest message accepted from a client (64 KiB); larger closes with 1009.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Read/write buffer per socket. tungstenite defaults to 128 KiB each way; an idle connection
/// should cost a few KiB, not a quarter of a megabyte.
const SOCKET_BUFFER: usize = 4 * 1024;
/// A send that takes longer than this means the peer stopped reading: close it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes (RFC 6455 §7.4.1 and the application range).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const SERVER_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    /// "Try again later": used for a watcher too far behind.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Applies our limits to an upgrade.
pub fn limits(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_write_buffer_size(4 * MAX_MESSAGE)
}

/// Sends a close frame (best effort) with a code and a short reason.
pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Sends one text message; false when the peer is gone or too slow.
pub async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// True when a receive error means the client sent a message over the size limit.
pub fn is_too_big(err: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(Error::Capacity(CapacityError::MessageTooLong { .. })) =
            e.downcast_ref::<Error>()
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Checks the caller at the upgrade: 401 without a valid token, 403 without one of `roles`.
pub fn authorize(caller: Result<Caller, ApiError>, roles: &[Role]) -> Result<Claims, ApiError> {
    let caller = caller?;
    caller.require(roles)?;
    Ok(caller.0)
}

/// What a session does with one received message.
pub enum Inbound {
    Text(Utf8Bytes),
    /// A binary frame: the JSON codec takes text only.
    Binary,
    /// Ping/pong (tungstenite answers pings itself).
    Control,
    /// The socket is finished (closed by the peer, broken, or closed by us with 1009).
    End,
}

/// Sorts a received message; closes with 1009 when the client sent more than 64 KiB.
pub async fn inbound(socket: &mut WebSocket, msg: Option<Result<Message, axum::Error>>) -> Inbound {
    match msg {
        Some(Ok(Message::Text(text))) => Inbound::Text(text),
        Some(Ok(Message::Binary(_))) => Inbound::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
        Some(Ok(Message::Close(_))) | None => Inbound::End,
        Some(Err(e)) => {
            if is_too_big(&e) {
                close(socket, close::TOO_BIG, "message over 64 KiB").await;
            }
            Inbound::End
        }
    }
}

/// Liveness of one socket: the hub pings every third of the idle timeout and closes a socket
/// that sent nothing (not even a pong) for the whole of it.
pub struct Heartbeat {
    tick: tokio::time::Interval,
    idle: Duration,
    last_heard: Instant,
}

impl Heartbeat {
    pub fn new(idle: Duration) -> Self {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + idle / 3, idle / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            tick,
            idle,
            last_heard: Instant::now(),
        }
    }

    /// Something arrived from the peer.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Resolves at the next beat.
    pub async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// On a beat: pings, or closes with 1001 when the peer has been silent too long. False when
    /// the session must end.
    pub async fn beat(&mut self, socket: &mut WebSocket) -> bool {
        if self.last_heard.elapsed() >= self.idle {
            close(socket, close::GOING_AWAY, "idle timeout").await;
            return false;
        }
        socket.send(Message::Ping(Default::default())).await.is_ok()
    }
}

/// Closes with 1012 so the client reconnects (to another node, behind a balancer).
pub async fn close_for_restart(socket: &mut WebSocket) {
    close(
        socket,
        close::SERVICE_RESTART,
        "server restarting; reconnect",
    )
    .await;
}
