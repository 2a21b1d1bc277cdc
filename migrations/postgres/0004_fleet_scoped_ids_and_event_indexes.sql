-- Trip ids are scoped per fleet: two fleets may both have trip `t1`, and creating one never
-- reveals that another fleet has it (issue 16: a global key answered 409 with another fleet's id).
ALTER TABLE stops ADD COLUMN fleet TEXT;
UPDATE stops s SET fleet = t.fleet FROM trips t WHERE t.id = s.trip_id;
ALTER TABLE stops ALTER COLUMN fleet SET NOT NULL;
ALTER TABLE stops DROP CONSTRAINT stops_trip_id_fkey;
ALTER TABLE stops DROP CONSTRAINT stops_pkey;
ALTER TABLE trips DROP CONSTRAINT trips_pkey;
ALTER TABLE trips ADD PRIMARY KEY (fleet, id);
ALTER TABLE stops ADD PRIMARY KEY (fleet, trip_id, id);
ALTER TABLE stops ADD FOREIGN KEY (fleet, trip_id) REFERENCES trips (fleet, id);
ALTER TABLE checkins DROP CONSTRAINT checkins_trip_id_stop_id_key;
ALTER TABLE checkins ADD UNIQUE (fleet, trip_id, stop_id);

-- The event log's filters (`types=`, `drivers=` on /v1/events, streams): served by an index
-- instead of a scan of the fleet's whole log.
CREATE INDEX events_by_fleet_type ON events (fleet, type, id);
CREATE INDEX events_by_fleet_driver ON events (fleet, driver_id, id);
