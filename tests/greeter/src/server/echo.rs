//! Echoes request metadata back in the response headers and trailers, so a
//! client can check that both directions pass a proxy intact.
//!
//! tonic sets no custom trailers on a successful call, hence an HTTP layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::ECHO_TRAILER_PREFIX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct EchoLayer {
    pub(crate) enabled: bool,
}

impl<S> Layer<S> for EchoLayer {
    type Service = Echo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Echo {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Echo<S> {
    inner: S,
    enabled: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Echo<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<EchoBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let echoed = if self.enabled {
            custom_metadata(request.headers())
        } else {
            HeaderMap::new()
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(with_echo(response, echoed))
        })
    }
}

/// The request's application metadata: the `x-*` headers.
fn custom_metadata(headers: &HeaderMap) -> HeaderMap {
    let mut echoed = HeaderMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-") {
            echoed.append(name.clone(), value.clone());
        }
    }
    echoed
}

fn trailer_names(echoed: &HeaderMap) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    for (name, value) in echoed {
        let prefixed = format!("{ECHO_TRAILER_PREFIX}{}", name.as_str());
        if let Ok(prefixed) = HeaderName::from_bytes(prefixed.as_bytes()) {
            trailers.append(prefixed, value.clone());
        }
    }
    trailers
}

fn with_echo<B>(response: http::Response<B>, echoed: HeaderMap) -> http::Response<EchoBody<B>> {
    let (mut parts, body) = response.into_parts();
    if echoed.is_empty() {
        return http::Response::from_parts(parts, EchoBody::new(body, None));
    }
    let trailers = trailer_names(&echoed);
    for (name, value) in &echoed {
        parts.headers.append(name.clone(), value.clone());
    }
    // A trailers-only response (an error status) carries its trailers in the
    // headers; there is no trailers frame to extend.
    if parts.headers.contains_key("grpc-status") {
        parts.headers.extend(trailers);
        return http::Response::from_parts(parts, EchoBody::new(body, None));
    }
    http::Response::from_parts(parts, EchoBody::new(body, Some(trailers)))
}

pin_project! {
    /// A response body whose trailers get the echoed metadata.
    pub(crate) struct EchoBody<B> {
        #[pin]
        inner: B,
        trailers: Option<HeaderMap>,
    }
}

impl<B> EchoBody<B> {
    fn new(inner: B, trailers: Option<HeaderMap>) -> Self {
        Self { inner, trailers }
    }
}

impl<B: Body> Body for EchoBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match (frame.into_trailers(), this.trailers.take()) {
                (Ok(mut trailers), Some(echoed)) => {
                    trailers.extend(echoed);
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                (Ok(trailers), None) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                (Err(frame), echoed) => {
                    *this.trailers = echoed;
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            Poll::Ready(None) => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
