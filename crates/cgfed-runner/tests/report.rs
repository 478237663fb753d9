//! The comparison report over real tiny runs (`none`, `kbit`, `topk`, two rounds each):
//! rows and totals, the target rule, the files written (Markdown, JSON, SVG and PNG
//! plots), and the errors of bad run directories and options.

use crate::common;

use std::path::{Path, PathBuf};

use cgfed_plugins as _;
use cgfed_runner::report::{self, Report, ReportOptions, RunRecord};
use cgfed_runner::{run_experiment, Quiet};
use common::small_config;

/// Run the three variants into `out` and load them.
fn tiny_runs(out: &Path) -> Vec<RunRecord> {
    let variants: [(&str, &[&str]); 3] = [
        ("none", &[]),
        ("kbit", &["compressor.name=kbit", "compressor.bits=4"]),
        ("topk", &["compressor.name=topk", "compressor.ratio=0.05"]),
    ];
    variants
        .iter()
        .map(|(label, extra)| {
            let mut overrides = vec!["federation.rounds=2"];
            overrides.extend_from_slice(extra);
            let cfg = small_config(&format!("report-{label}"), out, &overrides);
            run_experiment(&cfg, &mut Quiet).unwrap();
            RunRecord::load(*label, &cfg.run_dir()).unwrap()
        })
        .collect()
}

/// Numbers equal up to the last bits (serde_json's default float parsing is not exact).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{at}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}: keys"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// Width and height from the IHDR chunk of a PNG, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "PNG too short");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn error_text<T: std::fmt::Debug>(r: cgfed_core::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn report_over_three_tiny_runs() {
    let dir = tempfile::tempdir().unwrap();
    let records = tiny_runs(&dir.path().join("runs"));

    // Rows in order, totals straight from the summaries.
    let report = report::build(&records, &ReportOptions::default()).unwrap();
    let labels: Vec<&str> = report.rows.iter().map(|r| r.variant.as_str()).collect();
    assert_eq!(labels, ["none", "kbit", "topk"]);
    assert_eq!(report.reference, "none");
    for (row, rec) in report.rows.iter().zip(&records) {
        let s = &rec.summary;
        assert_eq!(row.compressor, s.compressor);
        assert_eq!(row.rounds, 2);
        assert_eq!(row.calibration_rounds, 0);
        assert_eq!(row.total_uplink_bytes, s.total_uplink_bytes);
        assert_eq!(row.total_downlink_bytes, s.total_downlink_bytes);
        assert_eq!(
            row.total_uplink_bytes,
            rec.rounds.last().unwrap().cum_uplink_bytes
        );
        assert_eq!(row.initial_eval_loss, s.initial_eval_loss);
        assert_eq!(row.final_eval_loss, s.final_eval_loss);
        assert_eq!(row.best_eval_loss, s.best_eval_loss);
        assert_eq!(row.ratio, s.ratio);
        assert_eq!(row.wall_s, s.wall_s);
        let expect = s.final_eval_loss / records[0].summary.final_eval_loss - 1.0;
        assert!((row.vs_reference.unwrap() - expect).abs() < 1e-12);
        let train: f64 = rec.rounds.iter().map(|m| m.time_train_ms).sum::<f64>() / 2.0;
        assert!((row.time_ms.train - train).abs() < 1e-9);
        assert!(row.time_ms.train > 0.0);
    }
    let [none, kbit, topk] = &report.rows[..] else {
        panic!("three rows")
    };
    assert_eq!(none.vs_reference, Some(0.0));
    assert!((none.ratio - 1.0).abs() < 1e-3, "none ratio {}", none.ratio);
    assert!(kbit.ratio > 4.0, "4-bit ratio {}", kbit.ratio);
    assert!(topk.ratio > 2.0, "top-5% ratio {}", topk.ratio);
    assert_eq!(none.mean_snr_db, None, "dense f32 is exact");
    assert!(kbit.mean_snr_db.is_some() && topk.mean_snr_db.is_some());
    assert!(kbit.mean_cosine.unwrap() > 0.5 && kbit.mean_cosine.unwrap() <= 1.0 + 1e-9);

    // Default target: the reference's final loss × 1.02; the first round at or below it.
    let target = report.target_eval_loss.unwrap();
    assert!((target - none.final_eval_loss * 1.02).abs() < 1e-12);
    assert!(report.target_rule.contains("2%") && report.target_rule.contains("`none`"));
    for (row, rec) in report.rows.iter().zip(&records) {
        let first = rec.rounds.iter().find(|m| m.eval_loss.unwrap() <= target);
        assert_eq!(row.rounds_to_target, first.map(|m| m.round));
        assert_eq!(row.uplink_to_target, first.map(|m| m.cum_uplink_bytes));
    }
    assert!(
        none.rounds_to_target.is_some(),
        "the reference reaches its own target"
    );

    // An explicit target above every loss: everyone is there after round 1.
    let highest = records
        .iter()
        .map(|r| r.summary.initial_eval_loss)
        .fold(f64::MIN, f64::max);
    let easy = ReportOptions {
        target_eval_loss: Some(highest + 1.0),
        ..ReportOptions::default()
    };
    let r = report::build(&records, &easy).unwrap();
    assert_eq!(r.target_eval_loss, Some(highest + 1.0));
    for (row, rec) in r.rows.iter().zip(&records) {
        assert_eq!(row.rounds_to_target, Some(1), "{}", row.variant);
        assert_eq!(row.uplink_to_target, Some(rec.rounds[0].cum_uplink_bytes));
        assert!(row.uplink_to_target.unwrap() < row.total_uplink_bytes);
    }
    // One below every loss: nobody reaches it.
    let hard = ReportOptions {
        target_eval_loss: Some(0.0),
        ..ReportOptions::default()
    };
    let r = report::build(&records, &hard).unwrap();
    assert!(r
        .rows
        .iter()
        .all(|row| row.rounds_to_target.is_none() && row.uplink_to_target.is_none()));
    assert!(report::terminal_table(&r).contains(" -  "));

    // Another reference.
    let by_kbit = ReportOptions {
        reference: Some("kbit".into()),
        ..ReportOptions::default()
    };
    let r = report::build(&records, &by_kbit).unwrap();
    assert_eq!(r.reference, "kbit");
    assert_eq!(r.rows[1].vs_reference, Some(0.0));
    assert!((r.target_eval_loss.unwrap() - kbit.final_eval_loss * 1.02).abs() < 1e-12);

    // Bad options.
    let unknown = ReportOptions {
        reference: Some("fp8".into()),
        ..ReportOptions::default()
    };
    let msg = error_text(report::build(&records, &unknown));
    assert!(msg.contains("`fp8`") && msg.contains("`topk`"), "{msg}");
    assert!(error_text(report::build(&[], &ReportOptions::default())).contains("at least one"));
    let twice = vec![records[0].clone(), records[0].clone()];
    assert!(error_text(report::build(&twice, &ReportOptions::default())).contains("unique"));

    // Files.
    let out = dir.path().join("report");
    let paths = report::write(&report, &records, &out).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "report.md",
            "report.json",
            "loss_vs_uplink.svg",
            "loss_vs_uplink.png",
            "snr_vs_round.svg",
            "snr_vs_round.png"
        ],
        "no accuracy in these runs: no accuracy plot"
    );
    for p in &paths {
        assert_eq!(p.parent().unwrap(), out);
        assert!(
            std::fs::metadata(p).unwrap().len() > 0,
            "{} is empty",
            p.display()
        );
    }
    assert!(!out.join("accuracy_vs_round.svg").exists());

    let svg = std::fs::read_to_string(out.join("loss_vs_uplink.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    for label in [
        "none",
        "kbit",
        "topk",
        "cumulative uplink bytes (log)",
        "eval loss",
    ] {
        assert!(svg.contains(label), "loss plot lacks {label}");
    }
    let snr = std::fs::read_to_string(out.join("snr_vs_round.svg")).unwrap();
    assert!(snr.contains("kbit") && snr.contains("topk"));
    assert!(
        snr.contains("exact, not shown: none"),
        "SNR plot names the exact run"
    );
    for stem in ["loss_vs_uplink", "snr_vs_round"] {
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(png_size(&png), (900, 560), "{stem}.png");
    }

    let json = std::fs::read_to_string(out.join("report.json")).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.title, report.title);
    assert_eq!(back.target_rule, report.target_rule);
    assert_eq!(back.rows.len(), 3);
    assert_json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&report).unwrap(),
        "report",
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# cgfed comparison\n"));
    assert!(md.contains("| variant | compressor | rounds |"), "{md}");
    for label in ["`none`", "`kbit`", "`topk`"] {
        assert!(md.contains(label), "markdown lacks {label}");
    }
    assert!(md.contains(&report::thousands(none.total_uplink_bytes)));
    assert!(md.contains("![eval loss vs cumulative uplink](loss_vs_uplink.svg)"));
    assert!(md.contains("(snr_vs_round.svg)") && !md.contains("accuracy_vs_round"));
    assert!(md.contains(&report.target_rule));
    assert!(md.contains("## How to read it") && md.contains("- **uplink→target**"));
    assert_eq!(
        report::markdown_table(&report)
            .matches("| `kbit` |")
            .count(),
        2
    );

    let table = report::terminal_table(&report);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("variant") && lines[0].contains("rounds→target"));
    assert!(lines[2].starts_with("none") && lines[2].contains("ref") && lines[2].contains("exact"));
    assert!(lines[3].starts_with("kbit") && lines[4].starts_with("topk"));
    assert!(lines[2].contains(&report::human_bytes(none.total_uplink_bytes)));
    assert!(lines[5].starts_with("target: "));

    // With accuracy (as the engine writes it on evaluated rounds): the accuracy plot and
    // columns appear, the final accuracy comes from the summary.
    let mut with_acc = records.clone();
    for (i, rec) in with_acc.iter_mut().enumerate() {
        let acc = |v: f64| {
            [
                ("acc_cloze".to_string(), v),
                ("acc_cloze_norm".to_string(), v + 0.05),
            ]
            .into_iter()
            .collect()
        };
        rec.summary.initial_accuracy = acc(0.25);
        for (r, m) in rec.rounds.iter_mut().enumerate() {
            m.accuracy = acc(0.3 + 0.1 * r as f64 + 0.01 * i as f64);
        }
        rec.summary.final_accuracy = rec.rounds.last().unwrap().accuracy.clone();
    }
    let r = report::build(&with_acc, &ReportOptions::default()).unwrap();
    assert_eq!(
        r.rows[2].accuracy["acc_cloze_norm"],
        0.3 + 0.1 + 0.02 + 0.05
    );
    let out = dir.path().join("report-acc");
    let paths = report::write(&r, &with_acc, &out).unwrap();
    assert!(paths.contains(&out.join("accuracy_vs_round.svg")));
    assert!(paths.contains(&out.join("accuracy_vs_round.png")));
    let svg = std::fs::read_to_string(out.join("accuracy_vs_round.svg")).unwrap();
    assert!(svg.contains("acc_cloze_norm per round") && svg.contains("topk"));
    let png = std::fs::read(out.join("accuracy_vs_round.png")).unwrap();
    assert_eq!(png_size(&png), (900, 560));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| acc_cloze_norm | acc_cloze |"));
    assert!(report::terminal_table(&r)
        .lines()
        .next()
        .unwrap()
        .contains("acc_cloze_norm"));
    // The records must be the report's.
    assert!(error_text(report::write(&r, &with_acc[..2], &out)).contains("not the ones"));

    // A bad line in metrics.jsonl names the file and the line.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(
        records[0].dir.join("summary.json"),
        broken.join("summary.json"),
    )
    .unwrap();
    let good = std::fs::read_to_string(records[0].dir.join("metrics.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(
        broken.join("metrics.jsonl"),
        format!("{first}\n{{\"round\": 2,\n"),
    )
    .unwrap();
    let msg = error_text(RunRecord::load("broken", &broken));
    assert!(
        msg.contains(&format!("{}:2:", broken.join("metrics.jsonl").display())),
        "{msg}"
    );
}

#[test]
fn a_directory_without_summary_is_not_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), "").unwrap();
    let msg = error_text(RunRecord::load("x", dir.path()));
    let expected: PathBuf = dir.path().join("summary.json");
    assert!(msg.contains(&expected.display().to_string()), "{msg}");
    assert!(
        msg.contains("not a finished run (no summary.json)"),
        "{msg}"
    );
    let missing = dir.path().join("nope");
    let msg = error_text(RunRecord::load("x", &missing));
    assert!(
        msg.contains("nope") && msg.contains("no such run directory"),
        "{msg}"
    );
}

#[test]
fn byte_formats() {
    assert_eq!(report::human_bytes(512), "512 B");
    assert_eq!(report::human_bytes(512_000), "512 kB");
    assert_eq!(report::human_bytes(3_500_000), "3.5 MB");
    assert_eq!(report::human_bytes(29_491_248), "29.5 MB");
    assert_eq!(report::human_bytes(1_234_567_890), "1.23 GB");
    assert_eq!(report::thousands(29_491_248), "29,491,248");
}
