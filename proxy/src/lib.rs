//! grpc-balancer-proxy: per-request gRPC load balancing over h2c.
