//! Identity generation and validation cost (the memory-hard hash dominates).

use criterion::{Criterion, criterion_group, criterion_main};
use vnet_proto::c25519::KeyPair;
use vnet_proto::identity::Identity;
use vnet_proto::identity_hash::{IdentityHashScratch, identity_hash};

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("identity");
    group.sample_size(20);
    group.bench_function("generate", |b| b.iter(|| Identity::generate(&mut os_rng())));
    let key = *KeyPair::generate(&mut os_rng()).public();
    let mut scratch = IdentityHashScratch::new();
    group.bench_function("memory_hard_hash", |b| {
        b.iter(|| identity_hash(&key, &mut scratch))
    });
    group.finish();
}

criterion_group!(identity, benches);
criterion_main!(identity);

/// The operating system's random source.
fn os_rng() -> vnet_proto::rng::UnwrapErr<getrandom::SysRng> {
    vnet_proto::rng::UnwrapErr(getrandom::SysRng)
}
