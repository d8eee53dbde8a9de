//! Checks a parsed file and compiles it into a [`Routing`].
//!
//! Every problem is collected (not just the first) with the path of the field
//! it is about; `config::parse` turns the paths into line numbers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashMap;

use super::locate::Path;
use super::routing::{self, Campaign, Criterion, Key, Mode, Number, Payout, Routing, Seconds};
use super::schema;
use crate::caps::Limits;
use crate::filter::{Filter, Pattern};
use crate::hours::{Hours, Shift};
use crate::params;
use crate::phone::{Dial, Phone};
use crate::shield::{self, DedupeScope};
use crate::sym::Sym;
use crate::webhook::{self, Escape, Method, Path as WebhookPath, Template, Webhook};
use crate::zone::Zone;
use reqwest::header::{HeaderName, HeaderValue};

/// Largest payout a criterion may set, in dollars.
pub const MAX_PAYOUT: f64 = 1_000_000.0;
/// Longest reservation TTL, in seconds.
pub const MAX_TTL_SECS: u64 = 86_400;
/// Longest webhook deadline, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Longest duplicate window, in seconds (a year).
pub const MAX_DEDUPE_SECS: u64 = 365 * 86_400;
/// Largest `payout_percent`.
pub const MAX_PERCENT: f64 = 1_000.0;

/// One thing wrong with a file, or worth a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: Path,
    pub message: String,
    pub warning: bool,
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    /// Zones loaded so far, shared by the targets that name them.
    zones: HashMap<String, Arc<Zone>>,
    now_ms: u64,
}

impl Checker {
    fn error(&mut self, path: Path, message: impl Into<String>) {
        self.problems.push(Problem { path, message: message.into(), warning: false });
    }

    fn warn(&mut self, path: Path, message: impl Into<String>) {
        self.problems.push(Problem { path, message: message.into(), warning: true });
    }

    fn id(&mut self, path: Path, id: &str) {
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            self.error(path, "must be 1 to 128 characters, without control characters");
        }
    }

    /// The zone named `name`, loaded once per file.
    fn zone(&mut self, name: &str, path: Path) -> Arc<Zone> {
        if let Some(zone) = self.zones.get(name) {
            return zone.clone();
        }
        match Zone::get(name, self.now_ms) {
            Ok(zone) => {
                let zone = Arc::new(zone);
                self.zones.insert(name.to_owned(), zone.clone());
                zone
            }
            Err(e) => {
                self.error(path, e);
                Arc::new(Zone::utc())
            }
        }
    }

    fn tag_name(&mut self, path: Path, tag: &str) {
        if params::check_name(&tag.to_ascii_lowercase()).is_err() {
            self.error(path, format!("{tag:?} is not a tag name (1 to 64 of a-z, 0-9, '_', '-', '.')"));
        }
    }

    fn phone(&mut self, path: Path, text: &str) -> Option<Phone> {
        match Phone::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(path, format!("{text:?} is not a valid phone number: {e}"));
                None
            }
        }
    }
}

/// Checks `file` and builds its routing. Warnings come back with the
/// routing; any error fails the whole file.
pub fn validate(file: schema::File) -> Result<(Routing, Vec<Problem>), Vec<Problem>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut check = Checker { now_ms, ..Checker::default() };
    let root = Path::root();
    let server = server(&mut check, &root.key("server"), file.server);

    let mut publishers = AHashMap::new();
    for (i, p) in file.publishers.into_iter().enumerate() {
        let path = root.key("publishers").index(i);
        check.id(path.key("id"), &p.id);
        let name = p.name.unwrap_or_else(|| p.id.clone());
        if publishers.insert(p.id.clone().into_boxed_str(), name.into_boxed_str()).is_some() {
            check.error(path.key("id"), format!("duplicate publisher id {:?}", p.id));
        }
    }

    let shield_defaults =
        shield(&mut check, &root.key("ping_shield"), &shield::Settings::default(), &file.ping_shield);
    let mut seen_campaigns = HashSet::new();
    let mut seen_targets = HashSet::new();
    let mut seen_keys = HashSet::new();
    let mut campaigns = Vec::new();
    for (i, c) in file.campaigns.into_iter().enumerate() {
        let path = root.key("campaigns").index(i);
        check.id(path.key("id"), &c.id);
        if !seen_campaigns.insert(c.id.clone()) {
            check.error(path.key("id"), format!("duplicate campaign id {:?}", c.id));
        }
        campaigns.push(campaign(&mut check, &path, c, &shield_defaults, &mut seen_targets, &mut seen_keys));
    }

    if check.problems.iter().any(|p| !p.warning) {
        return Err(check.problems);
    }
    let warnings = check.problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    let routing = Routing::new(server, campaigns, publishers, warnings);
    Ok((routing, check.problems))
}

fn server(check: &mut Checker, path: &Path, s: schema::Server) -> routing::Server {
    let listen = match s.listen.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            check.error(path.key("listen"), format!("{:?} is not an address like 127.0.0.1:8080", s.listen));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    let mut token = |name: &str, value: Option<String>, what: &str| -> Option<Box<str>> {
        match value {
            Some(t) if t.is_empty() => {
                check.error(path.key(name), "must not be empty (leave it out to close the endpoints)");
                None
            }
            Some(t) => Some(t.into_boxed_str()),
            None => {
                check.warn(path.key(name), format!("not set: {what} answer 401 until it is"));
                None
            }
        }
    };
    let admin_token = token("admin_token", s.admin_token, "the operator endpoints");
    let switch_token = token("switch_token", s.switch_token, "/calls and /calls/{uuid}/end");
    if s.data_dir.is_empty() {
        check.error(path.key("data_dir"), "must name a folder");
    }
    if s.max_connections == 0 || s.max_connections > 1_000_000 {
        check.error(path.key("max_connections"), "must be between 1 and 1000000");
    }
    if !(100..=600_000).contains(&s.header_read_timeout_ms) {
        check.error(path.key("header_read_timeout_ms"), "must be between 100 and 600000");
    }
    if s.snapshot_interval_secs > 86_400 {
        check.error(
            path.key("snapshot_interval_secs"),
            "must be at most 86400 (0 turns periodic snapshots off)",
        );
    }
    if s.record_retention_secs == 0 || s.record_retention_secs > 10 * 365 * 86_400 {
        check.error(path.key("record_retention_secs"), "must be between 1 and 315360000 (10 years)");
    }
    if s.max_records == 0 || s.max_records > 100_000_000 {
        check.error(path.key("max_records"), "must be between 1 and 100000000");
    }
    let sip_domain = match s.sip_domain {
        Some(d)
            if d.is_empty()
                || d.contains(|c: char| c.is_whitespace() || c.is_control() || "@\"\\/".contains(c)) =>
        {
            check.error(path.key("sip_domain"), format!("{d:?} is not a domain name"));
            None
        }
        other => other.map(String::into_boxed_str),
    };
    routing::Server {
        listen,
        admin_token,
        switch_token,
        data_dir: s.data_dir.into(),
        snapshot_interval_secs: s.snapshot_interval_secs,
        max_connections: s.max_connections as usize,
        header_read_timeout_ms: s.header_read_timeout_ms,
        record_retention_ms: s.record_retention_secs.saturating_mul(1000),
        max_records: s.max_records as usize,
        sip_domain,
    }
}

fn campaign(
    check: &mut Checker,
    path: &Path,
    c: schema::Campaign,
    shield_defaults: &shield::Settings,
    seen_targets: &mut HashSet<String>,
    seen_keys: &mut HashSet<String>,
) -> Campaign {
    let mut tracking = Vec::new();
    if c.tracking_numbers.is_empty() {
        check.error(path.key("tracking_numbers"), "a campaign needs at least one tracking number");
    }
    for (i, n) in c.tracking_numbers.iter().enumerate() {
        if let Some(p) = check.phone(path.key("tracking_numbers").index(i), n) {
            if tracking.contains(&p) {
                check.error(path.key("tracking_numbers").index(i), format!("{p} is listed twice"));
            }
            tracking.push(p);
        }
    }

    let mut targets = Vec::new();
    let mut target_ids = Vec::new();
    for (i, t) in c.targets.into_iter().enumerate() {
        let tpath = path.key("targets").index(i);
        check.id(tpath.key("id"), &t.id);
        if !seen_targets.insert(t.id.clone()) {
            check.error(
                tpath.key("id"),
                format!("duplicate target id {:?} (target ids are unique in the file)", t.id),
            );
        }
        let webhook = t.webhook.map(|w| webhook(check, &tpath.key("webhook"), w));
        let number = match t.number {
            None if webhook.as_ref().is_some_and(|w| w.number_path.is_some()) => Number::FromWebhook,
            None => {
                check.error(tpath.key("number"), "a target needs a number (or a webhook with number_path)");
                Number::Undialable("".into())
            }
            Some(text) => match Dial::parse(&text) {
                Ok(dial) => Number::Dial(dial),
                Err(e) => {
                    check.warn(
                        tpath.key("number"),
                        format!("{text:?} cannot be dialled ({e}): the target answers undialable_expression"),
                    );
                    Number::Undialable(text.into_boxed_str())
                }
            },
        };
        if t.weight == 0 {
            check.error(tpath.key("weight"), "must be at least 1");
        }
        let zone = match t.time_zone.as_deref() {
            None => check.zone("UTC", tpath.key("time_zone")),
            Some(name) => check.zone(name, tpath.key("time_zone")),
        };
        let hours = t.business_hours.map(|shifts| {
            let shifts: Vec<Shift> = shifts
                .iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    let shift = Shift {
                        day_of_week: s.day_of_week,
                        time_open: s.time_open.unwrap_or(0),
                        time_close: s.time_close.unwrap_or(2400),
                        work_day: s.work_day,
                        inverted: s.inverted,
                    };
                    // Compile each shift alone first, to name the bad one.
                    match Hours::new(&[shift]) {
                        Ok(_) => Some(shift),
                        Err(e) => {
                            check.error(tpath.key("business_hours").index(j), e.to_string());
                            None
                        }
                    }
                })
                .collect();
            // Each shift compiled alone above, so together they do too.
            Hours::new(&shifts).unwrap_or_else(|_| Hours::closed())
        });
        let mut filters = Vec::new();
        for (tag, patterns) in t.filters {
            let fpath = tpath.key("filters").key(&tag);
            let name = tag.to_ascii_lowercase();
            let special = matches!(name.as_str(), "caller_number" | "publisher_id");
            if params::check_name(&name).is_err() || (params::RESERVED.contains(&name.as_str()) && !special) {
                check.error(fpath.clone(), format!("{tag:?} is not a tag a ping can carry"));
            }
            if patterns.is_empty() {
                check.error(fpath.clone(), "needs at least one pattern (use [\"*\"] for any value)");
            }
            if patterns.iter().any(|p| p.is_empty()) {
                check.error(fpath, "patterns cannot be empty");
            }
            filters.push(Filter {
                tag: name.into_boxed_str(),
                patterns: patterns.iter().map(|p| Pattern::new(p)).collect(),
            });
        }
        let dedupe_secs = t.dedupe_secs.unwrap_or(0);
        if dedupe_secs > MAX_DEDUPE_SECS {
            check.error(tpath.key("dedupe_secs"), format!("must be at most {MAX_DEDUPE_SECS} (a year)"));
        }
        let limits = Limits {
            hourly: t.caps.hourly,
            daily: t.caps.daily,
            monthly: t.caps.monthly,
            hard: t.caps.hard,
            concurrency: t.concurrency_cap,
        };
        target_ids.push(t.id.clone());
        targets.push(routing::Target {
            id: Sym::intern(&t.id),
            name: t.name.unwrap_or_else(|| t.id.clone()).into_boxed_str(),
            number,
            priority: t.priority,
            weight: t.weight.max(1),
            paused: t.paused,
            zone,
            hours,
            filters,
            limits,
            dedupe_ms: dedupe_secs.min(MAX_DEDUPE_SECS) * 1000,
            state: Arc::default(),
            webhook: webhook.map(Box::new),
        });
    }
    if targets.is_empty() {
        check.warn(path.key("targets"), "no targets: every ping answers no-target");
    }

    let mut keys = Vec::new();
    if c.rtb_keys.is_empty() {
        check.warn(path.key("rtb_keys"), "no rtb_keys: no ping can reach this campaign");
    }
    for (i, k) in c.rtb_keys.into_iter().enumerate() {
        let kpath = path.key("rtb_keys").index(i);
        if k.key.is_empty() || k.key.len() > 256 || k.key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            check.error(kpath.key("key"), "must be 1 to 256 characters without spaces");
        }
        if !seen_keys.insert(k.key.clone()) {
            check.error(kpath.key("key"), format!("duplicate rtb key {:?}", k.key));
        }
        if k.ttl_secs == 0 || k.ttl_secs > MAX_TTL_SECS {
            check.error(kpath.key("ttl_secs"), format!("must be between 1 and {MAX_TTL_SECS}"));
        }
        if k.timeout_ms == 0 || k.timeout_ms > MAX_TIMEOUT_MS {
            check.error(kpath.key("timeout_ms"), format!("must be between 1 and {MAX_TIMEOUT_MS}"));
        }
        let inbound_number = k.inbound_number.as_deref().and_then(|n| {
            let p = check.phone(kpath.key("inbound_number"), n)?;
            if !tracking.contains(&p) {
                check.error(
                    kpath.key("inbound_number"),
                    format!("{p} is not one of the campaign's tracking_numbers"),
                );
            }
            Some(p)
        });
        let shield = match &k.ping_shield {
            Some(overrides) => shield(check, &kpath.key("ping_shield"), shield_defaults, overrides),
            None => shield_defaults.clone(),
        };
        keys.push(Key {
            shield,
            id: Sym::intern(&k.key),
            key: k.key.into_boxed_str(),
            ttl_ms: k.ttl_secs.saturating_mul(1000),
            timeout_ms: k.timeout_ms,
            add_to_caps_on_reserved: k.add_to_caps_on_status_reserved,
            inbound_number,
            state: Arc::default(),
        });
    }

    let mut criteria = Vec::new();
    for (i, cr) in c.conversion_criteria.into_iter().enumerate() {
        let cpath = path.key("conversion_criteria").index(i);
        check.id(cpath.key("publisher_id"), &cr.publisher_id);
        if cr.target_ids.as_ref().is_some_and(|ids| ids.is_empty()) {
            check.error(
                cpath.key("target_ids"),
                "is empty: list the targets the criterion is for, or leave it out for all",
            );
        }
        let targets = cr.target_ids.map(|ids| {
            ids.iter()
                .enumerate()
                .filter_map(|(j, id)| {
                    if target_ids.contains(id) {
                        Some(Sym::intern(id))
                    } else {
                        check.error(
                            cpath.key("target_ids").index(j),
                            format!("no target {id:?} in this campaign"),
                        );
                        None
                    }
                })
                .collect()
        });
        let payout = match (cr.payout, cr.payout_percent, cr.payout_tag) {
            (Some(p), None, None) if p.is_finite() && (0.0..=MAX_PAYOUT).contains(&p) => {
                Payout::Fixed((p * 1000.0).round() as u64)
            }
            (Some(p), None, None) => {
                check.error(cpath.key("payout"), format!("{p} is not a payout between 0 and {MAX_PAYOUT}"));
                Payout::Fixed(0)
            }
            (None, Some(pct), Some(tag)) => {
                if !(pct.is_finite() && (0.0..=MAX_PERCENT).contains(&pct)) {
                    check.error(
                        cpath.key("payout_percent"),
                        format!("{pct} is not a percent between 0 and {MAX_PERCENT}"),
                    );
                }
                check.tag_name(cpath.key("payout_tag"), &tag);
                Payout::Percent {
                    thousandths_of_percent: (pct.clamp(0.0, MAX_PERCENT) * 1000.0).round() as u64,
                    tag: tag.to_ascii_lowercase().into_boxed_str(),
                }
            }
            (None, Some(_), None) => {
                check.error(
                    cpath.key("payout_percent"),
                    "payout_percent needs payout_tag: the tag it is a percent of",
                );
                Payout::Fixed(0)
            }
            (None, None, _) => {
                check.error(cpath.clone(), "a criterion needs payout, or payout_percent with payout_tag");
                Payout::Fixed(0)
            }
            _ => {
                check.error(cpath.key("payout"), "set payout, or payout_percent with payout_tag, not both");
                Payout::Fixed(0)
            }
        };
        let seconds = match (cr.duration_secs, cr.duration_tag) {
            (Some(s), None) if s <= 86_400 => Seconds::Fixed(s as u32),
            (Some(s), None) => {
                check.error(cpath.key("duration_secs"), format!("{s} is over a day (86400)"));
                Seconds::Fixed(0)
            }
            (None, Some(tag)) => {
                check.tag_name(cpath.key("duration_tag"), &tag);
                Seconds::Tag(tag.to_ascii_lowercase().into_boxed_str())
            }
            (None, None) => {
                check.error(cpath.clone(), "a criterion needs duration_secs or duration_tag");
                Seconds::Fixed(0)
            }
            (Some(_), Some(_)) => {
                check.error(cpath.key("duration_secs"), "set duration_secs or duration_tag, not both");
                Seconds::Fixed(0)
            }
        };
        criteria.push(Criterion {
            publisher: (cr.publisher_id != "*").then(|| cr.publisher_id.into_boxed_str()),
            targets,
            payout,
            seconds,
        });
    }

    let mode = match c.routing {
        schema::Routing::Priority => Mode::Priority,
        schema::Routing::HighestPayout => Mode::HighestPayout,
    };
    Campaign::new(
        Sym::intern(&c.id),
        c.name.unwrap_or_else(|| c.id.clone()).into_boxed_str(),
        tracking,
        mode,
        keys,
        criteria,
        targets,
    )
}

fn webhook(check: &mut Checker, path: &Path, w: schema::Webhook) -> Webhook {
    let url = Template::parse(&w.url);
    // The URL must parse whatever the tags hold.
    let sample = url.render(|_| Some("x".into()), Escape::Url);
    match reqwest::Url::parse(&sample) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => check.error(path.key("url"), format!("{:?} is not an http(s) URL", w.url)),
    }
    if Template::parse(webhook::origin(&w.url)).has_tags() {
        // A publisher's tag would choose where the request (and the
        // buyer's headers, an API key among them) goes.
        check.error(
            path.key("url"),
            format!(
                "{:?} has a placeholder in its scheme, host or port: only its path and query may have them",
                w.url
            ),
        );
    }
    if webhook::has_dot_segment(&w.url) {
        // Such segments are taken out of rendered URLs (see `webhook`).
        check.error(
            path.key("url"),
            format!("{:?} has a '.' or '..' segment: write the path it means", w.url),
        );
    }
    let method = match w.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        None if w.body.is_some() => Method::Post,
        None => Method::Get,
        Some(other) => {
            check.error(path.key("method"), format!("{other:?} is not GET or POST"));
            Method::Get
        }
    };
    if method == Method::Get && w.body.is_some() {
        check.error(path.key("body"), "a body needs method = \"POST\"");
    }
    let mut headers = Vec::new();
    for (name, value) in &w.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => check.error(
                path.key("headers").key(name),
                format!("{name:?}: {value:?} is not a valid HTTP header"),
            ),
        }
    }
    let mut path_of = |field: &str, text: &str| match WebhookPath::parse(text) {
        Ok(p) => Some(p),
        Err(e) => {
            check.error(path.key(field), e);
            None
        }
    };
    let bid_path = path_of("bid_path", &w.bid_path);
    let timer_path = w.timer_path.as_deref().and_then(|t| path_of("timer_path", t));
    let number_path = w.number_path.as_deref().and_then(|t| path_of("number_path", t));
    if let Some(ms) = w.timeout_ms
        && (ms == 0 || ms > MAX_TIMEOUT_MS)
    {
        check.error(path.key("timeout_ms"), format!("must be between 1 and {MAX_TIMEOUT_MS}"));
    }
    Webhook {
        url,
        method,
        body: w.body.as_deref().map(Template::parse),
        headers,
        // A bad path has been reported; the file will not load.
        bid_path: bid_path.unwrap_or_default(),
        timer_path,
        number_path,
        timeout_ms: w.timeout_ms,
    }
}

/// Shield settings: `base` with the fields `section` sets, checked.
fn shield(
    check: &mut Checker,
    path: &Path,
    base: &shield::Settings,
    section: &schema::PingShield,
) -> shield::Settings {
    let mut s = base.clone();
    if let Some(scope) = section.dedupe_scope {
        s.dedupe_scope = match scope {
            schema::DedupeScope::Key => DedupeScope::Key,
            schema::DedupeScope::Campaign => DedupeScope::Campaign,
        };
    }
    if let Some(v) = section.rate_limit_per_sec {
        if v > 1_000_000 {
            check.error(path.key("rate_limit_per_sec"), "must be at most 1000000 (0 turns it off)");
        }
        s.rate_limit_per_sec = v.min(1_000_000);
    }
    if let Some(v) = section.burst {
        s.burst = v;
    }
    if let Some(v) = section.min_claim_ratio {
        if !(0.0..=1.0).contains(&v) {
            check.error(
                path.key("min_claim_ratio"),
                format!("{v} is not a ratio between 0 and 1 (0 turns it off)"),
            );
        }
        s.min_claim_ratio = v.clamp(0.0, 1.0);
    }
    if let Some(v) = section.claim_ratio_window_secs {
        if v == 0 || v > 31 * 86_400 {
            check.error(path.key("claim_ratio_window_secs"), "must be between 1 and 2678400 (31 days)");
        }
        s.claim_ratio_window_secs = v.clamp(1, 31 * 86_400);
    }
    if let Some(v) = section.claim_ratio_min_pings {
        s.claim_ratio_min_pings = v;
    }
    if let Some(v) = section.throttled_allow_one_in {
        if v == 0 {
            check.error(path.key("throttled_allow_one_in"), "must be at least 1");
        }
        s.throttled_allow_one_in = v.max(1);
    }
    s
}
