//! The grpc-balancer operator: reconciles `GrpcBalancing` resources.
