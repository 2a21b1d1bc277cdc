//! WebSocket edges: `driver` (phones publishing fixes) and `watch` (maps and services).

pub mod driver;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderMap};
use governor::DefaultDirectRateLimiter;

use crate::auth::{Caller, Claims, Role};
use crate::error::ApiError;
use crate::state::AppState;

use crate::model::DriverKey;
use crate::protocol::codec::{Codec, Frame, Wire, PROTOCOLS};

/// Largest message accepted from a client (64 KiB); larger closes with 1009.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Initial read buffer per socket. tungstenite reserves 128 KiB by default (and as much again to
/// write); an idle connection should cost a few KiB, not a quarter of a megabyte. The buffer
/// grows for larger frames (up to `MAX_MESSAGE`), so only busy sockets pay for it.
/// It is also the most read per syscall, so a 64 KiB frame takes 256 reads: frames of one fix
/// (~200 bytes) take one. Measured with 19,000 idle sockets (BENCHMARKS.md): 11.5 KiB each with
/// 4 KiB here; with the frame pipeline boxed out of the session's future (driver.rs), 4.8 KiB
/// with 1 KiB, 4.2 KiB with 512 bytes and 3.97 KiB with 256 (issue 21's budget is 4 KiB).
const READ_BUFFER: usize = 256;
/// Bytes gathered before a write reaches the socket; frames are flushed as they are sent anyway.
const WRITE_BUFFER: usize = 1024;
/// Most bytes queued for one socket. tungstenite refuses (`WriteBufferFull`) to queue a frame that
/// does not fit, so this bounds the largest frame the hub can send: a snapshot of the whole
/// fleet (~130 bytes a driver in JSON, so ~500k drivers). It is a cap, not an allocation. It
/// was 256 KiB, which silently cut off any watcher whose snapshot held more than ~2,000
/// drivers (found by the 10k-driver load test).
pub const MAX_OUTGOING: usize = 64 << 20;
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
    /// The token expired during the session (application range, like HTTP 401).
    pub const UNAUTHENTICATED: u16 = 4001;
    /// The client tried something its token does not allow (like HTTP 403).
    pub const FORBIDDEN: u16 = 4003;
}

/// What the upgrade established about a socket's client.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub claims: Claims,
    pub codec: Codec,
    pub ip: IpAddr,
}

/// The identity a watcher socket or stream counts against ([`LimitsConfig::sockets_per_watcher`]):
/// its token's fleet and `sub`.
///
/// [`LimitsConfig::sockets_per_watcher`]: crate::limits::LimitsConfig::sockets_per_watcher
pub fn watcher_identity(claims: &Claims) -> DriverKey {
    DriverKey::new(&claims.fleet, &claims.sub)
}

/// Checks an upgrade before it happens: 403 for a browser `Origin` not allowed, 401 without a
/// valid token, 403 without one of `roles`; negotiates the codec and applies the size limits.
pub fn admit(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
    roles: &[Role],
    ws: WebSocketUpgrade,
) -> Result<(Admitted, WebSocketUpgrade), ApiError> {
    if !origin_allowed(headers, &app.cfg.allowed_origins) {
        return Err(ApiError::Forbidden("origin not allowed".into()));
    }
    let claims = authorize(caller, roles)?;
    let ws = limits(ws).protocols(PROTOCOLS);
    let codec = Codec::from_protocol(ws.selected_protocol().and_then(|p| p.to_str().ok()));
    let ip = app.limits.client_ip(peer, headers);
    Ok((Admitted { claims, codec, ip }, ws))
}

/// A browser's `Origin` (RFC 6454) is allowed when it is in `allowed` (or `allowed` holds `*`)
/// or when it is the hub's own origin (same `Host`). Requests without `Origin` are not from a
/// browser page and carry their own token, so cross-site socket hijacking does not apply.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, a)| a);
    matches!((host, authority), (Some(h), Some(a)) if h.eq_ignore_ascii_case(a))
}

/// One socket's connection state shared by both edges: codec, message-rate bucket, heartbeat,
/// and when its token expires.
pub struct Conn {
    pub socket: WebSocket,
    pub codec: Codec,
    limiter: Option<DefaultDirectRateLimiter>,
    pub heartbeat: Heartbeat,
    token_expiry: tokio::time::Instant,
    /// `driver`, `watch` or `stream`, for metrics.
    endpoint: &'static str,
    /// Counted in `trackhub_sockets_open` while the socket lives.
    _open: crate::metrics::SocketGauge,
}

impl Conn {
    /// `endpoint` names the socket in metrics: `driver`, `watch` or `stream`.
    pub fn new(
        app: &AppState,
        socket: WebSocket,
        admitted: &Admitted,
        endpoint: &'static str,
    ) -> Self {
        Self {
            _open: crate::metrics::SocketGauge::open(endpoint, admitted.claims.role.as_str()),
            socket,
            codec: admitted.codec,
            limiter: app.limits.message_limiter(),
            heartbeat: Heartbeat::new(Duration::from_secs(app.cfg.idle_timeout_s)),
            token_expiry: admitted.claims.expiry_deadline(),
            endpoint,
        }
    }

    /// Sorts one received message after the liveness, size and rate checks.
    pub async fn received(&mut self, msg: Option<Result<Message, axum::Error>>) -> Received {
        self.heartbeat.heard();
        match inbound(&mut self.socket, msg).await {
            Inbound::End => Received::End,
            Inbound::Control => Received::Nothing,
            _ if self.limiter.as_ref().is_some_and(|l| l.check().is_err()) => Received::OverRate,
            data => Received::Data(data),
        }
    }

    /// When the token expires: the session closes then with 4001.
    pub fn token_expiry(&self) -> tokio::time::Instant {
        self.token_expiry
    }

    /// Sends one encoded frame; false when the peer is gone or too slow.
    pub async fn send(&mut self, wire: Wire) -> bool {
        self.send_all([wire]).await
    }

    /// Sends frames in order with one flush (one write to the socket where they fit), so a burst
    /// (say, events of a thousand drivers connecting at once) costs one syscall, not one each.
    /// False when the peer is gone or did not take them within `SEND_TIMEOUT`.
    pub async fn send_all<I>(&mut self, wires: I) -> bool
    where
        I: IntoIterator<Item = Wire>,
        I::IntoIter: Send,
    {
        use futures_util::SinkExt;
        let socket = &mut self.socket;
        let sent = tokio::time::timeout(SEND_TIMEOUT, async move {
            for wire in wires {
                let msg = match wire {
                    Wire::Text(t) => Message::Text(t.into()),
                    Wire::Binary(b) => Message::Binary(b.into()),
                };
                socket.feed(msg).await?;
            }
            socket.flush().await
        })
        .await;
        let sent = matches!(sent, Ok(Ok(())));
        if !sent {
            metrics::counter!(crate::metrics::SEND_FAILURES, "endpoint" => self.endpoint)
                .increment(1);
        }
        sent
    }

    /// Sends a final frame (an error saying why), then closes with `code`.
    pub async fn refuse(&mut self, wire: Wire, code: u16, reason: &str) {
        if self.send(wire).await {
            close(&mut self.socket, code, reason).await;
        }
    }
}

/// Applies our limits to an upgrade.
pub fn limits(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_OUTGOING)
}

/// Closes with a code and a short reason, then waits (at most 2 s) for the peer's close frame,
/// discarding what it sent meanwhile (RFC 6455 §7.1.1). Dropping the TCP connection with unread
/// data would make the kernel reset it, and the peer would lose our last frames.
pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
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

/// One received message as a session acts on it.
pub enum Received {
    /// A text or binary frame for the codec.
    Data(Inbound),
    /// A control frame: nothing to do.
    Nothing,
    /// The socket is finished.
    End,
    /// Over the message rate: refuse with `rate_limited` and close 1008.
    OverRate,
}

/// What a session does with one received message.
pub enum Inbound {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// Ping/pong (tungstenite answers pings itself).
    Control,
    /// The socket is finished (closed by the peer, broken, or closed by us with 1009).
    End,
}

/// Sorts a received message; closes with 1009 when the client sent more than 64 KiB.
pub async fn inbound(socket: &mut WebSocket, msg: Option<Result<Message, axum::Error>>) -> Inbound {
    match msg {
        Some(Ok(Message::Text(text))) => Inbound::Text(text),
        Some(Ok(Message::Binary(b))) => Inbound::Binary(b),
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

impl Inbound {
    /// The data frame, for the codec; `None` for control frames and the end.
    pub fn frame(&self) -> Option<Frame<'_>> {
        match self {
            Inbound::Text(t) => Some(Frame::Text(t.as_str())),
            Inbound::Binary(b) => Some(Frame::Binary(b)),
            Inbound::Control | Inbound::End => None,
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
