//! Passthrough bidding webhooks: ask dynamic buyers for a live bid.
//!
//! A target with a `webhook` is asked on every ping that reaches it. Its URL
//! and body are templates compiled once per config load; the answer is JSON
//! read with simd-json, and three dot paths (`bidTerms.0.callMinDuration`)
//! pick the bid, the timer and the transfer number out of it. Every call,
//! whatever came of it, becomes a [`Pixel`] in the ping's record.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use simd_json::prelude::*;

use crate::pricing;
use crate::sym::Sym;

/// Read at most this much of an answer.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Keep this much of an answer in the record.
pub const SHOWN: usize = 512;

/// A webhook as configured, compiled.
#[derive(Debug)]
pub struct Webhook {
    pub url: Template,
    pub method: Method,
    pub body: Option<Template>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub bid_path: Path,
    pub timer_path: Option<Path>,
    pub number_path: Option<Path>,
    /// This buyer's own deadline, when shorter than the key's.
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Text with `[tag]` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    /// A placeholder, and whether it sits inside a JSON string (between
    /// quotes) as far as the text before it says.
    Tag {
        name: Box<str>,
        quoted: bool,
    },
}

/// How a value is written into a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encoded: everything but `A-Z a-z 0-9 - _ . ~`.
    Url,
    /// For a JSON body: escaped for the inside of a string where the
    /// placeholder is between quotes; elsewhere a JSON value of its own (a
    /// number or `true`/`false` as sent, any other text as a string, a
    /// missing tag as `null`).
    Json,
}

impl Template {
    /// True if the template holds a placeholder.
    pub fn has_tags(&self) -> bool {
        self.0.iter().any(|part| matches!(part, Part::Tag { .. }))
    }

    /// Compiles `text`. A placeholder is `[name]` where `name` starts with a
    /// letter or `_` and holds only `a-z 0-9 _ - .` (any case), and is not
    /// `true`, `false` or `null`; any other `[` is text, so a JSON array
    /// such as `[1,2]` or `[true]` stays as written.
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        let mut quotes = Quotes::default();
        while let Some(open) = rest.find('[') {
            literal.push_str(&rest[..open]);
            quotes.read(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find(']').filter(|&close| is_placeholder(&after[..close])) {
                Some(close) => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal).into_boxed_str()));
                    }
                    let name = after[..close].to_ascii_lowercase().into_boxed_str();
                    parts.push(Part::Tag { name, quoted: quotes.inside });
                    rest = &after[close + 1..];
                }
                None => {
                    literal.push('[');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal.into_boxed_str()));
        }
        Template(parts)
    }

    /// The placeholders' names.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Tag { name, .. } => Some(name.as_ref()),
            Part::Text(_) => None,
        })
    }

    /// Fills the placeholders from `lookup` (a missing tag is empty).
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<Cow<'a, str>>, escape: Escape) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Tag { name, quoted } => {
                    let value = lookup(name);
                    match (escape, quoted, value) {
                        (Escape::Url, _, value) => url_encode(&value.unwrap_or_default(), &mut out),
                        (Escape::Json, true, value) => json_escape(&value.unwrap_or_default(), &mut out),
                        (Escape::Json, false, None) => out.push_str("null"),
                        (Escape::Json, false, Some(value)) => {
                            // A number a buyer's parser can hold (not 1e999).
                            let number =
                                is_json_number(&value) && value.parse::<f64>().is_ok_and(f64::is_finite);
                            if number || value == "true" || value == "false" {
                                out.push_str(&value);
                            } else {
                                out.push('"');
                                json_escape(&value, &mut out);
                                out.push('"');
                            }
                        }
                    }
                }
            }
        }
        if escape == Escape::Url { empty_dot_segments(out) } else { out }
    }
}

/// A path segment a URL parser resolves (`.` or `..`, dots encoded or not).
fn is_dot_segment(segment: &str) -> bool {
    matches!(segment.to_ascii_lowercase().replace("%2e", ".").as_str(), "." | "..")
}

/// The path of an absolute URL (after the host, before `?` or `#`), as a
/// byte range.
fn path_range(url: &str) -> std::ops::Range<usize> {
    let start = origin(url).len();
    let end = url[start..].find(['?', '#']).map_or(url.len(), |i| start + i);
    start..end
}

/// The scheme, host and port of an absolute URL: everything before its
/// path, query or fragment.
pub fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// True if the URL's path holds a `.` or `..` segment.
pub fn has_dot_segment(url: &str) -> bool {
    url[path_range(url)].split('/').any(is_dot_segment)
}

/// The URL with every `.` or `..` segment of its path made empty: made of
/// a publisher's values (the config's own URL has none), they would move
/// the request to another path of the buyer's.
fn empty_dot_segments(url: String) -> String {
    if !has_dot_segment(&url) {
        return url;
    }
    let range = path_range(&url);
    let path: Vec<&str> = url[range.clone()]
        .split('/')
        .map(|segment| if is_dot_segment(segment) { "" } else { segment })
        .collect();
    format!("{}{}{}", &url[..range.start], path.join("/"), &url[range.end..])
}

fn is_placeholder(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !["true", "false", "null"].iter().any(|word| name.eq_ignore_ascii_case(word))
}

/// Whether the text so far ends inside a JSON string.
#[derive(Default)]
struct Quotes {
    inside: bool,
    escaped: bool,
}

impl Quotes {
    fn read(&mut self, text: &str) {
        for b in text.bytes() {
            if self.escaped {
                self.escaped = false;
            } else if self.inside && b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.inside = !self.inside;
            }
        }
    }
}

/// A JSON number, as its grammar has it: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn url_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

fn json_escape(value: &str, out: &mut String) {
    let mut buf = Vec::with_capacity(value.len() + 2);
    crate::json::write_str(&mut buf, value);
    // `write_str` adds the quotes; the template has its own.
    out.push_str(std::str::from_utf8(&buf[1..buf.len() - 1]).unwrap_or(""));
}

/// A dot path into a JSON answer: `bid`, `bidTerms.0.callMinDuration`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(Vec<Box<str>>);

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        if text.is_empty() {
            return Err("a path cannot be empty".to_owned());
        }
        let segments: Vec<Box<str>> = text.split('.').map(Box::from).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("{text:?} has an empty segment (two dots, or a dot at an end)"));
        }
        Ok(Path(segments))
    }

    /// The value at this path: a numeric segment indexes an array, any
    /// segment names an object's key.
    fn find<'v>(&self, root: &'v simd_json::BorrowedValue<'v>) -> Option<&'v simd_json::BorrowedValue<'v>> {
        let mut at = root;
        for segment in &self.0 {
            at = match (at.as_array(), segment.parse::<usize>()) {
                (Some(items), Ok(i)) => items.get(i)?,
                _ => at.get(segment.as_ref())?,
            };
        }
        Some(at)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A buyer's bid, read from its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid {
    /// Thousandths of a dollar, above zero.
    pub milli: u64,
    pub timer: Option<u32>,
    /// The transfer number the buyer gave, as text.
    pub number: Option<String>,
}

/// What came of asking one buyer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Bid(Bid),
    /// No bid, a zero or negative bid: `target_disqualified`.
    NoBid(String),
    /// The call failed or the answer cannot be read: `rejected`.
    Failed(String),
}

/// Reads a buyer's answer. The buffer is parsed in place.
pub fn read_answer(
    body: &mut [u8],
    bid_path: &Path,
    timer_path: Option<&Path>,
    number_path: Option<&Path>,
) -> Verdict {
    let root = match simd_json::to_borrowed_value(body) {
        Ok(root) => root,
        Err(e) => return Verdict::Failed(format!("the answer is not JSON ({e})")),
    };
    let bid = match bid_path.find(&root) {
        None => return Verdict::NoBid(format!("no bid at {bid_path}")),
        Some(value) => match amount(value) {
            Amount::Positive(milli) => milli,
            Amount::NotPositive => return Verdict::NoBid(format!("bid at {bid_path} is not above zero")),
            Amount::NotNumber => {
                return Verdict::NoBid(format!("bid at {bid_path} is not a number up to 1000000"));
            }
        },
    };
    // A timer under one second is no timer: a criterion that takes its
    // seconds from it would convert every call, however short.
    let timer = timer_path.and_then(|p| p.find(&root)).and_then(|v| match amount(v) {
        Amount::Positive(milli) => u32::try_from(milli / 1000).ok().filter(|&s| s > 0),
        Amount::NotPositive | Amount::NotNumber => None,
    });
    let number = number_path
        .and_then(|p| p.find(&root))
        .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string())));
    Verdict::Bid(Bid { milli: bid, timer, number })
}

enum Amount {
    Positive(u64),
    NotPositive,
    NotNumber,
}

/// A JSON number or numeric string, as thousandths.
fn amount(value: &simd_json::BorrowedValue) -> Amount {
    let milli = if let Some(text) = value.as_str() {
        let trimmed = text.trim();
        if trimmed.starts_with('-') && pricing::parse_dollars(&trimmed[1..]).is_some() {
            return Amount::NotPositive;
        }
        pricing::parse_dollars(trimmed)
    } else if let Some(n) = value.as_u64() {
        // Through the same bound as every other form of a bid.
        pricing::parse_dollars(&n.to_string())
    } else if let Some(n) = value.as_i64() {
        if n <= 0 {
            return Amount::NotPositive;
        }
        None
    } else if let Some(f) = value.as_f64() {
        if !f.is_finite() {
            None
        } else if f <= 0.0 {
            return Amount::NotPositive;
        } else {
            // The shortest text that reads back as `f` (never an
            // exponent), rounded once, as a numeric string would be.
            pricing::parse_dollars(&f.to_string())
        }
    } else {
        None
    };
    match milli {
        Some(0) => Amount::NotPositive,
        Some(m) => Amount::Positive(m),
        None => Amount::NotNumber,
    }
}

/// One webhook call, as the record shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pixel {
    pub target: Sym,
    pub method: Method,
    pub url: Box<str>,
    pub http_status: Option<u16>,
    pub latency_ms: u32,
    /// The first [`SHOWN`] bytes of the answer.
    pub response: Box<str>,
    pub outcome: Box<str>,
    /// What kind of failure, as an index into `metrics::FAILURES`.
    pub failure: Option<usize>,
}

impl Pixel {
    /// The pixel of a request whose ping ended before the buyer answered.
    pub fn cancelled(request: &Request) -> Pixel {
        Pixel {
            target: request.target,
            method: request.method,
            url: request.url.as_str().into(),
            http_status: None,
            latency_ms: 0,
            response: "".into(),
            outcome: "cancelled: the ping ended before the buyer answered".into(),
            failure: None,
        }
    }
}

/// A request ready to send.
#[derive(Debug)]
pub struct Request {
    pub target: Sym,
    pub method: Method,
    pub url: String,
    pub body: Option<String>,
    pub timeout: Duration,
}

/// Sends `request` and reads the answer within its timeout. Never fails:
/// every failure is a [`Verdict::Failed`], and the pixel says what happened.
pub async fn ask(client: &reqwest::Client, hook: &Webhook, request: Request) -> (Verdict, Pixel) {
    let started = Instant::now();
    let mut pixel = Pixel {
        target: request.target,
        method: request.method,
        url: request.url.clone().into_boxed_str(),
        http_status: None,
        latency_ms: 0,
        response: "".into(),
        outcome: "".into(),
        failure: None,
    };
    let timeout = request.timeout;
    let verdict = match tokio::time::timeout(timeout, exchange(client, hook, request, &mut pixel)).await {
        Ok(verdict) => verdict,
        Err(_) => {
            pixel.failure = Some(0);
            Verdict::Failed(format!("no answer within {} ms", timeout.as_millis()))
        }
    };
    if pixel.failure.is_none() && matches!(verdict, Verdict::Failed(_)) {
        // Kinds: 1 connect (no status), 2 a non-2xx status, 3 the answer.
        pixel.failure = Some(match pixel.http_status {
            None => 1,
            Some(status) if !(200..300).contains(&status) => 2,
            Some(_) => 3,
        });
    }
    pixel.latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    pixel.outcome = match &verdict {
        Verdict::Bid(bid) => {
            let mut text = Vec::new();
            crate::json::write_money(&mut text, bid.milli);
            format!("bid {}", String::from_utf8_lossy(&text)).into_boxed_str()
        }
        Verdict::NoBid(why) => format!("no bid: {why}").into_boxed_str(),
        Verdict::Failed(why) => format!("failed: {why}").into_boxed_str(),
    };
    (verdict, pixel)
}

async fn exchange(client: &reqwest::Client, hook: &Webhook, request: Request, pixel: &mut Pixel) -> Verdict {
    let method = match request.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
    };
    let mut builder = client.request(method, &request.url);
    for (name, value) in &hook.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = request.body {
        if !hook.headers.iter().any(|(n, _)| n == reqwest::header::CONTENT_TYPE) {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        builder = builder.body(body);
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(e) => return Verdict::Failed(describe(&e)),
    };
    let status = response.status();
    pixel.http_status = Some(status.as_u16());
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER {
                    body.extend_from_slice(&chunk[..MAX_ANSWER.saturating_sub(body.len())]);
                    pixel.response = shown(&body);
                    return Verdict::Failed(format!("the answer is over {} KiB", MAX_ANSWER / 1024));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                pixel.response = shown(&body);
                return Verdict::Failed(format!("the answer broke off: {}", describe(&e)));
            }
        }
    }
    pixel.response = shown(&body);
    if !status.is_success() {
        return Verdict::Failed(format!("HTTP {}", status.as_u16()));
    }
    read_answer(&mut body, &hook.bid_path, hook.timer_path.as_ref(), hook.number_path.as_ref())
}

/// The first [`SHOWN`] bytes, as text.
fn shown(body: &[u8]) -> Box<str> {
    String::from_utf8_lossy(&body[..body.len().min(SHOWN)]).into_owned().into_boxed_str()
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else {
        // The root cause says most ("connection closed before message
        // completed"); the outer layers repeat the URL.
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        cause.to_string()
    }
}

/// The one client every webhook call shares: pooled keep-alive connections,
/// no redirects (a buyer answers where it is asked).
pub fn client() -> reqwest::Client {
    // rustls needs a process-wide crypto provider; installing it twice is
    // harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rtbd/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(name: &str) -> Option<Cow<'static, str>> {
        match name {
            "caller_number" => Some("+18005550100".into()),
            "state" => Some("N\"Y".into()),
            "zip" => Some("10001 &x".into()),
            _ => None,
        }
    }

    #[test]
    fn a_body_placeholder_outside_quotes_is_a_json_value_of_its_own() {
        let lookup = |name: &str| -> Option<Cow<'static, str>> {
            match name {
                "age" => Some("42".into()),
                "list" => Some("1,2".into()),
                "opt" => Some("true".into()),
                "big" => Some("1e999".into()),
                "quote" => Some("a\"b".into()),
                _ => None,
            }
        };
        let body = Template::parse(
            r#"{"age":[age],"list":[list],"opt":[opt],"big":[big],"q":[quote],"none":[missing],"s":"[age] \"[list]\"","lit":[true]}"#,
        );
        let rendered = body.render(lookup, Escape::Json);
        assert_eq!(
            rendered,
            r#"{"age":42,"list":"1,2","opt":true,"big":"1e999","q":"a\"b","none":null,"s":"42 \"1,2\"","lit":[true]}"#
        );
        assert!(simd_json::to_borrowed_value(&mut rendered.into_bytes()).is_ok());
        for number in ["0", "-1", "12.5", "1e5", "-0.5E-3"] {
            assert!(is_json_number(number), "{number}");
        }
        for text in ["", "-", "01", "1.", ".5", "1e", "1,2", "+1", "0x10", "NaN", "1 "] {
            assert!(!is_json_number(text), "{text}");
        }
    }

    #[test]
    fn dot_segments_never_move_a_url_to_another_path() {
        let lookup = |name: &str| -> Option<Cow<'static, str>> {
            match name {
                "up" => Some("..".into()),
                "here" => Some(".".into()),
                _ => None,
            }
        };
        let url = Template::parse("http://b/v1/[up]/[here]/bid?a=[up]&b=[here]");
        assert_eq!(url.render(lookup, Escape::Url), "http://b/v1///bid?a=..&b=.");
        // Beside a dot of the template's own, or an encoded one.
        for template in ["http://b/v1/[here]./bid", "http://b/v1/.[here]/bid", "http://b/v1/%2E[here]/bid"] {
            assert_eq!(
                Template::parse(template).render(lookup, Escape::Url),
                "http://b/v1//bid",
                "{template}"
            );
        }
        assert_eq!(
            Template::parse("http://b/v1.[here]/bid").render(lookup, Escape::Url),
            "http://b/v1../bid"
        );
        assert!(has_dot_segment("http://b/a/../c?x=.."));
        assert!(!has_dot_segment("http://b/a/..b/c?x=/../"));
    }

    #[test]
    fn templates_fill_and_escape() {
        let url = Template::parse("http://b/bid?c=[caller_number]&z=[ZIP]&m=[missing]&a=[1,2]");
        assert_eq!(url.tags().collect::<Vec<_>>(), ["caller_number", "zip", "missing"]);
        assert_eq!(url.render(tags, Escape::Url), "http://b/bid?c=%2B18005550100&z=10001%20%26x&m=&a=[1,2]");
        let body =
            Template::parse(r#"{"caller":"[caller_number]","state":"[state]","ids":[1],"x":"[unclosed"}"#);
        assert_eq!(
            body.render(tags, Escape::Json),
            r#"{"caller":"+18005550100","state":"N\"Y","ids":[1],"x":"[unclosed"}"#
        );
    }

    fn read(json: &str, bid: &str, timer: Option<&str>, number: Option<&str>) -> Verdict {
        let mut body = json.as_bytes().to_vec();
        let timer = timer.map(|p| Path::parse(p).unwrap());
        let number = number.map(|p| Path::parse(p).unwrap());
        read_answer(&mut body, &Path::parse(bid).unwrap(), timer.as_ref(), number.as_ref())
    }

    #[test]
    fn answers_in_every_shape() {
        let bid = |milli, timer, number: Option<&str>| {
            Verdict::Bid(Bid { milli, timer, number: number.map(str::to_owned) })
        };
        assert_eq!(
            read(
                r#"{"bid":12.5,"duration":90,"phone":"+18005550199"}"#,
                "bid",
                Some("duration"),
                Some("phone")
            ),
            bid(12_500, Some(90), Some("+18005550199"))
        );
        assert_eq!(
            read(r#"{"bid":"7.25","duration":"60"}"#, "bid", Some("duration"), None),
            bid(7_250, Some(60), None)
        );
        assert_eq!(read(r#"{"bid":3}"#, "bid", Some("duration"), Some("phone")), bid(3_000, None, None));
        // Ringba's shape.
        let ringba =
            r#"{"bidId":"x","bidAmount":4.5,"bidTerms":[{"callMinDuration":75,"number":"+18005550123"}]}"#;
        assert_eq!(
            read(ringba, "bidAmount", Some("bidTerms.0.callMinDuration"), Some("bidTerms.0.number")),
            bid(4_500, Some(75), Some("+18005550123"))
        );
        assert!(matches!(read(r#"{"x":1}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":0}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":-2}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":"-2.5"}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":"lots"}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":null}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read(r#"{"bid":[1]}"#, "bid", None, None), Verdict::NoBid(_)));
        assert!(matches!(read("not json", "bid", None, None), Verdict::Failed(_)));
        assert!(matches!(read("", "bid", None, None), Verdict::Failed(_)));
        assert!(matches!(read(r#"{"bid": 1"#, "bid", None, None), Verdict::Failed(_)));
    }

    #[test]
    fn bids_are_rounded_once_and_bounded_in_every_form() {
        let milli = |json: &str| match read(json, "bid", None, None) {
            Verdict::Bid(bid) => Some(bid.milli),
            _ => None,
        };
        // Under half a thousandth is no bid, as the same numeric string.
        assert_eq!(milli(r#"{"bid":0.00049}"#), None);
        assert_eq!(milli(r#"{"bid":"0.00049"}"#), None);
        assert_eq!(milli(r#"{"bid":1.23449}"#), Some(1_234));
        assert_eq!(milli(r#"{"bid":"1.23449"}"#), Some(1_234));
        assert_eq!(milli(r#"{"bid":1.2345}"#), Some(1_235));
        // Over a million dollars is not a bid, whatever its JSON type.
        assert_eq!(milli(r#"{"bid":1000000}"#), Some(1_000_000_000));
        assert_eq!(milli(r#"{"bid":5000000}"#), None);
        assert_eq!(milli(r#"{"bid":"5000000"}"#), None);
        assert_eq!(milli(r#"{"bid":5000000.5}"#), None);
    }

    #[test]
    fn a_timer_under_a_second_is_no_timer() {
        for duration in ["0", "-30", "0.5", "\"-1\"", "\"0\""] {
            let json = format!(r#"{{"bid":5,"duration":{duration}}}"#);
            assert_eq!(
                read(&json, "bid", Some("duration"), None),
                Verdict::Bid(Bid { milli: 5_000, timer: None, number: None }),
                "{json}"
            );
        }
    }

    #[test]
    fn rtbd_reservations_read_as_bids() {
        let answer = r#"{"uuid":"u","status":"reserved","retreaver_payout":1.173,"retreaver_seconds":95,"inbound_number":"+18444021146","expires_at":"x"}"#;
        assert_eq!(
            read(answer, "retreaver_payout", Some("retreaver_seconds"), Some("inbound_number")),
            Verdict::Bid(Bid { milli: 1_173, timer: Some(95), number: Some("+18444021146".into()) })
        );
        let none = r#"{"uuid":"u","status":"no-target","reason":"targets_closed","info":"…"}"#;
        assert!(matches!(read(none, "retreaver_payout", None, None), Verdict::NoBid(_)));
    }

    #[test]
    fn paths() {
        assert!(Path::parse("").is_err());
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse(".a").is_err());
        assert_eq!(Path::parse("a.0.b").unwrap().to_string(), "a.0.b");
    }
}
