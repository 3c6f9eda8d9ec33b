//! The world JSON users know from `zerotier-idtool initmoon`: what a world
//! should contain, with the key to sign it. `genmoon` and `mkworld` turn it
//! into a signed [`World`].

use crate::rng::CryptoRng;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::c25519::{KeyPair, PublicKey, SecretKey};
use crate::constants::{
    C25519_PUBLIC_KEY_LEN_BYTES, C25519_SECRET_KEY_LEN_BYTES, WORLD_MAX_ENDPOINTS_PER_ROOT,
    WORLD_MAX_ROOTS,
};
use crate::endpoint::{format_endpoint, parse_endpoint, zerotier_order};
use crate::identity::{Identity, decode_hex};
use crate::identity_hash::IdentityHashScratch;
use crate::world::{Root, World, WorldError, WorldKind};

/// Why a world JSON cannot be made into a world.
#[derive(Debug, thiserror::Error)]
pub enum WorldSpecError {
    /// Not JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A field holds something unusable.
    #[error("{field}: {problem}")]
    Field {
        /// JSON path of the field, e.g. `roots[0].identity`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The world itself cannot be made.
    #[error("{0}")]
    World(#[from] WorldError),
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> WorldSpecError {
    WorldSpecError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// One root in world JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootJson {
    /// Public identity in text form.
    pub identity: String,
    /// Endpoints as `ip/port`.
    #[serde(rename = "stableEndpoints", default)]
    pub stable_endpoints: Vec<String>,
}

/// World JSON, field for field as ZeroTier's (keys in its alphabetical order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldJson {
    /// World id in hex (a moon's is its seed root's address).
    pub id: String,
    /// Always "world".
    pub objtype: String,
    /// The roots.
    pub roots: Vec<RootJson>,
    /// Public half of the key that signs this world, hex.
    #[serde(rename = "signingKey")]
    pub signing_key: String,
    /// Secret half of that key, hex.
    #[serde(rename = "signingKey_SECRET")]
    pub signing_key_secret: String,
    /// Milliseconds since the Unix epoch; planets only (a moon is stamped when made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Public key that must sign this world's successor, hex.
    #[serde(rename = "updatesMustBeSignedBy")]
    pub updates_must_be_signed_by: String,
    /// "moon" or "planet".
    #[serde(rename = "worldType")]
    pub world_type: String,
}

/// A world JSON checked field by field: everything needed to sign a world.
#[derive(Debug)]
pub struct WorldSpec {
    /// Planet or moon.
    pub kind: WorldKind,
    /// World id.
    pub id: u64,
    /// Timestamp from the JSON, if it had one.
    pub timestamp_ms: Option<u64>,
    /// Roots, sorted as ZeroTier sorts them.
    pub roots: Vec<Root>,
    /// The signing key pair.
    pub signing_key: KeyPair,
    /// The key that must sign the successor.
    pub updates_must_be_signed_by: PublicKey,
}

impl WorldJson {
    /// A new moon JSON for a seed root, with a fresh signing key (what `initmoon` prints).
    pub fn new_moon(seed: &Identity, rng: &mut impl CryptoRng) -> Self {
        Self::new(
            WorldKind::Moon,
            seed.address().to_string(),
            None,
            std::slice::from_ref(seed),
            rng,
        )
    }

    /// A new planet JSON with a fresh signing key (what `initplanet` prints).
    pub fn new_planet(
        id: u64,
        timestamp_ms: u64,
        roots: &[Identity],
        rng: &mut impl CryptoRng,
    ) -> Self {
        Self::new(
            WorldKind::Planet,
            format!("{id:016x}"),
            Some(timestamp_ms),
            roots,
            rng,
        )
    }

    fn new(
        kind: WorldKind,
        id: String,
        timestamp: Option<u64>,
        roots: &[Identity],
        rng: &mut impl CryptoRng,
    ) -> Self {
        let key = KeyPair::generate(rng);
        let public = hex::encode(key.public().as_bytes());
        Self {
            id,
            objtype: "world".into(),
            roots: roots
                .iter()
                .map(|identity| RootJson {
                    identity: identity.to_text(false),
                    stable_endpoints: Vec::new(),
                })
                .collect(),
            signing_key: public.clone(),
            signing_key_secret: hex::encode(key.secret().as_bytes()),
            timestamp,
            updates_must_be_signed_by: public,
            world_type: kind.name().into(),
        }
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Self, WorldSpecError> {
        Ok(serde_json::from_str(text)?)
    }

    /// JSON text as ZeroTier writes it (one-space indent, keys in order).
    pub fn to_json(&self) -> String {
        to_zerotier_json(self)
    }

    /// Checks every field and returns the typed spec.
    pub fn to_spec(&self) -> Result<WorldSpec, WorldSpecError> {
        if self.objtype != "world" {
            return Err(field_error(
                "objtype",
                format!("must be \"world\", got {:?}", self.objtype),
            ));
        }
        let kind = match self.world_type.as_str() {
            "moon" => WorldKind::Moon,
            "planet" => WorldKind::Planet,
            other => {
                return Err(field_error(
                    "worldType",
                    format!("invalid worldType {other:?} (must be \"moon\" or \"planet\")"),
                ));
            }
        };
        let id = parse_world_id(&self.id)?;
        let signing_public = PublicKey::from_bytes(
            decode_hex::<C25519_PUBLIC_KEY_LEN_BYTES>(&self.signing_key, "signingKey")
                .map_err(|e| field_error("signingKey", e.to_string()))?,
        );
        let signing_secret = SecretKey::from_bytes(
            decode_hex::<C25519_SECRET_KEY_LEN_BYTES>(
                &self.signing_key_secret,
                "signingKey_SECRET",
            )
            .map_err(|e| field_error("signingKey_SECRET", e.to_string()))?,
        );
        let signing_key = KeyPair::from_secret(signing_secret);
        if signing_key.public() != &signing_public {
            return Err(field_error(
                "signingKey_SECRET",
                "is not the secret half of signingKey",
            ));
        }
        let updates_must_be_signed_by = PublicKey::from_bytes(
            decode_hex::<C25519_PUBLIC_KEY_LEN_BYTES>(
                &self.updates_must_be_signed_by,
                "updatesMustBeSignedBy",
            )
            .map_err(|e| field_error("updatesMustBeSignedBy", e.to_string()))?,
        );
        if self.roots.is_empty() {
            return Err(field_error("roots", "a world needs at least one root"));
        }
        if self.roots.len() > WORLD_MAX_ROOTS {
            return Err(field_error(
                "roots",
                format!(
                    "{} roots, at most {WORLD_MAX_ROOTS} allowed",
                    self.roots.len()
                ),
            ));
        }
        let mut scratch = IdentityHashScratch::new();
        let mut roots = Vec::with_capacity(self.roots.len());
        for (i, root) in self.roots.iter().enumerate() {
            let identity = Identity::parse_with(&root.identity, &mut scratch)
                .map_err(|e| field_error(format!("roots[{i}].identity"), e.to_string()))?;
            if identity.has_secret() {
                return Err(field_error(
                    format!("roots[{i}].identity"),
                    "contains a secret key; list the public identity (identity.public) only",
                ));
            }
            let mut endpoints: Vec<SocketAddr> = Vec::new();
            for (k, text) in root.stable_endpoints.iter().enumerate() {
                let endpoint = parse_endpoint(text).map_err(|e| {
                    field_error(format!("roots[{i}].stableEndpoints[{k}]"), e.to_string())
                })?;
                if !endpoints.contains(&endpoint) {
                    endpoints.push(endpoint);
                }
            }
            if endpoints.is_empty() {
                return Err(field_error(
                    format!("roots[{i}].stableEndpoints"),
                    "is empty: list where this root is reachable, e.g. \"203.0.113.10/9993\"",
                ));
            }
            if endpoints.len() > WORLD_MAX_ENDPOINTS_PER_ROOT {
                return Err(field_error(
                    format!("roots[{i}].stableEndpoints"),
                    format!(
                        "{} endpoints, at most {WORLD_MAX_ENDPOINTS_PER_ROOT}",
                        endpoints.len()
                    ),
                ));
            }
            endpoints.sort_by(zerotier_order);
            if roots
                .iter()
                .any(|r: &Root| r.identity.address() == identity.address())
            {
                return Err(field_error(
                    format!("roots[{i}].identity"),
                    format!("root {} is listed twice", identity.address()),
                ));
            }
            roots.push(Root {
                identity,
                endpoints,
            });
        }
        roots.sort_by(|a, b| a.identity.cmp(&b.identity));
        if kind == WorldKind::Moon && !roots.iter().any(|r| r.identity.address().to_u64() == id) {
            return Err(field_error(
                "id",
                format!(
                    "{} is not the address of any root (a moon's id is its seed root's address)",
                    self.id
                ),
            ));
        }
        Ok(WorldSpec {
            kind,
            id,
            timestamp_ms: self.timestamp,
            roots,
            signing_key,
            updates_must_be_signed_by,
        })
    }
}

impl WorldSpec {
    /// Signs the world with the given timestamp.
    pub fn sign(&self, timestamp_ms: u64) -> Result<World, WorldSpecError> {
        Ok(World::make(
            self.kind,
            self.id,
            timestamp_ms,
            self.updates_must_be_signed_by,
            self.roots.clone(),
            &self.signing_key,
        )?)
    }
}

fn parse_world_id(text: &str) -> Result<u64, WorldSpecError> {
    let bad = |why: &str| field_error("id", format!("{text:?} is invalid: {why}"));
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("must be 1 to 16 hex digits"));
    }
    match u64::from_str_radix(text, 16) {
        Ok(0) => Err(bad("must not be zero")),
        Ok(id) => Ok(id),
        Err(_) => Err(bad("must be 1 to 16 hex digits")),
    }
}

/// Describes a world as JSON for people (`showworld`): every field, and
/// whether the signature verifies with `verify_key`.
pub fn describe_world(world: &World, verify_key: &PublicKey) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{:016x}", world.id()),
        "objtype": "world",
        "worldType": world.kind().name(),
        "timestamp": world.timestamp_ms(),
        "updatesMustBeSignedBy": hex::encode(world.updates_must_be_signed_by().as_bytes()),
        "signature": hex::encode(world.signature().as_bytes()),
        "signatureVerifies": world.is_signed_by(verify_key),
        "verifiedWith": hex::encode(verify_key.as_bytes()),
        "roots": world.roots().iter().map(|r| serde_json::json!({
            "identity": r.identity.to_text(false),
            "address": r.identity.address().to_string(),
            "stableEndpoints": r.endpoints.iter().map(format_endpoint).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Serializes as ZeroTier's JSON dump does: one-space indent.
pub fn to_zerotier_json<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut ser).expect("JSON of plain data");
    String::from_utf8(out).expect("JSON is UTF-8")
}
