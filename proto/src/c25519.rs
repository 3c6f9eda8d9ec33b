//! ZeroTier's "C25519" keys: an X25519 key for agreement and an Ed25519 key
//! for signatures, carried together as 64-byte public and secret keys.

use ed25519_dalek::Signer;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::rng::CryptoRng;

use crate::constants::{
    C25519_PUBLIC_KEY_LEN_BYTES, C25519_SECRET_KEY_LEN_BYTES, C25519_SIGNATURE_LEN_BYTES,
};

/// Why a key agreement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    /// The peer's X25519 key is of low order: the shared secret would be known to anyone.
    #[error("peer key is non-contributory (low order)")]
    NonContributory,
}

/// A 64-byte C25519 public key: X25519 public key, then Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; C25519_PUBLIC_KEY_LEN_BYTES]);

/// A 64-byte C25519 secret key: X25519 secret, then Ed25519 seed. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; C25519_SECRET_KEY_LEN_BYTES]);

/// A 96-byte signature: Ed25519 signature of the first 32 bytes of
/// SHA-512(message), followed by those 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; C25519_SIGNATURE_LEN_BYTES]);

/// An agreement's X25519 shared secret; its key material is the SHA-512
/// of it, made when used (32 bytes kept instead of 64: a root keeps one
/// per peer and uses it only for handshakes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedKey([u8; 32]);

/// A public key with its secret key.
#[derive(Clone)]
pub struct KeyPair {
    public: PublicKey,
    secret: SecretKey,
    /// The Ed25519 signing key, made on first use and kept: making one
    /// derives its public half (a scalar multiplication, as costly as the
    /// signature itself), and a controller signs a certificate per member.
    signer: std::sync::OnceLock<ed25519_dalek::SigningKey>,
}

impl PublicKey {
    /// Wraps 64 bytes as a public key.
    pub fn from_bytes(bytes: [u8; C25519_PUBLIC_KEY_LEN_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; C25519_PUBLIC_KEY_LEN_BYTES] {
        &self.0
    }

    /// The X25519 half.
    pub fn x25519(&self) -> [u8; 32] {
        self.0[..32].try_into().expect("32 bytes")
    }

    /// The Ed25519 half.
    pub fn ed25519(&self) -> [u8; 32] {
        self.0[32..].try_into().expect("32 bytes")
    }

    /// Checks `signature` over `message` against this key.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let digest = message_digest(message);
        #[cfg(fuzzing)]
        if fuzz_mode::on() {
            return signature.0 == fuzz_mode::signature(&self.ed25519(), &digest);
        }
        // The trailing 32 bytes must be the digest itself; compare in constant time.
        let tail_ok = constant_time_eq(&signature.0[64..], &digest[..32]);
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.ed25519()) else {
            return false;
        };
        let sig =
            ed25519_dalek::Signature::from_bytes(signature.0[..64].try_into().expect("64 bytes"));
        let sig_ok = key.verify_strict(&digest[..32], &sig).is_ok();
        tail_ok & sig_ok
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl SecretKey {
    /// Wraps 64 bytes as a secret key.
    pub fn from_bytes(bytes: [u8; C25519_SECRET_KEY_LEN_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; C25519_SECRET_KEY_LEN_BYTES] {
        &self.0
    }

    fn x25519(&self) -> x25519_dalek::StaticSecret {
        let mut half: [u8; 32] = self.0[..32].try_into().expect("32 bytes");
        let secret = x25519_dalek::StaticSecret::from(half);
        half.zeroize();
        secret
    }

    fn ed25519(&self) -> ed25519_dalek::SigningKey {
        let mut seed: [u8; 32] = self.0[32..].try_into().expect("32 bytes");
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.zeroize();
        key
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl Signature {
    /// Wraps 96 bytes as a signature.
    pub fn from_bytes(bytes: [u8; C25519_SIGNATURE_LEN_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 96 bytes.
    pub fn as_bytes(&self) -> &[u8; C25519_SIGNATURE_LEN_BYTES] {
        &self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl SharedKey {
    /// The 64 bytes of key material: SHA-512 of the shared secret.
    pub fn material(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(Sha512::digest(self.0).into())
    }

    /// The key of packets armored under this agreement itself (HELLO, OK,
    /// ERROR): the first 32 bytes of its key material.
    pub fn packet_key(&self) -> crate::armor::PacketKey {
        let material = self.material();
        crate::armor::PacketKey::from_bytes(material[..32].try_into().expect("32 bytes"))
    }
}

impl KeyPair {
    /// Draws a fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut secret = [0u8; C25519_SECRET_KEY_LEN_BYTES];
        rng.fill_bytes(&mut secret);
        let pair = Self::from_secret(SecretKey::from_bytes(secret));
        secret.zeroize();
        pair
    }

    /// Derives the public key from a secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        #[cfg(fuzzing)]
        if fuzz_mode::on() {
            let public = PublicKey(fuzz_mode::public_of(&secret));
            return Self {
                public,
                secret,
                signer: std::sync::OnceLock::new(),
            };
        }
        Self::derive(secret)
    }

    /// The real derivation (two scalar multiplications).
    fn derive(secret: SecretKey) -> Self {
        let mut public = [0u8; C25519_PUBLIC_KEY_LEN_BYTES];
        public[..32].copy_from_slice(x25519_dalek::PublicKey::from(&secret.x25519()).as_bytes());
        let signer = secret.ed25519();
        public[32..].copy_from_slice(signer.verifying_key().as_bytes());
        Self {
            public: PublicKey(public),
            secret,
            signer: signer.into(),
        }
    }

    /// Keeps the Ed25519 half and replaces the X25519 half with a fresh one;
    /// identity generation searches over this half only, as ZeroTier does.
    pub fn with_fresh_x25519(&self, rng: &mut impl CryptoRng) -> Self {
        let mut secret = self.secret.0;
        rng.fill_bytes(&mut secret[..32]);
        let pair = Self::from_secret(SecretKey(secret));
        secret.zeroize();
        pair
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The secret key.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Signs `message` (deterministic, as Ed25519 is).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let digest = message_digest(message);
        #[cfg(fuzzing)]
        if fuzz_mode::on() {
            return Signature(fuzz_mode::signature(&self.public.ed25519(), &digest));
        }
        let ed = self
            .signer
            .get_or_init(|| self.secret.ed25519())
            .sign(&digest[..32]);
        let mut out = [0u8; C25519_SIGNATURE_LEN_BYTES];
        out[..64].copy_from_slice(&ed.to_bytes());
        out[64..].copy_from_slice(&digest[..32]);
        Signature(out)
    }

    /// X25519 with the peer's key, then SHA-512 of the shared secret.
    pub fn agree(&self, peer: &PublicKey) -> Result<SharedKey, AgreementError> {
        #[cfg(fuzzing)]
        if fuzz_mode::on() {
            let shared = fuzz_mode::shared(&self.public.x25519(), &peer.x25519());
            return Ok(SharedKey(shared));
        }
        let shared = self
            .secret
            .x25519()
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.x25519()));
        if !shared.was_contributory() {
            return Err(AgreementError::NonContributory);
        }
        Ok(SharedKey(*shared.as_bytes()))
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn message_digest(message: &[u8]) -> [u8; 64] {
    Sha512::digest(message).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let pair = KeyPair::generate(&mut crate::rng::os_rng());
        let sig = pair.sign(b"hello");
        assert!(pair.public().verify(b"hello", &sig));
        assert!(!pair.public().verify(b"hellp", &sig));
        let mut bad = *sig.as_bytes();
        bad[95] ^= 1;
        assert!(!pair.public().verify(b"hello", &Signature::from_bytes(bad)));
        let mut bad = *sig.as_bytes();
        bad[3] ^= 1;
        assert!(!pair.public().verify(b"hello", &Signature::from_bytes(bad)));
        let other = KeyPair::generate(&mut crate::rng::os_rng());
        assert!(!other.public().verify(b"hello", &sig));
    }

    #[test]
    fn agreement_is_symmetric() {
        let a = KeyPair::generate(&mut crate::rng::os_rng());
        let b = KeyPair::generate(&mut crate::rng::os_rng());
        assert_eq!(
            *a.agree(b.public()).unwrap().material(),
            *b.agree(a.public()).unwrap().material()
        );
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let a = KeyPair::generate(&mut crate::rng::os_rng());
        // The identity point (all zero) and a point of order 8 are non-contributory.
        let mut zero = [0u8; 64];
        zero[32..].copy_from_slice(&a.public().ed25519());
        assert_eq!(
            a.agree(&PublicKey::from_bytes(zero)).err(),
            Some(AgreementError::NonContributory)
        );
        let mut order8 = zero;
        order8[..32].copy_from_slice(
            &hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .unwrap(),
        );
        assert_eq!(
            a.agree(&PublicKey::from_bytes(order8)).err(),
            Some(AgreementError::NonContributory)
        );
    }
}

/// Fuzz builds only (`cfg(fuzzing)`): cheap, deterministic stand-ins for
/// X25519 and Ed25519, off unless a fuzz target turns them on (as BoringSSL's
/// fuzzer mode does), so a target that runs whole handshakes per input
/// (`node_datagram`) spends its time in the protocol, not in instrumented
/// curve arithmetic. Agreement hashes the two public keys (each side knows
/// both, so both sides agree); signatures hash the signer's public key and
/// the message; public keys of secret keys are derived for real, once per
/// distinct secret (cached), so fixed identities keep their real keys.
#[cfg(fuzzing)]
pub mod fuzz_mode {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sha2::{Digest, Sha512};

    use super::{C25519_PUBLIC_KEY_LEN_BYTES, C25519_SIGNATURE_LEN_BYTES, KeyPair, SecretKey};

    static ON: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static PUBLICS: RefCell<HashMap<[u8; 64], [u8; 64]>> = RefCell::new(HashMap::new());
    }

    /// Turns the stand-ins on for this process.
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// Whether they are on.
    pub(crate) fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// The public key of `secret`, derived for real once and cached.
    pub(crate) fn public_of(secret: &SecretKey) -> [u8; C25519_PUBLIC_KEY_LEN_BYTES] {
        let key = secret.0;
        PUBLICS.with(|p| {
            *p.borrow_mut()
                .entry(key)
                .or_insert_with(|| KeyPair::derive(SecretKey(key)).public.0)
        })
    }

    /// The stand-in for a Diffie-Hellman result between two public keys.
    pub(crate) fn shared(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha512::new();
        h.update(b"fuzz dh");
        h.update(lo);
        h.update(hi);
        let digest: [u8; 64] = h.finalize().into();
        digest[..32].try_into().expect("32 bytes")
    }

    /// The stand-in signature by `ed_public` over a message digest.
    pub(crate) fn signature(
        ed_public: &[u8; 32],
        digest: &[u8; 64],
    ) -> [u8; C25519_SIGNATURE_LEN_BYTES] {
        let mut h = Sha512::new();
        h.update(b"fuzz sig");
        h.update(ed_public);
        h.update(&digest[..32]);
        let mut out = [0u8; C25519_SIGNATURE_LEN_BYTES];
        out[..64].copy_from_slice(&h.finalize());
        out[64..].copy_from_slice(&digest[..32]);
        out
    }
}
