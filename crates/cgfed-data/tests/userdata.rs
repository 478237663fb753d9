//! Users' own data files (JSON Lines, CSV) as records: shapes, ids, layouts, and malformed
//! rows named by file and line.

use std::path::{Path, PathBuf};

use cgfed_core::Error;
use cgfed_data::records::{ChatMessage, Record};
use cgfed_data::userdata::{load_user_file, BadRows, LoadReport, UserDataOptions};

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn load(path: &Path) -> (Vec<Record>, LoadReport) {
    load_user_file(path, &UserDataOptions::default())
        .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()))
}

fn skip() -> UserDataOptions {
    UserDataOptions {
        bad_rows: BadRows::Skip,
        ..Default::default()
    }
}

/// The error loading `content` as `name`, checked to name the file.
fn err(name: &str, content: impl AsRef<[u8]>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, content);
    match load_user_file(&path, &UserDataOptions::default()) {
        Ok((records, _)) => panic!("{name} was accepted: {records:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {msg}"
            );
            msg
        }
    }
}

#[test]
fn jsonl_text_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "notes.jsonl",
        "{\"text\": \"hello world\"}\n\n{\"text\": \"  second  \", \"source\": \"ignored\"}\n",
    );
    let (records, report) = load(&path);
    assert_eq!(
        records,
        vec![
            Record::Text {
                id: "notes/1".into(),
                text: "hello world".into()
            },
            Record::Text {
                id: "notes/3".into(),
                text: "  second  ".into()
            },
        ]
    );
    assert_eq!(
        report,
        LoadReport {
            records: 2,
            skipped: 0,
            examples_of_errors: vec![]
        }
    );
}

#[test]
fn jsonl_prompt_completion_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "qa.jsonl",
        "{\"prompt\": \"2+2=\", \"completion\": \" 4\"}\r\n{\"prompt\": \"\", \"completion\": \"free\"}\r\n",
    );
    let (records, _) = load(&path);
    assert_eq!(
        records,
        vec![
            Record::Completion {
                id: "qa/1".into(),
                prompt: "2+2=".into(),
                completion: " 4".into()
            },
            Record::Completion {
                id: "qa/2".into(),
                prompt: String::new(),
                completion: "free".into()
            },
        ]
    );
}

#[test]
fn jsonl_chat_rows() {
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#;
    let path = write(dir.path(), "chat.jsonl", format!("{line}\n"));
    let (records, _) = load(&path);
    let msg = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    assert_eq!(
        records,
        vec![Record::Chat {
            id: "chat/1".into(),
            messages: vec![
                msg("system", "Be brief."),
                msg("user", "Hi"),
                msg("assistant", "Hello.")
            ],
        }]
    );
}

#[test]
fn jsonl_mixed_shapes_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let content = [
        r#"{"id": "doc-a", "text": "plain"}"#,
        r#"{"id": 7, "prompt": "p", "completion": "c"}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"id": null, "text": "no id"}"#,
    ]
    .join("\n");
    let path = write(dir.path(), "Mixed.JSONL", content);
    let (records, report) = load(&path);
    let ids: Vec<&str> = records.iter().map(Record::id).collect();
    assert_eq!(ids, ["doc-a", "7", "Mixed/3", "Mixed/4"]);
    assert!(matches!(records[0], Record::Text { .. }));
    assert!(matches!(records[1], Record::Completion { .. }));
    assert!(matches!(records[2], Record::Chat { .. }));
    assert_eq!(report.records, 4);
}

#[test]
fn json_extension_reads_lines_and_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let lines = write(
        dir.path(),
        "a.json",
        "{\"text\": \"x\"}\n{\"text\": \"y\"}\n",
    );
    assert_eq!(load(&lines).0.len(), 2);
    let array = write(
        dir.path(),
        "b.json",
        "[\n  {\"text\": \"x\"},\n  {\"prompt\": \"p\", \"completion\": \"c\"}\n]\n",
    );
    let (records, _) = load(&array);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].id(), "b/2");
    let bad = write(dir.path(), "c.json", "[{\"text\": \"x\"}, {\"text\": 3}]");
    let e = load_user_file(&bad, &UserDataOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("item 2") && e.contains("\"text\" must be a string"),
        "{e}"
    );
}

#[test]
fn ceval_csv_with_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "computer_network_val.csv",
        "id,question,A,B,C,D,answer,explanation\n\
         0, What is TCP? ,a protocol,a cable,a chip,a port, A ,because\n\
         1,\"Pick, one\",w,x,y,z,d,\n",
    );
    let opts = UserDataOptions {
        subject: Some("computer_network".into()),
        category: Some("STEM".into()),
        ..Default::default()
    };
    let (records, report) = load_user_file(&path, &opts).unwrap();
    assert_eq!(report.records, 2);
    let a = records[0].as_mc().unwrap();
    assert_eq!(a.id, "0");
    assert_eq!(a.question, "What is TCP?");
    assert_eq!(a.choices, ["a protocol", "a cable", "a chip", "a port"]);
    assert_eq!(a.answer, 0);
    assert_eq!(a.fields["subject"], "computer_network");
    assert_eq!(a.fields["category"], "STEM");
    assert_eq!(records[0].field("subject"), "computer_network");
    let b = records[1].as_mc().unwrap();
    assert_eq!(b.question, "Pick, one");
    assert_eq!(b.answer, 3);
    assert_eq!(b.answer_letter(), "D");
}

#[test]
fn ceval_header_without_answer_column_is_an_error() {
    let e = err("test.csv", "id,question,A,B,C,D\n0,q,a,b,c,d\n");
    assert!(e.contains("line 1") && e.contains("answer"), "{e}");
}

#[test]
fn mmlu_headerless_csv_with_quoted_comma_and_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "astronomy_dev.csv",
        "\"Which, of these\nis a planet?\",Mars,Sun,Moon,Io,A\n\
         Two options only?,yes,no,b\n\
         Five?,1,2,3,4,5,e\n",
    );
    let (records, _) = load(&path);
    assert_eq!(records.len(), 3);
    let q = records[0].as_mc().unwrap();
    assert_eq!(q.question, "Which, of these\nis a planet?");
    assert_eq!(q.choices, ["Mars", "Sun", "Moon", "Io"]);
    assert_eq!(q.answer, 0);
    assert_eq!(q.id, "astronomy_dev/1");
    assert!(q.fields.is_empty());
    // The second record starts on line 3: the first spans two lines.
    let two = records[1].as_mc().unwrap();
    assert_eq!(two.id, "astronomy_dev/3");
    assert_eq!(two.choices, ["yes", "no"]);
    assert_eq!(two.answer, 1);
    let five = records[2].as_mc().unwrap();
    assert_eq!(five.choices.len(), 5);
    assert_eq!(five.answer, 4);
}

#[test]
fn malformed_jsonl_rows_name_file_and_line() {
    let good = "{\"text\": \"ok\"}\n";
    let cases: &[(&str, &str)] = &[
        ("{\"text\": ", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, found an array"),
        (
            "{\"prompt\": \"p\"}",
            "missing \"completion\" (a prompt/completion row needs both)",
        ),
        ("{\"completion\": \"c\"}", "missing \"prompt\""),
        ("{\"text\": 5}", "\"text\" must be a string, found a number"),
        ("{\"text\": \"   \"}", "empty \"text\""),
        ("{\"prompt\": \"p\", \"completion\": \"\"}", "empty \"completion\""),
        ("{\"other\": 1}", "missing \"text\""),
        ("{\"text\": \"t\", \"prompt\": \"p\"}", "ambiguous"),
        ("{\"id\": [1], \"text\": \"t\"}", "\"id\" must be a string or a number"),
        ("{\"messages\": \"hi\"}", "\"messages\" must be an array"),
        ("{\"messages\": []}", "\"messages\" is empty"),
        ("{\"messages\": [1]}", "message 1 must be an object"),
        (
            "{\"messages\": [{\"role\": \"user\"}]}",
            "message 1: missing \"content\"",
        ),
        (
            "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}",
            "unknown role \"bot\"",
        ),
        (
            "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"q\"}]}",
            "the last message must be the assistant's",
        ),
        ("{\"id\": \"x\", \"text\": \"a\"}\n{\"id\": \"x\", \"text\": \"b\"}", "duplicate id \"x\" (first on line 4)"),
    ];
    for (bad, expected) in cases {
        // Two good lines and a blank one first, so the bad row is on line 4 (or 5).
        let content = format!("{good}{good}\n{bad}\n{good}");
        let e = err("data.jsonl", content);
        let line = if expected.starts_with("duplicate") {
            5
        } else {
            4
        };
        assert!(
            e.contains(&format!("line {line}: ")) && e.contains(expected),
            "{bad}: expected line {line} and {expected:?} in: {e}"
        );
    }
}

#[test]
fn malformed_csv_rows_name_file_and_line() {
    let header = "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n";
    let cases: &[(&str, &str)] = &[
        ("1,q,a,b,c,d,E", "bad answer \"E\" (expected a letter A–D)"),
        ("1,q,a,b,c,d,AB", "bad answer"),
        ("1,q,a,b,c,d,", "empty answer"),
        ("1,,a,b,c,d,A", "empty question"),
        ("1,q,a,b", "too few columns: 4"),
        ("0,q,a,b,c,d,B", "duplicate id \"0\""),
    ];
    for (bad, expected) in cases {
        let e = err("ceval.csv", format!("{header}{bad}\n"));
        assert!(
            e.contains("line 3: ") && e.contains(expected),
            "{bad}: expected line 3 and {expected:?} in: {e}"
        );
    }
    let mmlu_cases: &[(&str, &str)] = &[
        ("q,a,B", "too few columns: 3"),
        ("q,a,b,c", "bad answer \"c\" (expected a letter A–B)"),
        ("  ,a,b,A", "empty question"),
    ];
    for (bad, expected) in mmlu_cases {
        let e = err(
            "mmlu.csv",
            format!("q1,a,b,A\n\"multi\nline\",a,b,B\n{bad}\n"),
        );
        assert!(
            e.contains("line 4: ") && e.contains(expected),
            "{bad}: expected line 4 and {expected:?} in: {e}"
        );
    }
}

#[test]
fn skip_counts_bad_rows_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = String::from("{\"text\": \"first\"}\n");
    for i in 0..7 {
        content.push_str(&format!("{{\"prompt\": \"p{i}\"}}\n"));
    }
    content.push_str("not json\n{\"text\": \"last\"}\n");
    let path = write(dir.path(), "dirty.jsonl", content);
    let (records, report) = load_user_file(&path, &skip()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].id(), "dirty/10");
    assert_eq!(report.records, 2);
    assert_eq!(report.skipped, 8);
    assert_eq!(report.examples_of_errors.len(), 5);
    assert!(report.examples_of_errors[0].starts_with("line 2: missing \"completion\""));
    assert!(report.examples_of_errors[4].starts_with("line 6: "));

    let csv = write(
        dir.path(),
        "dirty.csv",
        "q,a,b,Z\nq2,a,b,B\nq3,a\nq4,a,b,A\n",
    );
    let (records, report) = load_user_file(&csv, &skip()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(report.skipped, 2);
    assert!(report.examples_of_errors[1].starts_with("line 3: too few columns"));
}

#[test]
fn bad_rows_option_parses_lowercase() {
    let v: BadRows = serde_json::from_str("\"skip\"").unwrap();
    assert_eq!(v, BadRows::Skip);
    assert_eq!(serde_json::to_string(&BadRows::Error).unwrap(), "\"error\"");
    assert_eq!(BadRows::default(), BadRows::Error);
}

#[test]
fn zero_valid_records_is_an_error_even_when_skipping() {
    let e = err("empty.jsonl", "\n  \n");
    assert!(e.contains("no records"), "{e}");
    let e = err("empty.csv", "");
    assert!(e.contains("no records"), "{e}");
    let e = err("header_only.csv", "id,question,A,B,C,D,answer\n");
    assert!(e.contains("no records"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.jsonl", "{\"x\": 1}\nnope\n");
    let e = load_user_file(&path, &skip()).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(
        e.contains("no valid records: all 2 rows are malformed") && e.contains("line 1"),
        "{e}"
    );
}

#[test]
fn unknown_extension_lists_accepted_ones() {
    for name in ["data.txt", "data", "data.parquet"] {
        let e = err(name, "{\"text\": \"x\"}\n");
        assert!(
            e.contains(".jsonl") && e.contains(".json") && e.contains(".csv"),
            "{e}"
        );
    }
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.jsonl");
    let e = load_user_file(&path, &UserDataOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::Io { path: p, .. } if p == &path),
        "{e:?}"
    );
}

#[test]
fn non_utf8_bytes_are_row_errors() {
    let e = err(
        "latin1.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n",
    );
    assert!(e.contains("line 2: not valid UTF-8"), "{e}");
    let e = err("latin1.csv", b"q,a,b,A\nq\xe9,a,b,A\n");
    assert!(e.contains("line 2: column 1 is not valid UTF-8"), "{e}");
    // A BOM is not an error.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bom.csv",
        b"\xEF\xBB\xBFid,question,A,B,answer\n1,q,a,b,B\n",
    );
    let (records, _) = load(&path);
    assert_eq!(records[0].as_mc().unwrap().answer, 1);
}

/// A tiny deterministic generator, so the fuzz cases are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn random_bytes_and_truncations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = [
        "{\"text\": \"hello\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n",
        "id,question,A,B,C,D,answer\n0,\"q, with\nnewline\",a,b,c,d,C\n1,q,a,b,c,d,A\n",
        "\"q\",a,b,c,d,B\nq2,a,b,c,d,A\n",
    ];
    let mut rng = Lcg(42);
    for name in ["fuzz.jsonl", "fuzz.json", "fuzz.csv"] {
        for seed in seeds {
            // Every truncation of a valid file.
            for cut in 0..=seed.len() {
                let path = write(dir.path(), name, &seed.as_bytes()[..cut]);
                for opts in [UserDataOptions::default(), skip()] {
                    let _ = load_user_file(&path, &opts);
                }
            }
            // Random byte flips.
            for _ in 0..200 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % bytes.len();
                    bytes[i] = rng.next() as u8;
                }
                let path = write(dir.path(), name, &bytes);
                let _ = load_user_file(&path, &skip());
            }
        }
        // Pure noise.
        for _ in 0..100 {
            let len = (rng.next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let path = write(dir.path(), name, &bytes);
            for opts in [UserDataOptions::default(), skip()] {
                let _ = load_user_file(&path, &opts);
            }
        }
    }
}
