//! The compiled, immutable routing config the hot path reads.
//!
//! Built once per load by `validate`, then swapped in whole behind an
//! `ArcSwap`: a ping reads one `Routing` from start to end, so a reload never
//! shows it half of an old config and half of a new one. Everything a ping
//! needs is resolved here (numbers parsed, ids interned, keys indexed), so the
//! hot path never parses or looks up a string it could have prepared.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;

use crate::caps::Limits;
use crate::filter::Filter;
use crate::hours::Hours;
use crate::phone::{Dial, Phone};
use crate::shield;
use crate::state::{KeyState, States, TargetState};
use crate::sym::Sym;
use crate::webhook::Webhook;
use crate::zone::Zone;

#[derive(Debug)]
pub struct Routing {
    /// Increases by one with every successful load.
    pub version: u64,
    pub loaded_at_ms: u64,
    /// The file it came from, or `built-in demo`.
    pub source: String,
    pub server: Server,
    pub campaigns: Vec<Campaign>,
    /// Publisher id → display name.
    pub publishers: AHashMap<Box<str>, Box<str>>,
    /// Problems that do not stop the config from loading.
    pub warnings: Vec<String>,
    /// The longest `dedupe_secs` of any target, in milliseconds.
    pub max_dedupe_ms: u64,
    /// The longest claim-ratio window of any key, in milliseconds.
    pub max_claim_window_ms: u64,
    keys: AHashMap<Box<str>, (u32, u32)>,
    targets: AHashMap<Sym, (u32, u32)>,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_token: Option<Box<str>>,
    pub switch_token: Option<Box<str>>,
    /// Where snapshots are written (relative to the working directory).
    pub data_dir: PathBuf,
    /// 0: no periodic snapshots (still on demand and at shutdown).
    pub snapshot_interval_secs: u64,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// A request's head must arrive within this, and an idle keep-alive
    /// connection is closed after it.
    pub header_read_timeout_ms: u64,
    pub record_retention_ms: u64,
    pub max_records: usize,
    pub sip_domain: Option<Box<str>>,
}

#[derive(Debug)]
pub struct Campaign {
    pub id: Sym,
    pub name: Box<str>,
    pub tracking_numbers: Vec<Phone>,
    pub mode: Mode,
    pub keys: Vec<Key>,
    /// In file order: the first that matches prices the call.
    pub criteria: Vec<Criterion>,
    pub targets: Vec<Target>,
    rotation: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lowest priority first, weighted random among equals.
    Priority,
    /// Highest payout first, then lowest priority, then weighted random.
    HighestPayout,
}

#[derive(Debug)]
pub struct Key {
    pub key: Box<str>,
    pub id: Sym,
    pub ttl_ms: u64,
    pub timeout_ms: u64,
    pub add_to_caps_on_reserved: bool,
    pub inbound_number: Option<Phone>,
    pub shield: shield::Settings,
    pub state: Arc<KeyState>,
}

#[derive(Debug)]
pub struct Criterion {
    /// `None` for `*`.
    pub publisher: Option<Box<str>>,
    /// `None` when the criterion applies to every target.
    pub targets: Option<Vec<Sym>>,
    pub payout: Payout,
    pub seconds: Seconds,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Payout {
    /// Thousandths of a dollar.
    Fixed(u64),
    /// A share of a numeric tag: `thousandths_of_percent` / 100,000 of the
    /// tag's dollars (70% is 70,000).
    Percent { thousandths_of_percent: u64, tag: Box<str> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Seconds {
    Fixed(u32),
    /// The numeric tag of this name.
    Tag(Box<str>),
}

#[derive(Debug)]
pub struct Target {
    pub id: Sym,
    pub name: Box<str>,
    pub number: Number,
    pub priority: u32,
    pub weight: u32,
    pub paused: bool,
    pub zone: Arc<Zone>,
    /// `None`: open around the clock.
    pub hours: Option<Hours>,
    pub filters: Vec<Filter>,
    pub limits: Limits,
    /// A caller who reached this target this recently goes last (0: never).
    pub dedupe_ms: u64,
    /// Counters and tallies, kept across reloads (see [`Routing::attach`]).
    pub state: Arc<TargetState>,
    /// A dynamic buyer: asked for a bid on every ping that reaches it.
    pub webhook: Option<Box<Webhook>>,
}

/// Where a target's calls go.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    Dial(Dial),
    /// Configured but not a number we can dial: the target answers
    /// `undialable_expression` (the text is kept for the record).
    Undialable(Box<str>),
    /// None configured: the webhook's answer gives it.
    FromWebhook,
}

impl Routing {
    pub(crate) fn new(
        server: Server,
        campaigns: Vec<Campaign>,
        publishers: AHashMap<Box<str>, Box<str>>,
        warnings: Vec<String>,
    ) -> Routing {
        let mut keys = AHashMap::new();
        let mut targets = AHashMap::new();
        for (c, campaign) in campaigns.iter().enumerate() {
            for (k, key) in campaign.keys.iter().enumerate() {
                keys.insert(key.key.clone(), (c as u32, k as u32));
            }
            for (t, target) in campaign.targets.iter().enumerate() {
                targets.insert(target.id, (c as u32, t as u32));
            }
        }
        let max_dedupe_ms = campaigns.iter().flat_map(|c| &c.targets).map(|t| t.dedupe_ms).max().unwrap_or(0);
        let max_claim_window_ms = campaigns
            .iter()
            .flat_map(|c| &c.keys)
            .map(|k| u64::from(k.shield.claim_ratio_window_secs) * 1000)
            .max()
            .unwrap_or(0);
        Routing {
            version: 0,
            loaded_at_ms: 0,
            source: String::new(),
            server,
            campaigns,
            publishers,
            warnings,
            max_dedupe_ms,
            max_claim_window_ms,
            keys,
            targets,
        }
    }

    /// Points every key and target at its state in `states`, so counters
    /// and tallies carry over from the config this one replaces.
    pub fn attach(&mut self, states: &States) {
        for campaign in &mut self.campaigns {
            for key in &mut campaign.keys {
                key.state = states.keys.get_or_create(key.id);
            }
            for target in &mut campaign.targets {
                target.state = states.targets.get_or_create(target.id);
            }
        }
    }

    /// A target and its campaign, by target id.
    pub fn target(&self, id: Sym) -> Option<(&Campaign, &Target)> {
        let &(c, t) = self.targets.get(&id)?;
        let campaign = self.campaigns.get(c as usize)?;
        Some((campaign, campaign.targets.get(t as usize)?))
    }

    /// The campaign and key an RTB key opens.
    #[inline]
    pub fn key(&self, key: &str) -> Option<(&Campaign, &Key)> {
        let &(c, k) = self.keys.get(key)?;
        let campaign = self.campaigns.get(c as usize)?;
        Some((campaign, campaign.keys.get(k as usize)?))
    }

    /// Where an RTB key is: (campaign index, key index).
    pub fn key_position(&self, key: &str) -> Option<(usize, usize)> {
        self.keys.get(key).map(|&(c, k)| (c as usize, k as usize))
    }

    /// The campaign with this id.
    pub fn campaign(&self, id: Sym) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.id == id)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn target_count(&self) -> usize {
        self.campaigns.iter().map(|c| c.targets.len()).sum()
    }
}

impl Campaign {
    pub(crate) fn new(
        id: Sym,
        name: Box<str>,
        tracking_numbers: Vec<Phone>,
        mode: Mode,
        keys: Vec<Key>,
        criteria: Vec<Criterion>,
        targets: Vec<Target>,
    ) -> Campaign {
        Campaign { id, name, tracking_numbers, mode, keys, criteria, targets, rotation: AtomicUsize::new(0) }
    }

    /// The next tracking number in rotation.
    #[inline]
    pub fn next_tracking_number(&self) -> Option<Phone> {
        if self.tracking_numbers.is_empty() {
            return None;
        }
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
        self.tracking_numbers.get(turn % self.tracking_numbers.len()).copied()
    }

    /// True if `number` is one of this campaign's tracking numbers.
    pub fn is_tracking_number(&self, number: Phone) -> bool {
        self.tracking_numbers.contains(&number)
    }
}

impl Criterion {
    pub fn matches_publisher(&self, publisher: &str) -> bool {
        self.publisher.as_deref().is_none_or(|p| p == publisher)
    }

    pub fn applies_to(&self, target: Sym) -> bool {
        self.targets.as_ref().is_none_or(|ids| ids.contains(&target))
    }
}
