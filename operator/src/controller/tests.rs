//! The reconcile of one balancing against a mock API server: which requests
//! it sends, with which bodies, and that it sends none when nothing changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grpc_balancer_crds::annotations::BALANCING_LABEL;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use crate::context::{Context, Stores};
use crate::controller::reconcile;
use crate::kube_util::dirty::DirtySet;
use crate::metrics::{ApiRequestCounter, Metrics};
use crate::render::fixtures::{GREETER, balancing, slice};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A store holding exactly `objects`, marked ready.
fn store_of<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// Slices of the two subsets' Services as the EndpointSlice controller
/// labels them: v1 with 3 ready endpoints, v2 with 1.
fn greeter_slices() -> Vec<EndpointSlice> {
    [("grpcb-greeter-v1", 3), ("grpcb-greeter-v2", 1)]
        .into_iter()
        .map(|(service, ready)| {
            let mut s = slice("demo", service, 50051, ready, 0);
            s.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(BALANCING_LABEL.into(), "greeter".into());
            s
        })
        .collect()
}

fn stored_greeter() -> GrpcBalancing {
    let mut gb = balancing(GREETER);
    gb.metadata.resource_version = Some("100".into());
    gb
}

fn context(client: Client, gb: GrpcBalancing, services: Vec<Service>) -> Arc<Context> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "grpc-balancer-operator".into(),
            instance: Some("test".into()),
        },
    );
    Arc::new(Context::new(
        client,
        "cluster.local".into(),
        Arc::new(Metrics::new(ApiRequestCounter::default())),
        recorder,
        Stores {
            balancings: store_of(vec![gb]),
            services: store_of(services),
            slices: store_of(greeter_slices()),
            pods: store_of(Vec::new()),
            config_maps: store_of(Vec::new()),
        },
        Arc::new(DirtySet::default()),
    ))
}

/// One request as the mock server saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// Answers the next request with its own body (what an apply returns is
/// the object as stored, which for a fresh object is close enough), with a
/// resourceVersion added.
async fn answer_next(handle: &mut ApiHandle, status: StatusCode) -> Seen {
    answer_next_with(handle, status, None).await
}

/// Answers the next request with `answer`, or else with its own body.
async fn answer_next_with(
    handle: &mut ApiHandle,
    status: StatusCode,
    answer: Option<&dyn Fn(&Value) -> Value>,
) -> Seen {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the reconcile sends another request")
        .expect("the client is alive");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body readable");
    let body: Value = serde_json::from_slice(&bytes).expect("request body is JSON");
    let mut answer = answer.map_or_else(|| body.clone(), |f| f(&body));
    if let Some(meta) = answer.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!("101"));
        meta.entry("name").or_insert(json!("generated"));
    }
    respond.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
            .expect("response builds"),
    );
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

/// The whole balancing with the status of a status patch, as the API
/// server answers a status write.
fn with_written_status(gb: &GrpcBalancing) -> impl Fn(&Value) -> Value + use<> {
    let stored = serde_json::to_value(gb).expect("a balancing serializes");
    move |patch: &Value| {
        let mut answer = stored.clone();
        answer["status"] = patch["status"].clone();
        answer
    }
}

/// Runs `reconcile` and fails if it sends any request at all.
async fn reconcile_without_requests(
    gb: GrpcBalancing,
    ctx: Arc<Context>,
    handle: &mut ApiHandle,
    what: &str,
) {
    let run = reconcile(Arc::new(gb), ctx);
    tokio::select! {
        result = run => { result.expect("the reconcile succeeds"); }
        request = handle.next_request() => {
            let (request, _) = request.expect("the client is alive");
            panic!("{what}: unexpected {} {}", request.method(), request.uri());
        }
    }
}

fn assert_service_apply(seen: &Seen, subset: &str) {
    let name = format!("grpcb-greeter-{subset}");
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(
        seen.path,
        format!("/api/v1/namespaces/demo/services/{name}")
    );
    assert!(seen.query.contains("fieldManager=grpc-balancer-operator"));
    assert!(seen.query.contains("force=true"), "{}", seen.query);
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    let b = &seen.body;
    assert_eq!(b["kind"], "Service");
    assert_eq!(b["metadata"]["name"], name);
    assert_eq!(
        b["metadata"]["labels"],
        json!({
            "app.kubernetes.io/managed-by": "grpc-balancer",
            "grpcbalancer.io/balancing": "greeter",
            "grpcbalancer.io/subset": subset,
        })
    );
    let owner = &b["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "GrpcBalancing");
    assert_eq!(owner["name"], "greeter");
    assert_eq!(owner["uid"], "0b1c2d3e-0000-4000-8000-000000000001");
    assert_eq!(owner["controller"], true);
    assert_eq!(b["spec"]["clusterIP"], "None");
    assert_eq!(
        b["spec"]["selector"],
        json!({ "app": "greeter", "version": subset })
    );
    assert_eq!(
        b["spec"]["ports"],
        json!([{
            "name": "grpc",
            "port": 50051,
            "targetPort": 50051,
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }])
    );
}

#[tokio::test]
async fn a_two_subset_balancing_is_applied_once_and_then_left_alone() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let gb = stored_greeter();
    let ctx = context(client, gb.clone(), Vec::new());

    let run = tokio::spawn(reconcile(Arc::new(gb.clone()), ctx.clone()));
    let v1 = answer_next(&mut handle, StatusCode::OK).await;
    assert_service_apply(&v1, "v1");
    let v2 = answer_next(&mut handle, StatusCode::OK).await;
    assert_service_apply(&v2, "v2");

    let status =
        answer_next_with(&mut handle, StatusCode::OK, Some(&with_written_status(&gb))).await;
    assert_eq!(status.method, Method::PATCH);
    assert_eq!(
        status.path,
        "/apis/grpcbalancer.io/v1alpha1/namespaces/demo/grpcbalancings/greeter/status"
    );
    assert!(status.query.contains("fieldManager=grpc-balancer-operator"));
    assert_eq!(status.content_type, "application/apply-patch+yaml");
    let s = &status.body["status"];
    assert_eq!(status.body["kind"], "GrpcBalancing");
    assert_eq!(s["observedGeneration"], 3);
    assert_eq!(s["readyEndpoints"], 4);
    assert_eq!(
        s["services"],
        json!(["grpcb-greeter-v1", "grpcb-greeter-v2"])
    );
    let subsets: Vec<(Value, Value)> = s["subsets"]
        .as_array()
        .expect("subsets listed")
        .iter()
        .map(|x| (x["name"].clone(), x["readyEndpoints"].clone()))
        .collect();
    assert_eq!(
        subsets,
        [(json!("v1"), json!(3)), (json!("v2"), json!(1))],
        "ready endpoints per subset"
    );
    let conditions = s["conditions"].as_array().expect("conditions listed");
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["type"], "Ready");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[0]["reason"], "Reconciled");
    assert_eq!(conditions[0]["observedGeneration"], 3);

    // Ready changed (none -> Reconciled): one Event.
    let event = answer_next(&mut handle, StatusCode::CREATED).await;
    assert_eq!(event.method, Method::POST);
    assert_eq!(event.path, "/apis/events.k8s.io/v1/namespaces/demo/events");
    assert_eq!(event.body["reason"], "Reconciled");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["name"], "greeter");

    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the reconcile ends")
        .expect("the reconcile task does not panic")
        .expect("the reconcile succeeds");

    // Again before the watch events of those writes arrived: the stores
    // still show the balancing without status and no Service.
    reconcile_without_requests(
        gb.clone(),
        ctx.clone(),
        &mut handle,
        "second reconcile, stores not caught up",
    )
    .await;

    // Again once the stores show what was written.
    let mut written = gb.clone();
    written.metadata.resource_version = Some("101".into());
    written.status =
        Some(serde_json::from_value(s.clone()).expect("the written status is a valid status"));
    let services: Vec<Service> = [v1, v2]
        .into_iter()
        .map(|seen| {
            let mut svc: Service =
                serde_json::from_value(seen.body).expect("the applied Service is a Service");
            svc.metadata.resource_version = Some("101".into());
            svc.metadata.namespace = Some("demo".into());
            svc
        })
        .collect();
    let caught_up = context(ctx.client.clone(), written.clone(), services);
    reconcile_without_requests(
        written,
        caught_up,
        &mut handle,
        "reconcile with stores caught up",
    )
    .await;
}

#[tokio::test]
async fn a_failed_status_write_is_retried_by_the_next_reconcile() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let gb = stored_greeter();
    let ctx = context(client, gb.clone(), Vec::new());

    let run = tokio::spawn(reconcile(Arc::new(gb.clone()), ctx.clone()));
    answer_next(&mut handle, StatusCode::OK).await;
    answer_next(&mut handle, StatusCode::OK).await;
    let failed = answer_next(&mut handle, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(failed.path.ends_with("/status"));
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the reconcile ends")
        .expect("the reconcile task does not panic");
    assert!(result.is_err(), "a failed status write fails the reconcile");

    // The Services are remembered as applied; the status is not.
    let run = tokio::spawn(reconcile(Arc::new(gb.clone()), ctx));
    let retried =
        answer_next_with(&mut handle, StatusCode::OK, Some(&with_written_status(&gb))).await;
    assert!(
        retried.path.ends_with("/grpcbalancings/greeter/status"),
        "only the status is written again, not {}",
        retried.path
    );
    answer_next(&mut handle, StatusCode::CREATED).await;
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the reconcile ends")
        .expect("the reconcile task does not panic")
        .expect("the reconcile succeeds");
}
