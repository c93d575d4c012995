//! The HTTP routes: `POST /mutate`, `GET /healthz`, 404 for anything else.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};

use crate::metrics::{Outcome, WebhookMetrics};
use crate::review::{Reviewer, Verdict};

/// Largest review body read. The apiserver caps a request at 3 MiB, so a
/// review of any pod it accepts fits; anything larger is not from it.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Path the apiserver calls.
pub const MUTATE_PATH: &str = "/mutate";

#[derive(Clone)]
struct Handler {
    reviewer: Arc<Reviewer>,
    metrics: Arc<WebhookMetrics>,
}

pub fn router(reviewer: Arc<Reviewer>, metrics: Arc<WebhookMetrics>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(Handler { reviewer, metrics })
}

async fn mutate(State(handler): State<Handler>, request: Request) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer_review(&handler.reviewer, request).await;
    handler.metrics.observe(outcome, started.elapsed());
    response
}

async fn answer_review(reviewer: &Reviewer, request: Request) -> (Outcome, Response) {
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (Outcome::TooLarge, too_large());
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return (Outcome::TooLarge, too_large());
        }
        Err(e) => {
            let why = format!("could not read the request body: {e}");
            return (
                Outcome::Malformed,
                answer(StatusCode::BAD_REQUEST, &invalid(&why)),
            );
        }
    };
    // Reviews take microseconds: no need to leave the async task.
    let (verdict, review) = reviewer.review(&body);
    let (status, outcome) = match verdict {
        Verdict::Decided => (StatusCode::OK, decided_outcome(&review)),
        Verdict::Malformed => {
            tracing::warn!(bytes = body.len(), "malformed admission review refused");
            (StatusCode::BAD_REQUEST, Outcome::Malformed)
        }
    };
    (outcome, answer(status, &review))
}

fn decided_outcome(review: &AdmissionReview<DynamicObject>) -> Outcome {
    match &review.response {
        Some(response) if !response.allowed => Outcome::Denied,
        Some(response) if response.patch.is_some() => Outcome::Injected,
        _ => Outcome::Skipped,
    }
}

fn too_large() -> Response {
    tracing::warn!(
        limit = MAX_BODY_BYTES,
        "admission review body over the limit refused"
    );
    let why = format!("the request body is larger than {MAX_BODY_BYTES} bytes");
    answer(StatusCode::PAYLOAD_TOO_LARGE, &invalid(&why))
}

fn invalid(why: &str) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(why);
    response.result = response.result.with_code(400);
    response.into_review()
}

fn answer(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    match serde_json::to_vec(review) {
        Ok(json) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(json),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise an admission review");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not serialise the review\n",
            )
                .into_response()
        }
    }
}
