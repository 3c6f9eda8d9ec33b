//! Packet armor (§3.2): Salsa20/12 encryption and a Poly1305 MAC, applied in
//! place on the caller's buffer, without allocating.
//!
//! With key `K` and the packet's counter as the nonce (its 8 big-endian header
//! bytes), the Salsa20/12 keystream's bytes 0..32 are the one-time Poly1305
//! key, bytes 32..64 are discarded, and the body (bytes 35.., verb and
//! payload) is XORed with the keystream from byte 64 on. The MAC covers the
//! header bytes 0..19 with the hop bits zeroed, then the body as sent.
//!
//! A session packet may instead be sealed with AES-256-GCM (flags bit 7,
//! between peers that both announced it): key derived from the session's
//! packet key ([`AeadKey::derive`]), nonce the 8-byte counter followed by 4
//! zero bytes, the same header bytes as additional data, the body encrypted
//! in place and the 16-byte tag where the MAC goes.

use poly1305::Poly1305;
use poly1305::universal_hash::{KeyInit, UniversalHash};
use salsa20::Salsa12;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::constants::{MAC_LEN_BYTES, PACKET_HEADER_LEN_BYTES};
use crate::wire::{COUNTER_OFFSET, DESTINATION_OFFSET, FLAG_HOPS_MASK, FLAGS_OFFSET, MAC_OFFSET};

/// Length of a packet key.
pub const PACKET_KEY_LEN_BYTES: usize = 32;

/// Bytes of the first Poly1305 input chunk: the 19 AAD bytes and the first 45
/// body bytes make four whole blocks, so the rest of the body is block-aligned
/// in place and goes through Poly1305's parallel path without copying.
const FIRST_CHUNK_LEN_BYTES: usize = 64;
/// Body bytes in the first chunk.
const FIRST_CHUNK_BODY_BYTES: usize = FIRST_CHUNK_LEN_BYTES - MAC_OFFSET;

/// A packet's MAC does not verify (or it is too short to carry one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet MAC does not verify")]
pub struct MacError;

/// A 32-byte key that armors packets: the static key or a session key. Wiped
/// on drop; deliberately not `PartialEq` (a plain comparison is not constant time).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PacketKey([u8; PACKET_KEY_LEN_BYTES]);

impl PacketKey {
    /// Wraps 32 bytes as a packet key.
    pub fn from_bytes(bytes: [u8; PACKET_KEY_LEN_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; PACKET_KEY_LEN_BYTES] {
        &self.0
    }
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

/// Armors a packet in place: encrypts its body (bytes 35..) if `encrypt`, then
/// writes the MAC over the header's AAD and the body as sent to bytes 19..35.
///
/// `packet` is the whole packet with header bytes 0..19 already written
/// (counter, addresses, flags — including *more fragments*, which the MAC
/// covers). HELLO is the one verb sent with `encrypt = false`.
///
/// # Panics
/// If `packet` is shorter than the 35-byte header.
pub fn armor(key: &PacketKey, packet: &mut [u8], encrypt: bool) {
    assert!(
        packet.len() >= PACKET_HEADER_LEN_BYTES,
        "packet of {} bytes is shorter than its header",
        packet.len()
    );
    let (mut cipher, mac) = start(key, packet);
    let (head, body) = packet.split_at_mut(PACKET_HEADER_LEN_BYTES);
    if encrypt {
        cipher.apply_keystream(body);
    }
    let tag = compute_mac(mac, &aad(head), body);
    head[MAC_OFFSET..PACKET_HEADER_LEN_BYTES].copy_from_slice(&tag);
}

/// Checks a packet's MAC in constant time and, only if it verifies and
/// `encrypted`, decrypts the body (bytes 35..) in place.
///
/// On error nothing has been modified. The hop count is outside the MAC, so
/// relays may change it. A packet shorter than the header is refused.
pub fn dearmor(key: &PacketKey, packet: &mut [u8], encrypted: bool) -> Result<(), MacError> {
    if packet.len() < PACKET_HEADER_LEN_BYTES {
        return Err(MacError);
    }
    let (mut cipher, mac) = start(key, packet);
    let (head, body) = packet.split_at_mut(PACKET_HEADER_LEN_BYTES);
    let mut tag = compute_mac(mac, &aad(head), body);
    let ok: bool = tag
        .as_slice()
        .ct_eq(&head[MAC_OFFSET..PACKET_HEADER_LEN_BYTES])
        .into();
    tag.zeroize();
    if !ok {
        return Err(MacError);
    }
    if encrypted {
        cipher.apply_keystream(body);
    }
    Ok(())
}

/// The header bytes the MAC covers: 0..19 with the hop bits zeroed.
/// How a session packet is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Salsa20/12 and Poly1305, what every node takes.
    Salsa2012Poly1305,
    /// AES-256-GCM (flags bit 7), to peers that announced it.
    Aes256Gcm,
}

/// Label that separates the AES-256-GCM key from the packet key it comes from.
const AEAD_KDF_LABEL: &[u8] = b"vnet packet aes-256-gcm v1";

/// A session direction's AES-256-GCM key (key schedule done once).
pub struct AeadKey(ring::aead::LessSafeKey);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    /// The AES-256-GCM key of a session direction: the first 32 bytes of
    /// SHA-512 over a label and the direction's packet key.
    pub fn derive(key: &PacketKey) -> Self {
        use sha2::{Digest, Sha512};
        let mut h = Sha512::new();
        h.update(AEAD_KDF_LABEL);
        h.update(key.as_bytes());
        let mut digest: [u8; 64] = h.finalize().into();
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &digest[..32])
            .expect("a 32-byte key is an AES-256 key");
        digest.zeroize();
        Self(ring::aead::LessSafeKey::new(unbound))
    }
}

/// The AES-GCM nonce of a packet: its counter, then four zero bytes.
fn aead_nonce(head: &[u8]) -> ring::aead::Nonce {
    let mut nonce = [0u8; ring::aead::NONCE_LEN];
    nonce[..8].copy_from_slice(&head[COUNTER_OFFSET..DESTINATION_OFFSET]);
    ring::aead::Nonce::assume_unique_for_key(nonce)
}

/// Seals a packet (header written, flags bit 7 set) with AES-256-GCM: the
/// body is encrypted in place and the tag written where the MAC goes.
pub fn seal_aes_gcm(key: &AeadKey, packet: &mut [u8]) {
    assert!(
        packet.len() >= PACKET_HEADER_LEN_BYTES,
        "packet of {} bytes is shorter than its header",
        packet.len()
    );
    let (head, body) = packet.split_at_mut(PACKET_HEADER_LEN_BYTES);
    let tag = key
        .0
        .seal_in_place_separate_tag(aead_nonce(head), ring::aead::Aad::from(aad(head)), body)
        .expect("AES-GCM seals any packet this size");
    head[MAC_OFFSET..PACKET_HEADER_LEN_BYTES].copy_from_slice(tag.as_ref());
}

/// Opens an AES-256-GCM packet in place. On error the body may have been
/// overwritten: try another key only on a copy.
pub fn open_aes_gcm(key: &AeadKey, packet: &mut [u8]) -> Result<(), MacError> {
    if packet.len() < PACKET_HEADER_LEN_BYTES {
        return Err(MacError);
    }
    let (head, body) = packet.split_at_mut(PACKET_HEADER_LEN_BYTES);
    let tag = ring::aead::Tag::try_from(&head[MAC_OFFSET..PACKET_HEADER_LEN_BYTES])
        .map_err(|_| MacError)?;
    key.0
        .open_in_place_separate_tag(
            aead_nonce(head),
            ring::aead::Aad::from(aad(head)),
            tag,
            body,
            0..,
        )
        .map(drop)
        .map_err(|_| MacError)
}

fn aad(head: &[u8]) -> [u8; MAC_OFFSET] {
    let mut aad: [u8; MAC_OFFSET] = head[..MAC_OFFSET].try_into().expect("19 bytes");
    aad[FLAGS_OFFSET] &= !FLAG_HOPS_MASK;
    aad
}

/// Keys Salsa20/12 with the packet's counter, takes the one-time Poly1305 key
/// from keystream bytes 0..32 and leaves the cipher at keystream byte 64.
fn start(key: &PacketKey, packet: &[u8]) -> (Salsa12, Poly1305) {
    let nonce: [u8; 8] = packet[COUNTER_OFFSET..DESTINATION_OFFSET]
        .try_into()
        .expect("8 bytes");
    let mut cipher = Salsa12::new(&key.0.into(), &nonce.into());
    let mut block = [0u8; 64];
    cipher.apply_keystream(&mut block);
    let mut mac_key = [0u8; 32];
    mac_key.copy_from_slice(&block[..32]);
    let mac = Poly1305::new(&mac_key.into());
    block.zeroize();
    mac_key.zeroize();
    (cipher, mac)
}

/// Poly1305 over exactly the bytes `aad ‖ body` (no padding between them).
fn compute_mac(mut mac: Poly1305, aad: &[u8; MAC_OFFSET], body: &[u8]) -> [u8; MAC_LEN_BYTES] {
    let mut first = [0u8; FIRST_CHUNK_LEN_BYTES];
    first[..MAC_OFFSET].copy_from_slice(aad);
    let tag = if body.len() >= FIRST_CHUNK_BODY_BYTES {
        first[MAC_OFFSET..].copy_from_slice(&body[..FIRST_CHUNK_BODY_BYTES]);
        let (blocks, _) = poly1305::Block::slice_as_chunks(&first);
        mac.update(blocks);
        let (blocks, tail) = poly1305::Block::slice_as_chunks(&body[FIRST_CHUNK_BODY_BYTES..]);
        mac.update(blocks);
        mac.compute_unpadded(tail)
    } else {
        let len = MAC_OFFSET + body.len();
        first[MAC_OFFSET..len].copy_from_slice(body);
        mac.compute_unpadded(&first[..len])
    };
    first.zeroize();
    tag.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poly1305 over `aad ‖ body` the simple way, for comparison.
    fn reference_mac(key: &[u8; 32], aad: &[u8; MAC_OFFSET], body: &[u8]) -> [u8; 16] {
        let mut all = aad.to_vec();
        all.extend_from_slice(body);
        Poly1305::new(&(*key).into()).compute_unpadded(&all).into()
    }

    #[test]
    fn poly1305_rfc8439_2_5_2() {
        let key: [u8; 32] =
            hex::decode("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
                .unwrap()
                .try_into()
                .unwrap();
        let message = b"Cryptographic Forum Research Group";
        let expected = hex::decode("a8061dc1305136c6c22b8baf0c0127a9").unwrap();
        // The message's first 19 bytes stand in for the AAD, the rest for the body.
        let aad: [u8; MAC_OFFSET] = message[..MAC_OFFSET].try_into().unwrap();
        let tag = compute_mac(Poly1305::new(&key.into()), &aad, &message[MAC_OFFSET..]);
        assert_eq!(tag.as_slice(), expected);
        assert_eq!(
            reference_mac(&key, &aad, &message[MAC_OFFSET..]).as_slice(),
            expected
        );
    }

    #[test]
    fn mac_covers_exact_bytes_at_every_length() {
        let key = [0x5a; 32];
        let aad: [u8; MAC_OFFSET] = std::array::from_fn(|i| i as u8 * 7);
        let body: Vec<u8> = (0..300).map(|i| (i * 31 + 5) as u8).collect();
        for len in 0..body.len() {
            assert_eq!(
                compute_mac(Poly1305::new(&key.into()), &aad, &body[..len]),
                reference_mac(&key, &aad, &body[..len]),
                "body length {len}"
            );
        }
    }

    /// A fixed packet armored by an independent implementation (a few lines of
    /// Python: Salsa20/12 and Poly1305 from their definitions).
    #[test]
    fn known_answer() {
        let key = PacketKey::from_bytes(std::array::from_fn(|i| i as u8 + 1));
        let mut packet: Vec<u8> = (0..100u8).collect();
        // Counter 0x0001020304050607, addresses 08090a0b0c and 0d0e0f1011,
        // flags 0x12 (hops 2, key slot 2); the MAC bytes are overwritten.
        armor(&key, &mut packet, true);
        assert_eq!(hex::encode(&packet), KNOWN_ARMORED);
        let mut clear: Vec<u8> = (0..100u8).collect();
        armor(&key, &mut clear, false);
        assert_eq!(hex::encode(&clear), KNOWN_CLEAR);
        dearmor(&key, &mut packet, true).unwrap();
        assert_eq!(
            packet[PACKET_HEADER_LEN_BYTES..],
            clear[PACKET_HEADER_LEN_BYTES..]
        );
    }

    const KNOWN_ARMORED: &str = concat!(
        "000102030405060708090a0b0c0d0e0f101112d857c1de261bafdb0dafc38213",
        "7771667d76a4a3cc3ace6516e447e6a0941849291813fc31f39a99212709d654",
        "bbe450e45b937cd8532852bf20799a366f721578300e72f1ed50a1f65af13790",
        "b78201a7"
    );
    const KNOWN_CLEAR: &str = concat!(
        "000102030405060708090a0b0c0d0e0f101112f2234452c7b15362e0aa806f52",
        "a5f85d232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
        "60616263"
    );

    #[test]
    fn aes_gcm_known_answer() {
        let key = AeadKey::derive(&PacketKey::from_bytes(std::array::from_fn(|i| i as u8 + 1)));
        let mut packet: Vec<u8> = (0..100u8).collect();
        // As above, with flags 0x92: AES-GCM, key slot 2, hops 2.
        packet[FLAGS_OFFSET] |= 0x80;
        seal_aes_gcm(&key, &mut packet);
        assert_eq!(hex::encode(&packet), KNOWN_AES_GCM);
        open_aes_gcm(&key, &mut packet).unwrap();
        let mut plain: Vec<u8> = (0..100u8).collect();
        plain[FLAGS_OFFSET] |= 0x80;
        assert_eq!(
            packet[PACKET_HEADER_LEN_BYTES..],
            plain[PACKET_HEADER_LEN_BYTES..]
        );
    }

    /// Also what pyca/cryptography's `AESGCM` gives for the same key
    /// (SHA-512 of the label and the packet key, first 32 bytes), nonce,
    /// additional data and body.
    const KNOWN_AES_GCM: &str = concat!(
        "000102030405060708090a0b0c0d0e0f1011927ae570e0a683e716b6a389f33a",
        "613eb5be115a68db806d21885b4e4dd2baa38ff4533fab9a0b5bba00b580eb2c",
        "98d0512a345a1623374eb6a6fbed74efc2142f09d04f9d28025c0638cb39ce3f",
        "2584ebd4"
    );

    #[test]
    fn aes_gcm_round_trip_and_tamper() {
        let key = AeadKey::derive(&PacketKey::from_bytes([3; 32]));
        for body_len in [1usize, 16, 17, 100, 1400] {
            let mut packet = vec![0u8; PACKET_HEADER_LEN_BYTES + body_len];
            packet[..MAC_OFFSET].copy_from_slice(&[
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                7,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                0b1000_1001,
            ]);
            for (i, b) in packet[PACKET_HEADER_LEN_BYTES..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let plain = packet.clone();
            seal_aes_gcm(&key, &mut packet);
            assert_ne!(
                packet[PACKET_HEADER_LEN_BYTES..],
                plain[PACKET_HEADER_LEN_BYTES..]
            );
            let sealed = packet.clone();
            let mut copy = sealed.clone();
            open_aes_gcm(&key, &mut copy).unwrap();
            assert_eq!(
                copy[PACKET_HEADER_LEN_BYTES..],
                plain[PACKET_HEADER_LEN_BYTES..]
            );
            for byte in 0..sealed.len() {
                for bit in 0..8 {
                    let mut copy = sealed.clone();
                    copy[byte] ^= 1 << bit;
                    let hop_bit = byte == FLAGS_OFFSET && bit < 3;
                    assert_eq!(
                        open_aes_gcm(&key, &mut copy).is_ok(),
                        hop_bit,
                        "byte {byte} bit {bit}"
                    );
                }
            }
            let other = AeadKey::derive(&PacketKey::from_bytes([4; 32]));
            assert_eq!(open_aes_gcm(&other, &mut sealed.clone()), Err(MacError));
            // The Salsa20/12 suite does not open it either.
            let salsa = PacketKey::from_bytes([3; 32]);
            assert_eq!(dearmor(&salsa, &mut sealed.clone(), true), Err(MacError));
        }
    }

    #[test]
    fn body_is_xored_with_keystream_from_byte_64() {
        let key = PacketKey::from_bytes([9; 32]);
        let mut packet = vec![0u8; PACKET_HEADER_LEN_BYTES + 200];
        packet[..8].copy_from_slice(&42u64.to_be_bytes());
        armor(&key, &mut packet, true);
        let mut stream = vec![0u8; 64 + 200];
        Salsa12::new(&[9; 32].into(), &42u64.to_be_bytes().into()).apply_keystream(&mut stream);
        assert_eq!(packet[PACKET_HEADER_LEN_BYTES..], stream[64..]);
        let aad: [u8; MAC_OFFSET] = packet[..MAC_OFFSET].try_into().unwrap();
        let mac_key: [u8; 32] = stream[..32].try_into().unwrap();
        assert_eq!(
            packet[MAC_OFFSET..PACKET_HEADER_LEN_BYTES],
            reference_mac(&mac_key, &aad, &packet[PACKET_HEADER_LEN_BYTES..])
        );
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = PacketKey::from_bytes([3; 32]);
        for body_len in [1usize, 2, 44, 45, 46, 100, 1400] {
            for encrypt in [true, false] {
                let mut packet = vec![0u8; PACKET_HEADER_LEN_BYTES + body_len];
                packet[..MAC_OFFSET].copy_from_slice(&[
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    7,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    0b0100_1001,
                ]);
                for (i, b) in packet[PACKET_HEADER_LEN_BYTES..].iter_mut().enumerate() {
                    *b = i as u8;
                }
                let plain = packet.clone();
                armor(&key, &mut packet, encrypt);
                assert_eq!(
                    packet[PACKET_HEADER_LEN_BYTES..] == plain[PACKET_HEADER_LEN_BYTES..],
                    !encrypt
                );
                let armored = packet.clone();

                let mut copy = armored.clone();
                dearmor(&key, &mut copy, encrypt).unwrap();
                assert_eq!(
                    copy[PACKET_HEADER_LEN_BYTES..],
                    plain[PACKET_HEADER_LEN_BYTES..]
                );

                for byte in 0..armored.len() {
                    for bit in 0..8 {
                        let mut copy = armored.clone();
                        copy[byte] ^= 1 << bit;
                        let hop_bit = byte == FLAGS_OFFSET && bit < 3;
                        let result = dearmor(&key, &mut copy, encrypt);
                        assert_eq!(result.is_ok(), hop_bit, "byte {byte} bit {bit}");
                        if result.is_err() {
                            let mut expected = armored.clone();
                            expected[byte] ^= 1 << bit;
                            assert_eq!(copy, expected, "a refused packet must not change");
                        }
                    }
                }

                let mut copy = armored.clone();
                assert_eq!(
                    dearmor(&PacketKey::from_bytes([4; 32]), &mut copy, encrypt),
                    Err(MacError)
                );
                assert_eq!(copy, armored);
            }
        }
    }

    #[test]
    fn short_input_is_refused_not_a_panic() {
        let key = PacketKey::from_bytes([0; 32]);
        for len in 0..PACKET_HEADER_LEN_BYTES {
            assert_eq!(dearmor(&key, &mut vec![0u8; len], true), Err(MacError));
        }
        // A header alone (no body) armors and dearmors: the MAC covers the AAD only.
        let mut header_only = vec![1u8; PACKET_HEADER_LEN_BYTES];
        armor(&key, &mut header_only, true);
        assert_eq!(dearmor(&key, &mut header_only, true), Ok(()));
    }
}
