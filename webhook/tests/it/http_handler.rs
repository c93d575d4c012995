//! The real router, driven in-process: good reviews and every kind of bad one.
//! Each answer must be a well-formed AdmissionReview v1 (or a 404 for paths
//! that are not ours).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use grpc_balancer_webhook::http::{MAX_BODY_BYTES, router};
use grpc_balancer_webhook::proxy_configs::ProxyConfigs;
use grpc_balancer_webhook::review::Reviewer;
use grpc_balancer_webhook::{Args, LocalBalancing, Outcome, SidecarMode, WebhookMetrics};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn app() -> axum::Router {
    app_with(Arc::default())
}

fn app_with(metrics: Arc<WebhookMetrics>) -> axum::Router {
    let settings = Args::defaults()
        .expect("default flags parse")
        .proxy_settings(SidecarMode::Native);
    let configs = ProxyConfigs::new();
    configs.set(
        "demo",
        vec![LocalBalancing {
            name: "greeter".into(),
            env_name: "GRPC_BALANCER_GREETER_ADDR".into(),
            address: "127.0.0.1:15001".into(),
            aliases: None,
        }],
    );
    router(
        Arc::new(Reviewer {
            settings: Arc::new(settings),
            configs: Arc::new(configs),
            discovery_ca: Default::default(),
        }),
        metrics,
    )
}

async fn call(method: Method, path: &str, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    call_app(app(), method, path, body).await
}

async fn call_app(
    app: axum::Router,
    method: Method,
    path: &str,
    body: impl Into<Body>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a request");
    let response = app.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, body.to_vec())
}

/// The response part of an answer, after checking it is a v1 AdmissionReview.
fn response_of(body: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = review["response"].clone();
    assert!(response.is_object(), "{review}");
    assert!(response["allowed"].is_boolean(), "{review}");
    response
}

fn review(uid: &str, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "demo",
            "operation": operation,
            "userInfo": { "username": "tester" },
            "object": object,
            "dryRun": false
        }
    })
}

fn annotated_pod(extra_annotations: Value) -> Value {
    let mut annotations = json!({ "grpcbalancer.io/sidecar.inject": "true" });
    if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra_annotations.as_object()) {
        a.extend(e.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "client-", "namespace": "demo", "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "example.com/app:1" }] }
    })
}

async fn post_json(value: &Value) -> (StatusCode, Value) {
    let (status, body) = call(Method::POST, "/mutate", value.to_string()).await;
    (status, response_of(&body))
}

#[tokio::test]
async fn an_annotated_pod_gets_a_patch() {
    let (status, response) = post_json(&review("u-1", "CREATE", annotated_pod(json!({})))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["uid"], "u-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let decoded = patch_bytes(&response["patch"]);
    let ops: Vec<Value> = serde_json::from_slice(&decoded).expect("a JSON patch");
    let text = serde_json::to_string(&ops).expect("json");
    assert!(text.contains("GRPC_BALANCER_GREETER_ADDR"), "{text}");
    assert!(text.contains(r#""path":"/spec/initContainers""#), "{text}");
}

#[tokio::test]
async fn pods_that_do_not_ask_or_are_not_created_pass_unchanged() {
    let plain = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": { "containers": [] } });
    for (uid, operation, pod) in [
        ("u-2", "CREATE", plain),
        ("u-3", "UPDATE", annotated_pod(json!({}))),
    ] {
        let (status, response) = post_json(&review(uid, operation, pod)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
    }
}

#[tokio::test]
async fn an_override_out_of_bounds_is_denied_with_the_reason() {
    let pod = annotated_pod(json!({ "grpcbalancer.io/proxy-memory-limit": "100Gi" }));
    let (status, response) = post_json(&review("u-4", "CREATE", pod)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["uid"], "u-4");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(
        message.contains("grpcbalancer.io/proxy-memory-limit"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_reviews_get_a_well_formed_refusal() {
    let good = review("u-5", "CREATE", annotated_pod(json!({}))).to_string();
    let truncated = good[..good.len() / 2].to_owned();
    let mut wrong_kind = review("u-6", "CREATE", annotated_pod(json!({})));
    wrong_kind["kind"] = json!("Pod");
    let mut v1beta1 = review("u-7", "CREATE", annotated_pod(json!({})));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_object = review("u-8", "CREATE", json!(null));
    no_object["request"]
        .as_object_mut()
        .expect("an object")
        .remove("object");
    let mut deployment = review(
        "u-9",
        "CREATE",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" }
        }),
    );
    deployment["request"]["kind"] =
        json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let no_request = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" });
    let mut object_not_a_pod = review("u-10", "CREATE", json!(["not", "a", "pod"]));
    object_not_a_pod["request"]["namespace"] = json!(42);

    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("truncated JSON", truncated, "EOF while parsing", None),
        ("empty body", String::new(), "not an AdmissionReview", None),
        (
            "not JSON",
            "\u{0}\u{1}garbage".to_owned(),
            "not an AdmissionReview",
            None,
        ),
        (
            "a JSON string",
            "\"hello\"".to_owned(),
            "not an AdmissionReview",
            None,
        ),
        (
            "wrong kind",
            wrong_kind.to_string(),
            "is not AdmissionReview",
            Some("u-6"),
        ),
        ("v1beta1", v1beta1.to_string(), "not supported", Some("u-7")),
        (
            "missing object",
            no_object.to_string(),
            "no object",
            Some("u-8"),
        ),
        (
            "not a pod",
            deployment.to_string(),
            "only pods",
            Some("u-9"),
        ),
        (
            "missing request",
            no_request.to_string(),
            "no request",
            None,
        ),
        (
            "object of the wrong shape",
            object_not_a_pod.to_string(),
            "does not parse",
            Some("u-10"),
        ),
    ];
    for (what, body, needle, uid) in cases {
        let (status, body) = call(Method::POST, "/mutate", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        let response = response_of(&body);
        assert_eq!(response["allowed"], false, "{what}: {response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        if let Some(uid) = uid {
            assert_eq!(response["uid"], uid, "{what}: the uid is echoed");
        }
    }
}

#[tokio::test]
async fn a_huge_body_is_refused() {
    // Declared length over the limit: refused before reading.
    let (status, body) = call(Method::POST, "/mutate", vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response_of(&body)["allowed"], false);

    // No declared length (a stream): refused once the limit is crossed.
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; MAX_BODY_BYTES / 2]));
    let body = Body::from_stream(futures::stream::iter(chunks));
    let (status, body) = call(Method::POST, "/mutate", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response_of(&body)["allowed"], false);
}

#[tokio::test]
async fn other_paths_and_methods() {
    assert_eq!(
        call(Method::POST, "/validate", "{}").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(Method::GET, "/", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        call(Method::GET, "/mutate", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(call(Method::GET, "/healthz", "").await.0, StatusCode::OK);
}

/// The patch bytes: kube serialises them as an array of numbers, which the
/// apiserver's decoder accepts as well as base64.
fn patch_bytes(patch: &Value) -> Vec<u8> {
    patch
        .as_array()
        .expect("the patch as an array of bytes")
        .iter()
        .map(|b| {
            b.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .expect("a byte")
        })
        .collect()
}

#[tokio::test]
async fn every_outcome_is_counted_once() {
    let metrics = Arc::new(WebhookMetrics::default());
    let app = app_with(metrics.clone());
    let plain = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": { "containers": [] } });
    let bad_override = annotated_pod(json!({ "grpcbalancer.io/proxy-memory-limit": "100Gi" }));
    let bodies: Vec<(Body, StatusCode)> = vec![
        (
            review("c-1", "CREATE", annotated_pod(json!({})))
                .to_string()
                .into(),
            StatusCode::OK,
        ),
        (
            review("c-2", "CREATE", annotated_pod(json!({})))
                .to_string()
                .into(),
            StatusCode::OK,
        ),
        (
            review("c-3", "CREATE", plain).to_string().into(),
            StatusCode::OK,
        ),
        (
            review("c-4", "CREATE", bad_override).to_string().into(),
            StatusCode::OK,
        ),
        ("{".into(), StatusCode::BAD_REQUEST),
        (
            vec![b' '; MAX_BODY_BYTES + 1].into(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (body, expected) in bodies {
        let (status, _) = call_app(app.clone(), Method::POST, "/mutate", body).await;
        assert_eq!(status, expected);
    }
    // Not reviews: not counted.
    call_app(app.clone(), Method::GET, "/healthz", "").await;
    call_app(app, Method::POST, "/validate", "{}").await;

    let counted = [
        Outcome::Injected,
        Outcome::Skipped,
        Outcome::Denied,
        Outcome::Malformed,
        Outcome::TooLarge,
    ]
    .map(|outcome| (outcome, metrics.reviews(outcome)));
    assert_eq!(
        counted,
        [
            (Outcome::Injected, 2),
            (Outcome::Skipped, 1),
            (Outcome::Denied, 1),
            (Outcome::Malformed, 1),
            (Outcome::TooLarge, 1),
        ]
    );
}
