//! Times as the cluster keeps them (nanoseconds since the epoch, signed)
//! and as FUSE speaks them (`SystemTime`). Pure conversions and the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time in UTC, for people: year, month, day, hour, minute, second.
pub fn utc(ns: i64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

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
