//! The state kept per key, target and publisher that outlives config
//! reloads: cap counters and tallies.
//!
//! The compiled config holds an `Arc` to the state of each of its keys and
//! targets (so a ping reaches them without a lookup); the engine looks them
//! up by name only on the rare paths (expiry, calls). Registries are
//! read far more than written, so they sit behind `ArcSwap`: a lookup never
//! takes a lock, and a new entry (a config load, a new publisher) copies the
//! map.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::caps::Counters;
use crate::metrics::WebhookStats;
use crate::shield::Gcra;
use crate::stats::Tally;
use crate::sym::Sym;
use crate::zone::Zone;

#[derive(Debug, Default)]
pub struct TargetState {
    pub counters: Counters,
    /// Reservations counted before this time (ms) were counted in the
    /// windows of a time zone the target no longer has: their counts are
    /// not given back (see `Engine::give_back`). 0: the zone never changed.
    pub zone_changed_ms: AtomicU64,
    /// The time zone its windows are in: the one it had in the last config
    /// that named it (kept after a reload removes it, so its counts go on
    /// in the same windows, and a zone it comes back with is seen as a
    /// change). `None` before any config named it.
    pub zone: Mutex<Option<Arc<Zone>>>,
    pub tally: Tally,
    /// Latency and failures of the target's webhook.
    pub webhook: WebhookStats,
}

#[derive(Debug, Default)]
pub struct KeyState {
    pub tally: Tally,
    /// The key's surge limit.
    pub limiter: Gcra,
}

/// States by name, created on first use and never dropped.
pub struct Registry<T> {
    map: ArcSwap<AHashMap<Sym, Arc<T>>>,
    write: Mutex<()>,
}

impl<T: Default> Default for Registry<T> {
    fn default() -> Registry<T> {
        Registry { map: ArcSwap::from_pointee(AHashMap::new()), write: Mutex::new(()) }
    }
}

impl<T: Default> Registry<T> {
    /// The state of `id`, created if new.
    pub fn get_or_create(&self, id: Sym) -> Arc<T> {
        if let Some(state) = self.map.load().get(&id) {
            return state.clone();
        }
        let _write = self.write.lock();
        let current = self.map.load();
        if let Some(state) = current.get(&id) {
            return state.clone();
        }
        let state = Arc::new(T::default());
        let mut next = AHashMap::clone(&current);
        next.insert(id, state.clone());
        self.map.store(Arc::new(next));
        state
    }

    /// Runs `f` on the state of `id`, if it exists.
    pub fn with<R>(&self, id: Sym, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.map.load().get(&id).map(|state| f(state))
    }

    /// Every state, for stats and snapshots.
    pub fn all(&self) -> Vec<(Sym, Arc<T>)> {
        self.map.load().iter().map(|(&k, v)| (k, v.clone())).collect()
    }
}

/// Publishers seen so far, each with a small index and a tally.
///
/// Any `publisher_id` may ping, so the number tracked is bounded: past
/// [`MAX_PUBLISHERS`], new publishers share the tally of index 0, shown as
/// `(other)`.
pub struct Publishers {
    ids: ArcSwap<AHashMap<Box<str>, u32>>,
    names: Mutex<Vec<Box<str>>>,
    tallies: Box<[Tally]>,
    /// Set once every index is taken: newcomers go to index 0 without
    /// taking the lock.
    full: std::sync::atomic::AtomicBool,
}

/// Publishers tracked one by one.
pub const MAX_PUBLISHERS: usize = 10_000;
/// The name shown for publishers past the bound.
pub const OTHER_PUBLISHERS: &str = "(other)";

impl Default for Publishers {
    fn default() -> Publishers {
        Publishers {
            // The name shown for the publishers past the bound means them
            // (index 0), in a ping as in a snapshot: a publisher sending it
            // as its id joins them rather than showing as a second entry
            // of that name.
            ids: ArcSwap::from_pointee(AHashMap::from_iter([(OTHER_PUBLISHERS.into(), 0)])),
            names: Mutex::new(vec![OTHER_PUBLISHERS.into()]),
            tallies: (0..=MAX_PUBLISHERS).map(|_| Tally::default()).collect(),
            full: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Publishers {
    /// The index of `id`, registering it if new.
    #[inline]
    pub fn index(&self, id: &str) -> u32 {
        if let Some(&i) = self.ids.load().get(id) {
            return i;
        }
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return 0;
        }
        self.register(id)
    }

    #[cold]
    fn register(&self, id: &str) -> u32 {
        let mut names = self.names.lock();
        let current = self.ids.load();
        if let Some(&i) = current.get(id) {
            return i;
        }
        if names.len() > MAX_PUBLISHERS {
            self.full.store(true, std::sync::atomic::Ordering::Relaxed);
            return 0;
        }
        let i = names.len() as u32;
        names.push(id.into());
        let mut next = AHashMap::clone(&current);
        next.insert(id.into(), i);
        self.ids.store(Arc::new(next));
        i
    }

    /// The tally of publisher `index`.
    #[inline]
    pub fn tally(&self, index: u32) -> &Tally {
        &self.tallies[(index as usize).min(MAX_PUBLISHERS)]
    }

    /// The id of publisher `index` (`(other)` for index 0).
    pub fn name(&self, index: u32) -> Box<str> {
        self.names.lock().get(index as usize).cloned().unwrap_or_else(|| OTHER_PUBLISHERS.into())
    }

    /// Every publisher seen, with its index.
    pub fn all(&self) -> Vec<(u32, Box<str>)> {
        self.names.lock().iter().enumerate().map(|(i, n)| (i as u32, n.clone())).collect()
    }
}

/// All the state that outlives config reloads.
#[derive(Default)]
pub struct States {
    pub targets: Registry<TargetState>,
    pub keys: Registry<KeyState>,
    pub publishers: Publishers,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Field;

    #[test]
    fn the_name_of_the_publishers_past_the_bound_means_them() {
        let publishers = Publishers::default();
        assert_eq!(publishers.index(OTHER_PUBLISHERS), 0);
        assert_eq!(publishers.all().len(), 1, "no publisher named {OTHER_PUBLISHERS:?} was made up");
        assert_ne!(publishers.index("acme"), 0);
        assert_eq!(publishers.all().len(), 2);
    }

    #[test]
    fn registries_keep_state_by_name() {
        let states = States::default();
        let a = states.targets.get_or_create(Sym::intern("state-test-a"));
        a.tally.bump(Field::Pings);
        let again = states.targets.get_or_create(Sym::intern("state-test-a"));
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(states.targets.with(Sym::intern("state-test-a"), |t| t.tally.get(Field::Pings)), Some(1));
        assert_eq!(states.targets.with(Sym::intern("state-test-b"), |_| ()), None);
    }

    #[test]
    fn publishers_are_indexed_and_bounded() {
        let p = Publishers::default();
        let a = p.index("acme");
        assert_eq!(p.index("acme"), a);
        assert_ne!(p.index("other-co"), a);
        for i in 0..MAX_PUBLISHERS + 10 {
            p.index(&format!("p{i}"));
        }
        assert_eq!(p.index("one-too-many"), 0);
        assert_eq!(p.index("acme"), a, "known publishers keep their index");
    }
}
