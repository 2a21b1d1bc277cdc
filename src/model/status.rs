//! Where a trip and each of its stops stand. Stored and sent as the lowercase names.

/// A trip is active until every stop is checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripStatus {
    Active,
    Completed,
}

/// A stop is pending until its check-in, arrived until the driver leaves its exit ring, then
/// departed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopStatus {
    Pending,
    Arrived,
    Departed,
}

impl TripStatus {
    /// `active` | `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
        }
    }

    /// The status named by [`TripStatus::as_str`], `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Completed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl StopStatus {
    /// `pending` | `arrived` | `departed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Arrived => "arrived",
            Self::Departed => "departed",
        }
    }

    /// The status named by [`StopStatus::as_str`], `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Arrived, Self::Departed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [TripStatus::Active, TripStatus::Completed] {
            assert_eq!(TripStatus::parse(s.as_str()), Some(s));
        }
        for s in [
            StopStatus::Pending,
            StopStatus::Arrived,
            StopStatus::Departed,
        ] {
            assert_eq!(StopStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(StopStatus::parse("Pending"), None);
    }
}
