//! Bodies of the multicast directory verbs (PROTOCOL.md §4.6): MULTICAST_LIKE
//! (what a member listens to, told to its roots), MULTICAST_GATHER (who
//! listens to a group, asked of a root) and the OK that answers it. One
//! encoder and one decoder each; ZeroTier's layouts.

use crate::address::Address;
use crate::constants::{
    ADDRESS_LEN_BYTES, MULTICAST_GATHER_MAX_RESULTS, MULTICAST_LIKE_MAX_GROUPS,
};
use crate::message::{Cursor, MessageError};
use crate::network_id::{Mac, NetworkId};
use crate::switch::MulticastGroup;

/// Bytes of one (network, group) entry: network id, MAC, ADI.
const LIKE_ENTRY_LEN_BYTES: usize = 8 + 6 + 4;

fn encode_group(network: NetworkId, group: MulticastGroup, out: &mut Vec<u8>) {
    out.extend_from_slice(&network.to_u64().to_be_bytes());
    out.extend_from_slice(&group.mac.0);
    out.extend_from_slice(&group.adi.to_be_bytes());
}

fn decode_network(c: &mut Cursor<'_>) -> Result<NetworkId, MessageError> {
    NetworkId::from_u64(c.u64()?).map_err(|_| MessageError::BadField("network id"))
}

fn decode_group(c: &mut Cursor<'_>) -> Result<MulticastGroup, MessageError> {
    let mac = Mac(c.array()?);
    if !mac.is_multicast() {
        return Err(MessageError::BadField("multicast MAC"));
    }
    let adi = u32::from_be_bytes(c.array()?);
    Ok(MulticastGroup::new(mac, adi))
}

/// MULTICAST_LIKE: `(network id (8) | MAC (6) | ADI (4))` repeated, 1 to
/// [`MULTICAST_LIKE_MAX_GROUPS`] times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastLike {
    /// The groups the sender listens to, each on its network.
    pub groups: Vec<(NetworkId, MulticastGroup)>,
}

impl MulticastLike {
    /// The body; at most [`MULTICAST_LIKE_MAX_GROUPS`] groups (callers split
    /// longer lists with [`MulticastLike::split`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.groups.len() * LIKE_ENTRY_LEN_BYTES);
        for (network, group) in &self.groups {
            encode_group(*network, *group, &mut out);
        }
        out
    }

    /// `groups` as messages of at most [`MULTICAST_LIKE_MAX_GROUPS`] each.
    pub fn split(groups: &[(NetworkId, MulticastGroup)]) -> Vec<MulticastLike> {
        groups
            .chunks(MULTICAST_LIKE_MAX_GROUPS)
            .map(|c| MulticastLike { groups: c.to_vec() })
            .collect()
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.is_empty()
            || !bytes.len().is_multiple_of(LIKE_ENTRY_LEN_BYTES)
            || bytes.len() / LIKE_ENTRY_LEN_BYTES > MULTICAST_LIKE_MAX_GROUPS
        {
            return Err(MessageError::BadField("MULTICAST_LIKE length"));
        }
        let mut c = Cursor::new(bytes, "MULTICAST_LIKE");
        let mut groups = Vec::with_capacity(bytes.len() / LIKE_ENTRY_LEN_BYTES);
        while c.remaining() > 0 {
            let network = decode_network(&mut c)?;
            groups.push((network, decode_group(&mut c)?));
        }
        Ok(Self { groups })
    }
}

/// MULTICAST_GATHER: `network id (8) | flags (1) = 0 | MAC (6) | ADI (4) |
/// limit (4)`: who listens to the group, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastGather {
    /// The network.
    pub network: NetworkId,
    /// The group.
    pub group: MulticastGroup,
    /// Most members wanted.
    pub limit: u32,
}

impl MulticastGather {
    /// The body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23);
        out.extend_from_slice(&self.network.to_u64().to_be_bytes());
        out.push(0);
        out.extend_from_slice(&self.group.mac.0);
        out.extend_from_slice(&self.group.adi.to_be_bytes());
        out.extend_from_slice(&self.limit.to_be_bytes());
        out
    }

    /// Reads a body (flags are ignored, as ZeroTier's roots do).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(bytes, "MULTICAST_GATHER");
        let network = decode_network(&mut c)?;
        c.u8()?;
        let group = decode_group(&mut c)?;
        let limit = u32::from_be_bytes(c.array()?);
        c.finish()?;
        Ok(Self {
            network,
            group,
            limit,
        })
    }
}

/// OK(MULTICAST_GATHER) after the in-re header: `network id (8) | MAC (6) |
/// ADI (4) | total known (4) | count (2) | address (5) × count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherResult {
    /// The network asked about.
    pub network: NetworkId,
    /// The group asked about.
    pub group: MulticastGroup,
    /// How many members the root knows in the group (more than it names
    /// when it has more than the limit).
    pub total_known: u32,
    /// Members named, at most [`MULTICAST_GATHER_MAX_RESULTS`].
    pub members: Vec<Address>,
}

impl GatherResult {
    /// Appends the body (after the in-re header).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_group(self.network, self.group, out);
        out.extend_from_slice(&self.total_known.to_be_bytes());
        let n = self.members.len().min(MULTICAST_GATHER_MAX_RESULTS);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for m in &self.members[..n] {
            out.extend_from_slice(&m.to_bytes());
        }
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(bytes, "OK(MULTICAST_GATHER)");
        let network = decode_network(&mut c)?;
        let group = decode_group(&mut c)?;
        let total_known = u32::from_be_bytes(c.array()?);
        let n = usize::from(c.u16()?);
        if n > MULTICAST_GATHER_MAX_RESULTS || c.remaining() != n * ADDRESS_LEN_BYTES {
            return Err(MessageError::BadField("OK(MULTICAST_GATHER) count"));
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(c.address()?);
        }
        Ok(Self {
            network,
            group,
            total_known,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nwid() -> NetworkId {
        NetworkId::from_u64(0x8056_c2e2_1c00_0001).unwrap()
    }

    #[test]
    fn like_round_trips_and_refuses_bad_lengths_and_unicast_macs() {
        let arp = MulticastGroup::arp("10.147.17.5".parse().unwrap());
        let like = MulticastLike {
            groups: vec![(nwid(), arp), (nwid(), MulticastGroup::BROADCAST)],
        };
        let bytes = like.encode();
        assert_eq!(bytes.len(), 36);
        // ZeroTier's layout: network id, MAC, ADI.
        assert_eq!(&bytes[..8], &nwid().to_u64().to_be_bytes());
        assert_eq!(&bytes[8..14], &[0xff; 6]);
        assert_eq!(&bytes[14..18], &[10, 147, 17, 5]);
        assert_eq!(MulticastLike::decode(&bytes).unwrap(), like);
        assert!(MulticastLike::decode(&[]).is_err());
        assert!(MulticastLike::decode(&bytes[..35]).is_err());
        let mut unicast = bytes.clone();
        unicast[8] = 0x02;
        assert!(MulticastLike::decode(&unicast).is_err());
        let many: Vec<_> = (0..MULTICAST_LIKE_MAX_GROUPS as u32 + 1)
            .map(|i| (nwid(), MulticastGroup::new(Mac::BROADCAST, i)))
            .collect();
        let parts = MulticastLike::split(&many);
        assert_eq!(parts.len(), 2);
        assert!(MulticastLike::decode(&parts[0].encode()).is_ok());
        let too_many = MulticastLike { groups: many }.encode();
        assert!(MulticastLike::decode(&too_many).is_err());
    }

    #[test]
    fn gather_and_its_answer_round_trip() {
        let g = MulticastGather {
            network: nwid(),
            group: MulticastGroup::IPV6_ALL_NODES,
            limit: 32,
        };
        let bytes = g.encode();
        assert_eq!(bytes.len(), 23);
        assert_eq!(MulticastGather::decode(&bytes).unwrap(), g);
        assert!(MulticastGather::decode(&bytes[..22]).is_err());
        let r = GatherResult {
            network: nwid(),
            group: MulticastGroup::BROADCAST,
            total_known: 1000,
            members: vec![
                Address::from_u64(0x01_0203_0405).unwrap(),
                Address::from_u64(0x09_0807_0605).unwrap(),
            ],
        };
        let mut out = Vec::new();
        r.encode_into(&mut out);
        assert_eq!(out.len(), 24 + 10);
        assert_eq!(GatherResult::decode(&out).unwrap(), r);
        assert!(GatherResult::decode(&out[..out.len() - 1]).is_err());
        let mut reserved = out.clone();
        reserved[24..29].copy_from_slice(&[0xff, 0, 0, 0, 1]);
        assert!(GatherResult::decode(&reserved).is_err(), "reserved address");
    }
}
