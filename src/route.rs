//! Routing one ping: judge every target of the campaign, then pick the one
//! the call goes to.
//!
//! Each target passes the checks of the contract in order (paused, business
//! hours, filters, caps, concurrency, pricing, transfer number) or is passed
//! over with a detailed status that goes into the record's `call_flow`.
//! Among the targets left, targets the caller already reached within their
//! `dedupe_secs` go last; then the campaign's mode picks: lowest priority
//! with weighted random among equals, or highest payout first.

use std::borrow::Cow;

use arcstr::literal;
use smallvec::SmallVec;

use crate::caps::Windows;
use crate::config::{Campaign, Mode, Number, Routing, Target};
use crate::params::Params;
use crate::phone::{Dial, Phone};
use crate::pricing::{self, Price};
use crate::records::{Event, Flow};
use crate::stats::Field;
use crate::status::{Detailed, Info, Status, UNPRICEABLE};
use crate::sym::Sym;
use crate::webhook::Verdict;

/// What routing needs to know about the ping.
pub struct Ping<'a, 'p> {
    pub publisher: &'a str,
    pub caller: Phone,
    pub params: &'a Params<'p>,
    pub now_ms: u64,
    /// Targets this caller reached, and when (for `dedupe_secs`).
    pub history: &'a [(Sym, u64)],
    /// Count the winner into its caps now (`add_to_caps_on_status_reserved`).
    pub count_caps: bool,
}

impl Ping<'_, '_> {
    /// A tag of the ping; `caller_number` (E.164) and `publisher_id` too.
    pub fn tag(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "caller_number" => Some(Cow::Owned(self.caller.to_string())),
            "publisher_id" => Some(Cow::Borrowed(self.publisher)),
            _ => self.params.tags().find(|(n, _)| *n == name).map(|(_, v)| Cow::Borrowed(v)),
        }
    }

    fn reached_recently(&self, target: &Target) -> bool {
        target.dedupe_ms > 0
            && self.history.iter().any(|&(id, at)| id == target.id && at + target.dedupe_ms > self.now_ms)
    }
}

/// The target a call goes to, and on what terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Winner {
    /// Index into the campaign's targets.
    pub target: usize,
    pub price: Price,
    pub transfer: Dial,
    /// When the winner was counted into its caps (with `count_caps`).
    pub counted_ms: Option<u64>,
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
    duplicate: bool,
}

/// The targets of a ping judged so far: candidates, buyers still to ask,
/// and why the others were passed over.
pub struct Judged {
    /// Inline up to 16: a campaign of ten targets, all open, must not
    /// allocate (768 bytes a ping, measured, with 8).
    candidates: SmallVec<[Candidate; 16]>,
    /// Targets with a webhook that passed every check before it.
    pub asks: SmallVec<[usize; 4]>,
    passed_over: PassedOver,
}

/// Judges every target up to its webhook. `Err` is a verdict reached before
/// any target: no targets, or no criteria for the publisher.
pub fn judge(campaign: &Campaign, ping: &Ping<'_, '_>, flow: &mut Flow) -> Result<Judged, Routed> {
    if campaign.targets.is_empty() {
        return Err(nobody(Status::NoTarget, Detailed::NoTarget, Detailed::NoTarget.summary().into()));
    }
    if !pricing::any_for(campaign, ping.publisher) {
        // No target is looked at: the record's one step (written with the
        // verdict) says why.
        return Err(nobody(Status::Rejected, Detailed::Rejected, UNPRICEABLE.into()));
    }
    let mut judged =
        Judged { candidates: SmallVec::new(), asks: SmallVec::new(), passed_over: PassedOver::default() };
    for (i, target) in campaign.targets.iter().enumerate() {
        target.state.tally.bump(Field::Pings);
        let verdict = screen(target, ping).and_then(|()| {
            if target.webhook.is_some() {
                // Ask only buyers some criterion could price.
                return match campaign
                    .criteria
                    .iter()
                    .any(|c| c.matches_publisher(ping.publisher) && c.applies_to(target.id))
                {
                    true => Ok(None),
                    false => Err((Detailed::Rejected, UNPRICEABLE.into())),
                };
            }
            settle_terms(campaign, target, ping, None).map(Some)
        });
        match verdict {
            Ok(None) => judged.asks.push(i),
            Ok(Some((price, transfer))) => judged.admit(target, i, price, transfer, ping, flow),
            Err((status, info)) => judged.pass_over(flow, ping.now_ms, target.id, status, info),
        }
    }
    Ok(judged)
}

impl Judged {
    fn pass_over(&mut self, flow: &mut Flow, at_ms: u64, target: Sym, status: Detailed, info: Info) {
        self.passed_over.add(status, &info);
        flow.push(Event { at_ms, target: Some(target), status, info });
    }

    fn admit(
        &mut self,
        target: &Target,
        i: usize,
        price: Price,
        transfer: Dial,
        ping: &Ping<'_, '_>,
        flow: &mut Flow,
    ) {
        let duplicate = ping.reached_recently(target);
        if duplicate {
            flow.push(Event {
                at_ms: ping.now_ms,
                target: Some(target.id),
                status: Detailed::TargetsDuplicateDeprioritized,
                info: Info::Text(literal!("the caller reached this target recently: fresh targets go first")),
            });
        }
        self.candidates.push(Candidate { target: i, price, transfer, duplicate });
    }

    /// Takes in what buyer `target` (an index into the campaign's targets)
    /// answered. `ping` must already carry the bid's tags.
    pub fn bid(
        &mut self,
        campaign: &Campaign,
        ping: &Ping<'_, '_>,
        target: usize,
        verdict: &Verdict,
        flow: &mut Flow,
    ) {
        let Some(t) = campaign.targets.get(target) else { return };
        let outcome = match verdict {
            Verdict::Failed(why) => Err((Detailed::Rejected, Info::from(why.clone()))),
            Verdict::NoBid(why) => Err((Detailed::TargetDisqualified, Info::from(why.clone()))),
            Verdict::Bid(bid) => settle_terms(campaign, t, ping, Some(bid.number.as_deref())),
        };
        match outcome {
            Ok((price, transfer)) => self.admit(t, target, price, transfer, ping, flow),
            Err((status, info)) => self.pass_over(flow, ping.now_ms, t.id, status, info),
        }
    }

    /// Picks the winner among the candidates. With `count_caps`, the winner
    /// must also fit its caps now, else the next best is tried.
    ///
    /// `current` is the config in force now, when it may be newer than
    /// `campaign` (a ping that waited on buyers across a reload): the winner
    /// is then counted against its caps and time zone as they are now, and
    /// one paused or removed meanwhile is passed over.
    pub fn choose(
        mut self,
        campaign: &Campaign,
        ping: &Ping<'_, '_>,
        flow: &mut Flow,
        current: Option<&Routing>,
    ) -> Routed {
        while let Some(i) = pick(campaign, &self.candidates) {
            let mut target = &campaign.targets[self.candidates[i].target];
            if let Some(routing) = current {
                let now = routing.target(target.id).map(|(_, t)| t);
                let passed = match now {
                    None => {
                        Some((Detailed::TargetDisqualified, Info::Text(literal!("removed from the config"))))
                    }
                    Some(t) if t.paused => Some((Detailed::TargetsPaused, Info::None)),
                    Some(_) => None,
                };
                if let Some((status, info)) = passed {
                    self.pass_over(flow, ping.now_ms, target.id, status, info);
                    self.candidates.swap_remove(i);
                    continue;
                }
                target = now.unwrap_or(target);
            }
            let mut counted_ms = None;
            if ping.count_caps {
                let windows = Windows::at(&target.zone, ping.now_ms);
                if let Err(full) = target.state.counters.try_count(&target.limits, windows) {
                    self.pass_over(flow, ping.now_ms, target.id, full.status(), full.info().into());
                    self.candidates.swap_remove(i);
                    continue;
                }
                counted_ms = Some(ping.now_ms);
            }
            let c = self.candidates.swap_remove(i);
            return Routed::Winner(Winner {
                target: c.target,
                price: c.price,
                transfer: c.transfer,
                counted_ms,
            });
        }
        self.passed_over.verdict()
    }
}

/// The checks before pricing: paused, hours, filters, caps, concurrency.
fn screen(target: &Target, ping: &Ping<'_, '_>) -> Result<(), (Detailed, Info)> {
    if target.paused {
        return Err((Detailed::TargetsPaused, Info::None));
    }
    // The local time, worked out once for hours and caps.
    let local = target.zone.local(ping.now_ms);
    if let Some(hours) = &target.hours {
        if !hours.is_open(local.minute_of_week()) {
            let minute = local.minute_of_day();
            let day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][local.weekday() as usize % 7];
            let info =
                format!("closed at {day} {:02}:{:02} {}", minute / 60, minute % 60, target.zone.name());
            return Err((Detailed::TargetsClosed, info.into()));
        }
    }
    for filter in &target.filters {
        if let Some(why) = filter.reject(ping.tag(&filter.tag).as_deref()) {
            return Err((Detailed::TargetDisqualified, why.into()));
        }
    }
    let counters = &target.state.counters;
    let limits = &target.limits;
    if limits.hourly.is_some() || limits.daily.is_some() || limits.monthly.is_some() || limits.hard.is_some()
    {
        counters.check(limits, Windows::of(local)).map_err(|full| (full.status(), full.info().into()))?;
    }
    if counters.simulcapped(limits) {
        return Err((Detailed::TargetSimulcapped, Info::Text(literal!("concurrency cap reached"))));
    }
    Ok(())
}

/// Pricing and the transfer number. `buyer_number` is `Some` for a webhook
/// target: what its answer held at `number_path`, if anything.
fn settle_terms(
    campaign: &Campaign,
    target: &Target,
    ping: &Ping<'_, '_>,
    buyer_number: Option<Option<&str>>,
) -> Result<(Price, Dial), (Detailed, Info)> {
    let tag = |name: &str| ping.params.tags().find(|(n, _)| *n == name).map(|(_, v)| v);
    let price =
        pricing::price(campaign, ping.publisher, target.id, tag).map_err(|why| (Detailed::Rejected, why))?;
    let undialable = |text: &str| {
        let info = format!("the number {text:?} cannot be dialled");
        (Detailed::UndialableExpression, Info::from(info))
    };
    if let Some(Some(number)) = buyer_number {
        return Dial::parse(number).map(|dial| (price, dial)).map_err(|_| undialable(number));
    }
    match &target.number {
        Number::Dial(dial) => Ok((price, dial.clone())),
        Number::Undialable(text) => Err(undialable(text)),
        Number::FromWebhook => {
            Err((Detailed::UndialableExpression, Info::Text(literal!("the buyer's answer held no number"))))
        }
    }
}

/// The index of the winning candidate: fresh targets before duplicates,
/// then by the campaign's mode.
fn pick(campaign: &Campaign, candidates: &[Candidate]) -> Option<usize> {
    let fresh = candidates.iter().any(|c| !c.duplicate);
    let targets = &campaign.targets;
    let pool = |c: &Candidate| !c.duplicate || !fresh;
    let priority = |c: &Candidate| targets[c.target].priority;
    let weight = |c: &Candidate| targets[c.target].weight;
    match campaign.mode {
        Mode::Priority => {
            let best = candidates.iter().filter(|c| pool(c)).map(priority).min()?;
            weighted(candidates, |c| pool(c) && priority(c) == best, weight)
        }
        Mode::HighestPayout => {
            let payout = candidates.iter().filter(|c| pool(c)).map(|c| c.price.payout_milli).max()?;
            let top = |c: &Candidate| pool(c) && c.price.payout_milli == payout;
            let best = candidates.iter().filter(|c| top(c)).map(priority).min()?;
            weighted(candidates, |c| top(c) && priority(c) == best, weight)
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
