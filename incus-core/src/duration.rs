//! Snapshot lifetimes, in the syntax of Incus's `snapshots.expiry` (`internal/instance`
//! `GetExpiry`): terms `<integer><unit>` separated by single spaces, e.g. `30M 2H 1d 2w 1m 1y`.
//!
//! Units: `S` seconds, `M` minutes, `H` hours, `d` days, `w` weeks, `m` months, `y` years.
//! Like Incus, the expression is trimmed, terms may come in any order, and a unit may not be
//! given twice (Incus only notices a repeat once the earlier value is non-zero, so `0d 1d` is
//! accepted and means `1d`). Years, months and days are calendar units added like Go's
//! `AddDate` (so 31 January plus one month is 3 March, not 28 February), then hours, minutes
//! and seconds as a fixed duration, as Incus does.
//!
//! Unlike Incus, the empty expression is an error here (Incus reads it as "never expires"),
//! and so are amounts Incus would let Go overflow silently: more than 292 years of
//! hours/minutes/seconds together, or more than 10000 years of calendar units.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeDelta, Utc};

const SYNTAX: &str = "write terms like 30M 2H 1d 2w 1m 1y separated by single spaces (S seconds, M minutes, H hours, d days, w weeks, m months, y years)";

/// Calendar amounts above this many years are refused.
const MAX_YEARS: i64 = 10_000;

/// Why an expiry expression was refused. Every message is one line showing the syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The expression is empty or only white space.
    #[error("the expiry is empty; {SYNTAX}")]
    Empty,
    /// Two spaces in a row, or white space other than a single space between terms.
    #[error("expiry {input:?}: terms must be separated by single spaces; {SYNTAX}")]
    Separator {
        /// The expression as given.
        input: String,
    },
    /// A term that does not start with a number, e.g. `d` or `-1d`.
    #[error("expiry {input:?}: {term:?} does not start with a number; {SYNTAX}")]
    MissingNumber {
        /// The expression as given.
        input: String,
        /// The offending term.
        term: String,
    },
    /// A number without a unit, e.g. `30`.
    #[error("expiry {input:?}: {term:?} has no unit; {SYNTAX}")]
    MissingUnit {
        /// The expression as given.
        input: String,
        /// The offending term.
        term: String,
    },
    /// A unit other than `S M H d w m y`, e.g. `1h` or `2days`.
    #[error("expiry {input:?}: unknown unit {unit:?} in {term:?}; {SYNTAX}")]
    UnknownUnit {
        /// The expression as given.
        input: String,
        /// The offending term.
        term: String,
        /// The unit as given.
        unit: String,
    },
    /// The same unit twice, e.g. `1d 2d`.
    #[error(
        "expiry {input:?}: the unit {unit:?} is given more than once; add the amounts up instead"
    )]
    Duplicate {
        /// The expression as given.
        input: String,
        /// The repeated unit.
        unit: char,
    },
    /// An amount too large to compute with, e.g. `99999999999y`.
    #[error(
        "expiry {input:?}: {term:?} is too large (at most {MAX_YEARS} years of y/m/w/d and 292 years of H/M/S); {SYNTAX}"
    )]
    Overflow {
        /// The expression as given.
        input: String,
        /// The term that made the total too large.
        term: String,
    },
}

/// The units, in the order [`ExpiryDuration`]'s `Display` writes them.
const UNITS: [char; 7] = ['y', 'm', 'w', 'd', 'H', 'M', 'S'];

/// A parsed `snapshots.expiry` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpiryDuration {
    /// Amounts indexed like [`UNITS`]; `None` for units not given.
    amounts: [Option<i64>; 7],
}

impl ExpiryDuration {
    /// Parses an expiry expression such as `1d 12H`. See the module documentation.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let expr = s.trim();
        if expr.is_empty() {
            return Err(DurationError::Empty);
        }
        let input = || s.to_owned();
        let mut amounts = [None; 7];
        for term in expr.split(' ') {
            if term.is_empty() || term.contains(char::is_whitespace) {
                return Err(DurationError::Separator { input: input() });
            }
            let digits = term.bytes().take_while(u8::is_ascii_digit).count();
            let (number, unit) = term.split_at(digits);
            if number.is_empty() {
                return Err(DurationError::MissingNumber {
                    input: input(),
                    term: term.to_owned(),
                });
            }
            let index = match unit.chars().next() {
                None => {
                    return Err(DurationError::MissingUnit {
                        input: input(),
                        term: term.to_owned(),
                    });
                }
                Some(c) if unit.len() == 1 => UNITS.iter().position(|&u| u == c),
                Some(_) => None,
            };
            let Some(index) = index else {
                return Err(DurationError::UnknownUnit {
                    input: input(),
                    term: term.to_owned(),
                    unit: unit.to_owned(),
                });
            };
            if amounts[index].is_some_and(|a| a > 0) {
                return Err(DurationError::Duplicate {
                    input: input(),
                    unit: UNITS[index],
                });
            }
            let overflow = || DurationError::Overflow {
                input: input(),
                term: term.to_owned(),
            };
            amounts[index] = Some(number.parse::<i64>().map_err(|_| overflow())?);
            let parsed = Self { amounts };
            if parsed.calendar().is_none() || parsed.clock_nanos().is_none() {
                return Err(overflow());
            }
        }
        Ok(Self { amounts })
    }

    fn amount(&self, unit: char) -> i64 {
        UNITS
            .iter()
            .position(|&u| u == unit)
            .and_then(|i| self.amounts[i])
            .unwrap_or(0)
    }

    /// Years, months and days (weeks folded in), if within [`MAX_YEARS`].
    fn calendar(&self) -> Option<(i64, i64, i64)> {
        let years = self.amount('y');
        let months = self.amount('m');
        let days = self
            .amount('w')
            .checked_mul(7)?
            .checked_add(self.amount('d'))?;
        let total_months = years.checked_mul(12)?.checked_add(months)?;
        (total_months <= MAX_YEARS * 12 && days <= MAX_YEARS * 366).then_some((years, months, days))
    }

    /// Hours, minutes and seconds as nanoseconds, if they fit Go's `time.Duration` (`int64`).
    fn clock_nanos(&self) -> Option<i64> {
        self.amount('H')
            .checked_mul(3_600_000_000_000)?
            .checked_add(self.amount('M').checked_mul(60_000_000_000)?)?
            .checked_add(self.amount('S').checked_mul(1_000_000_000)?)
    }

    /// Whether every amount is zero (e.g. `0d`).
    pub fn is_zero(&self) -> bool {
        self.amounts.iter().all(|a| a.unwrap_or(0) == 0)
    }

    /// `t` plus this duration, as Incus computes an expiry date: Go's
    /// `t.AddDate(y, m, d + 7w).Add(H, M, S)`. `None` if the result is out of range.
    pub fn add_to(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (years, months, days) = self.calendar()?;
        let dated = add_date(t, years, months, days)?;
        dated.checked_add_signed(TimeDelta::nanoseconds(self.clock_nanos()?))
    }

    /// `t` minus this duration: every amount negated, in the same order as
    /// [`add_to`](Self::add_to) (`t.AddDate(-y, -m, -d - 7w).Add(-H, -M, -S)`). `None` if the
    /// result is out of range.
    pub fn subtract_from(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (years, months, days) = self.calendar()?;
        let dated = add_date(t, -years, -months, -days)?;
        dated.checked_sub_signed(TimeDelta::nanoseconds(self.clock_nanos()?))
    }
}

/// Go's `Time.AddDate` in UTC: the month is normalised into the year, then the day of the month
/// plus `days` overflows into following months (31 January + 1 month = 3 March, or 2 March in
/// a leap year); the time of day is kept.
fn add_date(t: DateTime<Utc>, years: i64, months: i64, days: i64) -> Option<DateTime<Utc>> {
    let month0 = i64::from(t.month0()).checked_add(months)?;
    let year = i64::from(t.year())
        .checked_add(years)?
        .checked_add(month0.div_euclid(12))?;
    let first = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month0.rem_euclid(12) + 1).ok()?,
        1,
    )?;
    let offset = days.checked_add(i64::from(t.day()) - 1)?;
    let date = if offset >= 0 {
        first.checked_add_days(Days::new(offset.unsigned_abs()))?
    } else {
        first.checked_sub_days(Days::new(offset.unsigned_abs()))?
    };
    Some(date.and_time(t.time()).and_utc())
}

impl fmt::Display for ExpiryDuration {
    /// The normalised expression: the given units from years down to seconds, e.g. `1m 2d 3H`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (unit, amount) in UNITS.iter().zip(self.amounts) {
            if let Some(amount) = amount {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{amount}{unit}")?;
                first = false;
            }
        }
        Ok(())
    }
}

impl FromStr for ExpiryDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an error is the expected one.
    type Check = fn(&DurationError) -> bool;
    use chrono::{TimeZone, Timelike};
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    fn parse(s: &str) -> ExpiryDuration {
        ExpiryDuration::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn normalised_display() {
        let cases = [
            ("1d", "1d"),
            ("30M 2H 1d 2w 1m 1y", "1y 1m 2w 1d 2H 30M"),
            ("  7d  ", "7d"),
            ("10S", "10S"),
            ("0d", "0d"),
            ("0d 1d", "1d"),
            ("0d 0d", "0d"),
            ("007H", "7H"),
            ("3m 1y", "1y 3m"),
        ];
        for (input, want) in cases {
            let d = parse(input);
            assert_eq!(d.to_string(), want, "{input:?}");
            assert_eq!(parse(want), d, "{input:?} round trip");
            assert_eq!(input.parse::<ExpiryDuration>().unwrap(), d);
        }
    }

    #[test]
    fn add_like_go() {
        let t = utc(2026, 1, 31, 10, 0, 0);
        let cases = [
            ("1d", utc(2026, 2, 1, 10, 0, 0)),
            ("1m", utc(2026, 3, 3, 10, 0, 0)),
            ("1y 1m", utc(2027, 3, 3, 10, 0, 0)),
            ("1m 1y", utc(2027, 3, 3, 10, 0, 0)),
            ("13m", utc(2027, 3, 3, 10, 0, 0)),
            ("2w", utc(2026, 2, 14, 10, 0, 0)),
            ("1w 1d", utc(2026, 2, 8, 10, 0, 0)),
            ("14H", utc(2026, 2, 1, 0, 0, 0)),
            ("90M", utc(2026, 1, 31, 11, 30, 0)),
            ("3600S", utc(2026, 1, 31, 11, 0, 0)),
            ("30M 2H 1d 2w 1m 1y", utc(2027, 3, 18, 12, 30, 0)),
            ("0d", t),
            ("1y", utc(2027, 1, 31, 10, 0, 0)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).add_to(t), Some(want), "{input:?}");
        }
        // 29 February plus a year is 1 March, as in Go.
        assert_eq!(
            parse("1y").add_to(utc(2024, 2, 29, 0, 0, 0)),
            Some(utc(2025, 3, 1, 0, 0, 0))
        );
        assert_eq!(
            parse("1m").add_to(utc(2024, 1, 31, 0, 0, 0)),
            Some(utc(2024, 3, 2, 0, 0, 0))
        );
        // The date part first, then the clock part: 23:00 on 31 January + 1m 2H.
        assert_eq!(
            parse("1m 2H").add_to(utc(2026, 1, 31, 23, 0, 0)),
            Some(utc(2026, 3, 4, 1, 0, 0))
        );
        // Sub-second precision is kept.
        let precise = utc(2026, 1, 1, 0, 0, 0).with_nanosecond(5).unwrap();
        assert_eq!(
            parse("1S").add_to(precise),
            Some(utc(2026, 1, 1, 0, 0, 1).with_nanosecond(5).unwrap())
        );
    }

    #[test]
    fn subtract() {
        let t = utc(2026, 3, 31, 10, 0, 0);
        let cases = [
            ("1d", utc(2026, 3, 30, 10, 0, 0)),
            ("1m", utc(2026, 3, 3, 10, 0, 0)),
            ("1y", utc(2025, 3, 31, 10, 0, 0)),
            ("13m", utc(2025, 3, 3, 10, 0, 0)),
            ("2w", utc(2026, 3, 17, 10, 0, 0)),
            ("11H", utc(2026, 3, 30, 23, 0, 0)),
            ("0d", t),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).subtract_from(t), Some(want), "{input:?}");
        }
    }

    #[test]
    fn zero() {
        assert!(parse("0d").is_zero());
        assert!(parse("0M 0y").is_zero());
        assert!(!parse("1S").is_zero());
        assert!(!parse("0d 1H").is_zero());
    }

    #[test]
    fn errors() {
        use DurationError as E;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::Empty)),
            ("   ", |e| matches!(e, E::Empty)),
            ("1d  2H", |e| matches!(e, E::Separator { .. })),
            ("1d\t2H", |e| matches!(e, E::Separator { .. })),
            ("1d,2H", |e| matches!(e, E::UnknownUnit { .. })),
            ("d", |e| matches!(e, E::MissingNumber { .. })),
            ("-1d", |e| matches!(e, E::MissingNumber { .. })),
            ("+1d", |e| matches!(e, E::MissingNumber { .. })),
            ("1.5d", |e| matches!(e, E::UnknownUnit { .. })),
            ("30", |e| matches!(e, E::MissingUnit { .. })),
            (
                "1h",
                |e| matches!(e, E::UnknownUnit { unit, .. } if unit == "h"),
            ),
            ("1D", |e| matches!(e, E::UnknownUnit { .. })),
            ("1s", |e| matches!(e, E::UnknownUnit { .. })),
            (
                "2days",
                |e| matches!(e, E::UnknownUnit { unit, .. } if unit == "days"),
            ),
            ("1dd", |e| matches!(e, E::UnknownUnit { .. })),
            ("1é", |e| matches!(e, E::UnknownUnit { .. })),
            ("١d", |e| matches!(e, E::MissingNumber { .. })),
            ("1d 2d", |e| matches!(e, E::Duplicate { unit: 'd', .. })),
            ("1d 0d", |e| matches!(e, E::Duplicate { unit: 'd', .. })),
            ("99999999999y", |e| matches!(e, E::Overflow { .. })),
            ("99999999999999999999999d", |e| {
                matches!(e, E::Overflow { .. })
            }),
            ("10001y", |e| matches!(e, E::Overflow { .. })),
            ("9999y 13m", |e| matches!(e, E::Overflow { .. })),
            ("2562048H", |e| matches!(e, E::Overflow { .. })),
            ("2562047H 60M", |e| matches!(e, E::Overflow { .. })),
            ("9223372036854775807S", |e| matches!(e, E::Overflow { .. })),
            ("1000000w", |e| matches!(e, E::Overflow { .. })),
        ];
        for (input, check) in cases {
            match ExpiryDuration::parse(input) {
                Ok(d) => panic!("{input:?} accepted as {d}"),
                Err(e) => {
                    assert!(check(&e), "{input:?}: unexpected {e:?}");
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "{msg:?}");
                    if !matches!(e, E::Duplicate { .. }) {
                        assert!(msg.contains("30M 2H 1d 2w 1m 1y"), "{msg:?}");
                    }
                }
            }
        }
        assert_eq!(
            ExpiryDuration::parse("1h").unwrap_err().to_string(),
            "expiry \"1h\": unknown unit \"h\" in \"1h\"; write terms like 30M 2H 1d 2w 1m 1y separated by single spaces (S seconds, M minutes, H hours, d days, w weeks, m months, y years)"
        );
    }

    #[test]
    fn limits() {
        assert!(ExpiryDuration::parse("10000y").is_ok());
        assert!(ExpiryDuration::parse("2562047H").is_ok());
        assert!(ExpiryDuration::parse("9999y 12m").is_ok());
        let far = parse("10000y");
        assert_eq!(
            far.add_to(utc(2026, 1, 1, 0, 0, 0)),
            Some(utc(12026, 1, 1, 0, 0, 0))
        );
        assert!(far.add_to(DateTime::<Utc>::MAX_UTC).is_none());
        assert!(far.subtract_from(DateTime::<Utc>::MIN_UTC).is_none());
    }

    proptest! {
        #[test]
        fn display_round_trips(
            amounts in prop::collection::vec(prop::option::of(0i64..500), 7),
        ) {
            let terms: Vec<String> = UNITS
                .iter()
                .zip(&amounts)
                .filter_map(|(u, a)| a.map(|a| format!("{a}{u}")))
                .collect();
            prop_assume!(!terms.is_empty());
            let d = ExpiryDuration::parse(&terms.join(" ")).unwrap();
            prop_assert_eq!(ExpiryDuration::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn never_panics(s in "[0-9SMHdwmy ]{0,30}|\\PC{0,20}", secs in -100_000_000_000i64..100_000_000_000) {
            if let Ok(d) = ExpiryDuration::parse(&s) {
                let t = DateTime::from_timestamp(secs, 0).unwrap();
                let _ = d.add_to(t);
                let _ = d.subtract_from(t);
            }
        }

        #[test]
        fn add_is_monotonic(
            y in 0i64..50, m in 0i64..50, w in 0i64..50, d in 0i64..50, h in 0i64..50,
            secs in 0i64..4_000_000_000,
        ) {
            let e = ExpiryDuration::parse(&format!("{y}y {m}m {w}w {d}d {h}H")).unwrap();
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            prop_assert!(e.add_to(t).unwrap() >= t);
            prop_assert!(e.subtract_from(t).unwrap() <= t);
        }
    }
}
