//! Latency statistics from recorded samples: exact nearest-rank percentiles (every
//! sample is kept and sorted, no histogram buckets), so a p99 is a latency that really
//! happened.

use std::time::Duration;

use serde::Serialize;

/// The summary of one run's latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// Summarizes `samples_ns` (sorted in place). Empty input gives all zeros.
    pub fn from_samples(samples_ns: &mut [u64]) -> Latency {
        if samples_ns.is_empty() {
            return Latency::default();
        }
        samples_ns.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let sum: u128 = samples_ns.iter().map(|&s| u128::from(s)).sum();
        Latency {
            samples: samples_ns.len(),
            min_us: us(samples_ns[0]),
            p50_us: us(percentile(samples_ns, 50.0)),
            p90_us: us(percentile(samples_ns, 90.0)),
            p99_us: us(percentile(samples_ns, 99.0)),
            max_us: us(samples_ns[samples_ns.len() - 1]),
            mean_us: sum as f64 / samples_ns.len() as f64 / 1000.0,
        }
    }
}

/// The nearest-rank percentile of sorted, non-empty `sorted`: the smallest sample that
/// at least `p` percent of the samples do not exceed.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Jobs per second, or 0 for an empty run.
pub fn rate(jobs: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        jobs as f64 / secs
    } else {
        0.0
    }
}

/// The median of `values` (the lower middle for an even count), or `None` when empty.
pub fn median_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get(values.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&sorted, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        // 3 samples: p50 is the second, p99 the third.
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3], 99.0), 3);
    }

    #[test]
    fn summary_sorts_and_converts_to_microseconds() {
        let mut s = vec![3_000, 1_000, 2_000, 10_000];
        let l = Latency::from_samples(&mut s);
        assert_eq!(l.samples, 4);
        assert_eq!(l.min_us, 1.0);
        assert_eq!(l.p50_us, 2.0);
        assert_eq!(l.p99_us, 10.0);
        assert_eq!(l.max_us, 10.0);
        assert_eq!(l.mean_us, 4.0);
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn rates_and_medians() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), Some(2));
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        assert_eq!(median_index(&[]), None);
    }
}
