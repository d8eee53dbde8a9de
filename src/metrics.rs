//! Metrics: the counters and histograms behind `GET /metrics`, in the
//! Prometheus text format.
//!
//! Everything counted on the hot path is a plain atomic: the tallies of
//! `stats` (striped per thread) and the histograms here (striped the same
//! way). The text is written by hand at scrape time from those atomics: a
//! metrics library would put a map lookup behind a lock in front of each
//! labelled counter, on every ping.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam::utils::CachePadded;

use crate::engine::Engine;
use crate::stats::{Field, STRIPES, stripe};

/// Upper bounds of the latency buckets, in microseconds.
const BOUNDS_US: [u64; 14] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];
/// Buckets, then +Inf, count and sum (µs).
const CELLS: usize = BOUNDS_US.len() + 3;

/// A latency histogram, striped per thread like the tallies.
#[derive(Default)]
pub struct Histogram {
    stripes: [CachePadded<[AtomicU64; CELLS]>; STRIPES],
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let stripe = stripe();
        let cells = &self.stripes[stripe.index];
        let bucket = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        stripe.add(&cells[bucket], 1);
        stripe.add(&cells[CELLS - 2], 1);
        stripe.add(&cells[CELLS - 1], us);
    }

    fn cell(&self, i: usize) -> u64 {
        self.stripes.iter().map(|s| s[i].load(Ordering::Relaxed)).sum()
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cell(CELLS - 2)
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += self.cell(i);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.cell(BOUNDS_US.len());
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.cell(CELLS - 1) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// What a buyer's webhook calls came to, for one target.
#[derive(Default)]
pub struct WebhookStats {
    pub latency: Histogram,
    errors: [AtomicU64; FAILURES.len()],
}

/// Kinds of webhook failure, as labelled in the metrics.
pub const FAILURES: [&str; 4] = ["timeout", "connect", "http_status", "answer"];

impl WebhookStats {
    /// Counts a failure of kind `FAILURES[kind]`.
    pub fn failed(&self, kind: usize) {
        if let Some(cell) = self.errors.get(kind) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURES.iter().zip(&self.errors).map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for WebhookStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookStats({} calls)", self.latency.count())
    }
}

/// Engine-wide metrics that are not tallies.
#[derive(Default)]
pub struct Metrics {
    pub ping_latency: Histogram,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub snapshots_ok: AtomicU64,
    pub snapshots_failed: AtomicU64,
    pub snapshot_duration_us: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    /// Milliseconds since the epoch of the last good snapshot (0: none).
    pub snapshot_last_success_ms: AtomicU64,
    /// Requests answered with a 4xx error, by code (429, the Ping Shield's
    /// rate limit, is counted with the pings).
    pub bad_requests: [AtomicU64; 8],
}

/// The 4xx codes counted in `bad_requests`, in order.
pub const BAD_REQUEST_CODES: [u16; 8] = [400, 401, 404, 405, 409, 413, 414, 422];

impl Metrics {
    pub fn bad_request(&self, code: u16) {
        if let Some(i) = BAD_REQUEST_CODES.iter().position(|&c| c == code) {
            self.bad_requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One line per (label value, number) of a metric with one label.
fn samples(out: &mut String, name: &str, label_name: &str, values: &[(&str, u64)]) {
    for (label_value, n) in values {
        let _ = writeln!(out, "{name}{{{label_name}=\"{label_value}\"}} {n}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole `/metrics` page.
pub fn render(engine: &Engine) -> String {
    let routing = engine.routing();
    let metrics = engine.metrics();
    let mut out = String::with_capacity(16 * 1024);

    header(&mut out, "rtbd_build_info", "gauge", "Build information.");
    let _ = writeln!(out, "rtbd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

    header(&mut out, "rtbd_pings_total", "counter", "Pings by RTB key and answer status.");
    let statuses = [
        ("reserved", Field::Reserved),
        ("no-target", Field::NoTarget),
        ("rejected", Field::Rejected),
        ("ping_shield_postback_key_caller_number_already_reserved", Field::AlreadyReserved),
        ("ping_shield_postback_key_caller_number_already_processing", Field::AlreadyProcessing),
        ("ping_shield_postback_key_claim_based_limited", Field::ClaimLimited),
        ("ping_shield_postback_key_rate_limited", Field::RateLimited),
    ];
    for campaign in &routing.campaigns {
        for key in &campaign.keys {
            let k = label(&key.key);
            for (status, field) in statuses {
                let _ = writeln!(
                    out,
                    "rtbd_pings_total{{key=\"{k}\",status=\"{status}\"}} {}",
                    key.state.tally.get(field)
                );
            }
        }
    }

    header(&mut out, "rtbd_ping_shield_total", "counter", "Ping Shield outcomes by RTB key.");
    for campaign in &routing.campaigns {
        for key in &campaign.keys {
            let k = label(&key.key);
            for (outcome, field) in &statuses[3..] {
                let _ = writeln!(
                    out,
                    "rtbd_ping_shield_total{{key=\"{k}\",outcome=\"{outcome}\"}} {}",
                    key.state.tally.get(*field)
                );
            }
        }
    }

    header(&mut out, "rtbd_reservations_total", "counter", "Reservation lifecycle steps by RTB key.");
    for campaign in &routing.campaigns {
        for key in &campaign.keys {
            let k = label(&key.key);
            for (step, field) in [
                ("confirmed", Field::Confirmed),
                ("claimed", Field::Claimed),
                ("expired", Field::Expired),
                ("converted", Field::Converted),
            ] {
                let _ = writeln!(
                    out,
                    "rtbd_reservations_total{{key=\"{k}\",step=\"{step}\"}} {}",
                    key.state.tally.get(field)
                );
            }
        }
    }

    header(&mut out, "rtbd_ping_duration_seconds", "histogram", "Time to answer a ping.");
    metrics.ping_latency.write(&mut out, "rtbd_ping_duration_seconds", "");

    header(
        &mut out,
        "rtbd_bad_requests_total",
        "counter",
        "Requests answered with a 4xx error (bad input or credentials, an unknown path or uuid, a call on a dead line), by HTTP code.",
    );
    for (i, code) in BAD_REQUEST_CODES.iter().enumerate() {
        let _ = writeln!(
            out,
            "rtbd_bad_requests_total{{code=\"{code}\"}} {}",
            metrics.bad_requests[i].load(Ordering::Relaxed)
        );
    }

    let (live, scheduled, records) = engine.table().shards().fold((0, 0, 0), |(l, s, r), shard| {
        let shard = shard.lock();
        (l + shard.live_count(), s + shard.scheduled(), r + shard.records.len())
    });
    header(&mut out, "rtbd_live_reservations", "gauge", "Live reservations and pings waiting on buyers.");
    let _ = writeln!(out, "rtbd_live_reservations {live}");
    header(&mut out, "rtbd_records", "gauge", "Ping records kept.");
    let _ = writeln!(out, "rtbd_records {records}");
    header(&mut out, "rtbd_expiry_wheel_entries", "gauge", "Entries waiting in the expiry wheels.");
    let _ = writeln!(out, "rtbd_expiry_wheel_entries {scheduled}");

    header(&mut out, "rtbd_live_calls", "gauge", "Calls in progress by target.");
    for campaign in &routing.campaigns {
        for target in &campaign.targets {
            let _ = writeln!(
                out,
                "rtbd_live_calls{{target=\"{}\"}} {}",
                label(target.id.as_str()),
                target.state.counters.calls.get()
            );
        }
    }

    header(&mut out, "rtbd_webhook_duration_seconds", "histogram", "Buyer webhook latency by target.");
    for campaign in &routing.campaigns {
        for target in campaign.targets.iter().filter(|t| t.webhook.is_some()) {
            let labels = format!("target=\"{}\"", label(target.id.as_str()));
            target.state.webhook.latency.write(&mut out, "rtbd_webhook_duration_seconds", &labels);
        }
    }
    header(
        &mut out,
        "rtbd_webhook_errors_total",
        "counter",
        "Buyer webhook calls that failed, by target and kind.",
    );
    for campaign in &routing.campaigns {
        for target in campaign.targets.iter().filter(|t| t.webhook.is_some()) {
            let t = label(target.id.as_str());
            for (kind, n) in target.state.webhook.errors() {
                let _ = writeln!(out, "rtbd_webhook_errors_total{{target=\"{t}\",kind=\"{kind}\"}} {n}");
            }
        }
    }

    let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    header(&mut out, "rtbd_config_reloads_total", "counter", "Config reloads by result.");
    samples(
        &mut out,
        "rtbd_config_reloads_total",
        "result",
        &[("ok", n(&metrics.reloads_ok)), ("error", n(&metrics.reloads_failed))],
    );
    header(&mut out, "rtbd_config_version", "gauge", "Version of the running config.");
    let _ = writeln!(out, "rtbd_config_version {}", routing.version);

    header(&mut out, "rtbd_snapshots_total", "counter", "Snapshots written, by result.");
    samples(
        &mut out,
        "rtbd_snapshots_total",
        "result",
        &[("ok", n(&metrics.snapshots_ok)), ("error", n(&metrics.snapshots_failed))],
    );
    header(&mut out, "rtbd_snapshot_duration_seconds", "gauge", "Time the last snapshot took.");
    let _ = writeln!(
        out,
        "rtbd_snapshot_duration_seconds {}",
        metrics.snapshot_duration_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    header(&mut out, "rtbd_snapshot_bytes", "gauge", "Size of the last snapshot.");
    let _ = writeln!(out, "rtbd_snapshot_bytes {}", metrics.snapshot_bytes.load(Ordering::Relaxed));
    header(
        &mut out,
        "rtbd_snapshot_last_success_timestamp_seconds",
        "gauge",
        "When the last good snapshot was written.",
    );
    let _ = writeln!(
        out,
        "rtbd_snapshot_last_success_timestamp_seconds {}",
        metrics.snapshot_last_success_ms.load(Ordering::Relaxed) as f64 / 1e3
    );

    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(9));
        let mut out = String::new();
        h.write(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 9.00074\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
