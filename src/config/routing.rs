//! The compiled, immutable routing config the hot path reads.
//!
//! Built once per load by `validate`, then swapped in whole behind an
//! `ArcSwap`: a ping reads one `Routing` from start to end, so a reload never
//! shows it half of an old config and half of a new one. Everything a ping
//! needs is resolved here (numbers parsed, ids interned, keys indexed), so the
//! hot path never parses or looks up a string it could have prepared.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;

use crate::phone::{Dial, Phone};
use crate::sym::Sym;

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
    keys: AHashMap<Box<str>, (u32, u32)>,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_token: Option<Box<str>>,
    pub switch_token: Option<Box<str>>,
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
}

#[derive(Debug)]
pub struct Key {
    pub key: Box<str>,
    pub id: Sym,
    pub ttl_ms: u64,
    pub timeout_ms: u64,
    pub add_to_caps_on_reserved: bool,
    pub inbound_number: Option<Phone>,
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
}

#[derive(Clone, Debug, PartialEq)]
pub enum Seconds {
    Fixed(u32),
}

#[derive(Debug)]
pub struct Target {
    pub id: Sym,
    pub name: Box<str>,
    pub number: Number,
    pub priority: u32,
    pub weight: u32,
    pub paused: bool,
}

/// Where a target's calls go.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    Dial(Dial),
    /// Configured but not a number we can dial: the target answers
    /// `undialable_expression` (the text is kept for the record).
    Undialable(Box<str>),
}

impl Routing {
    pub(crate) fn new(
        server: Server,
        campaigns: Vec<Campaign>,
        publishers: AHashMap<Box<str>, Box<str>>,
        warnings: Vec<String>,
    ) -> Routing {
        let mut keys = AHashMap::new();
        for (c, campaign) in campaigns.iter().enumerate() {
            for (k, key) in campaign.keys.iter().enumerate() {
                keys.insert(key.key.clone(), (c as u32, k as u32));
            }
        }
        Routing {
            version: 0,
            loaded_at_ms: 0,
            source: String::new(),
            server,
            campaigns,
            publishers,
            warnings,
            keys,
        }
    }

    /// The campaign and key an RTB key opens.
    #[inline]
    pub fn key(&self, key: &str) -> Option<(&Campaign, &Key)> {
        let &(c, k) = self.keys.get(key)?;
        let campaign = self.campaigns.get(c as usize)?;
        Some((campaign, campaign.keys.get(k as usize)?))
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
