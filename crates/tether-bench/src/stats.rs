//! Latency summaries.
//!
//! Every sample is kept (a ten-second append run at tens of thousands per second is a few MB of
//! `u64`s) and sorted once at the end, so the reported percentiles are exact rather than the
//! bucketed approximations of a histogram. That keeps the arithmetic simple enough to unit-test.

use serde::{Deserialize, Serialize};

/// The nearest-rank percentile of an ascending slice: the smallest sample such that at least
/// `p` percent of the samples are at or below it. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What the tables and the JSON file show for a set of latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarises samples given in nanoseconds. Sorts them in place.
    pub fn from_nanos(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Self {
            count: samples.len() as u64,
            p50_ms: ms(percentile(samples, 50.0).unwrap_or(0)),
            p99_ms: ms(percentile(samples, 99.0).unwrap_or(0)),
            max_ms: ms(*samples.last().unwrap_or(&0)),
            mean_ms: (sum as f64 / samples.len() as f64) / 1e6,
        }
    }
}

/// The median of some figures (the mean of the middle two for an even count). Used to fold
/// several rounds of the comparison into one number.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_empty_slice_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let four = [10, 20, 30, 40];
        assert_eq!(percentile(&four, 50.0), Some(20));
        assert_eq!(percentile(&four, 51.0), Some(30));
        assert_eq!(percentile(&four, 99.0), Some(40));
    }

    #[test]
    fn p99_of_a_long_tail_picks_the_tail() {
        // 990 fast samples and 10 slow ones: p99 is still fast, the 991st sample is slow.
        let mut v = vec![1_000u64; 990];
        v.extend(std::iter::repeat_n(9_000_000, 10));
        assert_eq!(percentile(&v, 99.0), Some(1_000));
        assert_eq!(percentile(&v, 99.1), Some(9_000_000));
    }

    #[test]
    fn summary_sorts_and_converts_to_milliseconds() {
        let mut v = vec![3_000_000, 1_000_000, 2_000_000];
        let s = LatencySummary::from_nanos(&mut v);
        assert_eq!(s.count, 3);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 3.0);
        assert_eq!(s.max_ms, 3.0);
        assert_eq!(s.mean_ms, 2.0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }
}
