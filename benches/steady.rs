//! The ping path at its steady state, in-process and single-threaded: the
//! load harness's config and requests (ten targets, a new caller per ping),
//! at 110,000 pings per second of a manual clock, with the expiry tick every
//! 10 ms as the server runs it. After a TTL (15 s) of warm-up, 1.65 million
//! reservations are live and records leave the ring as fast as they come:
//! every ping then pays the cache misses a real server pays, which the
//! criterion benches (a small working set) do not show. What it measures is
//! the engine's own cost per ping, without sockets, hyper or a scheduler.
//!
//! Run: `cargo bench --bench steady` (needs about 1 GiB of memory), or
//! `STEADY_THREADS=2 cargo bench --bench steady` for two threads pinging at
//! once, one of them keeping the clock and running the tick.
//!
//! Last results (2026-12-01, 2-core VM): 1.26 to 1.39 µs per ping, request
//! building (0.14 µs) included; the code before the live index changes,
//! run at the same time on the other core, 1.58 to 1.87 µs. Earlier the
//! same day: 1.67 to 1.82 µs, and 2026-11-30's code 1.74 to 1.85 µs. In
//! three paired runs against the code before plain form pairs were
//! borrowed in one pass: 2.09 → 1.91, 2.12 → 2.05, 2.11 → 2.04 µs. On
//! 2026-11-30 (1.9 to 2.05 µs then), two threads: 2.40 µs (the thread
//! that also runs the tick) and 1.93 µs, with 1.95 µs for one thread in
//! the same session: sharing the engine between two cores adds about
//! 0.2 µs per ping.

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

/// Sends `pings` pings for callers after `first`. The thread that keeps
/// the clock moves it 1 ms per `per_ms` of its pings and runs the expiry
/// tick every 10 ms, as the server does.
fn pings(engine: &Engine, clock: Option<&ManualClock>, first: u64, pings: u64, per_ms: u64) -> Duration {
    // As a server's worker thread does.
    rtbd::stats::claim_stripe();
    let started = Instant::now();
    for i in 0..pings {
        if let Some(clock) = clock
            && i % per_ms == 0
        {
            clock.advance(Duration::from_millis(1));
            if clock.now_ms() % 10 == 0 {
                engine.tick();
            }
        }
        let caller = first + i;
        let uri = format!(
            "/rtbs.json?key=bench-key&publisher_id=pub1&caller_number=%2B1{caller}&caller_zip=10001&caller_state=NY"
        );
        let Ok(request) = Request::post(uri).body(()) else { continue };
        let (parts, _) = request.into_parts();
        let handled = http::respond(engine, &parts, &[]);
        assert!(matches!(handled, http::Handled::Response(r) if r.status() == 200));
    }
    started.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // STEADY_THREADS=2 measures two threads pinging one engine at once
    // (the server's two workers): what the two cores' sharing of locks and
    // counters adds to a ping.
    let threads: u64 = std::env::var("STEADY_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let text = std::fs::read_to_string("benches/load/rtbd.toml").expect("benches/load/rtbd.toml");
    let routing = config::parse_with_env(&text, "benches/load/rtbd.toml", |_| None).expect("config");
    let clock = ManualClock::new(1_716_999_363_246);
    let engine = Engine::new(routing, clock.clock());
    let first = 2_000_000_000u64;

    let warm = pings(&engine, Some(&clock), first, WARM_UP, RATE_PER_MS);
    println!("warm-up: {WARM_UP} pings in {:.2} s", warm.as_secs_f64());
    // The same rate in all: each thread sends its share.
    let per_ms = (RATE_PER_MS / threads).max(1);
    let times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (engine, clock) = (&engine, (t == 0).then_some(&clock));
                let from = first + WARM_UP + t * 1_000_000_000;
                scope.spawn(move || pings(engine, clock, from, MEASURED, per_ms))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("pinging thread")).collect()
    });
    let live: usize = engine.table().shards().map(|s| s.lock().live_count()).sum();
    let per_ping = |d: &Duration| d.as_nanos() as f64 / MEASURED as f64;
    let each: Vec<String> = times.iter().map(|d| format!("{:.0}", per_ping(d))).collect();
    println!(
        "steady state ({live} live reservations, {threads} thread(s)): {MEASURED} pings per thread, {} ns per ping (request building included)",
        each.join(" and ")
    );
    // The request building alone, to subtract.
    let started = Instant::now();
    for i in 0..MEASURED {
        let uri = format!(
            "/rtbs.json?key=bench-key&publisher_id=pub1&caller_number=%2B1{}&caller_zip=10001&caller_state=NY",
            first + i
        );
        let Ok(request) = Request::post(uri).body(()) else { continue };
        std::hint::black_box(request.into_parts());
    }
    println!(
        "of which building the request: {:.0} ns",
        started.elapsed().as_nanos() as f64 / MEASURED as f64
    );
}
