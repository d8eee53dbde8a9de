//! Conversion criteria: what the publisher earns for a call to a target, and
//! how long the call must last to earn it.

use crate::config::{Campaign, Payout, Seconds};
use crate::sym::Sym;

/// A publisher's terms for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    /// Thousandths of a dollar.
    pub payout_milli: u64,
    pub seconds: u32,
}

/// True when at least one criterion of the campaign is for `publisher`.
pub fn any_for(campaign: &Campaign, publisher: &str) -> bool {
    campaign.criteria.iter().any(|c| c.matches_publisher(publisher))
}

/// The terms of the first criterion (in file order) for this publisher and
/// target, or `None` when no criterion can price the call.
pub fn price(campaign: &Campaign, publisher: &str, target: Sym) -> Option<Price> {
    let criterion =
        campaign.criteria.iter().find(|c| c.matches_publisher(publisher) && c.applies_to(target))?;
    let Payout::Fixed(payout_milli) = criterion.payout;
    let Seconds::Fixed(seconds) = criterion.seconds;
    Some(Price { payout_milli, seconds })
}
