//! Record-batch codec throughput: encode and validate a 16 KiB batch of 1 KiB records, the
//! producer's and the broker's hot paths.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_storage::batch::{self, BatchParams, Compression, NewRecord};

const RECORD_LEN: usize = 1024;
const RECORDS: usize = 16;

/// Log-line-like values: compressible, but not trivially (a small alphabet from an LCG).
fn records() -> Vec<NewRecord> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 ,:{}\"";
    (0..RECORDS)
        .map(|i| {
            let value: Vec<u8> = (0..RECORD_LEN)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(state >> 59) as usize % alphabet.len()]
                })
                .collect();
            NewRecord {
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let payload: usize = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
        .sum();

    for codec in [Compression::None, Compression::Lz4] {
        let params = BatchParams {
            compression: codec,
            ..BatchParams::default()
        };
        let encoded = batch::encode(&params, &records).expect("encode");

        let mut group = c.benchmark_group(format!("batch/{codec}"));
        // Encode is measured against the record bytes it consumes, validate against the batch
        // bytes it checks (smaller when compressed).
        group.throughput(Throughput::Bytes(payload as u64));
        group.bench_function("encode", |b| {
            b.iter(|| batch::encode(black_box(&params), black_box(&records)))
        });
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function("validate", |b| {
            b.iter(|| batch::validate(black_box(&encoded), 1 << 20))
        });
        group.throughput(Throughput::Bytes(payload as u64));
        group.bench_function("decode", |b| b.iter(|| batch::decode(black_box(&encoded))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
