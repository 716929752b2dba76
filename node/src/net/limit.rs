//! The request rate of clients, bounded per source address: a token bucket
//! per address, a second's worth deep. A client over its rate is slowed
//! down (its next request waits), never refused, so a busy but honest
//! client sees latency, not errors, and one address cannot take a node's
//! whole time from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; past it, those whose bucket has refilled
/// are forgotten (they lose nothing: a full bucket is a fresh one).
const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Requests that may still come at once; below zero, a debt to wait out.
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_sec` requests a second per address; 0 means no limit.
    pub fn new(per_sec: u32) -> RateLimiter {
        RateLimiter { per_sec: f64::from(per_sec), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request of `from` at `now`; returns how long it must wait
    /// before it is served (zero within the rate).
    pub fn take(&self, from: IpAddr, now: Instant) -> Duration {
        if self.per_sec <= 0.0 {
            return Duration::ZERO;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&from) {
            let per_sec = self.per_sec;
            buckets.retain(|_, b| b.refilled(now, per_sec) < per_sec);
        }
        let bucket = buckets.entry(from).or_insert(Bucket { tokens: self.per_sec, at: now });
        bucket.tokens = bucket.refilled(now, self.per_sec) - 1.0;
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.per_sec)
        }
    }

    /// Waits out the delay of one request of `from`.
    pub async fn admit(&self, from: IpAddr) {
        let wait = self.take(from, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, per_sec: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * per_sec).min(per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_second_worth_of_requests_passes_at_once_and_the_next_waits() {
        let l = RateLimiter::new(10);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.take(A, t), Duration::ZERO);
        }
        assert_eq!(l.take(A, t), Duration::from_millis(100));
        assert_eq!(l.take(A, t), Duration::from_millis(200));
    }

    #[test]
    fn the_bucket_refills_with_time_up_to_one_second_worth() {
        let l = RateLimiter::new(10);
        let t = Instant::now();
        for _ in 0..10 {
            l.take(A, t);
        }
        assert_eq!(l.take(A, t + Duration::from_millis(100)), Duration::ZERO);
        let later = t + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(l.take(A, later), Duration::ZERO);
        }
        assert!(l.take(A, later) > Duration::ZERO);
    }

    #[test]
    fn one_busy_address_does_not_slow_another() {
        let l = RateLimiter::new(5);
        let t = Instant::now();
        for _ in 0..50 {
            l.take(A, t);
        }
        assert_eq!(l.take(B, t), Duration::ZERO);
    }

    #[test]
    fn zero_means_no_limit() {
        let l = RateLimiter::new(0);
        let t = Instant::now();
        for _ in 0..100_000 {
            assert_eq!(l.take(A, t), Duration::ZERO);
        }
    }

    #[test]
    fn idle_addresses_are_forgotten_when_many_come() {
        let l = RateLimiter::new(100);
        let t = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            l.take(IpAddr::V4(i.into()), t);
        }
        let later = t + Duration::from_secs(2);
        l.take(A, later);
        assert!(l.buckets.lock().unwrap().len() < 10, "idle buckets were kept");
    }
}
