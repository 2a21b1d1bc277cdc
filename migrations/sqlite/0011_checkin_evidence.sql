-- Why each automatic check-in happened (issue 15, shown by the dispatcher's map, issue 19): the
-- evidence arrival detection decided on, as JSON text (`{"kind":"dwell","fixes":16,"span_s":75,
-- "credited_s":0}`, `quiet_gap`, `device_still`, `manual`; see store::evidence). NULL for
-- check-ins stored before this migration.
ALTER TABLE checkins ADD COLUMN evidence TEXT;

-- The dispatcher's drivers panel (issue 19) asks which drivers are stopped now: the segments
-- still open. A partial index keeps that read off the closed ones, which retention lets pile up.
CREATE INDEX stop_segments_open ON stop_segments (fleet) WHERE ended_at IS NULL;
