//! Latency statistics: exact percentiles over every recorded sample, in integer nanoseconds.
//!
//! Runs are short (seconds) and a sample is 8 bytes, so keeping every latency and sorting once is
//! cheap and exact; no histogram bucketing can blur the tail this tool exists to show. Everything
//! is integer arithmetic: percentiles are given in parts per million.

use serde::Serialize;

/// A percentile in parts per million: 500_000 is the median, 999_000 is p99.9.
pub type PartsPerMillion = u64;

pub const P50: PartsPerMillion = 500_000;
pub const P99: PartsPerMillion = 990_000;
pub const P999: PartsPerMillion = 999_000;

/// The nearest-rank percentile of ascending `sorted` samples: the smallest sample such that at
/// least `ppm` parts per million of the samples are less than or equal to it. `None` when there
/// are no samples.
pub fn percentile(sorted: &[u64], ppm: PartsPerMillion) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u128;
    let ppm = u128::from(ppm.min(1_000_000));
    // rank = ceil(n * ppm / 1e6), at least 1: the rank is 1-based.
    let rank = (n * ppm).div_ceil(1_000_000).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index).copied().or(sorted.last().copied())
}

/// The summary of one run's latencies, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

impl Latency {
    /// Sorts `samples` in place and summarises them.
    pub fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let count = samples.len() as u64;
        Latency {
            count,
            p50_ns: percentile(samples, P50).unwrap_or(0),
            p99_ns: percentile(samples, P99).unwrap_or(0),
            p999_ns: percentile(samples, P999).unwrap_or(0),
            max_ns: samples.last().copied().unwrap_or(0),
            mean_ns: u64::try_from(sum / u128::from(count.max(1))).unwrap_or(u64::MAX),
        }
    }
}

/// `count` events over `elapsed_ns`, per second.
pub fn per_second(count: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return 0;
    }
    u64::try_from(u128::from(count) * 1_000_000_000 / u128::from(elapsed_ns)).unwrap_or(u64::MAX)
}

/// `part / whole` in tenths of a percent (per mille), rounded to nearest; `None` without a whole.
pub fn permille(part: u64, whole: u64) -> Option<u64> {
    if whole == 0 {
        return None;
    }
    let scaled = u128::from(part) * 1000 + u128::from(whole) / 2;
    Some(u64::try_from(scaled / u128::from(whole)).unwrap_or(u64::MAX))
}

/// A per-mille figure as a percentage with one decimal: 873 is "87.3%".
pub fn fmt_permille(p: u64) -> String {
    format!("{}.{}%", p / 10, p % 10)
}

/// A duration in nanoseconds, short and readable: "850µs", "2.35ms", "1.20s".
pub fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{}.{}µs", ns / 1000, (ns % 1000) / 100)
    } else if ns < 1_000_000 {
        format!("{}µs", ns / 1000)
    } else if ns < 1_000_000_000 {
        let hundredths = ns / 10_000;
        format!("{}.{:02}ms", hundredths / 100, hundredths % 100)
    } else {
        let hundredths = ns / 10_000_000;
        format!("{}.{:02}s", hundredths / 100, hundredths % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, P50), Some(50));
        assert_eq!(percentile(&s, P99), Some(99));
        assert_eq!(percentile(&s, P999), Some(100));
        assert_eq!(percentile(&s, 1_000_000), Some(100));
        assert_eq!(percentile(&s, 0), Some(1));
        assert_eq!(percentile(&s, 10_000), Some(1));
        assert_eq!(percentile(&s, 10_001), Some(2));
    }

    #[test]
    fn percentiles_of_tiny_and_empty_sets() {
        assert_eq!(percentile(&[], P50), None);
        assert_eq!(percentile(&[7], P50), Some(7));
        assert_eq!(percentile(&[7], P999), Some(7));
        assert_eq!(percentile(&[1, 2], P50), Some(1));
        assert_eq!(percentile(&[1, 2], P99), Some(2));
    }

    #[test]
    fn one_slow_sample_in_a_thousand_shows_at_p999_not_p99() {
        let mut s = vec![1_000u64; 999];
        s.push(1_000_000);
        let l = Latency::of(&mut s);
        assert_eq!(l.p99_ns, 1_000);
        assert_eq!(l.p999_ns, 1_000);
        assert_eq!(l.max_ns, 1_000_000);
        // With two slow samples in a thousand, p99.9 is slow.
        s[0] = 1_000_000;
        let l = Latency::of(&mut s);
        assert_eq!(l.p999_ns, 1_000_000);
        assert_eq!(l.count, 1000);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut s = vec![30, 10, 20];
        let l = Latency::of(&mut s);
        assert_eq!(s, vec![10, 20, 30]);
        assert_eq!((l.p50_ns, l.max_ns, l.mean_ns, l.count), (20, 30, 20, 3));
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn rates_and_ratios_in_integers() {
        assert_eq!(per_second(5_000, 2_000_000_000), 2_500);
        assert_eq!(per_second(1, 0), 0);
        assert_eq!(permille(873, 1000), Some(873));
        assert_eq!(permille(2, 3), Some(667));
        assert_eq!(permille(1, 0), None);
        assert_eq!(fmt_permille(873), "87.3%");
        assert_eq!(fmt_permille(1205), "120.5%");
    }

    #[test]
    fn durations_print_in_a_readable_unit() {
        assert_eq!(fmt_ns(1_500), "1.5µs");
        assert_eq!(fmt_ns(850_000), "850µs");
        assert_eq!(fmt_ns(2_345_678), "2.34ms");
        assert_eq!(fmt_ns(1_200_000_000), "1.20s");
    }
}
