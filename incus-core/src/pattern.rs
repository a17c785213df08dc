//! Snapshot name patterns, in the syntax of Incus's `snapshots.pattern`.
//!
//! Incus renders `snapshots.pattern` with Pongo2, the only context variable being
//! `creation_date`. What sysadmins actually write is supported, exactly as Incus renders it:
//!
//! - literal text;
//! - `{{ creation_date|date:'<Go layout>' }}` (single or double quotes, optional spaces, and
//!   the `{{-`/`-}}` trim markers). The layout is interpreted by a port of Go's `time.Format`
//!   (every Go layout token, not only the common ones), in UTC;
//! - the `%d` counter, at most once, numbered the way Incus numbers it.
//!
//! Names that Incus refuses, or creates but cannot address afterwards, are rejected when the
//! pattern is parsed rather than when a snapshot is taken. The rules are the union of what the
//! Incus 6.0 LTS releases enforce (6.0.4 refuses `/ ? & +` and spaces and decodes snapshot URLs
//! twice, so `%` is unusable; 6.0.5 and later also refuse `$ " ' `` ` `` *`, names longer than 64
//! bytes, and names that do not start and end with an ASCII letter or digit).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};

/// The pattern used when none is configured: sortable, and prefixed with [`MANAGED_PREFIX`],
/// e.g. `auto-20261128-205000`.
pub const DEFAULT_PATTERN: &str = "auto-{{ creation_date|date:'20060102-150405' }}";

/// The prefix of the snapshot names that [`DEFAULT_PATTERN`] produces.
pub const MANAGED_PREFIX: &str = "auto-";

/// The longest snapshot name Incus (6.0.5 and later) accepts, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The counter placeholder.
const COUNTER: &str = "%d";

/// The example given in error messages.
const EXAMPLE: &str = "{{ creation_date|date:'2006-01-02' }}";

/// Why a pattern or a snapshot name was refused. Every message is one line that says what is
/// wrong and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("the snapshot pattern is empty; give one such as {DEFAULT_PATTERN:?} or snap%d")]
    EmptyPattern,
    /// A snapshot name is the empty string.
    #[error("the snapshot name is empty; give a name such as snap0 or auto-20260101-000000")]
    EmptyName,
    /// `{{` without a matching `}}`.
    #[error(
        "pattern {pattern:?}: \"{{{{\" is never closed by \"}}}}\"; write the date as {EXAMPLE}"
    )]
    Unterminated {
        /// The pattern as given.
        pattern: String,
    },
    /// A variable other than `creation_date`.
    #[error(
        "pattern {pattern:?}: unknown variable {name:?}; only creation_date is supported, as in {EXAMPLE}"
    )]
    UnknownVariable {
        /// The pattern as given.
        pattern: String,
        /// The variable that was named.
        name: String,
    },
    /// A filter other than `date`.
    #[error(
        "pattern {pattern:?}: unknown filter {name:?}; only the date filter is supported, as in {EXAMPLE}"
    )]
    UnknownFilter {
        /// The pattern as given.
        pattern: String,
        /// The filter that was named.
        name: String,
    },
    /// `{{ creation_date }}` without `|date:'...'` (Incus would render Go's default time format,
    /// which contains spaces).
    #[error(
        "pattern {pattern:?}: creation_date needs a date filter (without one Incus renders spaces); write {EXAMPLE}"
    )]
    MissingDateFilter {
        /// The pattern as given.
        pattern: String,
    },
    /// `{% ... %}` tags or `{# ... #}` comments.
    #[error(
        "pattern {pattern:?}: Pongo2 tags and comments ({construct}) are not supported; use literal text, %d and {EXAMPLE}"
    )]
    Unsupported {
        /// The pattern as given.
        pattern: String,
        /// The construct found, e.g. `{%`.
        construct: String,
    },
    /// Anything else that is not `{{ creation_date|date:'<layout>' }}`.
    #[error("pattern {pattern:?}: {detail}; write the date as {EXAMPLE}")]
    Syntax {
        /// The pattern as given.
        pattern: String,
        /// What was expected and where.
        detail: String,
    },
    /// `%d` more than once (Incus: "Snapshot pattern may contain '%d' only once").
    #[error("pattern {pattern:?}: %d appears {count} times; Incus allows the counter only once")]
    MultipleCounters {
        /// The pattern as given.
        pattern: String,
        /// How many times `%d` appears.
        count: usize,
    },
    /// `%d` directly followed by a digit, which Incus cannot number (it reads the digits after
    /// the counter as part of it, and would reuse an existing name).
    #[error(
        "pattern {pattern:?}: %d is directly followed by a digit, so Incus cannot tell where the counter ends; put a separator such as '-' after %d"
    )]
    CounterFollowedByDigit {
        /// The pattern as given.
        pattern: String,
    },
    /// A character Incus refuses in snapshot names, or accepts but cannot address afterwards.
    #[error(
        "{subject}: the character {ch:?} {reason}; use letters, digits, '-', '_', '.' or ':' instead"
    )]
    RefusedChar {
        /// `pattern "..."` or `snapshot name "..."`.
        subject: String,
        /// The refused character.
        ch: char,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A Go layout token that renders a character Incus refuses.
    #[error("pattern {pattern:?}: the date layout token {token:?} {reason}")]
    RefusedLayoutToken {
        /// The pattern as given.
        pattern: String,
        /// The Go layout token, e.g. `_2`.
        token: String,
        /// What it renders and what to use instead.
        reason: &'static str,
    },
    /// The pattern renders to the empty string.
    #[error("pattern {pattern:?} renders an empty name; add literal text or a date")]
    RendersEmpty {
        /// The pattern as given.
        pattern: String,
    },
    /// The name (or the rendered pattern) does not start and end with an ASCII letter or digit.
    #[error(
        "{subject}: names must start and end with a letter or digit and be at least 2 characters long (Incus 6.0.5+ refuses {sample:?})"
    )]
    BadEdges {
        /// `pattern "..."` or `snapshot name "..."`.
        subject: String,
        /// The offending name (for a pattern, a sample rendering).
        sample: String,
    },
    /// The name (or the longest rendering of the pattern) exceeds [`MAX_NAME_LEN`] bytes.
    #[error(
        "{subject}: {len} bytes is longer than the {MAX_NAME_LEN} bytes Incus 6.0.5+ accepts; shorten it"
    )]
    TooLong {
        /// `pattern "..."` or `snapshot name "..."`.
        subject: String,
        /// The length in bytes (for a pattern, of its longest rendering).
        len: usize,
    },
}

/// The characters refused anywhere in a snapshot name, and why.
fn refusal(ch: char) -> Option<&'static str> {
    match ch {
        '/' => Some("separates instance and snapshot names, Incus refuses it"),
        '?' | '&' | '+' => Some("is refused by Incus in snapshot names"),
        '%' => Some(
            "makes the snapshot unreachable: Incus decodes snapshot URLs twice (only a single %d counter is allowed)",
        ),
        '$' | '"' | '\'' | '`' | '*' => Some("is refused by Incus 6.0.5 and later"),
        c if c.is_whitespace() => Some("is white space, which Incus refuses in snapshot names"),
        c if c.is_control() => Some("is a control character"),
        _ => None,
    }
}

/// Checks a literal snapshot name given by a user: not empty, at most [`MAX_NAME_LEN`] bytes,
/// none of `/ ? & + % $ " ' `` ` `` *`, white space or control characters, and starting and
/// ending with an ASCII letter or digit.
pub fn validate_snapshot_name(name: &str) -> Result<(), PatternError> {
    if name.is_empty() {
        return Err(PatternError::EmptyName);
    }
    let subject = || format!("snapshot name {name:?}");
    if let Some((ch, reason)) = name.chars().find_map(|c| refusal(c).map(|r| (c, r))) {
        return Err(PatternError::RefusedChar {
            subject: subject(),
            ch,
            reason,
        });
    }
    if !good_edges(name) {
        return Err(PatternError::BadEdges {
            subject: subject(),
            sample: name.to_owned(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PatternError::TooLong {
            subject: subject(),
            len: name.len(),
        });
    }
    Ok(())
}

/// Incus 6.0.5/6.0.6: `^[a-zA-Z0-9]+.*[a-zA-Z0-9]+$`.
fn good_edges(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A parsed snapshot name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Date(Vec<LayoutItem>),
    Counter,
}

impl SnapshotPattern {
    /// Parses and checks a pattern. See the module documentation for the accepted syntax.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::EmptyPattern);
        }
        let parts = parse_parts(s)?;
        let pattern = Self {
            source: s.to_owned(),
            parts,
        };
        pattern.check()?;
        Ok(pattern)
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern contains the `%d` counter.
    pub fn has_counter(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Counter))
    }

    /// Renders the pattern at `at` (in UTC), leaving `%d` in place.
    pub fn render(&self, at: DateTime<Utc>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Counter => out.push_str(COUNTER),
                Part::Date(items) => format_layout(&mut out, items, at),
            }
        }
        out
    }

    /// The name Incus would give the next snapshot taken at `at`, given the names (snapshot part
    /// only, without `instance/`) of the instance's existing snapshots.
    ///
    /// With `%d`: the counter is one more than the highest number found among existing names
    /// that match the rendered pattern with a number in place of `%d` (Incus's `Sscanf`
    /// matching: leading zeros, a `+` sign and text after the suffix are tolerated, negative
    /// numbers are ignored), or 0 if none match. `None` only if that number would overflow.
    ///
    /// Without `%d`: the rendered name, or `None` if a snapshot with that name exists (Incus
    /// itself would then append `-0`, `-1`, ...; callers report "already exists" instead).
    ///
    /// The result is never one of `existing`. It can exceed [`MAX_NAME_LEN`] once the counter
    /// grows; check it with [`validate_snapshot_name`] before use.
    pub fn next_name(&self, at: DateTime<Utc>, existing: &[&str]) -> Option<String> {
        let rendered = self.render(at);
        let Some((prefix, suffix)) = rendered.split_once(COUNTER) else {
            return (!existing.contains(&rendered.as_str())).then_some(rendered);
        };
        let mut next: i64 = 0;
        for name in existing {
            if let Some(num) = incus_counter(name, prefix, suffix)
                && num >= next
            {
                next = num.checked_add(1)?;
            }
        }
        // Parsing refuses the patterns that could make Incus's number collide with an existing
        // name; this loop only guards the guarantee.
        let taken: HashSet<&str> = existing.iter().copied().collect();
        loop {
            let candidate = format!("{prefix}{next}{suffix}");
            if !taken.contains(candidate.as_str()) {
                return Some(candidate);
            }
            next = next.checked_add(1)?;
        }
    }

    fn subject(&self) -> String {
        format!("pattern {:?}", self.source)
    }

    fn check(&self) -> Result<(), PatternError> {
        let pattern = || self.source.clone();
        let counters = self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Counter))
            .count();
        if counters > 1 {
            return Err(PatternError::MultipleCounters {
                pattern: pattern(),
                count: counters,
            });
        }
        for part in &self.parts {
            match part {
                Part::Counter => {}
                Part::Literal(text) => check_chars(text, &self.subject())?,
                Part::Date(items) => {
                    for item in items {
                        match item {
                            LayoutItem::Literal(text) => check_chars(text, &self.subject())?,
                            LayoutItem::Std(std) => {
                                if let Some(reason) = std.refusal() {
                                    return Err(PatternError::RefusedLayoutToken {
                                        pattern: pattern(),
                                        token: std.token(),
                                        reason,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        // Renderings differ only in the widths of fields and in whether `.999`-style fractions
        // are empty, so two sample instants (whole second, and all nanosecond digits non-zero)
        // cover every first and last character class.
        for nanos in [0, 123_456_789] {
            let at = Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .and_then(|t| t.with_nanosecond(nanos))
                .unwrap_or_default();
            let rendered = self.render(at);
            if rendered.is_empty() {
                return Err(PatternError::RendersEmpty { pattern: pattern() });
            }
            if let Some((_, suffix)) = rendered.split_once(COUNTER)
                && suffix.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(PatternError::CounterFollowedByDigit { pattern: pattern() });
            }
            let sample = rendered.replacen(COUNTER, "0", 1);
            if !good_edges(&sample) {
                return Err(PatternError::BadEdges {
                    subject: self.subject(),
                    sample,
                });
            }
        }
        let len = self.max_len();
        if len > MAX_NAME_LEN {
            return Err(PatternError::TooLong {
                subject: self.subject(),
                len,
            });
        }
        Ok(())
    }

    /// The longest rendering, counting the counter as one digit.
    fn max_len(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.len(),
                Part::Counter => 1,
                Part::Date(items) => items
                    .iter()
                    .map(|item| match item {
                        LayoutItem::Literal(text) => text.len(),
                        LayoutItem::Std(std) => std.max_width(),
                    })
                    .sum(),
            })
            .sum()
    }
}

impl fmt::Display for SnapshotPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for SnapshotPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Default for SnapshotPattern {
    /// [`DEFAULT_PATTERN`].
    fn default() -> Self {
        Self {
            source: DEFAULT_PATTERN.to_owned(),
            parts: vec![
                Part::Literal(MANAGED_PREFIX.to_owned()),
                Part::Date(parse_layout("20060102-150405")),
            ],
        }
    }
}

fn check_chars(text: &str, subject: &str) -> Result<(), PatternError> {
    // `%d` has been split out already, so any `%` left is refused.
    match text.chars().find_map(|c| refusal(c).map(|r| (c, r))) {
        Some((ch, reason)) => Err(PatternError::RefusedChar {
            subject: subject.to_owned(),
            ch,
            reason,
        }),
        None => Ok(()),
    }
}

/// Go's `fmt.Sscanf(name, prefix + "%d" + suffix, &num)` as Incus's
/// `GetNextInstanceSnapshotIndex` uses it: the prefix literally, optional white space (but not
/// a newline), an optional sign, decimal digits that fit an `int64`, then the suffix literally;
/// anything after the suffix is ignored.
fn incus_counter(name: &str, prefix: &str, suffix: &str) -> Option<i64> {
    let rest = name.strip_prefix(prefix)?;
    let mut chars = rest.char_indices().peekable();
    let mut start = rest.len();
    while let Some(&(i, c)) = chars.peek() {
        if c == '\n' || (c == '\r' && rest[i + 1..].starts_with('\n')) {
            return None;
        }
        if !c.is_whitespace() {
            start = i;
            break;
        }
        chars.next();
    }
    let rest = &rest[start..];
    let sign_len = usize::from(rest.starts_with(['+', '-']));
    let digits = rest[sign_len..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return None;
    }
    let (number, after) = rest.split_at(sign_len + digits);
    if !after.starts_with(suffix) {
        return None;
    }
    number.parse::<i64>().ok()
}

// ---------------------------------------------------------------------------------------------
// The Pongo2 subset.

fn parse_parts(s: &str) -> Result<Vec<Part>, PatternError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            flush_literal(&mut literal, &mut parts);
            let (layout, after) = parse_variable(s, &rest[2..])?;
            parts.push(Part::Date(parse_layout(&layout)));
            rest = after;
        } else if rest.starts_with("{%") || rest.starts_with("{#") {
            return Err(PatternError::Unsupported {
                pattern: s.to_owned(),
                construct: rest[..2].to_owned(),
            });
        } else if let Some(after) = rest.strip_prefix(COUNTER) {
            flush_literal(&mut literal, &mut parts);
            parts.push(Part::Counter);
            rest = after;
        } else {
            let mut chars = rest.chars();
            if let Some(c) = chars.next() {
                literal.push(c);
            }
            rest = chars.as_str();
        }
    }
    flush_literal(&mut literal, &mut parts);
    Ok(parts)
}

fn flush_literal(literal: &mut String, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal)));
    }
}

/// Pongo2 skips spaces, tabs and carriage returns inside `{{ }}`; a newline is an error.
fn skip_space<'a>(pattern: &str, s: &'a str) -> Result<&'a str, PatternError> {
    let trimmed = s.trim_start_matches([' ', '\t', '\r']);
    if trimmed.starts_with('\n') {
        return Err(syntax(pattern, "a newline inside {{ }}"));
    }
    Ok(trimmed)
}

fn syntax(pattern: &str, found: &str) -> PatternError {
    PatternError::Syntax {
        pattern: pattern.to_owned(),
        detail: format!("unexpected {found}"),
    }
}

fn unterminated(pattern: &str) -> PatternError {
    PatternError::Unterminated {
        pattern: pattern.to_owned(),
    }
}

/// Pongo2 identifiers: a letter or `_`, then letters, digits or `_`.
fn identifier(s: &str) -> (&str, &str) {
    let len = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
        .map_or(s.len(), |(i, _)| i);
    s.split_at(len)
}

/// Describes what follows, for error messages.
fn describe(s: &str) -> String {
    match s.chars().next() {
        None => "end of pattern".to_owned(),
        Some(c) => format!("{c:?}"),
    }
}

/// Parses `[-] creation_date|date:'<layout>' [-]}}` (after the opening `{{`), returning the
/// layout and the text after `}}`.
fn parse_variable<'a>(pattern: &str, s: &'a str) -> Result<(String, &'a str), PatternError> {
    let s = s.strip_prefix('-').unwrap_or(s);
    let s = skip_space(pattern, s)?;
    if s.is_empty() {
        return Err(unterminated(pattern));
    }
    let (name, s) = identifier(s);
    if name.is_empty() {
        return Err(PatternError::Syntax {
            pattern: pattern.to_owned(),
            detail: format!(
                "expected creation_date after \"{{{{\", found {}",
                describe(s)
            ),
        });
    }
    if name != "creation_date" {
        return Err(PatternError::UnknownVariable {
            pattern: pattern.to_owned(),
            name: name.to_owned(),
        });
    }
    let s = skip_space(pattern, s)?;
    if end_of_variable(s).is_some() {
        return Err(PatternError::MissingDateFilter {
            pattern: pattern.to_owned(),
        });
    }
    let Some(s) = s.strip_prefix('|') else {
        return Err(if s.is_empty() {
            unterminated(pattern)
        } else {
            PatternError::Syntax {
                pattern: pattern.to_owned(),
                detail: format!("expected |date after creation_date, found {}", describe(s)),
            }
        });
    };
    let s = skip_space(pattern, s)?;
    let (filter, s) = identifier(s);
    if filter != "date" {
        if filter.is_empty() && s.is_empty() {
            return Err(unterminated(pattern));
        }
        return Err(PatternError::UnknownFilter {
            pattern: pattern.to_owned(),
            name: if filter.is_empty() {
                describe(s)
            } else {
                filter.to_owned()
            },
        });
    }
    let s = skip_space(pattern, s)?;
    let Some(s) = s.strip_prefix(':') else {
        return Err(if s.is_empty() {
            unterminated(pattern)
        } else {
            PatternError::Syntax {
                pattern: pattern.to_owned(),
                detail: format!(
                    "expected :'<layout>' after the date filter, found {}",
                    describe(s)
                ),
            }
        });
    };
    let s = skip_space(pattern, s)?;
    let (layout, s) = parse_string(pattern, s)?;
    let s = skip_space(pattern, s)?;
    match end_of_variable(s) {
        Some(after) => Ok((layout, after)),
        None if s.is_empty() => Err(unterminated(pattern)),
        None => Err(PatternError::Syntax {
            pattern: pattern.to_owned(),
            detail: format!(
                "expected \"}}}}\" after the date layout, found {} (only one date filter is supported)",
                describe(s)
            ),
        }),
    }
}

fn end_of_variable(s: &str) -> Option<&str> {
    s.strip_prefix("}}").or_else(|| s.strip_prefix("-}}"))
}

/// A Pongo2 v6 string literal: `'...'` or `"..."`, where only `\"` and `\\` are escapes.
fn parse_string<'a>(pattern: &str, s: &'a str) -> Result<(String, &'a str), PatternError> {
    let mut chars = s.chars();
    let quote = match chars.next() {
        Some(q @ ('\'' | '"')) => q,
        None => return Err(unterminated(pattern)),
        Some(_) => {
            return Err(PatternError::Syntax {
                pattern: pattern.to_owned(),
                detail: format!(
                    "expected a quoted Go layout after date:, found {}",
                    describe(s)
                ),
            });
        }
    };
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(unterminated(pattern)),
            Some('\n') => return Err(syntax(pattern, "newline inside the date layout")),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => out.push(c),
                other => {
                    return Err(PatternError::Syntax {
                        pattern: pattern.to_owned(),
                        detail: format!(
                            "unknown escape sequence \\{} in the date layout (Pongo2 knows only \\\" and \\\\)",
                            other.map(String::from).unwrap_or_default()
                        ),
                    });
                }
            },
            Some(c) if c == quote => return Ok((out, chars.as_str())),
            Some(c) => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A port of Go's time.Format layouts (time/format.go, nextStdChunk and appendFormat).

#[derive(Debug, Clone, PartialEq, Eq)]
enum LayoutItem {
    Literal(String),
    Std(Std),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PmUpper,
    PmLower,
    Tz,
    Iso8601Tz,
    Iso8601SecondsTz,
    Iso8601ShortTz,
    Iso8601ColonTz,
    Iso8601ColonSecondsTz,
    NumTz,
    NumSecondsTz,
    NumShortTz,
    NumColonTz,
    NumColonSecondsTz,
    /// `.000`/`,999`: separator, number of digits, whether trailing zeros are trimmed.
    Frac {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

impl Std {
    /// The layout text of the token.
    fn token(self) -> String {
        match self {
            Std::LongMonth => "January".to_owned(),
            Std::Month => "Jan".to_owned(),
            Std::NumMonth => "1".to_owned(),
            Std::ZeroMonth => "01".to_owned(),
            Std::LongWeekDay => "Monday".to_owned(),
            Std::WeekDay => "Mon".to_owned(),
            Std::Day => "2".to_owned(),
            Std::UnderDay => "_2".to_owned(),
            Std::ZeroDay => "02".to_owned(),
            Std::UnderYearDay => "__2".to_owned(),
            Std::ZeroYearDay => "002".to_owned(),
            Std::Hour => "15".to_owned(),
            Std::Hour12 => "3".to_owned(),
            Std::ZeroHour12 => "03".to_owned(),
            Std::Minute => "4".to_owned(),
            Std::ZeroMinute => "04".to_owned(),
            Std::Second => "5".to_owned(),
            Std::ZeroSecond => "05".to_owned(),
            Std::LongYear => "2006".to_owned(),
            Std::Year => "06".to_owned(),
            Std::PmUpper => "PM".to_owned(),
            Std::PmLower => "pm".to_owned(),
            Std::Tz => "MST".to_owned(),
            Std::Iso8601Tz => "Z0700".to_owned(),
            Std::Iso8601SecondsTz => "Z070000".to_owned(),
            Std::Iso8601ShortTz => "Z07".to_owned(),
            Std::Iso8601ColonTz => "Z07:00".to_owned(),
            Std::Iso8601ColonSecondsTz => "Z07:00:00".to_owned(),
            Std::NumTz => "-0700".to_owned(),
            Std::NumSecondsTz => "-070000".to_owned(),
            Std::NumShortTz => "-07".to_owned(),
            Std::NumColonTz => "-07:00".to_owned(),
            Std::NumColonSecondsTz => "-07:00:00".to_owned(),
            Std::Frac { sep, digits, trim } => {
                let digit = if trim { '9' } else { '0' };
                std::iter::once(sep)
                    .chain(std::iter::repeat_n(digit, digits))
                    .collect()
            }
        }
    }

    /// Why the token cannot be used in a snapshot name, if it cannot.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Std::UnderDay | Std::UnderYearDay => Some(
                "pads with a space, which Incus refuses in snapshot names; use 02 (or 002) instead",
            ),
            Std::NumTz
            | Std::NumSecondsTz
            | Std::NumShortTz
            | Std::NumColonTz
            | Std::NumColonSecondsTz => Some(
                "renders \"+00...\" in UTC and Incus refuses '+' in snapshot names; use Z07:00 (renders Z) or MST (renders UTC)",
            ),
            _ => None,
        }
    }

    /// The most bytes the token renders in UTC (for years 0 to 9999).
    fn max_width(self) -> usize {
        match self {
            Std::LongMonth | Std::LongWeekDay => 9,
            Std::Month | Std::WeekDay | Std::ZeroYearDay | Std::UnderYearDay | Std::Tz => 3,
            Std::LongYear => 4,
            Std::Iso8601Tz
            | Std::Iso8601SecondsTz
            | Std::Iso8601ShortTz
            | Std::Iso8601ColonTz
            | Std::Iso8601ColonSecondsTz => 1,
            Std::NumTz => 5,
            Std::NumSecondsTz => 7,
            Std::NumShortTz => 3,
            Std::NumColonTz => 6,
            Std::NumColonSecondsTz => 9,
            Std::Frac { digits, .. } => digits.min(9) + 1,
            _ => 2,
        }
    }
}

/// Go's `nextStdChunk`, applied repeatedly.
fn parse_layout(layout: &str) -> Vec<LayoutItem> {
    let mut items = Vec::new();
    let mut rest = layout;
    while !rest.is_empty() {
        match next_std_chunk(rest) {
            Some((prefix, std, suffix)) => {
                if !prefix.is_empty() {
                    items.push(LayoutItem::Literal(prefix.to_owned()));
                }
                items.push(LayoutItem::Std(std));
                rest = suffix;
            }
            None => {
                items.push(LayoutItem::Literal(rest.to_owned()));
                break;
            }
        }
    }
    items
}

fn starts_with_lower(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_lowercase)
}

/// Go's `nextStdChunk`: the text before the first layout token, the token, and the text after.
/// Every token is ASCII, so the byte offsets are character boundaries.
fn next_std_chunk(layout: &str) -> Option<(&str, Std, &str)> {
    let l = layout.as_bytes();
    let at = |i: usize, s: &str| l.get(i..i + s.len()) == Some(s.as_bytes());
    for i in 0..l.len() {
        let found = match l[i] {
            b'J' if at(i, "Jan") => {
                if at(i, "January") {
                    Some((i, Std::LongMonth, i + 7))
                } else if !starts_with_lower(&l[i + 3..]) {
                    Some((i, Std::Month, i + 3))
                } else {
                    None
                }
            }
            b'M' if at(i, "Mon") => {
                if at(i, "Monday") {
                    Some((i, Std::LongWeekDay, i + 6))
                } else if !starts_with_lower(&l[i + 3..]) {
                    Some((i, Std::WeekDay, i + 3))
                } else {
                    None
                }
            }
            b'M' if at(i, "MST") => Some((i, Std::Tz, i + 3)),
            b'0' => match l.get(i + 1) {
                Some(b'1') => Some((i, Std::ZeroMonth, i + 2)),
                Some(b'2') => Some((i, Std::ZeroDay, i + 2)),
                Some(b'3') => Some((i, Std::ZeroHour12, i + 2)),
                Some(b'4') => Some((i, Std::ZeroMinute, i + 2)),
                Some(b'5') => Some((i, Std::ZeroSecond, i + 2)),
                Some(b'6') => Some((i, Std::Year, i + 2)),
                Some(b'0') if l.get(i + 2) == Some(&b'2') => Some((i, Std::ZeroYearDay, i + 3)),
                _ => None,
            },
            b'1' => {
                if l.get(i + 1) == Some(&b'5') {
                    Some((i, Std::Hour, i + 2))
                } else {
                    Some((i, Std::NumMonth, i + 1))
                }
            }
            b'2' => {
                if at(i, "2006") {
                    Some((i, Std::LongYear, i + 4))
                } else {
                    Some((i, Std::Day, i + 1))
                }
            }
            b'_' => {
                if l.get(i + 1) == Some(&b'2') {
                    if at(i + 1, "2006") {
                        // `_2006` is a literal `_` followed by the year.
                        Some((i + 1, Std::LongYear, i + 5))
                    } else {
                        Some((i, Std::UnderDay, i + 2))
                    }
                } else if at(i, "__2") {
                    Some((i, Std::UnderYearDay, i + 3))
                } else {
                    None
                }
            }
            b'3' => Some((i, Std::Hour12, i + 1)),
            b'4' => Some((i, Std::Minute, i + 1)),
            b'5' => Some((i, Std::Second, i + 1)),
            b'P' if l.get(i + 1) == Some(&b'M') => Some((i, Std::PmUpper, i + 2)),
            b'p' if l.get(i + 1) == Some(&b'm') => Some((i, Std::PmLower, i + 2)),
            b'-' => [
                ("-070000", Std::NumSecondsTz),
                ("-07:00:00", Std::NumColonSecondsTz),
                ("-0700", Std::NumTz),
                ("-07:00", Std::NumColonTz),
                ("-07", Std::NumShortTz),
            ]
            .into_iter()
            .find(|(tok, _)| at(i, tok))
            .map(|(tok, std)| (i, std, i + tok.len())),
            b'Z' => [
                ("Z070000", Std::Iso8601SecondsTz),
                ("Z07:00:00", Std::Iso8601ColonSecondsTz),
                ("Z0700", Std::Iso8601Tz),
                ("Z07:00", Std::Iso8601ColonTz),
                ("Z07", Std::Iso8601ShortTz),
            ]
            .into_iter()
            .find(|(tok, _)| at(i, tok))
            .map(|(tok, std)| (i, std, i + tok.len())),
            sep @ (b'.' | b',') => match l.get(i + 1) {
                Some(&digit @ (b'0' | b'9')) => {
                    let mut j = i + 1;
                    while l.get(j) == Some(&digit) {
                        j += 1;
                    }
                    if l.get(j).is_some_and(u8::is_ascii_digit) {
                        None
                    } else {
                        Some((
                            i,
                            Std::Frac {
                                sep: char::from(sep),
                                digits: j - (i + 1),
                                trim: digit == b'9',
                            },
                            j,
                        ))
                    }
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((start, std, end)) = found {
            return Some((&layout[..start], std, &layout[end..]));
        }
    }
    None
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Go's `appendInt`: a minus sign for negative numbers, then the digits zero-padded to `width`.
fn push_int(out: &mut String, value: i64, width: usize) {
    if value < 0 {
        out.push('-');
    }
    out.push_str(&format!("{:0width$}", value.unsigned_abs()));
}

/// Go's `appendFormat` for a UTC time.
fn format_layout(out: &mut String, items: &[LayoutItem], at: DateTime<Utc>) {
    let year = i64::from(at.year());
    let month = at.month0() as usize;
    let day = i64::from(at.day());
    let yday = i64::from(at.ordinal());
    let hour = i64::from(at.hour());
    let weekday = at.weekday().num_days_from_sunday() as usize;
    // chrono represents a leap second as nanoseconds past 999,999,999; Go has none.
    let nanos = at.nanosecond().min(999_999_999);
    for item in items {
        let std = match item {
            LayoutItem::Literal(text) => {
                out.push_str(text);
                continue;
            }
            LayoutItem::Std(std) => *std,
        };
        match std {
            Std::Year => push_int(out, year.abs() % 100, 2),
            Std::LongYear => push_int(out, year, 4),
            Std::Month => out.push_str(&LONG_MONTHS[month][..3]),
            Std::LongMonth => out.push_str(LONG_MONTHS[month]),
            Std::NumMonth => push_int(out, month as i64 + 1, 0),
            Std::ZeroMonth => push_int(out, month as i64 + 1, 2),
            Std::WeekDay => out.push_str(&LONG_DAYS[weekday][..3]),
            Std::LongWeekDay => out.push_str(LONG_DAYS[weekday]),
            Std::Day => push_int(out, day, 0),
            Std::UnderDay => {
                if day < 10 {
                    out.push(' ');
                }
                push_int(out, day, 0);
            }
            Std::ZeroDay => push_int(out, day, 2),
            Std::UnderYearDay => {
                if yday < 100 {
                    out.push(' ');
                    if yday < 10 {
                        out.push(' ');
                    }
                }
                push_int(out, yday, 0);
            }
            Std::ZeroYearDay => push_int(out, yday, 3),
            Std::Hour => push_int(out, hour, 2),
            Std::Hour12 | Std::ZeroHour12 => {
                let h12 = match hour % 12 {
                    0 => 12,
                    h => h,
                };
                push_int(out, h12, if std == Std::Hour12 { 0 } else { 2 });
            }
            Std::Minute => push_int(out, i64::from(at.minute()), 0),
            Std::ZeroMinute => push_int(out, i64::from(at.minute()), 2),
            Std::Second => push_int(out, i64::from(at.second()), 0),
            Std::ZeroSecond => push_int(out, i64::from(at.second()), 2),
            Std::PmUpper => out.push_str(if hour >= 12 { "PM" } else { "AM" }),
            Std::PmLower => out.push_str(if hour >= 12 { "pm" } else { "am" }),
            // The offset is always zero in UTC: the ISO 8601 forms print "Z".
            Std::Iso8601Tz
            | Std::Iso8601SecondsTz
            | Std::Iso8601ShortTz
            | Std::Iso8601ColonTz
            | Std::Iso8601ColonSecondsTz => out.push('Z'),
            Std::NumTz => out.push_str("+0000"),
            Std::NumSecondsTz => out.push_str("+000000"),
            Std::NumShortTz => out.push_str("+00"),
            Std::NumColonTz => out.push_str("+00:00"),
            Std::NumColonSecondsTz => out.push_str("+00:00:00"),
            Std::Tz => out.push_str("UTC"),
            Std::Frac { sep, digits, trim } => {
                if trim && (digits == 0 || nanos == 0) {
                    continue;
                }
                let all = format!("{nanos:09}");
                let mut frac = &all[..digits.min(9)];
                if trim {
                    frac = frac.trim_end_matches('0');
                    if frac.is_empty() {
                        continue;
                    }
                }
                out.push(sep);
                out.push_str(frac);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an error is the expected one.
    type Check = fn(&PatternError) -> bool;
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .with_nanosecond(nanos)
            .unwrap()
    }

    /// Saturday 2026-11-28 20:50:07.012340000 UTC.
    fn sample() -> DateTime<Utc> {
        at(2026, 11, 28, 20, 50, 7, 12_340_000)
    }

    fn layout(l: &str, t: DateTime<Utc>) -> String {
        let mut out = String::new();
        format_layout(&mut out, &parse_layout(l), t);
        out
    }

    #[test]
    fn go_layout_tokens() {
        let t = sample();
        let morning = at(2009, 3, 4, 0, 5, 9, 0);
        let cases: &[(&str, DateTime<Utc>, &str)] = &[
            ("2006", t, "2026"),
            ("06", t, "26"),
            ("01", t, "11"),
            ("1", morning, "3"),
            ("01", morning, "03"),
            ("Jan", t, "Nov"),
            ("January", t, "November"),
            ("02", morning, "04"),
            ("2", morning, "4"),
            ("_2", morning, " 4"),
            ("_2", t, "28"),
            ("15", t, "20"),
            ("15", morning, "00"),
            ("03", t, "08"),
            ("3", t, "8"),
            ("3", morning, "12"),
            ("03", morning, "12"),
            ("04", morning, "05"),
            ("4", morning, "5"),
            ("05", morning, "09"),
            ("5", morning, "9"),
            ("PM", t, "PM"),
            ("PM", morning, "AM"),
            ("pm", t, "pm"),
            ("pm", morning, "am"),
            ("Mon", t, "Sat"),
            ("Monday", t, "Saturday"),
            ("Monday", morning, "Wednesday"),
            ("MST", t, "UTC"),
            ("-0700", t, "+0000"),
            ("-07:00", t, "+00:00"),
            ("-07", t, "+00"),
            ("-070000", t, "+000000"),
            ("-07:00:00", t, "+00:00:00"),
            ("Z07:00", t, "Z"),
            ("Z0700", t, "Z"),
            ("Z07", t, "Z"),
            ("Z070000", t, "Z"),
            ("Z07:00:00", t, "Z"),
            (".000", t, ".012"),
            (".000000", t, ".012340"),
            (".000000000", t, ".012340000"),
            (".999", t, ".012"),
            (".999999999", t, ".01234"),
            (".999", morning, ""),
            (".000", morning, ".000"),
            (",000", t, ",012"),
            ("002", t, "332"),
            ("002", morning, "063"),
            ("__2", morning, " 63"),
            ("2006-01-02_15-04-05", t, "2026-11-28_20-50-07"),
            ("20060102-150405", t, "20261128-205007"),
            ("Jan _2 15:04:05.000", morning, "Mar  4 00:05:09.000"),
            ("2006-01-02T15:04:05Z07:00", t, "2026-11-28T20:50:07Z"),
            ("3:04PM", t, "8:50PM"),
            // Go's special cases.
            ("_2006", t, "_2026"),
            ("Janx", t, "Janx"),
            ("JanX", t, "NovX"),
            ("Month", t, "Month"),
            ("Mon.", t, "Sat."),
            ("MSTx", t, "UTCx"),
            (".0001", t, ".0011"),
            (".5", t, ".7"),
            ("x.y", t, "x.y"),
            ("07", t, "07"),
            ("0", t, "0"),
            ("6", t, "6"),
            ("7", t, "7"),
            ("9", t, "9"),
            ("P", t, "P"),
            ("Z", t, "Z"),
            ("-", t, "-"),
            ("snap-", t, "snap-"),
            ("", t, ""),
            ("é2006ü", t, "é2026ü"),
        ];
        for (l, t, want) in cases {
            assert_eq!(layout(l, *t), *want, "layout {l:?}");
        }
    }

    #[test]
    fn seed_pattern_renders_verbatim() {
        let p = SnapshotPattern::parse(
            "rockylinux-test-9{{ creation_date|date:'2006-01-02_15-04-05' }}",
        )
        .unwrap();
        assert_eq!(p.render(sample()), "rockylinux-test-92026-11-28_20-50-07");
        assert!(!p.has_counter());
        assert_eq!(
            p.next_name(sample(), &["rockylinux-test-92026-11-28_20-50-06"]),
            Some("rockylinux-test-92026-11-28_20-50-07".to_owned())
        );
        assert_eq!(
            p.next_name(sample(), &["rockylinux-test-92026-11-28_20-50-07"]),
            None
        );
    }

    #[test]
    fn default_pattern() {
        let p = SnapshotPattern::parse(DEFAULT_PATTERN).unwrap();
        assert_eq!(p, SnapshotPattern::default());
        assert_eq!(p.render(sample()), "auto-20261128-205007");
        assert!(p.render(sample()).starts_with(MANAGED_PREFIX));
        assert_eq!(p.to_string(), DEFAULT_PATTERN);
        assert_eq!(p.as_str(), DEFAULT_PATTERN);
        let a = p.render(at(2026, 1, 2, 3, 4, 5, 0));
        let b = p.render(at(2026, 10, 2, 3, 4, 5, 0));
        assert!(a < b, "sortable");
    }

    #[test]
    fn syntax_variants() {
        let t = sample();
        let cases: &[(&str, &str)] = &[
            ("a{{creation_date|date:'2006'}}", "a2026"),
            ("a{{ creation_date|date:'2006' }}", "a2026"),
            ("a{{  creation_date | date : '2006'  }}", "a2026"),
            ("a{{\tcreation_date|date:\"2006\"\r}}", "a2026"),
            ("a{{ creation_date|date:\"2006\" }}", "a2026"),
            ("a{{- creation_date|date:'2006' -}}", "a2026"),
            (
                "a{{ creation_date|date:'2006' }}b{{ creation_date|date:'01' }}",
                "a2026b11",
            ),
            ("snap%d", "snap%d"),
            ("%dx", "%dx"),
            ("a{{ creation_date|date:'2006' }}-%d", "a2026-%d"),
            ("a}}b", "a}}b"),
            ("a{b}c", "a{b}c"),
            ("a{{ creation_date|date:'2006\\\\' }}1", "a2026\\1"),
            ("plain-name", "plain-name"),
            ("x:y.z_1", "x:y.z_1"),
            ("snapshot-é1", "snapshot-é1"),
        ];
        for (pattern, want) in cases {
            let p = SnapshotPattern::parse(pattern)
                .unwrap_or_else(|e| panic!("{pattern:?} refused: {e}"));
            assert_eq!(p.render(t), *want, "{pattern:?}");
            assert_eq!(p.as_str(), *pattern);
            assert_eq!(pattern.parse::<SnapshotPattern>().unwrap(), p);
        }
    }

    #[test]
    fn errors() {
        use PatternError as E;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::EmptyPattern)),
            ("a{{ creation_date|date:'2006'", |e| {
                matches!(e, E::Unterminated { .. })
            }),
            ("a{{ creation_date|date:'2006", |e| {
                matches!(e, E::Unterminated { .. })
            }),
            ("a{{", |e| matches!(e, E::Unterminated { .. })),
            ("a{{ creation_date", |e| matches!(e, E::Unterminated { .. })),
            ("a{{ creation_date|", |e| {
                matches!(e, E::Unterminated { .. })
            }),
            ("a{{ creation_date|date", |e| {
                matches!(e, E::Unterminated { .. })
            }),
            ("a{{ creation_date|date:", |e| {
                matches!(e, E::Unterminated { .. })
            }),
            (
                "x{{ foo }}",
                |e| matches!(e, E::UnknownVariable { name, .. } if name == "foo"),
            ),
            ("x{{ now|date:'2006' }}", |e| {
                matches!(e, E::UnknownVariable { .. })
            }),
            (
                "x{{ creation_date|upper }}",
                |e| matches!(e, E::UnknownFilter { name, .. } if name == "upper"),
            ),
            ("x{{ creation_date|date:'2006'|lower }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{ creation_date }}", |e| {
                matches!(e, E::MissingDateFilter { .. })
            }),
            ("x{{ creation_date|date }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{ creation_date|date:2006 }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{ creation_date|date:'2006\\'' }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{ creation_date|date:'20\n06' }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{\ncreation_date|date:'2006' }}", |e| {
                matches!(e, E::Syntax { .. })
            }),
            ("x{{ 'lit' }}", |e| matches!(e, E::Syntax { .. })),
            (
                "x{% if 1 %}y{% endif %}",
                |e| matches!(e, E::Unsupported { construct, .. } if construct == "{%"),
            ),
            ("x{# note #}y", |e| matches!(e, E::Unsupported { .. })),
            ("snap%d-%d", |e| {
                matches!(e, E::MultipleCounters { count: 2, .. })
            }),
            ("snap%d0", |e| matches!(e, E::CounterFollowedByDigit { .. })),
            ("snap%d{{ creation_date|date:'2006' }}", |e| {
                matches!(e, E::CounterFollowedByDigit { .. })
            }),
            ("a/b", |e| matches!(e, E::RefusedChar { ch: '/', .. })),
            ("a b", |e| matches!(e, E::RefusedChar { ch: ' ', .. })),
            ("a\tb", |e| matches!(e, E::RefusedChar { ch: '\t', .. })),
            ("a?b", |e| matches!(e, E::RefusedChar { ch: '?', .. })),
            ("a&b", |e| matches!(e, E::RefusedChar { ch: '&', .. })),
            ("a+b", |e| matches!(e, E::RefusedChar { ch: '+', .. })),
            ("50%off", |e| matches!(e, E::RefusedChar { ch: '%', .. })),
            ("a%%d", |e| matches!(e, E::RefusedChar { ch: '%', .. })),
            ("a$b", |e| matches!(e, E::RefusedChar { ch: '$', .. })),
            ("a*b", |e| matches!(e, E::RefusedChar { ch: '*', .. })),
            ("a'b", |e| matches!(e, E::RefusedChar { ch: '\'', .. })),
            ("a\"b", |e| matches!(e, E::RefusedChar { ch: '"', .. })),
            ("a`b", |e| matches!(e, E::RefusedChar { ch: '`', .. })),
            ("a\u{1}b", |e| matches!(e, E::RefusedChar { .. })),
            ("a\u{a0}b", |e| matches!(e, E::RefusedChar { .. })),
            ("a{{ creation_date|date:'2006/01' }}", |e| {
                matches!(e, E::RefusedChar { ch: '/', .. })
            }),
            ("a{{ creation_date|date:'2006 01' }}", |e| {
                matches!(e, E::RefusedChar { ch: ' ', .. })
            }),
            ("a{{ creation_date|date:'%d' }}", |e| {
                matches!(e, E::RefusedChar { ch: '%', .. })
            }),
            ("a{{ creation_date|date:'Jan _2' }}", |e| {
                matches!(e, E::RefusedChar { ch: ' ', .. })
            }),
            (
                "a{{ creation_date|date:'Jan_2' }}",
                |e| matches!(e, E::RefusedLayoutToken { token, .. } if token == "_2"),
            ),
            (
                "a{{ creation_date|date:'__2' }}",
                |e| matches!(e, E::RefusedLayoutToken { token, .. } if token == "__2"),
            ),
            (
                "a{{ creation_date|date:'15-0700' }}",
                |e| matches!(e, E::RefusedLayoutToken { token, .. } if token == "-0700"),
            ),
            ("a{{ creation_date|date:'15-07:00' }}", |e| {
                matches!(e, E::RefusedLayoutToken { .. })
            }),
            ("{{ creation_date|date:'' }}", |e| {
                matches!(e, E::RendersEmpty { .. })
            }),
            ("-snap", |e| matches!(e, E::BadEdges { .. })),
            ("snap-", |e| matches!(e, E::BadEdges { .. })),
            ("snap.", |e| matches!(e, E::BadEdges { .. })),
            ("..", |e| matches!(e, E::BadEdges { .. })),
            ("a", |e| matches!(e, E::BadEdges { .. })),
            ("snap-{{ creation_date|date:'.999' }}", |e| {
                matches!(e, E::BadEdges { .. })
            }),
            ("{{ creation_date|date:'.000' }}x", |e| {
                matches!(e, E::BadEdges { .. })
            }),
            ("_{{ creation_date|date:'2006' }}", |e| {
                matches!(e, E::BadEdges { .. })
            }),
        ];
        for (pattern, check) in cases {
            match SnapshotPattern::parse(pattern) {
                Ok(_) => panic!("{pattern:?} accepted"),
                Err(e) => {
                    assert!(check(&e), "{pattern:?}: unexpected {e:?}");
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "{pattern:?}: multi-line {msg:?}");
                }
            }
        }
    }

    #[test]
    fn too_long() {
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(SnapshotPattern::parse(&ok).is_ok());
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            SnapshotPattern::parse(&long),
            Err(PatternError::TooLong { len: 65, .. })
        ));
        // "September"/"Wednesday" are the longest names: counted at their longest.
        let p = format!("{}{{{{ creation_date|date:'January' }}}}", "a".repeat(55));
        assert!(SnapshotPattern::parse(&p).is_ok());
        let p = format!("{}{{{{ creation_date|date:'January' }}}}", "a".repeat(56));
        assert!(matches!(
            SnapshotPattern::parse(&p),
            Err(PatternError::TooLong { len: 65, .. })
        ));
    }

    #[test]
    fn messages() {
        let e = SnapshotPattern::parse("x{{ foo }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pattern \"x{{ foo }}\": unknown variable \"foo\"; only creation_date is supported, as in {{ creation_date|date:'2006-01-02' }}"
        );
        let e = SnapshotPattern::parse("50%off").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pattern \"50%off\": the character '%'")
        );
        let e = SnapshotPattern::parse("a{{ creation_date|date:'2006'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pattern \"a{{ creation_date|date:'2006'\": \"{{\" is never closed by \"}}\"; write the date as {{ creation_date|date:'2006-01-02' }}"
        );
        let e = SnapshotPattern::parse("a%db%d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pattern \"a%db%d\": %d appears 2 times; Incus allows the counter only once"
        );
    }

    #[test]
    fn counter_numbering_like_incus() {
        let p = SnapshotPattern::parse("snap%d").unwrap();
        let t = sample();
        assert!(p.has_counter());
        let cases: &[(&[&str], &str)] = &[
            (&[], "snap0"),
            (&["other"], "snap0"),
            (&["snap0"], "snap1"),
            (&["snap0", "snap1", "snap2"], "snap3"),
            (&["snap5"], "snap6"),
            (&["snap1", "snap0"], "snap2"),
            (&["snap07"], "snap8"),
            (&["snap+3"], "snap4"),
            (&["snap-3"], "snap0"),
            (&["snap-0"], "snap1"),
            (&["snap 4"], "snap5"),
            (&["snap\n4"], "snap0"),
            (&["snap4-old"], "snap5"),
            (&["snap4x", "snap2"], "snap5"),
            (&["snapx"], "snap0"),
            (&["snap"], "snap0"),
            (&["Snap9"], "snap0"),
            (&["snap99999999999999999999"], "snap0"),
            (&["snap9223372036854775806"], "snap9223372036854775807"),
        ];
        for (existing, want) in cases {
            assert_eq!(
                p.next_name(t, existing).as_deref(),
                Some(*want),
                "{existing:?}"
            );
        }
        assert_eq!(p.next_name(t, &["snap9223372036854775807"]), None);
    }

    #[test]
    fn counter_with_suffix_and_date() {
        let p = SnapshotPattern::parse("d{{ creation_date|date:'20060102' }}-%d-x").unwrap();
        let t = sample();
        assert_eq!(p.render(t), "d20261128-%d-x");
        assert_eq!(p.next_name(t, &[]).as_deref(), Some("d20261128-0-x"));
        assert_eq!(
            p.next_name(t, &["d20261128-0-x", "d20261128-4-xy", "d20261128-9-"])
                .as_deref(),
            Some("d20261128-5-x")
        );
        // Another day's snapshots do not count.
        assert_eq!(
            p.next_name(t, &["d20261127-7-x"]).as_deref(),
            Some("d20261128-0-x")
        );
        let p = SnapshotPattern::parse("%d-snap").unwrap();
        assert_eq!(
            p.next_name(t, &["3-snap", "x-snap"]).as_deref(),
            Some("4-snap")
        );
    }

    #[test]
    fn without_counter() {
        let p = SnapshotPattern::parse("nightly").unwrap();
        assert_eq!(p.next_name(sample(), &[]).as_deref(), Some("nightly"));
        assert_eq!(p.next_name(sample(), &["nightly"]), None);
        assert_eq!(
            p.next_name(sample(), &["nightly-0"]).as_deref(),
            Some("nightly")
        );
    }

    #[test]
    fn incus_sscanf_port() {
        assert_eq!(incus_counter("snap12", "snap", ""), Some(12));
        assert_eq!(incus_counter("snap\t12", "snap", ""), Some(12));
        assert_eq!(incus_counter("snap\r\n12", "snap", ""), None);
        assert_eq!(incus_counter("snap", "snap", ""), None);
        assert_eq!(incus_counter("snap+", "snap", ""), None);
        assert_eq!(incus_counter("snap-12", "snap", ""), Some(-12));
        assert_eq!(incus_counter("snap12-a", "snap", "-a"), Some(12));
        assert_eq!(incus_counter("snap12-b", "snap", "-a"), None);
        assert_eq!(incus_counter("snap12-", "snap", "-a"), None);
        assert_eq!(incus_counter("snap1_000", "snap", ""), Some(1));
    }

    #[test]
    fn snapshot_names() {
        for ok in [
            "snap0",
            "auto-20261128-205000",
            "my.snap_1:2",
            "ab",
            "a-é-b",
            "a#b",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(validate_snapshot_name(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "", "a/b", "a b", "a\tb", "a?b", "a&b", "a+b", "50%off", "a$b", "a*b", "a'b", "a\"b",
            "a`b", "-ab", "ab-", "a", ".", "..", "é1", "a\u{0}b",
        ] {
            let e = validate_snapshot_name(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'));
        }
        assert!(matches!(
            validate_snapshot_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(PatternError::TooLong { len: 65, .. })
        ));
        assert_eq!(
            validate_snapshot_name("a/b").unwrap_err().to_string(),
            "snapshot name \"a/b\": the character '/' separates instance and snapshot names, Incus refuses it; use letters, digits, '-', '_', '.' or ':' instead"
        );
    }

    /// Layout fragments: every Go token plus harmless and harmful literal text.
    fn layout_fragment() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "2006",
            "06",
            "01",
            "1",
            "Jan",
            "January",
            "02",
            "2",
            "_2",
            "__2",
            "002",
            "15",
            "03",
            "3",
            "04",
            "4",
            "05",
            "5",
            "PM",
            "pm",
            "Mon",
            "Monday",
            "MST",
            "-0700",
            "-07:00",
            "-07",
            "Z07:00",
            "Z0700",
            "Z07",
            ".000",
            ".000000",
            ".000000000",
            ".999",
            ",000",
            "-",
            "_",
            ".",
            ":",
            "T",
            "x",
            "0",
            "7",
            "9",
            " ",
            "/",
            "+",
            "?",
            "&",
            "%",
            "$",
            "Janx",
            "Month",
            "é",
        ])
        .prop_map(str::to_owned)
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..7_258_118_400, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
    }

    proptest! {
        #[test]
        fn rendered_names_are_always_acceptable(
            prefix in "[a-z][a-z0-9._:-]{0,6}",
            fragments in prop::collection::vec(layout_fragment(), 0..6),
            counter in any::<bool>(),
            t in instant(),
        ) {
            let mut source = format!("{prefix}{{{{ creation_date|date:'{}' }}}}", fragments.concat());
            if counter {
                source.push_str("-%d");
            }
            if let Ok(p) = SnapshotPattern::parse(&source) {
                let rendered = p.render(t);
                let name = rendered.replacen(COUNTER, "12", 1);
                prop_assert!(
                    !name.chars().any(|c| refusal(c).is_some()),
                    "{source:?} rendered {name:?}"
                );
                prop_assert!(good_edges(&name), "{source:?} rendered {name:?}");
                prop_assert!(name.len() <= p.max_len() + 1, "{source:?} rendered {name:?}");
                prop_assert!(validate_snapshot_name(&rendered.replacen(COUNTER, "0", 1)).is_ok());
            }
        }

        #[test]
        fn next_name_is_never_existing(
            pattern in prop::sample::select(vec![
                "snap%d", "%d-a", "a-%d-b", "nightly", "auto-%d.x",
                "auto-{{ creation_date|date:'20060102-150405' }}",
                "s{{ creation_date|date:'2006' }}-%d",
            ]),
            existing in prop::collection::vec(
                prop::string::string_regex("(snap|a-|auto-|nightly|s2026-)?[+-]?[0-9]{0,3}(-b|-a|\\.x)?").unwrap(),
                0..12,
            ),
            t in instant(),
        ) {
            let p = SnapshotPattern::parse(pattern).unwrap();
            let refs: Vec<&str> = existing.iter().map(String::as_str).collect();
            match p.next_name(t, &refs) {
                Some(name) => {
                    prop_assert!(!refs.contains(&name.as_str()), "{name:?} in {refs:?}");
                    prop_assert!(validate_snapshot_name(&name).is_ok(), "{name:?}");
                }
                None => prop_assert!(!p.has_counter() && refs.contains(&p.render(t).as_str())),
            }
        }

        #[test]
        fn layout_parse_never_panics(layout in "\\PC{0,20}", t in instant()) {
            let mut out = String::new();
            format_layout(&mut out, &parse_layout(&layout), t);
            let _ = SnapshotPattern::parse(&layout);
            let _ = SnapshotPattern::parse(&format!("a{{{{ creation_date|date:'{layout}' }}}}"));
        }
    }
}
