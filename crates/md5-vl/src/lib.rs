//! MD5's compression function for x86-64 CPUs with AVX-512VL, over a state the caller keeps
//! (four words), so that a hash can be saved and resumed.
//!
//! Why it exists: a verified transfer costs one MD5 pass per side, and MD5 is serial, each step
//! waiting for the one before. With general-purpose registers a step's dependency chain is
//! five or six instructions (the boolean function alone takes three); AVX-512VL's
//! `vpternlogd` computes any of MD5's four boolean functions in one instruction and `vprold`
//! rotates in one, so here a step waits for four: function, add, rotate, add. The state lives
//! in the low lane of four XMM registers; the message word and round constant of each step are
//! added off the critical path, while the steps before it run. Measured on the Xeon barge is
//! benchmarked on, 15 alternated pairs of 256 MiB: 0.89 times the CPU of `fast-md5`'s
//! general-purpose assembly (the fastest scalar code we know of, animetosho's NoLEA schedule),
//! 1.98 s per GiB against 2.23 s in that sitting.
//!
//! The idea (ternary logic for the round functions, the state in vector registers) is the one
//! animetosho's md5-optimisation describes for AVX-512; this is our own code, from the MD5
//! specification (RFC 1321), checked against `fast-md5` on random data of every length.
//!
//! [`Compressor::detect`] says whether the CPU has the instructions; it also requires an Intel
//! CPU, since on AMD's Zen 4 the scalar code was reported faster (md5-many's measurements), and
//! on a Zen 5 (an EPYC of family 1Ah, 8 alternated passes over 256 MiB) we measured this code at
//! 2.14 s per GiB against `fast-md5`'s 1.17. Use the scalar code when it says no.
//!
//! MD5 here is a checksum against accidents (barge's file ids), not a defence against an
//! adversary: MD5 collisions are easy to make.

#[cfg(target_arch = "x86_64")]
mod x86;

/// Proof that the CPU runs [`Compressor::compress`]: only [`Compressor::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct Compressor {
    _proof: (),
}

impl Compressor {
    /// A compressor when this CPU has AVX-512F and AVX-512VL and is an Intel one; `None`
    /// otherwise (and on every other architecture).
    #[must_use]
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if x86::supported() {
            return Some(Self { _proof: () });
        }
        None
    }

    /// Runs MD5's compression function over `blocks`, in order, updating `state` (the four
    /// words A, B, C and D, as RFC 1321 keeps them). Padding and length are the caller's.
    pub fn compress(&self, state: &mut [u32; 4], blocks: &[[u8; 64]]) {
        #[cfg(target_arch = "x86_64")]
        x86::compress(self, state, blocks);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (state, blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so failures can be replayed.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn blocks(data: &[u8]) -> Vec<[u8; 64]> {
        data.chunks_exact(64)
            .map(|c| c.try_into().unwrap_or([0; 64]))
            .collect()
    }

    fn scalar(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
        for b in blocks {
            fast_md5::transform(state, b);
        }
    }

    #[test]
    fn agrees_with_the_scalar_code_on_random_blocks_and_states() {
        let Some(c) = Compressor::detect() else {
            eprintln!("no AVX-512VL on this CPU: nothing to compare");
            return;
        };
        for seed in 1..200u64 {
            let data = bytes(seed, 64 * (1 + seed as usize % 9));
            let bl = blocks(&data);
            let init = bytes(seed ^ 0xdead_beef, 16);
            let mut s1 = [0u32; 4];
            for (w, c) in s1.iter_mut().zip(init.chunks_exact(4)) {
                *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            let mut s2 = s1;
            c.compress(&mut s1, &bl);
            scalar(&mut s2, &bl);
            assert_eq!(s1, s2, "seed {seed}");
        }
    }

    #[test]
    fn whole_md5s_match_the_known_answers() {
        let Some(c) = Compressor::detect() else {
            return;
        };
        // RFC 1321, appendix A.5, with the padding done here.
        let cases: [(&[u8], &str); 4] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            let mut padded = input.to_vec();
            padded.push(0x80);
            while padded.len() % 64 != 56 {
                padded.push(0);
            }
            padded.extend_from_slice(&((input.len() as u64) * 8).to_le_bytes());
            let mut state = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
            c.compress(&mut state, &blocks(&padded));
            let hex: String = state
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, want);
        }
    }
}
