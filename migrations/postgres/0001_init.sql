-- trackhub schema, PostgreSQL. Times are unix milliseconds UTC; coordinates WGS84 degrees.
CREATE TABLE trips (
    id           TEXT PRIMARY KEY,
    fleet        TEXT NOT NULL,
    driver_id    TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'completed')),
    created_at   BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX trips_by_status ON trips (status, fleet, driver_id);

CREATE TABLE stops (
    trip_id       TEXT NOT NULL REFERENCES trips (id),
    id            TEXT NOT NULL,
    position      BIGINT NOT NULL,
    name          TEXT,
    lat           DOUBLE PRECISION NOT NULL,
    lon           DOUBLE PRECISION NOT NULL,
    radius_m      DOUBLE PRECISION NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'arrived', 'departed')),
    arrived_at    BIGINT,
    checked_in_at BIGINT,
    departed_at   BIGINT,
    PRIMARY KEY (trip_id, id)
);

-- Exactly one check-in per (trip, stop), whatever replays or races happen upstream.
CREATE TABLE checkins (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fleet         TEXT NOT NULL,
    trip_id       TEXT NOT NULL,
    stop_id       TEXT NOT NULL,
    driver_id     TEXT NOT NULL,
    arrived_at    BIGINT NOT NULL,
    checked_in_at BIGINT NOT NULL,
    departed_at   BIGINT,
    source        TEXT NOT NULL,
    UNIQUE (trip_id, stop_id)
);
CREATE INDEX checkins_by_driver ON checkins (fleet, driver_id, id);

-- Track history; the key makes a replayed fix a no-op.
CREATE TABLE track_points (
    fleet       TEXT NOT NULL,
    driver_id   TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    accuracy_m  DOUBLE PRECISION,
    speed_mps   DOUBLE PRECISION,
    heading_deg DOUBLE PRECISION,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (fleet, driver_id, ts)
);

-- Durable events (the outbox), in id order.
CREATE TABLE events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fleet     TEXT NOT NULL,
    type      TEXT NOT NULL,
    ts        BIGINT NOT NULL,
    driver_id TEXT NOT NULL,
    payload   TEXT NOT NULL
);
CREATE INDEX events_by_fleet ON events (fleet, id);
