//! Caps and concurrency: calendar windows in the target's zone, atomic
//! counting under contention, counts given back on expiry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use rtbd::caps::Windows;
use rtbd::clock::ManualClock;
use rtbd::config;
use rtbd::engine::{CallAnswer, Confirming, Engine};
use rtbd::params::Params;
use rtbd::phone::Phone;
use rtbd::sym::Sym;

const INBOUND: &str = "+18444021146";

/// Ping, call and end: a call that keeps its counts.
async fn take_call(t: &TestServer, caller: &str) -> serde_json::Value {
    let (status, body) = t.ping_caller(caller).await;
    assert_eq!(status, 200);
    if body["status"] == "reserved" {
        let uuid = body["uuid"].as_str().unwrap().to_owned();
        let (status, claim) = t.call(caller, INBOUND).await;
        assert_eq!(status, 200, "{claim}");
        t.end(&uuid, 100).await;
    }
    body
}

/// (cap, filled) of one cap of one target, from /stats.
async fn filled(t: &TestServer, target: &str, cap: &str) -> u64 {
    let stats = t.stats().await;
    stats["targets"][target]["caps"][cap]["filled"].as_u64().unwrap()
}

#[tokio::test]
async fn windows_roll_over_on_the_targets_calendar() {
    // Asia/Kolkata is UTC+05:30: its hours start at half past UTC hours.
    let caps = "time_zone = \"Asia/Kolkata\"\ncaps = { hourly = 2, daily = 3, monthly = 4 }";
    let config =
        campaign_config("", "add_to_caps_on_status_reserved = true", ANY_PAYS_ONE, &target("in", caps));
    // 2026-01-31 10:10 local.
    let t = TestServer::start_at(&config, at("2026-01-31T04:40:00Z")).await;
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("+1800555{n:04}")
    };
    assert_eq!(take_call(&t, &next()).await["status"], "reserved");
    assert_eq!(take_call(&t, &next()).await["status"], "reserved");
    let full = take_call(&t, &next()).await;
    assert_eq!(full["reason"], "target_disqualified_by_cap");
    assert_eq!(filled(&t, "in", "hourly").await, 2);

    // 10:59:59 local: still the same hour (a UTC hour would have turned).
    t.clock.set_ms(at("2026-01-31T05:29:59Z"));
    assert_eq!(take_call(&t, &next()).await["reason"], "target_disqualified_by_cap");
    // 11:00 local: a new hour; the day has room for one more.
    t.clock.set_ms(at("2026-01-31T05:30:00Z"));
    assert_eq!(filled(&t, "in", "hourly").await, 0);
    assert_eq!(take_call(&t, &next()).await["status"], "reserved");
    let (_, record) = t.ping_and_record(&next(), "").await;
    assert_eq!(flow_entry(&record, "in")["info"], "daily cap reached");

    // Midnight local (18:30 UTC): a new day; the month has room for one.
    t.clock.set_ms(at("2026-01-31T18:29:59Z"));
    assert_eq!(take_call(&t, &next()).await["reason"], "target_disqualified_by_cap");
    t.clock.set_ms(at("2026-01-31T18:30:00Z"));
    assert_eq!(filled(&t, "in", "daily").await, 0);
    assert_eq!(take_call(&t, &next()).await["status"], "reserved", "Feb 1 local");
    // That was February's first call: January's 3 are in January.
    assert_eq!(filled(&t, "in", "monthly").await, 1);
}

#[tokio::test]
async fn the_monthly_window_follows_the_local_month() {
    let caps = "time_zone = \"America/New_York\"\ncaps = { monthly = 1 }";
    let config =
        campaign_config("", "add_to_caps_on_status_reserved = true", ANY_PAYS_ONE, &target("ny", caps));
    // 2026-02-28 23:30 EST is 2026-03-01 04:30 UTC: still February locally.
    let t = TestServer::start_at(&config, at("2026-02-28T23:30:00Z")).await;
    assert_eq!(take_call(&t, "+18005550001").await["status"], "reserved");
    t.clock.set_ms(at("2026-03-01T04:59:59Z"));
    assert_eq!(take_call(&t, "+18005550002").await["reason"], "target_disqualified_by_cap");
    t.clock.set_ms(at("2026-03-01T05:00:00Z"));
    assert_eq!(take_call(&t, "+18005550003").await["status"], "reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cap_of_ten_against_five_hundred_concurrent_confirms() {
    let config = campaign_config("", "ttl_secs = 600", ANY_PAYS_ONE, &target("ten", "caps = { daily = 10 }"));
    let t = Arc::new(TestServer::start(&config).await);
    let mut uuids = Vec::new();
    for i in 0..500 {
        let (_, body) = t.ping_caller(&format!("800{:07}", 4_000_000 + i)).await;
        assert_eq!(body["status"], "reserved");
        uuids.push(body["uuid"].as_str().unwrap().to_owned());
    }
    let tasks: Vec<_> = uuids
        .into_iter()
        .map(|uuid| {
            let t = t.clone();
            tokio::spawn(async move { t.confirm(&uuid).await })
        })
        .collect();
    let (mut confirmed, mut capped) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        match body["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            Some("no-target") => {
                assert_eq!(body["reason"], "target_disqualified_by_cap");
                capped += 1;
            }
            other => panic!("{other:?}: {body}"),
        }
    }
    assert_eq!((confirmed, capped), (10, 490));
    assert_eq!(filled(&t, "ten", "daily").await, 10);
    // Confirming again changes nothing.
    let stats = t.stats().await;
    assert_eq!(stats["targets"]["ten"]["confirmed"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_never_exceeds_its_cap_while_calls_come_and_go() {
    let config = campaign_config("", "", ANY_PAYS_ONE, &target("five", "concurrency_cap = 5"));
    let t = Arc::new(TestServer::start(&config).await);
    let target = Sym::lookup("five").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU32::new(0));
    let watcher = {
        let (t, done, peak) = (t.clone(), done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = t
                    .server
                    .engine()
                    .states()
                    .targets
                    .with(target, |s| s.counters.concurrency.get())
                    .unwrap();
                peak.fetch_max(now, Ordering::Relaxed);
            }
        })
    };
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let caller = format!("+1800{:07}", 5_000_000 + i);
                let (_, body) = t.ping_caller(&enc(&caller)).await;
                if body["status"] != "reserved" {
                    return 0;
                }
                let uuid = body["uuid"].as_str().unwrap().to_owned();
                let (_, confirmed) = t.confirm(&uuid).await;
                if confirmed["status"] != "confirmed" {
                    return 0;
                }
                let (status, _) = t.call(&caller, INBOUND).await;
                assert_eq!(status, 200);
                t.end(&uuid, 10).await;
                1
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        calls += task.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(calls >= 5, "{calls} calls went through");
    assert!(peak.load(Ordering::Relaxed) <= 5, "peak {}", peak.load(Ordering::Relaxed));
    let stats = t.stats().await;
    assert_eq!(stats["targets"]["five"]["caps"]["concurrency"]["filled"], 0);
    assert_eq!(stats["targets"]["five"]["live_calls"], 0);
}

#[tokio::test]
async fn expired_counted_reservations_give_their_counts_back() {
    let caps = "caps = { hourly = 3, daily = 5, hard = 10 }\nconcurrency_cap = 3";
    let t = TestServer::start(&campaign_config("", "", ANY_PAYS_ONE, &target("t", caps))).await;
    for i in 0..3 {
        let (_, body) = t.ping_caller(&format!("800555{i:04}")).await;
        t.confirm(body["uuid"].as_str().unwrap()).await;
    }
    for cap in ["hourly", "daily", "hard", "concurrency"] {
        assert_eq!(filled(&t, "t", cap).await, 3, "{cap}");
    }
    let (_, body) = t.ping_caller("8005559999").await;
    assert_eq!(body["reason"], "target_disqualified_by_cap");
    t.advance(Duration::from_secs(15));
    for cap in ["hourly", "daily", "hard", "concurrency"] {
        assert_eq!(filled(&t, "t", cap).await, 0, "{cap}");
    }
    let (_, body) = t.ping_caller("8005559998").await;
    assert_eq!(body["status"], "reserved");
}

#[tokio::test]
async fn a_call_that_finds_its_caps_full_is_refused() {
    // Unconfirmed reservations are counted when the call arrives; if the
    // caps filled meanwhile, the call cannot go there.
    let t =
        TestServer::start(&campaign_config("", "", ANY_PAYS_ONE, &target("t", "caps = { hard = 1 }"))).await;
    let (_, a) = t.ping_caller("8005550001").await;
    let (_, b) = t.ping_caller("8005550002").await;
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("reserved"), Some("reserved")));
    let (status, _) = t.call("+18005550001", INBOUND).await;
    assert_eq!(status, 200);
    let (status, body) = t.call("+18005550002", INBOUND).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "target_disqualified_by_cap");
    let (_, record) = t.record(b["uuid"].as_str().unwrap()).await;
    assert_eq!(record["status"], "no-target");
    assert_eq!(flow_statuses(&record), ["reserved", "target_disqualified_by_cap"]);
    assert_eq!(filled(&t, "t", "hard").await, 1);
}

// ---- a property test over the engine itself ----

#[derive(Clone, Debug)]
enum Op {
    Ping(u8),
    Confirm(u8),
    Call(u8),
    End(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6).prop_map(Op::Ping),
        3 => (0u8..6).prop_map(Op::Confirm),
        3 => (0u8..6).prop_map(Op::Call),
        2 => (0u8..6).prop_map(Op::End),
        2 => (0u16..20_000).prop_map(Op::Advance),
    ]
}

fn caps_config(add_to_caps: bool) -> String {
    let caps = "caps = { hourly = 3, daily = 4, hard = 5 }\nconcurrency_cap = 2";
    let key = format!("add_to_caps_on_status_reserved = {add_to_caps}");
    campaign_config("", &key, ANY_PAYS_ONE, &target("t", caps))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Under any sequence of pings, confirms, calls, ends and expiries, no
    /// counter passes its cap; when every call has ended and every
    /// reservation expired, nothing is held, and the lifetime count is the
    /// number of calls.
    #[test]
    fn counters_never_pass_caps(add_to_caps in any::<bool>(), ops in proptest::collection::vec(op(), 1..120)) {
        let routing = config::parse_with_env(&caps_config(add_to_caps), "t", |_| None).unwrap();
        let manual = ManualClock::new(T0);
        let engine = Engine::new(routing, manual.clock());
        let inbound = Phone::parse(INBOUND).unwrap();
        let caller = |i: u8| Phone::parse(&format!("+1800555000{i}")).unwrap();
        let target = Sym::lookup("t").unwrap();
        let mut calls: Vec<Option<u128>> = vec![None; 6];
        let mut claims = 0u32;
        let check = |engine: &Engine| {
            engine.states().targets.with(target, |s| {
                let c = &s.counters;
                let w = Windows::at(&rtbd::zone::Zone::utc(), manual.now_ms());
                assert!(c.hourly.get(w.hour) <= 3 && c.daily.get(w.day) <= 4 && c.hard.get(0) <= 5);
                assert!(c.concurrency.get() <= 2, "concurrency {}", c.concurrency.get());
            });
        };
        for op in ops {
            let routing = engine.routing();
            match op {
                Op::Ping(i) => {
                    let query = format!("key={KEY}&publisher_id=p&caller_number={}", caller(i).digits());
                    let params = Params::parse(Some(&query), b"").unwrap();
                    engine.ping(&routing, &params).unwrap();
                }
                Op::Confirm(i) => {
                    let _ = engine.confirm(&routing, KEY, Confirming::Caller(caller(i)));
                }
                Op::Call(i) => {
                    if let Ok(CallAnswer::Claimed(claim)) = engine.claim(caller(i), inbound) {
                        if let Some(previous) = calls[i as usize].replace(claim.uuid) {
                            engine.end(previous, 1).unwrap();
                        }
                        claims += 1;
                    }
                }
                Op::End(i) => {
                    if let Some(uuid) = calls[i as usize].take() {
                        engine.end(uuid, 100).unwrap();
                    }
                }
                Op::Advance(ms) => {
                    manual.advance(Duration::from_millis(u64::from(ms)));
                    engine.tick();
                }
            }
            check(&engine);
        }
        for uuid in calls.iter_mut().filter_map(Option::take) {
            engine.end(uuid, 100).unwrap();
        }
        manual.advance(Duration::from_secs(16));
        engine.tick();
        let (concurrency, live_calls, hard) = engine
            .states()
            .targets
            .with(target, |s| (s.counters.concurrency.get(), s.counters.calls.get(), s.counters.hard.get(0)))
            .unwrap();
        prop_assert_eq!((concurrency, live_calls), (0, 0));
        prop_assert_eq!(hard, claims);
    }
}
