//! Event-time values: UTC timestamps in microseconds and calendar dates, with
//! strict RFC 3339 parsing and allocation-free formatting.
//!
//! Timestamps are on the hot path of every event (decode, simulate), so the
//! common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` is parsed by hand;
//! anything else falls back to chrono, which stays the reference.

use std::fmt;

use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one hour.
pub const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// A UTC instant with microsecond precision, as Arrow's
/// `Timestamp(Microsecond, "UTC")` stores it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// The instants RFC 3339 can write, years 0000 to 9999, in microseconds
    /// since the Unix epoch: what the decoder accepts.
    pub const RFC3339_MICROS: std::ops::RangeInclusive<i64> = -62_167_219_200_000_000..=253_402_300_799_999_999;

    /// The instant `micros` microseconds after the Unix epoch, if RFC 3339
    /// can write it: for times read as numbers from outside (an importer
    /// must not write an event the decoder refuses).
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        Self::RFC3339_MICROS.contains(&micros).then_some(Self(micros))
    }

    /// [`Timestamp::from_unix_micros`] of Unix seconds.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        seconds.checked_mul(MICROS_PER_SECOND).and_then(Self::from_unix_micros)
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis * 1_000)
    }

    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (rounded towards negative infinity).
    pub const fn millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// The instant `micros` later (earlier when negative), saturating.
    pub const fn add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// Start of the UTC day this instant falls in.
    pub const fn floor_day(self) -> Self {
        Self(self.0 - self.0.rem_euclid(MICROS_PER_DAY))
    }

    /// Start of the window of `size_micros` this instant falls in (windows are
    /// aligned on the Unix epoch, so hourly windows start on the hour).
    pub const fn floor_to(self, size_micros: i64) -> Self {
        Self(self.0 - self.0.rem_euclid(size_micros))
    }

    /// The UTC calendar date of this instant.
    pub fn date(self) -> Date {
        Date(self.0.div_euclid(MICROS_PER_DAY) as i32)
    }

    /// Parses an RFC 3339 timestamp, which must carry an offset (`Z` or `±HH:MM`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        parse_fast(text.as_bytes()).or_else(|| {
            let parsed = DateTime::parse_from_rfc3339(text).ok()?;
            Some(Self(parsed.timestamp_micros()))
        })
    }

    /// Formats as RFC 3339 in UTC with the shortest exact fraction
    /// (none, milliseconds or microseconds), e.g. `2026-11-05T01:12:30Z`.
    pub fn write_rfc3339(self, out: &mut Rfc3339Buf) -> &str {
        let days = self.0.div_euclid(MICROS_PER_DAY);
        let in_day = self.0.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let seconds = in_day / MICROS_PER_SECOND;
        let fraction = in_day % MICROS_PER_SECOND;
        let buf = &mut out.0;
        let mut len = write_date(buf, year, month, day);
        buf[len] = b'T';
        write_2(&mut buf[len + 1..], (seconds / 3600) as u32);
        buf[len + 3] = b':';
        write_2(&mut buf[len + 4..], (seconds / 60 % 60) as u32);
        buf[len + 6] = b':';
        write_2(&mut buf[len + 7..], (seconds % 60) as u32);
        len += 9;
        if fraction != 0 {
            buf[len] = b'.';
            len += 1;
            let (digits, value) = if fraction % 1_000 == 0 { (3, fraction / 1_000) } else { (6, fraction) };
            let mut rest = value;
            for position in (0..digits).rev() {
                buf[len + position] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            len += digits;
        }
        buf[len] = b'Z';
        len += 1;
        // Only ASCII digits and separators were written above.
        std::str::from_utf8(&buf[..len]).unwrap_or_default()
    }
}

/// Scratch space for [`Timestamp::write_rfc3339`]; big enough for any year
/// that an `i64` of microseconds can hold.
pub struct Rfc3339Buf([u8; 40]);

impl Default for Rfc3339Buf {
    fn default() -> Self {
        Self([0; 40])
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_rfc3339(&mut Rfc3339Buf::default()))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// RFC 3339 text in human-readable formats (JSON), microseconds in binary ones
/// (state snapshots).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.write_rfc3339(&mut Rfc3339Buf::default()))
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Timestamp::parse_rfc3339(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {text:?}")))
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

/// A calendar date (days since 1970-01-01), as the CISA KEV catalog writes them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

impl Date {
    /// Parses `YYYY-MM-DD` exactly (zero-padded, a real calendar day).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let year = digits(&bytes[0..4])? as i32;
        let month = digits(&bytes[5..7])?;
        let day = digits(&bytes[8..10])?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Self(days_from_civil(year, month, day) as i32))
    }

    /// Midnight UTC at the start of this date.
    pub fn start(self) -> Timestamp {
        Timestamp(i64::from(self.0) * MICROS_PER_DAY)
    }

    /// The following calendar date.
    pub fn succ(self) -> Self {
        Self(self.0 + 1)
    }

    /// The date `days` later.
    pub fn add_days(self, days: i32) -> Self {
        Self(self.0 + days)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(i64::from(self.0));
        let mut buf = [0u8; 24];
        let len = write_date(&mut buf, year, month, day);
        f.write_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `YYYY-MM-DD` in human-readable formats, days since the epoch in binary ones.
impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() { serializer.collect_str(self) } else { serializer.serialize_i32(self.0) }
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Date::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a date YYYY-MM-DD: {text:?}")))
        } else {
            i32::deserialize(deserializer).map(Date)
        }
    }
}

impl From<Date> for NaiveDate {
    fn from(date: Date) -> Self {
        NaiveDate::from_num_days_from_ce_opt(date.0 + 719_163).unwrap_or_default()
    }
}

/// The strict common shape; `None` sends the caller to chrono.
fn parse_fast(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = i64::from(digits(&b[11..13])?);
    let minute = i64::from(digits(&b[14..16])?);
    let second = i64::from(digits(&b[17..19])?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        // Leap seconds and the rest are chrono's business.
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction = 0i64;
    if rest.first() == Some(&b'.') {
        let n_digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n_digits == 0 || n_digits > 9 {
            return None;
        }
        for (position, c) in rest[1..=n_digits].iter().enumerate() {
            if position < 6 {
                fraction = fraction * 10 + i64::from(c - b'0');
            }
        }
        for _ in n_digits..6 {
            fraction *= 10;
        }
        rest = &rest[1 + n_digits..];
    }
    let offset_seconds = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(digits(&[*h1, *h2])?);
            let minutes = i64::from(digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(Timestamp(seconds * MICROS_PER_SECOND + fraction))
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn write_2(buf: &mut [u8], value: u32) {
    buf[0] = b'0' + (value / 10) as u8;
    buf[1] = b'0' + (value % 10) as u8;
}

/// Writes `YYYY-MM-DD` (years outside 0..=9999 get a sign and more digits, as
/// no producer should send them but formatting must still be total).
fn write_date(buf: &mut [u8], year: i64, month: u32, day: u32) -> usize {
    let mut len = 0;
    if (0..=9999).contains(&year) {
        let y = year as u32;
        write_2(&mut buf[0..], y / 100);
        write_2(&mut buf[2..], y % 100);
        len = 4;
    } else {
        let text = format!("{year:+}");
        buf[..text.len()].copy_from_slice(text.as_bytes());
        len += text.len();
    }
    buf[len] = b'-';
    write_2(&mut buf[len + 1..], month);
    buf[len + 3] = b'-';
    write_2(&mut buf[len + 4..], day);
    len + 6
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(text: &str, expected: Option<&str>) {
        let parsed = Timestamp::parse_rfc3339(text).map(|ts| ts.to_string());
        assert_eq!(parsed.as_deref(), expected, "parsing {text:?}");
    }

    #[test]
    fn parses_and_normalises_to_utc() {
        check("2026-11-02T06:00:00Z", Some("2026-11-02T06:00:00Z"));
        check("2026-11-02T08:00:00+02:00", Some("2026-11-02T06:00:00Z"));
        check("2026-11-02T06:00:00.5Z", Some("2026-11-02T06:00:00.500Z"));
        check("2026-11-02T06:00:00.123456789Z", Some("2026-11-02T06:00:00.123456Z"));
        check("2024-02-29T23:59:59-00:30", Some("2024-03-01T00:29:59Z"));
        check("1969-12-31T23:59:59.999Z", Some("1969-12-31T23:59:59.999Z"));
        check("2026-11-02t06:00:00z", Some("2026-11-02T06:00:00Z"));
    }

    #[test]
    fn unix_times_are_taken_only_where_rfc3339_can_write_them() {
        for micros in [*Timestamp::RFC3339_MICROS.start(), 0, *Timestamp::RFC3339_MICROS.end()] {
            let time = Timestamp::from_unix_micros(micros).expect("in range");
            assert_eq!(Timestamp::parse_rfc3339(&time.to_string()), Some(time), "{time}");
        }
        assert_eq!(
            Timestamp::from_unix_micros(*Timestamp::RFC3339_MICROS.end()).map(|t| t.to_string()).as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(Timestamp::from_unix_seconds(253_402_300_800), None);
        assert_eq!(Timestamp::from_unix_seconds(-62_167_219_201), None);
        assert_eq!(Timestamp::from_unix_seconds(i64::MAX), None);
        assert_eq!(
            Timestamp::from_unix_seconds(1_418_530_010).map(|t| t.to_string()).as_deref(),
            Some("2014-12-14T04:06:50Z")
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339_with_offset() {
        check("2026-11-02T06:00:00", None);
        check("2026-11-02", None);
        check("2026-02-30T06:00:00Z", None);
        check("2026-11-02T24:00:00Z", None);
        check("yesterday", None);
        check("", None);
        check("2026-11-02T06:00:00.Z", None);
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(Date::parse("2026-11-23").map(|d| d.to_string()).as_deref(), Some("2026-11-23"));
        assert_eq!(
            Date::parse("2026-11-23").map(|d| d.succ().start().to_string()).as_deref(),
            Some("2026-11-24T00:00:00Z")
        );
        assert!(Date::parse("2026-1-23").is_none());
        assert!(Date::parse("2026-13-01").is_none());
        assert!(Date::parse("2025-02-29").is_none());
        assert!(Date::parse("2024-02-29").is_some());
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_chrono(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})") {
            let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|d| d.timestamp_micros());
            if let Some(fast) = parse_fast(text.as_bytes()) {
                prop_assert_eq!(Some(fast.0), chrono);
            }
            prop_assert_eq!(Timestamp::parse_rfc3339(&text).map(|t| t.0), chrono);
        }

        #[test]
        fn formatting_round_trips(micros in -5_000_000_000_000_000i64..5_000_000_000_000_000i64) {
            let ts = Timestamp(micros);
            prop_assert_eq!(Timestamp::parse_rfc3339(&ts.to_string()), Some(ts));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = Timestamp::parse_rfc3339(&text);
            let _ = Date::parse(&text);
        }
    }
}
