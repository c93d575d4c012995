//! The checked-in code matches what tonic-prost-build makes of the proto.
//! `UPDATE_GENERATED=1 cargo test -p grpc-balancer-discovery-api` rewrites it.

use std::path::Path;

#[test]
fn generated_code_matches_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("temp dir");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .out_dir(out.path())
        .compile_with_config(
            config,
            &[root.join("proto/discovery.proto")],
            &[root.join("proto")],
        )
        .expect("protoc and tonic-prost-build");
    let fresh = std::fs::read_to_string(out.path().join("grpcbalancer.discovery.v1.rs"))
        .expect("generated file");
    let checked_in_path = root.join("src/generated.rs");
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write src/generated.rs");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "src/generated.rs is not what proto/discovery.proto generates; run \
         UPDATE_GENERATED=1 cargo test -p grpc-balancer-discovery-api --test generated"
    );
}
