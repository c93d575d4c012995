//! Keeps a crate's top-level modules in one order: a module may use only
//! modules declared before it in the crate's list of layers, so an import
//! cycle (or a module reaching up) fails a test instead of rotting unseen.
//! Every source file must also open with a `//!` comment saying its job.
//!
//! A crate calls [`assert_layers`] from a unit test with its own list; the
//! proxy and the operator do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Panics with every problem [`check`] finds in the crate at
/// `manifest_dir` (its `src`), the crate root, a `main.rs` and the calling
/// `layering.rs` checked only for their opening comment.
pub fn assert_layers(manifest_dir: &str, layers: &[&str]) {
    let src = Path::new(manifest_dir).join("src");
    let problems = check(&src, layers, &["lib", "main", "layering"]);
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

/// Every problem of the crate whose sources are in `src`: files without an
/// opening `//!` comment, and uses of a later layer (or of a module not in
/// `layers`). Files of the modules in `unchecked` (the crate root, the
/// binary, the test that calls this) are only checked for their comment.
pub fn check(src: &Path, layers: &[&str], unchecked: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(src).unwrap_or(path);
        let source = match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(e) => {
                problems.push(format!("{}: {e}", relative.display()));
                continue;
            }
        };
        if !source.starts_with("//!") {
            problems.push(format!(
                "{} does not open with a //! comment",
                relative.display()
            ));
        }
        let first = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        if unchecked.contains(&module) {
            continue;
        }
        problems.extend(violations(layers, module, &source));
    }
    if files.len() <= layers.len() {
        problems.push(format!(
            "found {} files for {} layers in {}",
            files.len(),
            layers.len(),
            src.display()
        ));
    }
    problems
}

/// The top-level modules `source` names through `crate::` paths, comments
/// left out; grouped imports (`crate::{a, b::c}`) count every member.
pub fn crate_modules(source: &str) -> BTreeSet<String> {
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

/// The layer violations of one file of top-level module `module`, with
/// `layers` the crate's top-level modules, lowest first.
pub fn violations(layers: &[&str], module: &str, source: &str) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| *l == m);
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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: &[&str] = &["util", "metrics", "endpoint", "call", "app"];

    #[test]
    fn a_module_reaching_up_is_caught() {
        let source = "//! x\nuse crate::util::now;\nuse crate::{metrics, call::proxy};\n";
        assert_eq!(
            violations(LAYERS, "endpoint", source),
            vec!["endpoint uses call, a later layer"]
        );
        assert!(violations(LAYERS, "app", source).is_empty());
        assert_eq!(
            violations(LAYERS, "nowhere", source),
            vec!["module nowhere is not in LAYERS"]
        );
        // Items re-exported at the crate root are not modules.
        assert_eq!(
            violations(LAYERS, "app", "use crate::run;"),
            vec!["app uses crate::run, not a module in LAYERS"]
        );
    }

    #[test]
    fn comments_and_other_crates_paths_do_not_count() {
        let quiet = "// crate::app\nuse grpc_balancer_crate::app;\nlet x = 1; // crate::call\n";
        assert!(
            crate_modules(quiet).is_empty(),
            "{:?}",
            crate_modules(quiet)
        );
    }

    #[test]
    fn a_file_without_its_job_is_caught() {
        let dir = std::env::temp_dir().join(format!("layering-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("call")).expect("a temp dir");
        std::fs::write(dir.join("lib.rs"), "//! root\nmod call;\n").expect("written");
        std::fs::write(dir.join("call/mod.rs"), "use crate::app;\n").expect("written");
        let problems = check(&dir, &["call", "app"], &["lib"]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            problems,
            vec![
                "call/mod.rs does not open with a //! comment".to_owned(),
                "call uses app, a later layer".to_owned(),
                format!("found 2 files for 2 layers in {}", dir.display()),
            ]
        );
    }
}
