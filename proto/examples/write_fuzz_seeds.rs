//! Writes the seeds of the `packet_decode` fuzz target (`fuzz/seeds/packet_decode/`):
//! packets armored with the target's key and cut into fragments.
//!
//! `cargo run -p vnet-proto --example write_fuzz_seeds` (from the repository's root).

use std::path::Path;

use vnet_proto::address::Address;
use vnet_proto::armor::{PacketKey, armor};
use vnet_proto::constants::PACKET_HEADER_LEN_BYTES;
use vnet_proto::fragment::{fragment_count, write_fragments};
use vnet_proto::verb::Verb;
use vnet_proto::wire::{PacketHeader, increment_hops};

fn cut(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = write_fragments(packet, mtu, |d| out.push(d.to_vec())).unwrap();
    assert_eq!(n, out.len());
    out
}

/// The key the `packet_decode` fuzz target dearmors with.
const FUZZ_KEY: [u8; 32] = [0x42; 32];

/// One seed: datagrams, each prefixed with its length as two big-endian bytes
/// (bit 15 set: advance the fuzz target's clock by 600 ms first).
fn seed_file(datagrams: &[(&[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (d, advance) in datagrams {
        let len = d.len() as u16 | if *advance { 0x8000 } else { 0 };
        assert!(d.len() < 0x8000);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn armored(counter: u64, body: &[u8], verb: Verb, mtu: usize, encrypt: bool) -> Vec<Vec<u8>> {
    let key = PacketKey::from_bytes(FUZZ_KEY);
    let len = PACKET_HEADER_LEN_BYTES + 1 + body.len();
    let header = PacketHeader {
        counter,
        dest: Address::from_u64(0x5b51b6c335).unwrap(),
        src: Address::from_u64(0x5d4d6e8499).unwrap(),
        hops: 0,
        key_slot: if encrypt { 1 } else { 0 },
        more_fragments: fragment_count(len, mtu) > 1,
        clear: false,
        aes_gcm: false,
    };
    let mut packet = vec![0u8; PACKET_HEADER_LEN_BYTES];
    header.encode_into(&mut packet);
    packet.push(verb.into());
    packet.extend_from_slice(body);
    armor(&key, &mut packet, encrypt);
    cut(&packet, mtu)
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/packet_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let text: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();

    let nop = armored(1, &[], Verb::Nop, 1432, true);
    let echo = armored(2, b"ping", Verb::Echo, 1432, true);
    let hello = armored(
        0x1234_5678_9abc_def0,
        &text[..120],
        Verb::Hello,
        1432,
        false,
    );
    let big = armored(3, &text, Verb::Frame, 1432, true);
    let small_mtu = armored(4, &text[..900], Verb::Frame, 100, true);
    let other = armored(5, &text[..400], Verb::WorldUpdate, 200, true);
    assert_eq!(big.len(), 3);
    assert_eq!(small_mtu.len(), 12);

    let mut relayed = echo[0].clone();
    increment_hops(&mut relayed).unwrap();

    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("nop", seed_file(&[(&nop[0], false)])),
        ("echo_relayed", seed_file(&[(&relayed, false)])),
        ("hello_clear", seed_file(&[(&hello[0], false)])),
        (
            "fragmented_in_order",
            seed_file(&big.iter().map(|d| (&d[..], false)).collect::<Vec<_>>()),
        ),
        (
            "fragmented_reversed_with_duplicate",
            seed_file(&[
                (&big[2], false),
                (&big[1], false),
                (&big[2], false),
                (&big[0], false),
            ]),
        ),
    ];
    // Twelve pieces shuffled, interleaved with another packet's pieces.
    let mut mixed: Vec<(&[u8], bool)> = Vec::new();
    let order = [7, 0, 10, 3, 1, 11, 9, 2, 8, 4, 6, 5];
    for (n, &i) in order.iter().enumerate() {
        mixed.push((&small_mtu[i], false));
        if let Some(d) = other.get(n) {
            mixed.push((d, false));
        }
    }
    seeds.push(("interleaved_small_mtu", seed_file(&mixed)));
    // A head, then its fragment only after the timeout.
    seeds.push((
        "timed_out",
        seed_file(&[(&big[0], false), (&big[1], true), (&big[2], true)]),
    ));
    for (name, bytes) in &mut seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}
