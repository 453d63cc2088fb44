//! Rate limits the dialects share: so many requests per second per key (a merchant, or a client
//! address), with a burst, kept by `governor` (GCRA, one small state per key).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A request over its limit: nothing was done; `retry_after` tells when one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub retry_after: Duration,
}

impl Busy {
    /// Whole seconds to wait, at least one (for a `Retry-After` header or a message).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || secs == 0 {
            secs + 1
        } else {
            secs
        }
    }
}

/// Requests per key and second; cheap to clone (the state is shared). `RateLimit::off()`
/// lets everything through.
#[derive(Clone, Default)]
pub struct RateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.limiter {
            Some(l) => write!(f, "RateLimit({} keys)", l.len()),
            None => f.write_str("RateLimit(off)"),
        }
    }
}

impl RateLimit {
    pub fn off() -> RateLimit {
        RateLimit::default()
    }

    /// `per_second` requests per second per key, `burst` of them at once; 0 per second is off
    /// (a burst of 0 is taken as 1).
    pub fn per_second(per_second: u32, burst: u32) -> RateLimit {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return RateLimit::off();
        };
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: Some(Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))),
        }
    }

    pub fn is_on(&self) -> bool {
        self.limiter.is_some()
    }

    /// Counts one request of `key`, or says it is over the limit.
    pub fn check(&self, key: &str) -> Result<(), Busy> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| Busy {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Forgets the keys whose state is back to fresh, so that the table holds only clients
    /// seen lately; run it now and then.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys are remembered.
    pub fn keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_burst_is_busy_and_other_keys_are_not() {
        let limit = RateLimit::per_second(1, 3);
        for _ in 0..3 {
            assert_eq!(limit.check("a"), Ok(()));
        }
        let busy = limit.check("a").unwrap_err();
        assert!(busy.retry_after <= Duration::from_secs(1), "{busy:?}");
        assert_eq!(busy.retry_after_secs(), 1);
        assert_eq!(limit.check("b"), Ok(()));
        assert_eq!(limit.keys(), 2);
    }

    #[test]
    fn off_lets_everything_through() {
        let off = RateLimit::per_second(0, 10);
        assert!(!off.is_on());
        for _ in 0..1000 {
            assert_eq!(off.check("a"), Ok(()));
        }
        assert_eq!(off.keys(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let wait = |ms| Busy {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(wait(0).retry_after_secs(), 1);
        assert_eq!(wait(1).retry_after_secs(), 1);
        assert_eq!(wait(1000).retry_after_secs(), 1);
        assert_eq!(wait(1001).retry_after_secs(), 2);
    }
}
