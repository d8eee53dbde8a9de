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
            format!("{line}:{col}: ")
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
        assert!(err.problems[0].starts_with("x.toml:3:1: unknown field `listen_port`"), "{err}");
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

    #[test]
    fn env_tokens_override_the_file() {
        let text = "[server]\nadmin_token = \"file\"\n";
        let env = |name: &str| (name == ENV_ADMIN_TOKEN).then(|| "env".to_owned());
        let routing = parse_with_env(text, "t.toml", env).unwrap();
        assert_eq!(routing.server.admin_token.as_deref(), Some("env"));
        assert!(routing.warnings.iter().any(|w| w.contains("switch_token")));
    }
}
