//! The CPU-heavy kernel of the runtime benchmark, shared verbatim by the
//! guest (`lib.rs`) and the native side (`host/benches/runtime.rs` includes
//! this file with `#[path]`). Plain `core` only, no allocation tricks, no
//! platform code: the same source compiled twice.
//!
//! `kernel(n)`:
//! 1. a sieve of Eratosthenes over `0..=n` (strided stores into a byte
//!    array: memory-bound, bounds-checked, not vectorizable);
//! 2. for every prime found, a few rounds of a xorshift64 generator folded
//!    into an FNV-style hash with a data-dependent table lookup (a serial
//!    dependency chain of 64-bit multiplies, shifts and loads).
//!
//! The result mixes the prime count with the hash, so neither phase can be
//! optimized away.

/// Rounds of the hash per prime.
const ROUNDS: u32 = 8;

/// Size of the lookup table of the hash phase (a power of two).
const TABLE: usize = 4096;

/// Sieve the primes up to `n` and hash them; see the module docs.
pub fn kernel(n: u32) -> u64 {
    let n = n as usize;
    if n < 2 {
        return 0;
    }

    // Phase 1: the sieve.
    let mut composite = vec![0u8; n + 1];
    let mut p = 2usize;
    while (p as u64) * (p as u64) <= n as u64 {
        if composite[p] == 0 {
            let mut j = p * p;
            while j <= n {
                composite[j] = 1;
                j += p;
            }
        }
        p += 1;
    }

    // A table the hash phase indexes by its own state, filled by xorshift.
    let mut table = vec![0u64; TABLE];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for slot in table.iter_mut() {
        x = xorshift(x);
        *slot = x;
    }

    // Phase 2: hash every prime.
    let mut count: u64 = 0;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for (i, &c) in composite.iter().enumerate().skip(2) {
        if c != 0 {
            continue;
        }
        count += 1;
        let mut v = i as u64;
        for _ in 0..ROUNDS {
            x = xorshift(x ^ v);
            let t = table[(x as usize ^ h as usize) & (TABLE - 1)];
            h = (h ^ t ^ v).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(29);
            v = v.wrapping_add(h >> 7);
        }
        table[(h as usize) & (TABLE - 1)] ^= x;
    }

    count.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ h
}

/// One step of Marsaglia's xorshift64.
#[inline(always)]
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
