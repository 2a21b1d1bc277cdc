//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`. It is generated from
//! the handlers' `#[utoipa::path]` annotations, and the router is built from the same handlers
//! (`utoipa_axum::routes!` in `app::router`), so a route cannot exist without being documented.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldError, Problem};
use crate::protocol::{EventView, PositionView};

/// The document's fixed parts: info, tags, shared schemas, the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "trackhub",
        description = "Real-time fleet tracking: drivers' fixes in over WebSockets and the OsmAnd \
                       protocol, live positions, automatic check-ins, events, streams and webhooks \
                       out. Wire formats and semantics: PROTOCOL.md. Times RFC 3339 UTC, \
                       coordinates WGS84 degrees, distances metres.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerJwt),
    components(schemas(Problem, FieldError, PositionView, EventView)),
    tags(
        (name = "drivers", description = "Live positions and track history"),
        (name = "trips", description = "Trips, stops and check-ins"),
        (name = "devices", description = "OsmAnd devices (Traccar Client, OsmAnd) and their reports"),
        (name = "events", description = "The durable event log"),
        (name = "streams", description = "Service streams (WebSocket, SSE)"),
        (name = "webhooks", description = "Webhooks and their deliveries"),
        (name = "sockets", description = "Driver and watcher WebSockets"),
        (name = "operations", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// `bearer`: a JWT (HS256 minted by the hub, or RS256/ES256 from an identity provider) in
/// `Authorization: Bearer`; on socket upgrades and SSE also as `access_token` in the query.
struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
