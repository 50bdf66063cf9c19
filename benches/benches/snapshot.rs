//! Criterion benches of the edge's read path and update path on a 1,137,500-entry
//! table (125,000 SKUs × (1 + 4 stores × 2 channels) + member prices):
//! - `lookup`: resolving a price with fallback (hit on a store/channel entry, fallback to
//!   chain-wide for an unknown store, miss);
//! - `render`: writing the JSON and flatbuffer answers;
//! - `delta_apply`: building the next version from a 10,000-entry delta (`build_only`),
//!   the writer thread's whole CPU cost for one (`decode_build_drop`: check and read
//!   the flatbuffer in place, build the version, free as much as the replaced version
//!   holds), and the decode alone (in place, and the owned decode the edge used before).
//!
//! Run: `cargo bench -p edgeprice-bench --bench snapshot`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use edgeprice_pricing::{Currency, PriceKey};
use edgeprice_schemas::codec::{decode_delta, encode_delta, DeltaData, DeltaView};
use edgeprice_server::render;
use edgeprice_server::snapshot::Snapshot;
use edgeprice_server::store::now_ms;
use edgeprice_server::synth::{self, SynthSpec};
use flatbuffers::FlatBufferBuilder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The same allocator as the `edgeprice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SKUS: usize = 125_000;

fn spec() -> SynthSpec {
    SynthSpec {
        skus: SKUS,
        stores: 4,
        channels: 2,
        seed: 1,
        version: 1,
        now_ms: now_ms(),
        currency: Currency::EUR,
    }
}

fn table() -> Snapshot {
    Snapshot::build(synth::generate(&spec())).expect("valid table")
}

/// A delta repricing `n` random entries of the generated table.
fn delta(snapshot: &Snapshot, n: usize, seed: u64) -> DeltaData {
    let mut rng = SmallRng::seed_from_u64(seed);
    let all: Vec<_> = synth::generate(&SynthSpec { skus: n, ..spec() }).entries;
    let upserts = (0..n)
        .map(|_| {
            let mut entry = all[rng.gen_range(0..all.len())].clone();
            let sku = synth::sku_name(rng.gen_range(1..=SKUS));
            entry.key = PriceKey {
                sku: edgeprice_pricing::Sku::new(&sku).unwrap(),
                ..entry.key
            };
            entry.price_minor = entry.floor_minor + rng.gen_range(0..100);
            entry
        })
        .collect();
    DeltaData {
        base_version: snapshot.version(),
        version: snapshot.version() + 1,
        created_at_ms: now_ms(),
        promotions: None,
        upserts,
        removals: Vec::new(),
    }
}

fn lookup(c: &mut Criterion) {
    let snapshot = table();
    let now = now_ms();
    let mut group = c.benchmark_group("lookup");
    let query = snapshot.query(Some("store-1"), Some("web"), None);
    group.bench_function("store_channel_hit", |b| {
        let mut i = 0usize;
        let skus: Vec<String> = (1..=1024)
            .map(|n| synth::sku_name(n * 97 % SKUS + 1))
            .collect();
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(
                snapshot
                    .resolve(&skus[i], query, now)
                    .map(|r| r.variant.entry.price_minor),
            )
        })
    });
    let unknown_store = snapshot.query(Some("store-999"), Some("web"), None);
    group.bench_function("fallback_to_chain_wide", |b| {
        b.iter(|| {
            black_box(
                snapshot
                    .resolve(black_box("SKU-0000042"), unknown_store, now)
                    .map(|r| r.variant.rank()),
            )
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            black_box(
                snapshot
                    .resolve(black_box("SKU-9999999"), query, now)
                    .is_none(),
            )
        })
    });
    group.bench_function("resolve_dimensions", |b| {
        b.iter(|| {
            black_box(snapshot.query(
                black_box(Some("store-3")),
                black_box(Some("app")),
                black_box(Some("member")),
            ))
        })
    });
    group.finish();
}

fn render_answers(c: &mut Criterion) {
    let snapshot = table();
    let now = now_ms();
    let query = snapshot.query(Some("store-1"), Some("web"), None);
    // SKU-0000008 is on promotion in this seed's table; the bench renders both shapes.
    let promoted = (1..=SKUS)
        .map(synth::sku_name)
        .find(|s| {
            snapshot
                .resolve(s, query, now)
                .is_some_and(|r| r.variant.entry.active_promotion(now).is_some())
        })
        .expect("some SKU on promotion");
    let mut group = c.benchmark_group("render");
    for (name, sku) in [
        ("json_plain", "SKU-0000001".to_owned()),
        ("json_promotion", promoted.clone()),
    ] {
        let resolved = snapshot.resolve(&sku, query, now).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(384);
                render::price_json(
                    &mut out,
                    &snapshot,
                    &resolved,
                    now,
                    Some(snapshot.version()),
                );
                black_box(out)
            })
        });
    }
    let resolved = snapshot.resolve(&promoted, query, now).unwrap();
    group.bench_function("flatbuffer_promotion", |b| {
        let mut fbb = FlatBufferBuilder::with_capacity(1024);
        b.iter(|| {
            fbb.reset();
            let answer =
                render::price_answer(&mut fbb, &snapshot, &resolved, now, snapshot.version());
            fbb.finish(answer, None);
            black_box(fbb.finished_data().len())
        })
    });
    group.finish();
}

fn delta_apply(c: &mut Criterion) {
    let snapshot = table();
    let mut group = c.benchmark_group("delta_apply");
    group.sample_size(20);
    group.bench_function("10k_entries_on_1m", |b| {
        let mut seed = 0;
        b.iter_batched(
            || {
                seed += 1;
                delta(&snapshot, 10_000, seed)
            },
            // One at a time: versions made from the same base while another is alive
            // would each extend a copy of it.
            |delta| black_box(snapshot.apply(delta).expect("applies")),
            BatchSize::PerIteration,
        )
    });
    // What the writer thread spends per delta besides persisting: the encoded body
    // verified and read in place, the version built, and as much freed as dropping the
    // replaced version frees (dropping the new one while its base is alive frees what
    // it made: as many shards and records as it replaced).
    let encoded: Vec<Vec<u8>> = (0..8)
        .map(|seed| encode_delta(&delta(&snapshot, 10_000, 1_000 + seed)))
        .collect();
    group.bench_function("10k_entries_on_1m_decode_build_drop", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            let delta = DeltaView::parse(black_box(&encoded[i])).expect("decodes");
            let next = snapshot.apply_view(&delta).expect("applies");
            drop(black_box(next));
        })
    });
    // The decode part alone: the in-place view the edge uses, and the owned decode it
    // replaced (still used to replay the delta log on restart).
    group.bench_function("10k_entries_decode_view", |b| {
        b.iter(|| {
            let delta = DeltaView::parse(black_box(&encoded[0])).expect("decodes");
            black_box(delta.upserts().filter(|e| e.price_minor > 0).count())
        })
    });
    group.bench_function("10k_entries_decode_owned", |b| {
        b.iter(|| black_box(decode_delta(black_box(&encoded[0])).expect("decodes")))
    });
    group.finish();
}

criterion_group!(benches, lookup, render_answers, delta_apply);
criterion_main!(benches);
