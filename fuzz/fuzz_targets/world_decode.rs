//! `World::decode` on arbitrary bytes: never panics, and whatever decodes
//! re-encodes to exactly the input (the binary form is canonical).

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use vnet_proto::identity_hash::IdentityHashScratch;
use vnet_proto::world::{UpdateRefusal, World};

thread_local! {
    // `World::decode` is `decode_with` and a fresh 2 MiB scratch buffer;
    // reusing one keeps the fuzzer fast on inputs that never reach a root.
    static SCRATCH: RefCell<IdentityHashScratch> = RefCell::new(IdentityHashScratch::new());
}

fuzz_target!(|data: &[u8]| {
    let decoded = SCRATCH.with(|scratch| World::decode_with(data, &mut scratch.borrow_mut()));
    if let Ok(world) = decoded {
        assert_eq!(world.encode(), data, "re-encoding differs from the input");
        // Must not panic, whatever the key and signature bytes are.
        let _ = world.is_self_signed();
        assert!(matches!(
            world.check_update(&world),
            Err(UpdateRefusal::NotNewer { .. })
        ));
    }
});
