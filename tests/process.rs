//! The real `rtbd` binary under signals: SIGHUP reloads, SIGTERM finishes
//! requests in flight and writes a final snapshot, `kill -9` under load
//! leaves no corrupt file and loses nothing the last snapshot held.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rtbd::snapshot;

const BIN: &str = env!("CARGO_BIN_EXE_rtbd");

struct Rtbd {
    child: Child,
    base: String,
}

impl Rtbd {
    fn start(config: &Path, data: &Path) -> Rtbd {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = lines.next().unwrap().unwrap();
        let base = banner.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
        // Keep reading what it prints, as a terminal would.
        std::thread::spawn(move || for _ in lines {});
        Rtbd { child, base }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill failed");
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Rtbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("rtbd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = rtbd::webhook::client().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request.send().await.unwrap()).await
}

async fn ping(base: &str, caller: &str) -> (u16, serde_json::Value) {
    let url = format!("{base}/rtbs.json?key={KEY}&publisher_id=p&caller_number={caller}");
    read(rtbd::webhook::client().post(url).send().await.unwrap()).await
}

/// A ping whose failure (the server was killed) is fine.
async fn try_ping(client: &reqwest::Client, base: &str, caller: &str) {
    let url = format!("{base}/rtbs.json?key={KEY}&publisher_id=p&caller_number={caller}");
    if let Ok(response) = client.post(url).send().await {
        let _ = response.bytes().await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &basic_config());
    let rtbd = Rtbd::start(&config, &dir.path().join("data"));
    let (_, status) = get(&rtbd.base, "/admin/config", Some(ADMIN)).await;
    assert_eq!(status["version"], 1);
    rtbd.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut version = 1;
    while version < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        version = get(&rtbd.base, "/admin/config", Some(ADMIN)).await.1["version"].as_u64().unwrap();
    }
    assert_eq!(version, 2);
}

#[tokio::test]
async fn sigterm_lets_requests_finish_and_writes_a_final_snapshot() {
    let buyer = Buyer::start(Behavior::Answer {
        status: 200,
        body: r#"{"bid":5,"duration":60,"phone":"+18005550100"}"#.to_owned(),
        delay: Duration::from_millis(600),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = campaign_config("", "ttl_secs = 600", ANY_PAYS_ONE, &webhook_target("b", &buyer.url("/"), ""))
        .replace("[server]", "[server]\nsnapshot_interval_secs = 0");
    let config = write_config(dir.path(), &text);
    let mut rtbd = Rtbd::start(&config, &data);
    let base = rtbd.base.clone();
    let in_flight = tokio::spawn(async move { ping(&base, "8005551234").await });
    while buyer.hits() == 0 {
        tokio::task::yield_now().await;
    }
    rtbd.signal(libc::SIGTERM);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "reserved", "the request in flight completed: {body}");
    assert_eq!(rtbd.wait(), Some(0), "exit 0");
    let files = snapshot::list(&data).unwrap();
    assert_eq!(files.len(), 1, "the final snapshot");
    let image = snapshot::read(&files[0]).unwrap();
    assert_eq!(image.live(), 1, "it holds the reservation made during shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_the_last_snapshot_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = campaign_config("", "ttl_secs = 3600", ANY_PAYS_ONE, &target("t", ""))
        .replace("[server]", "[server]\nsnapshot_interval_secs = 1");
    let config = write_config(dir.path(), &text);
    let mut rtbd = Rtbd::start(&config, &data);
    let running = Arc::new(AtomicBool::new(true));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (base, running) = (rtbd.base.clone(), running.clone());
            tokio::spawn(async move {
                let client = rtbd::webhook::client();
                let mut i = 0u32;
                while running.load(Ordering::Relaxed) {
                    try_ping(&client, &base, &format!("800{w}{i:06}")).await;
                    i += 1;
                }
            })
        })
        .collect();
    // Let at least two periodic snapshots happen under load, then kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    while snapshot::list(&data).unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rtbd.signal(libc::SIGKILL);
    rtbd.wait();
    running.store(false, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }

    let files = snapshot::list(&data).unwrap();
    assert!(!files.is_empty(), "no snapshot was written");
    for file in &files {
        snapshot::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let image = snapshot::read(&files[0]).unwrap();
    assert!(image.live() > 0, "the load made reservations");
    let held: Vec<String> = image
        .shards
        .iter()
        .flat_map(|s| &s.records)
        .map(|(uuid, _)| uuid::Uuid::from_u128(*uuid).to_string())
        .collect();

    let restarted = Rtbd::start(&config, &data);
    for uuid in held.iter().step_by((held.len() / 50).max(1)) {
        let (status, record) = get(&restarted.base, &format!("/call_reservations/{uuid}"), Some(ADMIN)).await;
        assert_eq!(status, 200, "{uuid} was lost");
        assert_eq!(record["status"], "reserved");
    }
}
