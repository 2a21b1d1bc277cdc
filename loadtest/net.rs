//! Sockets for many clients on one machine: the open-file limit, loopback source addresses (each
//! source address has only ~28k ephemeral ports, `net.ipv4.ip_local_port_range`), and small
//! WebSocket buffers so 100k clients fit in memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// Connections per source address we plan for: under the ~28k ephemeral ports of the default
/// range (32768-60999), leaving room for other programs.
pub const CONNECTIONS_PER_SOURCE: usize = 25_000;

/// Round-robin over the loopback source addresses 127.0.0.1 ..= 127.0.0.n.
pub struct Sources {
    n: usize,
    next: AtomicUsize,
}

impl Sources {
    /// Enough addresses for `connections`, at least `min`.
    pub fn for_connections(connections: usize, min: usize) -> Self {
        let n = connections
            .div_ceil(CONNECTIONS_PER_SOURCE)
            .max(min)
            .clamp(1, 250);
        Self {
            n,
            next: AtomicUsize::new(0),
        }
    }

    pub fn count(&self) -> usize {
        self.n
    }

    fn next(&self) -> IpAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.n;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))
    }
}

/// Client buffers: tungstenite reserves 128 KiB to read per socket by default.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens a WebSocket to `url` (`ws://host:port/path?…`, loopback) from the next source address.
pub async fn connect(
    url: &str,
    sources: &Sources,
    subprotocol: Option<&str>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .context("only ws:// URLs")?;
    let target: SocketAddr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .context("hub address does not resolve")?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if target.ip().is_loopback() && target.is_ipv4() {
        socket.bind(SocketAddr::new(sources.next(), 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    if let Some(protocol) = subprotocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse()?);
    }
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
    Ok(ws)
}
