//! Durations written the way Kubernetes users write them: `250ms`, `5s`,
//! `1m30s`, `2h`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {why} (write e.g. 250ms, 5s, 1m30s)")]
pub struct DurationError {
    input: String,
    why: &'static str,
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |why| DurationError {
            input: input.to_owned(),
            why,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s == "0" {
            return Ok(Duration::default());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("a number needs a unit (ms, s, m, h)"))?;
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| err("the number is malformed"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit: f64 = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(err("unknown unit (use ms, s, m or h)")),
            };
            rest = &rest[unit_len..];
            let nanos = number * nanos_per_unit;
            // Bounded well below u64 nanoseconds so hostile input cannot overflow.
            if !nanos.is_finite() || nanos > 1e18 {
                return Err(err("it is too long"));
            }
            total = total
                .checked_add(std::time::Duration::from_nanos(nanos as u64))
                .ok_or_else(|| err("it is too long"))?;
        }
        Ok(Duration(total))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let nanos = d.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            let secs = d.as_secs();
            if secs.is_multiple_of(3600) {
                write!(f, "{}h", secs / 3600)
            } else if secs.is_multiple_of(60) {
                write!(f, "{}m", secs / 60)
            } else {
                write!(f, "{secs}s")
            }
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(
            Duration::parse("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(Duration::parse("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(Duration::parse("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            Duration::parse("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(Duration::parse("0").ok(), Some(Duration::default()));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "1..2s",
            "-1s",
            "1e400s",
            "99999999999999h",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["0s", "250ms", "5s", "90s", "2m", "3h", "15us"] {
            let d = Duration::parse(s).expect("valid");
            assert_eq!(Duration::parse(&d.to_string()).ok(), Some(d));
        }
    }
}
