//! Generates the greeter stubs with the protoc shipped by `protoc-bin-vendored`,
//! so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/greeter.proto"],
        &["proto"],
    )?;
    Ok(())
}
