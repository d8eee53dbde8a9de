//! A bare hyper server: the baseline of the load harness. It answers every
//! request with the JSON of a reservation, using the same hyper settings as
//! rtbd, and does nothing else. rtbd's throughput is measured against it.
//!
//! With `--work-ns N` it also keeps its thread busy for N nanoseconds per
//! request before answering, standing in for a handler's own work. The
//! harness's calibration (`benches/load/run.sh --calibrate`) uses it to show
//! what ratio a server reaches for a given amount of work per request on the
//! machine at hand.
//!
//! Run: `cargo run --release --example bare -- 127.0.0.1:18081 [--work-ns N]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &[u8] = br#"{"uuid":"66b905ef-bc03-420e-ad43-e8eeae03918f","status":"reserved","retreaver_payout":12.5,"retreaver_seconds":90,"inbound_number":"+18444021146","expires_at":"2024-05-29T16:16:18.246Z"}"#;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:18081".parse().map_err(std::io::Error::other)?;
    let mut work = Duration::ZERO;
    while let Some(arg) = args.next() {
        if arg == "--work-ns" {
            let ns = args.next().and_then(|n| n.parse().ok());
            work = Duration::from_nanos(ns.ok_or_else(|| std::io::Error::other("--work-ns needs a number"))?);
        } else {
            addr = arg.parse().map_err(|e| std::io::Error::other(format!("bad address {arg:?}: {e}")))?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("bare hyper listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    if !work.is_zero() {
                        busy(work);
                    }
                    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Keeps the thread busy for `work`, as a handler computing would (a sleep
/// would hand the core to someone else, which work does not).
fn busy(work: Duration) {
    let started = Instant::now();
    while started.elapsed() < work {
        std::hint::spin_loop();
    }
}
