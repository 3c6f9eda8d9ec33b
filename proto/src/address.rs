//! 40-bit node addresses.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use crate::constants::ADDRESS_LEN_BYTES;

/// Why bytes or text are not a usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not exactly ten hex digits.
    #[error("address must be exactly 10 hex digits, got {0:?}")]
    BadText(String),
    /// Wider than 40 bits.
    #[error("address {0:x} does not fit in 40 bits")]
    OutOfRange(u64),
    /// All zero, or starting with 0xff.
    #[error("address {0:010x} is reserved (zero or starting with ff)")]
    Reserved(u64),
}

/// A node's 40-bit address, never reserved. Never zero, so an
/// `Option<Address>` takes 8 bytes (a root keeps several per peer).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(NonZeroU64);

impl Address {
    /// Makes an address from its five big-endian bytes.
    pub fn from_bytes(bytes: [u8; ADDRESS_LEN_BYTES]) -> Result<Self, AddressError> {
        let mut wide = [0u8; 8];
        wide[3..].copy_from_slice(&bytes);
        Self::from_u64(u64::from_be_bytes(wide))
    }

    /// Makes an address from the low 40 bits of `value` (higher bits must be zero).
    pub fn from_u64(value: u64) -> Result<Self, AddressError> {
        if value >> 40 != 0 {
            return Err(AddressError::OutOfRange(value));
        }
        match NonZeroU64::new(value) {
            Some(nonzero) if value >> 32 != 0xff => Ok(Self(nonzero)),
            _ => Err(AddressError::Reserved(value)),
        }
    }

    /// The five big-endian bytes.
    pub fn to_bytes(self) -> [u8; ADDRESS_LEN_BYTES] {
        let wide = self.0.get().to_be_bytes();
        let mut out = [0u8; ADDRESS_LEN_BYTES];
        out.copy_from_slice(&wide[3..]);
        out
    }

    /// The address as an integer.
    pub fn to_u64(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 2 * ADDRESS_LEN_BYTES || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddressError::BadText(text.to_string()));
        }
        let value =
            u64::from_str_radix(text, 16).map_err(|_| AddressError::BadText(text.into()))?;
        Self::from_u64(value)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010x}", self.0.get())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_round_trip() {
        let a: Address = "5b51b6c335".parse().unwrap();
        assert_eq!(a.to_bytes(), [0x5b, 0x51, 0xb6, 0xc3, 0x35]);
        assert_eq!(Address::from_bytes(a.to_bytes()).unwrap(), a);
        assert_eq!(a.to_string(), "5b51b6c335");
    }

    #[test]
    fn reserved_and_malformed_are_refused() {
        assert!(matches!(
            "0000000000".parse::<Address>(),
            Err(AddressError::Reserved(0))
        ));
        assert!(matches!(
            "ff00000001".parse::<Address>(),
            Err(AddressError::Reserved(_))
        ));
        assert!(matches!(
            "5b51b6c33".parse::<Address>(),
            Err(AddressError::BadText(_))
        ));
        assert!(matches!(
            "5b51b6c33g".parse::<Address>(),
            Err(AddressError::BadText(_))
        ));
        assert!(matches!(
            "+b51b6c335".parse::<Address>(),
            Err(AddressError::BadText(_))
        ));
    }
}
