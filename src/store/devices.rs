//! Registered OsmAnd devices: device id → (fleet, driver), with the SHA-256 of the device key.

use sqlx::Row;

use super::{Store, StoreError};

/// A registered device. `key_sha256` is lowercase hex; the key itself is never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub fleet: String,
    pub driver_id: String,
    pub key_sha256: String,
    /// Unix ms UTC.
    pub created_at: i64,
}

impl Store {
    /// Registers a device. `Conflict` when the id is taken (in any fleet: OsmAnd requests
    /// carry only the device id).
    pub async fn insert_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO devices (device_id, fleet, driver_id, key_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(&d.device_id)
        .bind(&d.fleet)
        .bind(&d.driver_id)
        .bind(&d.key_sha256)
        .bind(d.created_at)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("device `{}`", d.device_id)));
        }
        Ok(())
    }

    /// The device with this id, in any fleet.
    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT device_id, fleet, driver_id, key_sha256, created_at FROM devices WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    /// A fleet's devices, oldest first, at most `limit`.
    pub async fn devices(&self, fleet: &str, limit: i64) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, fleet, driver_id, key_sha256, created_at FROM devices \
             WHERE fleet = $1 ORDER BY created_at, device_id LIMIT $2",
        )
        .bind(fleet)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Removes a fleet's device; false when it had none with this id.
    pub async fn delete_device(&self, fleet: &str, device_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM devices WHERE fleet = $1 AND device_id = $2")
            .bind(fleet)
            .bind(device_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// A row of `SELECT device_id, fleet, driver_id, key_sha256, created_at FROM devices`.
fn device_from_row(r: &sqlx::any::AnyRow) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device_id: r.try_get(0)?,
        fleet: r.try_get(1)?,
        driver_id: r.try_get(2)?,
        key_sha256: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}
