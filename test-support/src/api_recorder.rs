//! A plain-HTTP front for the Kubernetes API that forwards every request
//! with the identity of a client (e.g. a ServiceAccount token) and records
//! what it was, as the apiserver's authorizer sees it: verb, API group,
//! resource, subresource, namespace, name and the answer's status. The
//! operator's RBAC test points the operator at it to compare the API calls
//! the operator really makes with the chart's RBAC rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the apiserver's authorizer sees of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource paths (`/version`, `/apis`, ...), which RBAC
    /// grants every authenticated user through `system:discovery`.
    pub non_resource_path: String,
    pub status: u16,
}

/// A running recorder; it stops when dropped.
pub struct ApiRecorder {
    addr: SocketAddr,
    inner: Arc<Recorder>,
    task: JoinHandle<()>,
}

impl ApiRecorder {
    /// Serves on a loopback port, forwarding with `client`'s server and
    /// credentials.
    pub async fn start(client: kube::Client) -> std::io::Result<ApiRecorder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Recorder {
            client,
            records: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, inner.clone()));
        Ok(ApiRecorder { addr, inner, task })
    }

    /// The plain-HTTP address to point a client at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in the order they were answered.
    pub fn records(&self) -> Vec<Record> {
        self.inner
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for ApiRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Derives the authorizer attributes of a request from its method, path and
/// query, following the apiserver's request-info rules.
fn classify(method: &str, path: &str, query: &str) -> Record {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => {
            return Record {
                verb: method.to_ascii_lowercase(),
                non_resource_path: path.to_owned(),
                ..Record::default()
            };
        }
    };
    if rest.is_empty() {
        return Record {
            verb: method.to_ascii_lowercase(),
            non_resource_path: path.to_owned(),
            ..Record::default()
        };
    }
    // `namespaces/<ns>/<resource>...` is namespaced, unless it is the
    // namespace object itself (`namespaces/<ns>` or `namespaces/<ns>/status`).
    let (namespace, rest): (String, &[&str]) = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if !matches!(*resource, "status" | "finalize") || !tail.is_empty() =>
        {
            ((*ns).to_owned(), &rest[2..])
        }
        _ => (String::new(), rest),
    };
    let resource = rest.first().copied().unwrap_or_default().to_owned();
    let name = rest.get(1).copied().unwrap_or_default().to_owned();
    let subresource = rest.get(2).copied().unwrap_or_default().to_owned();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name.is_empty()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        (other, _) => {
            return Record {
                verb: other.to_ascii_lowercase(),
                group,
                resource,
                subresource,
                namespace,
                name,
                ..Record::default()
            };
        }
    };
    Record {
        verb: verb.to_owned(),
        group,
        resource,
        subresource,
        namespace,
        name,
        ..Record::default()
    }
}

struct Recorder {
    client: kube::Client,
    records: Mutex<Vec<Record>>,
}

impl Recorder {
    fn write(&self, record: &Record) {
        // A lost record would show up as an unused permission.
        match self.records.lock() {
            Ok(mut records) => records.push(record.clone()),
            Err(_) => eprintln!("api-recorder: the records are poisoned; a record is lost"),
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<kube::client::Body>, anyhow::Error> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let mut record = classify(parts.method.as_str(), &path, &query);
        let body = body
            .collect()
            .await
            .context("reading the request body")?
            .to_bytes();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| path.clone());
        let mut forwarded = Request::builder().method(parts.method).uri(path_and_query);
        for (name, value) in &parts.headers {
            // The kube client sets its own credentials and connection headers.
            if !matches!(
                name.as_str(),
                "authorization" | "host" | "connection" | "content-length"
            ) {
                forwarded = forwarded.header(name, value);
            }
        }
        let forwarded = forwarded
            .body(kube::client::Body::from(body))
            .context("building the forwarded request")?;
        let response = self
            .client
            .send(forwarded)
            .await
            .context("forwarding to the apiserver")?;
        record.status = response.status().as_u16();
        // A server-side apply (PATCH) that creates the object is also
        // authorized as `create`: record both.
        let created = record.verb == "patch" && record.status == 201;
        self.write(&record);
        if created {
            record.verb = "create".to_owned();
            self.write(&record);
        }
        Ok(response)
    }
}

async fn serve(listener: TcpListener, recorder: Arc<Recorder>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("api-recorder: accept: {error}");
                continue;
            }
        };
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let recorder = Arc::clone(&recorder);
                async move {
                    let response = match recorder.forward(request).await {
                        Ok(response) => response,
                        Err(error) => Response::builder()
                            .status(StatusCode::BAD_GATEWAY)
                            .body(kube::client::Body::from(
                                format!("api-recorder: {error:#}\n").into_bytes(),
                            ))
                            .unwrap_or_else(|_| Response::new(kube::client::Body::empty())),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("api-recorder: connection: {error}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(
        method: &str,
        path: &str,
        query: &str,
    ) -> (String, String, String, String, String, String) {
        let r = classify(method, path, query);
        (
            r.verb,
            r.group,
            r.resource,
            r.subresource,
            r.namespace,
            r.name,
        )
    }

    fn t(
        v: &str,
        g: &str,
        r: &str,
        s: &str,
        ns: &str,
        n: &str,
    ) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), r.into(), s.into(), ns.into(), n.into())
    }

    #[test]
    fn resource_requests() {
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/demo/pods", ""),
            t("list", "", "pods", "", "demo", "")
        );
        assert_eq!(
            attrs(
                "GET",
                "/api/v1/namespaces/demo/pods",
                "watch=true&resourceVersion=1"
            ),
            t("watch", "", "pods", "", "demo", "")
        );
        assert_eq!(
            attrs("GET", "/api/v1/pods", "watch=1"),
            t("watch", "", "pods", "", "", "")
        );
        assert_eq!(
            attrs(
                "PATCH",
                "/apis/grpcbalancer.io/v1alpha1/namespaces/demo/grpcbalancings/g/status",
                ""
            ),
            t(
                "patch",
                "grpcbalancer.io",
                "grpcbalancings",
                "status",
                "demo",
                "g"
            )
        );
        assert_eq!(
            attrs("POST", "/apis/events.k8s.io/v1/namespaces/demo/events", ""),
            t("create", "events.k8s.io", "events", "", "demo", "")
        );
        assert_eq!(
            attrs(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/sys/leases/leader",
                ""
            ),
            t(
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "sys",
                "leader"
            )
        );
        assert_eq!(
            attrs(
                "PATCH",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/gb",
                ""
            ),
            t(
                "patch",
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                "",
                "",
                "gb"
            )
        );
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/demo/services/s", ""),
            t("delete", "", "services", "", "demo", "s")
        );
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/demo/services", ""),
            t("deletecollection", "", "services", "", "demo", "")
        );
    }

    #[test]
    fn namespace_objects_are_cluster_scoped() {
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/demo", ""),
            t("get", "", "namespaces", "", "", "demo")
        );
        assert_eq!(
            attrs("PUT", "/api/v1/namespaces/demo/finalize", ""),
            t("update", "", "namespaces", "finalize", "", "demo")
        );
        assert_eq!(
            attrs("GET", "/api/v1/namespaces", ""),
            t("list", "", "namespaces", "", "", "")
        );
    }

    #[test]
    fn discovery_is_non_resource() {
        for path in [
            "/version",
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/openapi/v2",
            "/",
        ] {
            let r = classify("GET", path, "");
            assert_eq!(r.non_resource_path, path, "{path}");
            assert!(r.resource.is_empty(), "{path}");
        }
    }
}
