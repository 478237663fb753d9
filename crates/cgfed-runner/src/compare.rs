//! Side-by-side comparisons: one base experiment and several `[[variant]]`s of it, each run
//! in its own directory on the same data splits, seeds and initial model, then one report.
//!
//! ```toml
//! [experiment]
//! name = "quickstart"      # the comparison's directory: <output_dir>/quickstart/
//! seed = 0
//! # ... the base experiment: [model], [data], [federation], [trainer], [eval] ...
//!
//! [report]                 # optional
//! # reference = "none"     # the row the others are measured against (default: the first)
//! # target_within = 0.02   # target eval loss: the reference's final loss + 2 % ...
//! # target_eval_loss = 2.9 # ... or an absolute one
//!
//! [[variant]]
//! name = "none"            # its run directory: <output_dir>/quickstart/none/
//! compressor = "none"
//!
//! [[variant]]
//! name = "topk-ef"
//! compressor = { name = "topk", ratio = 0.01, error_feedback = true }
//! ```
//!
//! A variant is a set of overrides of the base: every key it sets replaces the base's, and
//! tables merge key by key, except a plugin table (`compressor`, `aggregator`, `trainer`,
//! `downlink`) that names its plugin (`name`, `kind`, or a plain string), which replaces the
//! base's table whole, so one compressor's keys never leak into another's. `--set`
//! overrides apply to every variant, after its own keys. A variant cannot set
//! `experiment.name` or `experiment.output_dir` (its directory comes from its name).
//!
//! [`Comparison::run_all`] runs the variants in order: a variant whose directory holds a
//! finished run of the same config is skipped, an interrupted one resumes from its
//! checkpoint ([`Experiment::resume`](crate::Experiment::resume)), the others run. The
//! comparison directory gets `comparison.json` (the variants in order) and the
//! [`report`](crate::report).

use std::path::{Path, PathBuf};

use cgfed_core::config::parse_table;
use cgfed_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::engine::{run_status, Observer, RunStatus};
use crate::metrics::RunSummary;
use crate::report::{ReportOptions, RunRecord};

/// Top-level tables that name a plugin: a variant that names another plugin replaces them.
const PLUGIN_TABLES: &[&str] = &["compressor", "aggregator", "trainer", "downlink"];

/// File name of the comparison manifest inside the comparison directory.
pub const MANIFEST: &str = "comparison.json";

/// One `[[variant]]`: a name and the keys it overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Its name, also the name of its run directory.
    pub name: String,
    /// The keys it sets (without `name`).
    pub overrides: toml::Table,
}

/// `[report]` of a comparison file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// Title of the report. Default: the experiment's name.
    #[serde(default)]
    pub title: Option<String>,
    /// The variant the others are measured against. Default: the first.
    #[serde(default)]
    pub reference: Option<String>,
    /// An absolute target eval loss for "rounds and bytes to reach the target".
    #[serde(default)]
    pub target_eval_loss: Option<f64>,
    /// Without `target_eval_loss`: the reference's final eval loss × (1 + this). Default
    /// 0.02.
    #[serde(default)]
    pub target_within: Option<f64>,
}

/// `comparison.json`: what `cgfed report DIR` needs to re-render a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The comparison's name (`experiment.name` of the file).
    pub name: String,
    /// The comparison file it was run from.
    pub config: PathBuf,
    /// The variants, in order (each a sub-directory).
    pub variants: Vec<String>,
    /// The `[report]` settings.
    pub report: ReportSection,
}

/// A comparison file, parsed and checked.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The file it was read from.
    pub path: PathBuf,
    /// `experiment.name` of the base.
    pub name: String,
    /// The comparison directory: `<output_dir>/<name>`.
    pub dir: PathBuf,
    /// The variants, in file order.
    pub variants: Vec<Variant>,
    /// `[report]`.
    pub report: ReportSection,
    base: toml::Table,
    overrides: Vec<String>,
}

/// Reports progress while [`Comparison::run_all`] goes on.
pub trait CompareObserver {
    /// A variant is about to start (or be skipped, when `status` is finished).
    fn on_variant(&mut self, _index: usize, _name: &str, _status: &RunStatus) {}
    /// The observer of the variant's run.
    fn run_observer(&mut self) -> &mut dyn Observer;
    /// A variant finished (or was skipped) with this summary.
    fn on_variant_done(&mut self, _name: &str, _summary: &RunSummary) {}
}

/// Read the comparison file at `path`; `overrides` (`key=value`) apply to every variant.
///
/// # Errors
/// TOML errors, a file without `[[variant]]`s, variants without a unique directory-safe
/// `name` or that set `experiment.name`/`output_dir`, and any variant whose resolved
/// config does not validate; every error names the file, and variant errors the variant.
pub fn load_comparison(path: &Path, overrides: &[String]) -> Result<Comparison> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path, overrides).map_err(|e| e.in_file(path))
}

fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Comparison> {
    let mut base: toml::Table =
        toml::from_str(text).map_err(|e| Error::config("", format!("invalid TOML: {e}")))?;
    let report = match base.remove("report") {
        Some(toml::Value::Table(t)) => parse_table(&t, "report")?,
        Some(_) => return Err(Error::config("report", "must be a table")),
        None => ReportSection::default(),
    };
    let raw = match base.remove("variant") {
        Some(toml::Value::Array(a)) => a,
        Some(_) => {
            return Err(Error::config(
                "variant",
                "must be an array of tables: write each as `[[variant]]`",
            ))
        }
        None => Vec::new(),
    };
    if raw.is_empty() {
        return Err(Error::config(
            "variant",
            "a comparison needs at least one `[[variant]]` table (with `name` and the keys it \
             overrides); to run a single experiment use `cgfed run`",
        ));
    }
    let mut variants: Vec<Variant> = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let key = format!("variant[{i}]");
        let toml::Value::Table(mut t) = v else {
            return Err(Error::config(key, "must be a table"));
        };
        let name = match t.remove("name") {
            Some(toml::Value::String(s)) => s,
            _ => {
                return Err(Error::config(
                    format!("{key}.name"),
                    "every variant needs a `name` (a string: its directory)",
                ))
            }
        };
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::config(
                format!("{key}.name"),
                format!("`{name}` must be a non-empty directory name without slashes"),
            ));
        }
        if variants.iter().any(|v| v.name == name) {
            return Err(Error::config(
                format!("{key}.name"),
                format!("`{name}` names two variants; names must be unique"),
            ));
        }
        if let Some(toml::Value::Table(e)) = t.get("experiment") {
            for k in ["name", "output_dir"] {
                if e.contains_key(k) {
                    return Err(Error::config(
                        format!("{key}.experiment.{k}"),
                        "a variant's directory comes from its `name`; it cannot set this",
                    ));
                }
            }
        }
        variants.push(Variant { name, overrides: t });
    }
    let exp = base.get("experiment").and_then(|e| e.as_table());
    let name = exp
        .and_then(|e| e.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::config("experiment.name", "missing (the comparison's directory)"))?
        .to_string();
    let output_dir = exp
        .and_then(|e| e.get("output_dir"))
        .and_then(|n| n.as_str())
        .unwrap_or("runs");
    let cmp = Comparison {
        path: path.to_path_buf(),
        dir: PathBuf::from(output_dir).join(&name),
        name,
        variants,
        report,
        base,
        overrides: overrides.to_vec(),
    };
    if let Some(r) = &cmp.report.reference {
        if !cmp.variants.iter().any(|v| &v.name == r) {
            return Err(Error::config(
                "report.reference",
                format!(
                    "`{r}` is not a variant; the variants are: {}",
                    cmp.names().join(", ")
                ),
            ));
        }
    }
    for i in 0..cmp.variants.len() {
        cmp.config(i)?;
    }
    Ok(cmp)
}

/// `base` with `over` merged in (see the module docs for the rule).
pub fn merge(base: &toml::Table, over: &toml::Table) -> toml::Table {
    fn names_plugin(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(_) => true,
            toml::Value::Table(t) => t.contains_key("name") || t.contains_key("kind"),
            _ => false,
        }
    }
    fn deep(base: &mut toml::Table, over: &toml::Table, top: bool) {
        for (k, v) in over {
            let replace = top && PLUGIN_TABLES.contains(&k.as_str()) && names_plugin(v);
            match (base.get_mut(k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !replace => {
                    deep(b, o, false)
                }
                _ => {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut out = base.clone();
    deep(&mut out, over, true);
    out
}

impl Comparison {
    /// The variants' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.variants.iter().map(|v| v.name.clone()).collect()
    }

    /// The resolved config of variant `i`: the base with the variant's keys, then the
    /// `--set` overrides, run in `<dir>/<variant name>`.
    ///
    /// # Errors
    /// A config that does not validate; the error names the variant.
    pub fn config(&self, i: usize) -> Result<ExperimentConfig> {
        let v = &self.variants[i];
        let mut table = merge(&self.base, &v.overrides);
        let exp = table
            .entry("experiment")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(e) = exp {
            e.insert("name".into(), toml::Value::String(v.name.clone()));
            e.insert(
                "output_dir".into(),
                toml::Value::String(self.dir.display().to_string()),
            );
        }
        ExperimentConfig::from_table(table, &self.overrides).map_err(|e| match e {
            Error::Config { key, message } => Error::config(
                key,
                format!("{message} (in variant `{}` after merging)", v.name),
            ),
            e => e,
        })
    }

    /// The `[report]` settings as report options.
    pub fn report_options(&self) -> ReportOptions {
        report_options(&self.report, &self.name)
    }

    /// The manifest written to `comparison.json`.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            name: self.name.clone(),
            config: self.path.clone(),
            variants: self.names(),
            report: self.report.clone(),
        }
    }

    /// Run every variant in order (skipping finished ones, resuming interrupted ones),
    /// write `comparison.json`, and return the finished runs in order.
    ///
    /// # Errors
    /// The first variant that fails (the ones before it stay finished; a re-run skips
    /// them), or a variant directory written by a different config.
    pub fn run_all(&self, observer: &mut dyn CompareObserver) -> Result<Vec<RunRecord>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let manifest = serde_json::to_vec_pretty(&self.manifest())
            .map_err(|e| Error::Other(format!("cannot serialise the manifest: {e}")))?;
        crate::checkpoint::write_atomic(&self.dir.join(MANIFEST), &manifest)?;
        let mut records = Vec::new();
        // Initial evaluations by what determines them (see `initial_key`).
        let mut initial: Vec<(String, crate::checkpoint::Progress)> = Vec::new();
        for (i, v) in self.variants.iter().enumerate() {
            let cfg = self.config(i)?;
            let key = initial_key(&cfg);
            let status =
                run_status(&cfg).map_err(|e| Error::Other(format!("variant `{}`: {e}", v.name)))?;
            observer.on_variant(i, &v.name, &status);
            let summary = match status {
                RunStatus::Finished(s) => *s,
                _ => {
                    let mut exp = crate::config::build_from_file(&cfg, &self.path)?;
                    if let Some((_, p)) = initial.iter().find(|(k, _)| *k == key) {
                        exp.set_initial_evaluation(p.initial_eval_loss, p.initial_accuracy.clone());
                    }
                    exp.resume(observer.run_observer())?
                }
            };
            if let Some(dir) = crate::checkpoint::latest(&cfg.run_dir())? {
                if !initial.iter().any(|(k, _)| *k == key) {
                    initial.push((key, crate::checkpoint::Progress::load(&dir)?));
                }
            }
            observer.on_variant_done(&v.name, &summary);
            records.push(RunRecord::load(v.name.clone(), &cfg.run_dir())?);
        }
        Ok(records)
    }
}

/// What the evaluation before the first round depends on: the seed (initial model, data
/// split), `[model]`, `[lora]`, `[data]` and `[eval]`. Variants that agree on these share
/// one initial evaluation.
fn initial_key(cfg: &ExperimentConfig) -> String {
    let parts = (
        cfg.experiment.seed,
        &cfg.model,
        &cfg.lora,
        &cfg.data,
        &cfg.eval,
        &cfg.trainer,
    );
    serde_json::to_string(&parts).unwrap_or_default()
}

/// Report options from a `[report]` section (`title` defaults to `name`).
pub fn report_options(r: &ReportSection, name: &str) -> ReportOptions {
    let d = ReportOptions::default();
    ReportOptions {
        title: r.title.clone().unwrap_or_else(|| name.to_string()),
        target_eval_loss: r.target_eval_loss,
        reference: r.reference.clone(),
        target_within: r.target_within.unwrap_or(d.target_within),
    }
}

/// The runs under `dir` for `cgfed report`: the variants of a comparison directory (its
/// `comparison.json`, in order, with its `[report]` settings), or `dir` itself when it is a
/// finished run directory.
///
/// # Errors
/// A directory that is neither, or runs that cannot be read.
pub fn records_in(dir: &Path) -> Result<(Vec<RunRecord>, Option<ReportSection>)> {
    let manifest = dir.join(MANIFEST);
    if manifest.exists() {
        let bytes = std::fs::read(&manifest).map_err(|e| Error::io(&manifest, e))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("{}: {e}", manifest.display())))?;
        let records = m
            .variants
            .iter()
            .filter(|v| dir.join(v).join("summary.json").exists())
            .map(|v| RunRecord::load(v.clone(), &dir.join(v)))
            .collect::<Result<Vec<_>>>()?;
        if records.is_empty() {
            return Err(Error::Other(format!(
                "{}: no variant of this comparison has finished yet",
                dir.display()
            )));
        }
        return Ok((records, Some(m.report)));
    }
    let label = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok((vec![RunRecord::load(label, dir)?], None))
}
