//! Passthrough bidding webhooks against real buyer servers on 127.0.0.1:
//! bids, deadlines, every kind of failure, Ringba-style paths, and two rtbd
//! instances chained.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Criteria paying 70% of each buyer's bid, for its timer's seconds.
fn percent_criteria(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\ntarget_ids = [\"{id}\"]\npayout_percent = 70\npayout_tag = \"retreaver_rtb_{id}_bid\"\nduration_tag = \"retreaver_rtb_{id}_timer\"\n\n"
            )
        })
        .collect()
}

fn bid(amount: &str, duration: u32, phone: &str) -> String {
    format!(r#"{{"bid":{amount},"duration":{duration},"phone":"{phone}"}}"#)
}

async fn server_with(campaign_extra: &str, key_extra: &str, criteria: &str, targets: &str) -> TestServer {
    TestServer::start(&campaign_config(campaign_extra, key_extra, criteria, targets)).await
}

#[tokio::test]
async fn the_highest_bid_wins_and_the_publisher_gets_its_percent() {
    let five = Buyer::bidding(&bid("5", 60, "+18005550105")).await;
    let nine = Buyer::bidding(&bid("9", 90, "+18005550109")).await;
    let seven = Buyer::bidding(&bid("\"7\"", 70, "+18005550107")).await;
    let targets = [
        webhook_target("five", &five.url("/bid"), ""),
        webhook_target("nine", &nine.url("/bid"), ""),
        webhook_target("seven", &seven.url("/bid"), ""),
    ]
    .concat();
    let t = server_with(
        "routing = \"highest_payout\"",
        "",
        &percent_criteria(&["five", "nine", "seven"]),
        &targets,
    )
    .await;
    let (body, record) = t.ping_and_record(&enc("+18005551234"), "").await;
    assert_eq!(body["status"], "reserved", "{body}");
    assert_eq!(record["target_id"], "nine");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(6.3));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(90));
    assert_eq!(record["transfer_number"], "+18005550109");
    assert_eq!(record["tags"]["retreaver_rtb_nine_bid"], "9");
    assert_eq!(record["tags"]["retreaver_rtb_seven_timer"], "70");
    let pixels = record["fired_pixels"].as_array().unwrap();
    assert_eq!(pixels.len(), 3);
    for pixel in pixels {
        assert_eq!(pixel["method"], "POST");
        assert_eq!(pixel["http_status"], 200);
        assert!(pixel["outcome"].as_str().unwrap().starts_with("bid "), "{pixel}");
        assert!(pixel["response"].as_str().unwrap().starts_with("{\"bid\""));
    }
    // Each buyer was asked once, with the caller in its body.
    for buyer in [&five, &nine, &seven] {
        assert_eq!(buyer.hits(), 1);
        assert_eq!(buyer.seen.lock()[0].body, r#"{"caller":"+18005551234"}"#);
    }
    // The call goes to the buyer's number.
    let (status, call) = t.call("+18005551234", "+18444021146").await;
    assert_eq!(status, 200);
    assert_eq!(call["transfer_number"], "+18005550109");
}

#[tokio::test]
async fn a_buyer_past_the_deadline_is_rejected_and_does_not_hold_the_ping() {
    let slow = Buyer::start(Behavior::Answer {
        status: 200,
        body: bid("50", 60, "+18005550150"),
        delay: Duration::from_secs(3),
    })
    .await;
    let quick = Buyer::bidding(&bid("2", 60, "+18005550102")).await;
    let targets =
        [webhook_target("slow", &slow.url("/"), ""), webhook_target("quick", &quick.url("/"), "")].concat();
    let t = server_with(
        "routing = \"highest_payout\"",
        "timeout_ms = 300",
        &percent_criteria(&["slow", "quick"]),
        &targets,
    )
    .await;
    let started = Instant::now();
    let (body, record) = t.ping_and_record("8005551234", "").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(350), "the ping took {took:?}");
    assert!(took >= Duration::from_millis(290), "the ping answered before the deadline: {took:?}");
    assert_eq!(body["status"], "reserved");
    assert_eq!(record["target_id"], "quick");
    let entry = flow_entry(&record, "slow");
    assert_eq!(entry["status"], "rejected");
    assert_eq!(entry["info"], "no answer within 300 ms");
    let pixel = record["fired_pixels"].as_array().unwrap().iter().find(|p| p["target_id"] == "slow").unwrap();
    assert_eq!(pixel["http_status"], serde_json::Value::Null);
    assert!(pixel["outcome"].as_str().unwrap().starts_with("failed: no answer within 300 ms"));
}

#[tokio::test]
async fn a_target_deadline_shorter_than_the_key_wins() {
    let slow = Buyer::start(Behavior::Answer {
        status: 200,
        body: bid("5", 60, "+18005550150"),
        delay: Duration::from_millis(400),
    })
    .await;
    let target = webhook_target("slow", &slow.url("/"), "").replace("bid_path", "timeout_ms = 100\nbid_path");
    let t = server_with("", "timeout_ms = 2000", &percent_criteria(&["slow"]), &target).await;
    let started = Instant::now();
    let (body, record) = t.ping_and_record("8005551234", "").await;
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(body["status"], "rejected");
    assert_eq!(flow_entry(&record, "slow")["info"], "no answer within 100 ms");
}

/// One buyer behaving as given: the answer's status and reason, and the
/// target's call_flow entry.
async fn lone_buyer(behavior: Behavior) -> (serde_json::Value, serde_json::Value) {
    let buyer = Buyer::start(behavior).await;
    lone_buyer_at(&buyer.url("/bid")).await
}

async fn lone_buyer_at(url: &str) -> (serde_json::Value, serde_json::Value) {
    let t =
        server_with("", "timeout_ms = 1000", &percent_criteria(&["b"]), &webhook_target("b", url, "")).await;
    let (body, record) = t.ping_and_record("8005551234", "").await;
    let entry = flow_entry(&record, "b").clone();
    assert_eq!(record["fired_pixels"].as_array().unwrap().len(), 1, "{record}");
    (body, entry)
}

fn answer(status: u16, body: &str) -> Behavior {
    Behavior::Answer { status, body: body.to_owned(), delay: Duration::ZERO }
}

#[tokio::test]
async fn every_kind_of_failure() {
    // Failures of the buyer: `rejected`, and the ping is `rejected` too.
    for (behavior, info) in [
        (answer(500, &bid("5", 60, "+18005550100")), "HTTP 500"),
        (answer(200, "<html>oops</html>"), "the answer is not JSON"),
        (answer(200, r#"{"bid": 5"#), "the answer is not JSON"),
        (Behavior::Huge(70 * 1024), "the answer is over 64 KiB"),
        (Behavior::Hang, "connection closed before message completed"),
    ] {
        let label = format!("{behavior:?}").chars().take(60).collect::<String>();
        let (body, entry) = lone_buyer(behavior).await;
        assert_eq!(
            (body["status"].as_str(), body["reason"].as_str()),
            (Some("rejected"), Some("rejected")),
            "{label}"
        );
        assert_eq!(entry["status"], "rejected", "{label}");
        assert!(entry["info"].as_str().unwrap().contains(info), "{label}: {entry}");
    }
    let (body, entry) = lone_buyer_at(&format!("http://{}/bid", refused_addr().await)).await;
    assert_eq!(body["status"], "rejected");
    assert_eq!(entry["info"], "could not connect");

    // No bid: `target_disqualified`.
    for json in [r#"{"price":5}"#, r#"{"bid":0}"#, r#"{"bid":-3}"#, r#"{"bid":"none"}"#, r#"{"bid":null}"#] {
        let (body, entry) = lone_buyer(answer(200, json)).await;
        assert_eq!(
            (body["status"].as_str(), body["reason"].as_str()),
            (Some("no-target"), Some("target_disqualified")),
            "{json}"
        );
        assert_eq!(entry["status"], "target_disqualified", "{json}");
    }

    // A number that cannot be dialled.
    let (body, entry) = lone_buyer(answer(200, &bid("5", 60, "call-me"))).await;
    assert_eq!(body["reason"], "undialable_expression");
    assert_eq!(entry["info"], "the number \"call-me\" cannot be dialled");

    // A string bid is a bid.
    let (body, _) = lone_buyer(answer(200, r#"{"bid":"4.5","duration":"30","phone":"8005550100"}"#)).await;
    assert_eq!(body["status"], "reserved");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(3.15));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(30));
}

#[tokio::test]
async fn ringba_style_answers_read_through_array_paths() {
    let ringba = r#"{"bidId":"b-1","bidAmount":12.0,"bidTerms":[{"callMinDuration":75,"phoneNumber":"+18005550175"}]}"#;
    let buyer = Buyer::bidding(ringba).await;
    let target = format!(
        "[[campaigns.targets]]\nid = \"ringba\"\n[campaigns.targets.webhook]\nurl = \"{}\"\nmethod = \"GET\"\nheaders = {{ \"x-api-key\" = \"secret\" }}\nbid_path = \"bidAmount\"\ntimer_path = \"bidTerms.0.callMinDuration\"\nnumber_path = \"bidTerms.0.phoneNumber\"\n",
        buyer.url("/bid?caller=[caller_number]&zip=[caller_zip]&none=[nothing]")
    );
    let t = server_with("", "", &percent_criteria(&["ringba"]), &target).await;
    let (body, record) = t.ping_and_record(&enc("+18005551234"), "&caller_zip=10001%20A").await;
    assert_eq!(body["status"], "reserved", "{body}");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(8.4));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(75));
    assert_eq!(record["transfer_number"], "+18005550175");
    let seen = buyer.seen.lock()[0].clone();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/bid?caller=%2B18005551234&zip=10001%20A&none=");
    assert!(seen.headers.iter().any(|(k, v)| k == "x-api-key" && v == "secret"));
}

#[tokio::test]
async fn static_targets_and_buyers_compete() {
    let buyer = Buyer::bidding(&bid("100", 60, "+18005550100")).await;
    let criteria = percent_criteria(&["buyer"])
        + "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\ntarget_ids = [\"fixed\"]\npayout = 10\nduration_secs = 30\n";
    let targets = [webhook_target("buyer", &buyer.url("/"), ""), target("fixed", "")].concat();
    let t = server_with("routing = \"highest_payout\"", "", &criteria, &targets).await;
    let (body, record) = t.ping_and_record("8005551234", "").await;
    assert_eq!(record["target_id"], "buyer");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(70.0));
    // A paused buyer is not asked.
    let targets = [webhook_target("buyer", &buyer.url("/"), "paused = true"), target("fixed", "")].concat();
    let t = server_with("routing = \"highest_payout\"", "", &criteria, &targets).await;
    let hits = buyer.hits();
    let (_, record) = t.ping_and_record("8005551235", "").await;
    assert_eq!(record["target_id"], "fixed");
    assert_eq!(buyer.hits(), hits);
}

#[tokio::test]
async fn while_buyers_think_the_record_says_so_and_repeats_are_already_processing() {
    let slow = Buyer::start(Behavior::Answer {
        status: 200,
        body: bid("5", 60, "+18005550100"),
        delay: Duration::from_millis(500),
    })
    .await;
    let t = std::sync::Arc::new(
        server_with("", "", &percent_criteria(&["slow"]), &webhook_target("slow", &slow.url("/"), "")).await,
    );
    let first = {
        let t = t.clone();
        tokio::spawn(async move { t.ping_caller("8005551234").await })
    };
    while slow.hits() == 0 {
        tokio::task::yield_now().await;
    }
    let (status, repeat) = t.ping_caller("8005551234").await;
    assert_eq!(status, 200);
    assert_eq!(repeat["status"], "ping_shield_postback_key_caller_number_already_processing");
    assert_eq!(repeat["retreaver_ping_shield"], true);
    let uuid = repeat["uuid"].as_str().unwrap().to_owned();
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "considering_targets.single");
    assert_eq!(flow_statuses(&record), ["considering_targets.single"]);
    assert_eq!(record["call_flow"][0]["info"], "asking 1 buyer(s) for a bid");
    let (_, done) = first.await.unwrap();
    assert_eq!(done["status"], "reserved");
    assert_eq!(done["uuid"], uuid.as_str());
    assert_eq!(slow.hits(), 1, "the repeat did not ask the buyer again");
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "reserved");
}

#[tokio::test]
async fn two_rtbd_instances_chained() {
    // B sells calls for 12.5 (its criteria); A buys from B like any buyer.
    let b_config = campaign_config(
        "",
        "",
        "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\npayout = 12.5\nduration_secs = 95\n",
        &target("b-agency", ""),
    )
    .replace("+18444021146", "+18445550000");
    let b = TestServer::start(&b_config).await;
    let a_target = format!(
        "[[campaigns.targets]]\nid = \"rtbd-b\"\n[campaigns.targets.webhook]\nurl = \"{}/rtbs.json?key={KEY}&publisher_id=rtbd-a&caller_number=[caller_number]&caller_zip=[caller_zip]\"\nmethod = \"POST\"\nbid_path = \"retreaver_payout\"\ntimer_path = \"retreaver_seconds\"\nnumber_path = \"inbound_number\"\n",
        b.base
    );
    let a = TestServer::start(&campaign_config("", "", &percent_criteria(&["rtbd-b"]), &a_target)).await;

    let (body, record) = a.ping_and_record(&enc("+18005551234"), "&caller_zip=10001").await;
    assert_eq!(body["status"], "reserved", "{body}");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(8.75));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(95));
    // A transfers to B's tracking number.
    assert_eq!(record["transfer_number"], "+18445550000");

    // B holds a reservation for the same caller, made by publisher rtbd-a.
    let b_uuid =
        serde_json::from_str::<serde_json::Value>(record["fired_pixels"][0]["response"].as_str().unwrap())
            .unwrap()["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
    let (_, b_record) = b.record(&b_uuid).await;
    assert_eq!(b_record["publisher_id"], "rtbd-a");
    assert_eq!(b_record["tags"]["caller_zip"], "10001");
    assert_eq!(b_record["status"], "reserved");

    // The call reaches A's tracking number, then B's.
    let (status, claimed_a) = a.call("+18005551234", "+18444021146").await;
    assert_eq!((status, claimed_a["transfer_number"].as_str()), (200, Some("+18445550000")));
    let (status, claimed_b) = b.call("+18005551234", "+18445550000").await;
    assert_eq!(status, 200);
    assert_eq!(claimed_b["transfer_number"], b_record["transfer_number"]);
    assert_eq!(claimed_b["target_id"], "b-agency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_buyers_delay_no_other_ping_and_keep_no_connection() {
    let slow = std::sync::Arc::new(
        Buyer::start(Behavior::Answer {
            status: 200,
            body: bid("5", 60, "+18005550100"),
            delay: Duration::from_millis(700),
        })
        .await,
    );
    let config = campaign_config(
        "",
        "timeout_ms = 100",
        &percent_criteria(&["slow"]),
        &webhook_target("slow", &slow.url("/"), ""),
    ) + &format!(
        "\n[[campaigns]]\nid = \"static\"\ntracking_numbers = [\"+18444021199\"]\n[[campaigns.rtb_keys]]\nkey = \"static-key\"\n{ANY_PAYS_ONE}\n{}",
        target("fixed", "")
    );
    let t = std::sync::Arc::new(TestServer::start(&config).await);
    let started = Instant::now();
    let pings: Vec<_> = (0..20)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let (_, body) = t.ping_caller(&format!("800555{i:04}")).await;
                (began.elapsed(), body)
            })
        })
        .collect();
    // A ping on a campaign without buyers is answered at once meanwhile.
    while slow.hits() == 0 {
        tokio::task::yield_now().await;
    }
    let began = Instant::now();
    let (_, fixed) = t.ping("key=static-key&publisher_id=p&caller_number=8005559999").await;
    assert_eq!(fixed["status"], "reserved");
    assert!(began.elapsed() < Duration::from_millis(50), "{:?}", began.elapsed());
    for ping in pings {
        let (took, body) = ping.await.unwrap();
        assert_eq!(body["status"], "rejected", "{body}");
        assert!(took < Duration::from_millis(250), "{took:?}");
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(slow.hits(), 20);
    // The requests cut off at the deadline leave no connection open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.open.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.open.load(std::sync::atomic::Ordering::SeqCst), 0, "connections left open");
}

#[tokio::test]
async fn bid_tags_are_rtbds_own_and_lower_case() {
    // A target id with capitals still finds its lower-case bid tags.
    let buyer = Buyer::bidding(r#"{"bid":10,"phone":"+18005550100"}"#).await;
    let criteria = "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\npayout_percent = 50\npayout_tag = \"retreaver_rtb_Buyer1_bid\"\nduration_tag = \"retreaver_rtb_Buyer1_timer\"\n";
    let t = server_with("", "", criteria, &webhook_target("Buyer1", &buyer.url("/"), "")).await;
    // The buyer gave no timer; the publisher's own timer tag is ignored, so
    // the call cannot be priced (rather than priced by the publisher).
    let (body, record) =
        t.ping_and_record("8005551234", "&retreaver_rtb_buyer1_timer=1&retreaver_rtb_buyer1_bid=999").await;
    assert_eq!(body["status"], "rejected", "{body}");
    assert_eq!(
        flow_entry(&record, "Buyer1")["info"],
        "Unable to determine payout until the call converts: tag retreaver_rtb_buyer1_timer is missing"
    );
    assert_eq!(record["tags"]["retreaver_rtb_buyer1_bid"], "10");

    let buyer = Buyer::bidding(r#"{"bid":10,"duration":42,"phone":"+18005550100"}"#).await;
    let t = server_with("", "", criteria, &webhook_target("Buyer1", &buyer.url("/"), "")).await;
    let (body, _) = t.ping_and_record("8005551234", "").await;
    assert_eq!(
        (body["retreaver_payout"].as_f64(), body["retreaver_seconds"].as_u64()),
        (Some(5.0), Some(42))
    );
}
