//! A table of 1,000,000 live reservations: memory per reservation, the time
//! and size of a snapshot, ping latency while the snapshot is taken, the
//! time to restore it, and the memory a restored engine takes (measured in
//! a second process that only restores).
//!
//! Run: `cargo bench --bench persistence` (needs about 2 GiB of memory).
//! Results are in the README.
//!
//! Last results (2026-12-01, 2-core VM): 257 bytes per live reservation
//! (254 before each record's caller tag, 284 with the general hash table
//! as live index); snapshot 0.23 s, 103 MB; pings meanwhile p99 2.7 µs,
//! max 2.6 ms; restore 0.55 s; a process that only restores grows by
//! 402 bytes per restored reservation (532 before they were boxed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hyper::Request;
use rtbd::clock::Clock;
use rtbd::engine::Engine;
use rtbd::{config, http, snapshot};

// The same allocator as the rtbd binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "persist-key";
const RESERVATIONS: u64 = 1_000_000;

fn config() -> String {
    format!(
        r#"
[server]
admin_token = "a"
switch_token = "s"
max_records = 2000000

[[campaigns]]
id = "p"
tracking_numbers = ["+18444021146"]

[[campaigns.rtb_keys]]
key = "{KEY}"
ttl_secs = 3600

[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 12.5
duration_secs = 90

[[campaigns.targets]]
id = "t"
number = "+18005550100"
"#
    )
}

fn ping(engine: &Engine, caller: u64) -> bool {
    let uri = format!("/rtbs.json?key={KEY}&publisher_id=pub&caller_number=%2B1{caller}&caller_zip=10001");
    let Ok(request) = Request::post(uri).body(()) else { return false };
    let (parts, _) = request.into_parts();
    matches!(http::respond(engine, &parts, &[]), http::Handled::Response(r) if r.status() == 200)
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Some(path) = std::env::args().skip_while(|a| a != "--restore-from").nth(1) {
        restore_alone(&path);
        return;
    }
    let dir = std::env::temp_dir().join(format!("rtbd-persistence-{}", std::process::id()));
    let routing = config::parse_with_env(&config(), "bench", |_| None).expect("config");
    let engine = Arc::new(Engine::new(routing, Clock::system()).with_data_dir(Some(dir.clone())));

    let before = rss();
    let started = Instant::now();
    for i in 0..RESERVATIONS {
        assert!(ping(&engine, 8_000_000_000 + i), "ping {i}");
    }
    let filled = started.elapsed();
    let after = rss();
    println!(
        "filled {RESERVATIONS} live reservations in {:.2} s; RSS grew {} MB: {} bytes per reservation (record included)",
        filled.as_secs_f64(),
        (after - before) / 1_000_000,
        (after - before) / RESERVATIONS
    );

    // Encoding alone (what holds the shard locks, one at a time).
    let t = Instant::now();
    let (_, payload) = snapshot::encode(&engine);
    println!("encoding alone: {:.3} s for {} MB", t.elapsed().as_secs_f64(), payload.len() / 1_000_000);
    drop(payload);

    // Pings from another thread while the snapshot is written.
    let running = Arc::new(AtomicBool::new(true));
    let barrier = Arc::new(Barrier::new(2));
    let pinger = {
        let (engine, running, barrier) = (engine.clone(), running.clone(), barrier.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut caller = 9_000_000_000u64;
            barrier.wait();
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                ping(&engine, caller);
                latencies.push(t.elapsed());
                caller += 1;
            }
            latencies
        })
    };
    barrier.wait();
    let written = engine.snapshot().expect("snapshot");
    running.store(false, Ordering::Relaxed);
    let mut latencies = pinger.join().expect("pinger");
    latencies.sort_unstable();
    println!(
        "snapshot of {} reservations: {:.3} s, {} MB",
        RESERVATIONS,
        written.duration.as_secs_f64(),
        written.bytes / 1_000_000
    );
    println!(
        "{} pings meanwhile (in-process): p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );

    // Restore into a fresh engine.
    let started = Instant::now();
    let image = snapshot::read(&written.path).expect("read");
    let read = started.elapsed();
    let routing = config::parse_with_env(&config(), "bench", |_| None).expect("config");
    let fresh = Engine::new(routing, Clock::system());
    let live = image.live();
    snapshot::restore(&fresh, image);
    println!(
        "restore of {live} reservations: read and decode {:.3} s, total {:.3} s",
        read.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // The memory a restored engine takes, in a process that does nothing
    // else (in this one, the memory the first engine gave back would be
    // used again and not show).
    let alone = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .args(["--bench", "--restore-from"])
        .arg(&written.path)
        .output()
        .expect("a second process");
    print!("{}", String::from_utf8_lossy(&alone.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restores the snapshot at `path` into a new engine and says how much
/// resident memory that took.
fn restore_alone(path: &str) {
    let routing = config::parse_with_env(&config(), "bench", |_| None).expect("config");
    let engine = Engine::new(routing, Clock::system());
    let before = rss();
    let image = snapshot::read(std::path::Path::new(path)).expect("read");
    let live = image.live();
    snapshot::restore(&engine, image);
    // Freed pages (the decoded image) are given back to the system after
    // a short delay.
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss().saturating_sub(before);
    println!(
        "restored alone: RSS grew {} MB, {} bytes per restored reservation",
        grown / 1_000_000,
        grown / live.max(1) as u64
    );
    drop(engine);
}
