//! Waiting for an observable condition instead of sleeping.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often conditions are re-checked.
const INTERVAL: Duration = Duration::from_millis(100);

/// Calls `f` until it returns `Ok`, and returns that value. Panics after `timeout` with
/// `what` and the last `Err` seen, so a failure says what was observed instead.
pub async fn poll_until<T, E, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match try_poll_until(timeout, &mut f).await {
        Ok(v) => v,
        Err(last) => {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last:?}")
        }
    }
}

/// Like [`poll_until`] but returns the last error instead of panicking.
pub async fn try_poll_until<T, E, F, Fut>(timeout: Duration, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

/// Waits until `f` returns true; panics after `timeout` naming `what`.
pub async fn assert_eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(what, timeout, || {
        let fut = f();
        async move {
            if fut.await {
                Ok(())
            } else {
                Err("condition false")
            }
        }
    })
    .await
}
