//! Reading buyers' answers: simd-json (what rtbd uses) against serde_json,
//! on typical answers of 100 to 500 bytes, each read through three dot
//! paths (bid, timer, number).
//!
//! Run: `cargo bench --bench webhook`. Results are in the README.
//!
//! Last results (2026-11-30, 2-core VM, medians): simd-json 0.56 / 1.10 /
//! 1.31 µs, serde_json 0.54 / 1.29 / 2.34 µs (small, Ringba, nested).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rtbd::webhook::{Path, read_answer};

const SMALL: &str = r#"{"bid":12.5,"duration":90,"phone":"+18005550199","id":"9f1c2d"}"#;
const RINGBA: &str = r#"{"bidId":"c3f1a2b4-5d6e-4f70-8a9b-0c1d2e3f4a5b","bidAmount":12.75,"expireInSeconds":30,"bidTerms":[{"callMinDuration":75,"phoneNumber":"+18005550175","sipAddress":null,"conversionType":"callLength"}],"campaignId":"CA1234567890","publisherId":"PI0987654321","warnings":[]}"#;
const LARGE: &str = r#"{"status":"accepted","buyer":{"id":"buyer-42","name":"Northeast Home Insurance Partners","tier":"gold","regions":["NY","NJ","CT","PA","MA"]},"offer":{"bid":"18.40","currency":"USD","duration":120,"phone":"+18005550142","expires_at":"2024-05-29T16:16:18.246Z"},"tracking":{"request_id":"7d3e9a10-42c1-4b7f-9e2d-5a6b7c8d9e0f","received_at":"2024-05-29T16:16:03.101Z","latency_ms":14},"flags":{"test":false,"duplicate":false,"verified":true},"notes":"bid valid for inbound calls from NY metro only; caller must be over 18"}"#;

fn paths(bid: &str, timer: &str, number: &str) -> (Path, Path, Path) {
    (Path::parse(bid).unwrap(), Path::parse(timer).unwrap(), Path::parse(number).unwrap())
}

/// The same lookup on a serde_json tree.
fn serde_read(
    text: &str,
    bid: &[&str],
    timer: &[&str],
    number: &[&str],
) -> (Option<f64>, Option<u64>, Option<String>) {
    let root: serde_json::Value = serde_json::from_str(text).unwrap();
    let find = |path: &[&str]| {
        let mut at = &root;
        for seg in path {
            at = match (at.as_array(), seg.parse::<usize>()) {
                (Some(items), Ok(i)) => items.get(i)?,
                _ => at.get(seg)?,
            };
        }
        Some(at.clone())
    };
    let bid = find(bid).and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
    let timer = find(timer).and_then(|v| v.as_u64());
    let number = find(number).and_then(|v| v.as_str().map(str::to_owned));
    (bid, timer, number)
}

fn answers(c: &mut Criterion) {
    let cases = [
        ("small (70 B)", SMALL, ("bid", "duration", "phone")),
        ("ringba (300 B)", RINGBA, ("bidAmount", "bidTerms.0.callMinDuration", "bidTerms.0.phoneNumber")),
        ("large (500 B)", LARGE, ("offer.bid", "offer.duration", "offer.phone")),
    ];
    let mut group = c.benchmark_group("buyer answer");
    for (name, text, (bid, timer, number)) in cases {
        let (b, t, n) = paths(bid, timer, number);
        group.bench_function(format!("simd-json {name}"), |bench| {
            bench.iter(|| {
                let mut buf = text.as_bytes().to_vec();
                black_box(read_answer(&mut buf, &b, Some(&t), Some(&n)))
            })
        });
        let split = |p: &'static str| p.split('.').collect::<Vec<_>>();
        let (sb, st, sn) = (split(bid), split(timer), split(number));
        group.bench_function(format!("serde_json {name}"), |bench| {
            bench.iter(|| black_box(serde_read(text, &sb, &st, &sn)))
        });
    }
    group.finish();
}

criterion_group!(benches, answers);
criterion_main!(benches);
