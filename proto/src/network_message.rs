//! Bodies of the virtual-network verbs that name a network (PROTOCOL.md
//! §4.4–4.5): EXT_FRAME, NETWORK_CONFIG_REQUEST, and the network id that
//! follows the code in an ERROR(NETWORK_CONFIG_REQUEST). One encoder and
//! one decoder each; the node never builds or parses these bytes itself.

use serde::{Deserialize, Serialize};

use crate::constants::{
    JOIN_KEY_MAX_LEN_BYTES, MAX_ADVERTISED_ROUTES, NETWORK_ID_LEN_BYTES, OFFLOAD_LEN_BYTES,
    REQUEST_META_MAX_BYTES,
};
use crate::ip_prefix::Cidr;
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

/// What a member tells its controller with each config request (the JSON
/// after the revision, PROTOCOL.md §4.4). Checked when decoded: the key at
/// most [`JOIN_KEY_MAX_LEN_BYTES`] of printable ASCII, at most
/// [`MAX_ADVERTISED_ROUTES`] routes, each a valid CIDR network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMeta {
    /// A join key the member was given (`vnet-cli join <nwid> --key`): it
    /// authorizes the member at first contact if the controller issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_key: Option<String>,
    /// Networks behind the member it offers to route (`advertiseRoutes`;
    /// `0.0.0.0/0` or `::/0` for an exit node), waiting for approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertise_routes: Vec<Cidr>,
}

impl RequestMeta {
    /// Whether there is nothing to tell (then nothing is sent).
    pub fn is_empty(&self) -> bool {
        self.join_key.is_none() && self.advertise_routes.is_empty()
    }

    fn check(self) -> Option<Self> {
        let key_ok = self.join_key.as_ref().is_none_or(|k| {
            !k.is_empty()
                && k.len() <= JOIN_KEY_MAX_LEN_BYTES
                && k.bytes().all(|b| b.is_ascii_graphic())
        });
        (key_ok && self.advertise_routes.len() <= MAX_ADVERTISED_ROUTES).then_some(self)
    }
}

/// NETWORK_CONFIG_REQUEST: `network id (8) | revision held (8) | meta
/// length (2) | meta (JSON)`; the meta part is left out when empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRequest {
    /// The network asked about.
    pub network: NetworkId,
    /// The config revision the member holds (0: none).
    pub revision: u64,
    /// What the member tells its controller.
    pub meta: RequestMeta,
}

impl ConfigRequest {
    /// Appends the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_network_id(self.network, out);
        out.extend_from_slice(&self.revision.to_be_bytes());
        if !self.meta.is_empty() {
            let json = serde_json::to_vec(&self.meta).unwrap_or_default();
            // A meta too long to send (not producible through check()) is left out.
            if let Ok(len) = u16::try_from(json.len())
                && json.len() <= REQUEST_META_MAX_BYTES
            {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&json);
            }
        }
    }

    /// Reads a body. The revision is optional (a request without one holds
    /// no config), so is the meta; anything after the meta is ignored, for
    /// later versions. A meta that is there but malformed refuses the
    /// request.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        const WHAT: &str = "NETWORK_CONFIG_REQUEST";
        let (network, rest) = decode_network_id(bytes, WHAT)?;
        let (revision, rest) = match rest.split_first_chunk::<8>() {
            Some((b, rest)) => (u64::from_be_bytes(*b), rest),
            None => (0, &[][..]),
        };
        let meta = match rest.split_first_chunk::<2>() {
            None => RequestMeta::default(),
            Some((len, rest)) => {
                let len = usize::from(u16::from_be_bytes(*len));
                let json = rest
                    .get(..len)
                    .filter(|_| len <= REQUEST_META_MAX_BYTES)
                    .ok_or(MessageError::Truncated(WHAT))?;
                serde_json::from_slice::<RequestMeta>(json)
                    .ok()
                    .and_then(RequestMeta::check)
                    .ok_or(MessageError::BadField("NETWORK_CONFIG_REQUEST meta"))?
            }
        };
        Ok(Self {
            network,
            revision,
            meta,
        })
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
            meta: RequestMeta::default(),
        };
        r.encode(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(ConfigRequest::decode(&out), Ok(r));
        assert_eq!(ConfigRequest::decode(&out[..8]).unwrap().revision, 0);
        assert!(ConfigRequest::decode(&out[..5]).is_err());
    }

    #[test]
    fn request_meta_round_trips_and_bad_meta_is_refused() {
        let r = ConfigRequest {
            network: nwid(),
            revision: 7,
            meta: RequestMeta {
                join_key: Some("vnk_abc".into()),
                advertise_routes: vec!["192.168.31.0/24".parse().unwrap(), "::/0".parse().unwrap()],
            },
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(ConfigRequest::decode(&out), Ok(r.clone()));
        // Bytes after the meta are for later versions.
        out.extend_from_slice(b"later");
        assert_eq!(ConfigRequest::decode(&out), Ok(r));
        let with_meta = |json: &str| {
            let mut b = nwid().to_u64().to_be_bytes().to_vec();
            b.extend_from_slice(&7u64.to_be_bytes());
            b.extend_from_slice(&(json.len() as u16).to_be_bytes());
            b.extend_from_slice(json.as_bytes());
            ConfigRequest::decode(&b)
        };
        assert!(with_meta("{}").is_ok());
        let bad_meta = Err(MessageError::BadField("NETWORK_CONFIG_REQUEST meta"));
        for bad in [
            r#"{"advertiseRoutes": ["10.0.0.1/24"]}"#,
            r#"{"advertiseRoutes": ["nope"]}"#,
            r#"{"joinKey": ""}"#,
            r#"{"joinKey": "has space"}"#,
            r#"{"surprise": 1}"#,
            "not json",
        ] {
            assert_eq!(with_meta(bad), bad_meta, "{bad}");
        }
        let long = format!(
            r#"{{"joinKey": "{}"}}"#,
            "k".repeat(JOIN_KEY_MAX_LEN_BYTES + 1)
        );
        assert_eq!(with_meta(&long), bad_meta);
        let many: Vec<String> = (0..=MAX_ADVERTISED_ROUTES)
            .map(|i| format!("\"10.{i}.0.0/16\""))
            .collect();
        let many = format!(r#"{{"advertiseRoutes": [{}]}}"#, many.join(","));
        assert_eq!(with_meta(&many), bad_meta);
        // A length beyond the bytes there is a truncated request.
        let mut b = nwid().to_u64().to_be_bytes().to_vec();
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&[0, 50, b'{']);
        assert_eq!(
            ConfigRequest::decode(&b),
            Err(MessageError::Truncated("NETWORK_CONFIG_REQUEST"))
        );
    }

    #[test]
    fn a_network_id_of_zero_is_refused() {
        assert_eq!(
            decode_network_id(&[0; 8], "x"),
            Err(MessageError::BadField("x"))
        );
    }
}
