//! Conversion criteria: what the publisher earns for a call to a target, and
//! how long the call must last to earn it.

use crate::config::{Campaign, Payout, Seconds};
use crate::status::{Info, UNPRICEABLE};
use crate::sym::Sym;

/// A publisher's terms for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    /// Thousandths of a dollar.
    pub payout_milli: u64,
    pub seconds: u32,
}

/// Largest amount a tag may carry, in thousandths of a dollar ($1,000,000).
const MAX_MILLI: u64 = 1_000_000_000;

/// True when at least one criterion of the campaign is for `publisher`.
pub fn any_for(campaign: &Campaign, publisher: &str) -> bool {
    campaign.criteria.iter().any(|c| c.matches_publisher(publisher))
}

/// The terms of the first criterion (in file order) for this publisher and
/// target, or why the call cannot be priced. `tag` looks up the ping's tags.
pub fn price<'t>(
    campaign: &Campaign,
    publisher: &str,
    target: Sym,
    tag: impl Fn(&str) -> Option<&'t str>,
) -> Result<Price, Info> {
    let criterion = campaign
        .criteria
        .iter()
        .find(|c| c.matches_publisher(publisher) && c.applies_to(target))
        .ok_or(Info::Text(UNPRICEABLE))?;
    let numeric = |name: &str| -> Result<&'t str, Info> {
        tag(name).ok_or_else(|| format!("{UNPRICEABLE}: tag {name} is missing").into())
    };
    let payout_milli = match &criterion.payout {
        Payout::Fixed(milli) => *milli,
        Payout::Percent { thousandths_of_percent, tag } => {
            let text = numeric(tag)?;
            let base = parse_dollars(text)
                .ok_or_else(|| Info::from(format!("{UNPRICEABLE}: tag {tag} is {text:?}, not an amount")))?;
            // Round half up to the thousandth of a dollar.
            ((u128::from(base) * u128::from(*thousandths_of_percent) + 50_000) / 100_000) as u64
        }
    };
    let seconds = match &criterion.seconds {
        Seconds::Fixed(s) => *s,
        Seconds::Tag(tag) => {
            let text = numeric(tag)?;
            parse_seconds(text).ok_or_else(|| {
                Info::from(format!("{UNPRICEABLE}: tag {tag} is {text:?}, not a number of seconds"))
            })?
        }
    };
    Ok(Price { payout_milli, seconds })
}

/// Parses a non-negative amount of dollars (`12`, `12.5`, `0.0125`, `+3`)
/// into thousandths, rounding half up. Exponents, signs other than `+`, and
/// amounts over $1,000,000 are refused.
pub fn parse_dollars(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || whole.len() > 10 {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let digits = frac.as_bytes();
    let mut milli = 0u64;
    for i in 0..3 {
        milli = milli * 10 + digits.get(i).map_or(0, |d| u64::from(d - b'0'));
    }
    if digits.get(3).is_some_and(|&d| d >= b'5') {
        milli += 1;
    }
    let total = whole.checked_mul(1000)?.checked_add(milli)?;
    (total <= MAX_MILLI).then_some(total)
}

/// Parses a non-negative number of seconds; a fraction is dropped.
pub fn parse_seconds(text: &str) -> Option<u32> {
    let milli = parse_dollars(text)?;
    u32::try_from(milli / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars() {
        assert_eq!(parse_dollars("12"), Some(12_000));
        assert_eq!(parse_dollars("12.5"), Some(12_500));
        assert_eq!(parse_dollars(" 1.1734 "), Some(1_173));
        assert_eq!(parse_dollars("1.1735"), Some(1_174));
        assert_eq!(parse_dollars(".5"), Some(500));
        assert_eq!(parse_dollars("5."), Some(5_000));
        assert_eq!(parse_dollars("+3"), Some(3_000));
        assert_eq!(parse_dollars("0"), Some(0));
        assert_eq!(parse_dollars("1000000"), Some(MAX_MILLI));
        for bad in ["", ".", "-1", "1e3", "abc", "1.2.3", "1000000.001", "99999999999999999999", "NaN"] {
            assert_eq!(parse_dollars(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("90"), Some(90));
        assert_eq!(parse_seconds("90.9"), Some(90));
        assert_eq!(parse_seconds("-5"), None);
    }
}
