//! The ping path at its steady state, in-process and single-threaded: the
//! load harness's config and requests (ten targets, a new caller per ping),
//! at 110,000 pings per second of a manual clock, with the expiry tick every
//! 10 ms as the server runs it. After a TTL (15 s) of warm-up, 1.65 million
//! reservations are live and records leave the ring as fast as they come:
//! every ping then pays the cache misses a real server pays, which the
//! criterion benches (a small working set) do not show. What it measures is
//! the engine's own cost per ping, without sockets, hyper or a scheduler.
//!
//! Run: `cargo bench --bench steady` (needs about 1 GiB of memory).
//!
//! Last results (2026-11-30, 2-core VM): 2.2 to 2.4 µs per ping (2.22,
//! 2.30, 2.33, 2.41), request building (0.14 µs) included. In three paired
//! runs against the code before a ping's flow stayed inline: 2.47 → 2.33,
//! 2.70 → 2.41, 2.58 → 2.30 µs.

use std::time::{Duration, Instant};

use hyper::Request;
use rtbd::clock::ManualClock;
use rtbd::engine::Engine;
use rtbd::{config, http};

// The same allocator as the rtbd binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pings per millisecond of the manual clock.
const RATE_PER_MS: u64 = 110;
const WARM_UP: u64 = 20 * 1_000 * RATE_PER_MS;
const MEASURED: u64 = 2_000_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let text = std::fs::read_to_string("benches/load/rtbd.toml").expect("benches/load/rtbd.toml");
    let routing = config::parse_with_env(&text, "benches/load/rtbd.toml", |_| None).expect("config");
    let clock = ManualClock::new(1_716_999_363_246);
    let engine = Engine::new(routing, clock.clock());
    let mut caller = 2_000_000_000u64;
    let mut run = |pings: u64| -> Duration {
        let started = Instant::now();
        for i in 0..pings {
            if i % RATE_PER_MS == 0 {
                clock.advance(Duration::from_millis(1));
                if clock.now_ms() % 10 == 0 {
                    engine.tick();
                }
            }
            caller += 1;
            let uri = format!(
                "/rtbs.json?key=bench-key&publisher_id=pub1&caller_number=%2B1{caller}&caller_zip=10001&caller_state=NY"
            );
            let Ok(request) = Request::post(uri).body(()) else { continue };
            let (parts, _) = request.into_parts();
            let handled = http::respond(&engine, &parts, &[]);
            assert!(matches!(handled, http::Handled::Response(r) if r.status() == 200));
        }
        started.elapsed()
    };
    let warm = run(WARM_UP);
    println!("warm-up: {WARM_UP} pings in {:.2} s", warm.as_secs_f64());
    let measured = run(MEASURED);
    let live: usize = engine.table().shards().map(|s| s.lock().live_count()).sum();
    println!(
        "steady state ({live} live reservations): {MEASURED} pings, {:.0} ns per ping (request building included)",
        measured.as_nanos() as f64 / MEASURED as f64
    );
    // The request building alone, to subtract.
    let started = Instant::now();
    for i in 0..MEASURED {
        let uri = format!(
            "/rtbs.json?key=bench-key&publisher_id=pub1&caller_number=%2B1{}&caller_zip=10001&caller_state=NY",
            caller + i
        );
        let Ok(request) = Request::post(uri).body(()) else { continue };
        std::hint::black_box(request.into_parts());
    }
    println!(
        "of which building the request: {:.0} ns",
        started.elapsed().as_nanos() as f64 / MEASURED as f64
    );
}
