//! Customer tracking links: a capability token per stop, of which only the SHA-256 is kept.

use sqlx::Row;

use super::{Store, StoreError};

/// A stored tracking link. Times unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub id: String,
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub fleet: String,
    pub trip_id: String,
    pub stop_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// The SHA-256 of a token, lowercase hex: what the store keeps and looks links up by.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

const COLUMNS: &str = "id, token_hash, fleet, trip_id, stop_id, created_at, expires_at, revoked_at";

impl Store {
    /// Stores a new link.
    pub async fn insert_link(&self, l: &LinkRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO tracking_links ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&l.id)
        .bind(&l.token_hash)
        .bind(&l.fleet)
        .bind(&l.trip_id)
        .bind(&l.stop_id)
        .bind(l.created_at)
        .bind(l.expires_at)
        .bind(l.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The link whose token hashes to `token_hash`, revoked or not.
    pub async fn link_by_hash(&self, token_hash: &str) -> Result<Option<LinkRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tracking_links WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    /// The links of one stop, newest first.
    pub async fn links_of_stop(
        &self,
        fleet: &str,
        trip_id: &str,
        stop_id: &str,
    ) -> Result<Vec<LinkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tracking_links WHERE fleet = $1 AND trip_id = $2 AND stop_id = $3 \
             ORDER BY created_at DESC, id"
        ))
        .bind(fleet)
        .bind(trip_id)
        .bind(stop_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    /// Revokes a stop's link now; false when the stop has no link with this id (or it was
    /// revoked already).
    pub async fn revoke_link(
        &self,
        fleet: &str,
        trip_id: &str,
        stop_id: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tracking_links SET revoked_at = $1 \
             WHERE fleet = $2 AND trip_id = $3 AND stop_id = $4 AND id = $5 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(fleet)
        .bind(trip_id)
        .bind(stop_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn link_from_row(r: &sqlx::any::AnyRow) -> Result<LinkRecord, StoreError> {
    Ok(LinkRecord {
        id: r.try_get(0)?,
        token_hash: r.try_get(1)?,
        fleet: r.try_get(2)?,
        trip_id: r.try_get(3)?,
        stop_id: r.try_get(4)?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}
