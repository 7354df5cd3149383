//! Random nonces and IVs from a per-thread buffer seeded by the operating-system CSPRNG.
//!
//! On the project's machines a `getrandom` syscall costs more than sealing a 1 KiB value, and
//! the kernel produces about 9 ns per byte, so even batched kernel output would cost a 12-byte
//! nonce about half as much as the AES-GCM seal it is for (BENCHMARKS.md). Nonces are
//! therefore taken from a 4 KiB thread-local buffer, and each refill draws a fresh 32-byte key
//! from `getrandom` and expands it with AES-256 in counter mode (blocks 0..256). This is
//! the construction of NIST's CTR_DRBG (and of OpenSSL's `RAND_bytes`) with a reseed from the
//! OS on every refill: the output is unpredictable without the key, which is wiped right after
//! the refill, and the 256 blocks of one refill are distinct because AES is a permutation.
//! Only nonces and IVs come from here; keys, seeds and everything else secret are drawn from
//! `getrandom` directly.
//!
//! A GCM nonce used twice under one key reveals the authentication key, so the buffer must
//! never hand out the same bytes twice:
//!
//! - bytes are handed out strictly once: the read position only advances, consumed bytes are
//!   overwritten with zeros, and the buffer is refilled (all of it) when too few remain;
//! - each thread has its own buffer, keyed by its own `getrandom` calls;
//! - a `fork()` copies the buffer into the child, where parent and child would hand out the
//!   same bytes. The buffer records the process's fork generation (a counter bumped by a
//!   `pthread_atfork` child handler, see `atrest_ffi::fork_generation`) and is discarded and
//!   refilled when the generation has changed. Checking the process id instead would cost a
//!   syscall per nonce. If the handler cannot be installed, no buffer is kept at all.

use std::cell::RefCell;

use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use zeroize::Zeroizing;

use crate::error::CipherError;

const POOL_LEN: usize = 4096;

struct Pool {
    bytes: [u8; POOL_LEN],
    /// Bytes before `pos` have been handed out (and zeroed).
    pos: usize,
    /// The fork generation at the last fill; `None` before the first fill.
    generation: Option<u64>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; POOL_LEN], pos: POOL_LEN, generation: None })
    };
}

fn os_random(out: &mut [u8]) -> Result<(), CipherError> {
    getrandom::fill(out).map_err(|e| CipherError::Random(e.to_string()))
}

/// Refills the whole buffer: a fresh OS-random AES-256 key encrypts the counter blocks
/// 0..256. The key and its schedule are zeroized when this returns.
fn refill(bytes: &mut [u8; POOL_LEN]) -> Result<(), CipherError> {
    let mut key = Zeroizing::new([0u8; 32]);
    os_random(key.as_mut())?;
    let cipher =
        aes::Aes256::new_from_slice(key.as_ref()).map_err(|_| CipherError::KeyLength(32))?;
    let (blocks, _) = Array::<u8, aes::cipher::consts::U16>::slice_as_chunks_mut(bytes);
    for (i, block) in blocks.iter_mut().enumerate() {
        *block = Array::from((i as u128).to_be_bytes());
    }
    cipher.encrypt_blocks(blocks);
    Ok(())
}

/// `N` random bytes for a nonce or IV; no byte of the buffer is handed out twice.
pub(crate) fn random_nonce<const N: usize>() -> Result<[u8; N], CipherError> {
    let mut out = [0u8; N];
    let Some(generation) = atrest_ffi::fork_generation() else {
        os_random(&mut out)?;
        return Ok(out);
    };
    if N > POOL_LEN / 4 {
        os_random(&mut out)?;
        return Ok(out);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.generation != Some(generation) || POOL_LEN - pool.pos < N {
            // Mark the buffer empty first, so that a failed refill cannot leave old bytes
            // available.
            pool.pos = POOL_LEN;
            pool.generation = None;
            refill(&mut pool.bytes)?;
            pool.pos = 0;
            pool.generation = Some(generation);
        }
        let start = pool.pos;
        let taken = &mut pool.bytes[start..start + N];
        out.copy_from_slice(taken);
        taken.fill(0);
        pool.pos = start + N;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_are_distinct_across_refills_and_threads() {
        let mut seen = HashSet::new();
        for _ in 0..3 * POOL_LEN / 12 {
            assert!(seen.insert(random_nonce::<12>().expect("random")));
        }
        let others: Vec<[u8; 12]> = std::thread::spawn(|| {
            (0..1000)
                .map(|_| random_nonce::<12>().expect("random"))
                .collect()
        })
        .join()
        .expect("thread");
        for n in others {
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn consumed_bytes_are_zeroed() {
        let _ = random_nonce::<24>().expect("random");
        POOL.with(|pool| {
            let pool = pool.borrow();
            assert!(pool.bytes[..pool.pos].iter().all(|b| *b == 0));
        });
    }
}
