//! ZeroTier's memory-hard identity hash, which ties an address to a public key
//! and makes generating a colliding address expensive.

use salsa20::Salsa20;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use sha2::{Digest, Sha512};

use crate::c25519::PublicKey;
use crate::constants::IDENTITY_HASH_MEMORY_BYTES;

const WORD_BYTES: usize = 8;
const BLOCK_BYTES: usize = 64;
const MEMORY_WORDS: usize = IDENTITY_HASH_MEMORY_BYTES / WORD_BYTES;
const DIGEST_WORDS: usize = 64 / WORD_BYTES;
const KEYSTREAM_BATCH_BYTES: usize = 64 * BLOCK_BYTES;

/// The 2 MiB scratch buffer the hash works in; reuse it across many hashes.
pub struct IdentityHashScratch(Vec<u8>);

impl IdentityHashScratch {
    /// A scratch buffer, allocated on first use (a node that never checks
    /// an identity never holds the 2 MiB).
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Gives the 2 MiB back (a node between checks need not hold it).
    pub fn release(&mut self) {
        self.0 = Vec::new();
    }
}

impl Default for IdentityHashScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Computes the 64-byte memory-hard digest of a public key.
///
/// SHA-512 of the key seeds a Salsa20/20 stream (key = digest[0..32],
/// nonce = digest[32..40]); the buffer is filled block by block, each block
/// the previous one encrypted with the continuing stream; then every pair of
/// big-endian words (i, i+1) of the buffer picks a digest word (i mod 8) and a
/// buffer word (i+1 mod the buffer's words) to swap, and the digest is
/// encrypted again with the continuing stream after each swap.
pub fn identity_hash(public: &PublicKey, scratch: &mut IdentityHashScratch) -> [u8; 64] {
    #[cfg(fuzzing)]
    {
        let _ = scratch;
        fuzzing::digest(public)
    }
    #[cfg(not(fuzzing))]
    memory_hard(public, scratch)
}

/// The memory-hard digest itself.
fn memory_hard(public: &PublicKey, scratch: &mut IdentityHashScratch) -> [u8; 64] {
    let mut digest: [u8; 64] = Sha512::digest(public.as_bytes()).into();
    let mut stream = Salsa20::new(
        digest[..32].try_into().expect("32-byte key"),
        digest[32..40].try_into().expect("8-byte nonce"),
    );

    let mem = &mut scratch.0;
    mem.resize(IDENTITY_HASH_MEMORY_BYTES, 0);
    mem.fill(0);
    // One pass of keystream over zeros gives ks[0], ks[1], ...; the chained
    // fill wants block[i] = block[i-1] ^ ks[i], i.e. a running XOR of blocks.
    stream.apply_keystream(mem);
    for start in (BLOCK_BYTES..IDENTITY_HASH_MEMORY_BYTES).step_by(BLOCK_BYTES) {
        let (done, rest) = mem.split_at_mut(start);
        let prev = &done[start - BLOCK_BYTES..];
        for (byte, p) in rest[..BLOCK_BYTES].iter_mut().zip(prev) {
            *byte ^= p;
        }
    }

    // The keystream that re-encrypts the digest does not depend on the data,
    // so draw it in batches: one call per 64 blocks instead of one per block.
    let mut keystream = [0u8; KEYSTREAM_BATCH_BYTES];
    let mut used = KEYSTREAM_BATCH_BYTES;
    let mut i = 0;
    while i < MEMORY_WORDS {
        let digest_word = (read_be_word(mem, i) % DIGEST_WORDS as u64) as usize;
        let mem_word = (read_be_word(mem, i + 1) % MEMORY_WORDS as u64) as usize;
        i += 2;
        let d = digest_word * WORD_BYTES..(digest_word + 1) * WORD_BYTES;
        let m = mem_word * WORD_BYTES..(mem_word + 1) * WORD_BYTES;
        let mut tmp = [0u8; WORD_BYTES];
        tmp.copy_from_slice(&mem[m.clone()]);
        mem[m].copy_from_slice(&digest[d.clone()]);
        digest[d].copy_from_slice(&tmp);
        if used == KEYSTREAM_BATCH_BYTES {
            keystream.fill(0);
            stream.apply_keystream(&mut keystream);
            used = 0;
        }
        for (byte, k) in digest.iter_mut().zip(&keystream[used..used + BLOCK_BYTES]) {
            *byte ^= k;
        }
        used += BLOCK_BYTES;
    }
    digest
}

fn read_be_word(mem: &[u8], word: usize) -> u64 {
    let at = word * WORD_BYTES;
    u64::from_be_bytes(mem[at..at + WORD_BYTES].try_into().expect("8 bytes"))
}

/// Fuzz builds only (`cfg(fuzzing)`, set by cargo-fuzz): the first
/// [`fuzzing::REAL_KEYS`] distinct keys a fuzz process meets (its seeds'
/// real identities, which libFuzzer runs first) get the real digest, cached;
/// later keys (mutations) a plain SHA-512. A mutated key or address fails
/// the address check under either digest (2^-40), so verdicts do not
/// change, and the fuzzer's time goes to the code under test instead of a
/// 17 ms hash per input. The hash itself is checked against ZeroTier's
/// vectors in the ordinary tests.
#[cfg(fuzzing)]
mod fuzzing {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use sha2::{Digest, Sha512};

    use super::{IdentityHashScratch, PublicKey};

    /// Distinct keys given the real digest per fuzz process.
    pub const REAL_KEYS: usize = 256;

    thread_local! {
        static REAL: RefCell<HashMap<[u8; 64], [u8; 64]>> = RefCell::new(HashMap::new());
    }

    /// The digest a fuzz build uses for `public`.
    pub fn digest(public: &PublicKey) -> [u8; 64] {
        let key = *public.as_bytes();
        REAL.with(|real| {
            let mut real = real.borrow_mut();
            if let Some(digest) = real.get(&key) {
                return *digest;
            }
            if real.len() < REAL_KEYS {
                let digest = super::memory_hard(public, &mut IdentityHashScratch::new());
                real.insert(key, digest);
                return digest;
            }
            Sha512::digest(key).into()
        })
    }
}
