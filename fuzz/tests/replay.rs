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
