//! A greeter gRPC service that says which backend answered.
