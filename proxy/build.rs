//! Builds `native/memcopy.c` (see its header for why) on x86_64. On the
//! static musl build its functions also take the names memcpy and memmove,
//! so they replace musl's in the link; elsewhere they only carry their own
//! names, for the unit tests.

fn main() {
    println!("cargo:rerun-if-changed=native/memcopy.c");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        return;
    }
    let mut build = cc::Build::new();
    build
        .file("native/memcopy.c")
        .opt_level(2)
        .flag("-ffreestanding")
        .flag("-fno-builtin")
        .flag_if_supported("-fno-tree-loop-distribute-patterns")
        .warnings(true);
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl") {
        build.define("GRPC_BALANCER_LIBC_NAMES", None);
    }
    build.compile("grpc_balancer_memcopy");
    println!("cargo:rustc-cfg=grpc_balancer_memcopy");
    println!("cargo:rustc-check-cfg=cfg(grpc_balancer_memcopy)");
}
