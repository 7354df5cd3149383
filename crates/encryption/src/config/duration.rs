//! Go `time.ParseDuration`, for the `kms.timeout` field (`"3s"`, `"1m30s"`, `"250ms"`).

use std::time::Duration;

/// A parsed Go duration. Negative durations are representable because the configuration
/// validator must be able to say "timeout should be a positive value" about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub magnitude: Duration,
}

impl GoDuration {
    pub fn is_positive(&self) -> bool {
        !self.negative && !self.magnitude.is_zero()
    }
}

/// Parses `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or a bare `0`, with Go's units.
pub fn parse_go_duration(text: &str) -> Result<GoDuration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(GoDuration {
            negative,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(invalid());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(invalid)?;
        // Fractional part, truncated to nanoseconds as Go does.
        let mut scale = unit_nanos;
        for digit in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(value).ok_or_else(invalid)?;
        rest = after;
    }
    // Go durations are int64 nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(invalid());
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(GoDuration {
        negative,
        magnitude: Duration::new(secs, nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        let d = parse_go_duration(s).unwrap();
        assert!(!d.negative);
        d.magnitude
    }

    #[test]
    fn go_durations() {
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert!(parse_go_duration("-5s").unwrap().negative);
        assert!(!parse_go_duration("-5s").unwrap().is_positive());
        for bad in ["", "5", "s", "5x", "1..2s", ".s", "-", "99999999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }
}
