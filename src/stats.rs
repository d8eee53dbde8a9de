//! Statistics: what happened to the pings of each key, publisher and target.
//!
//! A [`Tally`] is bumped several times on every ping, from every worker
//! thread. Written by hand as striped counters: each thread adds to its own
//! cache line and a reader sums the stripes, so two cores bumping the same
//! key's counters never fight over one line, and a thread that owns its
//! stripe adds without a locked instruction.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;
use serde_json::{Map, Value, json};

use crate::caps::Windows;
use crate::config::Routing;
use crate::state::States;

/// Stripes per tally (and per `metrics::Histogram`). The first [`OWNED`]
/// threads to claim one (the server's worker threads, see
/// [`claim_stripe`]) each have a stripe of their own; every other thread
/// shares one of the rest with others, adding atomically.
pub(crate) const STRIPES: usize = 8;
/// Stripes that can be some thread's own.
const OWNED: usize = 4;

/// What a tally counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Pings = 0,
    Reserved,
    Confirmed,
    Claimed,
    Expired,
    Converted,
    /// Thousandths of a dollar paid for converted calls.
    PayoutMilli,
    /// Pings answered `no-target` and `rejected`.
    NoTarget,
    Rejected,
    /// Ping Shield outcomes.
    AlreadyReserved,
    AlreadyProcessing,
    ClaimLimited,
    RateLimited,
}

const FIELDS: usize = 16;

#[derive(Default)]
pub struct Tally {
    stripes: [CachePadded<[AtomicU64; FIELDS]>; STRIPES],
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tally(pings: {})", self.get(Field::Pings))
    }
}

/// A thread's stripe: its index, and whether the thread has it to itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stripe {
    pub index: usize,
    own: bool,
}

thread_local! {
    /// This thread's stripe, once it has one.
    static STRIPE: Cell<Option<Stripe>> = const { Cell::new(None) };
}

/// Gives this thread a stripe of its own while any is left; the server
/// calls it as each of its runtime's threads starts, so the workers (started
/// first) get them. A thread that never claims one shares a stripe.
pub fn claim_stripe() {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if STRIPE.get().is_some_and(|s| s.own) {
        return;
    }
    let claimed = NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < OWNED).then_some(n + 1));
    if let Ok(index) = claimed {
        STRIPE.set(Some(Stripe { index, own: true }));
    }
}

/// This thread's stripe.
#[inline]
pub(crate) fn stripe() -> Stripe {
    STRIPE.get().unwrap_or_else(share_stripe)
}

/// Gives a thread that claimed no stripe one it shares, in turn.
#[cold]
fn share_stripe() -> Stripe {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let stripe =
        Stripe { index: OWNED + NEXT.fetch_add(1, Ordering::Relaxed) % (STRIPES - OWNED), own: false };
    STRIPE.set(Some(stripe));
    stripe
}

impl Stripe {
    /// Adds `n` to `cell`, a counter of this stripe.
    #[inline]
    pub(crate) fn add(self, cell: &AtomicU64, n: u64) {
        if self.own {
            // No other thread adds to this stripe, so a plain load and
            // store count exactly, without a locked add: a ping bumps a
            // dozen counters, and each locked add would also wait for every
            // store before it (the ping's record, to memory no recent ping
            // touched) to reach the cache.
            cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Tally {
    #[inline]
    pub fn add(&self, field: Field, n: u64) {
        let stripe = stripe();
        stripe.add(&self.stripes[stripe.index][field as usize], n);
    }

    #[inline]
    pub fn bump(&self, field: Field) {
        self.add(field, 1);
    }

    pub fn get(&self, field: Field) -> u64 {
        self.stripes.iter().map(|s| s[field as usize].load(Ordering::Relaxed)).sum()
    }

    /// Sets a field to `value` (for tests: it writes every stripe, so no
    /// thread may be counting into the tally meanwhile).
    #[cfg(test)]
    pub fn set(&self, field: Field, value: u64) {
        self.set_cell(field as usize, value);
    }

    fn set_cell(&self, cell: usize, value: u64) {
        for (i, s) in self.stripes.iter().enumerate() {
            s[cell].store(if i == 0 { value } else { 0 }, Ordering::Relaxed);
        }
    }

    /// Every field's value, for snapshots.
    pub fn export(&self) -> Vec<u64> {
        (0..FIELDS).map(|i| self.stripes.iter().map(|s| s[i].load(Ordering::Relaxed)).sum()).collect()
    }

    /// Restores what [`Tally::export`] gave. Only before the server serves
    /// (`snapshot::restore`): it writes every stripe, and a thread counting
    /// into its own stripe meanwhile would overwrite what it wrote.
    pub fn import(&self, values: &[u64]) {
        for (i, &v) in values.iter().take(FIELDS).enumerate() {
            self.set_cell(i, v);
        }
    }

    /// The tally as JSON, with the claim-to-ping ratio.
    pub fn to_json(&self) -> Value {
        let pings = self.get(Field::Pings);
        let claimed = self.get(Field::Claimed);
        json!({
            "pings": pings,
            "reserved": self.get(Field::Reserved),
            "confirmed": self.get(Field::Confirmed),
            "claimed": claimed,
            "expired": self.get(Field::Expired),
            "converted": self.get(Field::Converted),
            "payout": self.get(Field::PayoutMilli) as f64 / 1000.0,
            "claim_ratio": if pings == 0 { 0.0 } else { claimed as f64 / pings as f64 },
            "ping_shield": {
                "ping_shield_postback_key_caller_number_already_reserved": self.get(Field::AlreadyReserved),
                "ping_shield_postback_key_caller_number_already_processing": self.get(Field::AlreadyProcessing),
                "ping_shield_postback_key_claim_based_limited": self.get(Field::ClaimLimited),
                "ping_shield_postback_key_rate_limited": self.get(Field::RateLimited),
            },
        })
    }
}

/// How a key's or a publisher's pings that reserved nothing ended: with
/// `reserved` and the Ping Shield's counts they add up to `pings`. (A
/// target is not told about pings that went nowhere.)
fn add_outcomes(entry: &mut Value, tally: &Tally) {
    entry["no_target"] = json!(tally.get(Field::NoTarget));
    entry["rejected"] = json!(tally.get(Field::Rejected));
}

/// The `/stats` report: every key, publisher and target, with caps.
pub fn report(routing: &Routing, states: &States, now_ms: u64) -> Value {
    let mut keys = Map::new();
    let mut targets = Map::new();
    for campaign in &routing.campaigns {
        for key in &campaign.keys {
            let mut entry = key.state.tally.to_json();
            add_outcomes(&mut entry, &key.state.tally);
            entry["campaign_id"] = json!(campaign.id.as_str());
            keys.insert(key.key.to_string(), entry);
        }
        for target in &campaign.targets {
            let counters = &target.state.counters;
            let w = Windows::at(&target.zone, now_ms);
            let mut caps = Map::new();
            let limits = &target.limits;
            for (name, cap, filled) in [
                ("hourly", limits.hourly, counters.hourly.get(w.hour)),
                ("daily", limits.daily, counters.daily.get(w.day)),
                ("monthly", limits.monthly, counters.monthly.get(w.month)),
                ("hard", limits.hard, counters.hard.get(0)),
                ("concurrency", limits.concurrency, counters.concurrency.get()),
            ] {
                caps.insert(name.to_owned(), json!({ "cap": cap, "filled": filled }));
            }
            let mut entry = target.state.tally.to_json();
            entry["campaign_id"] = json!(campaign.id.as_str());
            entry["name"] = json!(target.name.as_ref());
            entry["live_calls"] = json!(counters.calls.get());
            entry["caps"] = Value::Object(caps);
            targets.insert(target.id.as_str().to_owned(), entry);
        }
    }
    let mut publishers = Map::new();
    for (index, id) in states.publishers.all() {
        let tally = states.publishers.tally(index);
        if tally.get(Field::Pings) == 0 && index == 0 {
            continue;
        }
        let mut entry = tally.to_json();
        add_outcomes(&mut entry, tally);
        if let Some(name) = routing.publishers.get(id.as_ref()) {
            entry["name"] = json!(name.as_ref());
        }
        publishers.insert(id.to_string(), entry);
    }
    json!({ "keys": keys, "publishers": publishers, "targets": targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads counting at once lose nothing, those with a stripe of
    /// their own (plain stores) and those sharing the last (atomic adds)
    /// alike, and no stripe has two owners.
    #[test]
    fn stripes_sum_across_threads() {
        let tally = std::sync::Arc::new(Tally::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    claim_stripe();
                    for _ in 0..100_000 {
                        tally.bump(Field::Pings);
                    }
                    tally.add(Field::PayoutMilli, 1_500);
                    stripe()
                })
            })
            .collect();
        let stripes: Vec<Stripe> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(tally.get(Field::Pings), 1_200_000);
        let mut owned: Vec<usize> = stripes.iter().filter(|s| s.own).map(|s| s.index).collect();
        assert!(owned.iter().all(|&i| i < OWNED), "{stripes:?}");
        assert!(
            stripes.iter().filter(|s| !s.own).all(|s| (OWNED..STRIPES).contains(&s.index)),
            "{stripes:?}"
        );
        owned.sort_unstable();
        owned.dedup();
        assert_eq!(owned.len(), stripes.iter().filter(|s| s.own).count(), "a stripe with two owners");
        assert!(stripes.iter().any(|s| !s.own), "twelve threads, four stripes to own");
        let json = tally.to_json();
        assert_eq!(json["payout"], 18.0);
        tally.set(Field::Pings, 5);
        assert_eq!(tally.get(Field::Pings), 5);
    }
}
