//! `metav1.Time`: whole seconds since the Unix epoch.
//!
//! JSON form: RFC 3339 in UTC without fraction (`2006-01-02T15:04:05Z`), or
//! `null` for Go's zero time. Protobuf form: `{1: seconds, 2: nanos}` with
//! nanos always 0; the zero time is an empty message.

use super::wire::{Reader, Writer, WIRE_VARINT};
use super::CodecError;

/// Unix seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const GO_ZERO_UNIX: i64 = -62_135_596_800;
/// Unix seconds of 10000-01-01T00:00:00Z; JSON cannot show years past 9999.
const YEAR_10000_UNIX: i64 = 253_402_300_800;

/// A `metav1.Time` with its sub-second part dropped, as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    pub(crate) unix_seconds: i64,
}

impl Time {
    pub(crate) const ZERO: Time = Time {
        unix_seconds: GO_ZERO_UNIX,
    };

    pub(crate) fn is_zero(self) -> bool {
        self.unix_seconds == GO_ZERO_UNIX
    }

    /// Decodes a `Time` message (an empty one is the zero time).
    pub(crate) fn decode(mut reader: Reader<'_>) -> Result<Time, CodecError> {
        let mut seconds = 0i64;
        let mut any_field = false;
        while let Some(header) = reader.next_field()? {
            any_field = true;
            match header.number {
                1 => seconds = reader.read_int64(header)?,
                // nanos: read for validity, then dropped as metav1.Time does.
                2 => {
                    reader.expect(header, WIRE_VARINT)?;
                    reader.read_varint()?;
                }
                _ => reader.skip(header)?,
            }
        }
        if any_field {
            Ok(Time {
                unix_seconds: seconds,
            })
        } else {
            Ok(Time::ZERO)
        }
    }

    /// Writes the message body (nothing for the zero time).
    pub(crate) fn encode(self, writer: &mut Writer) {
        if self.is_zero() {
            return;
        }
        writer.int64_field(1, self.unix_seconds);
        writer.int64_field(2, 0);
    }

    /// JSON form; `path` names the field for errors.
    pub(crate) fn to_json(self, path: &str) -> Result<serde_json::Value, CodecError> {
        if self.is_zero() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::Value::String(format_checked(
            self.unix_seconds,
            path,
        )?))
    }

    /// Parses the JSON form: `null` or an RFC 3339 timestamp (fraction and
    /// offset accepted, as Go's `time.Parse(time.RFC3339, ..)` does).
    pub(crate) fn from_json(value: &serde_json::Value, path: &str) -> Result<Time, CodecError> {
        match value {
            serde_json::Value::Null => Ok(Time::ZERO),
            serde_json::Value::String(text) => parse_rfc3339(text)
                .map(|unix_seconds| Time { unix_seconds })
                .ok_or_else(|| CodecError::InvalidTime {
                    path: path.to_owned(),
                }),
            other => Err(CodecError::invalid_field(path, "RFC 3339 string", other)),
        }
    }
}

/// Formats Unix seconds as `2006-01-02T15:04:05Z` (UTC, whole seconds).
pub fn format_rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Proleptic Gregorian date for days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn format_checked(unix_seconds: i64, path: &str) -> Result<String, CodecError> {
    // Go's Time.MarshalJSON refuses years outside [0, 9999]; so do we.
    let year_zero_unix = days_from_civil(0, 1, 1) * 86_400;
    if !(year_zero_unix..YEAR_10000_UNIX).contains(&unix_seconds) {
        return Err(CodecError::TimeOutOfRange {
            path: path.to_owned(),
            unix_seconds,
        });
    }
    Ok(format_rfc3339(unix_seconds))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix seconds
/// (fraction dropped, i.e. rounded toward the past as Go's `Unix()` does).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0i64, |acc, &digit| Some(acc * 10 + i64::from(digit - b'0')))
    };
    let separator = |index: usize, expected: &[u8]| -> Option<()> {
        expected.contains(bytes.get(index)?).then_some(())
    };
    let year = digits(0..4)?;
    separator(4, b"-")?;
    let month = digits(5..7)?;
    separator(7, b"-")?;
    let day = digits(8..10)?;
    // Go accepts only 'T' here in RFC3339 layouts (lower-case 't' too since 1.20).
    separator(10, b"Tt")?;
    let hour = digits(11..13)?;
    separator(13, b":")?;
    let minute = digits(14..16)?;
    separator(16, b":")?;
    let second = digits(17..19)?;
    let mut index = 19;
    if bytes.get(index) == Some(&b'.') {
        index += 1;
        let fraction_start = index;
        while bytes.get(index).is_some_and(u8::is_ascii_digit) {
            index += 1;
        }
        if index == fraction_start {
            return None;
        }
    }
    let offset_seconds = match bytes.get(index)? {
        b'Z' | b'z' if index + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if index + 6 == bytes.len() => {
            let offset_hours = digits(index + 1..index + 3)?;
            separator(index + 3, b":")?;
            let offset_minutes = digits(index + 4..index + 6)?;
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let magnitude = offset_hours * 3600 + offset_minutes * 60;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(local - offset_seconds)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        for (text, seconds) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2008-01-01T01:01:01Z", 1_199_149_261),
            ("2004-01-01T01:01:01Z", 1_072_918_861),
            ("0001-01-01T00:00:00Z", GO_ZERO_UNIX),
            ("9999-12-31T23:59:59Z", YEAR_10000_UNIX - 1),
            ("1969-12-31T23:59:59Z", -1),
            ("2000-02-29T12:00:00Z", 951_825_600),
        ] {
            assert_eq!(parse_rfc3339(text), Some(seconds), "{text}");
            assert_eq!(format_checked(seconds, "t").unwrap(), text);
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T02:00:00.999+02:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
        for bad in [
            "",
            "1970-01-01",
            "1970-01-01T00:00:00",
            "1970-13-01T00:00:00Z",
            "1970-02-30T00:00:00Z",
            "1970-01-01T24:00:00Z",
            "1970-01-01T00:00:00.Z",
            "1970-01-01T00:00:00Zx",
            "１970-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejects_years_json_cannot_show() {
        assert!(format_checked(YEAR_10000_UNIX, "t").is_err());
        assert!(format_checked(i64::MIN, "t").is_err());
        assert!(format_checked(i64::MAX, "t").is_err());
    }
}
