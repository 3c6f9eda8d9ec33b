//! Node identities: an address bound to a C25519 public key by the
//! memory-hard hash, optionally with the secret key.

use std::fmt;

use crate::rng::CryptoRng;
use std::str::FromStr;

use crate::address::{Address, AddressError};
use crate::c25519::{KeyPair, PublicKey, SecretKey, Signature};
use crate::constants::{
    ADDRESS_LEN_BYTES, C25519_PUBLIC_KEY_LEN_BYTES, C25519_SECRET_KEY_LEN_BYTES,
    IDENTITY_HASH_FIRST_BYTE_LIMIT, IDENTITY_TYPE_C25519,
};
use crate::identity_hash::{IdentityHashScratch, identity_hash};

/// Why text or bytes are not a valid identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Wrong number of `:`-separated fields.
    #[error("expected <address>:0:<public key>[:<secret key>], found {0} field(s)")]
    FieldCount(usize),
    /// The address field is malformed or reserved.
    #[error("bad address: {0}")]
    Address(#[from] AddressError),
    /// An identity type other than 0 (C25519).
    #[error("unknown identity type {0:?} (only 0, C25519, exists)")]
    UnknownType(String),
    /// A key field is not hex.
    #[error("{field} is not valid hex")]
    BadHex {
        /// Which key.
        field: &'static str,
    },
    /// A key field has an odd number of hex digits.
    #[error("{field} has an odd number of hex digits")]
    OddHexLength {
        /// Which key.
        field: &'static str,
    },
    /// A key field has the wrong length.
    #[error("{field} must be {expected} bytes, got {actual}")]
    WrongLength {
        /// Which key.
        field: &'static str,
        /// Bytes wanted.
        expected: usize,
        /// Bytes found.
        actual: usize,
    },
    /// The secret key does not belong to the public key.
    #[error("secret key does not match public key")]
    SecretDoesNotMatchPublic,
    /// The memory-hard hash of the key does not give the stated address.
    #[error("address does not match key (derived {derived})")]
    AddressMismatch {
        /// What the key hashes to, as hex.
        derived: String,
    },
    /// The key's hash fails the work requirement (first byte too large).
    #[error("key fails the identity work requirement")]
    InsufficientWork,
    /// Binary form ends early.
    #[error("truncated: needs {needed} more byte(s)")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// Binary form has an impossible secret length byte.
    #[error("secret key length byte must be 0 or 64, got {0}")]
    BadSecretLength(u8),
}

/// An identity shared between tables (a root holds thousands of peers'):
/// triomphe's `Arc` keeps no weak count, so with the identity it takes 88
/// bytes, one 96-byte heap chunk where std's `Arc` took 112.
pub type SharedIdentity = triomphe::Arc<Identity>;

/// A validated identity: its address is the one its public key hashes to.
#[derive(Clone)]
pub struct Identity {
    address: Address,
    public: PublicKey,
    /// Boxed: only our own identity has one, and a root holds thousands of
    /// others' (in peers and in the verified-identities table).
    secret: Option<Box<SecretKey>>,
}

impl Identity {
    /// Generates a new identity, searching X25519 keys until one passes the
    /// work requirement and gives a non-reserved address.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut scratch = IdentityHashScratch::new();
        let mut pair = KeyPair::generate(rng);
        loop {
            pair = pair.with_fresh_x25519(rng);
            if let Ok(address) = address_for(pair.public(), &mut scratch) {
                return Self {
                    address,
                    public: *pair.public(),
                    secret: Some(Box::new(pair.secret().clone())),
                };
            }
        }
    }

    /// Builds an identity from a public key, checking that it hashes to `address`.
    pub fn from_public(
        address: Address,
        public: PublicKey,
        scratch: &mut IdentityHashScratch,
    ) -> Result<Self, IdentityError> {
        let derived = address_for(&public, scratch)?;
        if derived != address {
            return Err(IdentityError::AddressMismatch {
                derived: derived.to_string(),
            });
        }
        Ok(Self {
            address,
            public,
            secret: None,
        })
    }

    /// An identity this node verified itself before (its own record, kept
    /// on disk across a restart), rebuilt without the memory-hard hash.
    /// Never for an identity that came from anywhere else.
    pub fn previously_verified(address: Address, public: PublicKey) -> Self {
        Self {
            address,
            public,
            secret: None,
        }
    }

    /// Adds the secret key, checking that it belongs to the public key.
    pub fn with_secret(mut self, secret: SecretKey) -> Result<Self, IdentityError> {
        let pair = KeyPair::from_secret(secret);
        if pair.public() != &self.public {
            return Err(IdentityError::SecretDoesNotMatchPublic);
        }
        self.secret = Some(Box::new(pair.secret().clone()));
        Ok(self)
    }

    /// Parses the text form with a caller-supplied scratch buffer.
    pub fn parse_with(
        text: &str,
        scratch: &mut IdentityHashScratch,
    ) -> Result<Self, IdentityError> {
        let fields: Vec<&str> = text.trim().split(':').collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(IdentityError::FieldCount(fields.len()));
        }
        let address: Address = fields[0].parse()?;
        if fields[1] != "0" {
            return Err(IdentityError::UnknownType(fields[1].to_string()));
        }
        let public = PublicKey::from_bytes(decode_hex::<C25519_PUBLIC_KEY_LEN_BYTES>(
            fields[2],
            "public key",
        )?);
        // Check the cheap things before the memory-hard hash.
        let secret = match fields.get(3) {
            Some(hex) => Some(SecretKey::from_bytes(decode_hex::<
                C25519_SECRET_KEY_LEN_BYTES,
            >(hex, "secret key")?)),
            None => None,
        };
        let identity = Self::from_public(address, public, scratch)?;
        match secret {
            Some(secret) => identity.with_secret(secret),
            None => Ok(identity),
        }
    }

    /// Decodes the binary form from the front of `bytes`; returns the
    /// identity and how many bytes it took.
    pub fn decode_with(
        bytes: &[u8],
        scratch: &mut IdentityHashScratch,
    ) -> Result<(Self, usize), IdentityError> {
        let (unchecked, used) = UncheckedIdentity::decode(bytes)?;
        Ok((unchecked.check(scratch)?, used))
    }
}

/// A binary identity whose fields are well-formed but whose address is not
/// yet checked against its key: the check costs a memory-hard hash, so
/// callers can do cheaper checks (a signature, say) first.
#[derive(Clone)]
pub(crate) struct UncheckedIdentity {
    pub(crate) address: Address,
    pub(crate) public: PublicKey,
    pub(crate) secret: Option<SecretKey>,
}

impl fmt::Debug for UncheckedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UncheckedIdentity({})", self.address)
    }
}

impl UncheckedIdentity {
    /// Decodes the fields from the front of `bytes`; returns them and the length used.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Self, usize), IdentityError> {
        let fixed = ADDRESS_LEN_BYTES + 1 + C25519_PUBLIC_KEY_LEN_BYTES + 1;
        if bytes.len() < fixed {
            return Err(IdentityError::Truncated {
                needed: fixed - bytes.len(),
            });
        }
        let address = Address::from_bytes(bytes[..ADDRESS_LEN_BYTES].try_into().expect("5"))?;
        let kind = bytes[ADDRESS_LEN_BYTES];
        if kind != IDENTITY_TYPE_C25519 {
            return Err(IdentityError::UnknownType(kind.to_string()));
        }
        let key_at = ADDRESS_LEN_BYTES + 1;
        let public = PublicKey::from_bytes(
            bytes[key_at..key_at + C25519_PUBLIC_KEY_LEN_BYTES]
                .try_into()
                .expect("64"),
        );
        let secret_len = bytes[fixed - 1];
        let secret = match secret_len as usize {
            0 => None,
            C25519_SECRET_KEY_LEN_BYTES => {
                let end = fixed + C25519_SECRET_KEY_LEN_BYTES;
                if bytes.len() < end {
                    return Err(IdentityError::Truncated {
                        needed: end - bytes.len(),
                    });
                }
                Some(SecretKey::from_bytes(
                    bytes[fixed..end].try_into().expect("64"),
                ))
            }
            _ => return Err(IdentityError::BadSecretLength(secret_len)),
        };
        let used = fixed + secret_len as usize;
        Ok((
            Self {
                address,
                public,
                secret,
            },
            used,
        ))
    }

    /// Checks the address against the key (and the secret against the public key).
    pub(crate) fn check(
        self,
        scratch: &mut IdentityHashScratch,
    ) -> Result<Identity, IdentityError> {
        let identity = Identity::from_public(self.address, self.public, scratch)?;
        match self.secret {
            Some(secret) => identity.with_secret(secret),
            None => Ok(identity),
        }
    }
}

impl Identity {
    /// Appends the binary form (with the secret key only if `include_secret`).
    pub fn encode_into(&self, out: &mut Vec<u8>, include_secret: bool) {
        out.extend_from_slice(&self.address.to_bytes());
        out.push(IDENTITY_TYPE_C25519);
        out.extend_from_slice(self.public.as_bytes());
        match (&self.secret, include_secret) {
            (Some(secret), true) => {
                out.push(C25519_SECRET_KEY_LEN_BYTES as u8);
                out.extend_from_slice(secret.as_bytes());
            }
            _ => out.push(0),
        }
    }

    /// The text form, with the secret key only if `include_secret` and present.
    pub fn to_text(&self, include_secret: bool) -> String {
        let mut text = format!("{}:0:{}", self.address, hex::encode(self.public.as_bytes()));
        if let (Some(secret), true) = (&self.secret, include_secret) {
            text.push(':');
            text.push_str(&hex::encode(secret.as_bytes()));
        }
        text
    }

    /// The address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key pair, if this identity holds its secret key.
    pub fn key_pair(&self) -> Option<KeyPair> {
        self.secret.as_deref().cloned().map(KeyPair::from_secret)
    }

    /// Whether the secret key is held.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The same identity without its secret key.
    pub fn to_public(&self) -> Self {
        Self {
            address: self.address,
            public: self.public,
            secret: None,
        }
    }

    /// Signs `message`; `None` without the secret key.
    pub fn sign(&self, message: &[u8]) -> Option<Signature> {
        self.key_pair().map(|pair| pair.sign(message))
    }

    /// Checks a signature made by this identity.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.public.verify(message, signature)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_with(text, &mut IdentityHashScratch::new())
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address && self.public == other.public
    }
}

impl Eq for Identity {}

impl PartialOrd for Identity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Ordered by address, then public key (as ZeroTier sorts a world's roots).
impl Ord for Identity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.address, self.public.as_bytes()).cmp(&(other.address, other.public.as_bytes()))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.to_text(false))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(false))
    }
}

/// The address a public key hashes to, if the key passes the work requirement.
pub fn address_for(
    public: &PublicKey,
    scratch: &mut IdentityHashScratch,
) -> Result<Address, IdentityError> {
    let digest = identity_hash(public, scratch);
    if digest[0] >= IDENTITY_HASH_FIRST_BYTE_LIMIT {
        return Err(IdentityError::InsufficientWork);
    }
    Ok(Address::from_bytes(digest[59..64].try_into().expect("5"))?)
}

/// Decodes exactly `N` bytes of hex.
pub fn decode_hex<const N: usize>(
    text: &str,
    field: &'static str,
) -> Result<[u8; N], IdentityError> {
    // No trimming here: whitespace inside a field is an error, as in ZeroTier.
    let bytes = hex::decode(text).map_err(|e| match e {
        hex::FromHexError::OddLength => IdentityError::OddHexLength { field },
        _ => IdentityError::BadHex { field },
    })?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| IdentityError::WrongLength {
        field,
        expected: N,
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_round_trips_text_and_binary() {
        let id = Identity::generate(&mut crate::rng::os_rng());
        assert!(id.has_secret());
        let mut scratch = IdentityHashScratch::new();
        let back = Identity::parse_with(&id.to_text(true), &mut scratch).unwrap();
        assert_eq!(back, id);
        assert!(back.has_secret());
        let mut bin = Vec::new();
        id.encode_into(&mut bin, true);
        assert_eq!(bin.len(), 5 + 1 + 64 + 1 + 64);
        let (dec, used) = Identity::decode_with(&bin, &mut scratch).unwrap();
        assert_eq!((dec, used), (id.clone(), bin.len()));
        let sig = id.sign(b"m").unwrap();
        assert!(id.to_public().verify(b"m", &sig));
    }

    #[test]
    fn foreign_secret_is_refused() {
        let a = Identity::generate(&mut crate::rng::os_rng());
        let b = Identity::generate(&mut crate::rng::os_rng());
        let text = format!(
            "{}:{}",
            a.to_text(false),
            hex::encode(b.key_pair().unwrap().secret().as_bytes())
        );
        assert_eq!(
            text.parse::<Identity>().err(),
            Some(IdentityError::SecretDoesNotMatchPublic)
        );
    }
}
