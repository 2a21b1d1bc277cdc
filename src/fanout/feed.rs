//! Wake-ups for readers of the durable event log (service streams, the webhook dispatcher).
//!
//! The database is the log; this only says "the log of fleet F has grown to id N". A reader
//! keeps its own cursor and reads `id > cursor` from the store when woken, so it sees each event
//! exactly once and in order whatever it missed while busy, and a lost wake-up (a Redis outage)
//! only delays delivery until the reader's periodic re-read.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

/// Newest known event id, per fleet and overall.
#[derive(Debug)]
pub struct EventFeed {
    fleets: DashMap<Arc<str>, watch::Sender<i64>>,
    any: watch::Sender<i64>,
}

impl Default for EventFeed {
    fn default() -> Self {
        Self {
            fleets: DashMap::new(),
            any: watch::channel(0).0,
        }
    }
}

impl EventFeed {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records that event `id` of `fleet` is committed (here or on another node).
    pub fn published(&self, fleet: &Arc<str>, id: i64) {
        let raise = |newest: &mut i64| {
            let grew = id > *newest;
            *newest = (*newest).max(id);
            grew
        };
        self.fleet_sender(fleet).send_if_modified(raise);
        self.any.send_if_modified(raise);
    }

    /// Wakes the followers of every fleet without a new id (a webhook redelivery is due).
    pub fn nudge(&self) {
        self.any.send_modify(|_| {});
    }

    /// Follows the newest id of one fleet.
    pub fn subscribe(&self, fleet: &Arc<str>) -> watch::Receiver<i64> {
        self.fleet_sender(fleet).subscribe()
    }

    /// Follows the newest id of every fleet.
    pub fn subscribe_all(&self) -> watch::Receiver<i64> {
        self.any.subscribe()
    }

    fn fleet_sender(&self, fleet: &Arc<str>) -> watch::Sender<i64> {
        if let Some(s) = self.fleets.get(fleet) {
            return s.clone();
        }
        self.fleets
            .entry(fleet.clone())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_the_fleet_and_the_overall_follower_only_when_the_id_grows() {
        let feed = EventFeed::new();
        let f1: Arc<str> = "f1".into();
        let mut r1 = feed.subscribe(&f1);
        let mut r2 = feed.subscribe(&"f2".into());
        let mut all = feed.subscribe_all();
        feed.published(&f1, 7);
        assert!(r1.has_changed().unwrap() && all.has_changed().unwrap());
        assert!(!r2.has_changed().unwrap());
        assert_eq!(*r1.borrow_and_update(), 7);
        all.borrow_and_update();
        feed.published(&f1, 5); // a late wake-up for an older event
        assert!(!r1.has_changed().unwrap() && !all.has_changed().unwrap());
        r2.borrow_and_update();
    }
}
