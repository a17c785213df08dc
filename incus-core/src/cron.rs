//! Validation of `snapshots.schedule` values as Incus 6.0 validates them
//! (`shared/validate` `IsCron`).
//!
//! A schedule is one trigger, or several separated by a comma *and a space* (`, `): a plain
//! comma belongs to cron lists. The whole value is lower-cased first, so names and aliases are
//! case-insensitive. A trigger is one of the aliases in [`SCHEDULE_ALIASES`] or a five-field
//! cron expression `<minute> <hour> <day-of-month> <month> <day-of-week>` whose fields are
//! separated by single spaces. Each field is a comma-separated list of `*`, `?`, `N`, `N-M`,
//! `*/S`, `N/S` (from N to the end) or `N-M/S`; months also accept `jan`..`dec` and days of the
//! week `sun`..`sat`, in numbers and ranges. Bounds: minute 0-59, hour 0-23, day of month
//! 1-31, month 1-12, day of week 0-6 (0 is Sunday; 7 is refused).
//!
//! Incus 6.0.4 parses with robfig/cron v3 and 6.0.5 onwards with gronx; this module accepts
//! only what both accept, so a schedule that passes here is accepted by every 6.0 release.
//! The differences it refuses: empty list items (`1,,2`, robfig ignores them), `*-5` and `?/5`
//! (robfig accepts), and everything only gronx accepts (6 or 7 fields, `7` for Sunday, `L`,
//! `W`, `#`, `@always`-style aliases, tabs or repeated spaces between fields).
//! The empty string is valid: Incus reads it as "no automatic snapshots".

/// The aliases Incus accepts as a whole trigger.
pub const SCHEDULE_ALIASES: [&str; 9] = [
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@annually",
    "@yearly",
    "@startup",
    "@never",
];

const FORM: &str = "use <minute> <hour> <day-of-month> <month> <day-of-week> such as \"0 3 * * *\", or one of @hourly @daily @midnight @weekly @monthly @annually @yearly @startup @never, several joined by \", \"";

/// Why a schedule was refused: one line naming the trigger, the field and the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// An empty trigger, e.g. from a trailing `, `.
    #[error("schedule {schedule:?}: empty trigger (triggers are separated by \", \"); {FORM}")]
    EmptyTrigger {
        /// The schedule as given.
        schedule: String,
    },
    /// Something starting with `@` that is not an accepted alias.
    #[error("schedule {schedule:?}: unknown alias {trigger:?}; {FORM}")]
    UnknownAlias {
        /// The schedule as given.
        schedule: String,
        /// The trigger, lower-cased.
        trigger: String,
    },
    /// Not exactly five fields separated by single spaces.
    #[error(
        "schedule {schedule:?}: {trigger:?} has {found} fields, not 5 separated by single spaces; {FORM}"
    )]
    FieldCount {
        /// The schedule as given.
        schedule: String,
        /// The trigger, lower-cased.
        trigger: String,
        /// How many fields were found (splitting on single spaces).
        found: usize,
    },
    /// A field that does not parse or is out of range.
    #[error("schedule {schedule:?}: {field} field {value:?}: {reason}; {FORM}")]
    Field {
        /// The schedule as given.
        schedule: String,
        /// `minute`, `hour`, `day-of-month`, `month` or `day-of-week`.
        field: &'static str,
        /// The field as given, lower-cased.
        value: String,
        /// What is wrong with it.
        reason: FieldError,
    },
}

/// What is wrong with one field of a cron expression (the `reason` of [`CronError::Field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// `1,,2` or a leading or trailing comma.
    #[error("empty list item")]
    EmptyItem,
    /// More than one `/` in a list item.
    #[error("too many slashes in {item:?}")]
    Slashes { item: String },
    /// A step of 0.
    #[error("the step in {item:?} must be positive")]
    ZeroStep { item: String },
    /// A step that is not a number.
    #[error("the step in {item:?} is not a number")]
    BadStep { item: String },
    /// `?/N`.
    #[error("{item:?}: use */N for steps, not ?/N")]
    QuestionStep { item: String },
    /// More than one `-` in a range.
    #[error("too many hyphens in {item:?}")]
    Hyphens { item: String },
    /// `*-N` or `?-N`.
    #[error("{item:?}: {low} cannot start a range; use N-M")]
    WildcardRange { item: String, low: String },
    /// `N-M` with N > M.
    #[error("the range {range:?} starts after it ends ({start} > {end})")]
    Backwards { range: String, start: u64, end: u64 },
    /// Not a number, in a field without names.
    #[error("{text:?} is not a number")]
    NotANumber { text: String },
    /// Neither a number nor one of the field's names.
    #[error("{text:?} is neither a number nor one of {}", .names.join(" "))]
    NotANumberOrName {
        text: String,
        names: &'static [&'static str],
    },
    /// Outside the field's bounds; `sunday_seven` adds a hint for `7` as a day of the week.
    #[error(
        "{text} is outside {min}-{max}{}",
        if *.sunday_seven { " (write 0 or sun for Sunday)" } else { "" }
    )]
    OutOfRange {
        text: String,
        min: u64,
        max: u64,
        sunday_seven: bool,
    },
}

struct Bounds {
    name: &'static str,
    min: u64,
    max: u64,
    names: &'static [&'static str],
}

const FIELDS: [Bounds; 5] = [
    Bounds {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Bounds {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Bounds {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Bounds {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Bounds {
        name: "day-of-week",
        min: 0,
        max: 6,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

/// Checks a `snapshots.schedule` value. See the module documentation for what is accepted.
pub fn validate_schedule(expr: &str) -> Result<(), CronError> {
    if expr.is_empty() {
        return Ok(());
    }
    let lowered = expr.to_lowercase();
    for trigger in lowered.split(", ") {
        validate_trigger(expr, trigger)?;
    }
    Ok(())
}

fn validate_trigger(schedule: &str, trigger: &str) -> Result<(), CronError> {
    if trigger.is_empty() {
        return Err(CronError::EmptyTrigger {
            schedule: schedule.to_owned(),
        });
    }
    if SCHEDULE_ALIASES.contains(&trigger) {
        return Ok(());
    }
    if trigger.starts_with('@') {
        return Err(CronError::UnknownAlias {
            schedule: schedule.to_owned(),
            trigger: trigger.to_owned(),
        });
    }
    let fields: Vec<&str> = trigger.split(' ').collect();
    if fields.len() != 5
        || fields
            .iter()
            .any(|f| f.is_empty() || f.contains(char::is_whitespace))
    {
        return Err(CronError::FieldCount {
            schedule: schedule.to_owned(),
            trigger: trigger.to_owned(),
            found: trigger.split_whitespace().count(),
        });
    }
    for (value, bounds) in fields.iter().zip(&FIELDS) {
        validate_field(value, bounds).map_err(|reason| CronError::Field {
            schedule: schedule.to_owned(),
            field: bounds.name,
            value: (*value).to_owned(),
            reason,
        })?;
    }
    Ok(())
}

fn validate_field(field: &str, bounds: &Bounds) -> Result<(), FieldError> {
    for item in field.split(',') {
        if item.is_empty() {
            return Err(FieldError::EmptyItem);
        }
        validate_item(item, bounds)?;
    }
    Ok(())
}

/// One list item, as robfig/cron's `getRange` (and gronx) read it.
fn validate_item(item: &str, bounds: &Bounds) -> Result<(), FieldError> {
    let item_owned = || item.to_owned();
    let (range, step) = match item.split_once('/') {
        None => (item, None),
        Some((_, step)) if step.contains('/') => {
            return Err(FieldError::Slashes { item: item_owned() });
        }
        Some((range, step)) => (range, Some(step)),
    };
    if let Some(step) = step {
        match go_atoi(step) {
            Some(0) => return Err(FieldError::ZeroStep { item: item_owned() }),
            Some(_) => {}
            None => return Err(FieldError::BadStep { item: item_owned() }),
        }
    }
    match range {
        "*" => return Ok(()),
        "?" if step.is_none() => return Ok(()),
        "?" => return Err(FieldError::QuestionStep { item: item_owned() }),
        _ => {}
    }
    let (low, high) = match range.split_once('-') {
        None => (range, None),
        Some((_, high)) if high.contains('-') => {
            return Err(FieldError::Hyphens { item: item_owned() });
        }
        Some((low, high)) => (low, Some(high)),
    };
    if low == "*" || low == "?" {
        return Err(FieldError::WildcardRange {
            item: item_owned(),
            low: low.to_owned(),
        });
    }
    let start = value(low, bounds)?;
    let end = match high {
        Some(high) => value(high, bounds)?,
        None => start,
    };
    if end < start {
        return Err(FieldError::Backwards {
            range: range.to_owned(),
            start,
            end,
        });
    }
    Ok(())
}

/// A number or (for months and days of the week) a name, within bounds.
fn value(text: &str, bounds: &Bounds) -> Result<u64, FieldError> {
    let number = match bounds.names.iter().position(|&n| n == text) {
        Some(index) => bounds.min + index as u64,
        None => match go_atoi(text) {
            Some(n) => n,
            None if bounds.names.is_empty() => {
                return Err(FieldError::NotANumber {
                    text: text.to_owned(),
                });
            }
            None => {
                return Err(FieldError::NotANumberOrName {
                    text: text.to_owned(),
                    names: bounds.names,
                });
            }
        },
    };
    if number < bounds.min || number > bounds.max {
        return Err(FieldError::OutOfRange {
            text: text.to_owned(),
            min: bounds.min,
            max: bounds.max,
            sunday_seven: bounds.name == "day-of-week" && number == 7,
        });
    }
    Ok(number)
}

/// Go's `strconv.Atoi` for non-negative results: an optional `+` (a `-` makes the number
/// negative, which cron refuses), then ASCII digits, fitting an `int64`.
fn go_atoi(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| u64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an error is the expected one.
    type Check = fn(&CronError) -> bool;
    use proptest::prelude::*;

    #[test]
    fn accepted() {
        for ok in [
            "",
            "* * * * *",
            "0 3 * * *",
            "*/15 * * * *",
            "0 */6 * * *",
            "30 2 1 * *",
            "0 0 * * 0",
            "0 0 * * 6",
            "0 0 * * 1-5",
            "0 0 * * mon-fri",
            "0 0 * * MON-FRI",
            "0 0 * jan,jul *",
            "0 0 1 JAN *",
            "0 0 * * sun,sat",
            "0,15,30,45 * * * *",
            "5,* * * * *",
            "0-30/10 * * * *",
            "5/10 * * * *",
            "0 0 1-31/2 * *",
            "0 0 ? * ?",
            "59 23 31 12 6",
            "0 0 31 2 *",
            "+5 * * * *",
            "05 07 * * *",
            "*/100 * * * *",
            "0 0 * * mon/2",
            "0 0 * jan-jun/2 *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@annually",
            "@yearly",
            "@startup",
            "@never",
            "@HOURLY",
            "@startup, @daily",
            "@startup, 0 3 * * *",
            "0 1,2 * * *, 30 4 * * 0",
            "@never, @never",
        ] {
            assert_eq!(validate_schedule(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn refused() {
        use CronError as E;
        let cases: &[(&str, Check)] = &[
            (" ", |e| matches!(e, E::FieldCount { .. })),
            ("@hourly, ", |e| matches!(e, E::EmptyTrigger { .. })),
            ("@hourly,@daily", |e| matches!(e, E::UnknownAlias { .. })),
            ("@every 1h", |e| matches!(e, E::UnknownAlias { .. })),
            ("@always", |e| matches!(e, E::UnknownAlias { .. })),
            ("@reboot", |e| matches!(e, E::UnknownAlias { .. })),
            ("hourly", |e| matches!(e, E::FieldCount { found: 1, .. })),
            ("* * * *", |e| matches!(e, E::FieldCount { found: 4, .. })),
            ("0 * * * * *", |e| {
                matches!(e, E::FieldCount { found: 6, .. })
            }),
            ("0 0 * * * 2026", |e| matches!(e, E::FieldCount { .. })),
            ("0  3 * * *", |e| matches!(e, E::FieldCount { .. })),
            (" 0 3 * * *", |e| matches!(e, E::FieldCount { .. })),
            ("0 3 * * * ", |e| matches!(e, E::FieldCount { .. })),
            ("0\t3 * * *", |e| matches!(e, E::FieldCount { .. })),
            ("60 * * * *", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "minute",
                        ..
                    }
                )
            }),
            ("* 24 * * *", |e| {
                matches!(e, E::Field { field: "hour", .. })
            }),
            ("* * 0 * *", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-month",
                        ..
                    }
                )
            }),
            ("* * 32 * *", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-month",
                        ..
                    }
                )
            }),
            ("* * * 0 *", |e| {
                matches!(e, E::Field { field: "month", .. })
            }),
            ("* * * 13 *", |e| {
                matches!(e, E::Field { field: "month", .. })
            }),
            ("* * * * 7", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-week",
                        ..
                    }
                )
            }),
            ("* * * * 1-7", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-week",
                        ..
                    }
                )
            }),
            ("* * * * sat-sun", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-week",
                        ..
                    }
                )
            }),
            ("* * * mon *", |e| {
                matches!(e, E::Field { field: "month", .. })
            }),
            ("* * * * jan", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-week",
                        ..
                    }
                )
            }),
            ("mon * * * *", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "minute",
                        ..
                    }
                )
            }),
            ("* * * * monday", |e| matches!(e, E::Field { .. })),
            ("* * * january *", |e| matches!(e, E::Field { .. })),
            ("-5 * * * *", |e| matches!(e, E::Field { .. })),
            ("5- * * * *", |e| matches!(e, E::Field { .. })),
            ("1-2-3 * * * *", |e| matches!(e, E::Field { .. })),
            ("10-5 * * * *", |e| matches!(e, E::Field { .. })),
            ("*/0 * * * *", |e| matches!(e, E::Field { .. })),
            ("*/ * * * *", |e| matches!(e, E::Field { .. })),
            ("*/-1 * * * *", |e| matches!(e, E::Field { .. })),
            ("/5 * * * *", |e| matches!(e, E::Field { .. })),
            ("1/2/3 * * * *", |e| matches!(e, E::Field { .. })),
            ("1,,2 * * * *", |e| matches!(e, E::Field { .. })),
            (",5 * * * *", |e| matches!(e, E::Field { .. })),
            // ", " separates triggers, even inside what looks like a list.
            ("5, * * * *", |e| matches!(e, E::FieldCount { .. })),
            (", * * * *", |e| matches!(e, E::EmptyTrigger { .. })),
            ("* * * * 5,", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "day-of-week",
                        ..
                    }
                )
            }),
            ("*-5 * * * *", |e| matches!(e, E::Field { .. })),
            ("?/5 * * * *", |e| matches!(e, E::Field { .. })),
            ("0 0 L * *", |e| matches!(e, E::Field { .. })),
            ("0 0 15W * *", |e| matches!(e, E::Field { .. })),
            ("0 0 * * 1#2", |e| matches!(e, E::Field { .. })),
            ("0 0 * * 5l", |e| matches!(e, E::Field { .. })),
            ("0x5 * * * *", |e| matches!(e, E::Field { .. })),
            ("1_0 * * * *", |e| matches!(e, E::Field { .. })),
            ("99999999999999999999 * * * *", |e| {
                matches!(e, E::Field { .. })
            }),
            ("٣ * * * *", |e| matches!(e, E::Field { .. })),
            ("@daily, 61 * * * *", |e| {
                matches!(
                    e,
                    E::Field {
                        field: "minute",
                        ..
                    }
                )
            }),
            ("tz=utc * * * *", |e| matches!(e, E::Field { .. })),
        ];
        for (expr, check) in cases {
            match validate_schedule(expr) {
                Ok(()) => panic!("{expr:?} accepted"),
                Err(e) => {
                    assert!(check(&e), "{expr:?}: unexpected {e:?}");
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "{msg:?}");
                    assert!(msg.contains("<minute> <hour>"), "{msg:?}");
                }
            }
        }
    }

    #[test]
    fn message() {
        assert_eq!(
            validate_schedule("0 25 * * *").unwrap_err().to_string(),
            "schedule \"0 25 * * *\": hour field \"25\": 25 is outside 0-23; use <minute> <hour> <day-of-month> <month> <day-of-week> such as \"0 3 * * *\", or one of @hourly @daily @midnight @weekly @monthly @annually @yearly @startup @never, several joined by \", \""
        );
    }

    #[test]
    fn field_reasons_read_as_before() {
        for (expr, reason) in [
            ("1,,2 * * * *", "empty list item"),
            ("1/2/3 * * * *", "too many slashes in \"1/2/3\""),
            ("*/0 * * * *", "the step in \"*/0\" must be positive"),
            ("*/x * * * *", "the step in \"*/x\" is not a number"),
            ("?/5 * * * *", "\"?/5\": use */N for steps, not ?/N"),
            ("1-2-3 * * * *", "too many hyphens in \"1-2-3\""),
            ("*-5 * * * *", "\"*-5\": * cannot start a range; use N-M"),
            (
                "10-5 * * * *",
                "the range \"10-5\" starts after it ends (10 > 5)",
            ),
            ("x * * * *", "\"x\" is not a number"),
            (
                "* * * * monday",
                "\"monday\" is neither a number nor one of sun mon tue wed thu fri sat",
            ),
            ("* * * * 7", "7 is outside 0-6 (write 0 or sun for Sunday)"),
            ("60 * * * *", "60 is outside 0-59"),
            ("* * * 13 *", "13 is outside 1-12"),
        ] {
            match validate_schedule(expr) {
                Err(CronError::Field { reason: got, .. }) => {
                    assert_eq!(got.to_string(), reason, "{expr:?}");
                }
                other => panic!("{expr:?}: {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn numeric_fields_in_bounds_are_accepted(
            minute in 0u64..60, hour in 0u64..24, dom in 1u64..32, month in 1u64..13, dow in 0u64..7,
            step in 1u64..70,
        ) {
            let expr = format!("{minute} {hour} {dom}-31/{step} {month} {dow}");
            prop_assert_eq!(validate_schedule(&expr), Ok(()));
        }

        #[test]
        fn out_of_bounds_is_refused(field in 0usize..5, extra in 1u64..1000) {
            let mut fields = ["*"; 5].map(str::to_owned);
            fields[field] = (FIELDS[field].max + extra).to_string();
            prop_assert!(validate_schedule(&fields.join(" ")).is_err());
        }

        #[test]
        fn never_panics(s in "[0-9a-z*?/,@ -]{0,30}|\\PC{0,30}") {
            let _ = validate_schedule(&s);
        }
    }
}
