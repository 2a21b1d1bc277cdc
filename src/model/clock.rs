//! The server clock.

use chrono::Utc;

/// Current server time, unix ms UTC.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
