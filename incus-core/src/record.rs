//! The record stream: one flat JSON object per line with a `type` field. `docs/records.md` is
//! the contract; this module is its implementation.
//!
//! Every tool forwards each input line unchanged and in order, then adds its own records. A
//! malformed input line is replaced by an `error` record naming its line number. Output is
//! flushed after every line so that pipelines stream; a closed stdout ends the tool quietly.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// Which instance a record is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub remote: String,
    pub project: String,
    pub instance: String,
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.project == "default" {
            write!(f, "{}:{}", self.remote, self.instance)
        } else {
            write!(
                f,
                "{}:{} (project {})",
                self.remote, self.instance, self.project
            )
        }
    }
}

fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn optional_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// `snapshot`: a snapshot was taken (incus-snap).
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub expires_at: Option<DateTime<Utc>>,
    pub stateful: bool,
}

/// `schedule`: an instance's snapshot schedule after incus-snap schedule.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub schedule: Option<String>,
    pub pattern: Option<String>,
    pub expiry: Option<String>,
    pub stopped: bool,
}

/// `push`: an instance was replicated (or found current) by incus-push.
#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub target_remote: String,
    pub target_project: String,
    pub target_instance: String,
    /// `copied`, `refreshed` or `up-to-date`.
    pub status: String,
    /// The snapshots sent (all of them for a first copy).
    pub snapshots: Vec<String>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `pruned`: a snapshot was deleted (or would be, with `dry_run`) by incus-prune.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `kept`: a snapshot incus-prune keeps, and why (with `--explain`).
#[derive(Debug, Clone, Serialize)]
pub struct KeptRecord {
    #[serde(flatten)]
    pub of: InstanceRef,
    pub name: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `error`: something failed; the record names the tool and, when known, the instance.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub message: String,
    /// The input line number, for malformed input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// Every record type the tools write.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Snapshot(SnapshotRecord),
    Schedule(ScheduleRecord),
    Push(PushRecord),
    Pruned(PrunedRecord),
    Kept(KeptRecord),
    Error(ErrorRecord),
}

/// One input line: a JSON object (kept verbatim for forwarding) or a malformed line.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub line: usize,
    pub raw: String,
    pub fields: Map<String, Value>,
}

impl InputRecord {
    /// The `type` field.
    pub fn kind(&self) -> &str {
        self.str("type").unwrap_or("")
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }

    /// The instance the record names (`remote` + `instance`, `project` or the remote's
    /// default); `None` for records that name none and for `error` records (the failure was
    /// reported once already).
    pub fn instance(&self) -> Option<(String, Option<String>, String)> {
        if self.kind() == "error" {
            return None;
        }
        let remote = self.str("remote")?;
        let instance = self.str("instance")?;
        Some((
            remote.to_string(),
            self.str("project").map(str::to_string),
            instance.to_string(),
        ))
    }
}

/// Reads every line of stdin when it is not a terminal: good lines as records, malformed ones
/// reported through `output` (as an error record in their place).
pub fn read_stdin(output: &Output) -> io::Result<Vec<InputRecord>> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    read_from(stdin.lock(), output)
}

/// Reads records from any reader (see [`read_stdin`]).
pub fn read_from(reader: impl BufRead, output: &Output) -> io::Result<Vec<InputRecord>> {
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let raw = match line {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                output.malformed(line_no, "not UTF-8 text");
                continue;
            }
            Err(e) => return Err(e),
        };
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(fields)) => {
                output.forward(&raw, &fields);
                records.push(InputRecord {
                    line: line_no,
                    raw,
                    fields,
                });
            }
            Ok(_) => output.malformed(line_no, "not a JSON object"),
            Err(e) => output.malformed(line_no, &format!("not JSON ({e})")),
        }
    }
    Ok(records)
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// One readable line per record (the default on a terminal).
    Text,
}

/// The writer of a tool's stdout (records) and stderr (error lines).
pub struct Output {
    tool: &'static str,
    format: Format,
    out: Mutex<Box<dyn Write + Send>>,
    errors: AtomicUsize,
}

impl Output {
    /// Writes to stdout; `format: None` picks text on a terminal, JSON otherwise.
    pub fn stdout(tool: &'static str, format: Option<Format>) -> Self {
        let format = format.unwrap_or(if io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        });
        Self::new(tool, format, Box::new(io::stdout()))
    }

    /// Writes to any writer (tests).
    pub fn new(tool: &'static str, format: Format, out: Box<dyn Write + Send>) -> Self {
        Output {
            tool,
            format,
            out: Mutex::new(out),
            errors: AtomicUsize::new(0),
        }
    }

    /// The tool's name, for messages.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// How many failures were reported.
    pub fn error_count(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }

    /// Writes one of this tool's records.
    pub fn emit(&self, record: &Record) {
        let value = match serde_json::to_value(record) {
            Ok(Value::Object(map)) => map,
            _ => return,
        };
        let raw = Value::Object(value.clone()).to_string();
        self.write_line(&raw, &value);
    }

    /// Forwards an input record unchanged.
    pub fn forward(&self, raw: &str, fields: &Map<String, Value>) {
        self.write_line(raw, fields);
    }

    /// Reports a failure about one instance: an error record, and one line on stderr.
    pub fn error(&self, of: Option<&InstanceRef>, message: &str) {
        self.report(
            of.map(InstanceRef::to_string),
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: of.map(|o| o.remote.clone()),
                project: of.map(|o| o.project.clone()),
                instance: of.map(|o| o.instance.clone()),
                message: one_line(message),
                line: None,
            },
        );
    }

    /// Reports a failure about a whole remote (listing its instances, connecting to it).
    pub fn remote_error(&self, remote: &str, project: Option<&str>, message: &str) {
        self.report(
            Some(remote.to_string()),
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: Some(remote.to_string()),
                project: project.map(str::to_string),
                instance: None,
                message: one_line(message),
                line: None,
            },
        );
    }

    /// Reports a malformed input line.
    pub fn malformed(&self, line: usize, why: &str) {
        self.report(
            None,
            ErrorRecord {
                tool: self.tool.to_string(),
                remote: None,
                project: None,
                instance: None,
                message: format!("stdin line {line}: {why}; expected one JSON record per line"),
                line: Some(line),
            },
        );
    }

    /// Counts a failure, prints it once on stderr (`TOOL: error: SUBJECT: MESSAGE`) and, in
    /// JSON, writes its error record (on a terminal the stderr line is enough).
    fn report(&self, subject: Option<String>, record: ErrorRecord) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        match subject {
            Some(subject) => eprintln!("{}: error: {subject}: {}", self.tool, record.message),
            None => eprintln!("{}: error: {}", self.tool, record.message),
        }
        if self.format == Format::Json {
            self.emit(&Record::Error(record));
        }
    }

    /// A note for the person at the terminal (stderr), never part of the stream.
    pub fn note(&self, message: &str) {
        eprintln!("{}: {message}", self.tool);
    }

    fn write_line(&self, raw: &str, fields: &Map<String, Value>) {
        let line = match self.format {
            Format::Json => raw.to_string(),
            Format::Text => text_line(fields),
        };
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let result = writeln!(out, "{line}").and_then(|()| out.flush());
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader went away (`| head -1`): end quietly, like every Unix filter.
                std::process::exit(0);
            }
            eprintln!("{}: error: writing the output: {e}", self.tool);
            std::process::exit(2);
        }
    }
}

/// Folds a multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The readable form of a record: its type, the instance, then the other fields.
fn text_line(fields: &Map<String, Value>) -> String {
    let get = |k: &str| fields.get(k).and_then(Value::as_str);
    let mut line = get("type").unwrap_or("record").to_string();
    if let (Some(remote), Some(instance)) = (get("remote"), get("instance")) {
        line.push_str(&format!(" {remote}:{instance}"));
        if let Some(project) = get("project").filter(|p| *p != "default") {
            line.push_str(&format!(" (project {project})"));
        }
    }
    for (key, value) in fields {
        if matches!(
            key.as_str(),
            "type" | "remote" | "instance" | "project" | "tool"
        ) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        line.push_str(&format!(" {key}={text}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture() -> (Output, Shared) {
        let shared = Shared::default();
        (
            Output::new("incus-test", Format::Json, Box::new(shared.clone())),
            shared,
        )
    }

    fn text(shared: &Shared) -> String {
        String::from_utf8(shared.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    #[test]
    fn records_are_flat_with_type_first() {
        let (out, shared) = capture();
        out.emit(&Record::Snapshot(SnapshotRecord {
            of: InstanceRef {
                remote: "local".into(),
                project: "default".into(),
                instance: "web".into(),
            },
            name: "auto-20261128-205000".into(),
            created_at: DateTime::from_timestamp(1_795_899_000, 0).unwrap_or_default(),
            expires_at: None,
            stateful: false,
        }));
        let line = text(&shared);
        assert!(line.starts_with(r#"{"type":"snapshot","remote":"local","project":"default","instance":"web","name":"auto-20261128-205000","created_at":""#), "{line}");
        assert!(
            line.ends_with("\"expires_at\":null,\"stateful\":false}\n"),
            "{line}"
        );
    }

    #[test]
    fn input_is_forwarded_verbatim_and_malformed_lines_become_numbered_errors() {
        let (out, shared) = capture();
        let input = "{\"type\":\"x-custom\",\"b\":1,  \"a\":2}\nnot json\n\n[1]\n{\"type\":\"snapshot\",\"remote\":\"local\",\"instance\":\"web\"}\n";
        let records = read_from(input.as_bytes(), &out).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 5);
        assert_eq!(
            records[1].instance(),
            Some(("local".into(), None, "web".into()))
        );
        assert_eq!(out.error_count(), 2);
        let lines: Vec<String> = text(&shared).lines().map(str::to_string).collect();
        assert_eq!(lines[0], "{\"type\":\"x-custom\",\"b\":1,  \"a\":2}");
        assert!(lines[1].contains("\"line\":2"), "{}", lines[1]);
        assert!(lines[2].contains("\"line\":4"), "{}", lines[2]);
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn error_records_do_not_select_instances() {
        let (out, _) = capture();
        let input = "{\"type\":\"error\",\"tool\":\"incus-snap\",\"remote\":\"local\",\"instance\":\"web\",\"message\":\"x\"}\n";
        let records = read_from(input.as_bytes(), &out).unwrap_or_default();
        assert_eq!(records[0].instance(), None);
    }

    #[test]
    fn multi_line_messages_are_folded() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
