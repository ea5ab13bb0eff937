//! The leader's throttle on reassignment traffic: a token bucket over the bytes sent to
//! replicas that a reassignment is adding (Kafka's `leader.replication.throttled.rate`), so
//! that copying a partition to a new broker does not take the disk and network from producers.
//!
//! The bucket holds at most one second of the rate. A fetch round asks for the allowance,
//! reads at most that much for throttled replicas, and spends what it sent; a round may
//! overdraw by one batch (the log returns whole batches), which later rounds pay back, so the
//! rate holds on average.

use std::sync::Mutex;
use std::time::Instant;

/// Token bucket over bytes per second; a rate of 0 never throttles.
pub struct Throttle {
    rate: u64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes that may go now; negative after an overdraft.
    tokens: f64,
    refilled: Instant,
}

impl Throttle {
    /// A throttle of `rate` bytes per second (0: unlimited).
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate as f64,
                refilled: Instant::now(),
            }),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes that may be sent to throttled replicas now: 0 while the bucket is empty.
    pub fn allowance(&self) -> usize {
        if self.rate == 0 {
            return usize::MAX;
        }
        let mut b = self.bucket();
        let now = Instant::now();
        let refill = now.duration_since(b.refilled).as_secs_f64() * self.rate as f64;
        b.tokens = (b.tokens + refill).min(self.rate as f64);
        b.refilled = now;
        b.tokens.max(0.0) as usize
    }

    /// Records `bytes` sent to throttled replicas.
    pub fn spend(&self, bytes: usize) {
        if self.rate > 0 {
            self.bucket().tokens -= bytes as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_rate_then_nothing_until_it_refills() {
        let t = Throttle::new(1000);
        let first = t.allowance();
        assert!((990..=1000).contains(&first), "{first}");
        t.spend(1500);
        assert_eq!(t.allowance(), 0, "an overdraft is paid back first");
        std::thread::sleep(std::time::Duration::from_millis(700));
        let later = t.allowance();
        assert!((150..=400).contains(&later), "{later}");
        assert_eq!(Throttle::new(0).allowance(), usize::MAX);
    }
}
