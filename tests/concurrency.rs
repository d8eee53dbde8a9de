//! Many pings at once: distinct callers each get their own reservation, and
//! one caller never gets two.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_distinct_callers_at_once() {
    let t = Arc::new(TestServer::start(&basic_config()).await);
    let mut tasks = Vec::new();
    for i in 0..1_000u32 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move { t.ping_caller(&format!("800{:07}", 3_000_000 + i)).await }));
    }
    let mut uuids = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "reserved");
        assert!(body.get("retreaver_ping_shield").is_none());
        assert!(uuids.insert(body["uuid"].as_str().unwrap().to_owned()), "duplicate uuid");
    }
    assert_eq!(uuids.len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_caller_pinged_at_once_gets_one_reservation() {
    let t = Arc::new(TestServer::start(&basic_config()).await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move { t.ping_caller("8005551234").await }));
    }
    let mut uuids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["status"], "reserved");
        if body.get("retreaver_ping_shield").is_none() {
            fresh += 1;
        }
        uuids.insert(body["uuid"].as_str().unwrap().to_owned());
    }
    assert_eq!(fresh, 1, "exactly one ping reserved; the others were echoes");
    assert_eq!(uuids.len(), 1);
}
