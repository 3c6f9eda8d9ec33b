//! The multicast announcement message body: the groups a member listens to.
//!
//! ```text
//! count (2, big-endian, at most MULTICAST_ANNOUNCE_MAX_GROUPS)
//! count × { MAC (6) | ADI (4, big-endian) }      MULTICAST_GROUP_LEN_BYTES each
//! ```
//! Nothing may follow. Every MAC must have its multicast bit set.

use crate::constants::{MULTICAST_ANNOUNCE_MAX_GROUPS, MULTICAST_GROUP_LEN_BYTES};
use crate::network_id::Mac;

use super::multicast::MulticastGroup;

/// Bytes of the group count in front of the groups.
const COUNT_LEN_BYTES: usize = 2;
const _: () = assert!(MULTICAST_ANNOUNCE_MAX_GROUPS <= u16::MAX as usize);

/// Why bytes are not an announcement, or groups cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// Too short to hold the group count.
    #[error("announcement is {0} bytes, too short for its 2-byte group count")]
    MissingCount(usize),
    /// More groups than one announcement may carry.
    #[error("announcement of {count} groups; at most {max} fit in one")]
    TooManyGroups {
        /// Groups given or claimed.
        count: usize,
        /// [`MULTICAST_ANNOUNCE_MAX_GROUPS`].
        max: usize,
    },
    /// The length does not match the count (truncated, or trailing bytes).
    #[error("announcement of {count} groups must be {expected} bytes, got {actual}")]
    WrongLength {
        /// Groups claimed.
        count: usize,
        /// Length those groups take.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// A group's MAC is not a multicast MAC.
    #[error("group {index}: {mac} is not a multicast MAC")]
    NotMulticast {
        /// Position of the group in the message.
        index: usize,
        /// The MAC.
        mac: Mac,
    },
}

/// Encodes `groups` (at most [`MULTICAST_ANNOUNCE_MAX_GROUPS`]; split longer
/// lists with `chunks`).
pub fn encode_announcement(groups: &[MulticastGroup]) -> Result<Vec<u8>, AnnouncementError> {
    if groups.len() > MULTICAST_ANNOUNCE_MAX_GROUPS {
        return Err(AnnouncementError::TooManyGroups {
            count: groups.len(),
            max: MULTICAST_ANNOUNCE_MAX_GROUPS,
        });
    }
    let mut out = Vec::with_capacity(COUNT_LEN_BYTES + groups.len() * MULTICAST_GROUP_LEN_BYTES);
    out.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    for (index, g) in groups.iter().enumerate() {
        if !g.mac.is_multicast() {
            return Err(AnnouncementError::NotMulticast { index, mac: g.mac });
        }
        out.extend_from_slice(&g.mac.0);
        out.extend_from_slice(&g.adi.to_be_bytes());
    }
    Ok(out)
}

/// Decodes an announcement, refusing anything malformed as a whole.
pub fn decode_announcement(bytes: &[u8]) -> Result<Vec<MulticastGroup>, AnnouncementError> {
    let Some((count, body)) = bytes.split_first_chunk::<COUNT_LEN_BYTES>() else {
        return Err(AnnouncementError::MissingCount(bytes.len()));
    };
    let count = usize::from(u16::from_be_bytes(*count));
    if count > MULTICAST_ANNOUNCE_MAX_GROUPS {
        return Err(AnnouncementError::TooManyGroups {
            count,
            max: MULTICAST_ANNOUNCE_MAX_GROUPS,
        });
    }
    let expected = COUNT_LEN_BYTES + count * MULTICAST_GROUP_LEN_BYTES;
    if bytes.len() != expected {
        return Err(AnnouncementError::WrongLength {
            count,
            expected,
            actual: bytes.len(),
        });
    }
    body.chunks_exact(MULTICAST_GROUP_LEN_BYTES)
        .enumerate()
        .map(|(index, g)| {
            let mac = Mac(g[..6].try_into().expect("6 bytes"));
            if !mac.is_multicast() {
                return Err(AnnouncementError::NotMulticast { index, mac });
            }
            let adi = u32::from_be_bytes(g[6..].try_into().expect("4 bytes"));
            Ok(MulticastGroup::new(mac, adi))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_bytes() {
        let groups = vec![
            MulticastGroup::BROADCAST,
            MulticastGroup::arp("10.0.0.7".parse().unwrap()),
            MulticastGroup::IPV6_ALL_NODES,
        ];
        let bytes = encode_announcement(&groups).unwrap();
        assert_eq!(bytes.len(), 2 + 3 * MULTICAST_GROUP_LEN_BYTES);
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(
            &bytes[12..22],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 0, 0, 7]
        );
        assert_eq!(decode_announcement(&bytes).unwrap(), groups);
        assert_eq!(decode_announcement(&[0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_announcements_are_refused_with_the_reason() {
        let bytes = encode_announcement(&[MulticastGroup::BROADCAST]).unwrap();
        assert_eq!(
            decode_announcement(&[7]),
            Err(AnnouncementError::MissingCount(1))
        );
        assert!(matches!(
            decode_announcement(&bytes[..bytes.len() - 1]),
            Err(AnnouncementError::WrongLength {
                count: 1,
                expected: 12,
                actual: 11
            })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_announcement(&trailing),
            Err(AnnouncementError::WrongLength { actual: 13, .. })
        ));
        assert!(matches!(
            decode_announcement(&[0xff, 0xff]),
            Err(AnnouncementError::TooManyGroups { count: 65535, .. })
        ));
        let mut unicast = bytes;
        unicast[2] = 0x02;
        assert!(matches!(
            decode_announcement(&unicast),
            Err(AnnouncementError::NotMulticast { index: 0, .. })
        ));
        let err = decode_announcement(&unicast).unwrap_err().to_string();
        assert!(
            err.contains("02:ff:ff:ff:ff:ff") && err.contains("not a multicast MAC"),
            "{err}"
        );
    }

    #[test]
    fn encoding_refuses_what_decoding_would() {
        let many = vec![MulticastGroup::BROADCAST; MULTICAST_ANNOUNCE_MAX_GROUPS + 1];
        assert!(matches!(
            encode_announcement(&many),
            Err(AnnouncementError::TooManyGroups { .. })
        ));
        assert!(encode_announcement(&many[1..]).is_ok());
        let bad = MulticastGroup::new(Mac([2, 0, 0, 0, 0, 1]), 0);
        assert!(matches!(
            encode_announcement(&[MulticastGroup::BROADCAST, bad]),
            Err(AnnouncementError::NotMulticast { index: 1, .. })
        ));
    }
}
