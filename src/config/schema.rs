//! The config file as written: one serde struct per TOML table.
//!
//! Every table denies unknown fields, so a typo is an error with a line
//! number, not a silently ignored setting. Defaults live here; checks that
//! need more than one field live in `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub ping_shield: PingShield,
    #[serde(default)]
    pub publishers: Vec<Publisher>,
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    pub admin_token: Option<String>,
    pub switch_token: Option<String>,
    pub data_dir: String,
    pub snapshot_interval_secs: u64,
    pub max_connections: u64,
    pub header_read_timeout_ms: u64,
    pub record_retention_secs: u64,
    pub max_records: u64,
    pub sip_domain: Option<String>,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: "127.0.0.1:8080".to_owned(),
            admin_token: None,
            switch_token: None,
            data_dir: "data".to_owned(),
            snapshot_interval_secs: 5,
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            record_retention_secs: 86_400,
            max_records: 1_000_000,
            sip_domain: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub tracking_numbers: Vec<String>,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub rtb_keys: Vec<RtbKey>,
    #[serde(default)]
    pub conversion_criteria: Vec<Criterion>,
    #[serde(default)]
    pub targets: Vec<Target>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    #[default]
    Priority,
    HighestPayout,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtbKey {
    pub key: String,
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub add_to_caps_on_status_reserved: bool,
    pub inbound_number: Option<String>,
    /// Overrides of the file's `[ping_shield]` for this key.
    pub ping_shield: Option<PingShield>,
}

/// Ping Shield settings; every field left out keeps its default (or, for
/// a key, the file's `[ping_shield]`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingShield {
    pub dedupe_scope: Option<DedupeScope>,
    pub rate_limit_per_sec: Option<u32>,
    pub burst: Option<u32>,
    #[serde(default, deserialize_with = "number")]
    pub min_claim_ratio: Option<f64>,
    pub claim_ratio_window_secs: Option<u32>,
    pub claim_ratio_min_pings: Option<u32>,
    pub throttled_allow_one_in: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupeScope {
    Key,
    Campaign,
}

fn default_ttl_secs() -> u64 {
    15
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub publisher_id: String,
    pub target_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "number")]
    pub payout: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    pub payout_percent: Option<f64>,
    pub payout_tag: Option<String>,
    pub duration_secs: Option<u64>,
    pub duration_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub name: Option<String>,
    pub number: Option<String>,
    #[serde(default = "one")]
    pub priority: u32,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub paused: bool,
    pub time_zone: Option<String>,
    pub business_hours: Option<Vec<Shift>>,
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub caps: Caps,
    pub concurrency_cap: Option<u32>,
    pub dedupe_secs: Option<u64>,
    pub webhook: Option<Webhook>,
}

/// A passthrough bidding webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub method: Option<String>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub bid_path: String,
    pub timer_path: Option<String>,
    pub number_path: Option<String>,
    pub timeout_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub monthly: Option<u32>,
    pub hard: Option<u32>,
}

/// One business-hours entry, in Retreaver's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub day_of_week: u32,
    #[serde(default, deserialize_with = "hhmm")]
    pub time_open: Option<u32>,
    #[serde(default, deserialize_with = "hhmm")]
    pub time_close: Option<u32>,
    #[serde(default = "yes")]
    pub work_day: bool,
    #[serde(default)]
    pub inverted: bool,
}

fn yes() -> bool {
    true
}

/// A time as HHMM: an integer (`900`) or a string (`"0900"`, `"09:00"`),
/// since TOML integers cannot have a leading zero.
fn hhmm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a time as HHMM, like 900 or \"09:00\"")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("{v} is not a time as HHMM")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("{v} is not a time as HHMM")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u32, E> {
            // "9:00" or "09:00", or "900" or "0900": nothing that reads
            // as another time once a colon is dropped ("1:5").
            let (hours, minutes) = match v.split_once(':') {
                Some((h, m)) if (1..=2).contains(&h.len()) && m.len() == 2 => (h, m),
                None if (3..=4).contains(&v.len()) && v.is_ascii() => v.split_at(v.len() - 2),
                _ => ("", ""),
            };
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            match (digits(hours), digits(minutes), hours.parse::<u32>(), minutes.parse::<u32>()) {
                (true, true, Ok(h), Ok(m)) => Ok(h * 100 + m),
                _ => Err(E::custom(format!("{v:?} is not a time as HHMM (\"09:00\" or \"0900\")"))),
            }
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

/// A TOML integer or float, read as f64 (`payout = 12` and `payout = 12.5`).
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }
    d.deserialize_any(Visitor).map(Some)
}
