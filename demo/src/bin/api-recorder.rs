//! `api-recorder`: a plain-HTTP front for the Kubernetes API that forwards
//! every request with the identity of a kubeconfig (e.g. a ServiceAccount
//! token) and records what it was, as the apiserver's authorizer sees it:
//! verb, API group, resource, subresource, namespace, name and the answer's
//! status. `scripts/test-chart` points the operator at it to compare the
//! API calls the operator really makes with the chart's RBAC rules.
//!
//! Output: one JSON object per request, on `--out`, e.g.
//! `{"verb":"patch","group":"","resource":"services","subresource":"","namespace":"demo","name":"grpcb-greeter-v1","status":200}`.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "Forwards Kubernetes API requests and records each one's verb and resource")]
struct Args {
    /// Kubeconfig whose server and credentials requests are forwarded with.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Plain-HTTP address to serve on (port 0: any; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File the records are appended to, one JSON object per line.
    #[arg(long)]
    out: PathBuf,
}

/// What the apiserver's authorizer sees of one request.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Record {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    /// Set for non-resource paths (`/version`, `/apis`, ...), which RBAC
    /// grants every authenticated user through `system:discovery`.
    non_resource_path: String,
    status: u16,
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
    out: Mutex<std::fs::File>,
}

impl Recorder {
    fn write(&self, record: &Record) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if let Ok(mut file) = self.out.lock() {
            // A lost record would show up as an unused permission, so a
            // failed write is worth a loud log line.
            if let Err(error) = file.write_all(line.as_bytes()) {
                eprintln!("api-recorder: writing a record: {error}");
            }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let recorder = Arc::new(Recorder {
        client,
        out: Mutex::new(out),
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Stdout carries only the address, for scripts.
    println!("{}", listener.local_addr()?);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (stream, _) = match accepted {
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
