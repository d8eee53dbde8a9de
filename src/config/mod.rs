//! The config file: its TOML schema, loading, validation with located
//! messages, and the compiled [`Routing`] the hot path reads.
//!
//! Loading is three steps, each with one job: `schema` deserializes the text
//! (serde reports syntax errors, unknown fields and wrong types with their
//! position), `validate` checks what serde cannot and compiles a `Routing`,
//! and `locate` turns the field path of each problem into `file:line:col`.

mod locate;
pub mod routing;
mod schema;
mod validate;
pub mod watch;

use std::fmt;
use std::path::Path;

pub use routing::{Campaign, Criterion, Key, Mode, Number, Payout, Routing, Seconds, Target};
pub use validate::Problem;

/// The built-in demo config: the commented example of `config/rtbd.toml`.
pub const DEMO: &str = include_str!("../../config/rtbd.toml");
/// The source name of the built-in demo config.
pub const DEMO_SOURCE: &str = "built-in demo";

/// Environment variables that override settings of the file.
pub const ENV_ADMIN_TOKEN: &str = "RTBD_ADMIN_TOKEN";
pub const ENV_SWITCH_TOKEN: &str = "RTBD_SWITCH_TOKEN";

/// Why a config did not load: every problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and compiles the config file at `path`, with the environment's
/// token overrides.
pub fn load(path: &Path) -> Result<Routing, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: source.clone(),
        problems: vec![format!("{source}: cannot read: {e}")],
    })?;
    parse(&text, &source)
}

/// Compiles config `text`; `source` names it in messages. Token overrides
/// come from the process environment.
pub fn parse(text: &str, source: &str) -> Result<Routing, ConfigError> {
    parse_with_env(text, source, |name| std::env::var(name).ok())
}

/// Compiles config `text`, reading token overrides through `env`.
pub fn parse_with_env(
    text: &str,
    source: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Routing, ConfigError> {
    let mut file: schema::File = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let (line, col) = locate::line_col(text, span.start);
            // A value of the wrong type: say which field it is.
            match locate::path_at(text, span.start).filter(|p| *p != locate::Path::root()) {
                Some(path) => format!("{line}:{col}: {path}: "),
                None => format!("{line}:{col}: "),
            }
        });
        ConfigError {
            source: source.to_owned(),
            problems: vec![format!("{source}:{at}{}", e.message().trim_end())],
        }
    })?;
    if let Some(token) = env(ENV_ADMIN_TOKEN).filter(|t| !t.is_empty()) {
        file.server.admin_token = Some(token);
    }
    if let Some(token) = env(ENV_SWITCH_TOKEN).filter(|t| !t.is_empty()) {
        file.server.switch_token = Some(token);
    }
    let render = |p: &Problem| {
        let at = locate::span_of(text, &p.path).map_or(String::new(), |span| {
            let (line, col) = locate::line_col(text, span.start);
            format!("{line}:{col}: ")
        });
        let kind = if p.warning { "warning: " } else { "" };
        format!("{source}:{at}{kind}{}: {}", p.path, p.message)
    };
    match validate::validate(file) {
        Ok((mut routing, problems)) => {
            routing.source = source.to_owned();
            routing.warnings = problems.iter().map(render).collect();
            Ok(routing)
        }
        Err(problems) => Err(ConfigError {
            source: source.to_owned(),
            problems: problems.iter().filter(|p| !p.warning).map(render).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_demo_config_loads() {
        let routing = parse_with_env(DEMO, DEMO_SOURCE, no_env).unwrap();
        assert!(!routing.campaigns.is_empty());
        assert!(routing.key_count() > 0);
    }

    #[test]
    fn unknown_fields_are_located_errors() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n";
        let err = parse_with_env(text, "x.toml", no_env).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(
            err.problems[0].starts_with("x.toml:3:1: server.listen_port: unknown field `listen_port`"),
            "{err}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_field() {
        let cases = [
            ("[server]\nlisten = 5\n", "x.toml:2:10: server.listen: invalid type: integer `5`"),
            (
                "[[campaigns]]\nid = \"c\"\n[[campaigns]]\nid = \"d\"\n[[campaigns.targets]]\nid = \"t\"\ncaps = { daily = -1 }\n",
                "x.toml:7:18: campaigns[1].targets[0].caps.daily: invalid value: integer `-1`",
            ),
            ("[[campaigns]]\nid = [1]\n", "x.toml:2:6: campaigns[0].id: invalid type: sequence"),
            ("bogus = 1\n", "x.toml:1:1: bogus: unknown field `bogus`"),
        ];
        for (text, expected) in cases {
            let err = parse_with_env(text, "x.toml", no_env).unwrap_err();
            assert!(err.problems[0].starts_with(expected), "{text}:\n  got {err}\n  want {expected}");
        }
        // A syntax error has no field to name.
        let err = parse_with_env("[server\n", "x.toml", no_env).unwrap_err();
        assert!(err.problems[0].starts_with("x.toml:1:8: unclosed table"), "{err}");
    }

    #[test]
    fn validation_names_file_line_and_field() {
        let text = r#"
[[campaigns]]
id = "c"
tracking_numbers = ["+18005550100"]

[[campaigns.rtb_keys]]
key = "k"
ttl_secs = 0

[[campaigns.targets]]
id = "t"
number = "+18005550101"
weight = 0
"#;
        let err = parse_with_env(text, "bad.toml", no_env).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("bad.toml:8:12: campaigns[0].rtb_keys[0].ttl_secs: must be between 1 and 86400"),
            "{all}"
        );
        assert!(all.contains("bad.toml:13:10: campaigns[0].targets[0].weight: must be at least 1"), "{all}");
    }

    /// The problems of a one-target campaign whose target and criterion
    /// carry `target_extra` and `criterion`.
    fn problems(target_extra: &str, criterion: &str) -> String {
        let text = format!(
            "[[campaigns]]\nid = \"c\"\ntracking_numbers = [\"+18005550100\"]\n\n\
             [[campaigns.conversion_criteria]]\npublisher_id = \"*\"\n{criterion}\n\n\
             [[campaigns.targets]]\nid = \"t\"\nnumber = \"+18005550101\"\n{target_extra}\n"
        );
        match parse_with_env(&text, "v.toml", no_env) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const FIXED: &str = "payout = 1\nduration_secs = 60";

    #[test]
    fn routing_rule_fields_are_validated() {
        assert_eq!(problems("time_zone = \"America/New_York\"", FIXED), "");
        for time in ["\"9:00\"", "\"09:00\"", "\"900\"", "\"0900\"", "900", "\"24:00\""] {
            let hours = format!("business_hours = [ {{ day_of_week = 1, time_open = {time} }} ]");
            assert_eq!(problems(&hours, FIXED), "", "{time}");
        }
        let cases = [
            (
                "time_zone = \"Mars/Base\"",
                FIXED,
                "campaigns[0].targets[0].time_zone: \"Mars/Base\" is not an IANA time zone",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = 1700, time_close = 900 } ]",
                FIXED,
                "campaigns[0].targets[0].business_hours[0]: time_close 0900 is not after time_open 1700; set inverted = true",
            ),
            (
                "business_hours = [ { day_of_week = 7 } ]",
                FIXED,
                "day_of_week 7 is not 0 (Sunday) to 6 (Saturday)",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = 975 } ]",
                FIXED,
                "975 is not a time of day as HHMM",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"9am\" } ]",
                FIXED,
                "\"9am\" is not a time as HHMM",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"1:5\" } ]",
                FIXED,
                "\"1:5\" is not a time as HHMM",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"9\" } ]",
                FIXED,
                "\"9\" is not a time as HHMM",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"12:3\" } ]",
                FIXED,
                "\"12:3\" is not a time as HHMM",
            ),
            ("", "target_ids = []\npayout = 1\nduration_secs = 60", "target_ids: is empty"),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"é0\" } ]",
                FIXED,
                "\"é0\" is not a time as HHMM",
            ),
            (
                "business_hours = [ { day_of_week = 1, time_open = \"0é0\" } ]",
                FIXED,
                "\"0é0\" is not a time as HHMM",
            ),
            ("caps = { hourly = -1 }", FIXED, "invalid value: integer `-1`"),
            ("caps = { weekly = 3 }", FIXED, "unknown field `weekly`"),
            ("concurrency_cap = -2", FIXED, "invalid value: integer `-2`"),
            ("dedupe_secs = 99999999999", FIXED, "dedupe_secs: must be at most 31536000"),
            ("filters = { \"bad name\" = [\"x\"] }", FIXED, "\"bad name\" is not a tag a ping can carry"),
            ("filters = { state = [] }", FIXED, "needs at least one pattern"),
            (
                "",
                "payout_percent = 1001\npayout_tag = \"bid\"\nduration_secs = 60",
                "1001 is not a percent between 0 and 1000",
            ),
            (
                "",
                "payout_percent = -5\npayout_tag = \"bid\"\nduration_secs = 60",
                "-5 is not a percent between 0 and 1000",
            ),
            ("", "payout_percent = 70\nduration_secs = 60", "payout_percent needs payout_tag"),
            ("", "payout = 1\npayout_percent = 70\npayout_tag = \"b\"\nduration_secs = 60", "not both"),
            ("", "payout = 1", "needs duration_secs or duration_tag"),
            ("", "payout = 1\nduration_tag = \"has space\"", "\"has space\" is not a tag name"),
        ];
        for (target, criterion, expected) in cases {
            let got = problems(target, criterion);
            assert!(got.contains(expected), "{target} / {criterion}:\n  got {got}\n  want {expected}");
            assert!(got.starts_with("v.toml:"), "{got}");
        }
    }

    #[test]
    fn webhooks_are_validated() {
        let hook = |fields: &str| {
            let target = format!("[campaigns.targets.webhook]\n{fields}");
            problems(&target, FIXED)
        };
        assert_eq!(hook("url = \"http://b.example/bid?c=[caller_number]\"\nbid_path = \"a.0.b\""), "");
        // An IPv6 host's brackets are not a placeholder.
        assert_eq!(hook("url = \"http://[::1]:8080/[zip]?c=[caller_number]\"\nbid_path = \"bid\""), "");
        let cases = [
            (
                "url = \"ftp://b/[x]\"\nbid_path = \"bid\"",
                "webhook.url: \"ftp://b/[x]\" is not an http(s) URL",
            ),
            ("url = \"not a url\"\nbid_path = \"bid\"", "is not an http(s) URL"),
            ("url = \"http://b/a/../bid\"\nbid_path = \"bid\"", "has a '.' or '..' segment"),
            (
                "url = \"http://[buyer_host]:8080/bid\"\nbid_path = \"bid\"",
                "webhook.url: \"http://[buyer_host]:8080/bid\" has a placeholder in its scheme, host or port",
            ),
            (
                "url = \"http://b.example[zip]/bid\"\nbid_path = \"bid\"",
                "placeholder in its scheme, host or port",
            ),
            (
                "url = \"http://b.example:[port]\"\nbid_path = \"bid\"",
                "placeholder in its scheme, host or port",
            ),
            (
                "url = \"[scheme]://b.example/\"\nbid_path = \"bid\"",
                "placeholder in its scheme, host or port",
            ),
            (
                "url = \"http://b/\"\nmethod = \"PUT\"\nbid_path = \"bid\"",
                "webhook.method: \"PUT\" is not GET or POST",
            ),
            (
                "url = \"http://b/\"\nmethod = \"GET\"\nbody = \"{}\"\nbid_path = \"bid\"",
                "a body needs method = \"POST\"",
            ),
            ("url = \"http://b/\"\nbid_path = \"a..b\"", "webhook.bid_path: \"a..b\" has an empty segment"),
            (
                "url = \"http://b/\"\nbid_path = \"bid\"\ntimer_path = \"\"",
                "webhook.timer_path: a path cannot be empty",
            ),
            (
                "url = \"http://b/\"\nbid_path = \"bid\"\nheaders = { \"bad header\" = \"x\" }",
                "is not a valid HTTP header",
            ),
            (
                "url = \"http://b/\"\nbid_path = \"bid\"\ntimeout_ms = 0",
                "webhook.timeout_ms: must be between 1 and 60000",
            ),
            ("url = \"http://b/\"", "missing field `bid_path`"),
            ("url = \"http://b/\"\nbid_path = \"bid\"\nbid = 3", "unknown field `bid`"),
        ];
        for (fields, expected) in cases {
            let got = hook(fields);
            assert!(got.contains(expected), "{fields}:\n  got {got}\n  want {expected}");
        }
        // Without a number, the webhook must say where the number is.
        let text = "[[campaigns]]\nid = \"c\"\ntracking_numbers = [\"+18005550100\"]\n\
                    [[campaigns.targets]]\nid = \"t\"\n[campaigns.targets.webhook]\nurl = \"http://b/\"\nbid_path = \"bid\"\n";
        let err = parse_with_env(text, "w.toml", no_env).unwrap_err().to_string();
        assert!(err.contains("a target needs a number (or a webhook with number_path)"), "{err}");
        assert!(
            parse_with_env(&text.replace("bid_path", "number_path = \"phone\"\nbid_path"), "w.toml", no_env)
                .is_ok()
        );
    }

    #[test]
    fn ping_shield_settings_merge_and_are_validated() {
        let base = "[ping_shield]\nrate_limit_per_sec = 100\nmin_claim_ratio = 0.01\n\n\
                    [[campaigns]]\nid = \"c\"\ntracking_numbers = [\"+18005550100\"]\n\
                    [[campaigns.rtb_keys]]\nkey = \"a\"\n\
                    [[campaigns.rtb_keys]]\nkey = \"b\"\n[campaigns.rtb_keys.ping_shield]\nburst = 7\ndedupe_scope = \"campaign\"\n";
        let routing = parse_with_env(base, "s.toml", no_env).unwrap();
        let (_, a) = routing.key("a").unwrap();
        let (_, b) = routing.key("b").unwrap();
        assert_eq!((a.shield.rate_limit_per_sec, a.shield.burst), (100, 0));
        assert_eq!(a.shield.dedupe_scope, crate::shield::DedupeScope::Key);
        assert_eq!((b.shield.rate_limit_per_sec, b.shield.burst, b.shield.min_claim_ratio), (100, 7, 0.01));
        assert_eq!(b.shield.dedupe_scope, crate::shield::DedupeScope::Campaign);
        for (section, expected) in [
            ("dedupe_scope = \"publisher\"", "unknown variant `publisher`"),
            ("min_claim_ratio = 1.5", "ping_shield.min_claim_ratio: 1.5 is not a ratio between 0 and 1"),
            ("claim_ratio_window_secs = 0", "ping_shield.claim_ratio_window_secs: must be between 1"),
            ("throttled_allow_one_in = 0", "ping_shield.throttled_allow_one_in: must be at least 1"),
            ("rate_limit_per_sec = -1", "invalid value: integer `-1`"),
            ("rate_limit_per_sec = 2000000", "must be at most 1000000"),
            ("burst_size = 3", "unknown field `burst_size`"),
        ] {
            let err = parse_with_env(&format!("[ping_shield]\n{section}\n"), "s.toml", no_env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{section}: {err}");
            assert!(err.starts_with("s.toml:2:"), "{section}: {err}");
        }
    }

    #[test]
    fn env_tokens_override_the_file() {
        let text = "[server]\nadmin_token = \"file\"\n";
        let env = |name: &str| (name == ENV_ADMIN_TOKEN).then(|| "env".to_owned());
        let routing = parse_with_env(text, "t.toml", env).unwrap();
        assert_eq!(routing.server.admin_token.as_deref(), Some("env"));
        assert!(routing.warnings.iter().any(|w| w.contains("switch_token")));
    }
}
