//! The open-loop schedule: when the i-th request is meant to be sent at a fixed rate.
//!
//! Latency in an open loop is measured from this intended time, not from when a connection was
//! free to send it. A server that stalls for a second therefore shows a second of latency on
//! every request that should have gone out during the stall (coordinated omission is not
//! hidden), instead of one slow sample followed by a pause the client politely waited out.

/// The intended send time of request `index`, in nanoseconds after the schedule's start, at
/// `rate_per_s` requests per second. Integer arithmetic, so request i of a 3-per-second
/// schedule lands at exactly i/3 s, without drift however long the run.
pub fn intended_offset_ns(index: u64, rate_per_s: u64) -> u64 {
    let rate = u128::from(rate_per_s.max(1));
    u64::try_from(u128::from(index) * 1_000_000_000 / rate).unwrap_or(u64::MAX)
}

/// How many requests are intended strictly before `offset_ns` after the start: the first index
/// whose intended time is at or after `offset_ns`.
pub fn due_before(offset_ns: u64, rate_per_s: u64) -> u64 {
    let rate = u128::from(rate_per_s.max(1));
    // The smallest i with i * 1e9 / rate >= offset, i.e. i * 1e9 >= offset * rate rounded up.
    let n = (u128::from(offset_ns) * rate).div_ceil(1_000_000_000);
    // Integer division in intended_offset_ns can put index n-1 at offset too; step back to the
    // exact boundary.
    let mut i = u64::try_from(n).unwrap_or(u64::MAX);
    while i > 0 && intended_offset_ns(i - 1, rate_per_s) >= offset_ns {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced() {
        assert_eq!(intended_offset_ns(0, 1000), 0);
        assert_eq!(intended_offset_ns(1, 1000), 1_000_000);
        assert_eq!(intended_offset_ns(2500, 1000), 2_500_000_000);
        assert_eq!(intended_offset_ns(1, 3), 333_333_333);
        assert_eq!(intended_offset_ns(3, 3), 1_000_000_000);
    }

    #[test]
    fn long_schedules_do_not_drift() {
        // An hour at 7 per second: the last request lands exactly on the hour.
        assert_eq!(intended_offset_ns(7 * 3600, 7), 3_600_000_000_000);
        // Monotonic, and never two requests closer than the period rounds down to.
        let mut last = 0;
        for i in 1..10_000 {
            let t = intended_offset_ns(i, 7_777);
            assert!(t > last);
            assert!(t - last >= 128_583);
            last = t;
        }
    }

    #[test]
    fn a_zero_rate_is_treated_as_one_per_second() {
        assert_eq!(intended_offset_ns(2, 0), 2_000_000_000);
    }

    #[test]
    fn due_before_counts_the_requests_of_a_window() {
        assert_eq!(due_before(0, 1000), 0);
        assert_eq!(due_before(1, 1000), 1);
        assert_eq!(due_before(1_000_000, 1000), 1);
        assert_eq!(due_before(1_000_001, 1000), 2);
        assert_eq!(due_before(1_000_000_000, 1000), 1000);
        for rate in [1, 3, 7, 999, 4096] {
            for offset in [0, 1, 333_333_333, 333_333_334, 999_999_999, 5_000_000_000] {
                let n = due_before(offset, rate);
                assert!(n == 0 || intended_offset_ns(n - 1, rate) < offset);
                assert!(intended_offset_ns(n, rate) >= offset);
            }
        }
    }
}
