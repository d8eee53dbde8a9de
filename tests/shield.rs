//! The Ping Shield: repeats, pings in flight, claim-ratio throttling and
//! surge limits.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

fn bid() -> String {
    r#"{"bid":10,"duration":60,"phone":"+18005550100"}"#.to_owned()
}

const PAYS: &str =
    "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\npayout = 1\nduration_secs = 60\n";

/// The Ping Shield lines of a key that echoes across its campaign.
const CAMPAIGN_SCOPE: &str = "[campaigns.rtb_keys.ping_shield]\ndedupe_scope = \"campaign\"";

/// Campaign `c` with [`KEY`] (echoing across its campaign) and
/// `second-key` (its table given `second`), and campaign `other` with
/// `other-key` (its table given `other`), each with one static target.
fn two_campaigns(second: &str, other: &str) -> String {
    campaign_config("", CAMPAIGN_SCOPE, PAYS, &target("t", ""))
        + &format!("\n[[campaigns.rtb_keys]]\nkey = \"second-key\"\n{second}\n")
        + &format!(
            "\n[[campaigns]]\nid = \"other\"\ntracking_numbers = [\"+18444021199\"]\n[[campaigns.rtb_keys]]\nkey = \"other-key\"\n{other}\n{PAYS}\n{}",
            target("u", "")
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_repeats_ask_the_buyer_once() {
    let buyer =
        Buyer::start(Behavior::Answer { status: 200, body: bid(), delay: Duration::from_millis(300) }).await;
    let t = Arc::new(
        TestServer::start(&campaign_config("", "", PAYS, &webhook_target("b", &buyer.url("/"), ""))).await,
    );
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.ping_caller("8005551234").await })
        })
        .collect();
    let (mut reserved, mut echoes, mut processing) = (0, 0, 0);
    let mut uuids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        uuids.insert(body["uuid"].as_str().unwrap().to_owned());
        match (body["status"].as_str(), body.get("retreaver_ping_shield").is_some()) {
            (Some("reserved"), false) => reserved += 1,
            (Some("reserved"), true) => echoes += 1,
            (Some("ping_shield_postback_key_caller_number_already_processing"), true) => processing += 1,
            other => panic!("{other:?}: {body}"),
        }
    }
    assert_eq!(buyer.hits(), 1, "the buyer was asked once");
    assert_eq!(reserved, 1);
    assert_eq!(reserved + echoes + processing, 200);
    assert!(processing > 0, "some repeats came while the buyer was thinking");
    assert_eq!(uuids.len(), 1, "every answer names the same ping");
    let stats = t.stats().await;
    let shield = &stats["keys"][KEY]["ping_shield"];
    assert_eq!(shield["ping_shield_postback_key_caller_number_already_processing"], processing);
    assert_eq!(shield["ping_shield_postback_key_caller_number_already_reserved"], echoes);
}

#[tokio::test]
async fn dedupe_scope_campaign_spans_the_campaigns_keys() {
    let config = two_campaigns(CAMPAIGN_SCOPE, CAMPAIGN_SCOPE);
    let t = TestServer::start(&config).await;
    let (_, first) = t.ping_caller("8005551234").await;
    let (_, second) = t.ping("key=second-key&publisher_id=p&caller_number=8005551234").await;
    assert_eq!(second["uuid"], first["uuid"], "the other key of the campaign echoes");
    assert_eq!(second["retreaver_ping_shield"], true);
    let (_, other) = t.ping("key=other-key&publisher_id=p&caller_number=8005551234").await;
    assert_eq!(other["status"], "reserved");
    assert!(other.get("retreaver_ping_shield").is_none(), "another campaign is independent");
    assert_ne!(other["uuid"], first["uuid"]);
}

#[tokio::test]
async fn a_reservation_echoed_across_a_campaign_can_be_confirmed_by_the_echoing_key() {
    let shield = CAMPAIGN_SCOPE;
    let config = campaign_config("", shield, PAYS, &target("t", ""))
        + &format!("\n[[campaigns.rtb_keys]]\nkey = \"second-key\"\n{shield}\n");
    let t = TestServer::start(&config).await;
    let (_, first) = t.ping_caller("8005551234").await;
    let uuid = first["uuid"].as_str().unwrap().to_owned();
    let (_, echo) = t.ping("key=second-key&publisher_id=p&caller_number=8005551234").await;
    assert_eq!(echo["uuid"], first["uuid"]);
    // By uuid, with the key that was echoed the reservation.
    let path = format!("/rtbs/{uuid}.json?key=second-key&status=confirmed");
    let (status, body) = t.send(reqwest::Method::PUT, &path, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["uuid"], uuid.as_str());
    // By caller, too (a second confirm changes nothing).
    let (status, body) = t.ping("key=second-key&caller_number=8005551234&status=confirmed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uuid"], uuid.as_str());
    // It counts once, for the key that made it.
    let stats = t.stats().await;
    assert_eq!(stats["keys"][KEY]["confirmed"], 1, "{stats}");
    assert_eq!(stats["keys"]["second-key"]["confirmed"], 0, "{stats}");
}

/// A key echoing across its campaign sees the reservations of its
/// campaign's other keys, but its own comes first: a confirm by caller
/// number confirms what the key itself reserved, and a repeat echoes it.
#[tokio::test]
async fn a_key_echoing_across_its_campaign_confirms_its_own_reservation_first() {
    let config = two_campaigns("", "");
    let t = TestServer::start(&config).await;
    let caller = "8005551234";
    // Another campaign's reservation for the caller comes and goes first,
    // so that the caller's entries are not simply in the order made.
    let (_, other) = t.ping(&format!("key=other-key&publisher_id=p&caller_number={caller}")).await;
    assert_eq!(other["status"], "reserved");
    let (_, own) = t.ping_caller(caller).await;
    assert_eq!(own["status"], "reserved");
    assert!(own.get("retreaver_ping_shield").is_none(), "{own}");
    let (status, call) = t.call(caller, "+18444021199").await;
    assert_eq!(status, 200, "{call}");
    let (_, second) = t.ping(&format!("key=second-key&publisher_id=p&caller_number={caller}")).await;
    assert_eq!(second["status"], "reserved", "second-key keeps to its own key");
    assert_ne!(second["uuid"], own["uuid"]);

    let (_, echo) = t.ping_caller(caller).await;
    assert_eq!(echo["uuid"], own["uuid"], "the key's own reservation is echoed");
    let (status, body) = t.ping(&format!("key={KEY}&caller_number={caller}&status=confirmed")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uuid"], own["uuid"], "the key's own reservation is confirmed");
    assert_eq!(body["status"], "confirmed");
    let stats = t.stats().await;
    assert_eq!(stats["keys"][KEY]["confirmed"], 1, "{stats}");
    assert_eq!(stats["keys"]["second-key"]["confirmed"], 0, "{stats}");
}

/// Across a campaign, a live reservation is echoed before another key's
/// ping still waiting on its buyers, even one that came later.
#[tokio::test]
async fn a_key_echoing_across_its_campaign_echoes_a_reservation_before_a_ping_in_flight() {
    let buyer =
        Buyer::start(Behavior::Answer { status: 200, body: bid(), delay: Duration::from_millis(500) }).await;
    let targets =
        target("t", "") + &webhook_target("w", &buyer.url("/"), "filters = { route = [\"buyer\"] }");
    let config = campaign_config("", CAMPAIGN_SCOPE, PAYS, &targets)
        + "\n[[campaigns.rtb_keys]]\nkey = \"a-key\"\n\n[[campaigns.rtb_keys]]\nkey = \"b-key\"\n";
    let t = Arc::new(TestServer::start(&config).await);
    let caller = "8005551234";
    let (_, reserved) = t.ping(&format!("key=b-key&publisher_id=p&caller_number={caller}")).await;
    assert_eq!(reserved["status"], "reserved", "{reserved}");
    // a-key's ping asks the slow buyer (its tag passes the buyer's filter).
    let bidding = {
        let t = t.clone();
        tokio::spawn(async move {
            t.ping(&format!("key=a-key&publisher_id=p&caller_number={caller}&route=buyer")).await
        })
    };
    // Its ping is in flight once the buyer has been asked.
    while buyer.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (_, again) = t.ping(&format!("key=a-key&publisher_id=p&caller_number={caller}&route=buyer")).await;
    assert_eq!(again["status"], "ping_shield_postback_key_caller_number_already_processing", "{again}");
    let (_, echo) = t.ping_caller(caller).await;
    assert_eq!(echo["uuid"], reserved["uuid"], "{echo}");
    assert_eq!(echo["status"], "reserved");
    assert_eq!(echo["retreaver_ping_shield"], true);
    let (status, answer) = bidding.await.unwrap();
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn dedupe_scope_key_keeps_keys_apart() {
    let config =
        campaign_config("", "", PAYS, &target("t", "")) + "\n[[campaigns.rtb_keys]]\nkey = \"second-key\"\n";
    let t = TestServer::start(&config).await;
    let (_, first) = t.ping_caller("8005551234").await;
    let (_, second) = t.ping("key=second-key&publisher_id=p&caller_number=8005551234").await;
    assert_eq!(second["status"], "reserved");
    assert_ne!(second["uuid"], first["uuid"]);
    // Each key confirms only its own reservation.
    let first_uuid = first["uuid"].as_str().unwrap();
    let path = format!("/rtbs/{first_uuid}.json?key=second-key&status=confirmed");
    let (status, body) = t.send(reqwest::Method::PUT, &path, None, None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_in_flight_mark_clears_when_the_publisher_goes_away() {
    let buyer =
        Buyer::start(Behavior::Answer { status: 200, body: bid(), delay: Duration::from_millis(400) }).await;
    let fast = Buyer::bidding(&bid()).await;
    let targets =
        [webhook_target("b", &buyer.url("/"), ""), webhook_target("f", &fast.url("/"), "")].concat();
    let t = TestServer::start(&campaign_config("", "", PAYS, &targets)).await;
    // A raw client sends a ping and hangs up while the slow buyer thinks
    // (the fast one has answered).
    let mut socket = tokio::net::TcpStream::connect(t.server.addr()).await.unwrap();
    let request = format!(
        "POST /rtbs.json?key={KEY}&publisher_id=p&caller_number=8005551234 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    while buyer.hits() == 0 {
        tokio::task::yield_now().await;
    }
    let (_, repeat) = t.ping_caller("8005551234").await;
    assert_eq!(repeat["status"], "ping_shield_postback_key_caller_number_already_processing");
    let uuid = repeat["uuid"].as_str().unwrap().to_owned();
    // The record shows the fast answer as soon as it is in.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (_, record) = t.record(&uuid).await;
        assert_eq!(record["status"], "considering_targets.single", "{record}");
        if record["fired_pixels"].as_array().is_some_and(|p| p.len() == 1) {
            assert_eq!(record["fired_pixels"][0]["url"], fast.url("/"), "{record}");
            break;
        }
        assert!(Instant::now() < deadline, "the fast answer never showed: {record}");
        tokio::task::yield_now().await;
    }
    drop(socket);
    // The server notices the hang-up and drops the ping: no more in flight.
    let deadline = Instant::now() + Duration::from_secs(2);
    let record = loop {
        let (_, record) = t.record(&uuid).await;
        if record["status"] != "considering_targets.single" || Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(record["status"], "rejected", "{record}");
    assert_eq!(
        record["call_flow"].as_array().unwrap().last().unwrap()["info"],
        "the ping ended before its buyers answered (the publisher went away)"
    );
    // Both buyers were asked: the slow one's request is in the record all
    // the same, and the fast one's answer as it came.
    let pixels = record["fired_pixels"].as_array().unwrap();
    assert_eq!(pixels.len(), 2, "{record}");
    let pixel = |url: String| pixels.iter().find(|p| p["url"] == url.as_str()).expect("a pixel per buyer");
    let slow = pixel(buyer.url("/"));
    assert_eq!(slow["http_status"], serde_json::Value::Null);
    assert!(slow["outcome"].as_str().unwrap().starts_with("cancelled"), "{record}");
    let answered = pixel(fast.url("/"));
    assert_eq!(answered["http_status"], 200, "{record}");
    assert!(!answered["outcome"].as_str().unwrap().starts_with("cancelled"), "{record}");
    let (_, fresh) = t.ping_caller("8005551234").await;
    assert_eq!(fresh["status"], "reserved", "{fresh}");
    assert_ne!(fresh["uuid"], uuid.as_str());
    // The dropped ping is counted as rejected, so the ping counts add up.
    let stats = t.stats().await;
    let key = &stats["keys"][KEY];
    assert_eq!(
        (key["pings"].as_u64(), key["rejected"].as_u64(), key["reserved"].as_u64()),
        (Some(3), Some(1), Some(1)),
        "{key}"
    );
    let publisher = &stats["publishers"]["p"];
    assert_eq!(publisher["rejected"].as_u64(), Some(1), "{publisher}");
}

#[tokio::test]
async fn the_in_flight_mark_clears_when_the_buyer_times_out() {
    let buyer =
        Buyer::start(Behavior::Answer { status: 200, body: bid(), delay: Duration::from_secs(2) }).await;
    let t = TestServer::start(&campaign_config(
        "",
        "timeout_ms = 100",
        PAYS,
        &webhook_target("b", &buyer.url("/"), ""),
    ))
    .await;
    let (_, first) = t.ping_caller("8005551234").await;
    assert_eq!(first["status"], "rejected");
    let (_, second) = t.ping_caller("8005551234").await;
    assert_eq!(second["status"], "rejected", "a new ping, not already_processing: {second}");
    assert_ne!(second["uuid"], first["uuid"]);
    assert_eq!(buyer.hits(), 2);
}

#[tokio::test]
async fn publishers_without_calls_are_throttled_and_recover() {
    let shield = "[campaigns.rtb_keys.ping_shield]\nmin_claim_ratio = 0.1\nclaim_ratio_window_secs = 600\nclaim_ratio_min_pings = 20\nthrottled_allow_one_in = 5";
    let t = TestServer::start(&campaign_config("", shield, PAYS, &target("t", ""))).await;
    let ping = |publisher: &'static str, i: u32| {
        let t = &t;
        async move { t.ping(&format!("key={KEY}&publisher_id={publisher}&caller_number=800{i:07}")).await.1 }
    };
    for i in 0..19 {
        assert_eq!(ping("spammy", i).await["status"], "reserved");
    }
    // From the 20th ping with no claim, one in five is routed.
    let mut routed = 0;
    for i in 19..39 {
        let body = ping("spammy", i).await;
        match body["status"].as_str() {
            Some("reserved") => routed += 1,
            Some("ping_shield_postback_key_claim_based_limited") => {
                assert_eq!(body["retreaver_ping_shield"], true)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(routed, 4);
    // Another publisher on the same key is not throttled.
    assert_eq!(ping("honest", 1_000).await["status"], "reserved");

    // Claims bring the ratio back: 10 calls for 40 pings is 25 %.
    for i in 0..10 {
        let (status, _) = t.call(&format!("+1800{i:07}"), "+18444021146").await;
        assert_eq!(status, 200);
    }
    for i in 40..46 {
        assert_eq!(ping("spammy", i).await["status"], "reserved", "ping {i}");
    }

    // The window slides: ten minutes on, the old pings and claims have left
    // it, and the new pings count alone.
    t.advance(Duration::from_secs(601));
    for i in 100..119 {
        assert_eq!(ping("spammy", i).await["status"], "reserved", "ping {i}");
    }
    assert_eq!(ping("spammy", 119).await["status"], "reserved", "the first limited ping goes through");
    assert_eq!(ping("spammy", 120).await["status"], "ping_shield_postback_key_claim_based_limited");
    let stats = t.stats().await;
    let limited =
        &stats["publishers"]["spammy"]["ping_shield"]["ping_shield_postback_key_claim_based_limited"];
    assert_eq!(limited, 17);
    assert_eq!(
        stats["publishers"]["honest"]["ping_shield"]["ping_shield_postback_key_claim_based_limited"],
        0
    );
}

#[tokio::test]
async fn surges_get_429_with_retry_after_per_publisher() {
    let shield = "[campaigns.rtb_keys.ping_shield]\nrate_limit_per_sec = 2\nburst = 5";
    let t = TestServer::start(&campaign_config("", shield, PAYS, &target("t", ""))).await;
    let ping = |publisher: &'static str, i: u32| {
        let t = &t;
        async move {
            let response = t
                .client
                .post(
                    t.url(&format!("/rtbs.json?key={KEY}&publisher_id={publisher}&caller_number=800{i:07}")),
                )
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = read(response).await;
            (status, retry, body)
        }
    };
    // The key allows 2/s with a burst of 5; so does each publisher on it.
    for i in 0..5 {
        let (status, _, _) = ping("a", i).await;
        assert_eq!(status, 200);
    }
    let (status, retry, body) = ping("a", 5).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        body,
        serde_json::json!({"status": "ping_shield_postback_key_rate_limited", "retry_after": 1})
    );

    // Half a second later, one more fits (2 per second).
    t.advance(Duration::from_millis(500));
    assert_eq!(ping("a", 6).await.0, 200);
    assert_eq!(ping("a", 7).await.0, 429);
}

#[tokio::test]
async fn one_publishers_surge_does_not_limit_another() {
    // A generous key limit, a tight limit per publisher.
    let shield = "[campaigns.rtb_keys.ping_shield]\nrate_limit_per_sec = 1000\nburst = 1000";
    let config = campaign_config("", shield, PAYS, &target("t", ""))
        .replace("[[campaigns]]", "[ping_shield]\nrate_limit_per_sec = 1\nburst = 3\n\n[[campaigns]]");
    let t = TestServer::start(&config).await;
    // The key overrides the file's defaults: 1000/s for the key and for each
    // publisher, so nothing is limited here.
    for i in 0..10 {
        assert_eq!(t.ping(&format!("key={KEY}&publisher_id=a&caller_number=800{i:07}")).await.0, 200);
    }
    // Without the override, the file's 1/s with a burst of 3 applies.
    let config = campaign_config("", "", PAYS, &target("t", ""))
        .replace("[[campaigns]]", "[ping_shield]\nrate_limit_per_sec = 1\nburst = 3\n\n[[campaigns]]");
    let t = TestServer::start(&config).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(t.ping(&format!("key={KEY}&publisher_id=a&caller_number=800{i:07}")).await.0);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429]);
    let stats = t.stats().await;
    assert_eq!(stats["publishers"]["a"]["ping_shield"]["ping_shield_postback_key_rate_limited"], 1);
    assert_eq!(stats["keys"][KEY]["ping_shield"]["ping_shield_postback_key_rate_limited"], 1);
}
