//! Who is calling: the projected ServiceAccount token of a proxy, checked
//! by the apiserver (TokenReview) for the discovery audience. A verdict is
//! cached for up to a minute (never past the token's expiry), so a proxy
//! reconnecting (or a thousand of them) does not cost a TokenReview each
//! time, and a revoked token is refused soon; refusals are cached briefly
//! too, so a flood of bad tokens cannot turn into a flood of reviews.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::future::BoxFuture;
use grpc_balancer_discovery_api::TOKEN_AUDIENCE;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

/// The caller a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    /// Set for pod-bound (projected) tokens.
    pub pod_name: Option<String>,
    /// When the token expires (its `exp` claim; `None`: it does not). A
    /// stream opened with it ends then: the proxy comes back with the
    /// token the kubelet has renewed, and a stolen or revoked one stops
    /// working within its lifetime.
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send the projected ServiceAccount token as `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed authorization metadata: {0}")]
    Malformed(&'static str),
    #[error("token refused: {0}")]
    Refused(String),
    #[error("the token is not a ServiceAccount's (user {0:?})")]
    NotServiceAccount(String),
    #[error("cannot review the token now: {0}")]
    Unavailable(String),
}

/// What the apiserver said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub authenticated: bool,
    pub username: String,
    pub audiences: Vec<String>,
    pub pod_name: Option<String>,
    pub error: Option<String>,
}

/// Asks the apiserver about a token (a trait so the cache is tested alone).
pub trait ReviewTokens: Send + Sync + 'static {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, String>>;
}

/// TokenReview through the operator's client (`tokenreviews: create`).
pub struct KubeTokenReviews(pub kube::Client);

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

impl ReviewTokens for KubeTokenReviews {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, String>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.0.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: Some(vec![TOKEN_AUDIENCE.to_owned()]),
                },
                ..TokenReview::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| e.to_string())?;
            let status = answer.status.unwrap_or_default();
            let user = status.user.unwrap_or_default();
            Ok(Review {
                authenticated: status.authenticated == Some(true),
                username: user.username.unwrap_or_default(),
                audiences: status.audiences.unwrap_or_default(),
                pod_name: user
                    .extra
                    .and_then(|mut e| e.remove(POD_NAME_EXTRA))
                    .and_then(|v| v.into_iter().next()),
                error: status.error,
            })
        })
    }
}

/// Longest a token is accepted; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How long a refusal is remembered.
const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// How long an accepted token without a readable expiry is remembered.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Never longer than this, whatever the token says: a token revoked before
/// its expiry (its pod or ServiceAccount deleted) opens no new stream after
/// this long. Streams it opened end at its expiry.
const MAX_TTL: Duration = Duration::from_secs(60);
/// Verdicts remembered at most; beyond, expired ones go first, then no caching.
const MAX_CACHED: usize = 10_000;
/// TokenReviews in flight at once.
const MAX_REVIEWS: usize = 16;

/// A verdict and until when it may be reused.
type CachedVerdict = (Result<Identity, AuthError>, Instant);

pub struct Authenticator {
    reviewer: Arc<dyn ReviewTokens>,
    cache: Mutex<HashMap<String, CachedVerdict>>,
    reviews: Semaphore,
}

impl Authenticator {
    pub fn new(reviewer: Arc<dyn ReviewTokens>) -> Authenticator {
        Authenticator {
            reviewer,
            cache: Mutex::new(HashMap::new()),
            reviews: Semaphore::new(MAX_REVIEWS),
        }
    }

    /// The identity of the caller whose `authorization` metadata is `header`.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Identity, AuthError> {
        let token = bearer_token(header)?;
        if let Some(verdict) = self.cached(token) {
            return verdict;
        }
        let _permit = self
            .reviews
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable("shutting down".into()))?;
        // Another caller with the same token may have finished meanwhile.
        if let Some(verdict) = self.cached(token) {
            return verdict;
        }
        let review = match self.reviewer.review(token).await {
            Ok(review) => review,
            // Not cached: the next attempt asks again.
            Err(e) => return Err(AuthError::Unavailable(e)),
        };
        let verdict = judge(review).map(|identity| Identity {
            expires_at: token_expiry(token),
            ..identity
        });
        let ttl = match &verdict {
            Ok(_) => token_lifetime(token, SystemTime::now()).unwrap_or(DEFAULT_TTL),
            Err(_) => REFUSAL_TTL,
        };
        self.remember(token, verdict.clone(), ttl.min(MAX_TTL));
        verdict
    }

    fn cached(&self, token: &str) -> Option<Result<Identity, AuthError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, until) = cache.get(token)?;
        (Instant::now() < *until).then(|| verdict.clone())
    }

    fn remember(&self, token: &str, verdict: Result<Identity, AuthError>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(token.to_owned(), (verdict, now + ttl));
        }
    }

    /// Verdicts held (expired ones included until the next clean-up).
    pub fn cached_verdicts(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The token of `Bearer <token>`.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    if header.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("longer than 16 KiB"));
    }
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed("not UTF-8"))?;
    let (scheme, token) = header
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("expected the Bearer scheme"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

fn judge(review: Review) -> Result<Identity, AuthError> {
    if !review.authenticated {
        return Err(AuthError::Refused(
            review
                .error
                .unwrap_or_else(|| "not authenticated".to_owned()),
        ));
    }
    // The apiserver checks the audience; an answer without ours (an old
    // apiserver ignoring spec.audiences) is a refusal, not a pass.
    if !review.audiences.iter().any(|a| a == TOKEN_AUDIENCE) {
        return Err(AuthError::Refused(format!(
            "the token is not for audience {TOKEN_AUDIENCE}"
        )));
    }
    let mut parts = review.username.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("system"), Some("serviceaccount"), Some(ns), Some(sa))
            if !ns.is_empty() && !sa.is_empty() =>
        {
            Ok(Identity {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
                pod_name: review.pod_name,
                expires_at: None,
            })
        }
        _ => Err(AuthError::NotServiceAccount(review.username)),
    }
}

/// How long the token has left, from its `exp` claim. The claim is read,
/// not verified: the apiserver verified the token, and this only bounds how
/// long that verdict is reused.
fn token_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let left = token_expiry(token)?.duration_since(now).unwrap_or_default();
    Some(Duration::from_secs(left.as_secs()))
}

/// The token's `exp` claim, read as [`token_lifetime`] says.
fn token_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers from a table and counts the reviews.
    struct Table {
        answers: HashMap<String, Review>,
        calls: AtomicUsize,
    }

    impl ReviewTokens for Table {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .answers
                .get(token)
                .cloned()
                .ok_or_else(|| "apiserver down".to_owned());
            Box::pin(async move { answer })
        }
    }

    fn jwt(exp: u64) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(&format!(r#"{{"exp":{exp}}}"#))
        )
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn accepted(username: &str) -> Review {
        Review {
            authenticated: true,
            username: username.into(),
            audiences: vec![TOKEN_AUDIENCE.into()],
            pod_name: Some("p".into()),
            error: None,
        }
    }

    fn authenticator(answers: Vec<(String, Review)>) -> (Authenticator, Arc<Table>) {
        let table = Arc::new(Table {
            answers: answers.into_iter().collect(),
            calls: AtomicUsize::new(0),
        });
        (Authenticator::new(table.clone()), table)
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[tokio::test]
    async fn a_valid_token_is_reviewed_once_while_it_lives() {
        let token = jwt(now_secs() + 600);
        let (auth, table) = authenticator(vec![(
            token.clone(),
            accepted("system:serviceaccount:ns:proxy"),
        )]);
        for _ in 0..5 {
            let id = auth
                .authenticate(Some(&bearer(&token)))
                .await
                .expect("accepted");
            assert_eq!(id.namespace, "ns");
            assert_eq!(id.service_account, "proxy");
            assert_eq!(id.pod_name.as_deref(), Some("p"));
        }
        assert_eq!(table.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_expired_token_is_reviewed_again() {
        // Already past its expiry: the verdict is not reused.
        let token = jwt(now_secs().saturating_sub(5));
        let mut expired = accepted("system:serviceaccount:ns:proxy");
        expired.authenticated = false;
        expired.error = Some("token has expired".into());
        let (auth, table) = authenticator(vec![(token.clone(), expired)]);
        let err = auth
            .authenticate(Some(&bearer(&token)))
            .await
            .expect_err("refused");
        assert_eq!(err, AuthError::Refused("token has expired".into()));
        // Refusals are remembered briefly.
        let _ = auth.authenticate(Some(&bearer(&token))).await;
        assert_eq!(table.calls.load(Ordering::SeqCst), 1);

        let (auth, table) = authenticator(vec![(
            token.clone(),
            accepted("system:serviceaccount:ns:proxy"),
        )]);
        auth.authenticate(Some(&bearer(&token)))
            .await
            .expect("accepted");
        auth.authenticate(Some(&bearer(&token)))
            .await
            .expect("accepted");
        assert_eq!(
            table.calls.load(Ordering::SeqCst),
            2,
            "no lifetime left: not cached"
        );
    }

    #[tokio::test]
    async fn wrong_audience_and_non_service_accounts_are_refused() {
        let mut other_audience = accepted("system:serviceaccount:ns:proxy");
        other_audience.audiences = vec!["https://kubernetes.default.svc".into()];
        let (auth, _) = authenticator(vec![
            ("aud".into(), other_audience),
            ("user".into(), accepted("alice")),
            ("short".into(), accepted("system:serviceaccount:ns")),
        ]);
        assert!(matches!(
            auth.authenticate(Some(b"Bearer aud")).await,
            Err(AuthError::Refused(m)) if m.contains(TOKEN_AUDIENCE)
        ));
        assert_eq!(
            auth.authenticate(Some(b"Bearer user")).await,
            Err(AuthError::NotServiceAccount("alice".into()))
        );
        assert!(matches!(
            auth.authenticate(Some(b"Bearer short")).await,
            Err(AuthError::NotServiceAccount(_))
        ));
    }

    #[tokio::test]
    async fn missing_and_malformed_headers_cost_no_review() {
        let (auth, table) = authenticator(vec![]);
        assert_eq!(auth.authenticate(None).await, Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Bearer ")).await,
            Err(AuthError::Missing)
        );
        for bad in [
            &b"token-without-scheme"[..],
            b"Basic dXNlcjpwYXNz",
            b"Bearer \xff\xfe",
        ] {
            assert!(matches!(
                auth.authenticate(Some(bad)).await,
                Err(AuthError::Malformed(_))
            ));
        }
        let huge = bearer(&"a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            auth.authenticate(Some(&huge)).await,
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(table.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unreachable_apiserver_is_not_cached() {
        let (auth, table) = authenticator(vec![]);
        for _ in 0..2 {
            assert!(matches!(
                auth.authenticate(Some(b"Bearer x")).await,
                Err(AuthError::Unavailable(_))
            ));
        }
        assert_eq!(table.calls.load(Ordering::SeqCst), 2);
        assert_eq!(auth.cached_verdicts(), 0);
    }

    #[tokio::test]
    async fn an_identity_carries_its_tokens_expiry() {
        let exp = now_secs() + 300;
        let token = jwt(exp);
        let (auth, _) = authenticator(vec![(
            token.clone(),
            accepted("system:serviceaccount:ns:sa"),
        )]);
        let identity = auth
            .authenticate(Some(&bearer(&token)))
            .await
            .expect("accepted");
        assert_eq!(
            identity.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(exp))
        );
    }

    #[test]
    fn token_lifetime_reads_exp_and_survives_garbage() {
        let now = SystemTime::now();
        let t = jwt(now_secs() + 100);
        let left = token_lifetime(&t, now).expect("exp");
        assert!(left <= Duration::from_secs(100) && left >= Duration::from_secs(98));
        for garbage in ["", "a", "a.b.c", "a.!!!.c", "a.e30.c" /* {} */] {
            assert_eq!(token_lifetime(garbage, now), None, "{garbage}");
        }
    }
}
