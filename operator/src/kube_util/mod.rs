//! Helpers around kube-runtime that know nothing of balancings: a
//! deduplicated work set, the operator's own writes its caches do not show
//! yet, the fields the caches keep, ending watch streams on a stop, and a
//! lock per key.

pub mod dirty;
pub mod keyed_lock;
pub mod recent_writes;
pub mod trim;
pub mod until_stopped;

use kube::{Api, Client, Resource};

/// An API over one namespace, or all of them.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
