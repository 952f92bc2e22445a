//! Rounding rules of the scoring model. Python's `round` is round-half-to-even and `int()`
//! truncates toward zero; the golden values depend on both, so they live here once.

/// `int(round(x))`: round half to even, as an integral `f64`.
pub(crate) fn round_int(x: f64) -> f64 {
    x.round_ties_even()
}

/// `round(x, digits)` with ties to even on the scaled value.
pub(crate) fn round_to(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round_ties_even() / scale
}

/// `int(x)`: truncation toward zero.
pub(crate) fn trunc(x: f64) -> f64 {
    x.trunc()
}

/// Arithmetic mean, 0 for an empty slice.
pub(crate) fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_even() {
        assert_eq!(round_int(37.5), 38.0);
        assert_eq!(round_int(112.5), 112.0);
        assert_eq!(round_int(45.0 * 0.7), 31.0);
        assert_eq!(round_to(13.25, 1), 13.2);
        assert_eq!(round_to(0.9 - 0.75 * 0.6, 2), 0.45);
    }

    #[test]
    fn truncation_is_toward_zero() {
        assert_eq!(trunc(31.9), 31.0);
        assert_eq!(trunc(-2.5), -2.0);
    }
}
