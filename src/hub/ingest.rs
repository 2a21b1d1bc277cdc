//! Ingest: one fix of one driver through the pipeline (order and dedupe by seq, live index,
//! history queue, arrival detection), and the acknowledgement rules around it (frame order,
//! commit barrier, refused seqs).

use super::{lock, Commit, DriverState, Hub, IngestStatus, Ingested};
use crate::bus::Outgoing;
use crate::metrics as m;
use crate::model::{now_ms, DriverKey, EventKind, Fix, LivePosition, NextStop, TrackingHint};
use crate::store::track::{TrackPoint, WriterStopped};

/// How long a refused seq holds a driver's acks back, ms ([`Hub::note_refused`]): far longer
/// than any retry hint the hub gives (5 s), short enough that a phone that dropped a refused
/// fix is not held back for long.
pub const REFUSED_TTL_MS: i64 = 5 * 60 * 1000;
/// Most refused seqs remembered per driver (a frame holds at most 1,000, a driver's fix burst is
/// 20,000). Past it further seqs are not recorded: acks still stay below the lowest recorded
/// one, but once those are all resent an ack could cover an unrecorded one. That needs more
/// than 20,000 distinct refused fixes outstanding for one driver.
pub(super) const MAX_REFUSED: usize = 20_000;

impl Hub {
    /// Marks a seq as processed without a fix (the fix was invalid: resending it cannot help),
    /// so the ack covers it. Returns false when the seq was seen before.
    pub fn note_seq(&self, who: &DriverKey, seq: u64) -> bool {
        let slot = self.slot(who);
        let mut state = lock(&slot.state);
        state.refused.remove(&seq);
        state.seqs.insert(seq)
    }

    /// Records the seqs of a frame refused whole, for the phone to resend (storage pressure,
    /// fix budget). Acks are cumulative ("drop everything up to `seq`"), so until these are
    /// processed every ack of the driver stays below the lowest of them: a later frame's ack
    /// must not tell the phone to drop fixes the hub never took. A refused seq not resent
    /// within `REFUSED_TTL_MS` stops holding acks back (a phone that dropped it anyway).
    pub fn note_refused(&self, who: &DriverKey, seqs: impl IntoIterator<Item = u64>) {
        let slot = self.slot(who);
        let mut state = lock(&slot.state);
        let at = now_ms();
        for seq in seqs {
            if state.refused.len() >= MAX_REFUSED {
                break;
            }
            state.refused.insert(seq, at);
        }
    }

    /// Taken by a socket for the whole of one frame: frames of one driver (on any of its
    /// sockets) are ingested one at a time, so [`Hub::highest_seq`] read before the guard is
    /// dropped names only seqs whose fixes are queued for history, and a [`Hub::committed`]
    /// barrier after it covers them all.
    pub async fn frame_order(&self, who: &DriverKey) -> tokio::sync::OwnedMutexGuard<()> {
        let frame = self.slot(who).frame.clone();
        frame.lock_owned().await
    }

    /// Waits until every fix queued so far is committed (group commit): what an
    /// acknowledgement waits for. Gives up as soon as the writer is under pressure (the
    /// database is down or far behind: a watch, not a poll), or after `limit`, with the retry
    /// hint to give the client; the fixes stay queued and are written when the database is
    /// back.
    pub async fn committed(&self, limit: std::time::Duration) -> Commit {
        tokio::select! {
            done = self.track.committed() => match done {
                Ok(()) => Commit::Done,
                Err(WriterStopped) => Commit::Stopped,
            },
            retry = self.track.under_pressure() => Commit::NotYet(retry),
            _ = tokio::time::sleep(limit) => Commit::NotYet(limit),
        }
    }

    /// `Some(retry after)` when the edges should refuse new fixes instead of taking them: the
    /// history queue is nearly full or the database refuses writes (see
    /// [`TrackWriter::pressure`](crate::store::track::TrackWriter::pressure)).
    pub fn pressure(&self) -> Option<std::time::Duration> {
        self.track.pressure()
    }

    /// What `ack` reports: the highest seq processed for the driver, held below the lowest seq
    /// of a refused frame not yet resent (see [`Hub::note_refused`]); `None` when there is
    /// nothing to acknowledge.
    pub fn highest_seq(&self, who: &DriverKey) -> Option<u64> {
        let slot = self.drivers.get(who)?.clone();
        let mut state = lock(&slot.state);
        let highest = state.seqs.highest()?;
        if state.refused.is_empty() {
            return Some(highest);
        }
        let now = now_ms();
        state.refused.retain(|_, at| now - *at < REFUSED_TTL_MS);
        match state.refused.keys().next() {
            Some(&lowest) if lowest <= highest => lowest.checked_sub(1),
            _ => Some(highest),
        }
    }

    /// Runs one validated fix through the pipeline. Waits for the database only when the driver
    /// is new to this node (hydration, once) and when the fix checks the driver in (rare, and it
    /// must be durable before the phone is told). History and the bus are queues that never wait.
    ///
    /// `seq` is the client's sequence number (duplicates are acked and dropped); `None` for
    /// sources without one (OsmAnd), where a resent fix is recognised by its device time.
    /// Errors only when the history writer has stopped (the node drains): the fix is not stored
    /// and must not be acknowledged.
    pub async fn ingest(
        &self,
        who: &DriverKey,
        seq: Option<u64>,
        fix: Fix,
    ) -> Result<Ingested, WriterStopped> {
        let (slot, mut checkins) = self.ready_slot(who).await;
        let mut tracking = None;
        let received_ms = now_ms();
        let (status, came_online, decisions, zone_events, movement) = {
            let mut state = lock(&slot.state);
            if let Some(seq) = seq {
                state.refused.remove(&seq);
            }
            if seq.is_some_and(|seq| !state.seqs.insert(seq))
                && !restarted(who, &mut state, seq, &fix)
            {
                self.fix_counters.duplicate.increment(1);
                return Ok(Ingested {
                    status: IngestStatus::Duplicate,
                    checkins,
                    tracking: None,
                });
            }
            let newest = state.newest_ts_ms.is_none_or(|n| fix.ts_ms > n);
            if !newest {
                self.fix_counters.late.increment(1);
                (IngestStatus::Late, false, Vec::new(), Vec::new(), None)
            } else {
                state.newest_ts_ms = Some(fix.ts_ms);
                state.last_seen_ms = received_ms;
                let came_online = !state.online;
                state.online = true;
                let decisions = state.arrival.observe(&fix, &self.cfg.arrival);
                let zone_events = self.observe_zones(who, &mut state, &fix);
                let movement = self.observe_movement(&mut state, &fix);
                state.recent.push(fix);
                state.pace.observe(&fix);
                state.last_fix = Some((fix, received_ms));
                let hint = TrackingHint::of(state.arrival.sampling_at(&fix, TrackingHint::NEAR_M));
                if state.tracking != Some(hint) {
                    state.tracking = Some(hint);
                    tracking = Some(hint);
                }
                // Still under the driver's lock, so that two sockets of one driver cannot
                // publish its fixes out of order (streams in `all` mode promise the order).
                self.publish_position(who, fix, received_ms, state.next_stop.clone());
                self.fix_counters.accepted.increment(1);
                m::activity()
                    .fixes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (
                    IngestStatus::Accepted,
                    came_online,
                    decisions,
                    zone_events,
                    movement,
                )
            }
        };

        self.track
            .push(TrackPoint {
                fleet: who.fleet.clone(),
                driver_id: who.driver_id.clone(),
                fix,
                received_ms,
            })
            .await?;
        if status != IngestStatus::Accepted {
            return Ok(Ingested {
                status,
                checkins,
                tracking,
            });
        }
        if came_online {
            self.presence_event(
                who,
                received_ms,
                Some((fix.lat, fix.lon)),
                EventKind::DriverOnline,
            );
        }

        if !zone_events.is_empty() {
            self.record_zone_events(who, &fix, zone_events);
        }
        if let Some((ts_ms, at, kind)) = movement {
            self.presence_event(who, ts_ms, Some(at), kind);
        }
        for decision in decisions {
            if let Some(notice) = self.apply_decision(who, &fix, decision).await {
                checkins.push(notice);
            }
        }
        Ok(Ingested {
            status,
            checkins,
            tracking,
        })
    }

    /// Moves the driver in the live index and offers the position to watchers, streams and the
    /// other nodes. Nothing here waits.
    pub(super) fn publish_position(
        &self,
        who: &DriverKey,
        fix: Fix,
        received_ms: i64,
        next_stop: Option<NextStop>,
    ) {
        let position = LivePosition {
            driver_id: who.driver_id.clone(),
            fix,
            received_ms,
            next_stop,
        };
        let previous = self
            .index_or_create(&who.fleet)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(position.clone());
        self.fanout
            .position(&who.fleet, &position, previous.as_ref());
        self.bus.publish(Outgoing::Position {
            fleet: who.fleet.clone(),
            position,
        });
    }
}

/// A seq below the highest that the window has seen (or finds too old to tell), on a fix newer,
/// by device time, than every fix the driver has sent, is no resend: a resent fix carries its
/// original time. The phone's counter restarted (reinstall, cleared storage, or a wild seq that
/// pushed the window far ahead): the window starts again at this seq instead of dropping every
/// later fix as a duplicate (issue 16). Returns true when it did. The highest seq itself with a
/// new time stays a duplicate: that is a client reusing its last seq, not a restart.
pub(super) fn restarted(
    who: &DriverKey,
    state: &mut DriverState,
    seq: Option<u64>,
    fix: &Fix,
) -> bool {
    let (Some(seq), Some(newest), Some(highest)) = (seq, state.newest_ts_ms, state.seqs.highest())
    else {
        return false;
    };
    if seq >= highest || fix.ts_ms <= newest {
        return false;
    }
    tracing::info!(
        driver = %who.driver_id,
        fleet = %who.fleet,
        seq,
        previous_highest = state.seqs.highest(),
        "driver's seq counter restarted (a seen seq on a newer fix): the anti-replay window starts again"
    );
    state.seqs.restart_at(seq);
    state.refused.clear();
    true
}
