//! `verified-identities` in the home directory: the identities this node
//! verified (address → public key, each checked once with the memory-hard
//! hash, about 17 ms), kept across restarts so a restarted root readmits
//! known peers without hashing them again. Also the timestamp of the last
//! HELLO accepted from each, so old HELLOs replayed after a restart are
//! still refused.
//!
//! Text, one identity per line after a header:
//! `<address>:0:<public key hex> <last HELLO timestamp, ms>`. Written
//! atomically (a crash leaves the old file or the new one). A file that
//! does not parse is refused whole, with its line and problem: it is only a
//! cache, so the node starts with none and writes a good one later.

use std::fmt::Write as _;
use std::time::Duration;

use crate::core::address::Address;
use crate::core::c25519::PublicKey;
use crate::core::constants::{C25519_PUBLIC_KEY_LEN_BYTES, MAX_VERIFIED_IDENTITIES};
use crate::core::identity::{Identity, decode_hex};

/// The file's name in the home directory.
pub const VERIFIED_IDENTITIES_FILE: &str = "verified-identities";
/// How often the control plane writes the file when identities were added
/// (and once more at a clean stop).
pub const VERIFIED_IDENTITIES_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// The file's first line.
const HEADER: &str = "# vnet verified identities v1: <address>:0:<public key> <last HELLO ms>";

/// Why the file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifiedIdentitiesError {
    /// The first line is not the header.
    #[error("not a verified-identities file (first line is not {HEADER:?})")]
    Header,
    /// A line does not parse.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// More lines than the node keeps.
    #[error("more than {MAX_VERIFIED_IDENTITIES} identities")]
    TooMany,
}

/// The file's text for `list` (oldest first).
pub fn encode(list: &[(Identity, u64)]) -> String {
    let mut text = String::with_capacity(32 + list.len() * 160);
    text.push_str(HEADER);
    text.push('\n');
    for (identity, hello_ms) in list {
        let _ = writeln!(text, "{} {hello_ms}", identity.to_text(false));
    }
    text
}

/// Reads the file's text back (oldest first).
pub fn decode(text: &str) -> Result<Vec<(Identity, u64)>, VerifiedIdentitiesError> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(VerifiedIdentitiesError::Header);
    }
    let mut list = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if list.len() == MAX_VERIFIED_IDENTITIES {
            return Err(VerifiedIdentitiesError::TooMany);
        }
        let entry = decode_line(line).map_err(|problem| VerifiedIdentitiesError::Line {
            line: i + 2,
            problem,
        })?;
        list.push(entry);
    }
    Ok(list)
}

fn decode_line(line: &str) -> Result<(Identity, u64), String> {
    let (identity, hello_ms) = line
        .split_once(' ')
        .ok_or("expected `<address>:0:<public key> <ms>`")?;
    let hello_ms: u64 = hello_ms
        .parse()
        .map_err(|e| format!("HELLO timestamp {hello_ms:?}: {e}"))?;
    let fields: Vec<&str> = identity.split(':').collect();
    let [address, kind, public] = fields[..] else {
        return Err(format!(
            "identity {identity:?}: expected 3 fields, got {}",
            fields.len()
        ));
    };
    let address: Address = address
        .parse()
        .map_err(|e| format!("address {address:?}: {e}"))?;
    if kind != "0" {
        return Err(format!("identity type {kind:?} (only 0 is known)"));
    }
    let public = decode_hex::<C25519_PUBLIC_KEY_LEN_BYTES>(public, "public key")
        .map_err(|e| e.to_string())?;
    Ok((
        Identity::previously_verified(address, PublicKey::from_bytes(public)),
        hello_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::{NodeRng, SeedableRng};

    fn identities(n: usize) -> Vec<(Identity, u64)> {
        let mut rng = NodeRng::seed_from_u64(9);
        (0..n)
            .map(|i| (Identity::generate(&mut rng).to_public(), 1_000 * i as u64))
            .collect()
    }

    #[test]
    fn a_list_comes_back_as_it_went() {
        let list = identities(3);
        let text = encode(&list);
        assert!(text.starts_with(HEADER));
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 3);
        for ((a, ta), (b, tb)) in list.iter().zip(&back) {
            assert_eq!(a.to_text(false), b.to_text(false));
            assert!(!b.has_secret());
            assert_eq!(ta, tb);
        }
        assert_eq!(decode(&encode(&[])).unwrap().len(), 0);
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line_and_problem() {
        let good = encode(&identities(2));
        let mut lines: Vec<&str> = good.lines().collect();
        assert_eq!(
            decode("hello\n").unwrap_err(),
            VerifiedIdentitiesError::Header
        );
        let cases = [
            ("no timestamp", "0123456789:0:00"),
            ("bad timestamp", "0123456789:0:00 x"),
            ("two fields", "0123456789:00 5"),
            ("reserved address", "ff00000000:0:00 5"),
            ("unknown type", "0123456789:1:00 5"),
            ("short key", "0123456789:0:abcd 5"),
        ];
        for (what, bad) in cases {
            lines.push(bad);
            let err = decode(&lines.join("\n")).unwrap_err();
            assert!(
                matches!(err, VerifiedIdentitiesError::Line { line: 4, .. }),
                "{what}: {err}"
            );
            lines.pop();
        }
    }
}
