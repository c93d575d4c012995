//! The grpc-balancer operator: reconciles `GrpcBalancing` resources into
//! headless Services, the namespace's proxy config and status.

pub mod names;
pub mod render;
