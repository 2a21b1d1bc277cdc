//! The integration suite as one test binary (each file a module, `common` the shared harness):
//! one link instead of one per file. Real hubs, sockets, PostgreSQL, Redis and processes; see
//! each module's doc. `cargo test --test it <filter>` runs a part, e.g. `faults::` or `cluster_`.
//! One test lives outside: `tests/operations.rs` counts exact metric values, and the metrics
//! registry is per process, so it needs a process of its own.

mod common;

mod cli;
mod cluster;
mod codecs;
mod deploy;
mod dispatch;
mod drain;
mod driver_socket;
mod etas;
mod events;
mod faults;
mod geofences;
mod layers;
mod links;
mod openapi;
mod osmand;
mod properties;
mod real_traces;
mod reports;
mod security;
mod store;
mod streams;
mod watch_and_trips;
mod webhooks;
