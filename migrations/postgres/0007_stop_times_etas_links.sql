-- Issue 17: stops with time windows and service times, their live ETAs, the approaching/late
-- state that makes `stop.approaching` and `stop.late` once per crossing across nodes, and
-- customer tracking links (only a hash of each token is kept).
ALTER TABLE stops ADD COLUMN window_start BIGINT;
ALTER TABLE stops ADD COLUMN window_end BIGINT;
ALTER TABLE stops ADD COLUMN service_s DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE stops ADD COLUMN eta BIGINT;
ALTER TABLE stops ADD COLUMN eta_updated_at BIGINT;
ALTER TABLE stops ADD COLUMN approaching_at BIGINT;
ALTER TABLE stops ADD COLUMN late_since BIGINT;

CREATE TABLE tracking_links (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    fleet       TEXT NOT NULL,
    trip_id     TEXT NOT NULL,
    stop_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tracking_links_by_stop ON tracking_links (fleet, trip_id, stop_id);
