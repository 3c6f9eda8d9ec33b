//! The datagram header codec (§3.1, §3.3): packets and fragments, read and
//! written in place, without allocating.
//!
//! A datagram is a fragment when byte 13 is [`FRAGMENT_INDICATOR`] (where a
//! packet's source address starts, and no address starts with `0xff`);
//! anything else is a packet. [`classify`] checks every header field, so a
//! [`Datagram`] it returns is well formed up to its MAC.

use crate::address::Address;
use crate::constants::{
    ADDRESS_LEN_BYTES, FRAGMENT_HEADER_LEN_BYTES, FRAGMENT_INDICATOR, MAX_FRAGMENTS,
    PACKET_HEADER_LEN_BYTES, PACKET_MAX_LEN_BYTES, PACKET_MIN_LEN_BYTES, RELAY_MAX_HOPS,
};

/// Offset of the 8-byte counter, in packets and fragments.
pub const COUNTER_OFFSET: usize = 0;
/// Offset of the destination address, in packets and fragments.
pub const DESTINATION_OFFSET: usize = 8;
/// Offset of a packet's source address.
pub const SOURCE_OFFSET: usize = 13;
/// Offset of a packet's flags byte.
pub const FLAGS_OFFSET: usize = 18;
/// Offset of a packet's MAC; also the length of the authenticated header (the AAD).
pub const MAC_OFFSET: usize = 19;
/// Offset of a packet's verb, the first body byte.
pub const VERB_OFFSET: usize = PACKET_HEADER_LEN_BYTES;
/// Offset of a fragment's indicator byte ([`FRAGMENT_INDICATOR`]).
pub const FRAGMENT_INDICATOR_OFFSET: usize = 13;
/// Offset of a fragment's total piece count.
pub const FRAGMENT_TOTAL_OFFSET: usize = 14;
/// Offset of a fragment's number.
pub const FRAGMENT_INDEX_OFFSET: usize = 15;
/// Offset of a fragment's hop byte.
pub const FRAGMENT_HOPS_OFFSET: usize = 16;

/// Flags bits 0–2 (and a fragment's hop byte bits 0–2): the hop count.
pub const FLAG_HOPS_MASK: u8 = 0b0000_0111;
/// Flags bits 3–4: the key slot.
pub const FLAG_KEY_SLOT_MASK: u8 = 0b0001_1000;
/// Shift of the key slot within the flags.
pub const FLAG_KEY_SLOT_SHIFT: u32 = 3;
/// Flags bit 6: more fragments follow this head.
pub const FLAG_MORE_FRAGMENTS: u8 = 0b0100_0000;
/// Flag bit 5: verb and payload are in clear (HELLO only, key slot 0).
pub const FLAG_CLEAR: u8 = 0b0010_0000;
/// Flags bit 7: a session packet sealed with AES-256-GCM instead of
/// Salsa20/12 + Poly1305 (never on a static-key packet).
pub const FLAG_AES_GCM: u8 = 0b1000_0000;
/// A fragment's hop byte bits 3–7, which must be zero.
pub const FRAGMENT_HOPS_RESERVED_MASK: u8 = !FLAG_HOPS_MASK;
/// Highest key slot (slots 1–3 are session keys, 0 the static key).
pub const MAX_KEY_SLOT: u8 = 3;

/// Why a datagram is not a well-formed packet or fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its fixed part.
    #[error("datagram of {len} bytes is truncated (needs at least {min})")]
    Truncated {
        /// Bytes there are.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// Longer than any packet may be.
    #[error("datagram of {len} bytes is too long (at most {max})")]
    TooLong {
        /// Bytes there are.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// A reserved bit in the flags (or a fragment's hop byte) is set.
    #[error("reserved bits set in flags byte 0x{byte:02x}")]
    ReservedBits {
        /// The whole flags (or hop) byte.
        byte: u8,
    },
    /// An address field holds a reserved address (zero, or starting with 0xff).
    #[error("{field} address {value:010x} is reserved")]
    ReservedAddress {
        /// `"destination"` or `"source"`.
        field: &'static str,
        /// The 40-bit value found.
        value: u64,
    },
    /// A fragment's total is not 2..=MAX_FRAGMENTS, or its number not 1..total.
    #[error("fragment {index} of {total} is impossible")]
    BadFragmentNumbers {
        /// Total number of pieces claimed.
        total: u8,
        /// This fragment's number.
        index: u8,
    },
    /// The hop count is, or would become, higher than `RELAY_MAX_HOPS`.
    #[error("hop count {hops} exceeds the maximum of {RELAY_MAX_HOPS}")]
    TooManyHops {
        /// The offending hop count.
        hops: u8,
    },
    /// Expected a packet but byte 13 is the fragment indicator.
    #[error("datagram is a fragment, not a packet")]
    NotAPacket,
    /// Expected a fragment but byte 13 is not the fragment indicator.
    #[error("datagram is a packet, not a fragment")]
    NotAFragment,
}

/// The fixed fields of a packet (§3.1), without its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    /// Per-key packet counter: the cipher nonce and the replay-window index.
    pub counter: u64,
    /// Who the packet is for.
    pub dest: Address,
    /// Who sent it.
    pub src: Address,
    /// Relays passed so far (0..=RELAY_MAX_HOPS); not covered by the MAC.
    pub hops: u8,
    /// 0 = static key, 1..=3 = session keys.
    pub key_slot: u8,
    /// Flag bit 6: this is the head of a fragmented packet.
    pub more_fragments: bool,
    /// Flag bit 5: verb and payload sent in clear (HELLO; key slot 0 only).
    pub clear: bool,
    /// Flag bit 7: sealed with AES-256-GCM (session key slots only).
    pub aes_gcm: bool,
}

impl PacketHeader {
    /// Writes bytes 0..19 (counter, addresses, flags) of `buf`; the MAC
    /// (bytes 19..35) is left for [`crate::armor::armor`].
    ///
    /// # Panics
    /// If `buf` is shorter than 19 bytes, `hops` exceeds `RELAY_MAX_HOPS`, or
    /// `key_slot` exceeds 3: all programming errors on the sending side.
    pub fn encode_into(&self, buf: &mut [u8]) {
        assert!(
            self.hops <= RELAY_MAX_HOPS,
            "hop count {} too high",
            self.hops
        );
        assert!(
            self.key_slot <= MAX_KEY_SLOT,
            "key slot {} too high",
            self.key_slot
        );
        let buf = &mut buf[..MAC_OFFSET];
        buf[COUNTER_OFFSET..DESTINATION_OFFSET].copy_from_slice(&self.counter.to_be_bytes());
        buf[DESTINATION_OFFSET..SOURCE_OFFSET].copy_from_slice(&self.dest.to_bytes());
        buf[SOURCE_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.src.to_bytes());
        let mut flags = self.hops | (self.key_slot << FLAG_KEY_SLOT_SHIFT);
        if self.more_fragments {
            flags |= FLAG_MORE_FRAGMENTS;
        }
        if self.clear {
            assert!(self.key_slot == 0, "clear packets use the static key slot");
            flags |= FLAG_CLEAR;
        }
        if self.aes_gcm {
            assert!(self.key_slot != 0, "AES-GCM is for session keys");
            flags |= FLAG_AES_GCM;
        }
        buf[FLAGS_OFFSET] = flags;
    }

    /// Reads and checks the header of a packet (at least its 35 header bytes).
    ///
    /// Checks the length, that it is not a fragment, the reserved flag bits,
    /// both addresses and the hop count. It does not look at the MAC or body.
    pub fn decode(bytes: &[u8]) -> Result<PacketHeader, WireError> {
        if bytes.len() < PACKET_HEADER_LEN_BYTES {
            return Err(WireError::Truncated {
                len: bytes.len(),
                min: PACKET_HEADER_LEN_BYTES,
            });
        }
        if bytes[FRAGMENT_INDICATOR_OFFSET] == FRAGMENT_INDICATOR {
            return Err(WireError::NotAPacket);
        }
        let flags = bytes[FLAGS_OFFSET];
        if flags & FLAG_AES_GCM != 0 && flags & FLAG_KEY_SLOT_MASK == 0 {
            return Err(WireError::ReservedBits { byte: flags });
        }
        if flags & FLAG_CLEAR != 0 && flags & FLAG_KEY_SLOT_MASK != 0 {
            return Err(WireError::ReservedBits { byte: flags });
        }
        let hops = flags & FLAG_HOPS_MASK;
        if hops > RELAY_MAX_HOPS {
            return Err(WireError::TooManyHops { hops });
        }
        Ok(PacketHeader {
            counter: read_counter(bytes),
            dest: read_address(bytes, DESTINATION_OFFSET, "destination")?,
            src: read_address(bytes, SOURCE_OFFSET, "source")?,
            hops,
            key_slot: (flags & FLAG_KEY_SLOT_MASK) >> FLAG_KEY_SLOT_SHIFT,
            more_fragments: flags & FLAG_MORE_FRAGMENTS != 0,
            clear: flags & FLAG_CLEAR != 0,
            aes_gcm: flags & FLAG_AES_GCM != 0,
        })
    }
}

/// The fixed fields of a fragment (§3.3): pieces 1..total of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentHeader {
    /// The counter of the packet this is a piece of.
    pub counter: u64,
    /// Who the packet is for.
    pub dest: Address,
    /// Number of pieces, head included (2..=MAX_FRAGMENTS).
    pub total: u8,
    /// This piece's number (1..total; the head is piece 0).
    pub index: u8,
    /// Relays passed so far (0..=RELAY_MAX_HOPS).
    pub hops: u8,
}

impl FragmentHeader {
    /// Writes bytes 0..17 of `buf`; the fragment data follows.
    ///
    /// # Panics
    /// If `buf` is shorter than 17 bytes, or a field is out of range
    /// (`total`, `index` or `hops`): programming errors on the sending side.
    pub fn encode_into(&self, buf: &mut [u8]) {
        assert!(
            fragment_numbers_ok(self.total, self.index),
            "fragment {} of {} is impossible",
            self.index,
            self.total
        );
        assert!(
            self.hops <= RELAY_MAX_HOPS,
            "hop count {} too high",
            self.hops
        );
        let buf = &mut buf[..FRAGMENT_HEADER_LEN_BYTES];
        buf[COUNTER_OFFSET..DESTINATION_OFFSET].copy_from_slice(&self.counter.to_be_bytes());
        buf[DESTINATION_OFFSET..FRAGMENT_INDICATOR_OFFSET].copy_from_slice(&self.dest.to_bytes());
        buf[FRAGMENT_INDICATOR_OFFSET] = FRAGMENT_INDICATOR;
        buf[FRAGMENT_TOTAL_OFFSET] = self.total;
        buf[FRAGMENT_INDEX_OFFSET] = self.index;
        buf[FRAGMENT_HOPS_OFFSET] = self.hops;
    }

    /// Reads and checks the header of a fragment (at least its 17 header bytes).
    pub fn decode(bytes: &[u8]) -> Result<FragmentHeader, WireError> {
        if bytes.len() < FRAGMENT_HEADER_LEN_BYTES {
            return Err(WireError::Truncated {
                len: bytes.len(),
                min: FRAGMENT_HEADER_LEN_BYTES,
            });
        }
        if bytes[FRAGMENT_INDICATOR_OFFSET] != FRAGMENT_INDICATOR {
            return Err(WireError::NotAFragment);
        }
        let total = bytes[FRAGMENT_TOTAL_OFFSET];
        let index = bytes[FRAGMENT_INDEX_OFFSET];
        if !fragment_numbers_ok(total, index) {
            return Err(WireError::BadFragmentNumbers { total, index });
        }
        let hop_byte = bytes[FRAGMENT_HOPS_OFFSET];
        if hop_byte & FRAGMENT_HOPS_RESERVED_MASK != 0 {
            // Only bits 0–2 are defined (the hop count); the rest must be zero.
            return Err(WireError::ReservedBits { byte: hop_byte });
        }
        if hop_byte > RELAY_MAX_HOPS {
            return Err(WireError::TooManyHops { hops: hop_byte });
        }
        Ok(FragmentHeader {
            counter: read_counter(bytes),
            dest: read_address(bytes, DESTINATION_OFFSET, "destination")?,
            total,
            index,
            hops: hop_byte,
        })
    }
}

/// One received datagram, checked and split up, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A whole packet, or the head of a fragmented one (`header.more_fragments`).
    Packet {
        /// The decoded header.
        header: PacketHeader,
        /// The whole datagram, header included (what armor and dearmor take).
        bytes: &'a [u8],
    },
    /// A piece 1..total of a fragmented packet.
    Fragment {
        /// The decoded fragment header.
        header: FragmentHeader,
        /// The fragment data (after the 17 header bytes), never empty.
        data: &'a [u8],
    },
}

/// Decides what a received datagram is and checks its header.
///
/// Packets must hold at least a verb ([`PACKET_MIN_LEN_BYTES`]); fragments at
/// The verb of an opened (dearmored) packet, if it is a known one.
pub fn verb_of(packet: &[u8]) -> Option<crate::verb::Verb> {
    packet
        .get(VERB_OFFSET)
        .and_then(|v| crate::verb::Verb::try_from(*v).ok())
}

/// Starts a packet in `tx`: room for the header (written when the packet is
/// sealed), then the verb; the caller appends the payload.
pub fn start_packet(tx: &mut Vec<u8>, verb: crate::verb::Verb) {
    tx.clear();
    append_packet_start(tx, verb);
}

/// Starts a packet at the end of `buf` (which may hold other packets before
/// it): room for the header, then the verb. Returns where the packet starts.
pub fn append_packet_start(buf: &mut Vec<u8>, verb: crate::verb::Verb) -> usize {
    let start = buf.len();
    buf.resize(start + PACKET_HEADER_LEN_BYTES, 0);
    buf.push(verb as u8);
    start
}

/// Writes the verb of a packet whose header room and verb byte were kept
/// free in front of its payload (a frame read with headroom).
pub fn write_verb(packet: &mut [u8], verb: crate::verb::Verb) {
    packet[VERB_OFFSET] = verb as u8;
}

/// least one data byte. Neither may exceed [`PACKET_MAX_LEN_BYTES`].
pub fn classify(bytes: &[u8]) -> Result<Datagram<'_>, WireError> {
    if bytes.len() > PACKET_MAX_LEN_BYTES {
        return Err(WireError::TooLong {
            len: bytes.len(),
            max: PACKET_MAX_LEN_BYTES,
        });
    }
    if bytes.len() <= FRAGMENT_INDICATOR_OFFSET {
        return Err(WireError::Truncated {
            len: bytes.len(),
            min: FRAGMENT_HEADER_LEN_BYTES + 1,
        });
    }
    if bytes[FRAGMENT_INDICATOR_OFFSET] == FRAGMENT_INDICATOR {
        if bytes.len() <= FRAGMENT_HEADER_LEN_BYTES {
            return Err(WireError::Truncated {
                len: bytes.len(),
                min: FRAGMENT_HEADER_LEN_BYTES + 1,
            });
        }
        let header = FragmentHeader::decode(bytes)?;
        Ok(Datagram::Fragment {
            header,
            data: &bytes[FRAGMENT_HEADER_LEN_BYTES..],
        })
    } else {
        if bytes.len() < PACKET_MIN_LEN_BYTES {
            return Err(WireError::Truncated {
                len: bytes.len(),
                min: PACKET_MIN_LEN_BYTES,
            });
        }
        let header = PacketHeader::decode(bytes)?;
        Ok(Datagram::Packet { header, bytes })
    }
}

/// The destination of a packet or fragment, read without checking anything
/// else (for relays deciding where to forward). `None` if the datagram is too
/// short or the address is reserved.
pub fn destination(bytes: &[u8]) -> Option<Address> {
    let field = bytes.get(DESTINATION_OFFSET..DESTINATION_OFFSET + ADDRESS_LEN_BYTES)?;
    Address::from_bytes(field.try_into().ok()?).ok()
}

/// Increments the hop count of a packet or fragment in place, for a relay
/// forwarding it, and returns the new count.
///
/// The datagram is checked as [`classify`] does first. Fails, leaving the
/// bytes untouched, when the new count would exceed [`RELAY_MAX_HOPS`]. The
/// hop count is outside the MAC, so the packet stays valid.
pub fn increment_hops(bytes: &mut [u8]) -> Result<u8, WireError> {
    let (offset, hops) = match classify(bytes)? {
        Datagram::Packet { header, .. } => (FLAGS_OFFSET, header.hops),
        Datagram::Fragment { header, .. } => (FRAGMENT_HOPS_OFFSET, header.hops),
    };
    let next = hops + 1;
    if next > RELAY_MAX_HOPS {
        return Err(WireError::TooManyHops { hops: next });
    }
    bytes[offset] = (bytes[offset] & !FLAG_HOPS_MASK) | next;
    Ok(next)
}

fn fragment_numbers_ok(total: u8, index: u8) -> bool {
    (2..=MAX_FRAGMENTS).contains(&usize::from(total)) && index >= 1 && index < total
}

fn read_counter(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(
        bytes[COUNTER_OFFSET..DESTINATION_OFFSET]
            .try_into()
            .expect("8 bytes"),
    )
}

fn read_address(bytes: &[u8], offset: usize, field: &'static str) -> Result<Address, WireError> {
    let raw: [u8; ADDRESS_LEN_BYTES] = bytes[offset..offset + ADDRESS_LEN_BYTES]
        .try_into()
        .expect("5 bytes");
    Address::from_bytes(raw).map_err(|_| {
        let mut wide = [0u8; 8];
        wide[3..].copy_from_slice(&raw);
        WireError::ReservedAddress {
            field,
            value: u64::from_be_bytes(wide),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(value: u64) -> Address {
        Address::from_u64(value).unwrap()
    }

    fn header() -> PacketHeader {
        PacketHeader {
            counter: 0x0102_0304_0506_0708,
            dest: addr(0x5b51b6c335),
            src: addr(0x5d4d6e8499),
            hops: 2,
            key_slot: 3,
            more_fragments: true,
            clear: false,
            aes_gcm: false,
        }
    }

    fn packet(header: &PacketHeader, body_len: usize) -> Vec<u8> {
        let mut buf = vec![0xaa; PACKET_HEADER_LEN_BYTES + body_len];
        header.encode_into(&mut buf);
        buf
    }

    #[test]
    fn packet_header_layout_is_exact() {
        let buf = packet(&header(), 1);
        assert_eq!(
            buf[..MAC_OFFSET],
            [
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                0x5b,
                0x51,
                0xb6,
                0xc3,
                0x35,
                0x5d,
                0x4d,
                0x6e,
                0x84,
                0x99,
                0b0101_1010
            ]
        );
        // The MAC and body are left alone.
        assert!(buf[MAC_OFFSET..].iter().all(|&b| b == 0xaa));
        assert_eq!(PacketHeader::decode(&buf), Ok(header()));
        match classify(&buf) {
            Ok(Datagram::Packet { header: h, bytes }) => {
                assert_eq!(h, header());
                assert_eq!(bytes.len(), buf.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragment_header_layout_is_exact() {
        let frag = FragmentHeader {
            counter: 9,
            dest: addr(0x5b51b6c335),
            total: 5,
            index: 4,
            hops: 1,
        };
        let mut buf = vec![0x77; FRAGMENT_HEADER_LEN_BYTES + 3];
        frag.encode_into(&mut buf);
        assert_eq!(
            buf[..FRAGMENT_HEADER_LEN_BYTES],
            [
                0, 0, 0, 0, 0, 0, 0, 9, 0x5b, 0x51, 0xb6, 0xc3, 0x35, 0xff, 5, 4, 1
            ]
        );
        assert_eq!(FragmentHeader::decode(&buf), Ok(frag));
        assert_eq!(
            classify(&buf),
            Ok(Datagram::Fragment {
                header: frag,
                data: &[0x77; 3]
            })
        );
    }

    #[test]
    fn lengths_are_checked() {
        let buf = packet(&header(), 1);
        for len in 0..PACKET_MIN_LEN_BYTES {
            assert!(
                matches!(classify(&buf[..len]), Err(WireError::Truncated { .. })),
                "{len}"
            );
        }
        let mut frag = vec![0u8; FRAGMENT_HEADER_LEN_BYTES];
        FragmentHeader {
            counter: 1,
            dest: addr(1),
            total: 2,
            index: 1,
            hops: 0,
        }
        .encode_into(&mut frag);
        assert!(matches!(
            classify(&frag),
            Err(WireError::Truncated { len: 17, min: 18 })
        ));
        let long = packet(&header(), PACKET_MAX_LEN_BYTES);
        assert!(matches!(classify(&long), Err(WireError::TooLong { .. })));
        let longest = packet(&header(), PACKET_MAX_LEN_BYTES - PACKET_HEADER_LEN_BYTES);
        assert!(classify(&longest).is_ok());
    }

    #[test]
    fn reserved_bits_and_addresses_are_refused() {
        let good = packet(&header(), 4);
        // Clear (bit 5) with a session key slot: refused.
        let mut buf = good.clone();
        buf[FLAGS_OFFSET] |= FLAG_CLEAR;
        assert!(matches!(
            classify(&buf),
            Err(WireError::ReservedBits { .. })
        ));
        // The AES-GCM bit (7) on a session packet is a suite; on a
        // static-key packet (slot 0) it is refused.
        let mut buf = good.clone();
        buf[FLAGS_OFFSET] |= FLAG_AES_GCM;
        assert!(classify(&buf).is_ok());
        buf[FLAGS_OFFSET] &= !FLAG_KEY_SLOT_MASK;
        assert!(matches!(
            classify(&buf),
            Err(WireError::ReservedBits { .. })
        ));
        let mut buf = good.clone();
        buf[DESTINATION_OFFSET..SOURCE_OFFSET].fill(0);
        assert_eq!(
            classify(&buf),
            Err(WireError::ReservedAddress {
                field: "destination",
                value: 0
            })
        );
        let mut buf = good.clone();
        buf[DESTINATION_OFFSET] = 0xff;
        assert!(matches!(
            classify(&buf),
            Err(WireError::ReservedAddress {
                field: "destination",
                ..
            })
        ));
        let mut buf = good.clone();
        buf[SOURCE_OFFSET..FLAGS_OFFSET].fill(0);
        assert!(matches!(
            classify(&buf),
            Err(WireError::ReservedAddress {
                field: "source",
                ..
            })
        ));
        let mut buf = good;
        buf[FLAGS_OFFSET] = (buf[FLAGS_OFFSET] & !FLAG_HOPS_MASK) | 4;
        assert_eq!(classify(&buf), Err(WireError::TooManyHops { hops: 4 }));
    }

    #[test]
    fn fragment_numbers_are_checked() {
        let mut buf = vec![0u8; 20];
        FragmentHeader {
            counter: 1,
            dest: addr(1),
            total: 2,
            index: 1,
            hops: 0,
        }
        .encode_into(&mut buf);
        for total in 0..=255u8 {
            for index in 0..=255u8 {
                buf[FRAGMENT_TOTAL_OFFSET] = total;
                buf[FRAGMENT_INDEX_OFFSET] = index;
                let ok = (2..=64).contains(&total) && (1..total).contains(&index);
                match classify(&buf) {
                    Ok(Datagram::Fragment { header, .. }) => {
                        assert!(ok, "{index}/{total} accepted");
                        assert_eq!((header.total, header.index), (total, index));
                    }
                    Err(WireError::BadFragmentNumbers { .. }) => assert!(!ok),
                    other => panic!("{other:?}"),
                }
            }
        }
        buf[FRAGMENT_TOTAL_OFFSET] = 2;
        buf[FRAGMENT_INDEX_OFFSET] = 1;
        buf[FRAGMENT_HOPS_OFFSET] = 0x08;
        assert!(matches!(
            classify(&buf),
            Err(WireError::ReservedBits { byte: 0x08 })
        ));
        buf[FRAGMENT_HOPS_OFFSET] = 4;
        assert_eq!(classify(&buf), Err(WireError::TooManyHops { hops: 4 }));
    }

    #[test]
    fn kinds_are_told_apart() {
        let buf = packet(&header(), 4);
        assert_eq!(FragmentHeader::decode(&buf), Err(WireError::NotAFragment));
        let mut frag = vec![0u8; 40];
        FragmentHeader {
            counter: 1,
            dest: addr(1),
            total: 2,
            index: 1,
            hops: 0,
        }
        .encode_into(&mut frag);
        assert_eq!(PacketHeader::decode(&frag), Err(WireError::NotAPacket));
    }

    #[test]
    fn hops_increment_up_to_the_limit() {
        let mut h = header();
        h.hops = 0;
        let mut buf = packet(&h, 8);
        let before = buf.clone();
        for expected in 1..=RELAY_MAX_HOPS {
            assert_eq!(increment_hops(&mut buf), Ok(expected));
        }
        let at_limit = buf.clone();
        assert_eq!(
            increment_hops(&mut buf),
            Err(WireError::TooManyHops { hops: 4 })
        );
        assert_eq!(buf, at_limit, "a refused increment must not modify");
        // Only the hop bits changed.
        assert_eq!(buf[FLAGS_OFFSET] & !FLAG_HOPS_MASK, before[FLAGS_OFFSET]);
        assert_eq!(buf[..FLAGS_OFFSET], before[..FLAGS_OFFSET]);
        assert_eq!(buf[MAC_OFFSET..], before[MAC_OFFSET..]);

        let mut frag = vec![0u8; 30];
        FragmentHeader {
            counter: 1,
            dest: addr(1),
            total: 3,
            index: 2,
            hops: 2,
        }
        .encode_into(&mut frag);
        assert_eq!(increment_hops(&mut frag), Ok(3));
        assert_eq!(frag[FRAGMENT_HOPS_OFFSET], 3);
        assert!(increment_hops(&mut frag).is_err());
        assert!(increment_hops(&mut [0u8; 3]).is_err());
    }

    #[test]
    fn destination_peeks() {
        let buf = packet(&header(), 1);
        assert_eq!(destination(&buf), Some(addr(0x5b51b6c335)));
        assert_eq!(destination(&buf[..13]), Some(addr(0x5b51b6c335)));
        assert_eq!(destination(&buf[..12]), None);
        assert_eq!(destination(&[0u8; 40]), None);
    }
}
