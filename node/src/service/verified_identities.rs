//! `verified-identities` in the home directory: the identities this node
//! verified (address → public key, each checked once with the memory-hard
//! hash, about 17 ms), kept across restarts so a restarted root readmits
//! known peers without hashing them again. Also the timestamp of the last
//! HELLO accepted from each, so old HELLOs replayed after a restart are
//! still refused, and the peer's last direct path, where a restarted root
//! greets it at once.
//!
//! Text, one identity per line after a header:
//! `<address>:0:<public key hex> <last HELLO timestamp, ms> <ip/port or ->`
//! (version 1 files, without the path, are read too). Written
//! atomically (a crash leaves the old file or the new one). A file that
//! does not parse is refused whole, with its line and problem: it is only a
//! cache, so the node starts with none and writes a good one later.

use std::fmt::Write as _;
use std::time::Duration;

use crate::core::address::Address;
use crate::core::c25519::PublicKey;
use crate::core::constants::{C25519_PUBLIC_KEY_LEN_BYTES, MAX_VERIFIED_IDENTITIES};
use crate::core::endpoint::{format_endpoint, parse_endpoint};
use crate::core::identity::{Identity, decode_hex};
use crate::core::node::VerifiedIdentity;

/// The file's name in the home directory.
pub const VERIFIED_IDENTITIES_FILE: &str = "verified-identities";
/// How often the control plane writes the file when identities were added
/// (and once more at a clean stop).
pub const VERIFIED_IDENTITIES_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// The file's first line.
const HEADER: &str = "# vnet verified identities v2: <address>:0:<public key> <last HELLO ms> <last path ip/port or ->";
/// Version 1's first line (no paths).
const HEADER_V1: &str = "# vnet verified identities v1: <address>:0:<public key> <last HELLO ms>";

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
pub fn encode(list: &[VerifiedIdentity]) -> String {
    let mut text = String::with_capacity(64 + list.len() * 180);
    text.push_str(HEADER);
    text.push('\n');
    for v in list {
        let path = v
            .last_path
            .map_or_else(|| "-".to_string(), |p| format_endpoint(&p));
        let _ = writeln!(
            text,
            "{} {} {path}",
            v.identity.to_text(false),
            v.hello_timestamp_ms
        );
    }
    text
}

/// Reads the file's text back (oldest first).
pub fn decode(text: &str) -> Result<Vec<VerifiedIdentity>, VerifiedIdentitiesError> {
    let mut lines = text.lines();
    let with_paths = match lines.next() {
        Some(HEADER) => true,
        Some(HEADER_V1) => false,
        _ => return Err(VerifiedIdentitiesError::Header),
    };
    let mut list = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if list.len() == MAX_VERIFIED_IDENTITIES {
            return Err(VerifiedIdentitiesError::TooMany);
        }
        let entry =
            decode_line(line, with_paths).map_err(|problem| VerifiedIdentitiesError::Line {
                line: i + 2,
                problem,
            })?;
        list.push(entry);
    }
    Ok(list)
}

fn decode_line(line: &str, with_paths: bool) -> Result<VerifiedIdentity, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (identity, hello_ms, path) = match (with_paths, &fields[..]) {
        (true, [identity, hello_ms, path]) => (*identity, *hello_ms, Some(*path)),
        (false, [identity, hello_ms]) => (*identity, *hello_ms, None),
        (true, _) => return Err("expected `<address>:0:<public key> <ms> <ip/port or ->`".into()),
        (false, _) => return Err("expected `<address>:0:<public key> <ms>`".into()),
    };
    let hello_ms: u64 = hello_ms
        .parse()
        .map_err(|e| format!("HELLO timestamp {hello_ms:?}: {e}"))?;
    let last_path = match path {
        None | Some("-") => None,
        Some(p) => Some(parse_endpoint(p).map_err(|e| format!("path {p:?}: {e}"))?),
    };
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
    Ok(VerifiedIdentity {
        identity: Identity::previously_verified(address, PublicKey::from_bytes(public)),
        hello_timestamp_ms: hello_ms,
        last_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::{NodeRng, SeedableRng};

    fn identities(n: usize) -> Vec<VerifiedIdentity> {
        let mut rng = NodeRng::seed_from_u64(9);
        (0..n)
            .map(|i| VerifiedIdentity {
                identity: Identity::generate(&mut rng).to_public(),
                hello_timestamp_ms: 1_000 * i as u64,
                last_path: (i % 2 == 0).then(|| format!("192.0.2.{i}:9993").parse().unwrap()),
            })
            .collect()
    }

    #[test]
    fn a_list_comes_back_as_it_went() {
        let list = identities(3);
        let text = encode(&list);
        assert!(text.starts_with(HEADER));
        let back = decode(&text).unwrap();
        assert_eq!(back, list);
        assert!(back.iter().all(|v| !v.identity.has_secret()));
        assert_eq!(decode(&encode(&[])).unwrap().len(), 0);
        // Version 1 (no paths) is read too.
        let v1: Vec<String> = std::iter::once(HEADER_V1.to_string())
            .chain(
                list.iter()
                    .map(|v| format!("{} {}", v.identity.to_text(false), v.hello_timestamp_ms)),
            )
            .collect();
        let back = decode(&v1.join("\n")).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.iter().all(|v| v.last_path.is_none()));
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
            ("no path", "0123456789:0:00 5"),
            ("bad timestamp", "0123456789:0:00 x -"),
            ("two fields", "0123456789:00 5 -"),
            ("reserved address", "ff00000000:0:00 5 -"),
            ("unknown type", "0123456789:1:00 5 -"),
            ("short key", "0123456789:0:abcd 5 -"),
            (
                "bad path",
                &format!("{} 5 nowhere", identities(1)[0].identity.to_text(false)),
            ),
        ];
        for (what, bad) in &cases {
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
