//! GET /stats: counters per key, publisher and target, caps with their fill.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn stats_count_every_step() {
    let config =
        campaign_config("", "", ANY_PAYS_ONE, &target("t", "caps = { daily = 10 }\nconcurrency_cap = 4"))
            + "\n[[publishers]]\nid = \"acme\"\nname = \"Acme Leads\"\n";
    let t = TestServer::start(&config).await;
    let ping =
        |publisher: &str, caller: &str| format!("key={KEY}&publisher_id={publisher}&caller_number={caller}");

    // acme: two reservations (one confirmed, called and converted; one
    // expires) and an echo; other: one reservation, left live.
    let (_, a) = t.ping(&ping("acme", "8005550001")).await;
    let (_, echo) = t.ping(&ping("acme", "8005550001")).await;
    assert_eq!(echo["retreaver_ping_shield"], true);
    let (_, b) = t.ping(&ping("acme", "8005550002")).await;
    let a = a["uuid"].as_str().unwrap().to_owned();
    t.confirm(&a).await;
    t.call("+18005550001", "+18444021146").await;
    t.end(&a, 61).await;
    t.advance(Duration::from_secs(15));
    let (_, c) = t.ping(&ping("other", "8005550003")).await;
    assert_eq!((b["status"].as_str(), c["status"].as_str()), (Some("reserved"), Some("reserved")));
    t.call("+18005550003", "+18444021146").await;

    let stats = t.stats().await;
    let key = &stats["keys"][KEY];
    assert_eq!(key["campaign_id"], "c");
    assert_eq!(
        (key["pings"].as_u64(), key["reserved"].as_u64(), key["confirmed"].as_u64(), key["claimed"].as_u64()),
        (Some(4), Some(3), Some(1), Some(2))
    );
    assert_eq!((key["expired"].as_u64(), key["converted"].as_u64()), (Some(1), Some(1)));
    assert_eq!(key["payout"].as_f64(), Some(1.0));
    assert_eq!(key["claim_ratio"].as_f64(), Some(0.5));

    let acme = &stats["publishers"]["acme"];
    assert_eq!(acme["name"], "Acme Leads");
    assert_eq!(
        (acme["pings"].as_u64(), acme["reserved"].as_u64(), acme["expired"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!((acme["converted"].as_u64(), acme["payout"].as_f64()), (Some(1), Some(1.0)));
    let other = &stats["publishers"]["other"];
    assert_eq!((other["pings"].as_u64(), other["claimed"].as_u64()), (Some(1), Some(1)));

    let target = &stats["targets"]["t"];
    assert_eq!(target["campaign_id"], "c");
    // Considered by the three pings that were routed (not the echo).
    assert_eq!((target["pings"].as_u64(), target["reserved"].as_u64()), (Some(3), Some(3)));
    assert_eq!(target["live_calls"], 1);
    assert_eq!(target["caps"]["daily"], serde_json::json!({"cap": 10, "filled": 2}));
    assert_eq!(target["caps"]["concurrency"], serde_json::json!({"cap": 4, "filled": 1}));
    assert_eq!(target["caps"]["hourly"], serde_json::json!({"cap": null, "filled": 2}));
}

#[tokio::test]
async fn pings_that_reserve_nothing_are_counted_by_how_they_ended() {
    let t = TestServer::start(&campaign_config("", "", ANY_PAYS_ONE, &target("t", "paused = true"))).await;
    for caller in ["8005550001", "8005550002"] {
        let (status, body) = t.ping(&format!("key={KEY}&publisher_id=acme&caller_number={caller}")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("no-target")), "{body}");
    }
    let stats = t.stats().await;
    for entry in [&stats["keys"][KEY], &stats["publishers"]["acme"]] {
        assert_eq!(
            (entry["pings"].as_u64(), entry["reserved"].as_u64(), entry["no_target"].as_u64()),
            (Some(2), Some(0), Some(2)),
            "{entry}"
        );
        assert_eq!(entry["rejected"].as_u64(), Some(0), "{entry}");
    }
}

#[tokio::test]
async fn stats_need_the_admin_token() {
    let t = TestServer::start(&basic_config()).await;
    for token in [None, Some(SWITCH), Some("nope")] {
        let (status, _) = t.send(Method::GET, "/stats", token, None).await;
        assert_eq!(status, 401);
    }
    let (status, _) = t.send(Method::POST, "/stats", Some(ADMIN), None).await;
    assert_eq!(status, 405);
}
