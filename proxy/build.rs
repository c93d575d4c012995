//! Builds `native/memcopy.c` (see its header for why) into the static musl
//! build on x86_64, where its functions take the names memcpy and memmove
//! and so replace musl's in the link. Other builds keep their C library's.
//! Its checks (`native/memcopy_test.c`, run by `tests/it/memcopy.rs`)
//! compile the file themselves.

fn main() {
    println!("cargo:rerun-if-changed=native/memcopy.c");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if arch != "x86_64" || env != "musl" {
        return;
    }
    cc::Build::new()
        .file("native/memcopy.c")
        .opt_level(2)
        .flag("-ffreestanding")
        .flag("-fno-builtin")
        .flag_if_supported("-fno-tree-loop-distribute-patterns")
        .define("GRPC_BALANCER_LIBC_NAMES", None)
        .warnings(true)
        .compile("grpc_balancer_memcopy");
}
