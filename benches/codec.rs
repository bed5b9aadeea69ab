//! Micro-benchmarks of the per-key CPU work on the request path that does not
//! involve the network: encoding and decoding a value (the part after the storage header) and
//! building a tenant's storage key. A BatchGet of 100 keys does each 100
//! times, so a regression here shows up as keys/s lost.
//!
//! Run with `cargo bench --bench codec`; it prints numbers and asserts nothing.

use std::{collections::HashMap, hint::black_box};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use state_service::{
    pb::{Value, ValueList, ValueMap, value::Kind},
    store::Keyspace,
    store::codec::{decode, encode},
};

fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// The values a benchmark run and a typical worker store.
fn samples() -> Vec<(&'static str, Value)> {
    let mut fields = HashMap::new();
    for i in 0..8 {
        fields.insert(format!("field{i}"), v(Kind::IntValue(i)));
    }
    vec![
        ("int", v(Kind::IntValue(-1_234_567_890))),
        ("bytes64", v(Kind::BytesValue(vec![b'x'; 64]))),
        ("bytes1k", v(Kind::BytesValue(vec![b'x'; 1024]))),
        ("string64", v(Kind::StringValue("s".repeat(64)))),
        (
            "map8",
            v(Kind::MapValue(ValueMap {
                fields: fields.clone(),
            })),
        ),
        (
            "list_of_maps",
            v(Kind::ListValue(ValueList {
                values: (0..4)
                    .map(|_| {
                        v(Kind::MapValue(ValueMap {
                            fields: fields.clone(),
                        }))
                    })
                    .collect(),
            })),
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, value) in samples() {
        group.throughput(Throughput::Bytes(encode(&value).len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &value, |b, value| {
            b.iter(|| encode(black_box(value)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for (name, value) in samples() {
        let bytes = encode(&value);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| decode(black_box(bytes)))
        });
    }
    group.finish();
}

fn keys(c: &mut Criterion) {
    let ns = Keyspace::new("state").namespace("team-a.prod");
    let mut group = c.benchmark_group("storage_key");
    for (name, key) in [
        ("16B", "key:000000012345".to_string()),
        ("128B", "k".repeat(128)),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), &key, |b, key| {
            b.iter(|| ns.storage_key(black_box(key)))
        });
    }
    group.finish();
}

criterion_group!(benches, codec, keys);
criterion_main!(benches);
