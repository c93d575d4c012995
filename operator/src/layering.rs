//! Keeps the operator's top-level modules in one order: a module may use only
//! modules declared before it in [`LAYERS`], so an import cycle (or a module
//! reaching up) fails this test instead of rotting unseen. Every source file
//! must also open with a `//!` comment saying its job.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules, lowest first: leaves (names, metrics, errors, the
/// back-off), kube-runtime helpers, the Lease, settings, decoding and the
/// pure rendering; then the shared context, the two loops that write
/// (controller and ConfigMap renderer), and what starts them.
const LAYERS: &[&str] = &[
    "telemetry",
    "names",
    "metrics",
    "error",
    "backoff",
    "kube_util",
    "leader",
    "settings",
    "decode",
    "render",
    "context",
    "controller",
    "config_map",
    "discovery",
    "http",
    "runtime",
    "with_webhook",
];

/// The top-level modules `source` names through `crate::` paths, comments
/// left out; grouped imports (`crate::{a, b::c}`) count every member.
fn crate_modules(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // `grpc_balancer_crate::` and the like are other paths.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let name = ident(member.trim_start());
                if !name.is_empty() && name != "self" {
                    found.insert(name.to_owned());
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The layer violations of one file of top-level module `module`.
fn violations(module: &str, source: &str) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let Some(own) = rank(module) else {
        return vec![format!("module {module} is not in LAYERS")];
    };
    crate_modules(source)
        .into_iter()
        .filter(|used| used != module)
        .filter_map(|used| match rank(&used) {
            Some(r) if r < own => None,
            Some(_) => Some(format!("{module} uses {used}, a later layer")),
            // Items re-exported at the crate root, like `crate::run`.
            None => Some(format!(
                "{module} uses crate::{used}, not a module in LAYERS"
            )),
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_earlier_layers_and_say_their_job() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src");
        let source = std::fs::read_to_string(path).expect("readable source");
        if !source.starts_with("//!") {
            problems.push(format!(
                "{} does not open with a //! comment",
                relative.display()
            ));
        }
        let first = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        // The crate root declares the modules, the binary is a client, and
        // this test names modules in its own strings.
        if matches!(module, "lib" | "main" | "layering") {
            continue;
        }
        problems.extend(violations(module, &source));
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
    assert!(files.len() > LAYERS.len(), "found {} files", files.len());
}

#[test]
fn a_module_reaching_up_is_caught() {
    let source = "//! x\nuse crate::names::FIELD_MANAGER;\nuse crate::{metrics, runtime::run};\n";
    assert_eq!(
        violations("controller", source),
        vec!["controller uses runtime, a later layer"]
    );
    assert!(violations("with_webhook", source).is_empty());
    // Comments and other crates' paths do not count.
    let quiet = "// crate::runtime\nuse grpc_balancer_crate::runtime;\nlet x = 1; // crate::http\n";
    assert!(
        crate_modules(quiet).is_empty(),
        "{:?}",
        crate_modules(quiet)
    );
}
