//! What the controller grants one member beyond its membership: tag values
//! and capabilities (ZeroTier's `Tag` and `Capability` credentials). vnet
//! carries them inside the member's certificate of membership (PROTOCOL.md
//! §4.2), so they are signed by the controller, travel and expire with it,
//! and are revoked with it: a member cannot grant itself either.

use serde::{Deserialize, Serialize};

use crate::constants::{MAX_CAPABILITY_RULES, MAX_MEMBER_CAPABILITIES, MAX_MEMBER_TAGS};

use super::filter::TagView;
use super::{RuleError, RuleSet};

/// Why grants were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantsError {
    /// More tags than [`MAX_MEMBER_TAGS`].
    #[error("more than {MAX_MEMBER_TAGS} tags")]
    TooManyTags,
    /// More capabilities than [`MAX_MEMBER_CAPABILITIES`].
    #[error("more than {MAX_MEMBER_CAPABILITIES} capabilities")]
    TooManyCapabilities,
    /// Ends early.
    #[error("grants end early")]
    Truncated,
    /// A tag id given twice, or ids out of order.
    #[error("tag ids must be unique and ascending")]
    TagOrder,
    /// A capability id given twice, or ids out of order.
    #[error("capability ids must be unique and ascending")]
    CapabilityOrder,
}

/// A member's tags (id → value) and capability ids, each sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    tags: Vec<(u32, u32)>,
    capabilities: Vec<u32>,
}

impl Grants {
    /// Grants from any order; a tag id given twice keeps its last value.
    pub fn new(
        tags: impl IntoIterator<Item = (u32, u32)>,
        capabilities: impl IntoIterator<Item = u32>,
    ) -> Result<Self, GrantsError> {
        let mut t: Vec<(u32, u32)> = Vec::new();
        for (id, value) in tags {
            match t.binary_search_by_key(&id, |&(i, _)| i) {
                Ok(at) => t[at].1 = value,
                Err(at) => t.insert(at, (id, value)),
            }
        }
        let mut c: Vec<u32> = capabilities.into_iter().collect();
        c.sort_unstable();
        c.dedup();
        if t.len() > MAX_MEMBER_TAGS {
            return Err(GrantsError::TooManyTags);
        }
        if c.len() > MAX_MEMBER_CAPABILITIES {
            return Err(GrantsError::TooManyCapabilities);
        }
        Ok(Self {
            tags: t,
            capabilities: c,
        })
    }

    /// Nothing granted.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.capabilities.is_empty()
    }

    /// The value of tag `id`, if granted.
    pub fn tag(&self, id: u32) -> Option<u32> {
        self.tags
            .binary_search_by_key(&id, |&(i, _)| i)
            .ok()
            .map(|at| self.tags[at].1)
    }

    /// The tags, by id.
    pub fn tags(&self) -> &[(u32, u32)] {
        &self.tags
    }

    /// The capability ids, ascending.
    pub fn capabilities(&self) -> &[u32] {
        &self.capabilities
    }

    /// Binary form: `tag count (1) | (id (4), value (4))… | capability
    /// count (1) | id (4)…`, big-endian, ids ascending.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.tags.len() as u8);
        for &(id, value) in &self.tags {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.push(self.capabilities.len() as u8);
        for id in &self.capabilities {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }

    /// Reads the binary form from the front of `bytes`; bytes used.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), GrantsError> {
        let u32_at = |i: usize| -> Result<u32, GrantsError> {
            bytes
                .get(i..i + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
                .ok_or(GrantsError::Truncated)
        };
        let tag_count = usize::from(*bytes.first().ok_or(GrantsError::Truncated)?);
        if tag_count > MAX_MEMBER_TAGS {
            return Err(GrantsError::TooManyTags);
        }
        let mut at = 1;
        let mut tags = Vec::with_capacity(tag_count);
        for _ in 0..tag_count {
            let id = u32_at(at)?;
            if tags.last().is_some_and(|&(last, _)| last >= id) {
                return Err(GrantsError::TagOrder);
            }
            tags.push((id, u32_at(at + 4)?));
            at += 8;
        }
        let cap_count = usize::from(*bytes.get(at).ok_or(GrantsError::Truncated)?);
        if cap_count > MAX_MEMBER_CAPABILITIES {
            return Err(GrantsError::TooManyCapabilities);
        }
        at += 1;
        let mut capabilities: Vec<u32> = Vec::with_capacity(cap_count);
        for _ in 0..cap_count {
            let id = u32_at(at)?;
            if capabilities.last().is_some_and(|&last| last >= id) {
                return Err(GrantsError::CapabilityOrder);
            }
            capabilities.push(id);
            at += 4;
        }
        Ok((Self { tags, capabilities }, at))
    }
}

/// The tags a tag match compares: ours and the other member's (either may
/// be unknown: no certificate, or a multicast with no one member).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberTags<'a> {
    /// Ours.
    pub local: Option<&'a Grants>,
    /// The other member's.
    pub remote: Option<&'a Grants>,
}

impl TagView for MemberTags<'_> {
    fn local(&self, id: u32) -> Option<u32> {
        self.local.and_then(|g| g.tag(id))
    }
    fn remote(&self, id: u32) -> Option<u32> {
        self.remote.and_then(|g| g.tag(id))
    }
}

/// One capability of a network: its id and the rules it lets its holders
/// pass (at most [`MAX_CAPABILITY_RULES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// The capability's id.
    pub id: u32,
    /// Its rules (in a config: binary as hex, as a network's rules).
    pub rules: RuleSet,
}

impl Capability {
    /// A capability, if its rules are at most [`MAX_CAPABILITY_RULES`].
    pub fn new(id: u32, rules: RuleSet) -> Result<Self, RuleError> {
        if rules.rules().len() > MAX_CAPABILITY_RULES {
            return Err(RuleError::Json {
                index: MAX_CAPABILITY_RULES,
                problem: format!("capability {id}: more than {MAX_CAPABILITY_RULES} rules"),
            });
        }
        Ok(Self { id, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_sort_dedup_and_round_trip() {
        let g = Grants::new([(2000, 7), (1000, 100), (2000, 9)], [5, 1, 5]).unwrap();
        assert_eq!(g.tags(), &[(1000, 100), (2000, 9)]);
        assert_eq!(g.capabilities(), &[1, 5]);
        assert_eq!(g.tag(2000), Some(9));
        assert_eq!(g.tag(3), None);
        let mut bytes = vec![];
        g.encode_into(&mut bytes);
        assert_eq!(bytes.len(), 1 + 16 + 1 + 8);
        bytes.push(0xee);
        assert_eq!(Grants::decode(&bytes).unwrap(), (g, 26));
        let mut empty = vec![];
        Grants::default().encode_into(&mut empty);
        assert_eq!(empty, [0, 0]);
    }

    #[test]
    fn bad_grants_are_refused() {
        assert_eq!(
            Grants::new((0..=MAX_MEMBER_TAGS as u32).map(|i| (i, 0)), []),
            Err(GrantsError::TooManyTags)
        );
        assert_eq!(
            Grants::new([], 0..=MAX_MEMBER_CAPABILITIES as u32),
            Err(GrantsError::TooManyCapabilities)
        );
        // Out of order, duplicated, truncated at every length, too many.
        let swapped = [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(Grants::decode(&swapped), Err(GrantsError::TagOrder));
        let caps = [0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
        assert_eq!(Grants::decode(&caps), Err(GrantsError::CapabilityOrder));
        let mut good = vec![];
        Grants::new([(1, 2)], [3]).unwrap().encode_into(&mut good);
        for len in 0..good.len() {
            assert_eq!(Grants::decode(&good[..len]), Err(GrantsError::Truncated));
        }
        assert_eq!(Grants::decode(&[255]), Err(GrantsError::TooManyTags));
        assert_eq!(
            Grants::decode(&[0, 255]),
            Err(GrantsError::TooManyCapabilities)
        );
    }

    #[test]
    fn member_tags_look_up_both_sides() {
        let ours = Grants::new([(1, 10)], []).unwrap();
        let theirs = Grants::new([(1, 20), (2, 5)], []).unwrap();
        let view = MemberTags {
            local: Some(&ours),
            remote: Some(&theirs),
        };
        assert_eq!((view.local(1), view.remote(1)), (Some(10), Some(20)));
        assert_eq!((view.local(2), view.remote(2)), (None, Some(5)));
        let none = MemberTags::default();
        assert_eq!((none.local(1), none.remote(1)), (None, None));
    }
}
