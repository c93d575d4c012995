//! `grpc-timeout` parsing and rendering (gRPC over HTTP/2: up to 8 digits
//! followed by H, M, S, m, u or n).

use std::time::Duration;

use http::HeaderValue;

pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The finest unit that fits in 8 digits, rounded up so the peer never sees a
/// shorter deadline than ours.
pub fn render(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= MAX
            && let Ok(v) = HeaderValue::from_str(&format!("{n}{unit}"))
        {
            return v;
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        let p = |s: &str| parse(&HeaderValue::from_str(s).expect("ascii"));
        assert_eq!(p("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(p("3M"), Some(Duration::from_secs(180)));
        assert_eq!(p("1S"), Some(Duration::from_secs(1)));
        assert_eq!(p("250m"), Some(Duration::from_millis(250)));
        assert_eq!(p("7u"), Some(Duration::from_micros(7)));
        assert_eq!(p("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "1", "1x", "123456789S", "-1S", "1.5S", "ms"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn renders_within_eight_digits() {
        assert_eq!(render(Duration::from_millis(1500)), "1500000u");
        assert_eq!(render(Duration::from_secs(3600 * 24 * 365)), "31536000S");
        let back = parse(&render(Duration::from_millis(123))).expect("parses");
        assert_eq!(back, Duration::from_millis(123));
    }
}
