-- The device's own motion state with each stored fix (`moving` | `still`, NULL when the device
-- did not say): arrival evidence that hydration replays, and what a report shows.
ALTER TABLE track_points ADD COLUMN motion TEXT;
