-- Trip ids are scoped per fleet: two fleets may both have trip `t1`, and creating one never
-- reveals that another fleet has it (issue 16: a global key answered 409 with another fleet's id).
-- SQLite cannot change a primary key in place, so the three tables are rebuilt.
CREATE TABLE trips_v4 (
    id           TEXT NOT NULL,
    fleet        TEXT NOT NULL,
    driver_id    TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'completed')),
    created_at   BIGINT NOT NULL,
    completed_at BIGINT,
    PRIMARY KEY (fleet, id)
);
INSERT INTO trips_v4 (id, fleet, driver_id, status, created_at, completed_at)
    SELECT id, fleet, driver_id, status, created_at, completed_at FROM trips;

CREATE TABLE stops_v4 (
    fleet         TEXT NOT NULL,
    trip_id       TEXT NOT NULL,
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
    PRIMARY KEY (fleet, trip_id, id),
    FOREIGN KEY (fleet, trip_id) REFERENCES trips_v4 (fleet, id)
);
INSERT INTO stops_v4 (fleet, trip_id, id, position, name, lat, lon, radius_m, status, arrived_at, checked_in_at, departed_at)
    SELECT t.fleet, s.trip_id, s.id, s.position, s.name, s.lat, s.lon, s.radius_m, s.status,
           s.arrived_at, s.checked_in_at, s.departed_at
    FROM stops s JOIN trips t ON t.id = s.trip_id;

CREATE TABLE checkins_v4 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet         TEXT NOT NULL,
    trip_id       TEXT NOT NULL,
    stop_id       TEXT NOT NULL,
    driver_id     TEXT NOT NULL,
    arrived_at    BIGINT NOT NULL,
    checked_in_at BIGINT NOT NULL,
    departed_at   BIGINT,
    source        TEXT NOT NULL,
    UNIQUE (fleet, trip_id, stop_id)
);
INSERT INTO checkins_v4 SELECT * FROM checkins;

DROP TABLE checkins;
DROP TABLE stops;
DROP TABLE trips;
ALTER TABLE trips_v4 RENAME TO trips;
ALTER TABLE stops_v4 RENAME TO stops;
ALTER TABLE checkins_v4 RENAME TO checkins;
CREATE INDEX trips_by_status ON trips (status, fleet, driver_id);
CREATE INDEX checkins_by_driver ON checkins (fleet, driver_id, id);

-- The event log's filters (`types=`, `drivers=` on /v1/events, streams): served by an index
-- instead of a scan of the fleet's whole log.
CREATE INDEX events_by_fleet_type ON events (fleet, type, id);
CREATE INDEX events_by_fleet_driver ON events (fleet, driver_id, id);
