//! GET /metrics: Prometheus text whose counters match what was sent.

mod common;

use common::*;

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test]
async fn metrics_parse_and_count_what_happened() {
    let buyer =
        Buyer::start(Behavior::Answer { status: 500, body: String::new(), delay: std::time::Duration::ZERO })
            .await;
    let targets =
        [target("t", "paused = false"), webhook_target("hook", &buyer.url("/"), "priority = 9")].concat();
    let config =
        campaign_config("", "", ANY_PAYS_ONE, &targets) + "\n[[campaigns.rtb_keys]]\nkey = \"paused-key\"\n";
    let t = TestServer::start(&config).await;
    for i in 0..5 {
        t.ping_caller(&format!("800555{i:04}")).await;
    }
    t.ping_caller("8005550000").await; // an echo
    t.ping("key=nope&publisher_id=p&caller_number=8005550000").await; // 404
    t.ping(&format!("key={KEY}&caller_number=8005550000")).await; // 400
    let (_, reserved) = t.ping_caller("8005559999").await;
    t.confirm(reserved["uuid"].as_str().unwrap()).await;
    // 405 and 414, answered before any handler.
    let (status, _) = t.send(reqwest::Method::GET, "/rtbs.json", None, None).await;
    assert_eq!(status, 405);
    let (status, _) = t.ping(&format!("key={KEY}&pad={}", "x".repeat(9_000))).await;
    assert_eq!(status, 414);
    // Answered after work off the request thread: a reload with no file
    // to read (422), a snapshot with no data folder (409).
    let (status, _) = t.send(reqwest::Method::POST, "/admin/reload", Some(ADMIN), None).await;
    assert_eq!(status, 422);
    let (status, _) = t.send(reqwest::Method::POST, "/admin/snapshot", Some(ADMIN), None).await;
    assert_eq!(status, 409);

    let response = t.client.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    assert_eq!(value(&scrape, "rtbd_pings_total", &[("key", KEY), ("status", "reserved")]), 6.0);
    assert_eq!(
        value(
            &scrape,
            "rtbd_pings_total",
            &[("key", KEY), ("status", "ping_shield_postback_key_caller_number_already_reserved")]
        ),
        1.0
    );
    assert_eq!(value(&scrape, "rtbd_pings_total", &[("key", "paused-key"), ("status", "reserved")]), 0.0);
    assert_eq!(value(&scrape, "rtbd_reservations_total", &[("key", KEY), ("step", "confirmed")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "404")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "400")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "405")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "414")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "422")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_bad_requests_total", &[("code", "409")]), 1.0);
    assert_eq!(value(&scrape, "rtbd_live_reservations", &[]), 6.0);
    assert_eq!(value(&scrape, "rtbd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(value(&scrape, "rtbd_config_version", &[]), 1.0);
    // Every routed ping asked the failing buyer.
    assert_eq!(
        value(&scrape, "rtbd_webhook_errors_total", &[("target", "hook"), ("kind", "http_status")]),
        6.0
    );
    let histogram = scrape.samples.iter().find(|s| s.metric == "rtbd_ping_duration_seconds").unwrap();
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 7.0, "7 pings routed or echoed");
        }
        other => panic!("{other:?}"),
    }
}
