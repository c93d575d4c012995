//! Terminal output: headings, steps, and per-phase tables with a bar chart of
//! calls per backend.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;

use crate::summary::Phase;

/// Width of a full bar, in cells.
const BAR_WIDTH: usize = 40;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn new(no_color: bool) -> Style {
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    fn version_color(&self, version: &str, text: &str) -> String {
        match version {
            "v1" => self.paint("36", text),
            "v2" => self.paint("35", text),
            _ => text.to_owned(),
        }
    }

    /// A numbered part of the demo.
    pub fn heading(&self, number: usize, title: &str) {
        println!("\n{}", self.bold(&format!("━━ {number}. {title}")));
    }

    /// One thing done, with a detail.
    pub fn step(&self, text: &str) {
        println!("  {} {text}", self.green("✔"));
    }

    pub fn note(&self, text: &str) {
        for line in text.lines() {
            println!("    {}", self.dim(line));
        }
    }
}

/// Prints a phase: one row per backend with calls, share and a bar, then the
/// split by version and the failures.
pub fn print_phase(style: &Style, phase: &Phase, versions: &BTreeMap<String, String>) {
    let total: u64 = phase.by_backend.values().sum();
    let max = phase.by_backend.values().copied().max().unwrap_or(0);
    println!(
        "    {:<16} {:<8} {:>7} {:>7}",
        style.dim("backend"),
        style.dim("version"),
        style.dim("calls"),
        style.dim("share")
    );
    // Every known backend gets a row, including those that got no call: the
    // empty rows are the point of the L4 phase.
    let mut rows: BTreeMap<&str, u64> = versions.keys().map(|b| (b.as_str(), 0)).collect();
    for (backend, calls) in &phase.by_backend {
        rows.insert(backend.as_str(), *calls);
    }
    for (backend, calls) in rows {
        let version = versions.get(backend).map(String::as_str).unwrap_or("?");
        let share = percent(calls, total);
        let cells = if max == 0 {
            0
        } else {
            ((calls as f64 / max as f64) * BAR_WIDTH as f64).round() as usize
        };
        let bar = format!(
            "{}{}",
            "█".repeat(cells),
            if calls > 0 && cells == 0 { "▏" } else { "" }
        );
        println!(
            "    {:<16} {:<8} {:>7} {:>6.1}%  {}",
            backend,
            version,
            calls,
            share,
            style.version_color(version, &bar)
        );
    }
    let by_version: Vec<String> = phase
        .by_version
        .iter()
        .map(|(v, c)| format!("{v} {:.1}%", percent(*c, total)))
        .collect();
    let failed = if phase.failed == 0 {
        style.green("0 failed")
    } else {
        style.red(&format!("{} failed {:?}", phase.failed, phase.failures))
    };
    println!(
        "    {} calls in {:.1} s · {} · {}",
        phase.calls,
        phase.elapsed_ms as f64 / 1000.0,
        by_version.join(" · "),
        failed
    );
}

pub fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percent_of_nothing_is_zero() {
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
    }
}
