//! Routing one ping: judge every target of the campaign, then pick the one
//! the call goes to.
//!
//! Each target passes the checks of the contract in order (paused, pricing,
//! transfer number) or is passed over with a detailed status that goes into
//! the record's `call_flow`. Among the targets left, the lowest priority
//! wins, by weighted random among equals.

use smallvec::SmallVec;

use crate::config::{Campaign, Mode, Number, Target};
use crate::phone::Dial;
use crate::pricing::{self, Price};
use crate::records::Event;
use crate::status::{Detailed, Info, Status, UNPRICEABLE};

/// What routing needs to know about the ping.
pub struct Ping<'a> {
    pub publisher: &'a str,
    pub now_ms: u64,
}

/// The target a call goes to, and on what terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Winner {
    /// Index into the campaign's targets.
    pub target: usize,
    pub price: Price,
    pub transfer: Dial,
}

/// How routing ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Routed {
    Winner(Winner),
    /// Nothing to reserve: `status` is `no-target` or `rejected`, `reason` the
    /// detailed status shared by the most targets.
    Nobody {
        status: Status,
        reason: Detailed,
        info: Info,
    },
}

struct Candidate {
    target: usize,
    price: Price,
    transfer: Dial,
}

/// Judges every target of `campaign` for `ping`, writing each target passed
/// over into `flow`, and picks the winner.
pub fn route(campaign: &Campaign, ping: &Ping, flow: &mut Vec<Event>) -> Routed {
    if campaign.targets.is_empty() {
        return nobody(Status::NoTarget, Detailed::NoTarget, Detailed::NoTarget.summary().into());
    }
    if !pricing::any_for(campaign, ping.publisher) {
        flow.push(Event {
            at_ms: ping.now_ms,
            target: None,
            status: Detailed::Rejected,
            info: UNPRICEABLE.into(),
        });
        return nobody(Status::Rejected, Detailed::Rejected, UNPRICEABLE.into());
    }

    let mut candidates: SmallVec<[Candidate; 8]> = SmallVec::new();
    let mut passed_over = PassedOver::default();
    for (i, target) in campaign.targets.iter().enumerate() {
        match judge(campaign, target, ping) {
            Ok(c) => candidates.push(Candidate { target: i, price: c.0, transfer: c.1 }),
            Err((status, info)) => {
                passed_over.add(status, &info);
                flow.push(Event { at_ms: ping.now_ms, target: Some(target.id), status, info });
            }
        }
    }

    match pick(campaign, &candidates) {
        Some(i) => {
            let c = candidates.swap_remove(i);
            Routed::Winner(Winner { target: c.target, price: c.price, transfer: c.transfer })
        }
        None => passed_over.verdict(),
    }
}

/// A target's price and number, or why it is passed over.
fn judge(campaign: &Campaign, target: &Target, ping: &Ping) -> Result<(Price, Dial), (Detailed, Info)> {
    if target.paused {
        return Err((Detailed::TargetsPaused, Info::None));
    }
    let price = pricing::price(campaign, ping.publisher, target.id)
        .ok_or((Detailed::Rejected, UNPRICEABLE.into()))?;
    match &target.number {
        Number::Dial(dial) => Ok((price, dial.clone())),
        Number::Undialable(text) => Err((
            Detailed::UndialableExpression,
            Info::Text(format!("the number {text:?} cannot be dialled").into_boxed_str()),
        )),
    }
}

/// The index of the winning candidate.
fn pick(campaign: &Campaign, candidates: &[Candidate]) -> Option<usize> {
    let targets = &campaign.targets;
    match campaign.mode {
        Mode::Priority => {
            let best = candidates.iter().map(|c| targets[c.target].priority).min()?;
            weighted(candidates, |c| targets[c.target].priority == best, |c| targets[c.target].weight)
        }
    }
}

/// Weighted random choice among the candidates `eligible` admits.
fn weighted(
    candidates: &[Candidate],
    eligible: impl Fn(&Candidate) -> bool,
    weight: impl Fn(&Candidate) -> u32,
) -> Option<usize> {
    let total: u64 = candidates.iter().filter(|c| eligible(c)).map(|c| u64::from(weight(c))).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rand::random_range(0..total);
    for (i, c) in candidates.iter().enumerate() {
        if !eligible(c) {
            continue;
        }
        let w = u64::from(weight(c));
        if ticket < w {
            return Some(i);
        }
        ticket -= w;
    }
    None
}

fn nobody(status: Status, reason: Detailed, info: Info) -> Routed {
    Routed::Nobody { status, reason, info }
}

/// Tally of why targets were passed over.
#[derive(Default)]
struct PassedOver {
    /// (status, how many targets, info of the first).
    counts: SmallVec<[(Detailed, u32, Info); 4]>,
}

impl PassedOver {
    fn add(&mut self, status: Detailed, info: &Info) {
        match self.counts.iter_mut().find(|(s, _, _)| *s == status) {
            Some(entry) => entry.1 += 1,
            None => self.counts.push((status, 1, info.clone())),
        }
    }

    /// `no-target` (or `rejected` when every target was rejected), with the
    /// detailed status shared by the most targets; ties go to the one seen
    /// first.
    fn verdict(self) -> Routed {
        let mut best: Option<&(Detailed, u32, Info)> = None;
        for entry in &self.counts {
            if best.is_none_or(|b| entry.1 > b.1) {
                best = Some(entry);
            }
        }
        let Some((reason, _, info)) = best else {
            return nobody(Status::NoTarget, Detailed::NoTarget, Detailed::NoTarget.summary().into());
        };
        let all_rejected = self.counts.len() == 1 && *reason == Detailed::Rejected;
        let status = if all_rejected { Status::Rejected } else { Status::NoTarget };
        // A rejection's own words say more than a summary ("Unable to
        // determine payout…", a buyer's error); other reasons summarize.
        let info = if *reason == Detailed::Rejected { info.clone() } else { reason.summary().into() };
        nobody(status, *reason, info)
    }
}
