//! Per-fleet settings.

use sqlx::Row;

use super::{Store, StoreError};

/// A fleet's own settings; `None` fields take the node's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FleetSettings {
    /// `stop.approaching` when the next stop's ETA is at most this far ahead, s.
    pub approach_eta_s: Option<f64>,
    /// … or the driver at most this far from it, m.
    pub approach_distance_m: Option<f64>,
}

impl Store {
    /// The fleet's settings (all `None` when it has none stored).
    pub async fn fleet_settings(&self, fleet: &str) -> Result<FleetSettings, StoreError> {
        let row = sqlx::query(
            "SELECT approach_eta_s, approach_distance_m FROM fleet_settings WHERE fleet = $1",
        )
        .bind(fleet)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => FleetSettings {
                approach_eta_s: r.try_get(0)?,
                approach_distance_m: r.try_get(1)?,
            },
            None => FleetSettings::default(),
        })
    }

    /// Replaces the fleet's settings.
    pub async fn put_fleet_settings(
        &self,
        fleet: &str,
        s: &FleetSettings,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fleet_settings (fleet, approach_eta_s, approach_distance_m, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (fleet) DO UPDATE SET approach_eta_s = $2, approach_distance_m = $3, updated_at = $4",
        )
        .bind(fleet)
        .bind(s.approach_eta_s)
        .bind(s.approach_distance_m)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
