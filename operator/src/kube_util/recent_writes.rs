//! What the operator itself wrote and its caches do not show yet.
//!
//! A reflector store learns of a write only when the watch event arrives,
//! some time after the API call returned. A reconcile triggered in between
//! (the Service it just created, an EndpointSlice, a sibling) would read the
//! object as it was before the write, find it out of date and write it again,
//! with an Event each time. So each write is remembered together with the
//! resourceVersion of the cached object it was computed from: while the
//! cache still holds that very version, the remembered value is what the
//! object really says. Once the cache shows any other version (the write
//! itself, or someone else's), the cache is authoritative again and the
//! entry is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct RecentWrites<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
}

struct Entry<V> {
    /// resourceVersion of the cached object the write was computed from;
    /// `None` when the object was not in the cache (a create).
    based_on: Option<String>,
    written: V,
}

impl<K, V> Default for RecentWrites<K, V> {
    fn default() -> Self {
        RecentWrites {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> RecentWrites<K, V> {
    /// Remembers that `written` was stored over the cached version `based_on`.
    pub fn record(&self, key: K, based_on: Option<&str>, written: V) {
        self.lock().insert(
            key,
            Entry {
                based_on: based_on.map(str::to_owned),
                written,
            },
        );
    }

    /// The value last written for `key` if the cache, now at `cached`, has
    /// not caught up with that write yet; `None` when the cache is current.
    pub fn not_yet_cached(&self, key: &K, cached: Option<&str>) -> Option<V> {
        let mut entries = self.lock();
        let entry = entries.get(key)?;
        if entry.based_on.as_deref() == cached {
            return Some(entry.written.clone());
        }
        entries.remove(key);
        None
    }

    /// Forgets `key` (its object is gone, or a write failed).
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        // A poisoned map is still a valid map: at worst an entry is missing,
        // which costs one redundant write.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_until_the_cache_moves_past_its_base() {
        let writes = RecentWrites::<&str, u32>::default();
        assert_eq!(writes.not_yet_cached(&"a", Some("1")), None);
        writes.record("a", Some("1"), 7);
        // Cache still at the version the write was based on.
        assert_eq!(writes.not_yet_cached(&"a", Some("1")), Some(7));
        // The watch event arrived: the cache is authoritative again.
        assert_eq!(writes.not_yet_cached(&"a", Some("2")), None);
        assert_eq!(writes.not_yet_cached(&"a", Some("1")), None);
    }

    #[test]
    fn a_create_counts_while_the_object_is_absent_from_the_cache() {
        let writes = RecentWrites::<&str, u32>::default();
        writes.record("svc", None, 1);
        assert_eq!(writes.not_yet_cached(&"svc", None), Some(1));
        assert_eq!(writes.not_yet_cached(&"svc", Some("5")), None);
    }

    #[test]
    fn forget_drops_the_entry() {
        let writes = RecentWrites::<&str, u32>::default();
        writes.record("a", Some("1"), 7);
        writes.forget(&"a");
        assert_eq!(writes.not_yet_cached(&"a", Some("1")), None);
    }
}
