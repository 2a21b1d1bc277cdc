-- Automatic stops as segments (issue 18): a row per stop, written in the same transaction as its
-- `driver.stopped` event and closed (`ended_at`) with its `driver.moving` one, so reports read
-- stops without pairing events, and keep them as long as the track (events have their own,
-- shorter retention). Times device time, unix ms UTC; position WGS84 degrees; `unplanned` 0/1
-- (stopped during an active trip, away from all of its stops). Stops recorded before this
-- migration are not copied: reports over older spans show none.
CREATE TABLE stop_segments (
    fleet        TEXT NOT NULL,
    driver_id    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    confirmed_at BIGINT NOT NULL,
    ended_at     BIGINT,
    lat          DOUBLE PRECISION NOT NULL,
    lon          DOUBLE PRECISION NOT NULL,
    unplanned    BIGINT NOT NULL,
    PRIMARY KEY (fleet, driver_id, started_at)
);
