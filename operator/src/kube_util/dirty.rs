//! A set of keys waiting for work, deduplicated: marking a key that is
//! already waiting costs nothing, so a burst of changes to one namespace
//! becomes one re-render, and the set never holds more than one entry per
//! key (no unbounded queue).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt as _};
use tokio::sync::Notify;

pub struct DirtySet<K> {
    keys: Mutex<HashSet<K>>,
    notify: Notify,
}

impl<K: Eq + Hash> Default for DirtySet<K> {
    fn default() -> Self {
        DirtySet {
            keys: Mutex::new(HashSet::new()),
            notify: Notify::new(),
        }
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> DirtySet<K> {
    pub fn mark(&self, key: K) {
        let inserted = match self.keys.lock() {
            Ok(mut keys) => keys.insert(key),
            // A poisoned lock only means another marker panicked mid-insert;
            // the set itself is still a valid set.
            Err(poisoned) => poisoned.into_inner().insert(key),
        };
        if inserted {
            self.notify.notify_one();
        }
    }

    /// Takes every waiting key; waits while there is none.
    pub async fn take(&self) -> Vec<K> {
        loop {
            let keys: Vec<K> = match self.keys.lock() {
                Ok(mut keys) => keys.drain().collect(),
                Err(poisoned) => poisoned.into_inner().drain().collect(),
            };
            if !keys.is_empty() {
                return keys;
            }
            self.notify.notified().await;
        }
    }

    /// Takes every waiting key without waiting.
    pub fn try_take(&self) -> Vec<K> {
        match self.keys.lock() {
            Ok(mut keys) => keys.drain().collect(),
            Err(poisoned) => poisoned.into_inner().drain().collect(),
        }
    }

    /// The keys as a stream, as they are marked.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = K> + Send + 'static
    where
        K: Sync,
    {
        futures::stream::unfold(self, |set| async move {
            let batch = set.take().await;
            Some((futures::stream::iter(batch), set))
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_are_deduplicated_and_wake_the_taker() {
        let set = Arc::new(DirtySet::default());
        set.mark("a");
        set.mark("a");
        set.mark("b");
        let mut got = set.take().await;
        got.sort();
        assert_eq!(got, ["a", "b"]);

        let waiter = tokio::spawn({
            let set = set.clone();
            async move { set.take().await }
        });
        set.mark("c");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the taker wakes up")
            .expect("the task ends");
        assert_eq!(got, ["c"]);
    }
}
