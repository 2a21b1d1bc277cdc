-- Fleet geofences (issue 18): circles and polygons with dwell and hysteresis. `shape` is the
-- store's own JSON (see src/store/geofences.rs); `drivers` a JSON array, NULL for every driver.
CREATE TABLE geofences (
    fleet      TEXT NOT NULL,
    id         TEXT NOT NULL,
    name       TEXT,
    shape      TEXT NOT NULL,
    drivers    TEXT,
    dwell_s    DOUBLE PRECISION NOT NULL,
    margin_m   DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (fleet, id)
);
