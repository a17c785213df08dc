//! Retention policy: which snapshots to keep, with restic's `forget` semantics.
//!
//! [`decide`] is a pure function: it takes the snapshots of one instance and a
//! set of [`Rules`], and returns one [`Decision`] per snapshot, newest first,
//! listing every rule that keeps it. A snapshot with no reason is to be
//! deleted. Protections (the replication anchor, an unreachable replica)
//! are applied by the caller, not here.
//!
//! # Semantics
//!
//! * Snapshots are sorted newest first by `created_at`; snapshots with the same
//!   `created_at` are ordered by name, the greater name counting as the newer
//!   one. The result therefore never depends on the input order.
//! * `keep-last N` keeps the `N` newest snapshots.
//! * `keep-hourly N`, `keep-daily N`, `keep-weekly N`, `keep-monthly N` and
//!   `keep-yearly N` each walk the sorted list and keep a snapshot whenever its
//!   period (hour, day, ISO 8601 week, month or year of `created_at`, in UTC)
//!   differs from the period of the last snapshot kept by the same rule, until
//!   `N` snapshots were kept by that rule. That is: the newest snapshot of
//!   each of the `N` newest periods that contain a snapshot. Periods without
//!   snapshots are skipped, they do not consume the count.
//! * `keep-within` keeps every snapshot whose `created_at` is at or after the
//!   cutoff. The caller computes the cutoff from the newest snapshot's time
//!   (not from the current time), so that when snapshots stop being taken the
//!   history is not deleted. As in restic, that is the newest snapshot *not in
//!   the future* ([`newest_not_after`]): a snapshot dated ahead by a wrong clock
//!   does not move the cutoff. The caller never deletes future-dated snapshots
//!   and leaves them out of [`decide`].
//! * A count of `0` disables the rule. A snapshot is kept if any rule keeps it.
//!
//! # Worked example
//!
//! Twelve snapshots over three ISO weeks, with
//! `--keep-daily 3 --keep-weekly 2 --keep-last 2`:
//!
//! | #  | Snapshot             | Created (UTC)    | Kept | Reasons                                                       |
//! |----|----------------------|------------------|------|---------------------------------------------------------------|
//! | 1  | auto-20261128-1400   | 2026-11-28 14:00 | yes  | keep-last #1, keep-daily 2026-11-28, keep-weekly 2026-W48     |
//! | 2  | auto-20261128-0200   | 2026-11-28 02:00 | yes  | keep-last #2                                                  |
//! | 3  | auto-20261126-0200   | 2026-11-26 02:00 | yes  | keep-daily 2026-11-26                                         |
//! | 4  | auto-20261123-0200   | 2026-11-23 02:00 | yes  | keep-daily 2026-11-23                                         |
//! | 5  | auto-20261122-0200   | 2026-11-22 02:00 | yes  | keep-weekly 2026-W47                                          |
//! | 6  | auto-20261121-0200   | 2026-11-21 02:00 | no   |                                                               |
//! | 7  | auto-20261119-0200   | 2026-11-19 02:00 | no   |                                                               |
//! | 8  | auto-20261117-0200   | 2026-11-17 02:00 | no   |                                                               |
//! | 9  | auto-20261115-0200   | 2026-11-15 02:00 | no   |                                                               |
//! | 10 | auto-20261113-0200   | 2026-11-13 02:00 | no   |                                                               |
//! | 11 | auto-20261111-0200   | 2026-11-11 02:00 | no   |                                                               |
//! | 12 | auto-20261109-0200   | 2026-11-09 02:00 | no   |                                                               |
//!
//! `keep-weekly 2` keeps the newest snapshot of week 48 (also kept by the
//! daily and last rules) and the newest of week 47; week 46 is beyond the
//! count. Snapshot 2 is kept only because of `keep-last 2`: it shares its day
//! with snapshot 1.
//!
//! # Differences from restic
//!
//! * Since restic 0.16.0, a bucket rule whose count is not used up also keeps
//!   the oldest snapshot. This module does not: a bucket rule keeps exactly
//!   `min(N, number of distinct periods)` snapshots, as restic up to 0.15 did.
//! * Periods are computed in UTC. restic uses each snapshot's own local time
//!   (the time zone recorded with it), so around midnight and across DST
//!   changes the two can put a snapshot in different days or hours.
//! * restic keeps snapshots strictly newer than its cutoff; here the cutoff is
//!   inclusive (`>=`).
//! * restic's "unlimited" count (`-1`) is not supported; counts are `u32`.
//! * restic keeps everything when the policy is empty; [`decide`] keeps
//!   nothing, and the caller must refuse to run when [`Rules::is_empty`].

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

/// A snapshot that may be deleted: its name and its creation time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Candidate {
    /// Snapshot name, unique within the instance.
    pub name: String,
    /// Creation time; periods are computed from it in UTC.
    pub created_at: DateTime<Utc>,
}

/// The retention rules, mirroring restic's `--keep-*` options.
///
/// `None` and `Some(0)` both mean "rule not set".
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `--keep-last N`: keep the `N` newest snapshots.
    pub last: Option<u32>,
    /// `--keep-hourly N`: keep the newest snapshot of each of the `N` newest hours.
    pub hourly: Option<u32>,
    /// `--keep-daily N`: keep the newest snapshot of each of the `N` newest days.
    pub daily: Option<u32>,
    /// `--keep-weekly N`: keep the newest snapshot of each of the `N` newest ISO weeks.
    pub weekly: Option<u32>,
    /// `--keep-monthly N`: keep the newest snapshot of each of the `N` newest months.
    pub monthly: Option<u32>,
    /// `--keep-yearly N`: keep the newest snapshot of each of the `N` newest years.
    pub yearly: Option<u32>,
    /// `--keep-within D`: keep every snapshot created at or after this time.
    ///
    /// The caller computes it as the newest snapshot's time minus `D`.
    pub within_cutoff: Option<DateTime<Utc>>,
}

impl Rules {
    /// Whether no rule is set (every count is `None` or `0`, and there is no
    /// cutoff). With empty rules [`decide`] keeps nothing, so the caller must
    /// refuse to run.
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(|count| count.unwrap_or(0) == 0)
            && self.within_cutoff.is_none()
    }
}

/// A retention rule, as named in a [`Reason`].
///
/// Serialized in kebab-case (`"last"`, `"hourly"`, …, `"within"`). The order
/// of the variants is the order in which a decision lists its reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `--keep-last`
    Last,
    /// `--keep-hourly`
    Hourly,
    /// `--keep-daily`
    Daily,
    /// `--keep-weekly`
    Weekly,
    /// `--keep-monthly`
    Monthly,
    /// `--keep-yearly`
    Yearly,
    /// `--keep-within`
    Within,
}

impl Rule {
    /// The command-line option of this rule, e.g. `keep-daily`.
    pub fn option_name(self) -> &'static str {
        match self {
            Rule::Last => "keep-last",
            Rule::Hourly => "keep-hourly",
            Rule::Daily => "keep-daily",
            Rule::Weekly => "keep-weekly",
            Rule::Monthly => "keep-monthly",
            Rule::Yearly => "keep-yearly",
            Rule::Within => "keep-within",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.option_name())
    }
}

/// Why a snapshot is kept: the rule and the period it was kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Reason {
    /// The rule that keeps the snapshot.
    pub rule: Rule,
    /// The period, in UTC: `2026-11-28T20` (hourly), `2026-11-28` (daily),
    /// `2026-W48` (weekly, ISO 8601 week-numbering year and week),
    /// `2026-11` (monthly), `2026` (yearly), `#3` (last: rank among the
    /// newest, from 1) or `>= 2026-11-21T00:00:00Z` (within).
    pub period: String,
}

impl fmt::Display for Reason {
    /// Formats as `keep-daily 2026-11-28`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rule, self.period)
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Decision {
    /// Snapshot name, from the [`Candidate`].
    pub name: String,
    /// Creation time, from the [`Candidate`].
    pub created_at: DateTime<Utc>,
    /// Every rule that keeps the snapshot, in [`Rule`] order; empty if the
    /// snapshot is to be deleted.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// Whether the snapshot is kept, i.e. some rule keeps it.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The calendar period of a bucket rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// A key identifying the period that contains `t`; equal keys mean the
    /// same period.
    fn key(self, t: &DateTime<Utc>) -> i64 {
        match self {
            Period::Hour => t.timestamp().div_euclid(3_600),
            Period::Day => t.timestamp().div_euclid(86_400),
            Period::Week => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Period::Month => i64::from(t.year()) * 12 + i64::from(t.month0()),
            Period::Year => i64::from(t.year()),
        }
    }

    /// The human-readable name of the period that contains `t`.
    fn label(self, t: &DateTime<Utc>) -> String {
        match self {
            Period::Hour => format!(
                "{:04}-{:02}-{:02}T{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            Period::Day => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Period::Week => {
                let week = t.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            Period::Month => format!("{:04}-{:02}", t.year(), t.month()),
            Period::Year => format!("{:04}", t.year()),
        }
    }
}

/// Applies `rules` to `candidates` and returns one decision per candidate,
/// newest first (ties in `created_at` broken by name, greater name first).
///
/// A snapshot is kept ([`Decision::keep`]) if any rule keeps it, and its
/// reasons list every rule that keeps it. See the [module
/// documentation](self) for the semantics of each rule. With empty
/// [`Rules`] nothing is kept.
pub fn decide(candidates: &[Candidate], rules: &Rules) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_unstable_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    let mut decisions: Vec<Decision> = sorted
        .into_iter()
        .map(|c| Decision {
            name: c.name.clone(),
            created_at: c.created_at,
            reasons: Vec::new(),
        })
        .collect();

    if let Some(n) = rules.last {
        for (rank, decision) in decisions.iter_mut().take(count(n)).enumerate() {
            decision.reasons.push(Reason {
                rule: Rule::Last,
                period: format!("#{}", rank + 1),
            });
        }
    }

    let buckets = [
        (Rule::Hourly, rules.hourly, Period::Hour),
        (Rule::Daily, rules.daily, Period::Day),
        (Rule::Weekly, rules.weekly, Period::Week),
        (Rule::Monthly, rules.monthly, Period::Month),
        (Rule::Yearly, rules.yearly, Period::Year),
    ];
    for (rule, n, period) in buckets {
        if let Some(n) = n {
            keep_buckets(&mut decisions, rule, count(n), period);
        }
    }

    if let Some(cutoff) = rules.within_cutoff {
        let period = format!(
            ">= {}",
            cutoff.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        for decision in decisions.iter_mut() {
            if decision.created_at < cutoff {
                // Sorted newest first: every later snapshot is older too.
                break;
            }
            decision.reasons.push(Reason {
                rule: Rule::Within,
                period: period.clone(),
            });
        }
    }

    decisions
}

/// The creation time of the newest candidate not after `now`: the reference
/// for `--keep-within` (restic ignores snapshots from the future there).
pub fn newest_not_after(candidates: &[Candidate], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    candidates
        .iter()
        .map(|c| c.created_at)
        .filter(|t| *t <= now)
        .max()
}

/// Converts a rule count to a length, saturating on 16-bit targets.
fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One bucket rule: walk `decisions` (newest first) and keep each snapshot
/// whose period differs from that of the last snapshot kept by this rule,
/// until `n` were kept.
fn keep_buckets(decisions: &mut [Decision], rule: Rule, n: usize, period: Period) {
    let mut remaining = n;
    let mut last_key = None;
    for decision in decisions.iter_mut() {
        if remaining == 0 {
            break;
        }
        let key = period.key(&decision.created_at);
        if last_key != Some(key) {
            last_key = Some(key);
            remaining -= 1;
            decision.reasons.push(Reason {
                rule,
                period: period.label(&decision.created_at),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    /// Parses `YYYY-MM-DD HH:MM[:SS]` as UTC.
    fn ts(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
            .expect("valid test timestamp")
            .and_utc()
    }

    fn candidates(snaps: &[(&str, &str)]) -> Vec<Candidate> {
        snaps
            .iter()
            .map(|(name, at)| Candidate {
                name: (*name).to_owned(),
                created_at: ts(at),
            })
            .collect()
    }

    #[test]
    fn the_within_reference_ignores_snapshots_from_the_future() {
        let snaps = candidates(&[
            ("a", "2026-11-01 00:00"),
            ("b", "2026-11-20 00:00"),
            ("wrong-clock", "2031-01-01 00:00"),
        ]);
        let now = ts("2026-11-30 12:00");
        assert_eq!(newest_not_after(&snaps, now), Some(ts("2026-11-20 00:00")));
        assert_eq!(newest_not_after(&snaps[2..], now), None);
        assert_eq!(
            newest_not_after(&snaps, ts("2026-11-20 00:00")),
            Some(ts("2026-11-20 00:00")),
            "a snapshot taken exactly now counts"
        );
    }

    /// Kept snapshots, newest first, each with its reasons as displayed.
    fn kept(decisions: &[Decision]) -> Vec<(String, Vec<String>)> {
        decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| {
                let reasons = d.reasons.iter().map(ToString::to_string).collect();
                (d.name.clone(), reasons)
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        snaps: &'static [(&'static str, &'static str)],
        rules: Rules,
        /// Kept snapshots newest first, with their reasons; all others are deleted.
        kept: &'static [(&'static str, &'static [&'static str])],
    }

    fn check(case: &Case) {
        let input = candidates(case.snaps);
        let decisions = decide(&input, &case.rules);
        assert_eq!(
            decisions.len(),
            input.len(),
            "{}: one decision each",
            case.name
        );
        for pair in decisions.windows(2) {
            assert!(
                (pair[0].created_at, &pair[0].name) >= (pair[1].created_at, &pair[1].name),
                "{}: newest first",
                case.name
            );
        }
        let expected: Vec<(String, Vec<String>)> = case
            .kept
            .iter()
            .map(|(name, reasons)| {
                let reasons = reasons.iter().map(|r| (*r).to_owned()).collect();
                ((*name).to_owned(), reasons)
            })
            .collect();
        assert_eq!(kept(&decisions), expected, "case {}", case.name);
        // Same result for the input reversed.
        let mut reversed = input.clone();
        reversed.reverse();
        assert_eq!(
            decide(&reversed, &case.rules),
            decisions,
            "{}: reversed",
            case.name
        );
    }

    const FIVE_DAYS: &[(&str, &str)] = &[
        ("d1", "2026-03-01 06:00"),
        ("d2", "2026-03-02 06:00"),
        ("d3", "2026-03-03 06:00"),
        ("d4", "2026-03-04 06:00"),
        ("d5", "2026-03-05 06:00"),
    ];

    /// 2026-12-31 is a Thursday: 2026 has an ISO week 53, which also contains
    /// 2027-01-01..03. 2025-12-29 (Monday) is already in 2026-W01.
    const NEW_YEAR: &[(&str, &str)] = &[
        ("w01-2026", "2025-12-29 12:00"),
        ("w52", "2026-12-27 12:00"),
        ("w53-mon", "2026-12-28 12:00"),
        ("w53-thu", "2026-12-31 23:59:59"),
        ("w53-fri", "2027-01-01 00:00"),
        ("w01-2027", "2027-01-04 00:00"),
    ];

    #[test]
    fn table() {
        let cases = [
            Case {
                name: "empty input",
                snaps: &[],
                rules: Rules {
                    last: Some(3),
                    daily: Some(3),
                    within_cutoff: Some(ts("2026-01-01 00:00")),
                    ..Rules::default()
                },
                kept: &[],
            },
            Case {
                name: "no rules keeps nothing",
                snaps: FIVE_DAYS,
                rules: Rules::default(),
                kept: &[],
            },
            Case {
                name: "all counts zero keeps nothing",
                snaps: FIVE_DAYS,
                rules: Rules {
                    last: Some(0),
                    hourly: Some(0),
                    daily: Some(0),
                    weekly: Some(0),
                    monthly: Some(0),
                    yearly: Some(0),
                    within_cutoff: None,
                },
                kept: &[],
            },
            Case {
                name: "last 3",
                snaps: FIVE_DAYS,
                rules: Rules {
                    last: Some(3),
                    ..Rules::default()
                },
                kept: &[
                    ("d5", &["keep-last #1"]),
                    ("d4", &["keep-last #2"]),
                    ("d3", &["keep-last #3"]),
                ],
            },
            Case {
                name: "last more than there are",
                snaps: &[("a", "2026-03-01 06:00"), ("b", "2026-03-01 07:00")],
                rules: Rules {
                    last: Some(10),
                    ..Rules::default()
                },
                kept: &[("b", &["keep-last #1"]), ("a", &["keep-last #2"])],
            },
            Case {
                name: "hourly 2 keeps the newest of each hour",
                snaps: &[
                    ("h10a", "2026-11-28 10:05"),
                    ("h10b", "2026-11-28 10:45"),
                    ("h11a", "2026-11-28 11:10"),
                    ("h11b", "2026-11-28 11:50"),
                    ("h12", "2026-11-28 12:30"),
                ],
                rules: Rules {
                    hourly: Some(2),
                    ..Rules::default()
                },
                kept: &[
                    ("h12", &["keep-hourly 2026-11-28T12"]),
                    ("h11b", &["keep-hourly 2026-11-28T11"]),
                ],
            },
            Case {
                name: "hourly across midnight",
                snaps: &[
                    ("before", "2026-11-28 23:59:59"),
                    ("after", "2026-11-29 00:00"),
                ],
                rules: Rules {
                    hourly: Some(5),
                    ..Rules::default()
                },
                kept: &[
                    ("after", &["keep-hourly 2026-11-29T00"]),
                    ("before", &["keep-hourly 2026-11-28T23"]),
                ],
            },
            Case {
                name: "daily skips days without snapshots",
                snaps: &[
                    ("d1a", "2026-03-01 01:00"),
                    ("d1b", "2026-03-01 23:00"),
                    ("d3", "2026-03-03 12:00"),
                    ("d5a", "2026-03-05 00:00"),
                    ("d5b", "2026-03-05 08:00"),
                ],
                rules: Rules {
                    daily: Some(2),
                    ..Rules::default()
                },
                kept: &[
                    ("d5b", &["keep-daily 2026-03-05"]),
                    ("d3", &["keep-daily 2026-03-03"]),
                ],
            },
            Case {
                name: "daily more than there are days",
                snaps: &[
                    ("d1a", "2026-03-01 01:00"),
                    ("d1b", "2026-03-01 23:00"),
                    ("d3", "2026-03-03 12:00"),
                ],
                rules: Rules {
                    daily: Some(30),
                    ..Rules::default()
                },
                kept: &[
                    ("d3", &["keep-daily 2026-03-03"]),
                    ("d1b", &["keep-daily 2026-03-01"]),
                ],
            },
            Case {
                name: "daily 0 keeps nothing",
                snaps: FIVE_DAYS,
                rules: Rules {
                    daily: Some(0),
                    ..Rules::default()
                },
                kept: &[],
            },
            Case {
                name: "weekly across the ISO year boundary",
                snaps: NEW_YEAR,
                rules: Rules {
                    weekly: Some(10),
                    ..Rules::default()
                },
                kept: &[
                    ("w01-2027", &["keep-weekly 2027-W01"]),
                    ("w53-fri", &["keep-weekly 2026-W53"]),
                    ("w52", &["keep-weekly 2026-W52"]),
                    ("w01-2026", &["keep-weekly 2026-W01"]),
                ],
            },
            Case {
                name: "weekly 2: week 53 spans the calendar years",
                snaps: NEW_YEAR,
                rules: Rules {
                    weekly: Some(2),
                    ..Rules::default()
                },
                kept: &[
                    ("w01-2027", &["keep-weekly 2027-W01"]),
                    ("w53-fri", &["keep-weekly 2026-W53"]),
                ],
            },
            Case {
                name: "daily, monthly and yearly across new year",
                snaps: NEW_YEAR,
                rules: Rules {
                    daily: Some(3),
                    monthly: Some(2),
                    yearly: Some(5),
                    ..Rules::default()
                },
                kept: &[
                    (
                        "w01-2027",
                        &[
                            "keep-daily 2027-01-04",
                            "keep-monthly 2027-01",
                            "keep-yearly 2027",
                        ],
                    ),
                    ("w53-fri", &["keep-daily 2027-01-01"]),
                    (
                        "w53-thu",
                        &[
                            "keep-daily 2026-12-31",
                            "keep-monthly 2026-12",
                            "keep-yearly 2026",
                        ],
                    ),
                    ("w01-2026", &["keep-yearly 2025"]),
                ],
            },
            Case {
                name: "monthly skips empty months",
                snaps: &[
                    ("jan", "2026-01-31 23:00"),
                    ("mar-a", "2026-03-01 00:00"),
                    ("mar-b", "2026-03-31 00:00"),
                    ("jun", "2026-06-15 00:00"),
                ],
                rules: Rules {
                    monthly: Some(3),
                    ..Rules::default()
                },
                kept: &[
                    ("jun", &["keep-monthly 2026-06"]),
                    ("mar-b", &["keep-monthly 2026-03"]),
                    ("jan", &["keep-monthly 2026-01"]),
                ],
            },
            Case {
                name: "yearly 1",
                snaps: NEW_YEAR,
                rules: Rules {
                    yearly: Some(1),
                    ..Rules::default()
                },
                kept: &[("w01-2027", &["keep-yearly 2027"])],
            },
            Case {
                name: "within: the cutoff is inclusive",
                snaps: &[
                    ("old", "2026-11-20 23:59:59"),
                    ("edge", "2026-11-21 00:00"),
                    ("new", "2026-11-28 00:00"),
                ],
                rules: Rules {
                    within_cutoff: Some(ts("2026-11-21 00:00")),
                    ..Rules::default()
                },
                kept: &[
                    ("new", &["keep-within >= 2026-11-21T00:00:00Z"]),
                    ("edge", &["keep-within >= 2026-11-21T00:00:00Z"]),
                ],
            },
            Case {
                name: "within: cutoff after every snapshot",
                snaps: FIVE_DAYS,
                rules: Rules {
                    within_cutoff: Some(ts("2026-03-06 00:00")),
                    ..Rules::default()
                },
                kept: &[],
            },
            Case {
                name: "ties: the greater name counts as newer",
                snaps: &[
                    ("a", "2026-03-01 06:00"),
                    ("c", "2026-03-01 06:00"),
                    ("b", "2026-03-01 06:00"),
                ],
                rules: Rules {
                    last: Some(1),
                    daily: Some(1),
                    ..Rules::default()
                },
                kept: &[("c", &["keep-last #1", "keep-daily 2026-03-01"])],
            },
            Case {
                name: "ties: keep-last 2 of three equal times",
                snaps: &[
                    ("b", "2026-03-01 06:00"),
                    ("a", "2026-03-01 06:00"),
                    ("c", "2026-03-01 06:00"),
                ],
                rules: Rules {
                    last: Some(2),
                    ..Rules::default()
                },
                kept: &[("c", &["keep-last #1"]), ("b", &["keep-last #2"])],
            },
            Case {
                name: "every rule at once, reasons in rule order",
                snaps: &[
                    ("old", "2025-06-01 00:00"),
                    ("mid", "2026-10-15 10:00"),
                    ("prev", "2026-11-28 19:30"),
                    ("newest", "2026-11-28 20:15"),
                ],
                rules: Rules {
                    last: Some(1),
                    hourly: Some(1),
                    daily: Some(1),
                    weekly: Some(1),
                    monthly: Some(2),
                    yearly: Some(2),
                    within_cutoff: Some(ts("2026-11-28 19:30")),
                },
                kept: &[
                    (
                        "newest",
                        &[
                            "keep-last #1",
                            "keep-hourly 2026-11-28T20",
                            "keep-daily 2026-11-28",
                            "keep-weekly 2026-W48",
                            "keep-monthly 2026-11",
                            "keep-yearly 2026",
                            "keep-within >= 2026-11-28T19:30:00Z",
                        ],
                    ),
                    ("prev", &["keep-within >= 2026-11-28T19:30:00Z"]),
                    ("mid", &["keep-monthly 2026-10"]),
                    ("old", &["keep-yearly 2025"]),
                ],
            },
        ];
        for case in &cases {
            check(case);
        }
    }

    const EXAMPLE: &[(&str, &str)] = &[
        ("auto-20261109-0200", "2026-11-09 02:00"),
        ("auto-20261111-0200", "2026-11-11 02:00"),
        ("auto-20261113-0200", "2026-11-13 02:00"),
        ("auto-20261115-0200", "2026-11-15 02:00"),
        ("auto-20261117-0200", "2026-11-17 02:00"),
        ("auto-20261119-0200", "2026-11-19 02:00"),
        ("auto-20261121-0200", "2026-11-21 02:00"),
        ("auto-20261122-0200", "2026-11-22 02:00"),
        ("auto-20261123-0200", "2026-11-23 02:00"),
        ("auto-20261126-0200", "2026-11-26 02:00"),
        ("auto-20261128-0200", "2026-11-28 02:00"),
        ("auto-20261128-1400", "2026-11-28 14:00"),
    ];

    fn example_rules() -> Rules {
        Rules {
            last: Some(2),
            daily: Some(3),
            weekly: Some(2),
            ..Rules::default()
        }
    }

    #[test]
    fn worked_example() {
        check(&Case {
            name: "worked example",
            snaps: EXAMPLE,
            rules: example_rules(),
            kept: &[
                (
                    "auto-20261128-1400",
                    &[
                        "keep-last #1",
                        "keep-daily 2026-11-28",
                        "keep-weekly 2026-W48",
                    ],
                ),
                ("auto-20261128-0200", &["keep-last #2"]),
                ("auto-20261126-0200", &["keep-daily 2026-11-26"]),
                ("auto-20261123-0200", &["keep-daily 2026-11-23"]),
                ("auto-20261122-0200", &["keep-weekly 2026-W47"]),
            ],
        });
    }

    /// The markdown table in the module documentation is the output of the
    /// worked example.
    #[test]
    fn worked_example_matches_module_doc() {
        let doc: Vec<&str> = include_str!("policy.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | "))
            .filter(|line| !line.starts_with('#') && !line.starts_with('-'))
            .collect();
        let decisions = decide(&candidates(EXAMPLE), &example_rules());
        assert_eq!(doc.len(), decisions.len());
        for (i, (row, d)) in doc.iter().zip(&decisions).enumerate() {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
            let expected = [
                (i + 1).to_string(),
                d.name.clone(),
                d.created_at.format("%Y-%m-%d %H:%M").to_string(),
                if d.keep() { "yes" } else { "no" }.to_owned(),
                reasons.join(", "),
            ];
            assert_eq!(&cells[..5], &expected[..], "row {}", i + 1);
        }
    }

    #[test]
    fn is_empty() {
        let cutoff = ts("2026-01-01 00:00");
        let table: [(Rules, bool); 9] = [
            (Rules::default(), true),
            (
                Rules {
                    last: Some(0),
                    hourly: Some(0),
                    daily: Some(0),
                    weekly: Some(0),
                    monthly: Some(0),
                    yearly: Some(0),
                    within_cutoff: None,
                },
                true,
            ),
            (
                Rules {
                    last: Some(1),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    hourly: Some(1),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    daily: Some(7),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    weekly: Some(4),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    monthly: Some(12),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    yearly: Some(u32::MAX),
                    ..Rules::default()
                },
                false,
            ),
            (
                Rules {
                    within_cutoff: Some(cutoff),
                    ..Rules::default()
                },
                false,
            ),
        ];
        for (rules, empty) in table {
            assert_eq!(rules.is_empty(), empty, "{rules:?}");
        }
    }

    #[test]
    fn display_and_serialization() {
        let reason = Reason {
            rule: Rule::Daily,
            period: "2026-11-28".to_owned(),
        };
        assert_eq!(reason.to_string(), "keep-daily 2026-11-28");
        let names = [
            (Rule::Last, "last", "keep-last"),
            (Rule::Hourly, "hourly", "keep-hourly"),
            (Rule::Daily, "daily", "keep-daily"),
            (Rule::Weekly, "weekly", "keep-weekly"),
            (Rule::Monthly, "monthly", "keep-monthly"),
            (Rule::Yearly, "yearly", "keep-yearly"),
            (Rule::Within, "within", "keep-within"),
        ];
        for (rule, json, option) in names {
            let serialized = serde_json::to_string(&rule).expect("serializable");
            assert_eq!(serialized, format!("\"{json}\""));
            assert_eq!(rule.to_string(), option);
        }
        let decision = Decision {
            name: "s".to_owned(),
            created_at: ts("2026-11-28 20:00"),
            reasons: vec![reason],
        };
        let value = serde_json::to_value(&decision).expect("serializable");
        assert_eq!(
            value,
            serde_json::json!({
                "name": "s",
                "created_at": "2026-11-28T20:00:00Z",
                "reasons": [{"rule": "daily", "period": "2026-11-28"}],
            })
        );
    }

    #[test]
    fn within_label_keeps_subseconds() {
        let cutoff = ts("2026-11-21 00:00") + chrono::Duration::milliseconds(250);
        let input = candidates(&[("a", "2026-11-22 00:00")]);
        let rules = Rules {
            within_cutoff: Some(cutoff),
            ..Rules::default()
        };
        let decisions = decide(&input, &rules);
        assert_eq!(
            decisions[0].reasons[0].to_string(),
            "keep-within >= 2026-11-21T00:00:00.250Z"
        );
    }
}

#[cfg(test)]
mod properties {
    //! Property tests against a naive reference model.

    use std::collections::BTreeMap;

    use chrono::Duration;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// 2025-12-01T00:00:00Z.
    fn base() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_547_200, 0).expect("valid base time")
    }

    /// Histories of 0–40 snapshots on a grid of a random step (a minute to a
    /// month) from a random start, so that periods are shared, ties are
    /// frequent and histories cross day, ISO week, month and year boundaries.
    /// Snapshot `i` is named `s{i:02}`.
    fn history() -> impl Strategy<Value = Vec<Candidate>> {
        let step = prop_oneof![
            Just(60_i64),
            Just(900),
            Just(3_600),
            Just(5 * 3_600),
            Just(86_400),
            Just(3 * 86_400 + 7),
            Just(30 * 86_400),
        ];
        let slots = prop::collection::vec(0_u8..120, 0..=40);
        (step, 0_i64..400 * 86_400, slots).prop_map(|(step, offset, slots)| {
            let start = base() + Duration::seconds(offset);
            slots
                .into_iter()
                .enumerate()
                .map(|(i, slot)| Candidate {
                    name: format!("s{i:02}"),
                    created_at: start + Duration::seconds(step * i64::from(slot)),
                })
                .collect()
        })
    }

    fn count() -> impl Strategy<Value = Option<u32>> {
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(0)),
            4 => (1_u32..6).prop_map(Some),
            1 => (1_u32..60).prop_map(Some),
        ]
    }

    /// How the keep-within cutoff is chosen.
    #[derive(Clone, Debug)]
    enum Cutoff {
        None,
        /// A snapshot's time, plus -1, 0 or 1 second.
        NearSnapshot(Index, i64),
        /// Anywhere from the base time on.
        At(i64),
    }

    impl Cutoff {
        fn resolve(&self, history: &[Candidate]) -> Option<DateTime<Utc>> {
            match self {
                Cutoff::None => None,
                Cutoff::NearSnapshot(_, _) if history.is_empty() => Some(base()),
                Cutoff::NearSnapshot(index, delta) => {
                    Some(history[index.index(history.len())].created_at + Duration::seconds(*delta))
                }
                Cutoff::At(secs) => Some(base() + Duration::seconds(*secs)),
            }
        }
    }

    fn cutoff() -> impl Strategy<Value = Cutoff> {
        prop_oneof![
            2 => Just(Cutoff::None),
            2 => (any::<Index>(), -1_i64..=1).prop_map(|(i, d)| Cutoff::NearSnapshot(i, d)),
            1 => (0_i64..800 * 86_400).prop_map(Cutoff::At),
        ]
    }

    fn rules() -> impl Strategy<Value = ([Option<u32>; 6], Cutoff)> {
        (
            [count(), count(), count(), count(), count(), count()],
            cutoff(),
        )
    }

    fn make_rules(counts: [Option<u32>; 6], within_cutoff: Option<DateTime<Utc>>) -> Rules {
        let [last, hourly, daily, weekly, monthly, yearly] = counts;
        Rules {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
            within_cutoff,
        }
    }

    /// Index of a snapshot named `s{i:02}`.
    fn index_of(name: &str) -> usize {
        name[1..].parse().expect("generated name")
    }

    /// Fisher–Yates shuffle driven by a xorshift generator.
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        seed |= 1;
        for i in (1..items.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = usize::try_from(seed % (i as u64 + 1)).expect("small index");
            items.swap(i, j);
        }
    }

    /// A period key computed independently of [`Period::key`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum RefKey {
        Hour(chrono::NaiveDate, u32),
        Day(chrono::NaiveDate),
        Week(chrono::IsoWeek),
        Month(i32, u32),
        Year(i32),
    }

    fn ref_key(rule: Rule, t: &DateTime<Utc>) -> RefKey {
        let date = t.date_naive();
        match rule {
            Rule::Hourly => RefKey::Hour(date, t.hour()),
            Rule::Daily => RefKey::Day(date),
            Rule::Weekly => RefKey::Week(date.iso_week()),
            Rule::Monthly => RefKey::Month(date.year(), date.month()),
            Rule::Yearly => RefKey::Year(date.year()),
            Rule::Last | Rule::Within => unreachable!("not a bucket rule"),
        }
    }

    /// A period label computed independently of [`Period::label`].
    fn ref_label(rule: Rule, t: &DateTime<Utc>) -> String {
        let format = match rule {
            Rule::Hourly => "%Y-%m-%dT%H",
            Rule::Daily => "%Y-%m-%d",
            Rule::Weekly => "%G-W%V",
            Rule::Monthly => "%Y-%m",
            Rule::Yearly => "%Y",
            Rule::Last | Rule::Within => unreachable!("not a bucket rule"),
        };
        t.format(format).to_string()
    }

    /// Reference model: the newest-first order (as indices into `history`)
    /// and, per snapshot, the reasons every rule on its own gives to keep it.
    fn reference(history: &[Candidate], rules: &Rules) -> (Vec<usize>, Vec<Vec<Reason>>) {
        let mut newest_first: Vec<usize> = (0..history.len()).collect();
        newest_first.sort_by_key(|&i| (history[i].created_at, &history[i].name));
        newest_first.reverse();
        let mut reasons = vec![Vec::new(); history.len()];

        if let Some(n) = rules.last {
            for (rank, &i) in newest_first.iter().take(n as usize).enumerate() {
                reasons[i].push(Reason {
                    rule: Rule::Last,
                    period: format!("#{}", rank + 1),
                });
            }
        }
        let buckets = [
            (Rule::Hourly, rules.hourly),
            (Rule::Daily, rules.daily),
            (Rule::Weekly, rules.weekly),
            (Rule::Monthly, rules.monthly),
            (Rule::Yearly, rules.yearly),
        ];
        for (rule, n) in buckets {
            let Some(n) = n else { continue };
            // The newest snapshot of each period (the first one seen newest first).
            let mut newest: BTreeMap<RefKey, usize> = BTreeMap::new();
            for &i in &newest_first {
                newest
                    .entry(ref_key(rule, &history[i].created_at))
                    .or_insert(i);
            }
            // Its count is exact: min(N, number of distinct periods).
            let kept: Vec<usize> = newest.values().rev().take(n as usize).copied().collect();
            assert_eq!(kept.len(), (n as usize).min(newest.len()));
            for i in kept {
                let period = ref_label(rule, &history[i].created_at);
                reasons[i].push(Reason { rule, period });
            }
        }
        if let Some(cutoff) = rules.within_cutoff {
            let period = format!(">= {}", cutoff.format("%Y-%m-%dT%H:%M:%S%.fZ"));
            for (i, c) in history.iter().enumerate() {
                if c.created_at >= cutoff {
                    reasons[i].push(Reason {
                        rule: Rule::Within,
                        period: period.clone(),
                    });
                }
            }
        }
        (newest_first, reasons)
    }

    /// `rules` restricted to one rule.
    fn only(rules: &Rules, rule: Rule) -> Rules {
        let mut one = Rules::default();
        match rule {
            Rule::Last => one.last = rules.last,
            Rule::Hourly => one.hourly = rules.hourly,
            Rule::Daily => one.daily = rules.daily,
            Rule::Weekly => one.weekly = rules.weekly,
            Rule::Monthly => one.monthly = rules.monthly,
            Rule::Yearly => one.yearly = rules.yearly,
            Rule::Within => one.within_cutoff = rules.within_cutoff,
        }
        one
    }

    const ALL_RULES: [Rule; 7] = [
        Rule::Last,
        Rule::Hourly,
        Rule::Daily,
        Rule::Weekly,
        Rule::Monthly,
        Rule::Yearly,
        Rule::Within,
    ];

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 100_000,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        /// Every snapshot gets exactly the reasons the reference model gives
        /// (so each rule keeps exactly its own keep set, bucket counts are
        /// min(N, distinct periods), keep-last keeps the min(N, len) newest,
        /// keep-within keeps those at or after the cutoff, and the kept set is
        /// the union of the rules' keep sets); the order is newest first; and
        /// the result does not depend on the input order.
        #[test]
        fn decide_matches_reference(
            history in history(),
            (counts, cutoff) in rules(),
            seed in any::<u64>(),
        ) {
            let rules = make_rules(counts, cutoff.resolve(&history));
            let decisions = decide(&history, &rules);
            let (newest_first, expected) = reference(&history, &rules);

            let order: Vec<usize> = decisions.iter().map(|d| index_of(&d.name)).collect();
            prop_assert_eq!(&order, &newest_first);
            for d in &decisions {
                let i = index_of(&d.name);
                prop_assert_eq!(d.created_at, history[i].created_at);
                prop_assert_eq!(&d.reasons, &expected[i], "{}", &d.name);
                prop_assert_eq!(d.keep(), !expected[i].is_empty());
            }

            let mut shuffled = history.clone();
            shuffle(&mut shuffled, seed);
            prop_assert_eq!(decide(&shuffled, &rules), decisions);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 10_000,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        /// Deciding with all rules gives each snapshot the union of the
        /// reasons each rule alone gives it.
        #[test]
        fn combined_is_union_of_single_rules(
            history in history(),
            (counts, cutoff) in rules(),
        ) {
            let rules = make_rules(counts, cutoff.resolve(&history));
            let decisions = decide(&history, &rules);
            let mut union = vec![Vec::new(); history.len()];
            for rule in ALL_RULES {
                for d in decide(&history, &only(&rules, rule)) {
                    prop_assert!(d.reasons.iter().all(|r| r.rule == rule));
                    union[index_of(&d.name)].extend(d.reasons);
                }
            }
            for d in &decisions {
                prop_assert_eq!(&d.reasons, &union[index_of(&d.name)]);
            }
        }

        /// Without any rule (all counts `None` or `0`) nothing is kept.
        #[test]
        fn no_rule_keeps_nothing(history in history(), zeros in any::<[bool; 6]>()) {
            let counts = zeros.map(|zero| zero.then_some(0));
            let rules = make_rules(counts, None);
            prop_assert!(rules.is_empty());
            let decisions = decide(&history, &rules);
            prop_assert_eq!(decisions.len(), history.len());
            prop_assert!(decisions.iter().all(|d| !d.keep()));
        }
    }
}
