//! Noise-aware scores: the mean of repeated evaluations and its 95 %
//! confidence interval (Student's t), as DGM and SICA treat noisy
//! benchmarks.
//!
//! With `[search] repeats = n > 1` every variant is evaluated `n` times;
//! its visible score is the mean, and `score_lo`/`score_hi` the interval
//! `mean ± t(0.975, n−1) · s/√n`. Parent selection and "best" then use the
//! lower bound, so a variant that was lucky once does not displace one
//! that is reliably good. One evaluation has no interval.

/// `t(0.975, df)` for `df = 1..=30`; 1.96 (the normal quantile) beyond.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95 % Student-t quantile for `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        d if d <= T975.len() => T975[d - 1],
        _ => 1.96,
    }
}

/// Mean and 95 % interval `(mean, lo, hi)` of `xs`; `None` for an empty
/// slice; the interval is `None` for fewer than two values.
pub fn interval(xs: &[f64]) -> Option<(f64, Option<(f64, f64)>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return Some((mean, None));
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    let half = t975(xs.len() - 1) * (var / n).sqrt();
    Some((mean, Some((mean - half, mean + half))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_t_interval_and_collapses_for_equal_values() {
        let (m, ci) = interval(&[0.5, 0.7, 0.6]).unwrap();
        assert!((m - 0.6).abs() < 1e-12);
        let (lo, hi) = ci.unwrap();
        // s = 0.1, n = 3: half-width 4.303 · 0.1 / √3.
        let half = 4.303 * 0.1 / 3f64.sqrt();
        assert!((lo - (0.6 - half)).abs() < 1e-9 && (hi - (0.6 + half)).abs() < 1e-9, "{lo} {hi}");
        assert_eq!(interval(&[0.4, 0.4]).unwrap(), (0.4, Some((0.4, 0.4))));
        assert_eq!(interval(&[0.3]).unwrap(), (0.3, None));
        assert_eq!(interval(&[]), None);
        assert_eq!(t975(100), 1.96);
    }
}
