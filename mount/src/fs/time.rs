//! Times as the cluster keeps them (nanoseconds since the epoch, signed)
//! and as FUSE speaks them (`SystemTime`). Pure conversions and the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    ns_of(SystemTime::now())
}

/// A time as FUSE wants it; before the epoch too.
pub fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A time from FUSE as the cluster keeps it (saturating far from the epoch).
pub fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_with_nanoseconds_and_before_the_epoch() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            assert_eq!(ns_of(system_time(ns)), ns);
        }
        assert!(now_ns() > 1_700_000_000_000_000_000);
    }
}
