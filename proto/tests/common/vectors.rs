// Shared by the two vector tests: one reads ../shared, one the crate's copy.

use std::fs;
use std::path::Path;

use vnet_proto::c25519::Signature;
use vnet_proto::endpoint::format_endpoint;
use vnet_proto::identity::{Identity, IdentityError};
use vnet_proto::world::{World, WorldKind};
use vnet_proto::world_spec::WorldJson;

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// Runs every check the vectors' README asks for.
pub fn check_all(dir: &Path) {
    for who in ["a", "b"] {
        let secret: Identity = read(dir, &format!("id-{who}.secret")).parse().unwrap();
        assert!(secret.has_secret());
        let public_text = read(dir, &format!("id-{who}.public"));
        let public: Identity = public_text.parse().unwrap();
        assert!(!public.has_secret());
        // getpublic prints exactly the matching .public line.
        assert_eq!(secret.to_text(false), public_text.trim());
        assert_eq!(
            secret.to_text(true),
            read(dir, &format!("id-{who}.secret")).trim()
        );

        // Signatures: ours are byte-identical (Ed25519 is deterministic) and theirs verify.
        let msg = fs::read(dir.join(format!("msg-{who}.txt"))).unwrap();
        let sig_hex = read(dir, &format!("msg-{who}.sig"));
        let sig = Signature::from_bytes(hex::decode(sig_hex.trim()).unwrap().try_into().unwrap());
        assert!(public.verify(&msg, &sig), "msg-{who}.sig must verify");
        assert_eq!(
            hex::encode(secret.sign(&msg).unwrap().as_bytes()),
            sig_hex.trim()
        );
        let mut other = msg.clone();
        other.push(b'!');
        assert!(
            !public.verify(&other, &sig),
            "another message must not verify"
        );

        // The moon: parsed, signature verified, roots equal the JSON's, and
        // our genmoon with the same timestamp writes the identical file.
        let json = WorldJson::from_json(&read(dir, &format!("moon-{who}.json"))).unwrap();
        let spec = json.to_spec().unwrap();
        let file = format!("000000{}.moon", json.id);
        let bytes = fs::read(dir.join(&file)).unwrap();
        let world = World::decode(&bytes).unwrap();
        assert_eq!(world.kind(), WorldKind::Moon);
        assert!(world.is_self_signed(), "{file} signature must verify");
        assert_eq!(format!("{:010x}", world.id()), json.id);
        assert_eq!(world.roots().len(), json.roots.len());
        for (root, root_json) in world.roots().iter().zip(&json.roots) {
            assert_eq!(root.identity.to_text(false), root_json.identity);
            let mut ours: Vec<String> = root.endpoints.iter().map(format_endpoint).collect();
            let mut theirs = root_json.stable_endpoints.clone();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs);
        }
        assert_eq!(world.encode(), bytes, "re-encoding must be byte-identical");
        let log = read(dir, &format!("genmoon-{who}.log"));
        let ts: u64 = log
            .split("timestamp ")
            .nth(1)
            .and_then(|t| t.trim().trim_end_matches(')').parse().ok())
            .expect("timestamp in genmoon log");
        assert_eq!(world.timestamp_ms(), ts);
        assert_eq!(
            spec.sign(ts).unwrap().encode(),
            bytes,
            "genmoon must reproduce {file}"
        );
        assert!(log.starts_with(&format!("wrote {} ", world.moon_file_name())));

        // Public key of another identity does not verify the signature.
        let other_who = if who == "a" { "b" } else { "a" };
        let other_id: Identity = read(dir, &format!("id-{other_who}.public"))
            .parse()
            .unwrap();
        assert!(!other_id.verify(&msg, &sig));

        // Tampered moon: parses but its signature does not verify.
        let tampered = fs::read(dir.join(format!("000000{}.tampered-moon", json.id))).unwrap();
        let tampered = World::decode(&tampered).unwrap();
        assert!(!tampered.is_self_signed(), "tampered moon must not verify");
        assert!(world.check_update(&tampered).is_err());
    }

    let bad = read(dir, "id-bad-key.public").parse::<Identity>();
    assert!(
        matches!(
            bad,
            Err(IdentityError::AddressMismatch { .. }) | Err(IdentityError::InsufficientWork)
        ),
        "id-bad-key.public must be refused, got {bad:?}"
    );
}
