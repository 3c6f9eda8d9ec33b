//! World JSON on arbitrary input (as UTF-8): `WorldJson::from_json` then
//! `to_spec` never panic; a spec that checks out signs into a world that
//! decodes and verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet_proto::world::World;
use vnet_proto::world_spec::WorldJson;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(json) = WorldJson::from_json(text) else {
        return;
    };
    let written = json.to_json();
    let reread = WorldJson::from_json(&written).expect("our own JSON parses");
    assert_eq!(reread.to_json(), written);
    let Ok(spec) = json.to_spec() else {
        return;
    };
    let world = spec.sign(1_700_000_000_000).expect("a checked spec signs");
    let decoded = World::decode(&world.encode()).expect("a signed world decodes");
    assert_eq!(decoded, world);
    assert!(decoded.is_signed_by(spec.signing_key.public()));
});
