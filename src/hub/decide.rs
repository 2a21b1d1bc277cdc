//! Decisions made durable: check-ins and departures written with their events, then announced.

use std::sync::Arc;

use super::{lock, CheckinNotice, Hub};
use crate::geo::arrival::{Decision, StopPhase};
use crate::model::{
    now_ms, CheckinEvidence, CheckinSource, DriverKey, Event, EventKind, Fix, StopKey,
};
use crate::store::{CheckinOutcome, StoreError, TripRecord};

impl Hub {
    /// Persists a detector decision, then publishes it. A check-in that cannot be stored is
    /// handed back to detection (stop pending again) so a later fix retries it.
    pub(super) async fn apply_decision(
        &self,
        who: &DriverKey,
        fix: &Fix,
        decision: Decision,
    ) -> Option<CheckinNotice> {
        let position = Some((fix.lat, fix.lon));
        // The driver's `driver.online` (queued by this very batch, maybe) goes in the log first.
        self.presence.barrier().await;
        match decision {
            Decision::CheckIn {
                key,
                arrived_at_ms,
                confirmed_at_ms,
                evidence,
            } => {
                let event = Event {
                    id: None,
                    fleet: who.fleet.clone(),
                    driver_id: who.driver_id.clone(),
                    ts_ms: confirmed_at_ms,
                    position,
                    kind: EventKind::StopCheckedIn {
                        key: key.clone(),
                        arrived_at_ms,
                        checked_in_at_ms: confirmed_at_ms,
                        source: CheckinSource::Auto,
                    },
                };
                let stored = self.store.record_checkin(&event, Some(evidence)).await;
                match stored {
                    Ok(outcome) => {
                        let inserted = outcome.checkin.is_some();
                        if inserted {
                            self.learn_arrival(who, &key, arrived_at_ms);
                            if let Some(slot) = self.drivers.get(who) {
                                lock(&slot.state).eta_basis = None;
                            }
                        }
                        self.publish_checkin(event, outcome);
                        inserted.then_some(CheckinNotice {
                            key,
                            arrived_at_ms,
                            checked_in_at_ms: confirmed_at_ms,
                        })
                    }
                    Err(e) => {
                        tracing::error!(error = %e, trip = %key.trip_id, stop = %key.stop_id, "check-in not stored; will retry");
                        lock(&self.slot(who).state)
                            .arrival
                            .set_phase(&key, StopPhase::Pending);
                        None
                    }
                }
            }
            Decision::Departure {
                key,
                departed_at_ms,
            } => {
                let event = Event {
                    id: None,
                    fleet: who.fleet.clone(),
                    driver_id: who.driver_id.clone(),
                    ts_ms: departed_at_ms,
                    position,
                    kind: EventKind::StopDeparted {
                        key: key.clone(),
                        departed_at_ms,
                    },
                };
                match self
                    .store
                    .record_departure(&key, departed_at_ms, &event)
                    .await
                {
                    Ok(Some(id)) => self.emit(Arc::new(Event {
                        id: Some(id),
                        ..event
                    })),
                    Ok(None) => {}
                    Err(e) => {
                        // Not dropped (issue 16): the stop goes back to arrived, so the next
                        // fixes outside its ring decide the departure again and retry the write.
                        tracing::error!(error = %e, trip = %key.trip_id, stop = %key.stop_id, "departure not stored; will retry on the next fixes outside the stop");
                        lock(&self.slot(who).state).arrival.set_phase(
                            &key,
                            StopPhase::Arrived {
                                arrived_at_ms: departed_at_ms,
                            },
                        );
                        return None;
                    }
                }
                lock(&self.slot(who).state)
                    .arrival
                    .remove_stop(&key, &self.cfg.arrival);
                None
            }
        }
    }

    pub(super) fn publish_checkin(&self, event: Event, outcome: CheckinOutcome) {
        if let Some(c) = &outcome.checkin {
            let source = c.source.as_str();
            metrics::counter!(crate::metrics::CHECKINS, "source" => source).increment(1);
            tracing::info!(
                driver = %c.driver_id,
                trip = %c.trip_id,
                stop = %c.stop_id,
                source,
                "checked in"
            );
            self.emit(Arc::new(Event {
                id: outcome.event_id,
                ..event
            }));
        }
        if let Some(done) = outcome.trip_completed {
            self.emit(Arc::new(done));
        }
    }

    /// The REST fallback: checks a driver in at a stop now (server time). `Ok(None)` when the stop
    /// was already checked in.
    pub async fn manual_checkin(
        &self,
        trip: &TripRecord,
        stop_id: &str,
    ) -> Result<CheckinOutcome, StoreError> {
        let who = DriverKey::new(&trip.fleet, &trip.driver_id);
        let key = StopKey {
            trip_id: trip.id.as_str().into(),
            stop_id: stop_id.into(),
        };
        let now = now_ms();
        let event = self.event_at_live_position(
            &who,
            now,
            EventKind::StopCheckedIn {
                key: key.clone(),
                arrived_at_ms: now,
                checked_in_at_ms: now,
                source: CheckinSource::Manual,
            },
        );
        self.presence.barrier().await;
        let outcome = self
            .store
            .record_checkin(&event, Some(CheckinEvidence::Manual))
            .await?;
        if outcome.checkin.is_some() {
            if let Some(slot) = self.drivers.get(&who).map(|s| s.clone()) {
                let mut state = lock(&slot.state);
                state.arrival.mark_arrived(&key, now);
                state.eta_basis = None; // the next refresh moves on to the next stop
            }
        }
        self.publish_checkin(event, outcome.clone());
        Ok(outcome)
    }
}
