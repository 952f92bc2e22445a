//! A tiny deterministic pseudo-random generator (splitmix64) and hashing helpers.
//!
//! The simulator never uses a global random source: every random-looking value is a pure
//! function of the scenario seed, the entity it belongs to, a stream number and a time bucket,
//! so any value can be recomputed later (for RRD history) and runs repeat exactly.

/// One splitmix64 step applied to `x`: a fast, well-mixed 64-bit bijection.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a followed by a mix), used to give nodes an entity id.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h)
}

/// A uniform value in `[0, 1)` determined by `(seed, entity, stream, bucket)`.
pub fn unit(seed: u64, entity: u64, stream: u64, bucket: i64) -> f64 {
    let h = mix(seed ^ mix(entity ^ mix(stream.wrapping_add(mix(bucket as u64)))));
    // 53 high bits give every representable double in [0, 1) with equal spacing.
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A sequential splitmix64 generator, used where a stream of values is drawn in order
/// (the synthetic cluster generator).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform value in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// A uniform integer in `[0, n)`; `n == 0` yields 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_deterministic_and_in_range() {
        for b in -50..50 {
            let a = unit(7, 101, 3, b);
            assert_eq!(a, unit(7, 101, 3, b));
            assert!((0.0..1.0).contains(&a));
        }
        assert_ne!(unit(7, 101, 3, 0), unit(8, 101, 3, 0));
    }

    #[test]
    fn sequence_repeats_for_a_seed() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mean: f64 = (0..10_000).map(|_| a.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
