//! Hostile clients against the real server: every one gets a clear 4xx or
//! has its connection closed, the server still answers a normal ping, and
//! nothing was reserved or counted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> String {
    basic_config().replace("[server]\n", "[server]\nheader_read_timeout_ms = 300\nmax_connections = 50\n")
}

/// Sends `bytes` on a fresh connection and reads the first response (or
/// until the server closes the connection, or 3 s pass).
async fn raw(t: &TestServer, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_until(&mut stream, Duration::from_secs(3), true).await
}

/// Reads until the server closes the connection (or `within` passes).
async fn read_all(stream: &mut TcpStream, within: Duration) -> String {
    read_until(stream, within, false).await
}

async fn read_until(stream: &mut TcpStream, within: Duration, first_response: bool) -> String {
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(deadline - Instant::now(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if first_response && complete(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `bytes` hold a whole response: its head and `content-length`
/// bytes of body.
fn complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_end) = text.find("\r\n\r\n") else { return false };
    let length = text[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
        })
        .and_then(Result::ok)
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + length
}

/// The status code of the first response in `text` (0 if none).
fn status_of(text: &str) -> u16 {
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The server still works, and nothing was reserved meanwhile.
async fn unharmed(t: &TestServer) {
    let stats = t.stats().await;
    assert_eq!(stats["keys"][KEY]["reserved"], 0, "something was reserved: {stats}");
    let (status, body) = t.ping_caller("8005551234").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("reserved")), "{body}");
}

fn ping_head(body_len: usize) -> String {
    format!(
        "POST /rtbs.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

/// The server closes `stream` (with a 4xx at most) well before 2 s, and
/// is unharmed.
async fn closed_for_slowness(t: &TestServer, stream: &mut TcpStream) {
    let started = Instant::now();
    let answer = read_all(stream, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "the connection stayed open {waited:?}");
    assert!(answer.is_empty() || status_of(&answer) >= 400, "{answer}");
    unharmed(t).await;
}

#[tokio::test]
async fn slow_loris_is_closed() {
    let t = TestServer::start(&config()).await;
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    stream.write_all(b"POST /rtbs.json HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    closed_for_slowness(&t, &mut stream).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let t = TestServer::start(&config()).await;
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_all(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2), "idle for {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_dropped() {
    // The default connection cap: this is about churn, not the cap.
    let t = TestServer::start(&config().replace("max_connections = 50\n", "")).await;
    let addr = t.server.addr();
    // In batches the listen backlog can hold (a full backlog makes the
    // kernel retry a connect only after a second).
    for _ in 0..100 {
        let batch: Vec<_> =
            (0..100).map(|_| tokio::spawn(async move { TcpStream::connect(addr).await.ok() })).collect();
        for c in batch {
            assert!(c.await.unwrap().is_some(), "a connect failed");
        }
    }
    unharmed(&t).await;
}

#[tokio::test]
async fn over_max_connections_new_ones_get_503_and_old_ones_work() {
    let t = TestServer::start(&config().replace("max_connections = 50", "max_connections = 3")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(stream);
    }
    let refused = raw(&t, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(refused.ends_with(r#"{"status":"rejected","info":"too many open connections"}"#), "{refused}");
    // The open ones still serve.
    let stream = &mut open[0];
    let query = format!("/rtbs.json?key={KEY}&publisher_id=p&caller_number=8005550001");
    stream
        .write_all(format!("POST {query} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"status\":\"reserved\""), "{answer}");
    // Once one closes, a new connection is served again.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let answer = raw(&t, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        if status_of(&answer) == 200 || Instant::now() > deadline {
            assert_eq!(status_of(&answer), 200, "{answer}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let t = TestServer::start(&config()).await;
    let one = format!(
        "POST /rtbs.json?key={KEY}&publisher_id=p&caller_number=8005550001 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    );
    let two = "GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n";
    let three = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    stream.write_all(format!("{one}{two}{three}").as_bytes()).await.unwrap();
    let answer = read_all(&mut stream, Duration::from_secs(3)).await;
    let statuses: Vec<u16> = answer.split("HTTP/1.1 ").skip(1).map(|r| r[..3].parse().unwrap()).collect();
    assert_eq!(statuses, [200, 404, 200], "{answer}");
    assert!(answer.contains("\"status\":\"reserved\""));
}

#[tokio::test]
async fn truncated_bodies_and_wrong_lengths() {
    let t = TestServer::start(&config()).await;
    let body = format!("key={KEY}&publisher_id=p&caller_number=8005550001");
    // Says 200 bytes, sends fewer, then closes its side.
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    stream.write_all(format!("{}{}", ping_head(200), body).as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_all(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.is_empty() || status_of(&answer) == 400, "{answer}");
    // Says fewer bytes than it sends: the rest is a bad next request.
    let answer = raw(&t, format!("{}{}", ping_head(10), body).as_bytes()).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    // A length that is not a number.
    let answer = raw(&t, b"POST /rtbs.json HTTP/1.1\r\nhost: x\r\ncontent-length: lots\r\n\r\nkey=k").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    // A body over 16 KiB, announced: refused without reading it.
    let answer = raw(&t, ping_head(1 << 30).as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    // A chunked body over 16 KiB.
    let chunk = "x".repeat(8 * 1024);
    let chunked = format!(
        "POST /rtbs.json HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let answer = raw(&t, chunked.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    unharmed(&t).await;
}

#[tokio::test]
async fn bytes_no_ping_should_carry() {
    let t = TestServer::start(&config()).await;
    let q = format!("key={KEY}&publisher_id=p&caller_number=8005550001");
    let requests: Vec<Vec<u8>> = vec![
        // Invalid UTF-8 and percent-encoding, raw and encoded.
        format!("POST /rtbs.json?{q}&zip=%FF%FE HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .into_bytes(),
        [
            format!("POST /rtbs.json?{q}&zip=").as_bytes(),
            b"\xff\xfe",
            b" HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        ]
        .concat(),
        format!("POST /rtbs.json?{q}&zip=%Z HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").into_bytes(),
        // NUL bytes: encoded, in a form body, in a JSON string, in a header.
        format!("POST /rtbs.json?{q}&zip=%00 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").into_bytes(),
        [ping_head(q.len() + 6).as_bytes(), q.as_bytes(), b"&z=\x00\x00\x00"].concat(),
        {
            let json = format!(
                "{{\"key\":\"{KEY}\",\"publisher_id\":\"p\",\"caller_number\":\"8005550001\",\"z\":\"a\u{0}b\"}}"
            );
            [ping_head(json.len()).as_bytes(), json.as_bytes()].concat()
        },
        format!("POST /rtbs.json?{q} HTTP/1.1\r\nhost: x\r\nx-evil: a\0b\r\ncontent-length: 0\r\n\r\n")
            .into_bytes(),
        // Huge numbers in JSON.
        {
            let json = format!(
                "{{\"key\":\"{KEY}\",\"publisher_id\":\"p\",\"caller_number\":{},\"age\":1e999999}}",
                "9".repeat(40)
            );
            [ping_head(json.len()).as_bytes(), json.as_bytes()].concat()
        },
        {
            let json = format!(
                "{{\"key\":\"{KEY}\",\"publisher_id\":\"p\",\"caller_number\":\"8005550001\",\"age\":{}}}",
                "9".repeat(300)
            );
            [ping_head(json.len()).as_bytes(), json.as_bytes()].concat()
        },
        // Deep nesting, as JSON and as something else.
        {
            let json = format!("{{\"key\":\"{KEY}\",\"a\":{}", "{\"a\":".repeat(3_000));
            [ping_head(json.len()).as_bytes(), json.as_bytes()].concat()
        },
        {
            let deep = "[".repeat(10_000);
            [ping_head(deep.len()).as_bytes(), deep.as_bytes()].concat()
        },
        // 10,000 tags (in the body: too large; in a smaller body: too many).
        {
            let tags: String = (0..10_000).map(|i| format!("&t{i}=1")).collect();
            [ping_head(q.len() + tags.len()).as_bytes(), q.as_bytes(), tags.as_bytes()].concat()
        },
        {
            let tags: String = (0..1_000).map(|i| format!("&t{i}=1")).collect();
            [ping_head(q.len() + tags.len()).as_bytes(), q.as_bytes(), tags.as_bytes()].concat()
        },
        // A URL far past the limit, and too many headers.
        format!("POST /rtbs.json?{q}&pad={} HTTP/1.1\r\nhost: x\r\n\r\n", "x".repeat(40_000)).into_bytes(),
        format!(
            "POST /rtbs.json?{q} HTTP/1.1\r\nhost: x\r\n{}content-length: 0\r\n\r\n",
            "x-h: 1\r\n".repeat(200)
        )
        .into_bytes(),
        // Not HTTP at all.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello tls".to_vec(),
        b"GARBAGE / HTTP/9.9\r\n\r\n".to_vec(),
    ];
    for (i, request) in requests.iter().enumerate() {
        let answer = raw(&t, request).await;
        let status = status_of(&answer);
        assert!(answer.is_empty() || (400..500).contains(&status), "request {i}: {answer}");
        if status == 400 && answer.contains("application/json") {
            assert!(answer.contains("\"status\":\"rejected\""), "request {i}: {answer}");
        }
    }
    unharmed(&t).await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_closed() {
    let t = TestServer::start(&config()).await;
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    let body = format!("key={KEY}&publisher_id=pub1&caller_number=8005550123&caller_zip=10001");
    stream.write_all(ping_head(body.len()).as_bytes()).await.unwrap();
    // A few bytes of the body, then nothing: the request never completes.
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    closed_for_slowness(&t, &mut stream).await;
}

/// The deadline is the client's: a buyer slower than it does not cut the
/// ping's connection, and the connection's time starts again after the
/// answer.
#[tokio::test]
async fn an_auction_longer_than_the_deadline_keeps_its_connection() {
    let buyer = Buyer::start(Behavior::Answer {
        status: 200,
        body: r#"{"bid":5,"duration":60,"phone":"+18005550105"}"#.to_owned(),
        delay: Duration::from_millis(900),
    })
    .await;
    let criteria = "[[campaigns.conversion_criteria]]\npublisher_id = \"*\"\ntarget_ids = [\"slow\"]\npayout_percent = 70\npayout_tag = \"retreaver_rtb_slow_bid\"\nduration_tag = \"retreaver_rtb_slow_timer\"\n";
    let text =
        campaign_config("", "timeout_ms = 3000", criteria, &webhook_target("slow", &buyer.url("/"), ""))
            .replace("[server]\n", "[server]\nheader_read_timeout_ms = 300\n");
    let t = TestServer::start(&text).await;
    let mut stream = TcpStream::connect(t.server.addr()).await.unwrap();
    let head = format!(
        "POST /rtbs.json?key={KEY}&publisher_id=pub1&caller_number=8005550123 HTTP/1.1\r\nhost: x\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until(&mut stream, Duration::from_secs(5), true).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\"reserved\""), "{answer}");
    // Then the connection idles: closed after the deadline.
    let started = Instant::now();
    let rest = read_all(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest}");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(250) && idle < Duration::from_secs(2), "closed after {idle:?}");
}
