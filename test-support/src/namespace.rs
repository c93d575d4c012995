//! A fresh namespace per test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::logs::LogsOnPanic;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A uniquely named namespace, deleted (best effort) when dropped. If the test panics,
/// dropping it also prints the control plane's log tails.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: Option<PathBuf>,
    _logs: LogsOnPanic,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>`.
    pub async fn new(client: &Client, prefix: &str) -> TestNamespace {
        Self::with_labels(client, prefix, BTreeMap::new()).await
    }

    /// Creates a namespace with labels, e.g. `pod-security.kubernetes.io/enforce`.
    pub async fn with_labels(
        client: &Client,
        prefix: &str,
        labels: BTreeMap<String, String>,
    ) -> TestNamespace {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<Namespace> = Api::all(client.clone());
        if let Err(e) = api.create(&PostParams::default(), &ns).await {
            crate::logs::print_registered_tails(40);
            panic!("creating namespace {name}: {e}");
        }
        let kubeconfig = crate::control_plane::ControlPlane::shared_kubeconfig();
        TestNamespace {
            name,
            client: client.clone(),
            kubeconfig,
            _logs: LogsOnPanic,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was created with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now: pods first with grace period 0 (with no kubelet, a
    /// graceful pod deletion never finishes and would keep the namespace terminating).
    pub async fn delete(client: &Client, name: &str) -> kube::Result<()> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), name);
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await;
        let api: Api<Namespace> = Api::all(client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may already be shutting down, so the
        // deletion runs on a short-lived runtime in its own thread with its own client.
        let Some(kubeconfig) = self.kubeconfig.clone() else {
            return;
        };
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(rt) = rt else { return };
            rt.block_on(async move {
                let client = match crate::control_plane::client_for(&kubeconfig).await {
                    Ok(c) => c,
                    Err(e) => return eprintln!("namespace {name} not deleted: {e:#}"),
                };
                let deleted = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    Self::delete(&client, &name),
                )
                .await;
                match deleted {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("namespace {name} not deleted: {e}"),
                    Err(_) => eprintln!("namespace {name} not deleted: timed out"),
                }
            });
        });
        let _ = handle.join();
    }
}

/// `<prefix>-<pid>-<counter>-<random>`, a valid DNS label (at most 63 characters).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u16 = rand::random();
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(40);
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    format!("{prefix}-{}-{n}-{r:04x}", std::process::id() % 100_000)
}
