//! CPU time (this thread's, so other load on the machine inflates it less than wall
//! time) of the edge writer's work per delta, by phase: check and read the encoded
//! delta, build the next version, free the replaced one. 10,000-entry deltas of the
//! delta_pusher's shape (distinct chain-wide and store × channel keys) applied in a
//! chain to the 1,137,500-entry table, the first 10 rounds not counted.
//!
//! Run: `cargo run --release -p edgeprice-bench --example delta_phases [ROUNDS]`
use std::time::Instant;

use edgeprice_bench::cpu::thread_cpu_ns;
use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, Sku};
use edgeprice_schemas::codec::{encode_delta, DeltaData};
use edgeprice_server::snapshot::Snapshot;
use edgeprice_server::store::now_ms;
use edgeprice_server::synth::{self, channel_name, sku_name, SynthSpec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn delta(rng: &mut SmallRng, base: u64, n: usize, skus: usize) -> Vec<u8> {
    let mut variants = vec![None];
    for s in 1..=4 {
        for c in 0..2 {
            variants.push(Some((
                Dimension::new(&format!("store-{s}")).unwrap(),
                Dimension::new(&channel_name(c)).unwrap(),
            )));
        }
    }
    let mut picked = std::collections::HashSet::new();
    let mut upserts = Vec::new();
    while upserts.len() < n {
        let sku = rng.gen_range(1..=skus);
        let v = rng.gen_range(0..variants.len());
        if !picked.insert((sku, v)) {
            continue;
        }
        let sku = Sku::new(&sku_name(sku)).unwrap();
        let key = match &variants[v] {
            None => PriceKey::chain_wide(sku),
            Some((s, c)) => PriceKey {
                sku,
                store: s.clone(),
                channel: c.clone(),
                segment: Dimension::any(),
            },
        };
        let p = rng.gen_range(99..=99_999);
        upserts.push(PriceEntry {
            key,
            currency: Currency::EUR,
            list_price_minor: p + p / 5,
            price_minor: p,
            floor_minor: p * 7 / 10,
            promotion: None,
            valid_from_ms: None,
            valid_until_ms: None,
            revision: base + 1,
        });
    }
    encode_delta(&DeltaData {
        base_version: base,
        version: base + 1,
        created_at_ms: 0,
        promotions: None,
        upserts,
        removals: vec![],
    })
}

fn main() {
    let skus = 125_000;
    let spec = SynthSpec {
        skus,
        stores: 4,
        channels: 2,
        seed: 1,
        version: 1,
        now_ms: now_ms(),
        currency: Currency::EUR,
    };
    let mut table = std::sync::Arc::new(Snapshot::build(synth::generate(&spec)).unwrap());
    let mut rng = SmallRng::seed_from_u64(7);
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(60);
    let mut tot = [0u64; 4];
    let mut mins = [u64::MAX; 4];
    let mut walls = Vec::new();
    let mut totals = Vec::new();
    // Encoded up front, so a profile of this process is the writer's work.
    let first = table.version();
    let deltas: Vec<Vec<u8>> = (0..rounds)
        .map(|i| delta(&mut rng, first + i as u64, 10_000, skus))
        .collect();
    for (i, enc) in deltas.iter().enumerate() {
        let enc = enc.as_slice();
        if i == 0 {
            let opts = flatbuffers::VerifierOptions {
                max_depth: 64,
                max_tables: usize::MAX,
                max_apparent_size: usize::MAX,
                ignore_missing_null_terminator: false,
            };
            let a = thread_cpu_ns();
            for _ in 0..50 {
                std::hint::black_box(
                    flatbuffers::root_with_opts::<edgeprice_schemas::fb::SnapshotDelta>(&opts, enc)
                        .unwrap(),
                );
            }
            let b = thread_cpu_ns();
            println!(
                "verify only: {:.2} ms ({} bytes)",
                (b - a) as f64 / 50e6,
                enc.len()
            );
            let mut best = [u64::MAX; 2];
            for _ in 0..30 {
                let a = thread_cpu_ns();
                let d = edgeprice_schemas::codec::decode_delta(enc).unwrap();
                let b = thread_cpu_ns();
                drop(d);
                let b2 = thread_cpu_ns();
                let v = edgeprice_schemas::codec::DeltaView::parse(enc).unwrap();
                let n = v.upserts().filter(|e| e.price_minor > 0).count();
                let c = thread_cpu_ns();
                std::hint::black_box(n);
                best[0] = best[0].min(b - a);
                best[1] = best[1].min(c - b2);
            }
            println!(
                "min decode_delta {:.2} ms, min view parse+read {:.2} ms",
                best[0] as f64 / 1e6,
                best[1] as f64 / 1e6
            );
        }
        let w = Instant::now();
        let t0 = thread_cpu_ns();
        let d = edgeprice_schemas::codec::DeltaView::parse(enc).unwrap();
        let t1 = thread_cpu_ns();
        let next = std::sync::Arc::new(table.apply_view(&d).unwrap());
        let t2 = thread_cpu_ns();
        let old = std::mem::replace(&mut table, next);
        drop(old);
        let t3 = thread_cpu_ns();
        walls.push(w.elapsed().as_micros() as u64);
        if i >= 10 {
            tot[0] += t1 - t0;
            tot[1] += t2 - t1;
            tot[2] += t3 - t2;
            tot[3] += 1;
            mins[0] = mins[0].min(t1 - t0);
            mins[1] = mins[1].min(t2 - t1);
            mins[2] = mins[2].min(t3 - t2);
            mins[3] = mins[3].min(t3 - t0);
            totals.push(t3 - t0);
        }
    }
    let n = tot[3] as f64 * 1e6;
    walls.sort();
    totals.sort();
    println!(
        "min: decode {:.2} ms, apply {:.2} ms, drop {:.2} ms, total {:.2} ms",
        mins[0] as f64 / 1e6,
        mins[1] as f64 / 1e6,
        mins[2] as f64 / 1e6,
        mins[3] as f64 / 1e6
    );
    println!(
        "decode {:.2} ms, apply {:.2} ms, drop old {:.2} ms, total {:.2} ms CPU (p50 {:.2} ms); wall p50 {} us",
        tot[0] as f64 / n,
        tot[1] as f64 / n,
        tot[2] as f64 / n,
        (tot[0] + tot[1] + tot[2]) as f64 / n,
        totals[totals.len() / 2] as f64 / 1e6,
        walls[walls.len() / 2]
    );
}
