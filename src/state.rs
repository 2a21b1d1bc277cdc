//! The state every handler shares, and the parts extractors take from it (`FromRef`), so that
//! an extractor such as `auth::Caller` needs only its part (the keys), not the whole state.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio::sync::mpsc;

use crate::auth::Keys;
use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::shutdown::Shutdown;

/// Shared by every handler; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub keys: Arc<Keys>,
    pub cfg: Arc<ServerConfig>,
    /// Connection and message-rate limits of the socket edges.
    pub limits: Arc<Limits>,
    /// Flips to true when the server drains: sockets close with 1012.
    pub shutdown: Shutdown,
    /// Held by each open socket; the drain waits until every clone is dropped.
    pub session_guard: mpsc::Sender<()>,
}

impl FromRef<AppState> for Arc<Keys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}
