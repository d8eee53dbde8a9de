//! Interned names of config objects: keys, campaigns and targets.
//!
//! Every reservation and record names its key, campaign and target. A `Sym`
//! is a 4-byte handle for such a name: cheaper to copy and store than a
//! string, free of reference counting on the hot path, and still valid after a
//! reload has removed the object from the config (a reservation outlives the
//! config it was made with).
//!
//! Names are leaked into a process-wide table that only grows. That is
//! bounded by the ids an operator ever writes into a config file, never by
//! request input: nothing a publisher sends is interned.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use ahash::AHashMap;
use parking_lot::RwLock;

/// A handle to an interned name: its index plus one, so that an
/// `Option<Sym>` takes no more room than a `Sym`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

fn handle(index: u32) -> Sym {
    Sym(NonZeroU32::new(index.saturating_add(1)).unwrap_or(NonZeroU32::MAX))
}

#[derive(Default)]
struct Interner {
    ids: AHashMap<&'static str, u32>,
    names: Vec<&'static str>,
}

fn interner() -> &'static RwLock<Interner> {
    static INTERNER: OnceLock<RwLock<Interner>> = OnceLock::new();
    INTERNER.get_or_init(Default::default)
}

impl Sym {
    /// The handle of `name`, interning it on first sight.
    pub fn intern(name: &str) -> Sym {
        if let Some(&id) = interner().read().ids.get(name) {
            return handle(id);
        }
        let mut table = interner().write();
        if let Some(&id) = table.ids.get(name) {
            return handle(id);
        }
        let id = u32::try_from(table.names.len()).unwrap_or(u32::MAX - 1);
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        table.names.push(leaked);
        table.ids.insert(leaked, id);
        handle(id)
    }

    /// The handle of `name` if it was ever interned.
    pub fn lookup(name: &str) -> Option<Sym> {
        interner().read().ids.get(name).map(|&id| handle(id))
    }

    /// The handle's number: small and dense, for hashing and indexing.
    pub fn index(self) -> u32 {
        self.0.get() - 1
    }

    /// The interned name.
    pub fn as_str(self) -> &'static str {
        interner().read().names.get(self.index() as usize).copied().unwrap_or("")
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sym({:?})", self.as_str())
    }
}

/// In snapshots a handle is its name: handles are only valid within the
/// process that made them.
impl serde::Serialize for Sym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Sym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sym, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Sym::intern(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_handle() {
        let a = Sym::intern("sym-test-a");
        let b = Sym::intern("sym-test-b");
        assert_ne!(a, b);
        assert_eq!(a, Sym::intern("sym-test-a"));
        assert_eq!(a.as_str(), "sym-test-a");
        assert_eq!(Sym::lookup("sym-test-b"), Some(b));
        assert_eq!(Sym::lookup("sym-test-never"), None);
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 4);
    }
}
