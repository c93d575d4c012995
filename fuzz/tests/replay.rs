//! Replays every seed (`seeds/<target>/`) and every past finding
//! (`findings/<target>/`, a crash libFuzzer found, kept once fixed) through
//! its target: a regression panics here as it did under the fuzzer.

use std::path::Path;

#[test]
fn seeds_and_findings_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in grpc_balancer_fuzz::TARGETS {
        let mut replayed = 0;
        for dir in ["seeds", "findings"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a readable directory").path();
                let data = std::fs::read(&path).expect("a readable file");
                eprintln!("{name}: {}", path.display());
                target(&data);
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{name} has no seed in seeds/{name}/");
    }
}

/// The admission target's properties are about patches: its seeds must
/// reach one, or the fuzzer starts from nothing worth checking.
#[test]
fn an_admission_seed_is_patched() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(root.join("seeds/admission_review/annotated.json")).expect("the seed");
    let (_, answer) = grpc_balancer_fuzz::reviewer().review(&body);
    let response = answer.response.expect("a response");
    assert!(response.allowed && response.patch.is_some(), "{response:?}");
}

/// Every binary in fuzz/Cargo.toml is in `TARGETS`, so its seeds and
/// findings are replayed here.
#[test]
fn every_fuzz_binary_is_replayed() {
    let manifest = include_str!("../Cargo.toml");
    let binaries: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section.lines().find(|l| l.starts_with("name = "))?;
            line.strip_prefix("name = \"")?.strip_suffix('"')
        })
        .collect();
    let replayed: Vec<&str> = grpc_balancer_fuzz::TARGETS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert!(!binaries.is_empty(), "no [[bin]] found in fuzz/Cargo.toml");
    assert_eq!(binaries, replayed);
}

/// The seeds made by code are the checked-in files; `FUZZ_WRITE_SEEDS=1
/// cargo test -p grpc-balancer-fuzz` writes them after a change.
#[test]
fn generated_seeds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (target, seeds) in grpc_balancer_fuzz::GENERATED_SEEDS {
        let dir = root.join(target);
        let seeds = seeds();
        assert!(!seeds.is_empty(), "{target} makes no seed");
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("the seed directory");
        }
        for (name, bytes) in &seeds {
            let path = dir.join(name);
            if write {
                std::fs::write(&path, bytes).expect("a seed written");
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (FUZZ_WRITE_SEEDS=1 writes it)", path.display())
            });
            assert!(
                on_disk == *bytes,
                "{} is not what the code makes (FUZZ_WRITE_SEEDS=1 rewrites it)",
                path.display()
            );
        }
        let files = std::fs::read_dir(&dir).expect("the seed directory").count();
        assert_eq!(
            files,
            seeds.len(),
            "{}: a seed the code does not make",
            dir.display()
        );
    }
}
