//! The operator's errors. Each variant is also a metric label.

use crate::metrics::ErrorKind;

/// What went wrong in a reconcile or a ConfigMap sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying Service {name}: {source}")]
    ApplyService {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting Service {name}: {source}")]
    DeleteService {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("applying the proxy ConfigMap of namespace {namespace}: {source}")]
    ApplyConfigMap {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the proxy ConfigMap of namespace {namespace}: {source}")]
    DeleteConfigMap {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("rendering the proxy config as YAML: {0}")]
    RenderConfig(#[source] serde_yaml::Error),
    #[error("the GrpcBalancing has no {0}")]
    MissingField(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Label of the `error` dimension of the error metric.
    pub fn metric_label(&self) -> ErrorKind {
        match self {
            Error::ApplyService { .. } => ErrorKind::ApplyService,
            Error::DeleteService { .. } => ErrorKind::DeleteService,
            Error::PatchStatus(_) => ErrorKind::PatchStatus,
            Error::ApplyConfigMap { .. } => ErrorKind::ApplyConfigMap,
            Error::DeleteConfigMap { .. } => ErrorKind::DeleteConfigMap,
            Error::RenderConfig(_) => ErrorKind::RenderConfig,
            Error::MissingField(_) => ErrorKind::MissingField,
        }
    }
}
