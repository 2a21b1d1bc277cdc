-- Track retention (`--track-retention-days`) deletes fixes by the server time they were stored
-- (not device time: a replayed old trace does not expire on arrival). The index keeps each
-- pruning pass to the rows it deletes; on an append-only column it adds at the right edge only.
CREATE INDEX track_points_by_received ON track_points (received_at);
