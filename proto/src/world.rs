//! World files: the signed list of root servers that a planet or a moon is.

use std::net::SocketAddr;

use crate::c25519::{KeyPair, PublicKey, Signature};
use crate::constants::{
    C25519_PUBLIC_KEY_LEN_BYTES, C25519_SIGNATURE_LEN_BYTES, WORLD_MAX_ENDPOINTS_PER_ROOT,
    WORLD_MAX_ROOTS, WORLD_MAX_SERIALIZED_LEN_BYTES, WORLD_SIGNED_PREFIX, WORLD_SIGNED_SUFFIX,
    WORLD_TYPE_MOON, WORLD_TYPE_PLANET,
};
use crate::endpoint::{EndpointError, decode_endpoint, encode_endpoint};
use crate::identity::{Identity, IdentityError, UncheckedIdentity};
use crate::identity_hash::IdentityHashScratch;

/// Planet or moon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorldKind {
    /// The one world every node holds (type byte 1).
    Planet,
    /// A user-run world a node orbits (type byte 127).
    Moon,
}

impl WorldKind {
    /// The type byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Planet => WORLD_TYPE_PLANET,
            Self::Moon => WORLD_TYPE_MOON,
        }
    }

    /// Lower-case name, as in world JSON's `worldType`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Planet => "planet",
            Self::Moon => "moon",
        }
    }
}

/// One root server: its identity and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The root's public identity.
    pub identity: Identity,
    /// Addresses the root is reachable at.
    pub endpoints: Vec<SocketAddr>,
}

/// Why bytes are not a world.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// Ends before a field is complete.
    #[error("truncated: {field} needs {needed} more byte(s)")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the end of the world.
    #[error("{0} trailing byte(s) after the end of the world")]
    TrailingBytes(usize),
    /// Larger than any world can be.
    #[error("{0} bytes is larger than the {max} bytes a world may have", max = WORLD_MAX_SERIALIZED_LEN_BYTES)]
    TooLarge(usize),
    /// A type byte other than 1 (planet) or 127 (moon).
    #[error("unknown world type byte {0} (1 is a planet, 127 a moon)")]
    UnknownType(u8),
    /// World id 0.
    #[error("world id must not be zero")]
    ZeroId,
    /// More roots than a world may list.
    #[error("{0} roots, more than the {max} a world may list", max = WORLD_MAX_ROOTS)]
    TooManyRoots(usize),
    /// More endpoints than one root may list.
    #[error("root {root} lists {count} endpoints, more than {max}", max = WORLD_MAX_ENDPOINTS_PER_ROOT)]
    TooManyEndpoints {
        /// Index of the root.
        root: usize,
        /// Endpoints listed.
        count: usize,
    },
    /// A root's identity is malformed or does not validate.
    #[error("root {root} identity: {error}")]
    RootIdentity {
        /// Index of the root.
        root: usize,
        /// What is wrong with it.
        error: IdentityError,
    },
    /// A root's identity carries a secret key, which a world must never publish.
    #[error("root {0} identity carries a secret key; a world must list public identities only")]
    RootSecretPublished(usize),
    /// A root endpoint is malformed.
    #[error("root {root} endpoint {index}: {error}")]
    Endpoint {
        /// Index of the root.
        root: usize,
        /// Index of the endpoint.
        index: usize,
        /// What is wrong with it.
        error: EndpointError,
    },
}

/// Why a held world refuses an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefusal {
    /// Not the same world.
    #[error("world id {offered:016x} is not the held world's {held:016x}")]
    DifferentId {
        /// Held world's id.
        held: u64,
        /// Update's id.
        offered: u64,
    },
    /// A planet offered for a moon, or the reverse.
    #[error("world type {offered} is not the held world's {held}")]
    DifferentKind {
        /// Held world's type.
        held: &'static str,
        /// Update's type.
        offered: &'static str,
    },
    /// Not strictly newer.
    #[error("timestamp {offered} is not newer than the held world's {held}")]
    NotNewer {
        /// Held world's timestamp.
        held: u64,
        /// Update's timestamp.
        offered: u64,
    },
    /// Not signed by the held world's `updatesMustBeSignedBy` key.
    #[error("not signed by the key the held world names for updates")]
    BadSignature,
}

/// Why a world offered as an update was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldUpdateError {
    /// The bytes are not a world.
    #[error("malformed world: {0}")]
    Malformed(#[from] WorldError),
    /// A world, but not a valid update of the held one.
    #[error("update refused: {0}")]
    Refused(#[from] UpdateRefusal),
}

/// A decoded world. Decoding checks structure and root identities; the
/// signature is checked separately because which key must have made it
/// depends on the world held before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    kind: WorldKind,
    id: u64,
    timestamp_ms: u64,
    updates_must_be_signed_by: PublicKey,
    signature: Signature,
    roots: Vec<Root>,
    /// A moon's trailing dictionary, kept verbatim (ZeroTier writes it empty).
    moon_dictionary: Vec<u8>,
}

impl World {
    /// Makes and signs a world with `signing_key`.
    pub fn make(
        kind: WorldKind,
        id: u64,
        timestamp_ms: u64,
        updates_must_be_signed_by: PublicKey,
        roots: Vec<Root>,
        signing_key: &KeyPair,
    ) -> Result<Self, WorldError> {
        if id == 0 {
            return Err(WorldError::ZeroId);
        }
        if roots.len() > WORLD_MAX_ROOTS {
            return Err(WorldError::TooManyRoots(roots.len()));
        }
        for (index, root) in roots.iter().enumerate() {
            if root.endpoints.len() > WORLD_MAX_ENDPOINTS_PER_ROOT {
                return Err(WorldError::TooManyEndpoints {
                    root: index,
                    count: root.endpoints.len(),
                });
            }
        }
        let mut world = Self {
            kind,
            id,
            timestamp_ms,
            updates_must_be_signed_by,
            signature: Signature::from_bytes([0; C25519_SIGNATURE_LEN_BYTES]),
            roots: roots
                .into_iter()
                .map(|r| Root {
                    identity: r.identity.to_public(),
                    endpoints: r.endpoints,
                })
                .collect(),
            moon_dictionary: Vec::new(),
        };
        world.signature = signing_key.sign(&world.signed_bytes());
        Ok(world)
    }

    /// The id of an encoded world (after its kind byte), read without
    /// decoding the rest, so an update can be matched to the world it would
    /// replace before any signature work.
    pub fn peek_id(bytes: &[u8]) -> Option<u64> {
        bytes
            .get(1..9)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// Decodes a whole world file; refuses anything malformed or trailing.
    pub fn decode(bytes: &[u8]) -> Result<Self, WorldError> {
        Self::decode_with(bytes, &mut IdentityHashScratch::new())
    }

    /// Decodes with a caller-supplied scratch buffer for identity checks.
    pub fn decode_with(
        bytes: &[u8],
        scratch: &mut IdentityHashScratch,
    ) -> Result<Self, WorldError> {
        let (header, roots) = Self::decode_unchecked(bytes)?;
        header.with_checked_roots(roots, scratch)
    }

    /// Decodes a world offered as an update of this one. The cheap checks
    /// (id, type, timestamp, signature) come before the memory-hard check of
    /// each root identity, so a stream of forged worlds costs little.
    pub fn decode_update(
        &self,
        bytes: &[u8],
        scratch: &mut IdentityHashScratch,
    ) -> Result<Self, WorldUpdateError> {
        let (header, roots) = Self::decode_unchecked(bytes)?;
        self.check_update_header(&header)?;
        // The input re-encodes byte for byte, so its signed bytes are the input
        // with the signature cut out, framed.
        let sig_at = 1 + 8 + 8 + C25519_PUBLIC_KEY_LEN_BYTES;
        let mut signed = Vec::with_capacity(bytes.len() + 16);
        signed.extend_from_slice(&WORLD_SIGNED_PREFIX);
        signed.extend_from_slice(&bytes[..sig_at]);
        signed.extend_from_slice(&bytes[sig_at + C25519_SIGNATURE_LEN_BYTES..]);
        signed.extend_from_slice(&WORLD_SIGNED_SUFFIX);
        if !self
            .updates_must_be_signed_by
            .verify(&signed, &header.signature)
        {
            return Err(UpdateRefusal::BadSignature.into());
        }
        Ok(header.with_checked_roots(roots, scratch)?)
    }

    fn with_checked_roots(
        mut self,
        roots: Vec<(UncheckedIdentity, Vec<SocketAddr>)>,
        scratch: &mut IdentityHashScratch,
    ) -> Result<Self, WorldError> {
        for (root, (identity, endpoints)) in roots.into_iter().enumerate() {
            let identity = identity
                .check(scratch)
                .map_err(|error| WorldError::RootIdentity { root, error })?;
            self.roots.push(Root {
                identity,
                endpoints,
            });
        }
        Ok(self)
    }

    /// Decodes every field; root identities are returned unchecked, and the
    /// returned world has no roots until they are checked.
    #[allow(clippy::type_complexity)]
    fn decode_unchecked(
        bytes: &[u8],
    ) -> Result<(Self, Vec<(UncheckedIdentity, Vec<SocketAddr>)>), WorldError> {
        if bytes.len() > WORLD_MAX_SERIALIZED_LEN_BYTES {
            return Err(WorldError::TooLarge(bytes.len()));
        }
        let mut r = Reader { bytes, at: 0 };
        let kind = match r.u8("type")? {
            WORLD_TYPE_PLANET => WorldKind::Planet,
            WORLD_TYPE_MOON => WorldKind::Moon,
            other => return Err(WorldError::UnknownType(other)),
        };
        let id = r.u64("id")?;
        if id == 0 {
            return Err(WorldError::ZeroId);
        }
        let timestamp_ms = r.u64("timestamp")?;
        let updates_must_be_signed_by = PublicKey::from_bytes(
            r.take("updatesMustBeSignedBy", C25519_PUBLIC_KEY_LEN_BYTES)?
                .try_into()
                .expect("64"),
        );
        let signature = Signature::from_bytes(
            r.take("signature", C25519_SIGNATURE_LEN_BYTES)?
                .try_into()
                .expect("96"),
        );
        let root_count = r.u8("root count")? as usize;
        if root_count > WORLD_MAX_ROOTS {
            return Err(WorldError::TooManyRoots(root_count));
        }
        let mut roots = Vec::with_capacity(root_count);
        for root in 0..root_count {
            let (identity, used) =
                UncheckedIdentity::decode(&r.bytes[r.at..]).map_err(|error| match error {
                    IdentityError::Truncated { needed } => WorldError::Truncated {
                        field: "root identity",
                        needed,
                    },
                    error => WorldError::RootIdentity { root, error },
                })?;
            if identity.secret.is_some() {
                return Err(WorldError::RootSecretPublished(root));
            }
            r.at += used;
            let count = r.u8("endpoint count")? as usize;
            if count > WORLD_MAX_ENDPOINTS_PER_ROOT {
                return Err(WorldError::TooManyEndpoints { root, count });
            }
            let mut endpoints = Vec::with_capacity(count);
            for index in 0..count {
                let (addr, used) =
                    decode_endpoint(&r.bytes[r.at..]).map_err(|error| match error {
                        EndpointError::Truncated { needed } => WorldError::Truncated {
                            field: "endpoint",
                            needed,
                        },
                        error => WorldError::Endpoint { root, index, error },
                    })?;
                r.at += used;
                endpoints.push(addr);
            }
            roots.push((identity, endpoints));
        }
        let moon_dictionary = match kind {
            WorldKind::Moon => {
                let len = r.u16("dictionary length")? as usize;
                r.take("dictionary", len)?.to_vec()
            }
            WorldKind::Planet => Vec::new(),
        };
        if r.at != bytes.len() {
            return Err(WorldError::TrailingBytes(bytes.len() - r.at));
        }
        let header = Self {
            kind,
            id,
            timestamp_ms,
            updates_must_be_signed_by,
            signature,
            roots: Vec::with_capacity(roots.len()),
            moon_dictionary,
        };
        Ok((header, roots))
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.serialize(false)
    }

    /// The bytes the signature covers: the serialization without the
    /// signature, framed by eight 0x7f bytes before and eight 0xf7 after.
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.serialize(true)
    }

    fn serialize(&self, for_signing: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        if for_signing {
            out.extend_from_slice(&WORLD_SIGNED_PREFIX);
        }
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(self.updates_must_be_signed_by.as_bytes());
        if !for_signing {
            out.extend_from_slice(self.signature.as_bytes());
        }
        out.push(self.roots.len() as u8);
        for root in &self.roots {
            root.identity.encode_into(&mut out, false);
            out.push(root.endpoints.len() as u8);
            for endpoint in &root.endpoints {
                encode_endpoint(endpoint, &mut out);
            }
        }
        if self.kind == WorldKind::Moon {
            out.extend_from_slice(&(self.moon_dictionary.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.moon_dictionary);
        }
        if for_signing {
            out.extend_from_slice(&WORLD_SIGNED_SUFFIX);
        }
        out
    }

    /// Whether the signature verifies with `key`.
    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        key.verify(&self.signed_bytes(), &self.signature)
    }

    /// Whether the signature verifies with the world's own `updatesMustBeSignedBy`
    /// key (true of every world not made during a signing-key rotation).
    pub fn is_self_signed(&self) -> bool {
        self.is_signed_by(&self.updates_must_be_signed_by)
    }

    /// Checks whether `update` may replace this world: same id and type,
    /// strictly newer, and signed with this world's `updatesMustBeSignedBy` key.
    pub fn check_update(&self, update: &World) -> Result<(), UpdateRefusal> {
        self.check_update_header(update)?;
        if !update.is_signed_by(&self.updates_must_be_signed_by) {
            return Err(UpdateRefusal::BadSignature);
        }
        Ok(())
    }

    fn check_update_header(&self, update: &World) -> Result<(), UpdateRefusal> {
        if update.id != self.id {
            return Err(UpdateRefusal::DifferentId {
                held: self.id,
                offered: update.id,
            });
        }
        if update.kind != self.kind {
            return Err(UpdateRefusal::DifferentKind {
                held: self.kind.name(),
                offered: update.kind.name(),
            });
        }
        if update.timestamp_ms <= self.timestamp_ms {
            return Err(UpdateRefusal::NotNewer {
                held: self.timestamp_ms,
                offered: update.timestamp_ms,
            });
        }
        Ok(())
    }

    /// Planet or moon.
    pub fn kind(&self) -> WorldKind {
        self.kind
    }

    /// The world id (a moon's is its seed root's address).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When it was made, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The key that must sign this world's successor.
    pub fn updates_must_be_signed_by(&self) -> &PublicKey {
        &self.updates_must_be_signed_by
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The roots.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The file name ZeroTier uses for a moon: the id as 16 hex digits.
    pub fn moon_file_name(&self) -> String {
        format!("{:016x}.moon", self.id)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], WorldError> {
        let available = self.bytes.len() - self.at;
        if available < len {
            return Err(WorldError::Truncated {
                field,
                needed: len - available,
            });
        }
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WorldError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WorldError> {
        Ok(u16::from_be_bytes(
            self.take(field, 2)?.try_into().expect("2"),
        ))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WorldError> {
        Ok(u64::from_be_bytes(
            self.take(field, 8)?.try_into().expect("8"),
        ))
    }
}
