//! Every target rule: one test per detailed status, asserting the answer's
//! `reason` and the record's `call_flow` entry; routing modes; percent
//! payouts.

mod common;

use std::time::Duration;

use common::*;

async fn server(campaign_extra: &str, key_extra: &str, criteria: &str, targets: &str) -> TestServer {
    TestServer::start(&campaign_config(campaign_extra, key_extra, criteria, targets)).await
}

#[tokio::test]
async fn targets_closed_outside_business_hours() {
    // T0 is a Wednesday, 16:16 UTC; the target works Mondays only.
    let hours = "business_hours = [ { day_of_week = 1, time_open = 900, time_close = 1700 } ]";
    let t = server("", "", ANY_PAYS_ONE, &target("monday", hours)).await;
    let (body, record) = t.ping_and_record("8005550001", "").await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "targets_closed");
    assert_eq!(body["info"], "every target is outside its business hours");
    let entry = flow_entry(&record, "monday");
    assert_eq!(entry["status"], "targets_closed");
    assert_eq!(entry["info"], "closed at Wed 16:16 UTC");
}

#[tokio::test]
async fn a_ping_routes_on_all_its_tags_and_its_record_keeps_two_kib_of_them() {
    let filters = r#"filters = { caller_state = ["NY"] }"#;
    let t = server("", "", ANY_PAYS_ONE, &target("ny", filters)).await;
    // Fifty tags of 256 bytes, the filtered one last.
    let value = "v".repeat(256);
    let mut body: String = (0..50).map(|i| format!("t{i:02}={value}&")).collect();
    body.push_str("caller_state=NY");
    let query = format!("/rtbs.json?key={KEY}&publisher_id=pub1&caller_number=8005550001");
    let (status, answer) =
        t.send(reqwest::Method::POST, &query, None, Some(("application/x-www-form-urlencoded", body))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("reserved")), "{answer}");
    let (_, record) = t.record(answer["uuid"].as_str().unwrap()).await;
    let tags = record["tags"].as_object().unwrap();
    // Each packs to 3 + 256 + 2 bytes: seven fit in 2,048.
    assert_eq!(tags.len(), 8, "{tags:?}");
    assert!((0..7).all(|i| tags[&format!("t{i:02}")] == value.as_str()));
    assert_eq!(tags["rtbd_tags_left_out"], "44");
}

#[tokio::test]
async fn target_disqualified_by_filters() {
    let filters = r#"filters = { caller_state = ["NY", "NJ"], caller_zip = ["100*", "07*"] }"#;
    let t = server("", "", ANY_PAYS_ONE, &target("ny", filters)).await;

    let (body, record) = t.ping_and_record("8005550001", "&caller_state=CA&caller_zip=10001").await;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("no-target"), Some("target_disqualified"))
    );
    let entry = flow_entry(&record, "ny");
    assert_eq!(entry["status"], "target_disqualified");
    assert_eq!(entry["info"], "tag caller_state is \"CA\", which the target does not take");

    let (body, record) = t.ping_and_record("8005550002", "&caller_state=NY").await;
    assert_eq!(body["reason"], "target_disqualified");
    assert_eq!(flow_entry(&record, "ny")["info"], "tag caller_zip is missing");

    // Values compare without case; `*` is a prefix.
    let (body, _) = t.ping_and_record("8005550003", "&caller_state=nj&caller_zip=07030").await;
    assert_eq!(body["status"], "reserved", "{body}");
    let (body, _) = t.ping_and_record("8005550004", "&Caller_State=Ny&caller_zip=1009").await;
    assert_eq!(body["status"], "reserved", "{body}");
}

#[tokio::test]
async fn filters_can_match_the_caller_number() {
    let filters = r#"filters = { caller_number = ["+1212*"] }"#;
    let t = server("", "", ANY_PAYS_ONE, &target("nyc", filters)).await;
    let (body, _) = t.ping_and_record("2125550001", "").await;
    assert_eq!(body["status"], "reserved");
    let (body, _) = t.ping_and_record("3125550001", "").await;
    assert_eq!(body["reason"], "target_disqualified");
}

#[tokio::test]
async fn target_disqualified_by_cap() {
    let t = server(
        "",
        "add_to_caps_on_status_reserved = true",
        ANY_PAYS_ONE,
        &target("capped", "caps = { hard = 1 }"),
    )
    .await;
    let (first, _) = t.ping_and_record("8005550001", "").await;
    assert_eq!(first["status"], "reserved");
    let (body, record) = t.ping_and_record("8005550002", "").await;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("no-target"), Some("target_disqualified_by_cap"))
    );
    assert_eq!(body["info"], "every target has reached a cap");
    let entry = flow_entry(&record, "capped");
    assert_eq!(entry["status"], "target_disqualified_by_cap");
    assert_eq!(entry["info"], "hard (lifetime) cap reached");
}

#[tokio::test]
async fn target_simulcapped() {
    let t = server("", "", ANY_PAYS_ONE, &target("one-line", "concurrency_cap = 1")).await;
    let (first, _) = t.ping_and_record("8005550001", "").await;
    // A reservation holds a slot once confirmed.
    let (_, confirmed) = t.confirm(first["uuid"].as_str().unwrap()).await;
    assert_eq!(confirmed["status"], "confirmed");
    let (body, record) = t.ping_and_record("8005550002", "").await;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("no-target"), Some("target_simulcapped"))
    );
    assert_eq!(flow_entry(&record, "one-line")["status"], "target_simulcapped");
    // The slot frees when the confirmed reservation expires.
    t.advance(Duration::from_secs(15));
    let (body, _) = t.ping_and_record("8005550003", "").await;
    assert_eq!(body["status"], "reserved");
}

#[tokio::test]
async fn duplicates_go_last_and_come_back_after_their_window() {
    let targets =
        [target("first", "priority = 1\ndedupe_secs = 3600"), target("second", "priority = 2")].concat();
    let t = server("", "", ANY_PAYS_ONE, &targets).await;
    let caller = "+18005550001";
    let (body, record) = t.ping_and_record(&enc(caller), "").await;
    assert_eq!(record["target_id"], "first");
    let (status, _) = t.call(caller, "+18444021146").await;
    assert_eq!(status, 200);
    let _ = body;

    // The caller reached `first`: `second` is fresh and goes first.
    let (body, record) = t.ping_and_record(&enc(caller), "").await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "second");
    let entry = flow_entry(&record, "first");
    assert_eq!(entry["status"], "targets_duplicate_deprioritized");
    t.call(caller, "+18444021146").await;

    // Other callers are not affected.
    let (_, record) = t.ping_and_record("8005550002", "").await;
    assert_eq!(record["target_id"], "first");

    // After the window, `first` is fresh again.
    t.advance(Duration::from_secs(3600));
    let (_, record) = t.ping_and_record(&enc(caller), "").await;
    assert_eq!(record["target_id"], "first");
}

#[tokio::test]
async fn a_duplicate_is_still_chosen_when_no_fresh_target_is_left() {
    let t = server("", "", ANY_PAYS_ONE, &target("only", "dedupe_secs = 600")).await;
    let caller = "+18005550001";
    t.ping_and_record(&enc(caller), "").await;
    t.call(caller, "+18444021146").await;
    let (body, record) = t.ping_and_record(&enc(caller), "").await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "only");
    assert_eq!(flow_statuses(&record), ["targets_duplicate_deprioritized", "reserved"]);
}

const THREE_PRICES: &str = r#"
[[campaigns.conversion_criteria]]
publisher_id = "*"
target_ids = ["cheap"]
payout = 5
duration_secs = 60

[[campaigns.conversion_criteria]]
publisher_id = "*"
target_ids = ["rich", "rich-too"]
payout = 9
duration_secs = 60

[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 7
duration_secs = 60
"#;

#[tokio::test]
async fn highest_payout_wins_then_priority() {
    // Every target the criteria name must exist; a paused one never wins.
    let paused_rich_too = target("rich-too", "paused = true");
    let targets = [
        target("cheap", "priority = 1"),
        target("mid", "priority = 1"),
        target("rich", "priority = 3"),
        paused_rich_too.clone(),
    ]
    .concat();
    let t = server("routing = \"highest_payout\"", "", THREE_PRICES, &targets).await;
    for i in 0..20 {
        let (body, record) = t.ping_and_record(&format!("800555{i:04}"), "").await;
        assert_eq!(record["target_id"], "rich");
        assert_eq!(body["retreaver_payout"].as_f64(), Some(9.0));
    }
    // Equal payouts: the lower priority number wins.
    let targets = [
        target("rich", "priority = 3"),
        target("rich-too", "priority = 2"),
        target("cheap", "paused = true"),
    ]
    .concat();
    let t = server("routing = \"highest_payout\"", "", THREE_PRICES, &targets).await;
    for i in 0..10 {
        let (_, record) = t.ping_and_record(&format!("800556{i:04}"), "").await;
        assert_eq!(record["target_id"], "rich-too");
    }
    // Under `priority` the same targets go by priority, not payout.
    let targets = [target("cheap", "priority = 1"), target("rich", "priority = 3"), paused_rich_too].concat();
    let t = server("", "", THREE_PRICES, &targets).await;
    let (_, record) = t.ping_and_record("8005570000", "").await;
    assert_eq!(record["target_id"], "cheap");
}

#[tokio::test]
async fn with_add_to_caps_a_full_winner_passes_to_the_next() {
    let targets = [
        target("rich", "caps = { daily = 1 }"),
        target("mid", ""),
        target("cheap", "paused = true"),
        target("rich-too", "paused = true"),
    ]
    .concat();
    let t = server(
        "routing = \"highest_payout\"",
        "add_to_caps_on_status_reserved = true",
        THREE_PRICES,
        &targets,
    )
    .await;
    let (_, record) = t.ping_and_record("8005550001", "").await;
    assert_eq!(record["target_id"], "rich");
    let (body, record) = t.ping_and_record("8005550002", "").await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "mid");
    assert_eq!(flow_entry(&record, "rich")["status"], "target_disqualified_by_cap");
}

const PERCENT: &str = r#"
[[campaigns.conversion_criteria]]
publisher_id = "*"
payout_percent = 70
payout_tag = "bid"
duration_tag = "timer"
"#;

#[tokio::test]
async fn percent_payouts_read_numeric_tags() {
    let t = server("", "", PERCENT, &target("buyer", "")).await;
    let (body, _) = t.ping_and_record("8005550001", "&bid=12.5&timer=45").await;
    assert_eq!(body["retreaver_payout"].as_f64(), Some(8.75));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(45));

    let (body, record) = t.ping_and_record("8005550002", "&timer=45").await;
    assert_eq!((body["status"].as_str(), body["reason"].as_str()), (Some("rejected"), Some("rejected")));
    let entry = flow_entry(&record, "buyer");
    assert_eq!(entry["status"], "rejected");
    assert_eq!(entry["info"], "Unable to determine payout until the call converts: tag bid is missing");

    let (body, record) = t.ping_and_record("8005550003", "&bid=lots&timer=45").await;
    assert_eq!(body["status"], "rejected");
    assert!(
        flow_entry(&record, "buyer")["info"].as_str().unwrap().contains("tag bid is \"lots\", not an amount")
    );

    let (body, _) = t.ping_and_record("8005550004", "&bid=10&timer=soon").await;
    assert_eq!(body["status"], "rejected");
}

#[tokio::test]
async fn no_target_unless_every_target_was_rejected() {
    // One target unpriceable (rejected), one paused: not all rejected, so
    // the answer is no-target, with the most common reason (a tie goes to
    // the first seen).
    let targets = [target("unpriced", ""), target("paused", "paused = true")].concat();
    let t = server("", "", PERCENT, &targets).await;
    let (body, _) = t.ping_and_record("8005550001", "&timer=4").await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "rejected");
}
