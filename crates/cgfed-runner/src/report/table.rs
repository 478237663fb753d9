//! The report's rows as a fixed-width terminal table and as Markdown, and the number
//! formats they share.

use super::{preferred_accuracy, trim_number, Report, ReportRow};

/// One line per column of the Markdown table, for "How to read it" in `report.md`.
pub(super) const COLUMN_NOTES: [(&str, &str); 16] = [
    ("variant", "the run's label; **compressor** is how its compressor describes itself (wrappers included)"),
    ("rounds", "training rounds, with calibration rounds (dense, before compression starts) in brackets"),
    ("initial / final / best loss", "held-out eval loss in nats per target token before the first round, after the last, and the lowest seen; lower is better"),
    ("vs ref", "relative change of the final eval loss against the reference run (+1.7% = 1.7% higher loss)"),
    ("acc_*", "multiple-choice accuracy after the last round (`cloze`: summed log-likelihood of the answer, `cloze_norm`: per-character normalised, `letter`: likelihood of the answer letter)"),
    ("uplink bytes", "every byte clients sent over the run (payload lengths, headers included)"),
    ("downlink bytes", "every byte the server sent (global state to each sampled client, plus artifacts)"),
    ("ratio", "total dense f32 size of the updates over total uplink bytes (1× is no compression)"),
    ("SNR dB", "mean over rounds of the mean reconstruction SNR of the decoded updates, 10·log10(‖x‖²/‖x−x̂‖²); `exact` when every reconstruction was lossless"),
    ("cosine", "mean over rounds of the mean cosine similarity between true and decoded updates"),
    ("rounds→target", "the first round (numbered as in metrics.jsonl, calibration included) whose eval loss reached the target; — if none did"),
    ("uplink→target", "cumulative uplink bytes at that round: the communication cost of reaching the target"),
    ("s/round", "mean seconds per round: train + encode + decode + aggregate + eval"),
    ("train / encode / decode ms", "mean per round of local training and compression (summed over clients) and server decoding"),
    ("aggregate / eval ms", "mean per round of aggregation with the global update, and of evaluation"),
    ("wall s", "wall-clock time of the whole run"),
];

/// `n` bytes in decimal units with 3 significant digits and no trailing zeros: `512 B`,
/// `1.23 kB`, `3.5 MB`, `29.5 MB`, `1 GB`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    loop {
        let decimals = if v >= 100.0 {
            0
        } else if v >= 10.0 {
            1
        } else {
            2
        };
        // Rounding can carry into the next unit (999.9 kB → 1000 kB → 1 MB).
        if format!("{v:.decimals$}").parse::<f64>().unwrap_or(v) >= 1000.0 && unit + 1 < UNITS.len()
        {
            v /= 1000.0;
            unit += 1;
            continue;
        }
        return format!("{} {}", trim_number(v, decimals), UNITS[unit]);
    }
}

/// `n` with a comma between groups of three digits: `29,491,248`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn loss(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "-".into()
    }
}

fn vs_ref(report: &Report, row: &ReportRow) -> String {
    if row.variant == report.reference {
        "ref".into()
    } else {
        row.vs_reference.map_or_else(
            || "-".into(),
            |v| {
                let pct = v * 100.0;
                let decimals = if pct.abs() < 1.0 { 2 } else { 1 };
                format!("{pct:+.decimals$}%")
            },
        )
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn ratio(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    let decimals = if r >= 100.0 {
        0
    } else if r >= 10.0 {
        1
    } else {
        2
    };
    format!("{r:.decimals$}×")
}

fn snr(v: Option<f64>) -> String {
    v.map_or_else(|| "exact".into(), |v| format!("{v:.1}"))
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// The accuracy key shown in the single accuracy column of the terminal table.
fn terminal_accuracy_key(report: &Report) -> Option<String> {
    preferred_accuracy(report.rows.iter().flat_map(|r| r.accuracy.keys()))
}

/// Every accuracy key of any row, preferred ones first.
fn accuracy_keys(report: &Report) -> Vec<String> {
    let all: std::collections::BTreeSet<&String> =
        report.rows.iter().flat_map(|r| r.accuracy.keys()).collect();
    let mut keys: Vec<String> = super::ACCURACY_PREFERENCE
        .iter()
        .filter(|k| all.iter().any(|x| x.as_str() == **k))
        .map(|k| k.to_string())
        .collect();
    keys.extend(
        all.into_iter()
            .filter(|k| !super::ACCURACY_PREFERENCE.contains(&k.as_str()))
            .cloned(),
    );
    keys
}

/// A fixed-width table for the terminal: variant, final loss, change against the
/// reference, accuracy (the preferred metric, when any run has one), uplink in human
/// units, compression ratio, mean SNR, rounds to the target and seconds per round; then a
/// line with the target rule.
pub fn terminal_table(report: &Report) -> String {
    let acc = terminal_accuracy_key(report);
    let mut header = vec!["variant".to_string(), "final loss".into(), "vs ref".into()];
    if let Some(k) = &acc {
        header.push(k.clone());
    }
    header.extend(
        ["uplink", "ratio", "SNR dB", "rounds→target", "s/round"]
            .iter()
            .map(|s| s.to_string()),
    );
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.variant.clone(),
                loss(r.final_eval_loss),
                vs_ref(report, r),
            ];
            if let Some(k) = &acc {
                cells.push(percent(r.accuracy.get(k).copied()));
            }
            cells.extend([
                human_bytes(r.total_uplink_bytes),
                ratio(r.ratio),
                snr(r.mean_snr_db),
                r.rounds_to_target
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                seconds(r.seconds_per_round()),
            ]);
            cells
        })
        .collect();

    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([header[c].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[c] - cell.chars().count());
            if c == 0 {
                s.push_str(cell);
                s.push_str(&pad);
            } else {
                s.push_str("  ");
                s.push_str(&pad);
                s.push_str(cell);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out.push_str(&format!("target: {}\n", report.target_rule));
    out
}

/// Escape a cell for a Markdown table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown_rows(header: &[String], right_from: usize, rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|", header.join(" | "));
    for c in 0..header.len() {
        out.push_str(if c >= right_from { " ---: |" } else { " --- |" });
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

/// The rows as Markdown: the main table (losses, accuracy per metric, exact byte counts,
/// ratio, quality, rounds and uplink to the target, seconds per round), then a table of
/// the mean time per round of each part.
pub fn markdown_table(report: &Report) -> String {
    let acc = accuracy_keys(report);
    let mut header: Vec<String> = [
        "variant",
        "compressor",
        "rounds",
        "initial loss",
        "final loss",
        "best loss",
        "vs ref",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(acc.iter().cloned());
    header.extend(
        [
            "uplink bytes",
            "downlink bytes",
            "ratio",
            "SNR dB",
            "cosine",
            "rounds→target",
            "uplink→target",
            "s/round",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let dash = || "—".to_string();
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let rounds = if r.calibration_rounds > 0 {
                format!("{} (+{} cal)", r.rounds, r.calibration_rounds)
            } else {
                r.rounds.to_string()
            };
            let mut cells = vec![
                format!("`{}`", cell(&r.variant)),
                cell(&r.compressor),
                rounds,
                loss(r.initial_eval_loss),
                loss(r.final_eval_loss),
                loss(r.best_eval_loss),
                vs_ref(report, r),
            ];
            cells.extend(acc.iter().map(|k| percent(r.accuracy.get(k).copied())));
            cells.extend([
                thousands(r.total_uplink_bytes),
                thousands(r.total_downlink_bytes),
                ratio(r.ratio),
                snr(r.mean_snr_db),
                r.mean_cosine.map_or_else(dash, |c| format!("{c:.4}")),
                r.rounds_to_target.map_or_else(dash, |n| n.to_string()),
                r.uplink_to_target.map_or_else(dash, thousands),
                seconds(r.seconds_per_round()),
            ]);
            cells
        })
        .collect();
    let mut out = markdown_rows(&header, 2, &rows);

    out.push_str("\nMean time per round (ms):\n\n");
    let header: Vec<String> = [
        "variant",
        "train",
        "encode",
        "decode",
        "aggregate",
        "eval",
        "wall s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let t = &r.time_ms;
            vec![
                format!("`{}`", cell(&r.variant)),
                ms(t.train),
                ms(t.encode),
                ms(t.decode),
                ms(t.aggregate),
                ms(t.eval),
                format!("{:.2}", r.wall_s),
            ]
        })
        .collect();
    out.push_str(&markdown_rows(&header, 1, &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_has_three_significant_digits() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1 kB");
        assert_eq!(human_bytes(1234), "1.23 kB");
        assert_eq!(human_bytes(512_000), "512 kB");
        assert_eq!(human_bytes(3_500_000), "3.5 MB");
        assert_eq!(human_bytes(29_491_248), "29.5 MB");
        assert_eq!(human_bytes(999_999), "1 MB");
        assert_eq!(human_bytes(99_960), "100 kB");
        assert_eq!(human_bytes(7_250_000_000), "7.25 GB");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(29_491_248), "29,491,248");
        assert_eq!(thousands(123_456), "123,456");
    }

    #[test]
    fn ratio_and_markdown_cells() {
        assert_eq!(ratio(56.123), "56.1×");
        assert_eq!(ratio(1.0), "1.00×");
        assert_eq!(ratio(250.4), "250×");
        assert_eq!(cell("a|b"), "a\\|b");
    }
}
