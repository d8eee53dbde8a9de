//! Hot reload: by endpoint, by file edit, by rename-replace; a broken file
//! keeps the running config; state survives; pings never fail meanwhile.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

fn config_paying(payout: &str, targets: &str) -> String {
    campaign_config(
        "",
        "ttl_secs = 600",
        &format!(
            "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\npayout = {payout}\nduration_secs = 60\n"
        ),
        targets,
    )
}

/// A server reading its config from a file in a fresh folder.
async fn server_on_file(text: &str, watch: bool) -> (TestServer, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rtbd.toml");
    std::fs::write(&path, text).unwrap();
    let file = path.clone();
    let t = TestServer::start_with(text, T0, move |o| {
        o.config_path = Some(file);
        o.watch = watch;
    })
    .await
    .unwrap();
    (t, path, dir)
}

async fn admin_config(t: &TestServer) -> serde_json::Value {
    let (status, body) = t.send(Method::GET, "/admin/config", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn reload(t: &TestServer) -> (u16, serde_json::Value) {
    t.send(Method::POST, "/admin/reload", Some(ADMIN), None).await
}

/// Waits (bounded) until the config version reaches `version`.
async fn until_version(t: &TestServer, version: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = admin_config(t).await;
        if config["version"].as_u64() >= Some(version) || Instant::now() > deadline {
            return config;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn payout(t: &TestServer, caller: &str) -> Option<f64> {
    let (_, body) = t.ping_caller(caller).await;
    body["retreaver_payout"].as_f64()
}

#[tokio::test]
async fn reload_by_endpoint() {
    let (t, path, _dir) = server_on_file(&config_paying("1", &target("t", "")), false).await;
    let config = admin_config(&t).await;
    assert_eq!(config["version"], 1);
    assert_eq!(config["source"], "test.toml");
    assert_eq!(config["last_error"], serde_json::Value::Null);
    assert_eq!(payout(&t, "8005550001").await, Some(1.0));

    std::fs::write(&path, config_paying("2.5", &target("t", ""))).unwrap();
    let (status, body) = reload(&t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["source"], path.display().to_string());
    assert_eq!((body["campaigns"].as_u64(), body["targets"].as_u64()), (Some(1), Some(1)));
    assert_eq!(payout(&t, "8005550002").await, Some(2.5));
    // A reservation keeps the terms it was made with.
    let (_, echo) = t.ping_caller("8005550001").await;
    assert_eq!(echo["retreaver_payout"].as_f64(), Some(1.0));
}

#[tokio::test]
async fn a_new_time_zone_never_lets_a_cap_pass() {
    // Hourly cap 2. One reservation is counted in UTC's hour; the target
    // moves to India's time zone (hours start at :30 UTC), where another is
    // counted; then the first expires. Its count was never in India's hour,
    // so nothing may be taken back from it: the hour holds two, not one.
    let targets = |zone: &str| target("t", &format!("time_zone = \"{zone}\"\ncaps = {{ hourly = 2 }}"));
    let (t, path, _dir) = server_on_file(&config_paying("1", &targets("UTC")), false).await;
    let confirm = |caller: &'static str| {
        let t = &t;
        async move {
            let (_, body) = t.ping_caller(caller).await;
            assert_eq!(body["status"], "reserved", "{body}");
            let (status, body) = t.confirm(body["uuid"].as_str().unwrap()).await;
            assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
        }
    };
    let hourly_filled = || async { t.stats().await["targets"]["t"]["caps"]["hourly"]["filled"].clone() };
    confirm("8005550001").await;

    std::fs::write(&path, config_paying("1", &targets("Asia/Kolkata"))).unwrap();
    let (status, body) = reload(&t).await;
    assert_eq!(status, 200, "{body}");
    t.advance(Duration::from_secs(300));
    confirm("8005550002").await;
    assert_eq!(hourly_filled().await, 1);
    // The first reservation (TTL 600 s) expires; the second is still live.
    t.advance(Duration::from_secs(301));
    assert_eq!(hourly_filled().await, 1);
    confirm("8005550003").await;
    assert_eq!(hourly_filled().await, 2);
    let (_, body) = t.ping_caller("8005550004").await;
    assert_eq!(body["status"], "no-target", "the hour is full: {body}");
}

#[tokio::test]
async fn a_target_removed_and_brought_back_keeps_its_windows() {
    // Hourly cap 2 in New York's time. Three reservations are made while
    // the hour is empty and two are confirmed: the hour is full. A reload
    // removes the target; the third is confirmed meanwhile (no caps apply
    // to a target no config has). A reload brings it back, same zone, same
    // cap: its hour holds three, in New York's hour, and a new ping goes
    // elsewhere.
    let ny = target("t", "time_zone = \"America/New_York\"\ncaps = { hourly = 2 }");
    let fallback = target("u", "priority = 2");
    let (t, path, _dir) =
        server_on_file(&config_paying("1", &[ny.clone(), fallback.clone()].concat()), false).await;
    let mut uuids = Vec::new();
    for caller in ["8005550001", "8005550002", "8005550003"] {
        let (_, body) = t.ping_caller(caller).await;
        assert_eq!(body["status"], "reserved", "{body}");
        uuids.push(body["uuid"].as_str().unwrap().to_owned());
    }
    for uuid in &uuids[..2] {
        assert_eq!(t.confirm(uuid).await.0, 200);
    }
    std::fs::write(&path, config_paying("1", &fallback)).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    let (status, body) = t.confirm(&uuids[2]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");

    std::fs::write(&path, config_paying("1", &[ny, fallback].concat())).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    let stats = t.stats().await;
    assert_eq!(stats["targets"]["t"]["caps"]["hourly"], serde_json::json!({"cap": 2, "filled": 3}));
    let (_, body) = t.ping_caller("8005550004").await;
    let (_, record) = t.record(body["uuid"].as_str().unwrap()).await;
    assert_eq!(record["target_id"], "u", "the hour of t is full: {record}");
}

#[tokio::test]
async fn a_broken_file_keeps_the_running_config_and_says_where() {
    let (t, path, _dir) = server_on_file(&config_paying("1", &target("t", "")), false).await;
    let broken = config_paying("1", &target("t", "weight = 0\nmystery = 3"));
    std::fs::write(&path, &broken).unwrap();
    let (status, body) = reload(&t).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    let line = broken.lines().position(|l| l.starts_with("mystery")).unwrap() + 1;
    assert!(
        error.contains(&format!(
            "rtbd.toml:{line}:1: campaigns[0].targets[0].mystery: unknown field `mystery`"
        )),
        "{error}"
    );
    assert_eq!(body["version"], 1);
    let config = admin_config(&t).await;
    assert_eq!(config["last_error"].as_str(), Some(error));
    assert_eq!(payout(&t, "8005550001").await, Some(1.0), "the old config still routes");

    // A good file clears the error.
    std::fs::write(&path, config_paying("3", &target("t", ""))).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    assert_eq!(admin_config(&t).await["last_error"], serde_json::Value::Null);

    let metrics = t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rtbd_config_reloads_total{result=\"error\"} 1"), "{metrics}");
    assert!(metrics.contains("rtbd_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
}

#[tokio::test]
async fn the_demo_config_cannot_be_reloaded() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = reload(&t).await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("no config file to reload"));
    let (status, _) = t.send(Method::POST, "/admin/reload", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn reload_when_the_file_is_edited() {
    let (t, path, _dir) = server_on_file(&config_paying("1", &target("t", "")), true).await;
    std::fs::write(&path, config_paying("4", &target("t", ""))).unwrap();
    let config = until_version(&t, 2).await;
    assert_eq!(config["version"], 2, "the edit was not picked up");
    assert_eq!(payout(&t, "8005550001").await, Some(4.0));
}

#[tokio::test]
async fn reload_when_the_file_is_replaced_by_a_rename() {
    let (t, path, dir) = server_on_file(&config_paying("1", &target("t", "")), true).await;
    let staged = dir.path().join(".rtbd.toml.swp");
    std::fs::write(&staged, config_paying("5", &target("t", ""))).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    let config = until_version(&t, 2).await;
    assert_eq!(config["version"], 2, "the rename was not picked up");
    assert_eq!(payout(&t, "8005550001").await, Some(5.0));
    // Saving the same bytes again is no reload.
    std::fs::write(&path, config_paying("5", &target("t", ""))).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(admin_config(&t).await["version"], 2);
}

#[tokio::test]
async fn state_survives_a_reload_and_new_caps_apply_to_old_counts() {
    let targets = target("old", "caps = { daily = 5 }");
    let (t, path, _dir) = server_on_file(&config_paying("1", &targets), false).await;
    let (_, reserved) = t.ping_caller("8005550001").await;
    let uuid = reserved["uuid"].as_str().unwrap().to_owned();
    let (_, _) = t.confirm(&uuid).await;
    for i in 2..4 {
        let (_, b) = t.ping_caller(&format!("800555000{i}")).await;
        t.confirm(b["uuid"].as_str().unwrap()).await;
    }
    // The target is renamed away; another takes its place with a cap of 3.
    let renamed = [target("new", "caps = { daily = 3 }"), target("old2", "caps = { daily = 3 }")].concat();
    std::fs::write(&path, config_paying("1", &renamed.replace("old2", "old"))).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    // The old reservation is still live and claimable, to the old number.
    let (status, call) = t.call("+18005550001", "+18444021146").await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["target_id"], "old");
    let (_, record) = t.record(&uuid).await;
    assert_eq!(flow_statuses(&record), ["reserved", "confirmed", "claimed"]);
    // `old` kept its 3 counts; its cap is now 3, so it is full.
    let stats = t.stats().await;
    assert_eq!(stats["targets"]["old"]["caps"]["daily"], serde_json::json!({"cap": 3, "filled": 3}));

    // A target gone from the config still takes its call's end.
    std::fs::write(&path, config_paying("1", &target("new", ""))).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    let (status, ended) = t.end(&uuid, 90).await;
    assert_eq!((status, ended["converted"].as_bool()), (200, Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pings_never_fail_during_a_reload_loop() {
    let (t, path, _dir) = server_on_file(&config_paying("1", &target("t", "")), false).await;
    let t = Arc::new(t);
    let reloader = {
        let t = t.clone();
        let path: PathBuf = path.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                write_alternating(&path, i);
                let (status, body) = reload(&t).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    };
    let pingers: Vec<_> = (0..4)
        .map(|p| {
            let t = t.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    let (status, body) = t.ping_caller(&format!("800{p}{i:06}")).await;
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["status"], "reserved", "{body}");
                }
            })
        })
        .collect();
    reloader.await.unwrap();
    for p in pingers {
        p.await.unwrap();
    }
    assert_eq!(admin_config(&t).await["version"], 41);
}

fn write_alternating(path: &Path, i: u32) {
    let payout = if i % 2 == 0 { "2" } else { "3" };
    std::fs::write(path, config_paying(payout, &target("t", ""))).unwrap();
}

/// A campaign whose one buyer bids $5 after `delay`, counted in its caps
/// as soon as it is reserved; `extra` goes in the buyer's target table.
fn slow_buyer_config(url: &str, extra: &str) -> String {
    campaign_config(
        "",
        "ttl_secs = 600\nadd_to_caps_on_status_reserved = true\ntimeout_ms = 5000",
        ANY_PAYS_ONE,
        &webhook_target("w", url, extra),
    )
}

/// A buyer bidding $5 after 400 ms.
async fn slow_buyer() -> Buyer {
    Buyer::start(Behavior::Answer {
        status: 200,
        body: r#"{"bid":5,"duration":60,"phone":"+18005550199"}"#.into(),
        delay: Duration::from_millis(400),
    })
    .await
}

/// Starts `n` pings that wait on the buyer, and returns once the buyer has
/// all of them in hand.
async fn pings_in_flight(
    t: &Arc<TestServer>,
    buyer: &Buyer,
    n: usize,
) -> Vec<tokio::task::JoinHandle<serde_json::Value>> {
    let pings = (0..n)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { t.ping_caller(&format!("800555{:04}", 2000 + i)).await.1 })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while buyer.hits() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(buyer.hits(), n, "the pings never reached the buyer");
    pings
}

#[tokio::test]
async fn a_ping_waiting_on_buyers_counts_against_the_caps_reloaded_meanwhile() {
    let buyer = slow_buyer().await;
    let url = buyer.url("/bid");
    let (t, path, _dir) = server_on_file(&slow_buyer_config(&url, "caps = { daily = 10 }"), false).await;
    let t = Arc::new(t);
    let pings = pings_in_flight(&t, &buyer, 3).await;
    // The daily cap drops from 10 to 1 while the buyer thinks.
    std::fs::write(&path, slow_buyer_config(&url, "caps = { daily = 1 }")).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    let mut reserved = 0;
    for ping in pings {
        let body = ping.await.unwrap();
        match body["status"].as_str() {
            Some("reserved") => reserved += 1,
            _ => assert_eq!(body["status"], "no-target", "{body}"),
        }
    }
    assert_eq!(reserved, 1, "the new daily cap of 1 holds");
    assert_eq!(t.stats().await["targets"]["w"]["caps"]["daily"]["filled"], 1);
}

#[tokio::test]
async fn a_buyer_paused_while_it_was_asked_does_not_win() {
    let buyer = slow_buyer().await;
    let url = buyer.url("/bid");
    let (t, path, _dir) = server_on_file(&slow_buyer_config(&url, ""), false).await;
    let t = Arc::new(t);
    let pings = pings_in_flight(&t, &buyer, 1).await;
    std::fs::write(&path, slow_buyer_config(&url, "paused = true")).unwrap();
    assert_eq!(reload(&t).await.0, 200);
    for ping in pings {
        let body = ping.await.unwrap();
        assert_eq!(body["status"], "no-target", "{body}");
    }
}
