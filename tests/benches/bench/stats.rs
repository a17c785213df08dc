//! The statistics and number formats of the report.

/// One measurement: wall time (s, to the millisecond), the lab daemons' CPU time and the
/// client processes' CPU time (s, to the hundredth).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub wall: f64,
    pub daemons: f64,
    pub client: f64,
}

/// `v` rounded to `decimals` decimals (as the report prints it).
pub fn round(v: f64, decimals: usize) -> f64 {
    format!("{v:.decimals$}").parse().unwrap_or(v)
}

/// The median: the lower middle value for an even count; 0 without values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[(v.len() - 1) / 2]
    }
}

pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::max).unwrap_or(0.0)
}

/// The values joined with ", ", each with `decimals` decimals.
pub fn all_values(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds: three decimals under 10 s, else two.
pub fn fmt_s(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3} s")
    } else {
        format!("{v:.2} s")
    }
}

/// Milliseconds per instance, one decimal.
pub fn per_inst(v: f64, n: usize) -> String {
    format!("{:.1} ms", v * 1000.0 / n as f64)
}

/// `a / b` to the hundredth (0 when `b` is 0).
pub fn ratio(a: f64, b: f64) -> f64 {
    round(if b > 0.0 { a / b } else { 0.0 }, 2)
}

/// Whether a target is met (`at_least`: `v >= t`, else `v <= t`); "narrowly" for a speed-up
/// within 10 % of its target.
pub fn met(v: f64, at_least: bool, t: f64) -> &'static str {
    let ok = if at_least { v >= t } else { v <= t };
    let close = at_least && v < t * 1.1;
    match (ok, close) {
        (true, true) => "**met** (narrowly)",
        (true, false) => "**met**",
        (false, _) => "**missed**",
    }
}

/// KiB as MB (MiB), one decimal.
pub fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// "12 KiB" under 1 MiB, else "12.3 MB" (MiB).
pub fn human_bytes(b: f64) -> String {
    if b < 1_048_576.0 {
        format!("{} KiB", (b / 1024.0) as u64)
    } else {
        format!("{:.1} MB", b / 1_048_576.0)
    }
}
