//! Bad input gets a clear 4xx JSON answer and changes nothing.

mod common;

use common::*;
use reqwest::Method;

async fn expect(t: &TestServer, query: &str, status: u16, info: &str) {
    let (got, body) = t.ping(query).await;
    assert_eq!(got, status, "{query}: {body}");
    assert_eq!(body["status"], "rejected", "{query}: {body}");
    let text = body["info"].as_str().unwrap();
    assert!(text.contains(info), "{query}: info {text:?} lacks {info:?}");
}

#[tokio::test]
async fn missing_parameters() {
    let t = TestServer::start(&basic_config()).await;
    expect(&t, "publisher_id=p&caller_number=8005551234", 400, "FAILED must include key (string)").await;
    expect(
        &t,
        &format!("key={KEY}&caller_number=8005551234"),
        400,
        "FAILED must include publisher_id (string)",
    )
    .await;
    expect(
        &t,
        &format!("key={KEY}&publisher_id=&caller_number=8005551234"),
        400,
        "FAILED must include publisher_id (string)",
    )
    .await;
    expect(&t, &format!("key={KEY}&publisher_id=p"), 400, "FAILED must include caller_number (string)").await;
    let (_, body) = t.ping(&format!("key={KEY}&publisher_id=p")).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "rejected", "info": "FAILED must include caller_number (string)"})
    );
}

#[tokio::test]
async fn unknown_key_is_404() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = t.ping("key=nope&publisher_id=p&caller_number=8005551234").await;
    assert_eq!(status, 404);
    assert_eq!(body, serde_json::json!({"status": "rejected", "info": "unknown key"}));
}

#[tokio::test]
async fn invalid_input_of_every_kind() {
    let t = TestServer::start(&basic_config()).await;
    let base = format!("key={KEY}&publisher_id=p");
    expect(&t, &format!("{base}&caller_number=12345"), 400, "invalid caller_number \"12345\"").await;
    expect(&t, &format!("{base}&caller_number=800555123x"), 400, "invalid caller_number").await;
    expect(&t, &format!("{base}&caller_number=1800555123"), 400, "area code").await;
    expect(&t, &format!("{base}&caller_number=8005551234&zip=%G1"), 400, "bad percent-encoding \"%G1\"")
        .await;
    expect(&t, &format!("{base}&caller_number=8005551234&zip=%E9"), 400, "value of zip is not valid UTF-8")
        .await;
    expect(
        &t,
        &format!("{base}&caller_number=8005551234&zip=1%002"),
        400,
        "value of zip holds a control character",
    )
    .await;
    expect(&t, &format!("{base}&caller_number=8005551234&bad%20name=1"), 400, "bad tag name \"bad name\"")
        .await;
    let long = "x".repeat(257);
    expect(&t, &format!("{base}&caller_number=8005551234&zip={long}"), 400, "value of zip is over 256 bytes")
        .await;
    let many: Vec<String> = (0..65).map(|i| format!("t{i}=v")).collect();
    expect(&t, &format!("{base}&caller_number=8005551234&{}", many.join("&")), 400, "over 64 tags").await;
    expect(
        &t,
        &format!("{base}&caller_number=8005551234&status=sold"),
        400,
        "status \"sold\" is not understood",
    )
    .await;
}

#[tokio::test]
async fn bad_json_bodies() {
    let t = TestServer::start(&basic_config()).await;
    let cases = [
        (format!(r#"{{"key":"{KEY}","publisher_id":"p","caller_number":"8005551234""#), "bad JSON at byte"),
        (
            format!(r#"{{"key":"{KEY}","publisher_id":"p","caller_number":"8005551234","x":{{"y":1}}}}"#),
            "nested JSON in x",
        ),
        (
            format!(r#"{{"key":"{KEY}","publisher_id":"p","caller_number":"8005551234","x":[1]}}"#),
            "nested JSON in x",
        ),
        (
            format!(r#"{{"key":"{KEY}","publisher_id":"p","caller_number":"8005551234","x":"\u0000"}}"#),
            "control character",
        ),
        (r#"{"key": tru}"#.to_owned(), "bad JSON"),
        ("{\"key\":\"\u{7f}\"}".to_owned(), "control character"),
    ];
    for (body, info) in cases {
        let (status, answer) =
            t.send(Method::POST, "/rtbs.json", None, Some(("application/json", body.clone()))).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["status"], "rejected");
        assert!(answer["info"].as_str().unwrap().contains(info), "{body}: {answer}");
    }
    // A body sent as JSON that is not an object is not read as a form
    // (where `null` would become a tag), and changes nothing.
    let query = format!("/rtbs.json?key={KEY}&publisher_id=p&caller_number=8005559876");
    for body in ["null", "[1]", "\"key\"", " 42", "\u{feff}[]"] {
        for content_type in ["application/json", "Application/JSON; charset=utf-8", "application/vnd.x+json"]
        {
            let (status, answer) =
                t.send(Method::POST, &query, None, Some((content_type, body.to_owned()))).await;
            assert_eq!(status, 400, "{body} as {content_type}: {answer}");
            assert!(answer["info"].as_str().unwrap().contains("must be an object"), "{body}: {answer}");
        }
    }
    // Only a handler that reads parameters looks at the body: elsewhere
    // the path and the token are judged first.
    let json = || Some(("application/json", "[1]".to_owned()));
    let (status, answer) = t.send(Method::POST, "/nowhere", None, json()).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = t.send(Method::POST, "/calls", None, json()).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = t.send(Method::GET, "/rtbs.json", None, json()).await;
    assert_eq!(status, 405, "{answer}");
    // Sent as a form, such a body is a form.
    let (status, answer) = t
        .send(Method::POST, &query, None, Some(("application/x-www-form-urlencoded", "null".to_owned())))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (_, record) = t.record(answer["uuid"].as_str().unwrap()).await;
    assert_eq!(record["tags"]["null"], "", "{record}");
    // A byte order mark before the object is skipped.
    let (status, answer) = t
        .send(
            Method::POST,
            &query.replace("9876", "9877"),
            None,
            Some(("application/json", "\u{feff}{\"zip\":\"10001\"}".to_owned())),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "reserved");
    // Invalid UTF-8 in a JSON string.
    let response =
        t.client.post(t.url("/rtbs.json")).body(b"{\"key\":\"\xff\"}".to_vec()).send().await.unwrap();
    let (status, answer) = read(response).await;
    assert_eq!(status, 400);
    assert!(answer["info"].as_str().unwrap().contains("not valid UTF-8"), "{answer}");
}

#[tokio::test]
async fn methods_paths_and_sizes() {
    let t = TestServer::start(&basic_config()).await;
    let (status, body) = t.send(Method::GET, "/rtbs.json", None, None).await;
    assert_eq!(status, 405);
    assert_eq!(body["status"], "rejected");
    let (status, _) = t.send(Method::DELETE, "/rtbs/abc.json", None, None).await;
    assert_eq!(status, 405);
    let (status, body) = t.send(Method::GET, "/nowhere", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["info"], "no such path: /nowhere");

    let big = format!("key={KEY}&publisher_id=p&caller_number=8005551234&pad={}", "x".repeat(17 * 1024));
    let (status, body) =
        t.send(Method::POST, "/rtbs.json", None, Some(("application/x-www-form-urlencoded", big))).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["status"], "rejected");

    let long =
        format!("/rtbs.json?key={KEY}&publisher_id=p&caller_number=8005551234&pad={}", "x".repeat(9 * 1024));
    let (status, body) = t.send(Method::POST, &long, None, None).await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(body["status"], "rejected");
}

#[tokio::test]
async fn rejected_requests_change_nothing() {
    let t = TestServer::start(&basic_config()).await;
    let caller = "8005551234";
    for bad in [
        format!("key={KEY}&publisher_id=p&caller_number={caller}&zip=%G1"),
        format!("key={KEY}&caller_number={caller}"),
        format!("key={KEY}&publisher_id=%20&caller_number={caller}"),
        format!("key={KEY}&publisher_id=&source_id=%09&caller_number={caller}"),
        format!("key=nope&publisher_id=p&caller_number={caller}"),
    ] {
        let (status, _) = t.ping(&bad).await;
        assert!((400..500).contains(&status));
    }
    // The caller holds nothing: the first good ping reserves afresh.
    let (status, body) = t.ping_caller(caller).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "reserved");
    assert!(body.get("retreaver_ping_shield").is_none(), "{body}");
}

#[tokio::test]
async fn every_accepted_caller_form_is_the_same_caller() {
    let t = TestServer::start(&basic_config()).await;
    let (_, first) = t.ping_caller("%2B18005551234").await;
    let uuid = first["uuid"].as_str().unwrap().to_owned();
    let (_, record) = t.record(&uuid).await;
    assert_eq!(record["caller_number"], "+18005551234");
    for form in [
        "+18005551234",
        "18005551234",
        "8005551234",
        "(800)%20555-1234",
        "800.555.1234",
        "1-800-555-1234",
        "%2B1%20(800)%20555-1234",
    ] {
        // A raw `+` in a query is a space: the form-decoded E.164 marker.
        let (status, body) = t.ping_caller(form).await;
        assert_eq!(status, 200, "{form}: {body}");
        assert_eq!(body["uuid"], uuid.as_str(), "{form} is another caller: {body}");
        assert_eq!(body["retreaver_ping_shield"], true);
    }
}
