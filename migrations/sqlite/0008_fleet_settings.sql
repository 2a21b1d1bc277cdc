-- Per-fleet settings (issue 17): the `stop.approaching` thresholds; NULL takes the node's
-- default (`--approach-eta-s`, `--approach-distance-m`).
CREATE TABLE fleet_settings (
    fleet               TEXT PRIMARY KEY,
    approach_eta_s      DOUBLE PRECISION,
    approach_distance_m DOUBLE PRECISION,
    updated_at          BIGINT NOT NULL
);
