//! Tag filters: a target only takes callers whose tags match.
//!
//! `filters = { caller_state = ["NY", "NJ"], caller_zip = ["100*"] }`: every
//! named tag must be present and match one of its patterns. A pattern ending
//! in `*` matches by prefix (`*` alone matches any value); values compare
//! without regard to ASCII case.

/// One pattern, lower-cased at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        let lower = text.to_ascii_lowercase();
        match lower.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact(lower.into()),
        }
    }

    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(p) => value.eq_ignore_ascii_case(p),
            Pattern::Prefix(p) => {
                value.len() >= p.len() && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

/// The filter on one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub tag: Box<str>,
    pub patterns: Vec<Pattern>,
}

/// Most bytes of a tag's value a filter's verdict quotes.
const SHOWN_VALUE: usize = 40;

impl Filter {
    /// Why a caller with `value` for this tag is turned away, or `None` if it
    /// passes.
    pub fn reject(&self, value: Option<&str>) -> Option<String> {
        match value {
            None => Some(format!("tag {} is missing", self.tag)),
            Some(v) if self.patterns.iter().any(|p| p.matches(v)) => None,
            Some(v) => {
                // A value is kept short in the ping's record: it says which
                // value, and a long one would be kept once per target.
                let shown = crate::params::truncate(v, SHOWN_VALUE);
                let more = if shown.len() < v.len() { "…" } else { "" };
                Some(format!("tag {} is {shown:?}{more}, which the target does not take", self.tag))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_any() {
        assert!(Pattern::new("NY").matches("ny"));
        assert!(Pattern::new("ny").matches("NY"));
        assert!(!Pattern::new("NY").matches("NYC"));
        assert!(Pattern::new("100*").matches("10001"));
        assert!(Pattern::new("100*").matches("100"));
        assert!(!Pattern::new("100*").matches("1100"));
        assert!(!Pattern::new("100*").matches("10"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("É*").matches("É1"), "non-ASCII compares exactly");
    }

    #[test]
    fn reasons_name_the_tag() {
        let f = Filter { tag: "caller_state".into(), patterns: vec![Pattern::new("NY"), Pattern::new("NJ")] };
        assert_eq!(f.reject(Some("nj")), None);
        assert_eq!(f.reject(None).unwrap(), "tag caller_state is missing");
        assert_eq!(
            f.reject(Some("CA")).unwrap(),
            "tag caller_state is \"CA\", which the target does not take"
        );
        // A long value is quoted in part, cut at a character's edge.
        let long = format!("{}é{}", "a".repeat(39), "b".repeat(200));
        let why = f.reject(Some(&long)).unwrap();
        assert_eq!(
            why,
            format!("tag caller_state is \"{}\"…, which the target does not take", "a".repeat(39))
        );
    }
}
