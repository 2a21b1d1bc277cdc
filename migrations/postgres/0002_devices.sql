-- Devices that report over the OsmAnd protocol (Traccar Client, OsmAnd): each maps to one driver
-- of one fleet and proves itself with a key, of which only the SHA-256 (hex) is kept.
CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    fleet      TEXT NOT NULL,
    driver_id  TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX devices_by_fleet ON devices (fleet, device_id);
