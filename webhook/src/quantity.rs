//! Just enough of Kubernetes' resource quantity format to compare a per-pod
//! override with the bound the settings allow. The apiserver validates the
//! final value again; here a value we cannot read is refused rather than
//! guessed at, so an override can never slip past its bound.

use std::fmt;
use std::str::FromStr;

/// A resource quantity such as `250m`, `0.5`, `128Mi` or `1e3`, kept as written
/// (that is what goes into the pod) together with its value in base units.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource quantity (examples: 100m, 0.5, 64Mi, 1G)")]
pub struct QuantityError(pub String);

impl Quantity {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Value in base units (cores for CPU, bytes for memory).
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || QuantityError(text.to_owned());
        let number_len = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(number_len);
        let number = number.strip_prefix('+').unwrap_or(number);
        if number.is_empty()
            || number.starts_with('.') && number.len() == 1
            || number.matches('.').count() > 1
            || number.contains('+')
        {
            return Err(invalid());
        }
        let mantissa: f64 = number.parse().map_err(|_| invalid())?;
        let multiplier = match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024.0,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            exponent => {
                let digits = exponent
                    .strip_prefix('e')
                    .or_else(|| exponent.strip_prefix('E'))
                    .ok_or_else(invalid)?;
                let power: i32 = digits.parse().map_err(|_| invalid())?;
                if !(-18..=18).contains(&power) {
                    return Err(invalid());
                }
                10f64.powi(power)
            }
        };
        let value = mantissa * multiplier;
        if !value.is_finite() {
            return Err(invalid());
        }
        Ok(Quantity {
            text: text.to_owned(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> f64 {
        text.parse::<Quantity>()
            .map(|q| q.value())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_the_usual_forms() {
        assert_eq!(value("100m"), 0.1);
        assert_eq!(value("2"), 2.0);
        assert_eq!(value("0.5"), 0.5);
        assert_eq!(value("64Mi"), 64.0 * 1024.0 * 1024.0);
        assert_eq!(value("1G"), 1e9);
        assert_eq!(value("1e3"), 1000.0);
        assert_eq!(value("+1k"), 1000.0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "", "m", "-1", "1.2.3", "1x", "1mi", "1e", "1e99", ".", "1 Mi", "Mi1", "1++",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad:?} was accepted");
        }
    }
}
