//! Identifiers given on the command line, checked and normalized before any
//! request.

/// A node address: exactly 10 hex digits; returned in lower case.
pub fn normalize_address(text: &str) -> Result<String, String> {
    if text.len() == 10 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("bad address {text:?}: expected 10 hex digits"))
    }
}

/// A world id: 16 hex digits, or 10 (a moon named after its seed root's
/// address), which are zero-padded to 16; returned in lower case.
pub fn normalize_world_id(text: &str) -> Result<String, String> {
    if (text.len() == 10 || text.len() == 16) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("{:0>16}", text.to_ascii_lowercase()))
    } else {
        Err(format!(
            "bad world id {text:?}: expected 10 or 16 hex digits"
        ))
    }
}

/// A network id: exactly 16 hex digits; returned in lower case.
pub fn normalize_network_id(text: &str) -> Result<String, String> {
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("bad network id {text:?}: expected 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_world_ids() {
        assert_eq!(normalize_address("A1B2C3D4E5").unwrap(), "a1b2c3d4e5");
        assert!(normalize_address("a1b2c3d4e").is_err());
        assert!(normalize_address("a1b2c3d4e5f").is_err());
        assert!(normalize_address("g1b2c3d4e5").is_err());
        assert!(normalize_address("").is_err());
        assert!(normalize_address("a1b2c3d4é").is_err());
        assert_eq!(
            normalize_world_id("DEADBEEF00").unwrap(),
            "000000deadbeef00"
        );
        assert_eq!(
            normalize_world_id("000000deadbeef00").unwrap(),
            "000000deadbeef00"
        );
        assert!(normalize_world_id("deadbeef0").is_err());
        assert!(normalize_world_id("000000deadbeef0").is_err());
        assert!(normalize_world_id("000000deadbeef00x").is_err());
        assert_eq!(
            normalize_world_id("xyz").unwrap_err(),
            "bad world id \"xyz\": expected 10 or 16 hex digits"
        );
    }

    #[test]
    fn network_ids() {
        assert_eq!(
            normalize_network_id("8056C2E21C000001").unwrap(),
            "8056c2e21c000001"
        );
        assert!(normalize_network_id("8056c2e21c00000").is_err());
        assert!(normalize_network_id("8056c2e21c00000g").is_err());
    }
}
