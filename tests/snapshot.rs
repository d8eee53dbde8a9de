//! Snapshots: restart on the same data folder restores reservations,
//! counters and records; reservations past their time come back expired;
//! bad files are refused or fallen back from, loudly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::Method;
use rtbd::snapshot;

fn config() -> String {
    campaign_config("", "", ANY_PAYS_ONE, &target("t", "caps = { daily = 10 }\nconcurrency_cap = 5"))
        + "\n[ping_shield]\nrate_limit_per_sec = 100\nmin_claim_ratio = 0.01\n"
}

async fn start_in(dir: &Path, now_ms: u64) -> std::io::Result<TestServer> {
    let dir = dir.to_path_buf();
    TestServer::start_with(&config(), now_ms, move |o| o.data_dir = Some(dir)).await
}

#[tokio::test]
async fn a_restart_restores_reservations_calls_counters_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_in(dir.path(), T0).await.unwrap();
    // Caller 1: reserved and confirmed (counted). Caller 2: called and ended.
    // Caller 3: on a call still going.
    let one = reserve_and_confirm(&a, "8005550001").await;
    let (_, two) = a.ping_caller("8005550002").await;
    let two = two["uuid"].as_str().unwrap().to_owned();
    a.call("+18005550002", "+18444021146").await;
    a.end(&two, 120).await;
    let (_, three) = a.ping_caller("8005550003").await;
    let three = three["uuid"].as_str().unwrap().to_owned();
    a.call("+18005550003", "+18444021146").await;
    let before = a.stats().await;
    a.server.stop().await;
    assert_eq!(snapshot::list(dir.path()).unwrap().len(), 1, "the final snapshot");

    let b = start_in(dir.path(), T0 + 5_000).await.unwrap();
    assert_eq!(b.stats().await, before, "counters and tallies are back");
    // Caller 1's reservation is still live: a repeat echoes it, a call claims it.
    let (_, echo) = b.ping_caller("8005550001").await;
    assert_eq!(echo["uuid"], one.as_str());
    assert_eq!(echo["retreaver_ping_shield"], true);
    let (status, claim) = b.call("+18005550001", "+18444021146").await;
    assert_eq!((status, claim["uuid"].as_str()), (200, Some(one.as_str())));
    // Caller 3's call ends after the restart and frees its slot.
    let (status, ended) = b.end(&three, 10).await;
    assert_eq!((status, ended["converted"].as_bool()), (200, Some(false)));
    // Records are back.
    let (_, record) = b.record(&two).await;
    assert_eq!(flow_statuses(&record), ["reserved", "claimed", "ended"]);
    assert_eq!(record["converted"], true);
    let stats = b.stats().await;
    assert_eq!(stats["targets"]["t"]["caps"]["concurrency"]["filled"], 1, "caller 1's call holds the slot");
    assert_eq!(stats["targets"]["t"]["caps"]["daily"]["filled"], 3);
    // New pings get fresh uuids that do not collide with restored ones.
    let (_, fresh) = b.ping_caller("8005550009").await;
    let (_, fresh_record) = b.record(fresh["uuid"].as_str().unwrap()).await;
    assert_eq!(fresh_record["caller_number"], "+18005550009");
    let (_, still) = b.record(&one).await;
    assert_eq!(still["caller_number"], "+18005550001");
}

#[tokio::test]
async fn reservations_past_their_time_come_back_expired_with_counts_returned() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_in(dir.path(), T0).await.unwrap();
    let one = reserve_and_confirm(&a, "8005550001").await;
    assert_eq!(a.stats().await["targets"]["t"]["caps"]["daily"]["filled"], 1);
    a.server.stop().await;

    let b = start_in(dir.path(), T0 + 20_000).await.unwrap();
    let (_, record) = b.record(&one).await;
    assert_eq!(record["status"], "expired");
    assert_eq!(flow_statuses(&record), ["reserved", "confirmed", "expired"]);
    let stats = b.stats().await;
    assert_eq!(stats["targets"]["t"]["caps"]["daily"]["filled"], 0);
    assert_eq!(stats["targets"]["t"]["caps"]["concurrency"]["filled"], 0);
    assert_eq!(stats["keys"][KEY]["expired"], 1);
    let (status, body) = b.call("+18005550001", "+18444021146").await;
    assert_eq!((status, body["status"].as_str()), (404, Some("expired")));
}

#[tokio::test]
async fn a_reservation_expired_when_saved_stays_expired_on_a_clock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_in(dir.path(), T0).await.unwrap();
    let one = reserve_and_confirm(&a, "8005550001").await;
    // Past its time (15 s) when the final snapshot is taken, before any
    // tick expired it.
    a.clock.advance(Duration::from_secs(20));
    a.server.stop().await;

    // The next start's clock is 15 s behind: the reservation would still
    // have 10 s to go by it, but it had expired already.
    let b = start_in(dir.path(), T0 + 5_000).await.unwrap();
    let (status, body) = b.call("+18005550001", "+18444021146").await;
    assert_eq!((status, body["status"].as_str()), (404, Some("expired")), "{body}");
    let (_, record) = b.record(&one).await;
    assert_eq!(record["status"], "expired");
    let stats = b.stats().await;
    assert_eq!(stats["targets"]["t"]["caps"]["daily"]["filled"], 0);
    assert_eq!(stats["targets"]["t"]["caps"]["concurrency"]["filled"], 0);
}

#[tokio::test]
async fn snapshots_on_demand_and_the_two_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_in(dir.path(), T0).await.unwrap();
    t.ping_caller("8005550001").await;
    for i in 0..3 {
        t.clock.advance(Duration::from_millis(1));
        let (status, body) = t.send(Method::POST, "/admin/snapshot", Some(ADMIN), None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["bytes"].as_u64().unwrap() > 32);
        assert!(body["path"].as_str().unwrap().ends_with(&snapshot::file_name(T0 + i + 1)));
    }
    let files = snapshot::list(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with(snapshot::file_name(T0 + 3)));
    let image = snapshot::read(&files[0]).unwrap();
    assert_eq!((image.live(), image.records()), (1, 1));
    let (status, _) = t.send(Method::POST, "/admin/snapshot", None, None).await;
    assert_eq!(status, 401);
    // Without a data folder there is nothing to write.
    let plain = TestServer::start(&config()).await;
    let (status, body) = plain.send(Method::POST, "/admin/snapshot", Some(ADMIN), None).await;
    assert_eq!(status, 409, "{body}");
}

/// A folder with one good snapshot (taken at T0) holding one reservation.
async fn good_snapshot() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let a = start_in(dir.path(), T0).await.unwrap();
    let (_, one) = a.ping_caller("8005550001").await;
    a.server.stop().await;
    (dir, one["uuid"].as_str().unwrap().to_owned())
}

fn damaged(good: &[u8]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut flipped = good.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let mut future = good.to_vec();
    future[8..12].copy_from_slice(&99u32.to_le_bytes());
    let mut older = good.to_vec();
    older[8..12].copy_from_slice(&1u32.to_le_bytes());
    vec![
        ("older format", older, "format 1 is not readable by this build"),
        ("truncated", good[..good.len() - 10].to_vec(), "truncated: the header says"),
        ("flipped byte", flipped, "checksum mismatch: the file is corrupt"),
        ("empty", Vec::new(), "the file is empty"),
        ("future version", future, "written by a newer rtbd (format 99; this build reads format 3)"),
        ("not a snapshot", b"hello, world: not a snapshot at all".to_vec(), "not an rtbd snapshot"),
    ]
}

#[tokio::test]
async fn a_bad_newest_snapshot_falls_back_to_the_previous_good_one() {
    for case in 0..6 {
        let (dir, uuid) = good_snapshot().await;
        let good_path = snapshot::list(dir.path()).unwrap()[0].clone();
        let good = std::fs::read(&good_path).unwrap();
        let (name, bytes, message) = damaged(&good).swap_remove(case);
        let newer = dir.path().join(snapshot::file_name(T0 + 60_000));
        std::fs::write(&newer, &bytes).unwrap();
        let error = snapshot::read(&newer).err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(error.to_string().contains(message), "{name}: {error}");
        // The start reports it and restores the good one.
        let (path, _) = snapshot::load_newest(dir.path()).unwrap().unwrap();
        assert_eq!(path, good_path, "{name}");
        let t = start_in(dir.path(), T0 + 1_000).await.unwrap();
        let (status, record) = t.record(&uuid).await;
        assert_eq!(status, 200, "{name}: the good snapshot's record is back");
        assert_eq!(record["status"], "reserved");
        // The bad one is set aside, so the snapshots written next keep
        // the good one as the one to fall back to.
        let mut aside = newer.clone().into_os_string();
        aside.push(snapshot::BAD_SUFFIX);
        assert_eq!(std::fs::read(&aside).unwrap(), bytes, "{name}: kept for a look");
        let (status, _) = t.send(Method::POST, "/admin/snapshot", Some(ADMIN), None).await;
        assert_eq!(status, 200);
        let kept = snapshot::list(dir.path()).unwrap();
        assert_eq!(kept.len(), 2, "{name}: {kept:?}");
        assert_eq!(kept[1], good_path, "{name}: the good one is still there");
        assert!(snapshot::read(&kept[0]).is_ok(), "{name}");
    }
}

#[tokio::test]
async fn a_newest_snapshot_that_cannot_be_read_refuses_the_start() {
    // Not known to be bad, only unreadable (here a folder by its name, as
    // a permission or disk error would be): neither set aside nor passed
    // over for the older one.
    let (dir, _) = good_snapshot().await;
    let good_path = snapshot::list(dir.path()).unwrap()[0].clone();
    let newer = dir.path().join(snapshot::file_name(T0 + 60_000));
    std::fs::create_dir(&newer).unwrap();
    let error = match start_in(dir.path(), T0 + 1_000).await {
        Ok(_) => panic!("started on the older snapshot"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("cannot read the snapshot"), "{error}");
    assert!(error.contains(&newer.display().to_string()), "{error}");
    assert!(newer.is_dir(), "left where it was");
    assert_eq!(snapshot::list(dir.path()).unwrap(), vec![newer.clone(), good_path]);
}

#[tokio::test]
async fn with_no_good_snapshot_the_start_is_refused() {
    for case in 0..6 {
        let (dir, _) = good_snapshot().await;
        let good_path = snapshot::list(dir.path()).unwrap()[0].clone();
        let good = std::fs::read(&good_path).unwrap();
        let (name, bytes, message) = damaged(&good).swap_remove(case);
        std::fs::write(&good_path, &bytes).unwrap();
        let error = match start_in(dir.path(), T0).await {
            Ok(_) => panic!("{name}: started on a bad snapshot"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("no usable snapshot in"), "{name}: {error}");
        assert!(error.contains(message), "{name}: {error}");
        assert!(error.contains("Move the files aside to start empty"), "{name}: {error}");
    }
}

#[tokio::test]
async fn inspect_tells_what_a_snapshot_holds() {
    let (dir, _) = good_snapshot().await;
    let path = snapshot::list(dir.path()).unwrap()[0].clone();
    let report = snapshot::inspect(&path).unwrap();
    assert!(report.contains("format version: 3"), "{report}");
    assert!(report.contains("taken at:       2024-05-29T16:16:03.246Z"), "{report}");
    assert!(report.contains("checksum:       good"), "{report}");
    assert!(report.contains("live reservations: 1"), "{report}");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let report = snapshot::inspect(&path).unwrap_err();
    assert!(report.contains("checksum:       BAD"), "{report}");
    assert!(report.contains("unusable: checksum mismatch"), "{report}");
}

/// The same snapshot as format 2 wrote it: without the targets' time zones
/// at the end, its header saying so.
fn as_format_2(file: &[u8]) -> Vec<u8> {
    let image = snapshot::decode(file).unwrap();
    let zones = postcard::to_allocvec(&image.zones).unwrap();
    let payload = &file[32..file.len() - zones.len()];
    let mut out = Vec::new();
    out.extend_from_slice(snapshot::MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&image.created_ms.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn a_format_2_snapshot_is_still_restored() {
    let (dir, uuid) = good_snapshot().await;
    let path = snapshot::list(dir.path()).unwrap()[0].clone();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(snapshot::decode(&file).unwrap().zones.len(), 1, "format 3 keeps the target's zone");
    let old = as_format_2(&file);
    assert!(snapshot::decode(&old).unwrap().zones.is_empty());
    std::fs::write(&path, old).unwrap();
    let t = start_in(dir.path(), T0 + 1_000).await.unwrap();
    let (status, record) = t.record(&uuid).await;
    assert_eq!((status, record["status"].as_str()), (200, Some("reserved")), "{record}");
}

#[tokio::test]
async fn a_time_zone_changed_while_down_never_lets_a_cap_pass() {
    // As `tests/reload.rs` checks for a reload: hourly cap 2, one
    // reservation counted in UTC's hour, then the target is in India's
    // zone after a restart. When the first reservation expires, nothing is
    // taken back from India's hour, which never had its count.
    let config = |zone: &str| {
        campaign_config(
            "",
            "ttl_secs = 600",
            ANY_PAYS_ONE,
            &target("t", &format!("time_zone = \"{zone}\"\ncaps = {{ hourly = 2 }}")),
        )
    };
    let start = |zone: &str, now_ms: u64, dir: &Path| {
        let (text, dir) = (config(zone), dir.to_path_buf());
        async move { TestServer::start_with(&text, now_ms, move |o| o.data_dir = Some(dir)).await.unwrap() }
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start("UTC", T0, dir.path()).await;
    reserve_and_confirm(&a, "8005550001").await;
    a.server.stop().await;

    let b = start("Asia/Kolkata", T0 + 300_000, dir.path()).await;
    reserve_and_confirm(&b, "8005550002").await;
    let hourly_filled = || async { b.stats().await["targets"]["t"]["caps"]["hourly"]["filled"].clone() };
    assert_eq!(hourly_filled().await, 1);
    b.advance(Duration::from_secs(301));
    assert_eq!(hourly_filled().await, 1, "the first reservation expired without taking back a count");
    reserve_and_confirm(&b, "8005550003").await;
    let (_, body) = b.ping_caller("8005550004").await;
    assert_eq!(body["status"], "no-target", "the hour is full: {body}");
}

/// A reservation for `caller`, confirmed (counted in its target's caps): its
/// uuid.
async fn reserve_and_confirm(t: &TestServer, caller: &str) -> String {
    let (_, body) = t.ping_caller(caller).await;
    assert_eq!(body["status"], "reserved", "{body}");
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    let (status, body) = t.confirm(&uuid).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    uuid
}

#[tokio::test]
async fn with_the_clock_set_back_the_last_snapshot_is_still_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_in(dir.path(), T0 + 60_000).await.unwrap();
    let (_, one) = a.ping_caller("8005550001").await;
    assert_eq!(one["status"], "reserved", "{one}");
    a.server.stop().await;
    // Restarted with the clock a minute earlier.
    let b = start_in(dir.path(), T0).await.unwrap();
    let (_, two) = b.ping_caller("8005550002").await;
    assert_eq!(two["status"], "reserved", "{two}");
    b.server.stop().await;
    let files = snapshot::list(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    let c = start_in(dir.path(), T0 + 1_000).await.unwrap();
    for uuid in [&one["uuid"], &two["uuid"]] {
        let (status, record) = c.record(uuid.as_str().unwrap()).await;
        assert_eq!(status, 200, "the last snapshot, with both, was restored: {record}");
    }
}
