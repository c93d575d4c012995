//! The push discovery API between the operator (server) and the proxies
//! (clients): `proto/discovery.proto` and its tonic/prost code. The code is
//! generated once and checked in (`src/generated.rs`), so building needs
//! no protoc; `tests/generated.rs` fails when it drifts from the proto and
//! rewrites it with `UPDATE_GENERATED=1`.

pub mod channel;
pub mod incoming;

/// Types and stubs of `grpcbalancer.discovery.v1`.
#[allow(clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod v1 {
    include!("generated.rs");
}

/// The audience of the projected ServiceAccount token a proxy presents: a
/// token for the apiserver (or anything else) is refused.
pub const TOKEN_AUDIENCE: &str = "grpcbalancer.io/discovery";

/// The metadata key carrying the token (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
