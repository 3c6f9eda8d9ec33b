//! Protocol constants, in one place, with units in their names.

/// Length of a node address in bytes (40 bits).
pub const ADDRESS_LEN_BYTES: usize = 5;
/// Length of a C25519 public key: X25519 public key then Ed25519 public key.
pub const C25519_PUBLIC_KEY_LEN_BYTES: usize = 64;
/// Length of a C25519 secret key: X25519 secret then Ed25519 seed.
pub const C25519_SECRET_KEY_LEN_BYTES: usize = 64;
/// Length of a signature: Ed25519 signature then the 32 signed digest bytes.
pub const C25519_SIGNATURE_LEN_BYTES: usize = 96;
/// Identity type byte of a C25519 identity (the only type there is).
pub const IDENTITY_TYPE_C25519: u8 = 0;

/// Scratch memory the memory-hard identity hash fills (2 MiB).
pub const IDENTITY_HASH_MEMORY_BYTES: usize = 2 * 1024 * 1024;
/// A key pair is acceptable only if the first digest byte is below this.
pub const IDENTITY_HASH_FIRST_BYTE_LIMIT: u8 = 17;

/// World type byte of a planet.
pub const WORLD_TYPE_PLANET: u8 = 1;
/// World type byte of a moon.
pub const WORLD_TYPE_MOON: u8 = 127;
/// Most roots a world may list.
pub const WORLD_MAX_ROOTS: usize = 4;
/// Most stable endpoints one root may list.
pub const WORLD_MAX_ENDPOINTS_PER_ROOT: usize = 32;
/// Bytes framing a world's signed form before it.
pub const WORLD_SIGNED_PREFIX: [u8; 8] = [0x7f; 8];
/// Bytes framing a world's signed form after it.
pub const WORLD_SIGNED_SUFFIX: [u8; 8] = [0xf7; 8];
/// Largest serialized world we accept (ZeroTier's ZT_WORLD_MAX_SERIALIZED_LENGTH).
pub const WORLD_MAX_SERIALIZED_LEN_BYTES: usize = 4096;

/// Endpoint type byte for IPv4 (then 4 address bytes, 2 port bytes).
pub const ENDPOINT_TYPE_IPV4: u8 = 0x04;
/// Endpoint type byte for IPv6 (then 16 address bytes, 2 port bytes).
pub const ENDPOINT_TYPE_IPV6: u8 = 0x06;
