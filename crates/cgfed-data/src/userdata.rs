//! A user's own data file as [`Record`]s: JSON Lines or CSV.
//!
//! [`load_user_file`] picks the format from the file's extension (case-insensitive):
//!
//! - **`.jsonl` / `.json`**: one JSON object per line, blank lines ignored, each in one of
//!   three shapes (detected per line, so one file may mix them):
//!   - `{"text": "..."}` → [`Record::Text`];
//!   - `{"prompt": "...", "completion": "..."}` → [`Record::Completion`];
//!   - `{"messages": [{"role": "user", "content": "..."}, ...]}` → [`Record::Chat`]; roles
//!     are `system`, `user` or `assistant`, and the last message must be the assistant's.
//!
//!   An optional `"id"` (a string or a number) is kept; otherwise the id is
//!   `<file stem>/<line number>`. Other keys are ignored. A `.json` file whose content is a
//!   single JSON array of such objects is read too; its rows are then named `item N`.
//! - **`.csv`**: multiple-choice questions ([`Record::Mc`]), in one of two layouts:
//!   - C-Eval, with a header row `id,question,A,B,C,D,answer` (column names
//!     case-insensitive, in any order; extra columns such as `explanation` are ignored,
//!     `id` is optional, and the options are the consecutive letter columns from `A`);
//!   - MMLU (the original Hendrycks files), no header: `question,A,B,C,D,answer`, with any
//!     number (at least two) of option columns between the question and the answer.
//!
//!   The layout is C-Eval when the first row is such a header, MMLU otherwise. The answer is
//!   an option letter (case-insensitive). Fields are trimmed. The id is the `id` column when
//!   there is one and it is not empty, else `<file stem>/<line number>`. The subject and
//!   category given in [`UserDataOptions`] are stored in [`McItem::fields`] (`subject`,
//!   `category`).
//!
//! A malformed row (invalid JSON or UTF-8, a missing key, a wrong type, an empty text or
//! question, a bad answer letter, too few columns, a duplicate id) is an error naming the
//! file and the 1-based line — unless [`UserDataOptions::bad_rows`] is [`BadRows::Skip`],
//! in which case it is counted in the [`LoadReport`] and the loading goes on. A file
//! without a single valid record is always an error.
//!
//! ```no_run
//! use std::path::Path;
//!
//! use cgfed_data::userdata::{load_user_file, BadRows, UserDataOptions};
//!
//! let opts = UserDataOptions { bad_rows: BadRows::Skip, ..Default::default() };
//! let (records, report) = load_user_file(Path::new("data/my.jsonl"), &opts)?;
//! println!("{} records, {} rows skipped", records.len(), report.skipped);
//! # Ok::<(), cgfed_core::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use cgfed_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::records::{letter, ChatMessage, McItem, Record};

/// The extensions [`load_user_file`] accepts, lowercase and without the dot.
pub const ACCEPTED_EXTENSIONS: &[&str] = &["jsonl", "json", "csv"];

/// How many error messages a [`LoadReport`] keeps when malformed rows are skipped.
pub const MAX_ERROR_EXAMPLES: usize = 5;

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRows {
    /// Fail on the first malformed row, naming the file and the line (the default).
    #[default]
    Error,
    /// Skip malformed rows, counting them in the [`LoadReport`].
    Skip,
}

/// Options of [`load_user_file`].
#[derive(Debug, Clone, Default)]
pub struct UserDataOptions {
    /// What to do with a malformed row.
    pub bad_rows: BadRows,
    /// Stored as `subject` in every multiple-choice item's [`McItem::fields`] (CSV only).
    pub subject: Option<String>,
    /// Stored as `category` in every multiple-choice item's [`McItem::fields`] (CSV only).
    pub category: Option<String>,
}

/// What [`load_user_file`] read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// Records returned.
    pub records: usize,
    /// Malformed rows skipped (always 0 with [`BadRows::Error`]).
    pub skipped: usize,
    /// The first few (at most [`MAX_ERROR_EXAMPLES`]) skipped rows' problems, each
    /// `line N: problem` (or `item N: problem` for a JSON array), in file order.
    pub examples_of_errors: Vec<String>,
}

/// Reads the user's data file at `path` into records; see the [module docs](self) for the
/// formats.
///
/// # Errors
/// - [`Error::InFile`] wrapping [`Error::InvalidInput`] for an extension other than
///   `.jsonl`, `.json` or `.csv`, for a malformed row (naming the line) unless
///   `opts.bad_rows` is [`BadRows::Skip`], and for a file with no valid record;
/// - [`Error::Io`] with the path when the file cannot be read.
pub fn load_user_file(path: &Path, opts: &UserDataOptions) -> Result<(Vec<Record>, LoadReport)> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !ACCEPTED_EXTENSIONS.contains(&ext.as_str()) {
        let found = if ext.is_empty() {
            "no extension".to_string()
        } else {
            format!("extension `.{ext}`")
        };
        let accepted = ACCEPTED_EXTENSIONS
            .iter()
            .map(|e| format!(".{e}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::InvalidInput(format!(
            "unsupported data file ({found}); accepted extensions: {accepted} \
             (JSON Lines for text, prompt/completion or chat rows; CSV for multiple-choice questions)"
        ))
        .in_file(path));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Collector::new(path, opts, stem);
    if ext == "csv" {
        read_csv(&bytes, &mut out)?;
    } else {
        read_json(&bytes, ext == "json", &mut out)?;
    }
    out.finish()
}

/// Where a row is: a line of the file, or an item of a whole-file JSON array.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Line(usize),
    Item(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Item(n) => write!(f, "item {n}"),
        }
    }
}

impl Loc {
    fn number(self) -> usize {
        match self {
            Loc::Line(n) | Loc::Item(n) => n,
        }
    }
}

/// Gathers records and malformed rows, applying [`BadRows`].
struct Collector<'a> {
    path: &'a Path,
    opts: &'a UserDataOptions,
    stem: String,
    records: Vec<Record>,
    seen: HashMap<String, Loc>,
    skipped: usize,
    examples: Vec<String>,
}

impl<'a> Collector<'a> {
    fn new(path: &'a Path, opts: &'a UserDataOptions, stem: String) -> Self {
        Collector {
            path,
            opts,
            stem,
            records: Vec::new(),
            seen: HashMap::new(),
            skipped: 0,
            examples: Vec::new(),
        }
    }

    /// The id of a row without one.
    fn default_id(&self, loc: Loc) -> String {
        format!("{}/{}", self.stem, loc.number())
    }

    /// Takes one parsed row: keeps it, or handles its problem.
    fn row(&mut self, loc: Loc, row: std::result::Result<Record, String>) -> Result<()> {
        let row = row.and_then(|record| {
            if let Some(first) = self.seen.get(record.id()) {
                return Err(format!(
                    "duplicate id \"{}\" (first on {first})",
                    record.id()
                ));
            }
            Ok(record)
        });
        match row {
            Ok(record) => {
                self.seen.insert(record.id().to_string(), loc);
                self.records.push(record);
                Ok(())
            }
            Err(problem) => self.bad(loc, problem),
        }
    }

    /// A malformed row: an error, or counted when skipping.
    fn bad(&mut self, loc: Loc, problem: String) -> Result<()> {
        let message = format!("{loc}: {problem}");
        match self.opts.bad_rows {
            BadRows::Error => Err(Error::InvalidInput(message).in_file(self.path)),
            BadRows::Skip => {
                self.skipped += 1;
                if self.examples.len() < MAX_ERROR_EXAMPLES {
                    self.examples.push(message);
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(Vec<Record>, LoadReport)> {
        if self.records.is_empty() {
            let message = match self.examples.first() {
                Some(first) => format!(
                    "no valid records: all {} rows are malformed (first: {first})",
                    self.skipped
                ),
                None => "no records: the file is empty or has only blank lines".to_string(),
            };
            return Err(Error::InvalidInput(message).in_file(self.path));
        }
        let report = LoadReport {
            records: self.records.len(),
            skipped: self.skipped,
            examples_of_errors: self.examples,
        };
        Ok((self.records, report))
    }
}

// ---------------------------------------------------------------------------------------
// JSON Lines

fn read_json(bytes: &[u8], whole_json: bool, out: &mut Collector<'_>) -> Result<()> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // A `.json` file holding one JSON array of rows.
    if whole_json && bytes.trim_ascii_start().starts_with(b"[") {
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(bytes) {
            for (i, item) in items.iter().enumerate() {
                let loc = Loc::Item(i + 1);
                let row = parse_json_row(item, &out.default_id(loc));
                out.row(loc, row)?;
            }
            return Ok(());
        }
        // Not one valid array: read it as lines, which names the first bad line.
    }
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let loc = Loc::Line(i + 1);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let row = match std::str::from_utf8(line) {
            Err(e) => Err(format!(
                "not valid UTF-8 (byte {} of the line)",
                e.valid_up_to() + 1
            )),
            Ok(text) => match serde_json::from_str::<Value>(text) {
                Err(e) => Err(format!("invalid JSON: {e}")),
                Ok(value) => parse_json_row(&value, &out.default_id(loc)),
            },
        };
        out.row(loc, row)?;
    }
    Ok(())
}

/// "a string", "an array", … for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string at `key`, `None` when absent; an error when present but not a string.
fn opt_str<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
) -> std::result::Result<Option<&'v str>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("\"{key}\" must be a string, found {}", kind(other))),
    }
}

fn parse_json_row(value: &Value, default_id: &str) -> std::result::Result<Record, String> {
    let Value::Object(obj) = value else {
        return Err(format!("expected a JSON object, found {}", kind(value)));
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => default_id.to_string(),
        Some(Value::String(s)) if s.trim().is_empty() => return Err("empty \"id\"".into()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "\"id\" must be a string or a number, found {}",
                kind(other)
            ))
        }
    };
    let has = |k: &str| obj.contains_key(k);
    let shapes = [
        ("\"text\"", has("text")),
        (
            "\"prompt\"/\"completion\"",
            has("prompt") || has("completion"),
        ),
        ("\"messages\"", has("messages")),
    ];
    let present: Vec<&str> = shapes.iter().filter(|s| s.1).map(|s| s.0).collect();
    if present.len() > 1 {
        return Err(format!(
            "ambiguous row: it has {} (a row is text, prompt/completion or messages)",
            present.join(" and ")
        ));
    }
    if has("messages") {
        let messages = parse_messages(&obj["messages"])?;
        return Ok(Record::Chat { id, messages });
    }
    if has("prompt") || has("completion") {
        let need = "(a prompt/completion row needs both)";
        let prompt = opt_str(obj, "prompt")?.ok_or_else(|| format!("missing \"prompt\" {need}"))?;
        let completion =
            opt_str(obj, "completion")?.ok_or_else(|| format!("missing \"completion\" {need}"))?;
        if completion.trim().is_empty() {
            return Err("empty \"completion\" (nothing to learn)".into());
        }
        return Ok(Record::Completion {
            id,
            prompt: prompt.to_string(),
            completion: completion.to_string(),
        });
    }
    if let Some(text) = opt_str(obj, "text")? {
        if text.trim().is_empty() {
            return Err("empty \"text\"".into());
        }
        return Ok(Record::Text {
            id,
            text: text.to_string(),
        });
    }
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.truncate(8);
    let found = if keys.is_empty() {
        "an empty object".to_string()
    } else {
        format!("keys: {}", keys.join(", "))
    };
    Err(format!(
        "missing \"text\", \"prompt\"/\"completion\" or \"messages\" ({found})"
    ))
}

fn parse_messages(value: &Value) -> std::result::Result<Vec<ChatMessage>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "\"messages\" must be an array, found {}",
            kind(value)
        ));
    };
    if items.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let Value::Object(obj) = item else {
            return Err(format!(
                "message {n} must be an object with \"role\" and \"content\", found {}",
                kind(item)
            ));
        };
        let field = |key: &str| {
            opt_str(obj, key)
                .map_err(|e| format!("message {n}: {e}"))?
                .ok_or_else(|| format!("message {n}: missing \"{key}\""))
        };
        let role = field("role")?;
        let content = field("content")?;
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!(
                "message {n}: unknown role \"{role}\" (accepted: system, user, assistant)"
            ));
        }
        messages.push(ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        });
    }
    let Some(last) = messages.last() else {
        return Err("\"messages\" is empty".into());
    };
    if last.role != "assistant" {
        return Err(format!(
            "the last message must be the assistant's (it is the {}'s)",
            last.role
        ));
    }
    if last.content.trim().is_empty() {
        return Err("the last (assistant) message is empty".into());
    }
    Ok(messages)
}

// ---------------------------------------------------------------------------------------
// CSV

/// The C-Eval header's columns.
#[derive(Debug)]
struct Header {
    id: Option<usize>,
    question: usize,
    options: Vec<usize>,
    answer: usize,
    /// Columns a row needs.
    needed: usize,
}

/// The header, when `fields` is one (a `question` column and at least options `A` and `B`);
/// an error when it is one without an `answer` column.
fn parse_header(fields: &[String]) -> std::result::Result<Option<Header>, String> {
    let names: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
    let col = |name: &str| names.iter().position(|n| n == name);
    let Some(question) = col("question") else {
        return Ok(None);
    };
    let options: Vec<usize> = (0..26)
        .map(|i| col(&letter(i).to_ascii_lowercase()))
        .take_while(Option::is_some)
        .flatten()
        .collect();
    if options.len() < 2 {
        return Ok(None);
    }
    let Some(answer) = col("answer") else {
        return Err(
            "the header has no `answer` column (C-Eval's test files ship without \
                    answers: use its dev or val files)"
                .into(),
        );
    };
    let id = col("id");
    let needed = options
        .iter()
        .chain([question, answer].iter())
        .chain(id.iter())
        .max()
        .map_or(0, |m| m + 1);
    Ok(Some(Header {
        id,
        question,
        options,
        answer,
        needed,
    }))
}

fn read_csv(bytes: &[u8], out: &mut Collector<'_>) -> Result<()> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    // `None` before the first row, then `Some(None)` for MMLU or `Some(Some(header))`.
    let mut layout: Option<Option<Header>> = None;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(Error::InvalidInput(format!("unreadable CSV: {e}")).in_file(out.path))
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let loc = Loc::Line(usize::try_from(line).unwrap_or(usize::MAX));
        let fields = decode_fields(&record);
        if let Ok(f) = &fields {
            if f.iter().all(String::is_empty) {
                continue; // a blank row (`,,,,`)
            }
        }
        let header = match &layout {
            Some(header) => header.as_ref(),
            None => {
                let header = match &fields {
                    Ok(f) => parse_header(f).map_err(|e| {
                        Error::InvalidInput(format!("{loc}: {e}")).in_file(out.path)
                    })?,
                    Err(_) => None,
                };
                let is_header = header.is_some();
                layout = Some(header);
                if is_header {
                    continue;
                }
                layout.as_ref().and_then(Option::as_ref)
            }
        };
        let row = fields.and_then(|f| parse_mc_row(&f, header, out, loc));
        out.row(loc, row)?;
    }
    Ok(())
}

/// A record's fields as trimmed text; an error naming the first column that is not UTF-8.
fn decode_fields(record: &csv::ByteRecord) -> std::result::Result<Vec<String>, String> {
    record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            std::str::from_utf8(field)
                .map(|s| s.trim().to_string())
                .map_err(|_| format!("column {} is not valid UTF-8", i + 1))
        })
        .collect()
}

fn parse_mc_row(
    fields: &[String],
    header: Option<&Header>,
    out: &Collector<'_>,
    loc: Loc,
) -> std::result::Result<Record, String> {
    let n = fields.len();
    let (id, question, choices, answer) = match header {
        Some(h) => {
            if n < h.needed {
                return Err(format!(
                    "too few columns: {n} (the header needs {})",
                    h.needed
                ));
            }
            let id = h.id.map(|i| fields[i].clone()).unwrap_or_default();
            let choices = h.options.iter().map(|&i| fields[i].clone()).collect();
            (id, &fields[h.question], choices, &fields[h.answer])
        }
        None => {
            if n < 4 {
                return Err(format!(
                    "too few columns: {n} (need the question, at least two options and the answer)"
                ));
            }
            (
                String::new(),
                &fields[0],
                fields[1..n - 1].to_vec(),
                &fields[n - 1],
            )
        }
    };
    if question.is_empty() {
        return Err("empty question".into());
    }
    let answer = parse_answer(answer, &choices)?;
    let id = if id.is_empty() {
        out.default_id(loc)
    } else {
        id
    };
    let mut extra = BTreeMap::new();
    if let Some(subject) = &out.opts.subject {
        extra.insert("subject".to_string(), subject.clone());
    }
    if let Some(category) = &out.opts.category {
        extra.insert("category".to_string(), category.clone());
    }
    Ok(Record::Mc(McItem {
        id,
        question: question.clone(),
        choices,
        answer,
        passage: None,
        fields: extra,
    }))
}

/// The option index of answer letter `text` (case-insensitive).
fn parse_answer(text: &str, choices: &[String]) -> std::result::Result<usize, String> {
    let expected = || {
        format!(
            "expected a letter {}–{}",
            letter(0),
            letter(choices.len().saturating_sub(1))
        )
    };
    if text.is_empty() {
        return Err(format!("empty answer ({})", expected()));
    }
    let upper = text.to_ascii_uppercase();
    (0..choices.len())
        .find(|&i| letter(i) == upper)
        .ok_or_else(|| format!("bad answer \"{text}\" ({})", expected()))
}
