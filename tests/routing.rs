//! Static routing: priority, weights, paused and undialable targets, pricing.

mod common;

use common::*;

fn campaign(criteria: &str, targets: &str) -> String {
    campaign_config("", "", criteria, targets)
}

async fn winner(t: &TestServer, caller: u32) -> (serde_json::Value, serde_json::Value) {
    let (status, body) = t.ping_caller(&format!("800{caller:07}")).await;
    assert_eq!(status, 200, "{body}");
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    let (_, record) = t.record(&uuid).await;
    (body, record)
}

#[tokio::test]
async fn lowest_priority_wins_and_paused_targets_are_skipped() {
    let targets = [
        target("second", "priority = 2"),
        target("first", "priority = 1\npaused = true"),
        target("third", "priority = 3"),
    ]
    .concat();
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, &targets)).await;
    for i in 0..20 {
        let (body, record) = winner(&t, 1_000 + i).await;
        assert_eq!(body["status"], "reserved");
        assert_eq!(record["target_id"], "second");
        let paused = &record["call_flow"][0];
        assert_eq!(paused["target_id"], "first");
        assert_eq!(paused["status"], "targets_paused");
        assert_eq!(flow_statuses(&record), ["targets_paused", "reserved"]);
    }
}

#[tokio::test]
async fn weights_share_equal_priorities() {
    let criteria = r#"
[[campaigns.conversion_criteria]]
publisher_id = "*"
target_ids = ["heavy"]
payout = 3
duration_secs = 60

[[campaigns.conversion_criteria]]
publisher_id = "*"
target_ids = ["light"]
payout = 1
duration_secs = 60
"#;
    let targets = [target("heavy", "weight = 3"), target("light", "weight = 1")].concat();
    let t = TestServer::start(&campaign(criteria, &targets)).await;
    let n = 4_000;
    let mut heavy = 0;
    for i in 0..n {
        let (_, body) = t.ping_caller(&format!("800{:07}", 2_000_000 + i)).await;
        match body["retreaver_payout"].as_f64() {
            Some(3.0) => heavy += 1,
            Some(1.0) => {}
            other => panic!("unexpected payout {other:?}: {body}"),
        }
    }
    // Expect 3/4; the standard deviation of the share is under 0.007.
    let share = f64::from(heavy) / f64::from(n);
    assert!((0.72..=0.78).contains(&share), "heavy share {share}");
}

#[tokio::test]
async fn every_target_paused_is_no_target() {
    let targets = [target("a", "paused = true"), target("b", "paused = true")].concat();
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, &targets)).await;
    let (body, record) = winner(&t, 1).await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "targets_paused");
    assert_eq!(body["info"], "every target is paused");
    assert!(body.get("inbound_number").is_none());
    assert_eq!(record["status"], "no-target");
    assert_eq!(flow_statuses(&record), ["targets_paused", "targets_paused", "targets_paused"]);
}

#[tokio::test]
async fn undialable_numbers_pass_the_target_over() {
    let targets = "[[campaigns.targets]]\nid = \"bad\"\nnumber = \"call-me-maybe\"\n";
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, targets)).await;
    let (body, record) = winner(&t, 2).await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "undialable_expression");
    let entry = &record["call_flow"][0];
    assert_eq!(entry["target_id"], "bad");
    assert_eq!(entry["status"], "undialable_expression");
    assert!(entry["info"].as_str().unwrap().contains("call-me-maybe"));

    // With a dialable target beside it, the dialable one gets the call.
    let targets = format!("{targets}{}", target("good", "priority = 5"));
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, &targets)).await;
    let (body, record) = winner(&t, 3).await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "good");
    assert_eq!(flow_statuses(&record), ["undialable_expression", "reserved"]);
}

#[tokio::test]
async fn no_criteria_for_the_publisher_is_rejected() {
    let criteria = r#"
[[campaigns.conversion_criteria]]
publisher_id = "someone-else"
payout = 1
duration_secs = 60
"#;
    let t = TestServer::start(&campaign(criteria, &target("a", ""))).await;
    let (body, record) = winner(&t, 4).await;
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["reason"], "rejected");
    assert_eq!(body["info"], "Unable to determine payout until the call converts");
    assert_eq!(record["status"], "rejected");
    // One step, saying why: no target was looked at.
    assert_eq!(flow_statuses(&record), ["rejected"]);
    assert_eq!(record["call_flow"][0]["target_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn criteria_pick_by_publisher_then_target_in_file_order() {
    let criteria = r#"
[[campaigns.conversion_criteria]]
publisher_id = "pub1"
target_ids = ["vip"]
payout = 20
duration_secs = 120

[[campaigns.conversion_criteria]]
publisher_id = "pub1"
payout = 10
duration_secs = 90

[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 5
duration_secs = 60
"#;
    let t = TestServer::start(&campaign(criteria, &target("vip", ""))).await;
    let (body, _) = winner(&t, 5).await;
    assert_eq!(
        (body["retreaver_payout"].as_f64(), body["retreaver_seconds"].as_u64()),
        (Some(20.0), Some(120))
    );
    let (_, body) = t.ping(&format!("key={KEY}&publisher_id=other&caller_number=8005550006")).await;
    assert_eq!(
        (body["retreaver_payout"].as_f64(), body["retreaver_seconds"].as_u64()),
        (Some(5.0), Some(60))
    );

    let targets = [target("plain", ""), target("vip", "paused = true")].concat();
    let t = TestServer::start(&campaign(criteria, &targets)).await;
    let (body, _) = winner(&t, 7).await;
    assert_eq!(
        (body["retreaver_payout"].as_f64(), body["retreaver_seconds"].as_u64()),
        (Some(10.0), Some(90))
    );
}

#[tokio::test]
async fn a_target_no_criterion_prices_is_passed_over() {
    let criteria = r#"
[[campaigns.conversion_criteria]]
publisher_id = "*"
target_ids = ["priced"]
payout = 2
duration_secs = 60
"#;
    let targets = [target("unpriced", "priority = 1"), target("priced", "priority = 2")].concat();
    let t = TestServer::start(&campaign(criteria, &targets)).await;
    let (body, record) = winner(&t, 8).await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "priced");
    let entry = &record["call_flow"][0];
    assert_eq!(entry["target_id"], "unpriced");
    assert_eq!(entry["status"], "rejected");
    assert_eq!(entry["info"], "Unable to determine payout until the call converts");
}

#[tokio::test]
async fn the_most_common_reason_explains_no_target() {
    let targets = [
        target("p1", "paused = true"),
        target("p2", "paused = true"),
        "[[campaigns.targets]]\nid = \"u1\"\nnumber = \"nope\"\n".to_owned(),
    ]
    .concat();
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, &targets)).await;
    let (body, _) = winner(&t, 9).await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "targets_paused");
}

#[tokio::test]
async fn a_campaign_without_targets_answers_no_target() {
    let t = TestServer::start(&campaign(ANY_PAYS_ONE, "")).await;
    let (body, _) = winner(&t, 10).await;
    assert_eq!(body["status"], "no-target");
    assert_eq!(body["reason"], "no-target");
}
