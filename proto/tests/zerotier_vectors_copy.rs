//! The zerotier-idtool vectors, from this crate's own copy (no dependency on ../shared).

mod common;

use std::path::PathBuf;

#[test]
fn copied_zerotier_vectors_behave_as_their_readme_says() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/zerotier");
    common::vectors::check_all(&dir);
}
