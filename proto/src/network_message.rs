//! Bodies of the virtual-network verbs that name a network (PROTOCOL.md
//! §4.4–4.5): EXT_FRAME, NETWORK_CONFIG_REQUEST, and the network id that
//! follows the code in an ERROR(NETWORK_CONFIG_REQUEST). One encoder and
//! one decoder each; the node never builds or parses these bytes itself.

use crate::constants::{NETWORK_ID_LEN_BYTES, OFFLOAD_LEN_BYTES};
use crate::message::MessageError;
use crate::network_id::NetworkId;
use crate::offload::Offload;

/// Writes a network id (8 bytes, big-endian).
pub fn encode_network_id(network: NetworkId, out: &mut Vec<u8>) {
    out.extend_from_slice(&network.to_u64().to_be_bytes());
}

/// Reads the network id that starts `bytes`; the rest is returned.
pub fn decode_network_id<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(NetworkId, &'a [u8]), MessageError> {
    let (head, rest) = bytes
        .split_first_chunk::<NETWORK_ID_LEN_BYTES>()
        .ok_or(MessageError::Truncated(what))?;
    let network =
        NetworkId::from_u64(u64::from_be_bytes(*head)).map_err(|_| MessageError::BadField(what))?;
    Ok((network, rest))
}

/// EXT_FRAME: `network id (8) | Ethernet frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMessage<'a> {
    /// The network the frame is on.
    pub network: NetworkId,
    /// The Ethernet frame (checked by the switch, not here).
    pub frame: &'a [u8],
}

impl<'a> FrameMessage<'a> {
    /// Bytes of the body before the frame.
    pub const HEADER_LEN_BYTES: usize = NETWORK_ID_LEN_BYTES;

    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::HEADER_LEN_BYTES, 0);
        Self::encode_header(self.network, &mut out[start..]);
        out.extend_from_slice(self.frame);
    }

    /// Writes the part of the body before the frame into the first
    /// [`FrameMessage::HEADER_LEN_BYTES`] of `room`, for a frame that already
    /// lies right after it.
    pub fn encode_header(network: NetworkId, room: &mut [u8]) {
        room[..NETWORK_ID_LEN_BYTES].copy_from_slice(&network.to_u64().to_be_bytes());
    }

    /// Reads a body.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (network, frame) = decode_network_id(bytes, "EXT_FRAME")?;
        Ok(Self { network, frame })
    }
}

/// OFFLOAD_FRAME: `network id (8) | offloads (4) | Ethernet frame`, the
/// offloads as [`Offload::encode`] writes them (checked against the frame
/// when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadFrameMessage<'a> {
    /// The network the frame is on.
    pub network: NetworkId,
    /// What the receiver completes: checksum, segmentation.
    pub offload: Offload,
    /// The Ethernet frame, up to a 64 KiB super-frame.
    pub frame: &'a [u8],
}

impl<'a> OffloadFrameMessage<'a> {
    /// Bytes of the body before the frame.
    pub const HEADER_LEN_BYTES: usize = NETWORK_ID_LEN_BYTES + OFFLOAD_LEN_BYTES;

    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::HEADER_LEN_BYTES, 0);
        Self::encode_header(self.network, self.offload, &mut out[start..]);
        out.extend_from_slice(self.frame);
    }

    /// Writes the part of the body before the frame into the first
    /// [`OffloadFrameMessage::HEADER_LEN_BYTES`] of `room`, for a frame that
    /// already lies right after it.
    pub fn encode_header(network: NetworkId, offload: Offload, room: &mut [u8]) {
        FrameMessage::encode_header(network, room);
        room[NETWORK_ID_LEN_BYTES..Self::HEADER_LEN_BYTES].copy_from_slice(&offload.encode());
    }

    /// Reads a body; offloads that do not fit the frame are refused.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (network, rest) = decode_network_id(bytes, "OFFLOAD_FRAME")?;
        let (offload, frame) = rest
            .split_first_chunk::<OFFLOAD_LEN_BYTES>()
            .ok_or(MessageError::Truncated("OFFLOAD_FRAME"))?;
        let offload = Offload::decode(*offload, frame)
            .map_err(|_| MessageError::BadField("OFFLOAD_FRAME offloads"))?;
        Ok(Self {
            network,
            offload,
            frame,
        })
    }
}

/// NETWORK_CONFIG_REQUEST: `network id (8) | revision held (8)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigRequest {
    /// The network asked about.
    pub network: NetworkId,
    /// The config revision the member holds (0: none).
    pub revision: u64,
}

impl ConfigRequest {
    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_network_id(self.network, out);
        out.extend_from_slice(&self.revision.to_be_bytes());
    }

    /// Reads a body. The revision is optional (a request without one holds
    /// no config); anything after it is ignored, for later versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let (network, rest) = decode_network_id(bytes, "NETWORK_CONFIG_REQUEST")?;
        let revision = rest
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_be_bytes(*b));
        Ok(Self { network, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;

    fn nwid() -> NetworkId {
        NetworkId::new(Address::from_u64(0x5b51b6c335).unwrap(), 0x1234)
    }

    #[test]
    fn frames_round_trip_and_short_bodies_are_refused() {
        let mut out = Vec::new();
        FrameMessage {
            network: nwid(),
            frame: b"frame",
        }
        .encode(&mut out);
        let m = FrameMessage::decode(&out).unwrap();
        assert_eq!((m.network, m.frame), (nwid(), &b"frame"[..]));
        assert_eq!(
            FrameMessage::decode(&out[..7]),
            Err(MessageError::Truncated("EXT_FRAME"))
        );
    }

    #[test]
    fn offload_frames_round_trip_and_offloads_must_fit_the_frame() {
        use crate::offload::{Segmentation, SegmentationKind};
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut frame, &[7; 3_000])
            .unwrap();
        let offload = Offload {
            partial_checksum: true,
            segmentation: Some(Segmentation {
                kind: SegmentationKind::Tcp4,
                segment_size: 1_000,
            }),
        };
        let mut out = Vec::new();
        OffloadFrameMessage {
            network: nwid(),
            offload,
            frame: &frame,
        }
        .encode(&mut out);
        let m = OffloadFrameMessage::decode(&out).unwrap();
        assert_eq!(
            (m.network, m.offload, m.frame),
            (nwid(), offload, &frame[..])
        );
        // Segmentation of a frame that is not TCP is refused.
        let mut bad = out[..OffloadFrameMessage::HEADER_LEN_BYTES].to_vec();
        bad.extend_from_slice(b"not an IP frame at all");
        assert_eq!(
            OffloadFrameMessage::decode(&bad),
            Err(MessageError::BadField("OFFLOAD_FRAME offloads"))
        );
        assert_eq!(
            OffloadFrameMessage::decode(&out[..10]),
            Err(MessageError::Truncated("OFFLOAD_FRAME"))
        );
    }

    #[test]
    fn config_requests_round_trip_with_or_without_a_revision() {
        let mut out = Vec::new();
        let r = ConfigRequest {
            network: nwid(),
            revision: 42,
        };
        r.encode(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(ConfigRequest::decode(&out), Ok(r));
        assert_eq!(ConfigRequest::decode(&out[..8]).unwrap().revision, 0);
        assert!(ConfigRequest::decode(&out[..5]).is_err());
    }

    #[test]
    fn a_network_id_of_zero_is_refused() {
        assert_eq!(
            decode_network_id(&[0; 8], "x"),
            Err(MessageError::BadField("x"))
        );
    }
}
