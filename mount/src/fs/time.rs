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

/// A time a request carries (utimensat). fuser 0.18 turns a time before
/// the epoch, which the kernel sends as whole seconds below zero plus
/// nanoseconds above them, into the epoch minus both: the nanoseconds land
/// on the wrong side. Undone here; times after the epoch are as they are.
pub fn ns_of_request(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => ns_of(t),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1_000_000_000);
            -secs.saturating_mul(1_000_000_000) + i64::from(d.subsec_nanos())
        }
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

    #[test]
    fn a_time_before_the_epoch_from_a_request_keeps_its_nanoseconds_on_the_right_side() {
        // The kernel's {-1 s, 500000000 ns} (half a second before 1970), as fuser 0.18 hands it over.
        let as_fuser_gives_it = UNIX_EPOCH - Duration::new(1, 500_000_000);
        assert_eq!(ns_of_request(as_fuser_gives_it), -500_000_000);
        assert_eq!(ns_of_request(UNIX_EPOCH - Duration::new(2, 0)), -2_000_000_000);
        let later = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(ns_of_request(later), 5_000_000_007);
    }
}
