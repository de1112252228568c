//! The AVX-512VL compression function (see the crate's doc).

#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_cvtsi32_si128, _mm_cvtsi128_si32, _mm_rol_epi32,
    _mm_ternarylogic_epi32,
};

use crate::Compressor;

/// MD5's 64 additive constants (RFC 1321: the integer part of 2^32 × |sin(i + 1)|).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The round functions as `vpternlogd` truth tables over (B, C, D): bit `4b + 2c + d` of the
/// table is the function's value for those bits.
/// F = (B and C) or (not B and D).
const F: i32 = 0xCA;
/// G = (B and D) or (C and not D).
const G: i32 = 0xE4;
/// H = B xor C xor D.
const H: i32 = 0x96;
/// I = C xor (B or not D).
const I: i32 = 0x39;

/// AVX-512F and AVX-512VL on an Intel CPU.
pub(crate) fn supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && genuine_intel()
}

fn genuine_intel() -> bool {
    // Leaf 0: the vendor string in EBX, EDX, ECX.
    #[allow(unused_unsafe)] // `__cpuid` is safe on newer compilers.
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 0 is always valid.
    let r = unsafe { core::arch::x86_64::__cpuid(0) };
    (r.ebx, r.edx, r.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
}

pub(crate) fn compress(_proof: &Compressor, state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    // SAFETY: a `Compressor` exists only where `supported()` found AVX-512F and AVX-512VL,
    // the features `compress_vl` is compiled for.
    unsafe { compress_vl(state, blocks) }
}

/// One MD5 step: `a = b + ((a + fun(b, c, d) + m + k) <<< s)`, with `m + k` added first (it
/// does not depend on the steps just before).
macro_rules! step {
    ($fun:expr, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:literal) => {
        $a = _mm_add_epi32($a, _mm_cvtsi32_si128($m.wrapping_add($k) as i32));
        $a = _mm_add_epi32($a, _mm_ternarylogic_epi32::<{ $fun }>($b, $c, $d));
        $a = _mm_add_epi32(_mm_rol_epi32::<$s>($a), $b);
    };
}

/// Four steps of one round, from step `$i`, the message word of step `i` being `m[$g(i)]`.
macro_rules! four {
    ($fun:expr, $m:ident, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $g:expr,
     $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
        step!($fun, $a, $b, $c, $d, $m[$g($i) % 16], K[$i], $s0);
        step!($fun, $d, $a, $b, $c, $m[$g($i + 1) % 16], K[$i + 1], $s1);
        step!($fun, $c, $d, $a, $b, $m[$g($i + 2) % 16], K[$i + 2], $s2);
        step!($fun, $b, $c, $d, $a, $m[$g($i + 3) % 16], K[$i + 3], $s3);
    };
}

#[target_feature(enable = "avx512f,avx512vl")]
fn compress_vl(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    let word = |w: u32| _mm_cvtsi32_si128(w as i32);
    let (mut a, mut b, mut c, mut d): (__m128i, __m128i, __m128i, __m128i) = (
        word(state[0]),
        word(state[1]),
        word(state[2]),
        word(state[3]),
    );
    for block in blocks {
        let mut m = [0u32; 16];
        for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
            *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let (a0, b0, c0, d0) = (a, b, c, d);
        let r1 = |i: usize| i;
        let r2 = |i: usize| 5 * i + 1;
        let r3 = |i: usize| 3 * i + 5;
        let r4 = |i: usize| 7 * i;
        four!(F, m, a, b, c, d, 0, r1, 7, 12, 17, 22);
        four!(F, m, a, b, c, d, 4, r1, 7, 12, 17, 22);
        four!(F, m, a, b, c, d, 8, r1, 7, 12, 17, 22);
        four!(F, m, a, b, c, d, 12, r1, 7, 12, 17, 22);
        four!(G, m, a, b, c, d, 16, r2, 5, 9, 14, 20);
        four!(G, m, a, b, c, d, 20, r2, 5, 9, 14, 20);
        four!(G, m, a, b, c, d, 24, r2, 5, 9, 14, 20);
        four!(G, m, a, b, c, d, 28, r2, 5, 9, 14, 20);
        four!(H, m, a, b, c, d, 32, r3, 4, 11, 16, 23);
        four!(H, m, a, b, c, d, 36, r3, 4, 11, 16, 23);
        four!(H, m, a, b, c, d, 40, r3, 4, 11, 16, 23);
        four!(H, m, a, b, c, d, 44, r3, 4, 11, 16, 23);
        four!(I, m, a, b, c, d, 48, r4, 6, 10, 15, 21);
        four!(I, m, a, b, c, d, 52, r4, 6, 10, 15, 21);
        four!(I, m, a, b, c, d, 56, r4, 6, 10, 15, 21);
        four!(I, m, a, b, c, d, 60, r4, 6, 10, 15, 21);
        a = _mm_add_epi32(a, a0);
        b = _mm_add_epi32(b, b0);
        c = _mm_add_epi32(c, c0);
        d = _mm_add_epi32(d, d0);
    }
    state[0] = _mm_cvtsi128_si32(a) as u32;
    state[1] = _mm_cvtsi128_si32(b) as u32;
    state[2] = _mm_cvtsi128_si32(c) as u32;
    state[3] = _mm_cvtsi128_si32(d) as u32;
}
