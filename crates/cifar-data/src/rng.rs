//! Counter-based randomness: every random decision is a pure function of
//! `(seed, stream, epoch, index)`, so results never depend on thread count or call order.

/// Golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Stream identifiers, so that different uses of the same seed are independent.
pub(crate) const STREAM_SHUFFLE: u64 = 1;
pub(crate) const STREAM_AUGMENT: u64 = 2;
pub(crate) const STREAM_SPLIT: u64 = 3;
pub(crate) const STREAM_SYNTHETIC: u64 = 4;

/// The SplitMix64 finalizer: a bijective 64-bit mixer.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit key for `(seed, stream, epoch, index)`.
#[inline]
pub(crate) fn key(seed: u64, stream: u64, epoch: u64, index: u64) -> u64 {
    let h = mix64(seed ^ mix64(stream));
    let h = mix64(h ^ epoch);
    mix64(h ^ index.wrapping_mul(GOLDEN))
}

/// Uniform integer in `0..n` from 64 random bits (Lemire's multiply-shift; bias < n / 2^64).
#[inline]
pub(crate) fn below(bits: u64, n: u64) -> u64 {
    ((u128::from(bits) * u128::from(n)) >> 64) as u64
}

/// A small sequential generator (SplitMix64) for shuffles.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = below(self.next_u64(), i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The permutation of `0..n` used for `epoch` under `seed`.
pub(crate) fn permutation(n: usize, seed: u64, stream: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(key(seed, stream, epoch, 0)).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = permutation(1000, 7, STREAM_SHUFFLE, 3);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, permutation(1000, 7, STREAM_SHUFFLE, 3));
        assert_ne!(p, permutation(1000, 7, STREAM_SHUFFLE, 4));
        assert_ne!(p, permutation(1000, 8, STREAM_SHUFFLE, 3));
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut counts = [0usize; 9];
        for i in 0..90_000u64 {
            let r = below(key(1, 2, 3, i), 9);
            counts[r as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
