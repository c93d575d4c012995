//! A plain-HTTP GET for the local admin endpoints (operator `/readyz`, proxy
//! `/ready` and `/endpoints`).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Status and body of `GET url`, bounded to 2 s.
pub async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().with_context(|| format!("url {url:?}"))?;
    let fetch = async {
        let response = client.get(uri).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url}"))
}

/// Succeeds once `GET url` answers 200.
pub async fn expect_ok(url: &str) -> anyhow::Result<()> {
    let (status, body) = get(url).await?;
    anyhow::ensure!(status == 200, "GET {url}: {status} {body}");
    Ok(())
}
