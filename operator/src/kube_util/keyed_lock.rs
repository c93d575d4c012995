//! One async lock per key, made on first use: work on one key (a namespace)
//! runs one at a time while other keys go on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

pub struct KeyedLock<K> {
    // Never pruned: one small entry per key ever locked (namespaces), which
    // the operator's own watches bound anyway.
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLock<K> {
    fn default() -> Self {
        KeyedLock {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLock<K> {
    /// Waits until no one else holds `key`'s lock, and holds it until the
    /// guard is dropped.
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let lock = {
            // A poisoned map is still a valid map.
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(key.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_keys_are_independent() {
        let locks = KeyedLock::default();
        let held = locks.lock(&"a").await;
        // Another key is free.
        drop(locks.lock(&"b").await);
        // The same key waits for the holder.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock(&"a"))
                .await
                .is_err()
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), locks.lock(&"a"))
            .await
            .expect("free once the holder let go");
    }
}
