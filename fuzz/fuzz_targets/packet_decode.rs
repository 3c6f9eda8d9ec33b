//! The packet layer on arbitrary datagrams: `classify`, `dearmor`,
//! `increment_hops` and a `Reassembler` must never panic, and what they
//! accept must be consistent.
//!
//! Input: a sequence of datagrams from one source, each prefixed with its
//! length as two big-endian bytes; bit 15 of the prefix set means "advance
//! the clock by 600 ms first" (two of those time out a pending packet). A
//! short last datagram is taken as it is. Seeds (`seeds/packet_decode/`) are
//! packets armored with `KEY` and cut into fragments, written by
//! `cargo run -p vnet-proto --example write_fuzz_seeds`.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use vnet_proto::armor::{PacketKey, armor, dearmor};
use vnet_proto::constants::{FRAGMENT_HEADER_LEN_BYTES, PACKET_HEADER_LEN_BYTES, RELAY_MAX_HOPS};
use vnet_proto::fragment::Reassembler;
use vnet_proto::verb::Verb;
use vnet_proto::wire::{
    Datagram, FLAG_HOPS_MASK, FLAG_KEY_SLOT_MASK, FLAGS_OFFSET, FRAGMENT_HOPS_OFFSET, MAC_OFFSET,
    classify, destination, increment_hops,
};

/// The key the seeds are armored with.
const KEY: [u8; 32] = [0x42; 32];

/// Fewer pending packets than a node holds, so eviction is reached.
const MAX_PENDING: usize = 4;

fuzz_target!(|data: &[u8]| {
    let key = PacketKey::from_bytes(KEY);
    let from: SocketAddr = "192.0.2.1:9993".parse().unwrap();
    let mut reassembler = Reassembler::with_max_pending(MAX_PENDING);
    let mut now_ms = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        let prefix = u16::from_be_bytes([rest[0], rest[1]]);
        if prefix & 0x8000 != 0 {
            now_ms += 600;
        }
        now_ms += 1;
        let len = usize::from(prefix & 0x7fff).min(rest.len() - 2);
        let datagram = &rest[2..2 + len];
        rest = &rest[2 + len..];
        one_datagram(&key, &mut reassembler, now_ms, from, datagram);
    }
    assert!(reassembler.pending() <= MAX_PENDING);
});

fn one_datagram(
    key: &PacketKey,
    reassembler: &mut Reassembler,
    now_ms: u64,
    from: SocketAddr,
    datagram: &[u8],
) {
    let _ = destination(datagram);
    check_increment_hops(datagram);
    match classify(datagram) {
        Ok(Datagram::Packet { header, bytes }) => {
            assert_eq!(bytes.len(), datagram.len());
            let mut encoded = [0u8; MAC_OFFSET];
            header.encode_into(&mut encoded);
            assert_eq!(encoded, datagram[..MAC_OFFSET], "header does not re-encode");
            assert_eq!(destination(datagram), Some(header.dest));
            if header.more_fragments {
                if let Ok(Some(packet)) = reassembler.push_head(now_ms, from, datagram) {
                    whole_packet(key, reassembler, packet);
                }
            } else {
                open(key, datagram.to_vec());
            }
        }
        Ok(Datagram::Fragment { header, data }) => {
            assert!(!data.is_empty());
            let mut encoded = [0u8; FRAGMENT_HEADER_LEN_BYTES];
            header.encode_into(&mut encoded);
            assert_eq!(encoded, datagram[..FRAGMENT_HEADER_LEN_BYTES]);
            if let Ok(Some(packet)) = reassembler.push_fragment(now_ms, from, datagram) {
                whole_packet(key, reassembler, packet);
            }
        }
        Err(_) => {}
    }
}

/// A reassembled packet is a packet head, flags as sent; open it, then give
/// the buffer back.
fn whole_packet(key: &PacketKey, reassembler: &mut Reassembler, packet: Vec<u8>) {
    match classify(&packet) {
        Ok(Datagram::Packet { header, .. }) => assert!(header.more_fragments),
        other => panic!("reassembled something that is not a head: {other:?}"),
    }
    let packet = open(key, packet);
    reassembler.recycle(packet);
}

/// Dearmors as a node would (encrypted unless key slot 0 says HELLO in clear);
/// if the MAC verifies, re-armoring gives back the same bytes.
fn open(key: &PacketKey, mut packet: Vec<u8>) -> Vec<u8> {
    let received = packet.clone();
    let clear = packet.len() > PACKET_HEADER_LEN_BYTES
        && packet[FLAGS_OFFSET] & FLAG_KEY_SLOT_MASK == 0
        && packet[PACKET_HEADER_LEN_BYTES] == Verb::Hello.code();
    if dearmor(key, &mut packet, !clear).is_ok() {
        let _ = Verb::try_from(packet[PACKET_HEADER_LEN_BYTES]);
        armor(key, &mut packet, !clear);
        assert_eq!(packet, received, "armor(dearmor(p)) != p");
    }
    packet
}

/// `increment_hops` either changes only the hop bits, by one, or nothing.
fn check_increment_hops(datagram: &[u8]) {
    let mut copy = datagram.to_vec();
    match increment_hops(&mut copy) {
        Ok(hops) => {
            assert!((1..=RELAY_MAX_HOPS).contains(&hops));
            let at = if datagram[13] == 0xff {
                FRAGMENT_HOPS_OFFSET
            } else {
                FLAGS_OFFSET
            };
            assert_eq!(copy[at] & FLAG_HOPS_MASK, hops);
            assert_eq!(datagram[at] & FLAG_HOPS_MASK, hops - 1);
            copy[at] = datagram[at];
            assert_eq!(copy, datagram);
        }
        Err(_) => assert_eq!(copy, datagram),
    }
}
