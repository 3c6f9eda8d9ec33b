//! Identity parsing on arbitrary input: the text form (input as UTF-8) and
//! the binary form (input as bytes). Never panics; whatever parses
//! round-trips.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use vnet_proto::identity::Identity;
use vnet_proto::identity_hash::IdentityHashScratch;

thread_local! {
    // `Identity::from_str` is `parse_with` and a fresh 2 MiB scratch buffer;
    // reusing one keeps the fuzzer fast on inputs that never reach the hash.
    static SCRATCH: RefCell<IdentityHashScratch> = RefCell::new(IdentityHashScratch::new());
}

fuzz_target!(|data: &[u8]| {
    SCRATCH.with(|scratch| {
        let scratch = &mut scratch.borrow_mut();
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(identity) = Identity::parse_with(text, scratch)
        {
            let again = Identity::parse_with(&identity.to_text(true), scratch)
                .expect("an identity's own text parses");
            assert_eq!(again, identity);
            assert_eq!(again.has_secret(), identity.has_secret());
        }
        if let Ok((identity, used)) = Identity::decode_with(data, scratch) {
            let mut out = Vec::new();
            identity.encode_into(&mut out, true);
            assert_eq!(out, &data[..used], "re-encoding differs from the input");
        }
    });
});
