//! Fleet geofences: shape (the store's own JSON), driver filter, dwell and margin.

use std::sync::Arc;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError};
use crate::geo::zones::{Shape, Zone};

/// A stored geofence. Times unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct GeofenceRecord {
    pub fleet: String,
    pub id: String,
    pub name: Option<String>,
    pub shape: Shape,
    pub drivers: Option<Vec<String>>,
    /// s.
    pub dwell_s: f64,
    /// Hysteresis margin, m.
    pub margin_m: f64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl GeofenceRecord {
    /// The zone the hub checks fixes against.
    pub fn zone(&self) -> Zone {
        Zone::new(
            self.id.as_str().into(),
            self.shape.clone(),
            self.drivers
                .as_ref()
                .map(|ds| ds.iter().map(|d| Arc::from(d.as_str())).collect()),
            (self.dwell_s * 1000.0) as i64,
            self.margin_m,
        )
    }
}

/// How a shape is stored: `{"circle":{"lat","lon","radius_m"}}` or `{"polygons":[[[[lon,lat],…]…]…]}`
/// (polygons of rings of positions, exterior first).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredShape {
    Circle { lat: f64, lon: f64, radius_m: f64 },
    Polygons(Vec<Vec<Vec<[f64; 2]>>>),
}

fn encode_shape(shape: &Shape) -> Result<String, StoreError> {
    let stored = match shape {
        Shape::Circle { lat, lon, radius_m } => StoredShape::Circle {
            lat: *lat,
            lon: *lon,
            radius_m: *radius_m,
        },
        Shape::Polygons(mp) => StoredShape::Polygons(
            mp.0.iter()
                .map(|p| {
                    std::iter::once(p.exterior())
                        .chain(p.interiors())
                        .map(|r| r.0.iter().map(|c| [c.x, c.y]).collect())
                        .collect()
                })
                .collect(),
        ),
    };
    serde_json::to_string(&stored).map_err(|_| StoreError::Invalid("shape not serializable"))
}

fn decode_shape(text: &str) -> Result<Shape, StoreError> {
    let stored: StoredShape = serde_json::from_str(text)
        .map_err(|_| StoreError::Invalid("stored geofence shape unreadable"))?;
    Ok(match stored {
        StoredShape::Circle { lat, lon, radius_m } => Shape::Circle { lat, lon, radius_m },
        StoredShape::Polygons(polys) => Shape::Polygons(MultiPolygon::new(
            polys
                .into_iter()
                .map(|rings| {
                    let mut rings = rings.into_iter().map(|r| {
                        LineString::new(r.into_iter().map(|[x, y]| Coord { x, y }).collect())
                    });
                    let exterior = rings.next().unwrap_or_else(|| LineString::new(Vec::new()));
                    Polygon::new(exterior, rings.collect())
                })
                .collect(),
        )),
    })
}

const COLUMNS: &str = "fleet, id, name, shape, drivers, dwell_s, margin_m, created_at, updated_at";

impl Store {
    /// Stores a new geofence; `Conflict` when the fleet has one with this id.
    pub async fn insert_geofence(&self, g: &GeofenceRecord) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO geofences ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (fleet, id) DO NOTHING"
        ))
        .bind(&g.fleet)
        .bind(&g.id)
        .bind(g.name.clone())
        .bind(encode_shape(&g.shape)?)
        .bind(drivers_json(&g.drivers))
        .bind(g.dwell_s)
        .bind(g.margin_m)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("geofence `{}`", g.id)));
        }
        Ok(())
    }

    /// Replaces a geofence's fields (not its id or creation time); false when it does not exist.
    pub async fn update_geofence(&self, g: &GeofenceRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE geofences SET name = $3, shape = $4, drivers = $5, dwell_s = $6, margin_m = $7, \
             updated_at = $8 WHERE fleet = $1 AND id = $2",
        )
        .bind(&g.fleet)
        .bind(&g.id)
        .bind(g.name.clone())
        .bind(encode_shape(&g.shape)?)
        .bind(drivers_json(&g.drivers))
        .bind(g.dwell_s)
        .bind(g.margin_m)
        .bind(g.updated_at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One geofence of a fleet.
    pub async fn geofence(
        &self,
        fleet: &str,
        id: &str,
    ) -> Result<Option<GeofenceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM geofences WHERE fleet = $1 AND id = $2"
        ))
        .bind(fleet)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(geofence_from_row).transpose()
    }

    /// Every geofence of a fleet, by id.
    pub async fn geofences(&self, fleet: &str) -> Result<Vec<GeofenceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM geofences WHERE fleet = $1 ORDER BY id"
        ))
        .bind(fleet)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(geofence_from_row).collect()
    }

    /// How many geofences a fleet has.
    pub async fn geofence_count(&self, fleet: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM geofences WHERE fleet = $1")
            .bind(fleet)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Removes a geofence; false when it did not exist.
    pub async fn delete_geofence(&self, fleet: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM geofences WHERE fleet = $1 AND id = $2")
            .bind(fleet)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn drivers_json(drivers: &Option<Vec<String>>) -> Option<String> {
    drivers
        .as_ref()
        .map(|d| serde_json::to_string(d).unwrap_or_else(|_| "[]".into()))
}

fn geofence_from_row(r: &sqlx::any::AnyRow) -> Result<GeofenceRecord, StoreError> {
    let drivers: Option<String> = r.try_get(4)?;
    Ok(GeofenceRecord {
        fleet: r.try_get(0)?,
        id: r.try_get(1)?,
        name: r.try_get(2)?,
        shape: decode_shape(&r.try_get::<String, _>(3)?)?,
        drivers: drivers
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|_| StoreError::Invalid("stored geofence drivers unreadable"))?,
        dwell_s: r.try_get(5)?,
        margin_m: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}
