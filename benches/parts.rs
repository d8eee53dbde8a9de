//! The parts of the ping path, one by one: parameter parsing, the
//! reservation table at a million entries, cap counting under contention,
//! and answer encoding.
//!
//! Run: `cargo bench --bench parts`. Results are in the README.
//!
//! Last results (2026-12-01, 2-core VM, medians): query string 161 ns
//! (180 ns before a pair's last bytes were read as one word, 206 ns before
//! form pairs were scanned as words, 330 ns before plain pairs were
//! borrowed in one pass), JSON body 311 ns, caller number 15 ns;
//! table of 1M: lookup of a live reservation 207 ns, of a caller with none
//! 34 ns, a ping in flight added and taken back 659 ns (392 ns to 1.0 µs),
//! expiry tick 29 µs; the newest reservation of a caller with none (a
//! call on a dead line) 4.2 µs (63 µs when it read every record of the
//! shard rather than a list of caller tags); contended cap count and give
//! back 668 ns; encode 117 ns. Earlier the same day, with a general hash table as the live
//! index and expired entries taken out one by one: lookups 230 and 24 ns,
//! added and taken back 819 ns, expiry tick 48 µs (75 µs before the
//! wheel's slots kept their buffers).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use rtbd::caps::{Counters, Limits, Windows};
use rtbd::engine::{Answer, Reservation};
use rtbd::params::Params;
use rtbd::phone::Phone;
use rtbd::records::Record;
use rtbd::status::Status;
use rtbd::sym::Sym;
use rtbd::table::{Scope, Shard, Table};

// The same allocator as the rtbd binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERY: &str = "key=1915260e-da0c-4443-a35b-8fb9d9843e42&publisher_id=4321ABCD&caller_number=%2B18005551234&caller_zip=10001&caller_state=NY";
const JSON: &str = r#"{"key":"1915260e-da0c-4443-a35b-8fb9d9843e42","publisher_id":"4321ABCD","caller_number":"+18005551234","caller_zip":"10001","caller_state":"NY","age":42}"#;

fn params(c: &mut Criterion) {
    c.bench_function("params/query string", |b| {
        b.iter(|| black_box(Params::parse(Some(black_box(QUERY)), b"")))
    });
    c.bench_function("params/JSON body", |b| {
        b.iter(|| black_box(Params::parse(None, black_box(JSON.as_bytes()))))
    });
    c.bench_function("params/caller number", |b| {
        b.iter(|| black_box(Phone::parse(black_box(" 18005551234"))))
    });
}

/// Adds a live reservation, as a ping does: its record, then its place in
/// the live index.
fn reserve(shard: &mut Shard, caller: Phone, key: Sym, now_ms: u64, expires_ms: u64) -> u128 {
    let uuid = shard.new_uuid(Table::shard_of_caller(caller));
    let mut record = Record::new(now_ms, caller, key, key, 1);
    record.status = Status::Reserved;
    record.expires_ms = expires_ms;
    record.target = Some(key);
    record.inbound = Phone::from_digits(18_444_021_146);
    record.payout_milli = 12_500;
    record.seconds = 90;
    shard.add_record(uuid, record, true);
    uuid
}

fn caller(n: u64) -> Phone {
    Phone::from_digits(12_000_000_000 + n).unwrap_or_else(|| unreachable!())
}

fn table(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    const PER_SHARD: usize = (N as usize).div_ceil(rtbd::table::SHARDS);
    let key = Sym::intern("bench-table-key");
    let start = 1_000_000u64;
    let table = Table::new(start);
    for n in 0..N {
        let caller = caller(n);
        let mut shard = table.lock(Table::shard_of_caller(caller));
        reserve(&mut shard, caller, key, start, start + 1 + n % 15_000);
    }
    let mut n = 0u64;
    c.bench_function("table of 1M/lookup of a live reservation", |b| {
        b.iter(|| {
            n = (n + 7_919) % N;
            let caller = caller(n);
            let shard = table.lock(Table::shard_of_caller(caller));
            black_box(shard.find_live(caller, Scope::Key(key), start).is_some())
        })
    });
    c.bench_function("table of 1M/lookup of a caller with none", |b| {
        b.iter(|| {
            n = (n + 7_919) % N;
            let caller = caller(N + n);
            let shard = table.lock(Table::shard_of_caller(caller));
            black_box(shard.find_live(caller, Scope::Key(key), start).is_some())
        })
    });
    // A call on a line with no reservation (the dead line) looks for the
    // caller's newest reservation among the shard's records.
    let inbound = Phone::from_digits(18_444_021_146).unwrap_or_else(|| unreachable!());
    c.bench_function("table of 1M/newest reservation of a caller with none", |b| {
        b.iter(|| {
            n = (n + 7_919) % N;
            let caller = caller(N + n);
            let shard = table.lock(Table::shard_of_caller(caller));
            black_box(shard.last_reservation(caller, inbound))
        })
    });
    // A ping in flight comes and goes (as one whose buyers found nothing):
    // its record and its place in the live index.
    let mut m = N;
    c.bench_function("table of 1M/insert and take back", |b| {
        b.iter(|| {
            m += 1;
            let caller = caller(m);
            let mut shard = table.lock(Table::shard_of_caller(caller));
            let uuid = shard.new_uuid(Table::shard_of_caller(caller));
            let mut record = Record::new(start, caller, key, key, 1);
            record.status = Status::Processing;
            shard.add_record(uuid, record, true);
            let taken = shard.take_live(uuid);
            if let Some(record) = shard.records.get_mut(uuid) {
                record.status = Status::NoTarget;
            }
            shard.evict(start, u64::MAX, PER_SHARD, false);
            black_box(taken)
        })
    });
    // Expiry: advance every shard's wheel one millisecond at a time; the
    // million deadlines are spread over 15 s, so about 67 fall due per ms.
    // Each expired reservation is replaced by a new one due 15 s later, to
    // stay at a million, and the oldest records go as a ping would drop
    // them.
    let mut now = start;
    let mut expired = Vec::new();
    c.bench_function("table of 1M/expiry tick of 1 ms (about 67 due)", |b| {
        b.iter(|| {
            now += 1;
            for shard in table.shards() {
                let mut shard = shard.lock();
                expired.clear();
                shard.expire(now, &mut expired);
                for live in &expired {
                    // The same caller calls again.
                    if let Some(caller) = shard.records.get(live.uuid).map(|r| r.caller) {
                        reserve(&mut shard, caller, key, now, now + 15_000);
                    }
                }
                shard.evict(now, u64::MAX, PER_SHARD, false);
            }
        })
    });
}

fn caps(c: &mut Criterion) {
    let counters = Arc::new(Counters::default());
    let limits = Limits {
        hourly: Some(u32::MAX - 1),
        daily: Some(u32::MAX - 1),
        concurrency: Some(u32::MAX - 1),
        ..Limits::default()
    };
    let w = Windows { hour: 1, day: 1, month: 1 };
    let running = Arc::new(AtomicBool::new(true));
    let rival = {
        let (counters, running) = (counters.clone(), running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                if counters.try_count(&limits, w).is_ok() {
                    counters.give_back(w);
                }
            }
        })
    };
    c.bench_function("caps/count and give back, another thread doing the same", |b| {
        b.iter(|| {
            if counters.try_count(&limits, w).is_ok() {
                counters.give_back(w);
            }
        })
    });
    running.store(false, Ordering::Relaxed);
    let _ = rival.join();
}

fn encoding(c: &mut Criterion) {
    let answer = Answer::Reservation(Reservation {
        uuid: 0x66b9_05ef_bc03_420e_ad43_e8ee_ae03_918f,
        status: Status::Reserved,
        payout_milli: 1_173,
        seconds: 95,
        inbound: Phone::from_digits(18_444_021_146),
        expires_ms: 1_716_999_378_246,
        echo: false,
    });
    c.bench_function("encode a reservation answer", |b| {
        b.iter(|| black_box(rtbd::reply::answer(black_box(&answer), None)))
    });
}

criterion_group!(benches, params, table, caps, encoding);
criterion_main!(benches);
