//! vnet-idtool end to end: the real binary against zerotier-idtool's files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use vnet_tests::{Run, run_in, shared_vectors};

fn idtool(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, "vnet-idtool", args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn refused(run: &Run, needles: &[&str]) {
    assert!(!run.ok, "expected refusal, got success: {run:?}");
    assert_eq!(
        run.code,
        Some(1),
        "zerotier-idtool exits 1 on refusal: {run:?}"
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr lacks {needle:?}: {run:?}"
        );
    }
}

#[test]
fn zerotier_identities_and_signatures_work_with_vnet_idtool() {
    let v = shared_vectors();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for who in ["a", "b"] {
        let secret = v.join(format!("id-{who}.secret"));
        let public = v.join(format!("id-{who}.public"));
        for id in [&secret, &public] {
            let run = idtool(d, &["validate", path_str(id)]);
            assert!(run.ok, "{run:?}");
            assert_eq!(
                run.stdout,
                format!("{} is a valid identity\n", id.display())
            );
        }
        let run = idtool(d, &["getpublic", path_str(&secret)]);
        assert!(run.ok, "{run:?}");
        assert_eq!(run.stdout, fs::read_to_string(&public).unwrap());

        let msg = v.join(format!("msg-{who}.txt"));
        let sig_file = v.join(format!("msg-{who}.sig"));
        let sig = fs::read_to_string(&sig_file).unwrap();
        let run = idtool(d, &["sign", path_str(&secret), path_str(&msg)]);
        assert_eq!(
            run.stdout, sig,
            "Ed25519 is deterministic: same signature as ZeroTier"
        );
        for sig_arg in [sig.as_str(), path_str(&sig_file)] {
            let run = idtool(d, &["verify", path_str(&public), path_str(&msg), sig_arg]);
            assert!(run.ok, "{run:?}");
            assert_eq!(run.stdout, format!("{} signature valid\n", msg.display()));
        }
        // Any other message or key refuses.
        let other = if who == "a" { "b" } else { "a" };
        let other_msg = v.join(format!("msg-{other}.txt"));
        let other_id = v.join(format!("id-{other}.public"));
        refused(
            &idtool(
                d,
                &["verify", path_str(&public), path_str(&other_msg), &sig],
            ),
            &["signature check FAILED"],
        );
        refused(
            &idtool(d, &["verify", path_str(&other_id), path_str(&msg), &sig]),
            &["signature check FAILED"],
        );
        // An identity literal on the command line works like a file.
        let literal = fs::read_to_string(&public).unwrap();
        assert!(idtool(d, &["verify", &literal, path_str(&msg), &sig]).ok);
    }
    let bad = v.join("id-bad-key.public");
    refused(
        &idtool(d, &["validate", path_str(&bad)]),
        &["id-bad-key.public FAILED validation"],
    );
}

#[test]
fn zerotier_moon_json_and_files_work_with_vnet_idtool() {
    let v = shared_vectors();
    for (who, id) in [("a", "5b51b6c335"), ("b", "5d4d6e8499")] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::copy(v.join(format!("moon-{who}.json")), d.join("moon.json")).unwrap();
        let run = idtool(d, &["genmoon", "moon.json"]);
        assert!(run.ok, "{run:?}");
        let name = format!("000000{id}.moon");
        assert!(
            run.stdout
                .starts_with(&format!("wrote {name} (signed world with timestamp "))
        );
        assert!(d.join(&name).is_file());

        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(d.join("moon.json")).unwrap()).unwrap();
        for file in [d.join(&name), v.join(&name)] {
            let run = idtool(d, &["showworld", path_str(&file)]);
            assert!(run.ok, "{run:?}");
            let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(shown["worldType"], "moon");
            assert_eq!(shown["signatureVerifies"], true);
            assert_eq!(shown["id"], format!("000000{id}"));
            assert_eq!(shown["roots"][0]["identity"], json["roots"][0]["identity"]);
            assert_eq!(
                shown["roots"][0]["stableEndpoints"],
                json["roots"][0]["stableEndpoints"]
            );
        }
        let tampered = v.join(format!("000000{id}.tampered-moon"));
        let run = idtool(d, &["showworld", path_str(&tampered)]);
        refused(&run, &["tampered-moon", "signature does not verify"]);
        let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(shown["signatureVerifies"], false);
    }
}

#[test]
fn newcomer_moon_workflow() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = idtool(d, &["generate", "identity.secret", "identity.public"]);
    assert!(run.ok, "{run:?}");
    assert_eq!(
        run.stdout,
        "identity.secret written\nidentity.public written\n"
    );
    let mode = fs::metadata(d.join("identity.secret"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secret identity must be private");
    assert!(idtool(d, &["validate", "identity.secret"]).ok);
    let public = fs::read_to_string(d.join("identity.public")).unwrap();
    let address = &public[..10];

    let run = idtool(d, &["initmoon", "identity.public"]);
    assert!(run.ok, "{run:?}");
    let mut moon: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(moon["id"], address);
    assert_eq!(moon["worldType"], "moon");
    assert_eq!(moon["signingKey"], moon["updatesMustBeSignedBy"]);
    assert_eq!(moon["roots"][0]["identity"], public.as_str());
    // initmoon leaves the endpoints empty; genmoon says what to fill in.
    fs::write(d.join("moon.json"), &run.stdout).unwrap();
    refused(
        &idtool(d, &["genmoon", "moon.json"]),
        &["moon.json", "roots[0].stableEndpoints"],
    );

    moon["roots"][0]["stableEndpoints"] = serde_json::json!(["203.0.113.10/9993"]);
    fs::write(
        d.join("moon.json"),
        serde_json::to_string_pretty(&moon).unwrap(),
    )
    .unwrap();
    let first = idtool(d, &["genmoon", "moon.json"]);
    assert!(first.ok, "{first:?}");
    let second = idtool(d, &["genmoon", "moon.json"]);
    assert!(second.ok, "{second:?}");
    let stamp = |r: &Run| -> u64 {
        r.stdout
            .rsplit(' ')
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(')')
            .parse()
            .unwrap()
    };
    assert!(
        stamp(&second) > stamp(&first),
        "a regenerated moon is always newer"
    );
    let run = idtool(d, &["showworld", &format!("000000{address}.moon")]);
    assert!(run.ok, "{run:?}");
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(shown["roots"][0]["stableEndpoints"][0], "203.0.113.10/9993");
    assert_eq!(shown["timestamp"], stamp(&second));
}

#[test]
fn generate_never_overwrites_an_identity_by_accident() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(idtool(d, &["generate", "id.secret"]).ok);
    let before = fs::read(d.join("id.secret")).unwrap();
    refused(
        &idtool(d, &["generate", "id.secret"]),
        &["id.secret", "already exists"],
    );
    assert_eq!(fs::read(d.join("id.secret")).unwrap(), before);
    assert!(idtool(d, &["generate", "id.secret", "--force"]).ok);
    assert_ne!(fs::read(d.join("id.secret")).unwrap(), before);
    // Without files, the secret identity goes to stdout and validates.
    let run = idtool(d, &["generate"]);
    assert!(run.ok);
    assert!(idtool(d, &["validate", &run.stdout]).ok);
}

#[test]
fn malformed_identities_are_refused_with_file_and_reason() {
    let v = shared_vectors();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = fs::read_to_string(v.join("id-a.public")).unwrap();
    let secret = fs::read_to_string(v.join("id-a.secret")).unwrap();
    let other_secret = fs::read_to_string(v.join("id-b.secret")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "badhex.public",
            good.replacen(":c8", ":zz", 1),
            "not valid hex",
        ),
        (
            "short.public",
            good[..good.len() - 2].to_string(),
            "must be 64 bytes, got 63",
        ),
        (
            "type.public",
            good.replacen(":0:", ":1:", 1),
            "unknown identity type",
        ),
        (
            "fields.public",
            "5b51b6c335:0".into(),
            "expected <address>:0:<public key>",
        ),
        (
            "addr.public",
            good.replacen("5b51b6c335", "5b51b6c336", 1),
            "FAILED validation",
        ),
        (
            "mixed.secret",
            format!("{}:{}", good, other_secret.rsplit(':').next().unwrap()),
            "secret key does not match public key",
        ),
    ];
    for (file, content, reason) in &cases {
        fs::write(d.join(file), content).unwrap();
        refused(&idtool(d, &["validate", file]), &[file, reason]);
    }
    refused(
        &idtool(d, &["validate", "missing.public"]),
        &["missing.public", "cannot read"],
    );
    fs::write(d.join("msg"), "m").unwrap();
    refused(
        &idtool(d, &["sign", path_str(&v.join("id-a.public")), "msg"]),
        &["does not contain a private key"],
    );
    assert!(idtool(d, &["sign", &secret, "msg"]).ok);
}

#[test]
fn malformed_world_files_are_refused_with_file_and_reason() {
    let v = shared_vectors();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = fs::read(v.join("0000005b51b6c335.moon")).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    let mut unknown = good.clone();
    unknown[0] = 2;
    let mut bad_sig = good.clone();
    bad_sig[100] ^= 0x01;
    let mut bad_endpoint = good.clone();
    let endpoint_at = 1 + 8 + 8 + 64 + 96 + 1 + (5 + 1 + 64 + 1) + 1;
    bad_endpoint[endpoint_at] = 0x05;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.moon", good[..200].to_vec(), "truncated"),
        ("trailing.moon", trailing, "1 trailing byte(s)"),
        ("unknown.moon", unknown, "unknown world type byte 2"),
        ("badsig.moon", bad_sig, "signature does not verify"),
        (
            "endpoint.moon",
            bad_endpoint,
            "unknown endpoint type byte 0x05",
        ),
        ("empty.moon", Vec::new(), "truncated"),
    ];
    for (file, content, reason) in &cases {
        fs::write(d.join(file), content).unwrap();
        refused(&idtool(d, &["showworld", file]), &[file, reason]);
    }
}

#[test]
fn malformed_moon_json_is_refused_with_field() {
    let v = shared_vectors();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(v.join("moon-a.json")).unwrap()).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let edits: Vec<(&str, Edit, &str)> = vec![
        ("id", |j| j["id"] = "0".into(), "ID in"),
        (
            "idroot",
            |j| j["id"] = "1234567890".into(),
            "not the address of any root",
        ),
        (
            "type",
            |j| j["worldType"] = "galaxy".into(),
            "invalid worldType",
        ),
        (
            "endpoint",
            |j| j["roots"][0]["stableEndpoints"][0] = "203.0.113.10:9993".into(),
            "roots[0].stableEndpoints[0]",
        ),
        (
            "key",
            |j| j["signingKey_SECRET"] = "00".into(),
            "signingKey_SECRET",
        ),
        (
            "mismatch",
            |j| {
                j["signingKey"] = j["updatesMustBeSignedBy"]
                    .as_str()
                    .unwrap()
                    .replacen('5', "6", 1)
                    .into()
            },
            "signingKey_SECRET: is not the secret half",
        ),
        (
            "root",
            |j| j["roots"][0]["identity"] = "5b51b6c335:0:00".into(),
            "roots[0].identity",
        ),
    ];
    for (name, edit, reason) in edits {
        let mut json = base.clone();
        edit(&mut json);
        let file = format!("{name}.json");
        fs::write(d.join(&file), json.to_string()).unwrap();
        refused(&idtool(d, &["genmoon", &file]), &[&file, reason]);
    }
    fs::write(d.join("notjson.json"), "{").unwrap();
    refused(
        &idtool(d, &["genmoon", "notjson.json"]),
        &["notjson.json", "EOF"],
    );
    assert!(
        fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".moon"))
    );
}
