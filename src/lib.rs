//! trackhub: a real-time fleet tracking hub.
//!
//! Drivers' phones stream GPS fixes over WebSockets; the hub keeps each driver's latest position
//! in an R-tree, checks each fix against the stops of the driver's active trips, checks the
//! driver in when they have really stopped there, and fans positions and events out to watchers.
//! Layers, data flowing down only: edges (`ws`, `api`) → `hub` (the ingest pipeline) → core
//! (`geo`: pure R-trees and arrival decisions; `fanout`: watchers; `store`: SQL).

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod eval;
pub mod fanout;
pub mod geo;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod model;

pub mod protocol;
pub mod replay;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod stream;
pub mod web;
pub mod webhooks;
pub mod ws;
