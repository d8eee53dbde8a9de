//! A reservation's life: ping → confirm → call → end.

mod common;

use common::*;
use reqwest::Method;

const CALLER: &str = "+18005551234";
const INBOUND: &str = "+18444021146";

async fn reserve(t: &TestServer) -> String {
    let (status, body) = t.ping_caller(&enc(CALLER)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "reserved");
    body["uuid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ping_confirm_call_end_converted() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;

    let (status, body) = t.confirm(&uuid).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["uuid"], uuid.as_str());
    assert_eq!(body["retreaver_payout"].as_f64(), Some(1.173));
    assert_eq!(body["inbound_number"], INBOUND);

    let (status, body) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "uuid": uuid,
            "status": "claimed",
            "target_id": "t1",
            "transfer_number": "+18005550100",
            "retreaver_payout": 1.173,
            "retreaver_seconds": 95
        })
    );

    let (status, body) = t.end(&uuid, 95).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"uuid": uuid, "status": "claimed", "converted": true, "payout": 1.173, "duration_secs": 95})
    );

    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["status"], "claimed");
    assert_eq!(record["converted"], true);
    assert_eq!(record["duration_secs"], 95);
    assert_eq!(flow_statuses(&record), ["reserved", "confirmed", "claimed", "ended"]);
}

#[tokio::test]
async fn a_short_call_does_not_convert_and_ending_twice_changes_nothing() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    // No confirmation: a call may claim a reservation straight away.
    let (status, _) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200);
    let (status, first) = t.end(&uuid, 94).await;
    assert_eq!(status, 200);
    assert_eq!(first["converted"], false);
    assert_eq!(first["payout"].as_f64(), Some(0.0));
    assert_eq!(first["duration_secs"], 94);
    let (status, second) = t.end(&uuid, 500).await;
    assert_eq!(status, 200);
    assert_eq!(second, first);
    let (_, record) = t.record(&uuid).await;
    assert_eq!(flow_statuses(&record), ["reserved", "claimed", "ended"]);
}

#[tokio::test]
async fn every_confirm_form_works_and_confirming_twice_is_harmless() {
    let t = TestServer::start(&basic_config()).await;

    // PATCH
    let uuid = reserve(&t).await;
    let (status, body) = t
        .send(
            Method::PATCH,
            &format!("/rtbs/{uuid}.json"),
            None,
            Some(("application/json", format!(r#"{{"key":"{KEY}","status":"confirmed"}}"#))),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    let (_, again) = t.confirm(&uuid).await;
    assert_eq!(again, body);
    let (_, record) = t.record(&uuid).await;
    assert_eq!(flow_statuses(&record), ["reserved", "confirmed"]);

    // POST with status=confirmed and the uuid.
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    let (status, body) = t
        .ping(&format!(
            "key={KEY}&publisher_id=pub1&caller_number={}&status=confirmed&uuid={uuid}",
            enc(CALLER)
        ))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    assert_eq!(body["uuid"], uuid.as_str());

    // POST with status=confirmed and no uuid: the caller's live reservation.
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    let (status, body) =
        t.ping(&format!("key={KEY}&publisher_id=pub1&caller_number={}&status=confirmed", enc(CALLER))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    assert_eq!(body["uuid"], uuid.as_str());
}

#[tokio::test]
async fn confirm_needs_the_owning_key_and_a_known_uuid() {
    let config = basic_config() + "\n[[campaigns.rtb_keys]]\nkey = \"other-key\"\n";
    let t = TestServer::start(&config).await;
    let uuid = reserve(&t).await;
    let (status, body) = t.send(Method::PUT, &format!("/rtbs/{uuid}.json?key=other-key"), None, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = t.send(Method::PUT, &format!("/rtbs/{uuid}.json?key=unknown"), None, None).await;
    assert_eq!(status, 404);
    let unknown = uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
    let (status, body) = t.confirm(&unknown.to_string()).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], "rejected");
    let (status, _) = t.confirm("not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, body) =
        t.ping(&format!("key={KEY}&publisher_id=p&caller_number=8005559999&status=confirmed")).await;
    assert_eq!(status, 404, "{body}");
    // Still reserved and confirmable with the right key.
    let (status, body) = t.confirm(&uuid).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")));
}

#[tokio::test]
async fn a_claimed_reservation_is_no_longer_live() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    t.call(CALLER, INBOUND).await;
    let (_, body) = t.ping_caller(&enc(CALLER)).await;
    assert_eq!(body["status"], "reserved");
    assert_ne!(body["uuid"], uuid.as_str());
    assert!(body.get("retreaver_ping_shield").is_none());
    // A second call for the same caller finds the new reservation.
    let (status, second) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200);
    assert_eq!(second["uuid"], body["uuid"]);
}

#[tokio::test]
async fn the_dead_line() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = t.call("+18005550000", INBOUND).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        serde_json::json!({"status": "no-target", "info": "no reservation for this caller on this number"})
    );
    // A reservation on another tracking number does not match.
    reserve(&t).await;
    let (status, body) = t.call(CALLER, "+18444021147").await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], "no-target");
}

#[tokio::test]
async fn calls_and_records_need_their_tokens() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    let path = format!("/calls?caller_number={}&inbound_number={}", enc(CALLER), enc(INBOUND));
    for token in [None, Some("wrong"), Some(ADMIN)] {
        let (status, body) = t.send(Method::POST, &path, token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["status"], "rejected");
    }
    for token in [None, Some("wrong"), Some(SWITCH)] {
        let (status, _) = t.send(Method::GET, &format!("/call_reservations/{uuid}"), token, None).await;
        assert_eq!(status, 401, "{token:?}");
    }
    let (status, _) = t.send(Method::POST, &format!("/calls/{uuid}/end?duration_secs=5"), None, None).await;
    assert_eq!(status, 401);
    // Nothing was claimed by the refused calls.
    let (status, _) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn end_needs_a_claimed_call_and_a_duration() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    let (status, body) = t.end(&uuid, 10).await;
    assert_eq!(status, 409, "{body}");
    t.call(CALLER, INBOUND).await;
    let (status, body) = t.send(Method::POST, &format!("/calls/{uuid}/end"), Some(SWITCH), None).await;
    assert_eq!(status, 400);
    assert_eq!(body["info"], "FAILED must include duration_secs (integer)");
    let (status, _) =
        t.send(Method::POST, &format!("/calls/{uuid}/end?duration_secs=-3"), Some(SWITCH), None).await;
    assert_eq!(status, 400);
    // A decimal (a switch's JSON number) counts its whole seconds.
    let (status, body) =
        t.send(Method::POST, &format!("/calls/{uuid}/end?duration_secs=130.9"), Some(SWITCH), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duration_secs"], 130);
    let (status, _) =
        t.end(&uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef).to_string(), 10).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_ping_shield_echoes_and_callers_never_share() {
    let t = TestServer::start(&basic_config()).await;
    let (_, first) = t.ping_caller("8005551234").await;
    let (_, echo) = t.ping_caller("8005551234").await;
    assert_eq!(echo["retreaver_ping_shield"], true);
    let mut without_flag = echo.clone();
    without_flag.as_object_mut().unwrap().remove("retreaver_ping_shield");
    assert_eq!(without_flag, first, "the echo repeats the reservation unchanged");
    let (_, other) = t.ping_caller("8005554321").await;
    assert_eq!(other["status"], "reserved");
    assert_ne!(other["uuid"], first["uuid"]);
    assert!(other.get("retreaver_ping_shield").is_none());
    // The echo is not a new record.
    let (_, record) = t.record(first["uuid"].as_str().unwrap()).await;
    assert_eq!(flow_statuses(&record), ["reserved"]);
}

#[tokio::test]
async fn confirming_by_uuid_needs_only_the_key() {
    let t = TestServer::start(&basic_config()).await;
    let uuid = reserve(&t).await;
    let (status, body) = t.ping(&format!("key={KEY}&status=confirmed&uuid={uuid}")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    // Without a uuid, the caller says which reservation.
    let (status, body) = t.ping(&format!("key={KEY}&status=confirmed")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["info"], "FAILED must include caller_number (string)");
}

/// The basic config with its key's TTL at 10 s, and a second key of the
/// campaign, `long-key`, with a TTL of `long_ttl_secs`: one caller can hold
/// a reservation on each, on the same tracking number.
fn two_keys(long_ttl_secs: u32) -> String {
    basic_config().replace(
        &format!("key = \"{KEY}\""),
        &format!("key = \"{KEY}\"\nttl_secs = 10\n\n[[campaigns.rtb_keys]]\nkey = \"long-key\"\nttl_secs = {long_ttl_secs}"),
    )
}

#[tokio::test]
async fn a_call_takes_the_live_reservation_not_one_past_its_time() {
    // Two keys of one campaign, the same tracking number: the caller holds
    // a reservation on each. The one past its time (not yet ticked) must not
    // hide the live one.
    let t = TestServer::start(&two_keys(60)).await;
    let (_, short) = t.ping_caller(&enc(CALLER)).await;
    let (_, long) = t.ping(&format!("key=long-key&publisher_id=p&caller_number={}", enc(CALLER))).await;
    assert_ne!(short["uuid"], long["uuid"]);
    t.clock.advance(std::time::Duration::from_secs(11));
    let (status, claim) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["uuid"], long["uuid"]);
}

#[tokio::test]
async fn a_call_takes_the_newest_of_two_live_reservations() {
    // The same caller on two keys of one campaign: the older reservation
    // (long TTL) outlives the newer one (short TTL), and the call is for
    // the newer, the publisher that pinged last.
    let t = TestServer::start(&two_keys(600)).await;
    let (_, long) = t.ping(&format!("key=long-key&publisher_id=p&caller_number={}", enc(CALLER))).await;
    assert_eq!(long["status"], "reserved", "{long}");
    t.clock.advance(std::time::Duration::from_secs(2));
    let (_, short) = t.ping_caller(&enc(CALLER)).await;
    assert_eq!(short["status"], "reserved", "{short}");
    assert_ne!(short["uuid"], long["uuid"]);
    let (status, claim) = t.call(CALLER, INBOUND).await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["uuid"], short["uuid"]);
}
