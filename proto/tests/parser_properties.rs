//! Property tests of the core's parsers: world files, identities, endpoints
//! and addresses. Every parser must refuse bad input with an error (never a
//! panic), accept what the encoder writes, and give back exactly what was
//! encoded.
//!
//! Identities are generated once (`Identity::generate` takes ~0.3 s), and
//! properties whose inputs get as far as validating a root identity (a 2 MiB
//! memory-hard hash, 10 to 30 ms) run fewer cases, to keep this file fast.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use vnet_proto::address::{Address, AddressError};
use vnet_proto::c25519::{KeyPair, PublicKey, SecretKey};
use vnet_proto::endpoint::{
    EndpointError, decode_endpoint, encode_endpoint, format_endpoint, parse_endpoint,
};
use vnet_proto::identity::{Identity, IdentityError};
use vnet_proto::identity_hash::IdentityHashScratch;
use vnet_proto::world::{Root, World, WorldError, WorldKind};

// ---------------------------------------------------------------------------
// Fixtures, made once.

/// How many identities are generated up front.
const IDENTITY_COUNT: usize = 4;

/// Identities with secret keys, generated once for the whole file.
fn identities() -> &'static [Identity] {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    IDS.get_or_init(|| {
        (0..IDENTITY_COUNT)
            .map(|_| Identity::generate(&mut os_rng()))
            .collect()
    })
}

const MOON_A: &[u8] = include_bytes!("vectors/zerotier/0000005b51b6c335.moon");
const MOON_B: &[u8] = include_bytes!("vectors/zerotier/0000005d4d6e8499.moon");

/// Valid, self-signed world files: the two zerotier-idtool moons and a
/// planet of our own with two roots.
fn valid_worlds() -> &'static [Vec<u8>] {
    static WORLDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    WORLDS.get_or_init(|| {
        let ids = identities();
        let key = KeyPair::from_secret(SecretKey::from_bytes([7; 64]));
        let planet = World::make(
            WorldKind::Planet,
            0x0123_4567_89ab_cdef,
            1_700_000_000_000,
            *key.public(),
            vec![
                Root {
                    identity: ids[0].clone(),
                    endpoints: vec![
                        "203.0.113.1:9993".parse().unwrap(),
                        "[2001:db8::1]:9993".parse().unwrap(),
                    ],
                },
                Root {
                    identity: ids[1].clone(),
                    endpoints: vec!["198.51.100.7:443".parse().unwrap()],
                },
            ],
            &key,
        )
        .expect("fixture planet");
        vec![MOON_A.to_vec(), MOON_B.to_vec(), planet.encode()]
    })
}

fn arb_valid_world() -> impl Strategy<Value = &'static [u8]> {
    (0..3usize).prop_map(|i| valid_worlds()[i].as_slice())
}

/// The mutation properties below are only meaningful if the fixtures are valid.
#[test]
fn fixture_worlds_are_valid_and_self_signed() {
    for bytes in valid_worlds() {
        let world = World::decode(bytes).expect("fixture decodes");
        assert!(world.is_self_signed());
        assert!(!world.roots().is_empty());
        assert_eq!(&world.encode(), bytes);
    }
}

// ---------------------------------------------------------------------------
// Strategies.

fn arb_ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        4 => any::<[u8; 16]>().prop_map(Ipv6Addr::from),
        // IPv4-mapped and IPv4-compatible addresses print in dotted form.
        1 => any::<[u8; 4]>().prop_map(|v4| Ipv4Addr::from(v4).to_ipv6_mapped()),
        1 => any::<[u8; 4]>().prop_map(|v4| {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&v4);
            Ipv6Addr::from(b)
        }),
        // Mostly zero, so "::" compression shows up in every position.
        1 => (any::<u16>(), 0..8usize).prop_map(|(word, at)| {
            let mut w = [0u16; 8];
            w[at] = word;
            Ipv6Addr::from(w)
        }),
    ]
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        arb_ipv6().prop_map(IpAddr::V6),
    ]
}

/// Any socket address with flowinfo and scope id 0 (the only ones the binary
/// and text forms carry).
fn arb_socket_addr() -> impl Strategy<Value = SocketAddr> {
    (arb_ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn arb_kind() -> impl Strategy<Value = WorldKind> {
    prop_oneof![Just(WorldKind::Planet), Just(WorldKind::Moon)]
}

fn bytes_n(n: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), n)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    Insert(Index, u8),
    Remove(Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1..=255u8).prop_map(|(i, mask)| Mutation::Xor(i, mask)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Xor(i, mask) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= mask;
        }
        Mutation::Truncate(i) if !bytes.is_empty() => bytes.truncate(i.index(bytes.len())),
        Mutation::Append(tail) => bytes.extend_from_slice(tail),
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i.index(bytes.len()));
        }
        _ => {}
    }
}

/// A world's fixed header: type, id, timestamp, update key, signature.
fn world_header(kind: u8, id: u64, timestamp: u64, key: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(signature);
    out
}

fn is_identity_refusal(error: &IdentityError) -> bool {
    matches!(
        error,
        IdentityError::AddressMismatch { .. } | IdentityError::InsufficientWork
    )
}

// ---------------------------------------------------------------------------
// World files: cheap cases (no root identity to validate, or almost never).

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic; whatever decodes re-encodes to itself.
    #[test]
    fn world_decode_never_panics_on_arbitrary_bytes(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..600),
            // A valid type byte gets the parser past its first check.
            (prop_oneof![Just(1u8), Just(127u8)], vec(any::<u8>(), 0..600)).prop_map(
                |(kind, mut rest)| {
                    rest.insert(0, kind);
                    rest
                }
            ),
        ]
    ) {
        if let Ok(world) = World::decode(&bytes) {
            prop_assert_eq!(world.encode(), bytes);
        }
    }

    /// The header is checked field by field, in order; a rootless world
    /// decodes to exactly its fields, keeps a moon's dictionary verbatim,
    /// and re-encodes byte-identically.
    #[test]
    fn world_header_fields_are_checked(
        kind in prop_oneof![Just(1u8), Just(127u8), any::<u8>()],
        id in prop_oneof![Just(0u64), any::<u64>()],
        timestamp in any::<u64>(),
        key in bytes_n(64),
        signature in bytes_n(96),
        root_count in prop_oneof![3 => Just(0u8), 1 => 1..=4u8, 1 => 5..=255u8],
        dictionary in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = world_header(kind, id, timestamp, &key, &signature);
        bytes.push(root_count);
        if kind == 127 {
            bytes.extend_from_slice(&(dictionary.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&dictionary);
        }
        let decoded = World::decode(&bytes);
        if kind != 1 && kind != 127 {
            prop_assert_eq!(decoded, Err(WorldError::UnknownType(kind)));
        } else if id == 0 {
            prop_assert_eq!(decoded, Err(WorldError::ZeroId));
        } else if root_count > 4 {
            prop_assert_eq!(decoded, Err(WorldError::TooManyRoots(root_count as usize)));
        } else if root_count > 0 {
            // Roots are promised but what follows is no identity.
            prop_assert!(decoded.is_err(), "decoded {decoded:?}");
        } else {
            let world = decoded.expect("rootless world decodes");
            let expected_kind = if kind == 1 { WorldKind::Planet } else { WorldKind::Moon };
            prop_assert_eq!(world.kind(), expected_kind);
            prop_assert_eq!(world.id(), id);
            prop_assert_eq!(world.timestamp_ms(), timestamp);
            prop_assert_eq!(&world.updates_must_be_signed_by().as_bytes()[..], &key[..]);
            prop_assert_eq!(&world.signature().as_bytes()[..], &signature[..]);
            prop_assert!(world.roots().is_empty());
            prop_assert_eq!(world.encode(), bytes.clone());
            // Random bytes are no signature.
            prop_assert!(!world.is_self_signed());
            // A planet has no dictionary: one after it is trailing.
            if kind == 1 {
                let mut with_dictionary = bytes;
                with_dictionary.extend_from_slice(&(dictionary.len() as u16).to_be_bytes());
                with_dictionary.extend_from_slice(&dictionary);
                prop_assert_eq!(
                    World::decode(&with_dictionary),
                    Err(WorldError::TrailingBytes(2 + dictionary.len()))
                );
            }
        }
    }

    /// `World::make` refuses what no world may hold.
    #[test]
    fn world_make_refuses_oversized_worlds(
        extra_roots in 1..=4usize,
        extra_endpoints in 1..=8usize,
        root_at in 0..4usize,
    ) {
        let ids = identities();
        let key = KeyPair::from_secret(SecretKey::from_bytes([1; 64]));
        let root = |endpoints: usize| Root {
            identity: ids[0].clone(),
            endpoints: vec!["203.0.113.1:9993".parse().unwrap(); endpoints],
        };
        let too_many_roots: Vec<Root> = (0..4 + extra_roots).map(|_| root(1)).collect();
        prop_assert_eq!(
            World::make(WorldKind::Planet, 1, 0, *key.public(), too_many_roots, &key),
            Err(WorldError::TooManyRoots(4 + extra_roots))
        );
        let mut roots: Vec<Root> = (0..4).map(|_| root(32)).collect();
        roots[root_at] = root(32 + extra_endpoints);
        prop_assert_eq!(
            World::make(WorldKind::Moon, 1, 0, *key.public(), roots, &key),
            Err(WorldError::TooManyEndpoints { root: root_at, count: 32 + extra_endpoints })
        );
        prop_assert_eq!(
            World::make(WorldKind::Moon, 0, 0, *key.public(), vec![], &key),
            Err(WorldError::ZeroId)
        );
    }
}

// ---------------------------------------------------------------------------
// World files: mutations of valid worlds (most validate a root identity).

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Mutated worlds never panic; whatever decodes re-encodes to the
    /// mutated bytes, and verifies only if it is the original.
    #[test]
    fn mutated_world_never_panics_and_never_verifies(
        original in arb_valid_world(),
        mutations in vec(arb_mutation(), 1..4),
    ) {
        let mut bytes = original.to_vec();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        if let Ok(world) = World::decode(&bytes) {
            prop_assert_eq!(&world.encode(), &bytes);
            prop_assert_eq!(world.is_self_signed(), bytes == original);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Every strict prefix of a valid world is refused as truncated.
    #[test]
    fn truncated_world_is_refused(original in arb_valid_world(), cut in any::<Index>()) {
        let len = cut.index(original.len());
        let decoded = World::decode(&original[..len]);
        prop_assert!(
            matches!(decoded, Err(WorldError::Truncated { .. })),
            "prefix of {} bytes: {:?}", len, decoded
        );
    }

    /// Flipping any single bit of a valid world makes it fail to decode or
    /// fail to verify.
    #[test]
    fn bit_flipped_world_does_not_verify(original in arb_valid_world(), bit in any::<Index>()) {
        let bit = bit.index(original.len() * 8);
        let mut bytes = original.to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(world) = World::decode(&bytes) {
            prop_assert!(!world.is_self_signed(), "bit {} flipped and still verifies", bit);
            prop_assert_eq!(world.encode(), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A valid world followed by anything is refused, counting the extra bytes.
    #[test]
    fn world_with_trailing_bytes_is_refused(
        original in arb_valid_world(),
        tail in vec(any::<u8>(), 1..64),
    ) {
        let mut bytes = original.to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(World::decode(&bytes), Err(WorldError::TrailingBytes(tail.len())));
    }
}

// ---------------------------------------------------------------------------
// World files: made, encoded, decoded.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A made world decodes back equal, re-encodes byte-identically, verifies,
    /// and stops verifying (or decoding) when any one bit of it is flipped.
    #[test]
    fn made_world_round_trips_and_verifies(
        kind in arb_kind(),
        id in 1..=u64::MAX,
        timestamp in any::<u64>(),
        roots in vec((0..IDENTITY_COUNT, vec(arb_socket_addr(), 0..=32)), 0..=4),
        signing_secret in bytes_n(64),
        other_update_key in prop::option::weighted(0.2, bytes_n(64)),
        bit in any::<Index>(),
    ) {
        let ids = identities();
        let signing_key =
            KeyPair::from_secret(SecretKey::from_bytes(signing_secret.try_into().unwrap()));
        let update_key = match &other_update_key {
            Some(bytes) => PublicKey::from_bytes(bytes.clone().try_into().unwrap()),
            None => *signing_key.public(),
        };
        let roots: Vec<Root> = roots
            .into_iter()
            .map(|(i, endpoints)| Root { identity: ids[i].clone(), endpoints })
            .collect();
        let world =
            World::make(kind, id, timestamp, update_key, roots.clone(), &signing_key).unwrap();
        // Roots are published without their secret keys.
        prop_assert!(world.roots().iter().all(|r| !r.identity.has_secret()));

        let bytes = world.encode();
        let expected_len = 1 + 8 + 8 + 64 + 96 + 1
            + roots
                .iter()
                .map(|r| {
                    5 + 1 + 64 + 1 + 1
                        + r.endpoints.iter().map(|e| if e.is_ipv4() { 7 } else { 19 }).sum::<usize>()
                })
                .sum::<usize>()
            + if kind == WorldKind::Moon { 2 } else { 0 };
        prop_assert_eq!(bytes.len(), expected_len);

        let decoded = World::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &world);
        prop_assert_eq!(decoded.encode(), bytes.clone());
        prop_assert_eq!(decoded.kind(), kind);
        prop_assert_eq!(decoded.id(), id);
        prop_assert_eq!(decoded.timestamp_ms(), timestamp);
        prop_assert_eq!(decoded.roots().len(), roots.len());
        for (got, made) in decoded.roots().iter().zip(&roots) {
            prop_assert_eq!(&got.identity, &made.identity);
            prop_assert_eq!(&got.endpoints, &made.endpoints);
        }
        prop_assert!(decoded.is_signed_by(signing_key.public()));
        prop_assert_eq!(decoded.is_self_signed(), &update_key == signing_key.public());
        if other_update_key.is_none() {
            prop_assert!(decoded.is_self_signed());
        }

        let bit = bit.index(bytes.len() * 8);
        let mut flipped = bytes;
        flipped[bit / 8] ^= 1 << (bit % 8);
        if let Ok(tampered) = World::decode(&flipped) {
            prop_assert!(
                !tampered.is_signed_by(signing_key.public()),
                "bit {} flipped and still verifies", bit
            );
            prop_assert!(!tampered.is_self_signed());
        }
    }
}

// ---------------------------------------------------------------------------
// Identities.

/// One edit of a string.
#[derive(Debug, Clone)]
enum TextEdit {
    Replace(Index, char),
    Insert(Index, char),
    Remove(Index),
}

fn arb_edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select("0123456789abcdefABCDEF".chars().collect::<Vec<_>>()),
        1 => prop::sample::select(vec![':', ' ', '\n', '\t', '+', '-', 'g', '\u{e9}', '\u{3000}']),
        1 => any::<char>(),
    ]
}

fn arb_text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        2 => (any::<Index>(), arb_edit_char()).prop_map(|(i, c)| TextEdit::Replace(i, c)),
        1 => (any::<Index>(), arb_edit_char()).prop_map(|(i, c)| TextEdit::Insert(i, c)),
        1 => any::<Index>().prop_map(TextEdit::Remove),
    ]
}

fn apply_text_edit(chars: &mut Vec<char>, edit: &TextEdit) {
    match edit {
        TextEdit::Replace(i, c) if !chars.is_empty() => {
            let at = i.index(chars.len());
            chars[at] = *c;
        }
        TextEdit::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        TextEdit::Remove(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics and is never an identity.
    #[test]
    fn identity_from_str_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F:]{0,300}",
            // Right shape, but a key field of the wrong length or not hex.
            "[0-9a-f]{10}:[0-9]:[0-9a-fg ]{0,130}(:[0-9a-fg]{0,130})?",
        ]
    ) {
        let parsed = text.parse::<Identity>();
        prop_assert!(parsed.is_err(), "{:?} parsed as {:?}", text, parsed);
    }

    /// Arbitrary bytes never panic; whatever decodes re-encodes to its prefix.
    #[test]
    fn identity_decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
        let mut scratch = IdentityHashScratch::new();
        if let Ok((identity, used)) = Identity::decode_with(&bytes, &mut scratch) {
            prop_assert!(used <= bytes.len());
            let mut again = Vec::new();
            identity.encode_into(&mut again, true);
            prop_assert_eq!(&again[..], &bytes[..used]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20))]

    /// Well-formed identities with random keys get as far as the hash and
    /// are refused there (or earlier, for a reserved address).
    #[test]
    fn random_key_identity_is_refused(
        text in "[0-9a-f]{10}:0:[0-9a-f]{128}(:[0-9a-f]{128})?",
        address in any::<[u8; 5]>(),
        key in bytes_n(64),
        secret_len in prop_oneof![Just(0u8), Just(64u8), any::<u8>()],
        tail in vec(any::<u8>(), 0..80),
    ) {
        match text.parse::<Identity>() {
            Err(IdentityError::Address(AddressError::Reserved(_))) => {}
            Err(e) => prop_assert!(is_identity_refusal(&e), "{:?}: {:?}", text, e),
            Ok(id) => prop_assert!(false, "{:?} parsed as {:?}", text, id),
        }

        let mut bytes = address.to_vec();
        bytes.push(0);
        bytes.extend_from_slice(&key);
        bytes.push(secret_len);
        bytes.extend_from_slice(&tail);
        let mut scratch = IdentityHashScratch::new();
        match Identity::decode_with(&bytes, &mut scratch) {
            Err(IdentityError::Address(AddressError::Reserved(_)))
            | Err(IdentityError::Truncated { .. })
            | Err(IdentityError::BadSecretLength(_)) => {}
            Err(e) => prop_assert!(is_identity_refusal(&e), "{:?}", e),
            Ok(id) => prop_assert!(false, "random bytes decoded as {:?}", id),
        }
    }

    /// Edited identity text never panics; if it still parses, it is the
    /// same identity (edits can only have been harmless, e.g. hex case or
    /// whitespace around a key).
    #[test]
    fn edited_identity_text_never_panics(
        which in 0..IDENTITY_COUNT,
        with_secret in any::<bool>(),
        edits in vec(arb_text_edit(), 1..4),
    ) {
        let original = &identities()[which];
        let mut chars: Vec<char> = original.to_text(with_secret).chars().collect();
        for edit in &edits {
            apply_text_edit(&mut chars, edit);
        }
        let text: String = chars.into_iter().collect();
        if let Ok(parsed) = text.parse::<Identity>() {
            prop_assert_eq!(&parsed, original);
            prop_assert_eq!(parsed.to_text(false), original.to_text(false));
            prop_assert_eq!(parsed.has_secret(), with_secret);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The pre-generated identities round-trip through text (with or without
    /// the secret, whitespace around it ignored) and through the binary form
    /// (whatever follows it).
    #[test]
    fn identity_round_trips(
        which in 0..IDENTITY_COUNT,
        with_secret in any::<bool>(),
        before in "[ \t\r\n]{0,3}",
        after in "[ \t\r\n]{0,3}",
        tail in vec(any::<u8>(), 0..16),
    ) {
        let original = &identities()[which];
        prop_assert!(original.has_secret());
        let text = original.to_text(with_secret);
        let parsed: Identity = format!("{before}{text}{after}").parse().unwrap();
        prop_assert_eq!(&parsed, original);
        prop_assert_eq!(parsed.has_secret(), with_secret);
        prop_assert_eq!(parsed.to_text(true), text);
        prop_assert_eq!(parsed.address(), original.address());

        let mut bytes = Vec::new();
        original.encode_into(&mut bytes, with_secret);
        prop_assert_eq!(bytes.len(), 5 + 1 + 64 + 1 + if with_secret { 64 } else { 0 });
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        let mut scratch = IdentityHashScratch::new();
        let (decoded, used) = Identity::decode_with(&bytes, &mut scratch).unwrap();
        prop_assert_eq!(used, len);
        prop_assert_eq!(&decoded, original);
        prop_assert_eq!(decoded.has_secret(), with_secret);
        let mut again = Vec::new();
        decoded.encode_into(&mut again, true);
        prop_assert_eq!(&again[..], &bytes[..len]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Changing any one hex digit of the public key (to a different value)
    /// is refused, in text and in binary.
    #[test]
    fn changed_public_key_digit_is_refused(
        which in 0..IDENTITY_COUNT,
        with_secret in any::<bool>(),
        digit in 0..128usize,
        delta in 1..16u8,
    ) {
        let original = &identities()[which];
        let text = original.to_text(with_secret);
        let at = 10 + 3 + digit;
        let old = text.as_bytes()[at];
        let old_value = (old as char).to_digit(16).unwrap() as u8;
        let new = char::from_digit(u32::from((old_value + delta) % 16), 16).unwrap();
        let mut changed = text.clone();
        changed.replace_range(at..at + 1, &new.to_string());
        prop_assert_ne!(&changed, &text);
        match changed.parse::<Identity>() {
            Err(e) => prop_assert!(is_identity_refusal(&e), "{:?}", e),
            Ok(id) => prop_assert!(false, "{} accepted as {:?}", changed, id),
        }

        let mut bytes = Vec::new();
        original.encode_into(&mut bytes, with_secret);
        let byte = 6 + digit / 2;
        let shift = if digit % 2 == 0 { 4 } else { 0 };
        bytes[byte] ^= delta << shift;
        let mut scratch = IdentityHashScratch::new();
        match Identity::decode_with(&bytes, &mut scratch) {
            Err(e) => prop_assert!(is_identity_refusal(&e), "{:?}", e),
            Ok(id) => prop_assert!(false, "changed key accepted as {:?}", id),
        }
    }
}

// ---------------------------------------------------------------------------
// Endpoints.

/// What `decode_endpoint` must return, written out from the format.
fn expected_endpoint(bytes: &[u8]) -> Result<(SocketAddr, usize), EndpointError> {
    let ip_len = match bytes.first() {
        None => return Err(EndpointError::Truncated { needed: 1 }),
        Some(4) => 4,
        Some(6) => 16,
        Some(&other) => return Err(EndpointError::UnknownType(other)),
    };
    let total = 1 + ip_len + 2;
    if bytes.len() < total {
        return Err(EndpointError::Truncated {
            needed: total - bytes.len(),
        });
    }
    let ip = if ip_len == 4 {
        IpAddr::from(<[u8; 4]>::try_from(&bytes[1..5]).unwrap())
    } else {
        IpAddr::from(<[u8; 16]>::try_from(&bytes[1..17]).unwrap())
    };
    let port = (u16::from(bytes[total - 2]) << 8) | u16::from(bytes[total - 1]);
    Ok((SocketAddr::new(ip, port), total))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Binary endpoints decode exactly as the format says, from any bytes.
    #[test]
    fn decode_endpoint_matches_the_format(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..40),
            (prop_oneof![Just(4u8), Just(6u8)], vec(any::<u8>(), 0..24)).prop_map(
                |(kind, mut rest)| {
                    rest.insert(0, kind);
                    rest
                }
            ),
        ]
    ) {
        let decoded = decode_endpoint(&bytes);
        prop_assert_eq!(&decoded, &expected_endpoint(&bytes));
        if let Ok((addr, used)) = decoded {
            let mut again = Vec::new();
            encode_endpoint(&addr, &mut again);
            prop_assert_eq!(&again[..], &bytes[..used]);
        }
    }

    /// Any socket address round-trips through the binary form, whatever
    /// follows it; every strict prefix is truncated by exactly what is missing.
    #[test]
    fn binary_endpoint_round_trips(addr in arb_socket_addr(), tail in vec(any::<u8>(), 0..8)) {
        let mut bytes = Vec::new();
        encode_endpoint(&addr, &mut bytes);
        let len = bytes.len();
        prop_assert_eq!(len, if addr.is_ipv4() { 7 } else { 19 });
        for cut in 0..len {
            prop_assert_eq!(
                decode_endpoint(&bytes[..cut]),
                // Without the type byte, only that one is known to be missing.
                Err(EndpointError::Truncated {
                    needed: if cut == 0 { 1 } else { len - cut }
                })
            );
        }
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode_endpoint(&bytes), Ok((addr, len)));
    }

    /// Any socket address with a nonzero port round-trips through `ip/port`
    /// (whitespace around it ignored); port 0 is refused.
    #[test]
    fn text_endpoint_round_trips(
        ip in arb_ip(),
        port in 1..=u16::MAX,
        before in "[ \t]{0,2}",
        after in "[ \t\n]{0,2}",
    ) {
        let addr = SocketAddr::new(ip, port);
        let text = format_endpoint(&addr);
        prop_assert_eq!(parse_endpoint(&text), Ok(addr));
        prop_assert_eq!(parse_endpoint(&format!("{before}{text}{after}")), Ok(addr));
        // The colon form ZeroTier never writes is not accepted.
        prop_assert!(parse_endpoint(&addr.to_string()).is_err());
        let zero = format_endpoint(&SocketAddr::new(ip, 0));
        prop_assert!(parse_endpoint(&zero).is_err());
    }

    /// Any port number in text is accepted exactly when it is 1..=65535.
    #[test]
    fn text_endpoint_port_range(ip in arb_ip(), port in prop_oneof![0..=70_000u32, any::<u32>()]) {
        let parsed = parse_endpoint(&format!("{ip}/{port}"));
        if (1..=65535).contains(&port) {
            prop_assert_eq!(parsed, Ok(SocketAddr::new(ip, port as u16)));
        } else {
            prop_assert!(parsed.is_err(), "port {} accepted: {:?}", port, parsed);
        }
    }

    /// Arbitrary text never panics; whatever parses has a nonzero port and
    /// survives formatting and parsing again.
    #[test]
    fn parse_endpoint_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F.:/%\\[\\] ]{0,48}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9+-]{0,6}",
        ]
    ) {
        if let Ok(addr) = parse_endpoint(&text) {
            prop_assert_ne!(addr.port(), 0);
            prop_assert_eq!(parse_endpoint(&format_endpoint(&addr)), Ok(addr));
        }
    }
}

// ---------------------------------------------------------------------------
// Addresses.

fn is_reserved(value: u64) -> bool {
    value == 0 || value >> 32 == 0xff
}

fn arb_address_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0..(1u64 << 40),
        (0..=u32::MAX as u64).prop_map(|low| (0xff << 32) | low),
        Just(0u64),
        Just(1u64 << 40),
        Just((1u64 << 40) - 1),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// An integer is an address exactly when it fits in 40 bits and is not
    /// reserved; valid ones round-trip through bytes and text, reserved ones
    /// are refused in every form.
    #[test]
    fn address_values(value in arb_address_value()) {
        let made = Address::from_u64(value);
        if value >> 40 != 0 {
            prop_assert!(made.is_err());
            return Ok(());
        }
        let bytes: [u8; 5] = value.to_be_bytes()[3..].try_into().unwrap();
        let text = format!("{value:010x}");
        if is_reserved(value) {
            prop_assert_eq!(made, Err(AddressError::Reserved(value)));
            prop_assert_eq!(Address::from_bytes(bytes), Err(AddressError::Reserved(value)));
            prop_assert_eq!(text.parse::<Address>(), Err(AddressError::Reserved(value)));
            prop_assert_eq!(
                text.to_uppercase().parse::<Address>(),
                Err(AddressError::Reserved(value))
            );
        } else {
            let address = made.unwrap();
            prop_assert_eq!(address.to_u64(), value);
            prop_assert_eq!(address.to_bytes(), bytes);
            prop_assert_eq!(Address::from_bytes(bytes), Ok(address));
            prop_assert_eq!(address.to_string(), text.clone());
            prop_assert_eq!(text.parse::<Address>(), Ok(address));
            prop_assert_eq!(text.to_uppercase().parse::<Address>(), Ok(address));
        }
    }

    /// Arbitrary text never panics; only ten hex digits of an unreserved
    /// value parse, and they format back as the same digits in lower case.
    #[test]
    fn address_parse_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F]{10}",
            "[fF]{2}[0-9a-fA-F]{8}",
            "[0-9a-fA-F+ xX-]{8,12}",
        ]
    ) {
        let parsed = text.parse::<Address>();
        let well_formed = text.len() == 10 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            prop_assert_eq!(parsed, Err(AddressError::BadText(text)));
        } else {
            let value = u64::from_str_radix(&text, 16).unwrap();
            if is_reserved(value) {
                prop_assert_eq!(parsed, Err(AddressError::Reserved(value)));
            } else {
                prop_assert_eq!(parsed.unwrap().to_string(), text.to_lowercase());
            }
        }
    }
}

/// The operating system's random source.
fn os_rng() -> vnet_proto::rng::UnwrapErr<getrandom::SysRng> {
    vnet_proto::rng::UnwrapErr(getrandom::SysRng)
}
