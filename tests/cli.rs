//! The `rtbd` binary: check-config, and serve printing a curl that works.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_rtbd");

#[test]
fn check_config_accepts_the_example() {
    let out = Command::new(BIN).args(["check-config", "config/rtbd.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config/rtbd.toml: ok: 2 campaigns"), "{stdout}");
}

#[test]
fn check_config_reports_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nmax_records = 0\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3:15: server.max_records: must be between 1 and 100000000"),
        "{stderr}"
    );
    let out = Command::new(BIN).args(["check-config", "/nonexistent/rtbd.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn serve_prints_a_curl_that_gets_a_reservation() {
    // Run where no config/rtbd.toml exists, so the built-in demo is used.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("(config: built-in demo)"), "{banner}");
    let curl = loop {
        let line = lines.next().unwrap().unwrap();
        if line.trim_start().starts_with("curl") {
            break line;
        }
    };
    let url = curl.split('\'').nth(1).unwrap().to_owned();
    let response = rtbd::webhook::client().post(&url).send().await.unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body["status"], "reserved", "{body}");
}
