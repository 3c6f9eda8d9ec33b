//! vnet-planet end to end: making planets and rotating their roots and keys.

use std::fs;
use std::path::Path;

use serde_json::Value;
use vnet_tests::{Run, run_in};

fn planet(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, "vnet-planet", args)
}

fn idtool(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, "vnet-idtool", args)
}

fn write_json(dir: &Path, name: &str, json: &Value) {
    fs::write(dir.join(name), serde_json::to_string_pretty(json).unwrap()).unwrap();
}

/// A planet JSON for two new roots, endpoints filled in.
fn new_planet_json(d: &Path) -> Value {
    for r in ["r1", "r2"] {
        assert!(
            idtool(
                d,
                &["generate", &format!("{r}.secret"), &format!("{r}.public")]
            )
            .ok
        );
    }
    let run = planet(
        d,
        &["initplanet", "r1.public", "r2.public", "--id", "c0ffee"],
    );
    assert!(run.ok, "{run:?}");
    let mut json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["worldType"], "planet");
    assert_eq!(json["id"], "0000000000c0ffee");
    assert!(json["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    json["roots"][0]["stableEndpoints"] = serde_json::json!(["10.0.0.1/9993"]);
    json["roots"][1]["stableEndpoints"] = serde_json::json!(["10.0.0.2/9993", "fd00::2/9993"]);
    json
}

#[test]
fn initplanet_then_mkworld_makes_a_valid_planet() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let json = new_planet_json(d);
    write_json(d, "planet.json", &json);
    let run = planet(d, &["mkworld", "planet.json"]);
    assert!(run.ok, "{run:?}");
    assert!(
        run.stdout
            .starts_with("wrote planet (signed world 0000000000c0ffee with timestamp")
    );
    let run = idtool(d, &["showworld", "planet"]);
    assert!(run.ok, "{run:?}");
    let shown: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(shown["worldType"], "planet");
    assert_eq!(shown["timestamp"], json["timestamp"]);
    assert_eq!(shown["roots"].as_array().unwrap().len(), 2);
}

#[test]
fn mkworld_refuses_moons_and_missing_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut json = new_planet_json(d);
    json.as_object_mut().unwrap().remove("timestamp");
    write_json(d, "nots.json", &json);
    let run = planet(d, &["mkworld", "nots.json"]);
    assert!(
        !run.ok && run.stderr.contains("nots.json: timestamp"),
        "{run:?}"
    );
    json["worldType"] = "moon".into();
    let seed = json["roots"][0]["identity"].as_str().unwrap()[..10].to_string();
    json["id"] = seed.into();
    json["timestamp"] = 5.into();
    write_json(d, "moon.json", &json);
    let run = planet(d, &["mkworld", "moon.json"]);
    assert!(!run.ok && run.stderr.contains("worldType"), "{run:?}");
    assert!(!d.join("planet").exists());
}

#[test]
fn root_and_key_rotation_follows_the_update_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut v1 = new_planet_json(d);
    // A second key pair, to rotate to: v1 names it as the key for updates.
    let run = planet(d, &["initplanet", "r1.public"]);
    let next: Value = serde_json::from_str(&run.stdout).unwrap();
    v1["updatesMustBeSignedBy"] = next["signingKey"].clone();
    write_json(d, "v1.json", &v1);
    assert!(planet(d, &["mkworld", "v1.json", "-o", "planet"]).ok);
    fs::copy(d.join("planet"), d.join("planet.v1")).unwrap();
    // v1 is signed with the old key, so it does not verify with its own
    // updatesMustBeSignedBy: showworld says so unless told which key signed it.
    assert!(!idtool(d, &["showworld", "planet.v1"]).ok);
    let old_key = v1["signingKey"].as_str().unwrap();
    assert!(idtool(d, &["showworld", "planet.v1", "--signed-by", old_key]).ok);

    // v2, signed with the new key, drops a root and is newer: nodes accept it.
    let mut v2 = v1.clone();
    v2["signingKey"] = next["signingKey"].clone();
    v2["signingKey_SECRET"] = next["signingKey_SECRET"].clone();
    v2["roots"].as_array_mut().unwrap().truncate(1);
    v2["timestamp"] = (v1["timestamp"].as_u64().unwrap() + 1).into();
    write_json(d, "v2.json", &v2);
    let run = planet(d, &["mkworld", "v2.json", "-o", "planet"]);
    assert!(run.ok, "{run:?}");
    let run = idtool(d, &["showworld", "planet", "--signed-by", "planet.v1"]);
    assert!(run.ok, "{run:?}");

    // An update signed with the retired key, or not newer, would be refused.
    let mut stale = v1.clone();
    stale["timestamp"] = (v1["timestamp"].as_u64().unwrap() + 2).into();
    write_json(d, "stale.json", &stale);
    let before = fs::read(d.join("planet")).unwrap();
    let run = planet(d, &["mkworld", "stale.json", "-o", "planet"]);
    assert!(
        !run.ok && run.stderr.contains("would refuse") && run.stderr.contains("not signed by"),
        "{run:?}"
    );
    let run = planet(d, &["mkworld", "v2.json", "-o", "planet"]);
    assert!(!run.ok && run.stderr.contains("is not newer"), "{run:?}");
    assert_eq!(
        fs::read(d.join("planet")).unwrap(),
        before,
        "a refused write changes nothing"
    );
}
