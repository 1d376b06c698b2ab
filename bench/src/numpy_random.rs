//! A bit-exact port of the parts of `numpy.random` (numpy ≥ 1.17, checked against 2.4.6) that the
//! storm workload generator uses: [`SeedSequence`] (with `spawn` and `generate_state`), the
//! [`Pcg64`] bit generator, and a [`Generator`] with `random`, `uniform`, `exponential`,
//! `normal`, `lognormal` and `integers` drawing exactly the same numbers as
//! `np.random.Generator(np.random.PCG64(seed_seq))`.
//!
//! Sources ported: `numpy/random/bit_generator.pyx` (SeedSequence, after Melissa O'Neill's
//! `seed_seq` alternative, MIT), `numpy/random/src/pcg64/pcg64.{h,c}` and `_pcg64.pyx` (PCG64
//! XSL-RR 128/64, MIT), `numpy/random/src/distributions/distributions.c` and
//! `ziggurat_constants.h` (BSD-3-Clause, NumPy Developers). Floating-point expressions keep
//! numpy's evaluation order; `exp`/`log1p` are the platform libm's, as in numpy's C code. The
//! ziggurat tails use `log1p(-U)` as current numpy does (checked with 2.4.6; some older releases
//! used `log(1.0 - U)` there, which changes about one draw in a million).

mod ziggurat;

use ziggurat::{
    FE_DOUBLE, FI_DOUBLE, KE_DOUBLE, KI_DOUBLE, WE_DOUBLE, WI_DOUBLE, ZIGGURAT_EXP_R,
    ZIGGURAT_NOR_INV_R, ZIGGURAT_NOR_R,
};

const POOL_SIZE: usize = 4;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// numpy's `_int_to_uint32_array`: a non-negative integer as 32-bit words, lowest first (`[0]`
/// for 0).
fn int_to_words(mut n: u128, out: &mut Vec<u32>) {
    if n == 0 {
        out.push(0);
    }
    while n > 0 {
        out.push(n as u32);
        n >>= 32;
    }
}

/// `np.random.SeedSequence` with the default pool size (4 words) and an integer entropy.
///
/// `SeedSequence::new(42).spawn(7)` gives the same children as numpy's
/// `np.random.SeedSequence(42).spawn(7)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    entropy: u128,
    spawn_key: Vec<u64>,
    n_children_spawned: u64,
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// `SeedSequence(entropy)`.
    pub fn new(entropy: u128) -> Self {
        Self::with_spawn_key(entropy, &[])
    }

    /// `SeedSequence(entropy, spawn_key=spawn_key)`.
    pub fn with_spawn_key(entropy: u128, spawn_key: &[u64]) -> Self {
        let mut seq = SeedSequence {
            entropy,
            spawn_key: spawn_key.to_vec(),
            n_children_spawned: 0,
            pool: [0; POOL_SIZE],
        };
        seq.pool = mix_entropy(&seq.assembled_entropy());
        seq
    }

    /// The entropy this sequence was created with.
    pub fn entropy(&self) -> u128 {
        self.entropy
    }

    /// The spawn key (position in the spawn tree; empty for a root).
    pub fn spawn_key(&self) -> &[u64] {
        &self.spawn_key
    }

    /// The mixed entropy pool (`SeedSequence.pool`).
    pub fn pool(&self) -> [u32; POOL_SIZE] {
        self.pool
    }

    /// numpy's `get_assembled_entropy`: run entropy (zero-padded to the pool size when there is
    /// a spawn key) followed by the spawn key's words.
    fn assembled_entropy(&self) -> Vec<u32> {
        let mut run = Vec::new();
        int_to_words(self.entropy, &mut run);
        let mut spawn = Vec::new();
        for &k in &self.spawn_key {
            int_to_words(u128::from(k), &mut spawn);
        }
        if !spawn.is_empty() && run.len() < POOL_SIZE {
            run.resize(POOL_SIZE, 0);
        }
        run.extend_from_slice(&spawn);
        run
    }

    /// `spawn(n_children)`: children with spawn keys `self.spawn_key + (i,)` for the next
    /// `n_children` values of `i`.
    pub fn spawn(&mut self, n_children: usize) -> Vec<SeedSequence> {
        let first = self.n_children_spawned;
        self.n_children_spawned += n_children as u64;
        (first..first + n_children as u64)
            .map(|i| {
                let mut key = self.spawn_key.clone();
                key.push(i);
                SeedSequence::with_spawn_key(self.entropy, &key)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut data = self.pool[i % POOL_SIZE];
                data ^= hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                data = data.wrapping_mul(hash_const);
                data ^ (data >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: pairs of 32-bit words, little end first.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        self.generate_state_u32(2 * n_words)
            .chunks_exact(2)
            .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
            .collect()
    }
}

/// numpy's `mix_entropy` into a zeroed pool of [`POOL_SIZE`] words.
fn mix_entropy(entropy: &[u32]) -> [u32; POOL_SIZE] {
    let mut hash_const = INIT_A;
    let mut mixer = [0u32; POOL_SIZE];
    for (i, m) in mixer.iter_mut().enumerate() {
        *m = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
    }
    for i_src in 0..POOL_SIZE {
        for i_dst in 0..POOL_SIZE {
            if i_src != i_dst {
                let h = hashmix(mixer[i_src], &mut hash_const);
                mixer[i_dst] = mix(mixer[i_dst], h);
            }
        }
    }
    for &word in entropy.iter().skip(POOL_SIZE) {
        for m in mixer.iter_mut() {
            let h = hashmix(word, &mut hash_const);
            *m = mix(*m, h);
        }
    }
    mixer
}

const PCG_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) + 4_865_540_595_714_422_341u128;

/// numpy's `PCG64` bit generator: a 128-bit LCG with the XSL-RR output function, plus numpy's
/// one-word buffer for 32-bit draws (`next_u32` hands out the low then the high half of one
/// 64-bit draw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    has_uint32: bool,
    uinteger: u32,
}

impl Pcg64 {
    /// `pcg64_set_seed(seed, inc)`: `seed = [high, low]` and `inc = [high, low]` as numpy passes
    /// them (`generate_state(4, uint64)[0..2]` and `[2..4]`).
    pub fn from_seed_inc(seed: [u64; 2], inc: [u64; 2]) -> Self {
        let initstate = (u128::from(seed[0]) << 64) | u128::from(seed[1]);
        let initseq = (u128::from(inc[0]) << 64) | u128::from(inc[1]);
        let mut rng = Pcg64 {
            state: 0,
            inc: (initseq << 1) | 1,
            has_uint32: false,
            uinteger: 0,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    /// `PCG64(seed_seq)`.
    pub fn from_seed_sequence(seq: &SeedSequence) -> Self {
        let val = seq.generate_state_u64(4);
        Self::from_seed_inc([val[0], val[1]], [val[2], val[3]])
    }

    #[inline(always)]
    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// The next 64-bit output (`pcg64_next64`).
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let hi = (self.state >> 64) as u64;
        let lo = self.state as u64;
        (hi ^ lo).rotate_right((self.state >> 122) as u32)
    }

    /// The next 32-bit output (`pcg64_next32`, buffered: one 64-bit draw serves two calls).
    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        if self.has_uint32 {
            self.has_uint32 = false;
            return self.uinteger;
        }
        let next = self.next_u64();
        self.has_uint32 = true;
        self.uinteger = (next >> 32) as u32;
        next as u32
    }

    /// A double in `[0, 1)` from the top 53 bits of one 64-bit draw (`next_double`).
    #[inline(always)]
    pub fn next_double(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Advance the LCG by `delta` steps in O(log delta) (`pcg64_advance`); like numpy, this
    /// drops a buffered 32-bit half.
    pub fn advance(&mut self, mut delta: u128) {
        let (mut cur_mult, mut cur_plus) = (PCG_MULT, self.inc);
        let (mut acc_mult, mut acc_plus) = (1u128, 0u128);
        while delta > 0 {
            if delta & 1 == 1 {
                acc_mult = acc_mult.wrapping_mul(cur_mult);
                acc_plus = acc_plus.wrapping_mul(cur_mult).wrapping_add(cur_plus);
            }
            cur_plus = cur_mult.wrapping_add(1).wrapping_mul(cur_plus);
            cur_mult = cur_mult.wrapping_mul(cur_mult);
            delta >>= 1;
        }
        self.state = acc_mult.wrapping_mul(self.state).wrapping_add(acc_plus);
        self.has_uint32 = false;
        self.uinteger = 0;
    }
}

/// `np.random.Generator(np.random.PCG64(seed_seq))`: the distributions the storm generator
/// uses, each drawing exactly what numpy draws (same bits consumed, same float expression).
///
/// Array draws in numpy (`rng.uniform(a, b, n)`) are `n` successive scalar draws, so
/// `(0..n).map(|_| g.uniform(a, b))` reproduces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    bitgen: Pcg64,
}

impl Generator {
    /// A generator over `bitgen`.
    pub fn new(bitgen: Pcg64) -> Self {
        Generator { bitgen }
    }

    /// `Generator(PCG64(seq))`.
    pub fn from_seed_sequence(seq: &SeedSequence) -> Self {
        Self::new(Pcg64::from_seed_sequence(seq))
    }

    /// The underlying bit generator.
    pub fn bit_generator(&mut self) -> &mut Pcg64 {
        &mut self.bitgen
    }

    /// `random()`: uniform on `[0, 1)`, 53 bits.
    #[inline]
    pub fn random(&mut self) -> f64 {
        self.bitgen.next_double()
    }

    /// `uniform(low, high)`: `low + (high - low) * random()`.
    #[inline]
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let range = high - low;
        low + range * self.bitgen.next_double()
    }

    /// `standard_exponential()` (numpy's ziggurat `random_standard_exponential`).
    pub fn standard_exponential(&mut self) -> f64 {
        loop {
            let mut ri = self.bitgen.next_u64();
            ri >>= 3;
            let idx = (ri & 0xff) as usize;
            ri >>= 8;
            let x = ri as f64 * WE_DOUBLE[idx];
            if ri < KE_DOUBLE[idx] {
                return x; // 98.9 % of draws
            }
            if idx == 0 {
                return ZIGGURAT_EXP_R - (-self.bitgen.next_double()).ln_1p();
            }
            if (FE_DOUBLE[idx - 1] - FE_DOUBLE[idx]) * self.bitgen.next_double() + FE_DOUBLE[idx]
                < (-x).exp()
            {
                return x;
            }
        }
    }

    /// `exponential(scale)`: `scale * standard_exponential()`.
    #[inline]
    pub fn exponential(&mut self, scale: f64) -> f64 {
        scale * self.standard_exponential()
    }

    /// `standard_normal()` (numpy's ziggurat `random_standard_normal`).
    pub fn standard_normal(&mut self) -> f64 {
        loop {
            let mut r = self.bitgen.next_u64();
            let idx = (r & 0xff) as usize;
            r >>= 8;
            let sign = r & 0x1;
            let rabs = (r >> 1) & 0x000f_ffff_ffff_ffff;
            let mut x = rabs as f64 * WI_DOUBLE[idx];
            if sign & 0x1 == 1 {
                x = -x;
            }
            if rabs < KI_DOUBLE[idx] {
                return x; // 99.3 % of draws
            }
            if idx == 0 {
                loop {
                    let xx = -ZIGGURAT_NOR_INV_R * (-self.bitgen.next_double()).ln_1p();
                    let yy = -(-self.bitgen.next_double()).ln_1p();
                    if yy + yy > xx * xx {
                        return if (rabs >> 8) & 0x1 == 1 {
                            -(ZIGGURAT_NOR_R + xx)
                        } else {
                            ZIGGURAT_NOR_R + xx
                        };
                    }
                }
            }
            if (FI_DOUBLE[idx - 1] - FI_DOUBLE[idx]) * self.bitgen.next_double() + FI_DOUBLE[idx]
                < (-0.5 * x * x).exp()
            {
                return x;
            }
        }
    }

    /// `normal(loc, scale)`: `loc + scale * standard_normal()`.
    #[inline]
    pub fn normal(&mut self, loc: f64, scale: f64) -> f64 {
        loc + scale * self.standard_normal()
    }

    /// `lognormal(mean, sigma)`: `exp(mean + sigma * standard_normal())`.
    #[inline]
    pub fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        self.normal(mean, sigma).exp()
    }

    /// `integers(low, high)` for the default `int64` dtype (`high` exclusive, `low < high`):
    /// numpy's `random_bounded_uint64` with Lemire's rejection — through the buffered 32-bit
    /// path when `high - low - 1` fits in 32 bits, as numpy does.
    pub fn integers(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "integers: low >= high");
        let rng = high.wrapping_sub(1).wrapping_sub(low) as u64;
        let off = low as u64;
        let draw = if rng == 0 {
            0
        } else if rng < 0xFFFF_FFFF {
            u64::from(self.bounded_lemire_u32(rng as u32))
        } else if rng == 0xFFFF_FFFF {
            u64::from(self.bitgen.next_u32())
        } else if rng == u64::MAX {
            self.bitgen.next_u64()
        } else {
            self.bounded_lemire_u64(rng)
        };
        off.wrapping_add(draw) as i64
    }

    /// numpy's `buffered_bounded_lemire_uint32`: uniform on `0..=rng`, `rng < u32::MAX`.
    #[inline]
    fn bounded_lemire_u32(&mut self, rng: u32) -> u32 {
        let rng_excl = rng + 1;
        let mut m = u64::from(self.bitgen.next_u32()) * u64::from(rng_excl);
        let mut leftover = m as u32;
        if leftover < rng_excl {
            let threshold = (u32::MAX - rng) % rng_excl;
            while leftover < threshold {
                m = u64::from(self.bitgen.next_u32()) * u64::from(rng_excl);
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// numpy's `bounded_lemire_uint64`: uniform on `0..=rng`, `rng < u64::MAX`.
    fn bounded_lemire_u64(&mut self, rng: u64) -> u64 {
        let rng_excl = rng + 1;
        let mut m = u128::from(self.bitgen.next_u64()) * u128::from(rng_excl);
        let mut leftover = m as u64;
        if leftover < rng_excl {
            let threshold = (u64::MAX - rng) % rng_excl;
            while leftover < threshold {
                m = u128::from(self.bitgen.next_u64()) * u128::from(rng_excl);
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    //! Expected values come from numpy 2.4.6 (Python 3.11, x86_64 Linux), e.g.
    //! `np.random.Generator(np.random.PCG64(np.random.SeedSequence(42).spawn(7)[i]))`.
    use super::*;
    use sha2::{Digest, Sha256};

    fn child(i: usize) -> Generator {
        let children = SeedSequence::new(42).spawn(7);
        Generator::from_seed_sequence(&children[i])
    }

    #[test]
    fn seed_sequence_matches_numpy() {
        let root = SeedSequence::new(42);
        assert_eq!(
            root.pool(),
            [0x631d3606, 0x07ae90ae, 0x6fc4be28, 0x2ced5c75]
        );
        assert_eq!(
            root.generate_state_u64(4),
            [
                0x9f1e2e6dcd540ab7,
                0xd57873dc79fb94b6,
                0x7d282a1b64d420b7,
                0x336579714692d5ff
            ]
        );
        let mut root = root;
        let children = root.spawn(7);
        assert_eq!(children[0].spawn_key(), &[0]);
        assert_eq!(
            children[0].pool(),
            [0x681e5630, 0x5e2019f6, 0x22fbca22, 0x4f504576]
        );
        assert_eq!(
            children[0].generate_state_u64(4),
            [
                0xdff6ed7da001c6a4,
                0x4323988864d84a1f,
                0x9c90dafb22be369b,
                0x77fd4b767416fa91
            ]
        );
        assert_eq!(
            children[1].pool(),
            [0xf2936661, 0x90e5a60a, 0x76f09215, 0xfc683ed9]
        );
        assert_eq!(
            children[1].generate_state_u64(4),
            [
                0x01dcb763f3e63cba,
                0x6aee7dd615de6f6e,
                0x3e2df752dbd3217f,
                0x29d15a391cf7e717
            ]
        );
        // a second spawn continues the numbering
        assert_eq!(root.spawn(1)[0].spawn_key(), &[7]);
    }

    #[test]
    fn pcg64_raw_and_advance() {
        let mut g = child(0);
        let raw: Vec<u64> = (0..3).map(|_| g.bit_generator().next_u64()).collect();
        assert_eq!(
            raw,
            [0xeaafbebf7f55d256, 0xe9366c1894d944c8, 0xe0685dcb37cff0d6]
        );
        let mut a = child(3);
        let mut b = child(3);
        for _ in 0..1000 {
            a.bit_generator().next_u64();
        }
        b.bit_generator().advance(1000);
        assert_eq!(a, b);
    }

    #[test]
    fn distributions_match_numpy() {
        let mut g = child(0);
        let r: Vec<f64> = (0..3).map(|_| g.random()).collect();
        assert_eq!(
            r,
            [0.9167441575549085, 0.9109866676343232, 0.8765925046098457]
        );

        let mut g = child(1);
        let u: Vec<f64> = (0..3).map(|_| g.uniform(20.0, 45.0)).collect();
        assert_eq!(
            u,
            [31.68726949879606, 21.16122241121718, 34.887750239903426]
        );

        let mut g = child(2);
        let e: Vec<f64> = (0..5).map(|_| g.exponential(0.25)).collect();
        assert_eq!(
            e,
            [
                0.047133102676840115,
                0.08812869921352637,
                0.03229076495426151,
                0.3516824800712325,
                0.1808090459124067
            ]
        );
        let mut g = child(2);
        assert_eq!(g.standard_exponential(), 0.18853241070736046);

        let mut g = child(3);
        let n: Vec<f64> = (0..5).map(|_| g.normal(20.0, 30.0)).collect();
        assert_eq!(
            n,
            [
                16.987239545835653,
                63.80345300572148,
                -27.448598118993075,
                20.986735220159503,
                -5.766861264429469
            ]
        );
        let mut g = child(3);
        let ln: Vec<f64> = (0..5).map(|_| g.lognormal(0.9, 1.2)).collect();
        assert_eq!(
            ln,
            [
                2.1803590865415625,
                14.184334057799171,
                0.3686366071101718,
                2.5586234750211143,
                0.8775033986210641
            ]
        );

        let mut g = child(5);
        let i: Vec<i64> = (0..20).map(|_| g.integers(1, 4)).collect();
        assert_eq!(
            i,
            [3, 1, 1, 1, 3, 2, 1, 1, 3, 1, 1, 2, 1, 1, 2, 2, 2, 2, 2, 1]
        );
    }

    fn sha256_of(values: impl Iterator<Item = f64>) -> String {
        let mut h = Sha256::new();
        for v in values {
            h.update(v.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A million draws reach the ziggurats' rare branches (tails, wedges): the bytes must equal
    /// numpy's `rng.standard_normal(10**6).tobytes()` etc.
    #[test]
    fn million_draws_match_numpy() {
        let mut g = child(4);
        assert_eq!(
            sha256_of((0..1_000_000).map(|_| g.standard_normal())),
            "223b86054683a106565f24c876cebc0dd078544ecf6e41c3473425bd5f9a6216"
        );
        let mut g = child(4);
        assert_eq!(
            sha256_of((0..1_000_000).map(|_| g.standard_exponential())),
            "4f777f73289e0bcbec64b2288009948a240d59f71055ead00afe736283005d21"
        );
        // integers(1, 4, 10**6).sum() and the random() that follows (buffer state included)
        let mut g = child(6);
        let sum: i64 = (0..1_000_000).map(|_| g.integers(1, 4)).sum();
        assert_eq!(sum, 2_000_500);
        assert_eq!(g.random(), 0.5552183970612974);
    }
}
