//! Service streams: what `GET /v1/ws/stream` and `GET /v1/stream` (SSE) send, whatever the
//! transport.
//!
//! A stream is positions of one fleet, filtered by drivers and/or bbox, either coalesced
//! (`latest`, like a map) or every accepted fix in order per driver (`all`), plus durable events
//! read from the event log after a cursor. The log is the source of truth for events: the
//! producer keeps its cursor, is woken when the fleet's log grows (here or, through the bus, on
//! another node) and re-reads `id > cursor`, so a consumer resuming with `since` gets every later
//! event exactly once and in order, across disconnects, restarts and nodes.
//!
//! - [`producer`]: what a stream sends, whatever the transport;
//! - [`query`]: the query both transports share, and the event filters `GET /v1/events` shares;
//! - [`ws`]: `GET /v1/ws/stream`; [`sse`]: `GET /v1/stream` (Server-Sent Events).

pub mod producer;
pub mod query;
pub mod sse;
pub mod ws;

pub use producer::{spawn, EventFilter, Mode, StreamItem, StreamSettings, StreamSpec};
