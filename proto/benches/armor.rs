//! Packet armor cost on one core: Salsa20/12 + Poly1305, in place.
//!
//! `armor` encrypts and MACs one packet (what a sender does); `armor+dearmor`
//! is one packet sent and received (MAC check, then decryption). Throughput
//! counts body bytes. After criterion's runs, a plain timing loop prints the
//! median packets/s and MB/s of each, for comparison with the reference
//! figures in shared/lab/BASELINE.md (550 MB/s for 1400-byte packets).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vnet_proto::address::Address;
use vnet_proto::armor::{PacketKey, armor, dearmor};
use vnet_proto::constants::PACKET_HEADER_LEN_BYTES;
use vnet_proto::wire::PacketHeader;

/// Body sizes (verb and payload): a small control packet, a full-MTU frame,
/// and a 64 KiB frame (which goes out fragmented).
const BODY_SIZES: [usize; 3] = [64, 1400, 65536];

fn packet(body_len: usize) -> Vec<u8> {
    let mut buf = vec![0x5a; PACKET_HEADER_LEN_BYTES + body_len];
    PacketHeader {
        counter: 0x0123_4567_89ab_cdef,
        dest: Address::from_u64(0x11_2233_4455).unwrap(),
        src: Address::from_u64(0x55_4433_2211).unwrap(),
        hops: 0,
        key_slot: 1,
        more_fragments: false,
        clear: false,
        aes_gcm: false,
    }
    .encode_into(&mut buf);
    buf
}

fn round_trip(key: &PacketKey, buf: &mut [u8]) {
    armor(key, buf, true);
    dearmor(key, buf, true).expect("MAC verifies");
}

fn benches(c: &mut Criterion) {
    let key = PacketKey::from_bytes([7; 32]);
    let mut group = c.benchmark_group("armor");
    for body in BODY_SIZES {
        let mut buf = packet(body);
        group.throughput(Throughput::Bytes(body as u64));
        group.bench_with_input(BenchmarkId::new("armor", body), &body, |b, _| {
            b.iter(|| armor(&key, black_box(&mut buf), true))
        });
        group.bench_with_input(BenchmarkId::new("armor+dearmor", body), &body, |b, _| {
            b.iter(|| round_trip(&key, black_box(&mut buf)))
        });
    }
    group.finish();
    print_packet_rates(&key);
}

/// Timed batches per figure printed.
const ROUNDS: usize = 7;
/// Length of one timed batch.
const ROUND_TIME: Duration = Duration::from_millis(200);

/// Prints the median packets/s and MB/s of `ROUNDS` timed batches of each operation.
fn print_packet_rates(key: &PacketKey) {
    println!("\nmedian of {ROUNDS} x {ROUND_TIME:?} (one core; MB = 10^6 body bytes):");
    for body in BODY_SIZES {
        let mut buf = packet(body);
        let armor_only = median_rate(&mut buf, |b| armor(key, b, true));
        let both = median_rate(&mut buf, |b| round_trip(key, b));
        for (name, pps) in [("armor", armor_only), ("armor+dearmor", both)] {
            println!(
                "  {name:>14} {body:>6} B body: {pps:>12.0} packets/s {:>8.1} MB/s",
                pps * body as f64 / 1e6
            );
        }
    }
}

/// Median rate, per second, of `op` on `buf` over `ROUNDS` batches.
fn median_rate(buf: &mut [u8], op: impl Fn(&mut [u8])) -> f64 {
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < ROUND_TIME {
                for _ in 0..16 {
                    op(black_box(&mut *buf));
                }
                n += 16;
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

criterion_group!(armor_benches, benches);
criterion_main!(armor_benches);
