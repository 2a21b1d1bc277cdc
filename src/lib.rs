//! trackhub: a real-time fleet tracking hub.
//!
//! Drivers' phones stream GPS fixes over WebSockets; the hub keeps each driver's latest position
//! in an R-tree, checks each fix against the stops of the driver's active trips, checks the
//! driver in when they have really stopped there, and fans positions and events out to watchers.
//! Layers, imports pointing down only (checked by `tests/it/layers.rs`):
//! - `app`: start-up and shutdown;
//! - edges: `api` (REST), `ws` (driver and watch sockets), `stream` (service streams), `web`
//!   (the map page), `auth`, `error`, `extract`, `admin` and `replay` (CLI tools), `eval`, and the
//!   `config` and `state` the edges are handed;
//! - `hub`: the ingest pipeline (ingest, hydrate, decide, liveness, remote, queries);
//! - core: `geo` (pure R-trees and arrival decisions), `store` (SQL), `fanout` (watchers), `bus`
//!   (Redis pub/sub), `webhooks` (delivery), `limits`;
//! - formats: `protocol` (wire formats: JSON, protobuf, OsmAnd);
//! - `model` (domain types), `shutdown`, `metrics`: what every layer may import.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod customer;
pub mod error;
pub mod eta;
pub mod eval;
pub mod extract;
pub mod fanout;
pub mod geo;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod model;

pub mod protocol;
pub mod replay;
pub mod report;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod stream;
pub mod web;
pub mod webhooks;
pub mod ws;
