//! The memcpy and memmove that replace musl's in the static build
//! (`native/memcopy.c`): its C checks (`native/memcopy_test.c`) are built
//! with the host's C compiler (with -ffreestanding -fno-builtin, as
//! `build.rs` builds it, so the compiler cannot call memcpy for it) and run.

use std::path::Path;
use std::process::Command;

#[test]
fn the_static_builds_memcpy_and_memmove_copy_right() {
    if std::env::consts::ARCH != "x86_64" {
        // The file is x86_64 code and only built there (build.rs).
        return;
    }
    let native = Path::new(env!("CARGO_MANIFEST_DIR")).join("native");
    let out = tempfile::tempdir().expect("temp dir");
    let program = out.path().join("memcopy_test");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(&compiler)
        .args([
            "-O2",
            "-ffreestanding",
            "-fno-builtin",
            "-Wall",
            "-Werror",
            "-o",
        ])
        .arg(&program)
        .arg(native.join("memcopy_test.c"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}` (install gcc): {e}"));
    assert!(
        built.status.success(),
        "memcopy_test.c did not build:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&program).output().expect("run memcopy_test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let copies: u64 = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(copies > 10_000, "too few copies checked: {stdout}");
}
