//! The zerotier-idtool vectors, read from `../shared/vectors/zerotier`.

mod common;

use std::path::PathBuf;

#[test]
fn shared_zerotier_vectors_behave_as_their_readme_says() {
    let dir = std::env::var_os("VNET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("vectors/zerotier");
    assert!(
        dir.join("README.md").is_file(),
        "{} not found: the project expects shared/ beside its checkout (or set VNET_SHARED_DIR)",
        dir.display()
    );
    common::vectors::check_all(&dir);
}
