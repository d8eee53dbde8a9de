//! Business hours in a target's own time zone, across DST changes and
//! overnight shifts, with a manual clock.

mod common;

use common::*;

async fn open_at(hours_and_zone: &str, utc: &str) -> bool {
    let config = campaign_config("", "", ANY_PAYS_ONE, &target("shop", hours_and_zone));
    let t = TestServer::start_at(&config, at(utc)).await;
    let (body, record) = t.ping_and_record("8005550001", "").await;
    match body["status"].as_str() {
        Some("reserved") => true,
        Some("no-target") => {
            assert_eq!(body["reason"], "targets_closed", "{body}");
            assert_eq!(flow_entry(&record, "shop")["status"], "targets_closed");
            false
        }
        other => panic!("unexpected {other:?}: {body}"),
    }
}

#[tokio::test]
async fn spring_forward_in_new_york() {
    // 2026-03-08 (a Sunday): 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    let hours = "time_zone = \"America/New_York\"\nbusiness_hours = [ { day_of_week = 0, time_open = 100, time_close = 330 } ]";
    assert!(!open_at(hours, "2026-03-08T05:59:00Z").await, "00:59 EST");
    assert!(open_at(hours, "2026-03-08T06:00:00Z").await, "01:00 EST");
    assert!(open_at(hours, "2026-03-08T06:59:00Z").await, "01:59 EST");
    assert!(open_at(hours, "2026-03-08T07:00:00Z").await, "03:00 EDT");
    assert!(open_at(hours, "2026-03-08T07:29:00Z").await, "03:29 EDT");
    // A fixed -05:00 would still call this 02:30 and open.
    assert!(!open_at(hours, "2026-03-08T07:30:00Z").await, "03:30 EDT");
}

#[tokio::test]
async fn fall_back_in_new_york() {
    // 2026-11-01 (a Sunday): 02:00 EDT becomes 01:00 EST at 06:00 UTC, so
    // 01:00–02:00 happens twice.
    let hours = "time_zone = \"America/New_York\"\nbusiness_hours = [ { day_of_week = 0, time_open = 0, time_close = 130 } ]";
    assert!(open_at(hours, "2026-11-01T05:20:00Z").await, "01:20 EDT");
    assert!(!open_at(hours, "2026-11-01T05:40:00Z").await, "01:40 EDT");
    // A fixed -04:00 would call this 02:20 and close.
    assert!(open_at(hours, "2026-11-01T06:20:00Z").await, "01:20 EST");
    assert!(!open_at(hours, "2026-11-01T06:30:00Z").await, "01:30 EST");
}

#[tokio::test]
async fn overnight_inverted_shift() {
    // Friday 22:00 to Saturday 06:00, Pacific time (PST, UTC-8, in January).
    let hours = "time_zone = \"America/Los_Angeles\"\nbusiness_hours = [ { day_of_week = 5, time_open = \"22:00\", time_close = \"0600\", inverted = true } ]";
    // 2026-01-09 is a Friday.
    assert!(!open_at(hours, "2026-01-10T05:59:00Z").await, "Fri 21:59");
    assert!(open_at(hours, "2026-01-10T06:00:00Z").await, "Fri 22:00");
    assert!(open_at(hours, "2026-01-10T13:59:00Z").await, "Sat 05:59");
    assert!(!open_at(hours, "2026-01-10T14:00:00Z").await, "Sat 06:00");
    assert!(!open_at(hours, "2026-01-09T11:00:00Z").await, "Fri 03:00 belongs to Thursday's night");
}

#[tokio::test]
async fn no_hours_is_open_around_the_clock_and_work_day_false_closes() {
    assert!(open_at("time_zone = \"Asia/Kolkata\"", "2026-01-04T21:47:00Z").await);
    let closed_sunday = "business_hours = [ { day_of_week = 0, work_day = false }, { day_of_week = 1 } ]";
    assert!(!open_at(closed_sunday, "2026-01-04T12:00:00Z").await, "Sunday");
    assert!(open_at(closed_sunday, "2026-01-05T12:00:00Z").await, "Monday, all day by default");
    assert!(!open_at(closed_sunday, "2026-01-06T12:00:00Z").await, "Tuesday: not listed");
}
