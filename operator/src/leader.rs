//! Leader election on a `coordination.k8s.io/v1` Lease, written directly
//! with optimistic concurrency: every write carries the resourceVersion that
//! was read, so of two replicas racing for the Lease exactly one wins (the
//! other gets 409 Conflict). Expiry is judged by the local clock from when
//! this replica last saw the Lease record change, as client-go does, so
//! clock skew between nodes does not matter.
//!
//! Why not a lease crate: the two kept ones were weighed against this file.
//! `kubert`'s `LeaseManager` (0.25) and `kube-leader-election` (0.44) are
//! built on other kube-rs releases (kube-client 1.1 and kube 4; we use
//! kube 5), so either would bring a second Kubernetes client into the
//! binary. And both judge expiry as `renewTime + leaseDuration` against this
//! node's clock, so a standby whose clock runs ahead takes over a Lease that
//! its holder still renews. `kube-leader-election` also takes the Lease over
//! with a merge patch that carries no resourceVersion, so two standbys can
//! both believe they won; `kubert` needs the Lease to exist before it starts.
//! This file stays small (one loop, one round, one release) and keeps what
//! they lack: a leader that cannot renew steps down at the renew deadline,
//! before the others may take over, and the Lease is released only after the
//! controllers stopped writing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use grpc_balancer_crds::annotations::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaderSettings {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
}

impl LeaderSettings {
    /// How often the Lease is read and renewed (client-go's defaults keep
    /// this ratio: 2s for 15s).
    pub fn retry_period(&self) -> Duration {
        self.lease_duration.mul_f64(2.0 / 15.0)
    }

    /// A leader that could not renew for this long steps down, before the
    /// Lease expires for the others.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration.mul_f64(2.0 / 3.0)
    }
}

/// What was last seen of someone else's Lease, and when it was first seen
/// that way (local clock).
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    since: Instant,
}

/// Runs the election until `shutdown`; `leading` tells whether this replica
/// is the leader. On shutdown a held Lease is released so a standby takes
/// over at once instead of after the lease duration; `release` waits for
/// `stopped` first, so the controller has stopped writing by then.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaderSettings,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaderSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    /// Loops until `shutdown`, publishing leadership on `leading`. `reachable`
    /// turns true after the first successful read of the Lease.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        reachable: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(is_leader) => {
                    reachable.send_replace(true);
                    if is_leader {
                        last_renewal = Some(Instant::now());
                        if !*leading.borrow() {
                            tracing::info!(lease = %self.settings.lease_name, identity = %self.settings.identity, "became the leader");
                        }
                        leading.send_replace(true);
                    } else {
                        if *leading.borrow() {
                            tracing::warn!(lease = %self.settings.lease_name, "lost the Lease to another replica");
                        }
                        last_renewal = None;
                        leading.send_replace(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.settings.lease_name, "cannot read or renew the Lease");
                    if let Some(at) = last_renewal
                        && at.elapsed() > self.settings.renew_deadline()
                    {
                        tracing::warn!(
                            "could not renew the Lease within the renew deadline; stepping down"
                        );
                        last_renewal = None;
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.retry_period()) => {}
            }
        }
        leading.send_replace(false);
    }

    /// Gives the Lease up if this replica holds it.
    pub async fn release(client: kube::Client, settings: &LeaderSettings) {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let Ok(Some(mut lease)) = api.get_opt(&settings.lease_name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(now());
        match api
            .replace(&settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %settings.lease_name, "released the Lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the Lease; it expires by itself")
            }
        }
    }

    /// One round: read the Lease, then create, renew or take it over when
    /// that is allowed. `Ok(true)` when this replica holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = &self.settings.lease_name;
        let duration_secs =
            i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    labels: Some(label_map()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.settings.identity.as_str());
        if !mine {
            let changed = self.observed.as_ref().is_none_or(|o| {
                o.holder != holder
                    || o.renew_time != spec.renew_time
                    || o.resource_version != lease.metadata.resource_version
            });
            if changed {
                self.observed = Some(Observed {
                    holder: holder.clone(),
                    renew_time: spec.renew_time.clone(),
                    resource_version: lease.metadata.resource_version.clone(),
                    since: Instant::now(),
                });
            }
            let their_duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(0),
            );
            let expired = holder.is_none()
                || self
                    .observed
                    .as_ref()
                    .is_some_and(|o| o.since.elapsed() > their_duration);
            if !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now());
        // `replace` sends the resourceVersion read above: if anyone wrote
        // the Lease since, the apiserver answers 409 and nothing changes.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = None;
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn label_map() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())])
}
