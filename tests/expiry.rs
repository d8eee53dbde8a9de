//! TTL expiry and record retention, driven by a manual clock: no sleeping.

mod common;

use std::time::Duration;

use common::*;

const CALLER: &str = "+18005551234";
const INBOUND: &str = "+18444021146";

#[tokio::test]
async fn reserved_expires_at_its_ttl_exactly() {
    let t = TestServer::start(&basic_config()).await;
    let (_, body) = t.ping_caller(&enc(CALLER)).await;
    let uuid = body["uuid"].as_str().unwrap().to_owned();

    t.advance(Duration::from_millis(14_999));
    let (_, echo) = t.ping_caller(&enc(CALLER)).await;
    assert_eq!(echo["uuid"], uuid.as_str(), "still live 1 ms before expiry");
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "reserved");

    t.advance(Duration::from_millis(1));
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "expired");
    let last = record["call_flow"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "expired");
    assert_eq!(last["at"], "2024-05-29T16:16:18.246Z");
    assert_eq!(flow_statuses(&record), ["reserved", "expired"]);

    // The dead line says it expired; confirming says so too.
    let (status, body) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], "expired");
    let (status, body) = t.confirm(&uuid).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"uuid": uuid, "status": "expired"}));

    // A new ping starts afresh.
    let (_, fresh) = t.ping_caller(&enc(CALLER)).await;
    assert_eq!(fresh["status"], "reserved");
    assert_ne!(fresh["uuid"], uuid.as_str());
    assert_eq!(fresh["expires_at"], "2024-05-29T16:16:33.246Z");
}

#[tokio::test]
async fn a_due_reservation_is_expired_even_before_the_tick_runs() {
    let t = TestServer::start(&basic_config()).await;
    let (_, body) = t.ping_caller(&enc(CALLER)).await;
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    // Move the clock without running the tick: every verb checks the time.
    t.clock.advance(Duration::from_secs(15));
    let (status, body) = t.call(CALLER, INBOUND).await;
    assert_eq!((status, body["status"].as_str()), (404, Some("expired")));
    let (_, body) = t.confirm(&uuid).await;
    assert_eq!(body["status"], "expired");
    let (_, fresh) = t.ping_caller(&enc(CALLER)).await;
    assert_ne!(fresh["uuid"], uuid.as_str());
    t.server.engine().tick();
    let (_, record) = t.record(&uuid).await;
    assert_eq!(flow_statuses(&record), ["reserved", "expired"], "expired exactly once");
}

#[tokio::test]
async fn confirmed_reservations_expire_too_and_ttl_follows_the_key() {
    let config =
        basic_config().replace(&format!("key = \"{KEY}\""), &format!("key = \"{KEY}\"\nttl_secs = 60"));
    let t = TestServer::start(&config).await;
    let (_, body) = t.ping_caller(&enc(CALLER)).await;
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_at"], "2024-05-29T16:17:03.246Z");
    t.confirm(&uuid).await;
    t.advance(Duration::from_secs(59));
    let (status, _) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200, "a confirmed reservation is claimable until it expires");

    let (_, body) = t.ping_caller("8005550001").await;
    let second = body["uuid"].as_str().unwrap().to_owned();
    t.confirm(&second).await;
    t.advance(Duration::from_secs(60));
    let (_, record) = t.record(&second).await;
    assert_eq!(flow_statuses(&record), ["reserved", "confirmed", "expired"]);
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "claimed", "a claimed call does not expire");
}

#[tokio::test]
async fn records_are_kept_for_their_retention() {
    let config = basic_config().replace("[server]\n", "[server]\nrecord_retention_secs = 3600\n");
    let t = TestServer::start(&config).await;
    let (_, body) = t.ping_caller(&enc(CALLER)).await;
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    t.advance(Duration::from_secs(3599));
    let (status, record) = t.record(&uuid).await;
    assert_eq!((status, record["status"].as_str()), (200, Some("expired")));
    t.advance(Duration::from_secs(1));
    let (status, body) = t.record(&uuid).await;
    assert_eq!(status, 404, "{body}");
    // With its record gone, the dead line no longer remembers the expiry.
    let (status, body) = t.call(CALLER, INBOUND).await;
    assert_eq!((status, body["status"].as_str()), (404, Some("no-target")));
}

#[tokio::test]
async fn records_are_bounded_by_max_records_oldest_first() {
    // 64 shards share max_records: one record per shard here.
    let config = basic_config()
        .replace("[server]\n", "[server]\nmax_records = 64\n")
        .replace("number = \"+18005550100\"", "number = \"+18005550100\"\npaused = true");
    let t = TestServer::start(&config).await;
    let mut uuids = Vec::new();
    for i in 0..2_000 {
        let (_, body) = t.ping_caller(&format!("800{:07}", 1_000_000 + i)).await;
        assert_eq!(body["status"], "no-target");
        uuids.push(body["uuid"].as_str().unwrap().to_owned());
    }
    let total: usize = t.server.engine().table().shards().map(|s| s.lock().records.len()).sum();
    assert!(total <= 64, "{total} records kept");
    // The newest is still there; the oldest is gone.
    let (status, _) = t.record(uuids.last().unwrap()).await;
    assert_eq!(status, 200);
    let (status, _) = t.record(&uuids[0]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn live_reservations_outlast_max_records() {
    let config = basic_config().replace("[server]\n", "[server]\nmax_records = 64\n");
    let t = TestServer::start(&config).await;
    let mut uuids = Vec::new();
    for i in 0..300 {
        let (_, body) = t.ping_caller(&format!("800{:07}", 1_000_000 + i)).await;
        uuids.push(body["uuid"].as_str().unwrap().to_owned());
    }
    // Over the bound, but every one is live: all are confirmable.
    for uuid in &uuids {
        let (status, body) = t.confirm(uuid).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{uuid}");
    }
    // Once expired they may go.
    t.advance(Duration::from_secs(15));
    for _ in 0..40 {
        t.server.engine().tick();
    }
    let total: usize = t.server.engine().table().shards().map(|s| s.lock().records.len()).sum();
    assert!(total <= 64, "{total} records kept");
}
