//! HTTP: the accept loop, request limits, and dispatch by method and path.
//!
//! One hyper 1.x HTTP/1.1 connection per accepted socket, served by a
//! [`Handler`]. A request without a body (the common ping: everything in the
//! query string) is answered synchronously inside `call`, with no boxed
//! future and no reference count touched; a request with a body reads it
//! under the 16 KiB limit first.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::engine::{self, Auction, Confirming, Engine, Pinged};
use crate::error::Rejection;
use crate::idle::{Idle, Watch};
use crate::metrics;
use crate::params::{self, Params};
use crate::reply::{self, Body};

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 * 1024;
/// Longest accepted path and query.
pub const MAX_URI: usize = 8 * 1024;
/// Largest request head (request line and headers) the HTTP layer reads;
/// past it, it answers 431 itself. Well above [`MAX_URI`], so a URL
/// between the two gets rtbd's own 414.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The answer to a connection over `max_connections`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 56\r\nconnection: close\r\n\r\n{\"status\":\"rejected\",\"info\":\"too many open connections\"}";

/// Serves `engine` on `listener` until `shutdown` completes, then stops
/// accepting and lets open requests finish (up to [`SHUTDOWN_GRACE`]).
///
/// A client must send each request (head and body) within
/// `header_read_timeout_ms` of connecting or of its previous answer, else
/// its connection is closed (see `idle`): slow-loris connections and idle
/// keep-alive connections go that way. Past `max_connections` open
/// connections, a new one is answered 503 and closed; the open ones are
/// not affected.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, shutdown: impl Future<Output = ()>) {
    let (head_timeout, max_connections) = {
        let routing = engine.routing();
        (Duration::from_millis(routing.server.header_read_timeout_ms), routing.server.max_connections)
    };
    let mut builder = http1::Builder::new();
    builder
        // No timer per request: `idle` keeps the deadline.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let idle = Idle::start(head_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                        });
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (watch, registered) = idle.watch();
                    let id = registered.id();
                    let handler = Handler { engine: engine.clone(), watch: Some(watch) };
                    let conn = builder.serve_connection(TokioIo::new(stream), handler);
                    let conn = graceful.watch(conn);
                    let task = tokio::spawn(async move {
                        // Both are let go however the task ends, aborted
                        // by the sweeper included.
                        let _registered = registered;
                        let _slot = slot;
                        let _ = conn.await;
                    });
                    idle.closes_with(id, task.abort_handle());
                }
                Err(e) => {
                    // Out of file descriptors or a reset during the handshake:
                    // wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("shutdown: requests still open after {SHUTDOWN_GRACE:?}, closing them");
            idle.close_all();
        }
    }
}

/// Serves the requests of one connection.
#[derive(Clone)]
pub struct Handler {
    engine: Arc<Engine>,
    /// The connection's deadline mark (none when served outside `serve`).
    watch: Option<Arc<Watch>>,
}

impl Handler {
    pub fn new(engine: Arc<Engine>) -> Handler {
        Handler { engine, watch: None }
    }

    fn busy(&self) {
        if let Some(watch) = &self.watch {
            watch.busy();
        }
    }

    fn waiting(&self) {
        if let Some(watch) = &self.watch {
            watch.waiting();
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Reply;

    fn call(&self, req: Request<Incoming>) -> Reply {
        // The client's deadline stops while rtbd works on its request (a
        // body still to come is the client's to send in time), and starts
        // again once the answer is ready.
        if req.body().is_end_stream() {
            let (parts, _) = req.into_parts();
            // Some answers take a while (a reload, the stats).
            self.busy();
            return match respond(&self.engine, &parts, &[]) {
                Handled::Response(response) => {
                    self.waiting();
                    Reply::Ready(Some(response))
                }
                later => {
                    let this = self.clone();
                    Reply::Pending(Box::pin(async move {
                        let response = finish(&this.engine, later).await;
                        this.waiting();
                        Ok(response)
                    }))
                }
            };
        }
        if let Some(len) = content_length(req.headers())
            && len > MAX_BODY as u64
        {
            self.engine.metrics().bad_request(413);
            self.waiting();
            return Reply::Ready(Some(too_large()));
        }
        let this = self.clone();
        Reply::Pending(Box::pin(async move {
            let engine = &this.engine;
            let (parts, body) = req.into_parts();
            let response = match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => {
                    let body: Bytes = collected.to_bytes();
                    this.busy();
                    finish(engine, respond(engine, &parts, &body)).await
                }
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    engine.metrics().bad_request(413);
                    too_large()
                }
                Err(_) => {
                    engine.metrics().bad_request(400);
                    reply::rejection(&Rejection::bad_request("could not read the request body"))
                }
            };
            this.waiting();
            Ok(response)
        }))
    }
}

/// Finishes what could not be answered at once.
async fn finish(engine: &Arc<Engine>, handled: Handled) -> Response<Body> {
    let response = match handled {
        // Counted by `respond`.
        Handled::Response(response) => return response,
        Handled::Auction(auction, started) => settle(engine, auction, started).await,
        Handled::Reload => {
            let reloader = engine.clone();
            match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(_)) => reply::value(200, &engine.config_status()),
                Ok(Err(error)) => {
                    let mut status = engine.config_status();
                    status["error"] = serde_json::Value::from(error);
                    reply::value(422, &status)
                }
                Err(_) => internal_error(),
            }
        }
        Handled::Snapshot => {
            let writer = engine.clone();
            match tokio::task::spawn_blocking(move || writer.snapshot()).await {
                Ok(Ok(written)) => reply::value(
                    200,
                    &serde_json::json!({
                        "path": written.path.display().to_string(),
                        "bytes": written.bytes,
                        "duration_ms": written.duration.as_secs_f64() * 1000.0,
                    }),
                ),
                Ok(Err(e)) if engine.data_dir().is_none() => {
                    reply::rejection(&Rejection::new(409, e.to_string()))
                }
                Ok(Err(e)) => reply::rejection(
                    &Rejection::new(500, format!("snapshot failed: {e}")).with_status("error"),
                ),
                Err(_) => internal_error(),
            }
        }
    };
    count_error(engine, &response);
    response
}

/// Asks the buyers of a ping and answers it. A panic answers 500.
async fn settle(engine: &Engine, auction: Box<Auction>, started: Instant) -> Response<Body> {
    let sip_domain = auction.routing().server.sip_domain.clone();
    match AssertUnwindSafe(engine.settle(auction)).catch_unwind().await {
        Ok(answer) => {
            let response = reply::answer(&answer, sip_domain.as_deref());
            engine.metrics().ping_latency.observe(started.elapsed());
            response
        }
        Err(_) => {
            tracing::error!("ping settlement panicked");
            internal_error()
        }
    }
}

/// The future of one request: ready at once, or reading a body, or waiting
/// on buyers.
pub enum Reply {
    Ready(Option<Response<Body>>),
    Pending(Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>),
}

impl Future for Reply {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Reply::Ready(response) => Poll::Ready(Ok(response.take().unwrap_or_else(internal_error))),
            Reply::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn too_large() -> Response<Body> {
    reply::rejection(&Rejection::new(413, format!("the body is over {MAX_BODY} bytes")))
}

fn internal_error() -> Response<Body> {
    reply::rejection(&Rejection::new(500, "internal error").with_status("error"))
}

/// What answering a request comes to: a response now, or a ping whose
/// buyers must be asked first.
pub enum Handled {
    Response(Response<Body>),
    /// The ping, and when it came in.
    Auction(Box<Auction>, Instant),
    /// Write a snapshot (blocking work, off the request threads).
    Snapshot,
    /// Reload the config file (reading and checking a large file is
    /// blocking work too).
    Reload,
}

/// Answers one request. A panic below here is a bug; it answers 500 and the
/// server goes on.
pub fn respond(engine: &Engine, parts: &hyper::http::request::Parts, body: &[u8]) -> Handled {
    let handled = contain(parts, || dispatch(engine, parts, body));
    if let Handled::Response(response) = &handled {
        count_error(engine, response);
    }
    handled
}

/// Counts an answer of 4xx (see `metrics::BAD_REQUEST_CODES`).
fn count_error(engine: &Engine, response: &Response<Body>) {
    if response.status().is_client_error() {
        engine.metrics().bad_request(response.status().as_u16());
    }
}

/// Runs a handler; a panic becomes a 500 answer (and a log line) instead of
/// a dropped connection. Why not abort: one bad request must not take the
/// server down (the release profile keeps `panic = "unwind"` for this).
fn contain(parts: &hyper::http::request::Parts, handler: impl FnOnce() -> Handled) -> Handled {
    std::panic::catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|_| {
        tracing::error!(method = %parts.method, path = parts.uri.path(), "request handler panicked");
        Handled::Response(internal_error())
    })
}

fn dispatch(engine: &Engine, parts: &hyper::http::request::Parts, body: &[u8]) -> Handled {
    let uri = &parts.uri;
    if uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URI {
        let r = Rejection::new(414, format!("the URL is over {MAX_URI} bytes"));
        return Handled::Response(reply::rejection(&r));
    }
    let input = Input { query: uri.query(), body, json: !body.is_empty() && sent_as_json(&parts.headers) };
    let method = &parts.method;
    let path = uri.path();
    let result = match split(path) {
        ("/rtbs.json", None) => match *method {
            Method::POST => match ping(engine, &input) {
                Ok(handled) => return handled,
                Err(r) => Err(r),
            },
            _ => return Handled::Response(not_allowed("POST")),
        },
        ("/rtbs", Some(rest)) if rest.ends_with(".json") => match *method {
            Method::PUT | Method::PATCH => confirm(engine, &rest[..rest.len() - 5], &input),
            _ => return Handled::Response(not_allowed("PUT, PATCH")),
        },
        ("/calls", None) => match *method {
            Method::POST => {
                authorized(engine, &parts.headers, Token::Switch).and_then(|()| claim(engine, &input))
            }
            _ => return Handled::Response(not_allowed("POST")),
        },
        ("/calls", Some(rest)) if rest.ends_with("/end") => match *method {
            Method::POST => authorized(engine, &parts.headers, Token::Switch)
                .and_then(|()| end(engine, &rest[..rest.len() - 4], &input)),
            _ => return Handled::Response(not_allowed("POST")),
        },
        ("/call_reservations", Some(id)) => match *method {
            Method::GET => authorized(engine, &parts.headers, Token::Admin).and_then(|()| record(engine, id)),
            _ => return Handled::Response(not_allowed("GET")),
        },
        ("/stats", None) => match *method {
            Method::GET => {
                authorized(engine, &parts.headers, Token::Admin).map(|()| reply::value(200, &engine.stats()))
            }
            _ => return Handled::Response(not_allowed("GET")),
        },
        ("/metrics", None) => match *method {
            Method::GET => return Handled::Response(text(metrics::render(engine))),
            _ => return Handled::Response(not_allowed("GET")),
        },
        ("/admin", Some("config")) => match *method {
            Method::GET => authorized(engine, &parts.headers, Token::Admin)
                .map(|()| reply::value(200, &engine.config_status())),
            _ => return Handled::Response(not_allowed("GET")),
        },
        ("/admin", Some("reload")) => match *method {
            Method::POST => match authorized(engine, &parts.headers, Token::Admin) {
                Ok(()) => return Handled::Reload,
                Err(r) => Err(r),
            },
            _ => return Handled::Response(not_allowed("POST")),
        },
        ("/admin", Some("snapshot")) => match *method {
            Method::POST => match authorized(engine, &parts.headers, Token::Admin) {
                Ok(()) => return Handled::Snapshot,
                Err(r) => Err(r),
            },
            _ => return Handled::Response(not_allowed("POST")),
        },
        ("/healthz", None) => match *method {
            Method::GET | Method::HEAD => return Handled::Response(health()),
            _ => return Handled::Response(not_allowed("GET")),
        },
        _ => Err(Rejection::not_found(format!("no such path: {}", params::truncate(path, 200)))),
    };
    Handled::Response(result.unwrap_or_else(|r| reply::rejection(&r)))
}

/// What a request says beyond its method and path.
struct Input<'a> {
    query: Option<&'a str>,
    body: &'a [u8],
    /// The body was sent as JSON.
    json: bool,
}

impl<'a> Input<'a> {
    /// The parameters of the query and the body. A body sent as JSON must
    /// be an object; checked here, by the handlers that read it, so a bad
    /// body on an unknown path is still a 404 and without a token a 401.
    fn params(&self) -> Result<Params<'a>, Rejection> {
        if self.json {
            params::check_json_body(self.body)?;
        }
        Params::parse(self.query, self.body)
    }
}

/// True if the request says its body is JSON (`application/json`, or a
/// `+json` type).
fn sent_as_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Compared without case and without a copy: a ping may carry a body.
    let media = value.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = media.split_once('/').unwrap_or_default();
    let suffix = subtype.len().checked_sub(5).and_then(|i| subtype.get(i..)).unwrap_or_default();
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || suffix.eq_ignore_ascii_case("+json"))
}

/// Splits `/calls/123/end` into (`/calls`, Some(`123/end`)).
fn split(path: &str) -> (&str, Option<&str>) {
    match path.get(1..).and_then(|p| p.find('/')) {
        Some(i) => (&path[..=i], Some(&path[i + 2..])),
        None => (path, None),
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response =
        reply::rejection(&Rejection::new(405, format!("method not allowed here: use {allow}")));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// A plain-text response (the Prometheus format).
fn text(body: String) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn health() -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from_static(b"ok")));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[derive(Clone, Copy)]
enum Token {
    Admin,
    Switch,
}

/// Checks the bearer token in constant time.
fn authorized(engine: &Engine, headers: &HeaderMap, token: Token) -> Result<(), Rejection> {
    let routing = engine.routing();
    let expected = match token {
        Token::Admin => routing.server.admin_token.as_deref(),
        Token::Switch => routing.server.switch_token.as_deref(),
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match (expected, given) {
        (Some(expected), Some(given))
            if constant_time_eq::constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(Rejection::unauthorized()),
    }
}

/// `POST /rtbs.json`: the hot path.
fn ping(engine: &Engine, input: &Input<'_>) -> Result<Handled, Rejection> {
    let started = Instant::now();
    let params = input.params()?;
    let routing = engine.routing();
    Ok(match engine.ping(&routing, &params)? {
        Pinged::Done(answer) => {
            let response = reply::answer(&answer, routing.server.sip_domain.as_deref());
            engine.metrics().ping_latency.observe(started.elapsed());
            Handled::Response(response)
        }
        Pinged::Bidding(auction) => Handled::Auction(auction, started),
    })
}

/// `PUT|PATCH /rtbs/{uuid}.json`.
fn confirm(engine: &Engine, id: &str, input: &Input<'_>) -> Result<Response<Body>, Rejection> {
    let params = input.params()?;
    let uuid = engine::parse_uuid(id)?;
    let key = params
        .get("key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Rejection::bad_request("FAILED must include key (string)"))?;
    if let Some(status) = params.get("status").filter(|s| *s != "confirmed") {
        return Err(Rejection::bad_request(format!(
            "status {status:?} is not understood: only status=confirmed is"
        )));
    }
    let routing = engine.routing();
    let answer = engine.confirm(&routing, key, Confirming::Uuid(uuid))?;
    Ok(reply::answer(&answer, routing.server.sip_domain.as_deref()))
}

/// `POST /calls`.
fn claim(engine: &Engine, input: &Input<'_>) -> Result<Response<Body>, Rejection> {
    let params = input.params()?;
    let caller = engine::number_param(&params, "caller_number")?;
    let inbound = engine::number_param(&params, "inbound_number")?;
    engine.claim(caller, inbound).map(|c| reply::call(&c))
}

/// `POST /calls/{uuid}/end`.
fn end(engine: &Engine, id: &str, input: &Input<'_>) -> Result<Response<Body>, Rejection> {
    let params = input.params()?;
    let uuid = engine::parse_uuid(id)?;
    let text = params
        .get("duration_secs")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Rejection::bad_request("FAILED must include duration_secs (integer)"))?;
    let duration = parse_duration(text).ok_or_else(|| {
        Rejection::bad_request(format!("duration_secs {text:?} is not a number of seconds"))
    })?;
    engine.end(uuid, duration).map(|e| reply::ended(&e))
}

/// A call's length in seconds: a whole number, or a decimal (`130.0`, a
/// JSON number such as `1.3e2`) whose fraction is dropped. Not
/// `pricing::parse_seconds`: that one rounds to thousandths (119.9996
/// would reach 120 and convert) and stops at a million seconds.
fn parse_duration(text: &str) -> Option<u32> {
    let text = text.trim();
    text.parse::<u32>().ok().or_else(|| {
        let secs = text.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)?;
        Some(secs.min(f64::from(u32::MAX)) as u32)
    })
}

/// `GET /call_reservations/{uuid}`.
fn record(engine: &Engine, id: &str) -> Result<Response<Body>, Rejection> {
    let uuid = engine::parse_uuid(id)?;
    let record = engine
        .record(uuid)
        .ok_or_else(|| Rejection::not_found("no record with this uuid (never made, or past retention)"))?;
    Ok(reply::value(200, &record))
}

#[cfg(test)]
mod tests {
    use super::{Handled, contain, split};

    #[test]
    fn a_panicking_handler_answers_500() {
        let (parts, _) = hyper::Request::post("/rtbs.json").body(()).unwrap().into_parts();
        let handled = contain(&parts, || panic!("a bug"));
        let Handled::Response(response) = handled else { panic!("not a response") };
        assert_eq!(response.status(), 500);
        // And the next request is served as usual.
        let ok = contain(&parts, || Handled::Response(super::health()));
        assert!(matches!(ok, Handled::Response(r) if r.status() == 200));
    }

    #[test]
    fn a_duration_is_whole_seconds_or_a_decimal_cut_down() {
        use super::parse_duration;
        assert_eq!(parse_duration("130"), Some(130));
        assert_eq!(parse_duration(" 130.9 "), Some(130));
        assert_eq!(parse_duration("1.3e2"), Some(130));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("99999999999"), Some(u32::MAX));
        for bad in ["", "-3", "-0.5", "abc", "NaN", "inf", "1e999", "12s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_split_at_the_second_slash() {
        assert_eq!(split("/rtbs.json"), ("/rtbs.json", None));
        assert_eq!(split("/rtbs/abc.json"), ("/rtbs", Some("abc.json")));
        assert_eq!(split("/calls/abc/end"), ("/calls", Some("abc/end")));
        assert_eq!(split("/calls"), ("/calls", None));
        assert_eq!(split("/"), ("/", None));
        assert_eq!(split(""), ("", None));
    }
}
