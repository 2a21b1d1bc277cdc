//! WebSocket edges: `driver` (phones publishing fixes) and `watch` (maps and services).

pub mod driver;
pub mod watch;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};

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
