//! Flow rules (ZeroTier's rules engine): a network's rule list, which every
//! member evaluates on each frame it sends and each frame it receives.
//! [`rule`] is one rule and its two encodings, [`filter`] the evaluation,
//! [`grants`] the tags and capabilities a member holds, [`compiler`] the
//! rules language.

pub mod compiler;
pub mod filter;
pub mod grants;
pub mod rule;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::constants::MAX_RULES;

pub use filter::{CarbonCopy, Decision, FrameFacts, NoTags, TagView, evaluate};
pub use grants::{Capability, Grants, GrantsError, MemberTags};
pub use rule::{Rule, RuleError, RuleKind};

/// A network's rules: at most [`MAX_RULES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSet(Vec<Rule>);

impl RuleSet {
    /// ZeroTier's default: accept everything.
    pub fn accept_all() -> Self {
        Self(vec![Rule {
            not: false,
            or: false,
            kind: RuleKind::Accept,
        }])
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    /// Whether a frame-size match tells frames of `a` and `b` bytes apart:
    /// a super-frame with segments of both sizes must then be judged one
    /// segment at a time.
    pub fn judges_sizes_apart(&self, a: usize, b: usize) -> bool {
        self.0.iter().any(|r| match r.kind {
            RuleKind::FrameSizeRange(lo, hi) => {
                let range = usize::from(lo)..=usize::from(hi);
                range.contains(&a) != range.contains(&b)
            }
            _ => false,
        })
    }

    /// Whether this is exactly the accept-all default.
    pub fn is_accept_all(&self) -> bool {
        *self == Self::accept_all()
    }

    /// A set from `rules`, if there are at most [`MAX_RULES`].
    pub fn new(rules: Vec<Rule>) -> Result<Self, RuleError> {
        if rules.len() > MAX_RULES {
            return Err(RuleError::Json {
                index: MAX_RULES,
                problem: format!("more than {MAX_RULES} rules"),
            });
        }
        Ok(Self(rules))
    }

    /// Reads ZeroTier's JSON array of rules.
    pub fn from_zerotier_json(v: &Value) -> Result<Self, RuleError> {
        let list = v.as_array().ok_or_else(|| RuleError::Json {
            index: 0,
            problem: "rules must be an array".into(),
        })?;
        Self::new(
            list.iter()
                .enumerate()
                .map(|(i, r)| Rule::from_zerotier_json(r, i))
                .collect::<Result<_, _>>()?,
        )
    }

    /// The rules as ZeroTier's JSON array.
    pub fn to_zerotier_json(&self) -> Value {
        Value::Array(self.0.iter().map(Rule::to_zerotier_json).collect())
    }

    /// The binary form: the rules one after another (PROTOCOL.md §4.8).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 6);
        for r in &self.0 {
            r.encode_into(&mut out);
        }
        out
    }

    /// Reads the binary form back.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        let mut at = 0;
        while !bytes.is_empty() {
            let (rule, used) = Rule::decode(bytes, at)?;
            rules.push(rule);
            if rules.len() > MAX_RULES {
                return Err(RuleError::Malformed(at));
            }
            bytes = &bytes[used..];
            at += used;
        }
        Ok(Self(rules))
    }
}

/// In a config (JSON), the binary form as hex: a 1,024-rule set fits.
impl Serialize for RuleSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.encode()))
    }
}

impl<'de> Deserialize<'de> for RuleSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        Self::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod compiler_tests;
#[cfg(test)]
mod tests;
