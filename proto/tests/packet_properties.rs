//! Property tests of the packet layer (§3): the header codec, armor,
//! fragmentation and reassembly, and the replay window. Parsers must refuse
//! bad input with an error (never a panic), give back exactly what was
//! encoded, and armor must refuse every change but the hop count.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use vnet_proto::address::Address;
use vnet_proto::armor::{MacError, PacketKey, armor, dearmor};
use vnet_proto::constants::{
    FRAGMENT_HEADER_LEN_BYTES, MAX_FRAGMENTS, PACKET_HEADER_LEN_BYTES, PACKET_MAX_LEN_BYTES,
    PACKET_MIN_LEN_BYTES, RELAY_MAX_HOPS, REPLAY_WINDOW_PACKETS, UDP_PAYLOAD_MTU_BYTES,
};
use vnet_proto::fragment::{
    MIN_MTU_BYTES, Reassembler, ReassemblyError, fragment_count, write_fragments,
};
use vnet_proto::replay::ReplayWindow;
use vnet_proto::verb::{UnknownVerb, Verb};
use vnet_proto::wire::{
    Datagram, FLAG_HOPS_MASK, FLAGS_OFFSET, FRAGMENT_HOPS_OFFSET, FragmentHeader, MAC_OFFSET,
    PacketHeader, classify, destination, increment_hops,
};

// ---------------------------------------------------------------------------
// Generators and helpers.

fn arb_address() -> impl Strategy<Value = Address> {
    (1u64..(0xff << 32)).prop_map(|v| Address::from_u64(v).unwrap())
}

fn arb_header() -> impl Strategy<Value = PacketHeader> {
    (
        any::<u64>(),
        arb_address(),
        arb_address(),
        0..=RELAY_MAX_HOPS,
        0u8..=3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(counter, dest, src, hops, key_slot, more_fragments, clear, aes_gcm)| PacketHeader {
                counter,
                dest,
                src,
                hops,
                key_slot,
                more_fragments,
                // The clear flag exists only with the static key, AES-GCM
                // only with session keys.
                clear: clear && key_slot == 0,
                aes_gcm: aes_gcm && key_slot != 0,
            },
        )
}

fn arb_fragment_header() -> impl Strategy<Value = FragmentHeader> {
    (
        any::<u64>(),
        arb_address(),
        2u8..=MAX_FRAGMENTS as u8,
        any::<u8>(),
        0..=RELAY_MAX_HOPS,
    )
        .prop_map(|(counter, dest, total, index, hops)| FragmentHeader {
            counter,
            dest,
            total,
            index: 1 + index % (total - 1),
            hops,
        })
}

/// A tiny deterministic generator, so big buffers and orders come from one seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn rng(seed: u64) -> XorShift {
    XorShift(seed | 1)
}

/// A packet of `len` bytes (at least the header) with `header` written and a
/// pseudo-random body.
fn make_packet(header: &PacketHeader, len: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let mut buf: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
    header.encode_into(&mut buf);
    buf
}

/// Largest packet that fits in `MAX_FRAGMENTS` pieces at `mtu`.
fn max_len_at(mtu: usize) -> usize {
    (mtu + (MAX_FRAGMENTS - 1) * (mtu - FRAGMENT_HEADER_LEN_BYTES)).min(PACKET_MAX_LEN_BYTES)
}

fn cut(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = write_fragments(packet, mtu, |d| out.push(d.to_vec())).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Feeds one datagram to a reassembler the way a node would.
fn feed(
    r: &mut Reassembler,
    now_ms: u64,
    from: SocketAddr,
    datagram: &[u8],
) -> Result<Option<Vec<u8>>, ReassemblyError> {
    match classify(datagram) {
        Ok(Datagram::Packet { .. }) => r.push_head(now_ms, from, datagram),
        Ok(Datagram::Fragment { .. }) => r.push_fragment(now_ms, from, datagram),
        Err(e) => Err(e.into()),
    }
}

fn source() -> SocketAddr {
    "198.51.100.7:9993".parse().unwrap()
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn classify_never_panics_and_whatever_decodes_re_encodes(
        bytes in vec(any::<u8>(), 0..200),
        fragment_form in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if fragment_form && bytes.len() > 13 {
            // Make the fragment path likely too.
            bytes[13] = 0xff;
        }
        match classify(&bytes) {
            Ok(Datagram::Packet { header, bytes: whole }) => {
                prop_assert_eq!(whole.len(), bytes.len());
                prop_assert!(bytes.len() >= PACKET_MIN_LEN_BYTES);
                let mut out = [0u8; MAC_OFFSET];
                header.encode_into(&mut out);
                prop_assert_eq!(&out[..], &bytes[..MAC_OFFSET]);
                prop_assert_eq!(destination(&bytes), Some(header.dest));
            }
            Ok(Datagram::Fragment { header, data }) => {
                prop_assert!(!data.is_empty());
                let mut out = [0u8; FRAGMENT_HEADER_LEN_BYTES];
                header.encode_into(&mut out);
                prop_assert_eq!(&out[..], &bytes[..FRAGMENT_HEADER_LEN_BYTES]);
                prop_assert_eq!(data, &bytes[FRAGMENT_HEADER_LEN_BYTES..]);
                prop_assert_eq!(destination(&bytes), Some(header.dest));
            }
            Err(_) => {}
        }
        let _ = PacketHeader::decode(&bytes);
        let _ = FragmentHeader::decode(&bytes);
    }

    #[test]
    fn increment_hops_never_panics_and_changes_only_the_hop_bits(
        bytes in vec(any::<u8>(), 0..100),
    ) {
        let mut copy = bytes.clone();
        match increment_hops(&mut copy) {
            Ok(hops) => {
                prop_assert!((1..=RELAY_MAX_HOPS).contains(&hops));
                let at = match classify(&copy).unwrap() {
                    Datagram::Packet { header, .. } => { prop_assert_eq!(header.hops, hops); FLAGS_OFFSET }
                    Datagram::Fragment { header, .. } => { prop_assert_eq!(header.hops, hops); FRAGMENT_HOPS_OFFSET }
                };
                for (i, (a, b)) in bytes.iter().zip(&copy).enumerate() {
                    if i == at {
                        prop_assert_eq!(a & !FLAG_HOPS_MASK, b & !FLAG_HOPS_MASK);
                        prop_assert_eq!(a & FLAG_HOPS_MASK, hops - 1);
                    } else {
                        prop_assert_eq!(a, b);
                    }
                }
            }
            Err(_) => prop_assert_eq!(copy, bytes),
        }
    }

    #[test]
    fn packet_header_round_trips(header in arb_header(), body in 1usize..64) {
        let packet = make_packet(&header, PACKET_HEADER_LEN_BYTES + body, 1);
        prop_assert_eq!(PacketHeader::decode(&packet), Ok(header));
        prop_assert_eq!(
            classify(&packet),
            Ok(Datagram::Packet { header, bytes: &packet })
        );
    }

    #[test]
    fn fragment_header_round_trips(header in arb_fragment_header(), data in vec(any::<u8>(), 1..64)) {
        let mut buf = vec![0u8; FRAGMENT_HEADER_LEN_BYTES];
        header.encode_into(&mut buf);
        buf.extend_from_slice(&data);
        prop_assert_eq!(FragmentHeader::decode(&buf), Ok(header));
        prop_assert_eq!(classify(&buf), Ok(Datagram::Fragment { header, data: &data }));
    }

    #[test]
    fn armor_round_trips_and_refuses_tampering(
        key in any::<[u8; 32]>(),
        other_key in any::<[u8; 32]>(),
        header in arb_header(),
        body in vec(any::<u8>(), 1..2000),
        encrypt in any::<bool>(),
        flip in any::<(usize, u8)>(),
        new_hops in 0u8..8,
    ) {
        let key = PacketKey::from_bytes(key);
        let mut packet = vec![0u8; PACKET_HEADER_LEN_BYTES];
        header.encode_into(&mut packet);
        packet.extend_from_slice(&body);
        armor(&key, &mut packet, encrypt);
        prop_assert_eq!(classify(&packet).unwrap(), Datagram::Packet { header, bytes: &packet });
        let armored = packet.clone();

        let mut copy = armored.clone();
        prop_assert_eq!(dearmor(&key, &mut copy, encrypt), Ok(()));
        prop_assert_eq!(&copy[PACKET_HEADER_LEN_BYTES..], &body[..]);
        prop_assert_eq!(&copy[..PACKET_HEADER_LEN_BYTES], &armored[..PACKET_HEADER_LEN_BYTES]);

        // Any single bit flip outside the hop bits is refused, and changes nothing.
        let (byte, bit) = (flip.0 % armored.len(), flip.1 % 8);
        let hop_bit = byte == FLAGS_OFFSET && bit < 3;
        let mut copy = armored.clone();
        copy[byte] ^= 1 << bit;
        let tampered = copy.clone();
        let result = dearmor(&key, &mut copy, encrypt);
        prop_assert_eq!(result.is_ok(), hop_bit);
        if !hop_bit {
            prop_assert_eq!(copy, tampered);
        }

        // The hop count may change freely.
        let mut copy = armored.clone();
        copy[FLAGS_OFFSET] = (copy[FLAGS_OFFSET] & !FLAG_HOPS_MASK) | new_hops;
        prop_assert_eq!(dearmor(&key, &mut copy, encrypt), Ok(()));
        prop_assert_eq!(&copy[PACKET_HEADER_LEN_BYTES..], &body[..]);

        // Another key, or a truncated packet, is refused.
        if other_key != *key.as_bytes() {
            let mut copy = armored.clone();
            prop_assert_eq!(dearmor(&PacketKey::from_bytes(other_key), &mut copy, encrypt), Err(MacError));
        }
        let mut short = armored[..armored.len() - 1].to_vec();
        prop_assert_eq!(dearmor(&key, &mut short, encrypt), Err(MacError));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fragments_reassemble_in_any_order_with_duplicates(
        header in arb_header(),
        mtu in prop_oneof![Just(UDP_PAYLOAD_MTU_BYTES), MIN_MTU_BYTES..=1500usize],
        len_pick in any::<u64>(),
        seed in any::<u64>(),
        duplicates in 0usize..8,
    ) {
        let max = max_len_at(mtu);
        let len = PACKET_MIN_LEN_BYTES + (len_pick % (max - PACKET_MIN_LEN_BYTES + 1) as u64) as usize;
        let mut header = header;
        header.more_fragments = fragment_count(len, mtu) > 1;
        let packet = make_packet(&header, len, seed);
        let pieces = cut(&packet, mtu);
        prop_assert_eq!(pieces.len(), fragment_count(len, mtu));
        prop_assert!(pieces.len() <= MAX_FRAGMENTS);
        prop_assert!(pieces.iter().all(|p| p.len() <= mtu));
        if pieces.len() == 1 {
            prop_assert_eq!(&pieces[0], &packet);
            return Ok(());
        }

        // A random order, with some pieces repeated somewhere after their first copy.
        let mut r = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, r.below(i + 1));
        }
        for _ in 0..duplicates {
            let at = r.below(order.len());
            let again = order[r.below(at + 1)];
            order.insert(at + 1, again);
        }

        let mut reassembler = Reassembler::new();
        let mut completed = None;
        let mut seen = BTreeSet::new();
        for &i in &order {
            let result = feed(&mut reassembler, 5, source(), &pieces[i]);
            if completed.is_some() {
                // After completion late duplicates start a new entry: a second
                // copy of one is a duplicate there, and if every piece comes
                // again the packet is put together again (the replay window,
                // after the MAC, is what drops repeated packets).
                match result {
                    Ok(None) | Err(ReassemblyError::Duplicate { .. }) => {}
                    Ok(Some(again)) => prop_assert_eq!(&again, &packet),
                    other => prop_assert!(false, "{:?}", other),
                }
            } else if !seen.insert(i) {
                prop_assert!(matches!(result, Err(ReassemblyError::Duplicate { .. })), "{:?}", result);
            } else if seen.len() == pieces.len() {
                completed = Some(result.unwrap().expect("all pieces arrived"));
            } else {
                prop_assert_eq!(result, Ok(None));
            }
        }
        prop_assert_eq!(completed.as_ref(), Some(&packet));
        prop_assert!(reassembler.stats().completed >= 1);
    }

    #[test]
    fn armored_fragmented_packets_survive_the_trip(
        key in any::<[u8; 32]>(),
        header in arb_header(),
        body_len in 1usize..=65536,
        seed in any::<u64>(),
    ) {
        let key = PacketKey::from_bytes(key);
        let len = PACKET_HEADER_LEN_BYTES + body_len;
        let mut header = header;
        header.more_fragments = fragment_count(len, UDP_PAYLOAD_MTU_BYTES) > 1;
        let plain = make_packet(&header, len, seed);
        let mut packet = plain.clone();
        armor(&key, &mut packet, true);
        let mut pieces = cut(&packet, UDP_PAYLOAD_MTU_BYTES);
        let mut r = rng(seed);
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, r.below(i + 1));
        }
        // Relays may bump the hop count of any piece.
        for piece in &mut pieces {
            if r.below(2) == 0 {
                let _ = increment_hops(piece);
            }
        }
        let mut received = if pieces.len() == 1 {
            pieces.pop()
        } else {
            let mut reassembler = Reassembler::new();
            let mut out = None;
            for piece in &pieces {
                out = out.or(feed(&mut reassembler, 0, source(), piece).unwrap());
            }
            out
        }
        .expect("complete");
        prop_assert_eq!(dearmor(&key, &mut received, true), Ok(()));
        prop_assert_eq!(&received[PACKET_HEADER_LEN_BYTES..], &plain[PACKET_HEADER_LEN_BYTES..]);
    }

    #[test]
    fn replay_window_matches_a_set_model(
        steps in vec((any::<bool>(), 0u64..3 * REPLAY_WINDOW_PACKETS), 1..400),
        start in any::<u64>(),
    ) {
        let start = start >> 1;
        let mut window = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let mut highest = 0u64;
        let mut cursor = start;
        for (forward, delta) in steps {
            let counter = if forward { cursor.saturating_add(delta % 64) } else { cursor.saturating_sub(delta) };
            cursor = cursor.max(counter);
            let model = (counter > highest || highest - counter < REPLAY_WINDOW_PACKETS)
                && !seen.contains(&counter);
            prop_assert_eq!(window.check(counter), model);
            prop_assert_eq!(window.accept(counter), model);
            if model {
                seen.insert(counter);
                highest = highest.max(counter);
            }
            prop_assert!(!window.check(counter));
        }
    }
}

#[test]
fn verbs_round_trip() {
    // The verb codes of PROTOCOL.md §3.5, written out independently of `Verb::ALL`.
    const SPEC: [(u8, Verb); 21] = [
        (0x00, Verb::Nop),
        (0x01, Verb::Hello),
        (0x02, Verb::Error),
        (0x03, Verb::Ok),
        (0x04, Verb::Whois),
        (0x05, Verb::Rendezvous),
        (0x06, Verb::Frame),
        (0x07, Verb::ExtFrame),
        (0x08, Verb::MulticastFrame),
        (0x09, Verb::NetworkConfigRequest),
        (0x0a, Verb::NetworkConfig),
        (0x0b, Verb::NetworkCredentials),
        (0x0c, Verb::Echo),
        (0x0d, Verb::PushDirectPaths),
        (0x0e, Verb::WorldUpdate),
        (0x0f, Verb::Punch),
        (0x10, Verb::OffloadFrame),
        (0x11, Verb::Capabilities),
        (0x12, Verb::PathMtuProbe),
        (0x13, Verb::MulticastLike),
        (0x14, Verb::MulticastGather),
    ];
    assert_eq!(Verb::ALL.len(), SPEC.len(), "a verb is missing from SPEC");
    let mut decoded = 0;
    for code in 0..=255u8 {
        match SPEC.iter().find(|(c, _)| *c == code) {
            Some(&(_, verb)) => {
                assert_eq!(Verb::try_from(code), Ok(verb), "code 0x{code:02x}");
                assert_eq!(u8::from(verb), code);
                decoded += 1;
            }
            None => assert_eq!(
                Verb::try_from(code),
                Err(UnknownVerb(code)),
                "code 0x{code:02x} names no verb"
            ),
        }
    }
    assert_eq!(decoded, SPEC.len());
}
