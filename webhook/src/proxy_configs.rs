//! The balancings of every namespace's proxy config, kept current by a watch
//! on the operator's ConfigMaps so a review never waits on the apiserver.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::{StreamExt, TryStreamExt};
use grpc_balancer_crds::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME, parse_yaml};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::balancings::{LocalBalancing, local_balancings};

/// Label selector of the ConfigMaps the operator writes.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=grpc-balancer";

type ByNamespace = HashMap<String, Arc<[LocalBalancing]>>;

/// Balancings by namespace. Reads are lock-free (one per review); writes
/// copy the map, which is fine at the rate ConfigMaps change.
#[derive(Debug, Default)]
pub struct ProxyConfigs {
    by_namespace: ArcSwap<ByNamespace>,
}

impl ProxyConfigs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The balancings of `namespace` (empty when it has no proxy config).
    pub fn balancings(&self, namespace: &str) -> Arc<[LocalBalancing]> {
        self.by_namespace
            .load()
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    pub fn set(&self, namespace: &str, balancings: Vec<LocalBalancing>) {
        let balancings: Arc<[LocalBalancing]> = Arc::from(balancings);
        self.by_namespace.rcu(|current| {
            let mut next = ByNamespace::clone(current);
            next.insert(namespace.to_owned(), balancings.clone());
            next
        });
    }

    pub fn remove(&self, namespace: &str) {
        self.by_namespace.rcu(|current| {
            let mut next = ByNamespace::clone(current);
            next.remove(namespace);
            next
        });
    }

    fn replace_all(&self, all: ByNamespace) {
        self.by_namespace.store(Arc::new(all));
    }

    /// Applies one ConfigMap. A document that does not parse keeps what was
    /// known before: the proxy keeps its last good config too, so env vars
    /// from it still point at listeners that exist.
    fn apply(&self, config_map: &ConfigMap) {
        let Some(namespace) = config_map.namespace() else {
            return;
        };
        match balancings_of(config_map) {
            Ok(balancings) => self.set(&namespace, balancings),
            Err(why) => tracing::warn!(
                namespace,
                configmap = CONFIG_MAP_NAME,
                %why,
                "proxy config does not parse; keeping the balancings known before"
            ),
        }
    }

    /// Watches the proxy ConfigMaps of every namespace until the stream ends.
    /// `synced` fires once the initial list is in.
    pub async fn watch(
        self: Arc<Self>,
        client: Client,
        synced: tokio::sync::oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        let api: Api<ConfigMap> = Api::all(client);
        let config = watcher::Config::default()
            .labels(MANAGED_BY_SELECTOR)
            .fields(&format!("metadata.name={CONFIG_MAP_NAME}"));
        let mut synced = Some(synced);
        let mut initial = ByNamespace::new();
        let mut stream = watcher(api, config)
            .default_backoff()
            .map_err(anyhow::Error::from)
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => initial.clear(),
                Ok(watcher::Event::InitApply(cm)) => {
                    if let (Some(ns), Ok(b)) = (cm.namespace(), balancings_of(&cm)) {
                        initial.insert(ns, Arc::from(b));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.replace_all(std::mem::take(&mut initial));
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(cm)) => self.apply(&cm),
                Ok(watcher::Event::Delete(cm)) => {
                    if let Some(ns) = cm.namespace() {
                        self.remove(&ns);
                    }
                }
                // The backoff retries; the cache keeps serving what it knows.
                Err(e) => tracing::warn!(error = %e, "watch of proxy ConfigMaps failed"),
            }
        }
        Ok(())
    }
}

fn balancings_of(config_map: &ConfigMap) -> Result<Vec<LocalBalancing>, String> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_MAP_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    let config = parse_yaml(text).map_err(|e| e.to_string())?;
    Ok(local_balancings(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(namespace: &str, yaml: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(CONFIG_MAP_NAME.to_owned());
        cm.metadata.namespace = Some(namespace.to_owned());
        cm.data = Some([(CONFIG_MAP_KEY.to_owned(), yaml.to_owned())].into());
        cm
    }

    const ONE: &str = "balancings:\n- name: greeter\n  listen: 127.0.0.1:15001\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.3:50051] }\n";

    #[test]
    fn keeps_the_last_good_config_of_a_namespace() {
        let configs = ProxyConfigs::new();
        assert!(configs.balancings("demo").is_empty());
        configs.apply(&config_map("demo", ONE));
        assert_eq!(configs.balancings("demo").len(), 1);
        configs.apply(&config_map("demo", "balancings: [ {"));
        assert_eq!(configs.balancings("demo").len(), 1, "kept");
        assert!(configs.balancings("other").is_empty());
        configs.apply(&config_map("demo", ""));
        assert!(configs.balancings("demo").is_empty(), "an empty config");
        configs.remove("demo");
        assert!(configs.balancings("demo").is_empty());
    }
}
