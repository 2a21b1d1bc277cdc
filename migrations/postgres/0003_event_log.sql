-- The event log that services resume from, and webhooks.
-- recorded_at: server time the event was stored (unix ms UTC); retention prunes by it, not by the
-- device time in `ts`, so a replayed old trace does not expire on arrival. NULL on older rows.
ALTER TABLE events ADD COLUMN recorded_at BIGINT;

-- Retention deletes a prefix of the log; this remembers where it ended so a consumer resuming
-- from before it learns that events are gone instead of silently missing them.
CREATE TABLE event_retention (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO event_retention (singleton, pruned_through) VALUES (1, 0);

-- Webhook subscriptions of a fleet. `events` is ",type,type," (or "*" for every type): finding
-- ",type," in it works on both engines. The secret signs deliveries, so it is kept as given.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    fleet      TEXT NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_fleet ON webhooks (fleet);

-- One row per (webhook, event), written in the event's own transaction (outbox); the body is the
-- event JSON as delivered, so retention of the events table does not touch pending deliveries.
-- window_start opens the retry window (creation, or a redelivery).
CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    fleet           TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    window_start    BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, status, id);
