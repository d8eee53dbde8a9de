//! The ping: the documented reservation shape, from every kind of request.

mod common;

use common::*;
use serde_json::Value;

const SEED: &str = "publisher_id=4321ABCD&caller_number=%2B18005551234&caller_zip=10001";

fn assert_seed_reservation(body: &Value) {
    let obj = body.as_object().unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["uuid", "status", "retreaver_payout", "retreaver_seconds", "inbound_number", "expires_at"],
        "{body}"
    );
    let uuid = uuid::Uuid::parse_str(body["uuid"].as_str().unwrap()).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(body["status"], "reserved");
    assert_eq!(body["retreaver_payout"].as_f64(), Some(1.173));
    assert_eq!(body["retreaver_seconds"].as_u64(), Some(95));
    assert_eq!(body["inbound_number"], "+18444021146");
    assert_eq!(body["expires_at"], "2024-05-29T16:16:18.246Z");
}

#[tokio::test]
async fn seed_example_as_query_string() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = t.ping(&format!("key={KEY}&{SEED}")).await;
    assert_eq!(status, 200);
    assert_seed_reservation(&body);
}

#[tokio::test]
async fn seed_example_as_form_body() {
    let t = TestServer::start(&basic_config()).await;
    let form = format!("key={KEY}&{SEED}");
    let (status, body) = t
        .send(reqwest::Method::POST, "/rtbs.json", None, Some(("application/x-www-form-urlencoded", form)))
        .await;
    assert_eq!(status, 200);
    assert_seed_reservation(&body);
}

#[tokio::test]
async fn seed_example_as_json_body_whatever_its_content_type() {
    for content_type in ["application/json", "application/x-www-form-urlencoded", "text/plain"] {
        let t = TestServer::start(&basic_config()).await;
        let json = format!(
            r#"  {{"key":"{KEY}","publisher_id":"4321ABCD","caller_number":"+18005551234","caller_zip":10001}}"#
        );
        let (status, body) =
            t.send(reqwest::Method::POST, "/rtbs.json", None, Some((content_type, json))).await;
        assert_eq!(status, 200, "{content_type}: {body}");
        assert_seed_reservation(&body);
        // The JSON number became the tag's text.
        let (_, record) = t.record(body["uuid"].as_str().unwrap()).await;
        assert_eq!(record["tags"]["caller_zip"], "10001");
    }
}

#[tokio::test]
async fn body_wins_over_query_and_tags_are_lower_cased() {
    let t = TestServer::start(&basic_config()).await;
    let path =
        format!("/rtbs.json?key={KEY}&publisher_id=fromquery&caller_number=8005551234&Caller_State=NJ");
    let (status, body) = t
        .send(
            reqwest::Method::POST,
            &path,
            None,
            Some((
                "application/json",
                r#"{"publisher_id":"frombody","Age":42,"ok":true,"gone":null}"#.into(),
            )),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, record) = t.record(body["uuid"].as_str().unwrap()).await;
    assert_eq!(record["publisher_id"], "frombody");
    assert_eq!(record["caller_number"], "+18005551234");
    assert_eq!(record["tags"], serde_json::json!({"caller_state": "NJ", "age": "42", "ok": "true"}));
}

#[tokio::test]
async fn source_id_is_an_alias_of_publisher_id() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = t.ping(&format!("key={KEY}&source_id=src9&caller_number=8005551234")).await;
    assert_eq!(status, 200, "{body}");
    let (_, record) = t.record(body["uuid"].as_str().unwrap()).await;
    assert_eq!(record["publisher_id"], "src9");
}

#[tokio::test]
async fn sip_address_when_a_sip_domain_is_configured() {
    let config = basic_config().replace("[server]\n", "[server]\nsip_domain = \"sip.rtb.example.com\"\n");
    let t = TestServer::start(&config).await;
    let (_, body) = t.ping_caller("8005551234").await;
    let uuid = body["uuid"].as_str().unwrap();
    assert_eq!(body["sip_address"], format!("{uuid}@sip.rtb.example.com"));
}

#[tokio::test]
async fn inbound_number_from_param_key_or_rotation() {
    let config = r#"
[server]
admin_token = "a"
switch_token = "s"

[[campaigns]]
id = "c"
tracking_numbers = ["+18444021146", "+18444021147", "+18444021148"]

[[campaigns.rtb_keys]]
key = "rotating"

[[campaigns.rtb_keys]]
key = "fixed"
inbound_number = "+18444021148"

[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 1
duration_secs = 60

[[campaigns.targets]]
id = "t"
number = "+18005550100"
"#;
    let t = TestServer::start(config).await;
    let mut rotated = Vec::new();
    for i in 0..6 {
        let (_, body) = t.ping(&format!("key=rotating&publisher_id=p&caller_number=800555{i:04}")).await;
        rotated.push(body["inbound_number"].as_str().unwrap().to_owned());
    }
    assert_eq!(rotated[..3], ["+18444021146", "+18444021147", "+18444021148"]);
    assert_eq!(rotated[3..], rotated[..3]);

    let (_, body) = t.ping("key=fixed&publisher_id=p&caller_number=8005550100").await;
    assert_eq!(body["inbound_number"], "+18444021148");

    let (_, body) =
        t.ping("key=fixed&publisher_id=p&caller_number=8005550101&inbound_number=(844)%20402-1147").await;
    assert_eq!(body["inbound_number"], "+18444021147");

    let (status, body) =
        t.ping("key=rotating&publisher_id=p&caller_number=8005550102&inbound_number=8005550100").await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["info"], "inbound_number +18005550100 is not a tracking number of this campaign");
}

#[tokio::test]
async fn health_is_open() {
    let t = TestServer::start(&basic_config()).await;
    let response = t.client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}
