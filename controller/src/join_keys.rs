//! Join keys (Headscale's pre-auth keys): an admin creates a key for a
//! network; a node that presents it (`vnet-cli join <nwid> --key <key>`)
//! is authorized at first contact. A key is `vnk_<id>_<secret>`: the id
//! (8 hex digits) names it in lists and logs, the secret (32 hex digits,
//! 128 random bits) is shown once, at creation, and stored only as its
//! SHA-256. A key is single-use unless reusable, may expire, may be
//! revoked, and may make its members ephemeral (removed once offline).

use std::fmt;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vnet_node::core::address::Address;

/// Most join keys one network keeps (revoked and used ones included;
/// deleting the network drops them).
pub const MAX_JOIN_KEYS_PER_NETWORK: usize = 256;
/// Most members one reusable key records as having used it (later uses
/// still authorize; the list shows the first ones).
pub const MAX_USES_RECORDED: usize = 1_000;
/// Prefix of every join key.
const KEY_PREFIX: &str = "vnk_";

/// What a new key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// May authorize any number of members (else one).
    pub reusable: bool,
    /// Members it authorizes are removed when offline for a while.
    pub ephemeral: bool,
    /// When it stops working (ms since the epoch); none: never.
    pub expires_at_ms: Option<u64>,
}

/// One join key as stored: its id and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKey {
    /// 8 hex digits.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// What it may do.
    pub options: KeyOptions,
    /// When created (ms since the epoch).
    pub created_at_ms: u64,
    /// Members it authorized, first uses first.
    pub used_by: Vec<Address>,
    /// Revoked by an admin.
    pub revoked: bool,
}

/// Why a presented key does not authorize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Not in the form `vnk_<id>_<secret>`, or no key of this network has that id.
    Unknown,
    /// The id is known but the secret is wrong.
    WrongSecret,
    /// Revoked by an admin.
    Revoked,
    /// Past its expiry.
    Expired,
    /// A single-use key another member used.
    Used,
}

impl fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRefusal::Unknown => "unknown key",
            KeyRefusal::WrongSecret => "wrong secret",
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
            KeyRefusal::Used => "already used by another member",
        })
    }
}

fn hash_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `vnk_<id>_<secret>` split, if it has that form.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 8) && hex_of(secret, 32)).then_some((id, secret))
}

impl JoinKey {
    /// A new key from 20 random bytes; the key text to hand out (shown
    /// once) and the stored key.
    pub fn create(random: [u8; 20], options: KeyOptions, now_ms: u64) -> (String, JoinKey) {
        let id = hex::encode(&random[..4]);
        let secret = hex::encode(&random[4..]);
        let text = format!("{KEY_PREFIX}{id}_{secret}");
        let key = JoinKey {
            id,
            hash: hash_hex(&secret),
            options,
            created_at_ms: now_ms,
            used_by: Vec::new(),
            revoked: false,
        };
        (text, key)
    }

    /// Whether it authorizes `member` at `now_ms` (a member that already
    /// used a single-use key may present it again).
    fn admits(&self, secret: &str, member: Address, now_ms: u64) -> Result<(), KeyRefusal> {
        let presented = hash_hex(secret);
        if !bool::from(presented.as_bytes().ct_eq(self.hash.as_bytes())) {
            return Err(KeyRefusal::WrongSecret);
        }
        if self.revoked {
            return Err(KeyRefusal::Revoked);
        }
        if self.options.expires_at_ms.is_some_and(|t| now_ms >= t) {
            return Err(KeyRefusal::Expired);
        }
        if !self.options.reusable && self.used_by.iter().any(|a| *a != member) {
            return Err(KeyRefusal::Used);
        }
        Ok(())
    }

    /// Its state at `now_ms`: `valid`, `used`, `expired` or `revoked`.
    pub fn state(&self, now_ms: u64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.options.expires_at_ms.is_some_and(|t| now_ms >= t) {
            "expired"
        } else if !self.options.reusable && !self.used_by.is_empty() {
            "used"
        } else {
            "valid"
        }
    }

    /// The stored JSON (with the hash; never the secret).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "hash": self.hash,
            "reusable": self.options.reusable,
            "ephemeral": self.options.ephemeral,
            "createdAt": self.created_at_ms,
            "expiresAt": self.options.expires_at_ms,
            "usedBy": self.used_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "revoked": self.revoked,
        })
    }

    /// What the API shows: the stored JSON without the hash, with the state.
    pub fn to_api_json(&self, now_ms: u64) -> Value {
        let mut j = self.to_json();
        if let Some(o) = j.as_object_mut() {
            o.remove("hash");
            o.insert("state".into(), json!(self.state(now_ms)));
        }
        j
    }

    /// A key from its stored JSON; why not, naming the field.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let obj = value.as_object().ok_or("expected an object")?;
        let text = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .ok_or(format!("{k}: expected a string"))
        };
        let flag = |k: &str| {
            obj.get(k)
                .and_then(Value::as_bool)
                .ok_or(format!("{k}: expected true or false"))
        };
        let id = text("id")?.to_string();
        let hash = text("hash")?.to_string();
        if id.len() != 8
            || hash.len() != 64
            || !(id.clone() + &hash).bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("id/hash: not 8 and 64 hex digits".into());
        }
        let used_by = obj
            .get("usedBy")
            .and_then(Value::as_array)
            .ok_or("usedBy: expected an array")?
            .iter()
            .map(|a| {
                a.as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or("usedBy: not an address")
            })
            .collect::<Result<Vec<Address>, _>>()?;
        let expires_at_ms = match obj.get("expiresAt") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("expiresAt: expected ms or null")?),
        };
        Ok(Self {
            id,
            hash,
            options: KeyOptions {
                reusable: flag("reusable")?,
                ephemeral: flag("ephemeral")?,
                expires_at_ms,
            },
            created_at_ms: obj
                .get("createdAt")
                .and_then(Value::as_u64)
                .ok_or("createdAt: expected ms")?,
            used_by,
            revoked: flag("revoked")?,
        })
    }
}

/// The key of `keys` that `text` names, if it authorizes `member` now:
/// its index; else why not.
pub fn check(
    keys: &[JoinKey],
    text: &str,
    member: Address,
    now_ms: u64,
) -> Result<usize, KeyRefusal> {
    let (id, secret) = split_key(text).ok_or(KeyRefusal::Unknown)?;
    let i = keys
        .iter()
        .position(|k| k.id == id)
        .ok_or(KeyRefusal::Unknown)?;
    keys[i].admits(secret, member, now_ms).map(|()| i)
}

/// The key's id, for logs, if `text` has the form of a key (the secret is never logged).
pub fn key_id(text: &str) -> Option<&str> {
    split_key(text).map(|(id, _)| id)
}

/// Parses a duration like `90s`, `30m`, `24h`, `7d` (or plain seconds).
pub fn parse_duration_s(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u64) -> Address {
        Address::from_u64(0x01_0000_0000 + n).unwrap()
    }

    #[test]
    fn a_key_is_shown_once_stored_hashed_and_checked() {
        let (text, key) = JoinKey::create([7; 20], KeyOptions::default(), 1_000);
        assert!(text.starts_with("vnk_07070707_"), "{text}");
        assert_eq!(key_id(&text), Some("07070707"));
        let stored = key.to_json();
        assert!(
            !stored.to_string().contains(&text[13..]),
            "no secret stored"
        );
        assert_eq!(JoinKey::from_json(&stored).unwrap(), key);
        assert!(key.to_api_json(0).get("hash").is_none());
        let keys = vec![key];
        assert_eq!(check(&keys, &text, member(1), 2_000), Ok(0));
        let wrong = format!("{}0", &text[..text.len() - 1]);
        let wrong = if wrong == text {
            format!("{}1", &text[..text.len() - 1])
        } else {
            wrong
        };
        assert_eq!(
            check(&keys, &wrong, member(1), 2_000),
            Err(KeyRefusal::WrongSecret)
        );
        assert_eq!(
            check(&keys, "vnk_nothex", member(1), 2_000),
            Err(KeyRefusal::Unknown)
        );
        assert_eq!(
            check(
                &keys,
                &text.replace("vnk_07070707", "vnk_08080808"),
                member(1),
                0
            ),
            Err(KeyRefusal::Unknown)
        );
    }

    #[test]
    fn single_use_expiry_and_revocation() {
        let (text, mut key) = JoinKey::create(
            [9; 20],
            KeyOptions {
                expires_at_ms: Some(5_000),
                ..KeyOptions::default()
            },
            0,
        );
        key.used_by.push(member(1));
        let mut keys = vec![key];
        // The member that used it may present it again; another may not.
        assert_eq!(check(&keys, &text, member(1), 1), Ok(0));
        assert_eq!(check(&keys, &text, member(2), 1), Err(KeyRefusal::Used));
        assert_eq!(keys[0].state(1), "used");
        keys[0].options.reusable = true;
        assert_eq!(check(&keys, &text, member(2), 1), Ok(0));
        assert_eq!(
            check(&keys, &text, member(2), 5_000),
            Err(KeyRefusal::Expired)
        );
        assert_eq!(keys[0].state(5_000), "expired");
        keys[0].revoked = true;
        assert_eq!(check(&keys, &text, member(1), 1), Err(KeyRefusal::Revoked));
        assert_eq!(keys[0].state(1), "revoked");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("24h"), Some(86_400));
        assert_eq!(parse_duration_s("90"), Some(90));
        assert_eq!(parse_duration_s("30m"), Some(1_800));
        assert_eq!(parse_duration_s("7d"), Some(604_800));
        assert_eq!(parse_duration_s("1w"), None);
        assert_eq!(parse_duration_s("h"), None);
    }
}
