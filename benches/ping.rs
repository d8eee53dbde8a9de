//! The in-process ping path: parse → route → reserve → encode, through the
//! same `http::respond` the server calls, without sockets.
//!
//! Every iteration pings a caller whose previous reservation has expired (a
//! ring of 32,768 callers, the clock moving 1 ms per ping, the expiry tick
//! run every 1,024 pings), so this is the steady state of a server taking
//! distinct callers, tick work included.
//!
//! Run: `cargo bench --bench ping`. Results are in the README (Benchmarks).
//!
//! Last results (2026-12-01, 2-core VM, medians): 1 target 0.99 µs, 10
//! targets 1.06 µs, 100 targets 2.21 µs, 10 targets with shield limits on
//! 1.11 µs, echo 0.51 µs; shield dedupe hit 14 ns, shield limits 25 ns.
//! Earlier the same day, before the live index changes: 1.13 / 1.17 /
//! 2.54 / 1.19 µs, echo 0.54 µs. On 2026-11-30's code: 1.22 / 1.37 / 2.83
//! / 1.39 µs, echo 0.62 µs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hyper::Request;
use hyper::http::request::Parts;
use rtbd::clock::ManualClock;
use rtbd::engine::Engine;
use rtbd::phone::Phone;
use rtbd::sym::Sym;
use rtbd::table::{Scope, Table};
use rtbd::{config, http, shield};

// The same allocator as the rtbd binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "1915260e-da0c-4443-a35b-8fb9d9843e42";
const RING: usize = 32_768;

fn config_with(targets: usize) -> String {
    config_with_shield(targets, "")
}

/// `shield` lines go into the key's `[campaigns.rtb_keys.ping_shield]`.
fn config_with_shield(targets: usize, shield: &str) -> String {
    let shield = if shield.is_empty() {
        String::new()
    } else {
        format!("[campaigns.rtb_keys.ping_shield]\n{shield}\n")
    };
    let mut text = format!(
        r#"
[server]
admin_token = "a"
switch_token = "s"
max_records = 200000

[[campaigns]]
id = "bench"
tracking_numbers = ["+18444021146", "+18444021147"]

[[campaigns.rtb_keys]]
key = "{KEY}"
{shield}
[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 12.5
duration_secs = 90
"#
    );
    for i in 0..targets {
        text.push_str(&format!(
            "\n[[campaigns.targets]]\nid = \"t{i}\"\nnumber = \"+1800555{i:04}\"\npriority = {}\nweight = {}\n",
            i % 3 + 1,
            i % 4 + 1
        ));
    }
    text
}

fn requests() -> Vec<Parts> {
    (0..RING)
        .map(|i| {
            let uri = format!(
                "/rtbs.json?key={KEY}&publisher_id=4321ABCD&caller_number=%2B1800{:07}&caller_zip=10001&caller_state=NY",
                1_000_000 + i
            );
            Request::post(uri).body(()).map(|r| r.into_parts().0).expect("request")
        })
        .collect()
}

/// The response of a request answered at once (static targets only).
fn ready(handled: http::Handled) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    match handled {
        http::Handled::Response(response) => response,
        _ => panic!("the bench config has no webhooks"),
    }
}

fn ping(c: &mut Criterion) {
    // As a server's worker thread does.
    rtbd::stats::claim_stripe();
    let requests = requests();
    let mut group = c.benchmark_group("ping");
    // Shield limits on but never reached: what screening costs a ping.
    let limits = "rate_limit_per_sec = 1000000\nburst = 1000000\nmin_claim_ratio = 0.000001\nclaim_ratio_min_pings = 4000000000";
    for (name, targets, shield) in [
        ("1 target", 1, ""),
        ("10 targets", 10, ""),
        ("100 targets", 100, ""),
        ("10 targets, shield limits on", 10, limits),
    ] {
        let routing =
            config::parse_with_env(&config_with_shield(targets, shield), "bench", |_| None).expect("config");
        let manual = ManualClock::new(1_700_000_000_000);
        let engine = Engine::new(routing, manual.clock());
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let parts = &requests[i % RING];
                i += 1;
                manual.advance(Duration::from_millis(1));
                if i % 1024 == 0 {
                    engine.tick();
                }
                black_box(ready(http::respond(&engine, parts, &[])))
            })
        });
    }
    group.finish();
}

fn echo(c: &mut Criterion) {
    // The Ping Shield's already-reserved path: the same caller again and
    // again while its reservation is live.
    let routing = config::parse_with_env(&config_with(10), "bench", |_| None).expect("config");
    let manual = ManualClock::new(1_700_000_000_000);
    let engine = Engine::new(routing, manual.clock());
    let parts = &requests()[0];
    assert_eq!(ready(http::respond(&engine, parts, &[])).status(), 200);
    c.bench_function("ping/echo of a live reservation", |b| {
        b.iter(|| black_box(http::respond(&engine, parts, &[])))
    });
}

fn shield(c: &mut Criterion) {
    // The shield's own work on a repeat: find the caller's live reservation
    // (lock its shard, look it up).
    let routing = config::parse_with_env(&config_with(10), "bench", |_| None).expect("config");
    let manual = ManualClock::new(1_700_000_000_000);
    let engine = Engine::new(routing, manual.clock());
    let parts = &requests()[0];
    assert_eq!(ready(http::respond(&engine, parts, &[])).status(), 200);
    let caller = Phone::parse("+18001000000").expect("phone");
    let key = Sym::lookup(KEY).expect("key");
    let now = manual.now_ms();
    c.bench_function("shield/dedupe hit: lock and find the live reservation", |b| {
        b.iter(|| {
            let shard = engine.table().lock(Table::shard_of_caller(black_box(caller)));
            black_box(shard.find_live(caller, Scope::Key(key), now).is_some())
        })
    });
    // Rate limits and the claim ratio for one publisher on one key.
    let settings = shield::Settings {
        rate_limit_per_sec: 1_000_000,
        burst: 1_000_000,
        min_claim_ratio: 0.01,
        claim_ratio_min_pings: u32::MAX,
        ..shield::Settings::default()
    };
    let screen = shield::Shield::default();
    let limiter = shield::Gcra::default();
    let mut now = 1_700_000_000_000u64;
    c.bench_function("shield/screen: key and publisher rates, claim window", |b| {
        b.iter(|| {
            now += 1;
            black_box(screen.screen(&settings, key, &limiter, 7, now))
        })
    });
}

criterion_group!(benches, ping, echo, shield);
criterion_main!(benches);
