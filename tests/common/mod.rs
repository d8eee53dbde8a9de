//! A real rtbd on 127.0.0.1:0 with a manual clock, and a real HTTP client.
#![allow(dead_code)]

use std::time::Duration;

use rtbd::clock::ManualClock;
use rtbd::config;
use rtbd::server::{Options, Server};
use serde_json::Value;

/// 2024-05-29T16:16:03.246Z: a ping now with a 15 s TTL expires at the
/// contract's example time, 16:16:18.246Z.
pub const T0: u64 = 1_716_999_363_246;
pub const KEY: &str = "1915260e-da0c-4443-a35b-8fb9d9843e42";
pub const ADMIN: &str = "admin-secret";
pub const SWITCH: &str = "switch-secret";

/// The config most tests use: one campaign, one static target, paying
/// $1.173 for 95 s.
pub fn basic_config() -> String {
    let criteria =
        "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\npayout = 1.173\nduration_secs = 95\n";
    campaign_config("", "", criteria, "[[campaigns.targets]]\nid = \"t1\"\nnumber = \"+18005550100\"\n")
}

pub struct TestServer {
    pub server: Server,
    pub clock: ManualClock,
    pub base: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(config_text: &str) -> TestServer {
        TestServer::start_at(config_text, T0).await
    }

    pub async fn start_at(config_text: &str, now_ms: u64) -> TestServer {
        TestServer::start_with(config_text, now_ms, |_| {}).await.expect("start")
    }

    /// Starts with options changed by `adjust` (a data folder, a config
    /// file to reload).
    pub async fn start_with(
        config_text: &str,
        now_ms: u64,
        adjust: impl FnOnce(&mut Options),
    ) -> std::io::Result<TestServer> {
        let routing = config::parse_with_env(config_text, "test.toml", |_| None)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let clock = ManualClock::new(now_ms);
        // No background tick: tests move the clock and tick themselves.
        let mut options = Options {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            clock: clock.clock(),
            tick: None,
            ..Options::default()
        };
        adjust(&mut options);
        let server = Server::start(routing, options).await?;
        let base = format!("http://{}", server.addr());
        let client = rtbd::webhook::client();
        Ok(TestServer { server, clock, base, client })
    }

    /// Moves the clock and runs the expiry tick at once, so tests never wait.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.server.engine().tick();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /rtbs.json?{query}`.
    pub async fn ping(&self, query: &str) -> (u16, Value) {
        let response = self.client.post(self.url(&format!("/rtbs.json?{query}"))).send().await.unwrap();
        read(response).await
    }

    /// A ping on KEY for `caller` by publisher `pub1`.
    pub async fn ping_caller(&self, caller: &str) -> (u16, Value) {
        self.ping(&format!("key={KEY}&publisher_id=pub1&caller_number={caller}")).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn confirm(&self, uuid: &str) -> (u16, Value) {
        self.send(reqwest::Method::PUT, &format!("/rtbs/{uuid}.json?key={KEY}&status=confirmed"), None, None)
            .await
    }

    pub async fn call(&self, caller: &str, inbound: &str) -> (u16, Value) {
        let path = format!("/calls?caller_number={}&inbound_number={}", enc(caller), enc(inbound));
        self.send(reqwest::Method::POST, &path, Some(SWITCH), None).await
    }

    pub async fn end(&self, uuid: &str, duration: u32) -> (u16, Value) {
        let path = format!("/calls/{uuid}/end?duration_secs={duration}");
        self.send(reqwest::Method::POST, &path, Some(SWITCH), None).await
    }

    pub async fn record(&self, uuid: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, &format!("/call_reservations/{uuid}"), Some(ADMIN), None).await
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The statuses of a record's call_flow, in order.
pub fn flow_statuses(record: &Value) -> Vec<String> {
    record["call_flow"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_owned()).collect()
}

/// A config with one campaign on KEY. The arguments are TOML fragments:
/// lines for the campaign table, lines for the RTB key table, the criteria
/// and the targets.
pub fn campaign_config(campaign_extra: &str, key_extra: &str, criteria: &str, targets: &str) -> String {
    format!(
        r#"
[server]
admin_token = "{ADMIN}"
switch_token = "{SWITCH}"

[[campaigns]]
id = "c"
tracking_numbers = ["+18444021146"]
{campaign_extra}

[[campaigns.rtb_keys]]
key = "{KEY}"
{key_extra}

{criteria}

{targets}
"#
    )
}

/// Conversion criteria paying $1 for 60 s to anyone.
pub const ANY_PAYS_ONE: &str = r#"
[[campaigns.conversion_criteria]]
publisher_id = "*"
payout = 1
duration_secs = 60
"#;

/// A target table with a distinct valid number.
pub fn target(id: &str, extra: &str) -> String {
    let n: u32 = id.bytes().map(u32::from).sum::<u32>() % 10_000;
    format!("[[campaigns.targets]]\nid = \"{id}\"\nnumber = \"+1800555{n:04}\"\n{extra}\n")
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn at(text: &str) -> u64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
}

impl TestServer {
    /// Pings for `caller` with extra query `tags`, and reads its record.
    pub async fn ping_and_record(&self, caller: &str, tags: &str) -> (Value, Value) {
        let (status, body) =
            self.ping(&format!("key={KEY}&publisher_id=pub1&caller_number={caller}{tags}")).await;
        assert_eq!(status, 200, "{body}");
        let (_, record) = self.record(body["uuid"].as_str().unwrap()).await;
        (body, record)
    }

    /// GET /stats.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, "/stats", Some(ADMIN), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The call_flow entry of `target`, the first one.
pub fn flow_entry<'a>(record: &'a Value, target: &str) -> &'a Value {
    record["call_flow"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target_id"] == target)
        .unwrap_or_else(|| panic!("no call_flow entry for {target}: {record}"))
}

// ---- buyers: real HTTP servers on 127.0.0.1 that bid, stall or fail ----

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a buyer saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How a buyer answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// This status and body, after this delay.
    Answer { status: u16, body: String, delay: Duration },
    /// A body of this many bytes (not JSON).
    Huge(usize),
    /// Accept the connection and close it without a word.
    Hang,
}

pub struct Buyer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
}

impl Buyer {
    pub async fn start(behavior: Behavior) -> Buyer {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let (hits2, seen2, open2) = (hits.clone(), seen.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                if matches!(behavior, Behavior::Hang) {
                    hits2.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                let (behavior, hits, seen, open) =
                    (behavior.clone(), hits2.clone(), seen2.clone(), open2.clone());
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (behavior, hits, seen) = (behavior.clone(), hits.clone(), seen.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                seen.lock().push(Seen {
                                    method: parts.method.to_string(),
                                    uri: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                        .collect(),
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                });
                                hits.fetch_add(1, Ordering::SeqCst);
                                let (status, bytes) = match behavior {
                                    Behavior::Answer { status, body, delay } => {
                                        tokio::time::sleep(delay).await;
                                        (status, body.into_bytes())
                                    }
                                    Behavior::Huge(n) => (200, vec![b'x'; n]),
                                    Behavior::Hang => (500, Vec::new()),
                                };
                                let mut response = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(bytes),
                                ));
                                *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Buyer { addr, hits, seen, open }
    }

    /// A buyer answering `body` with 200 at once.
    pub async fn bidding(body: &str) -> Buyer {
        Buyer::start(Behavior::Answer { status: 200, body: body.to_owned(), delay: Duration::ZERO }).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An address nothing listens on.
pub async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A webhook target bidding through `url`; `extra` lines go in its table.
pub fn webhook_target(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[[campaigns.targets]]\nid = \"{id}\"\n{extra}\n[campaigns.targets.webhook]\nurl = \"{url}\"\nmethod = \"POST\"\nbody = '{{\"caller\":\"[caller_number]\"}}'\nbid_path = \"bid\"\ntimer_path = \"duration\"\nnumber_path = \"phone\"\n"
    )
}
