//! Terminal output of a run: a progress bar over rounds and a per-round table.

use cgfed_runner::{
    AccuracyReport, CalibrationSummary, Evaluation, Observer, RoundMetrics, RunInfo, RunSummary,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints the run header, one table row per round, and a progress bar.
pub struct Progress {
    bar: Option<ProgressBar>,
    show_bar: bool,
    /// Skip the data summary in the header (later variants of a comparison share it).
    brief: bool,
}

impl Progress {
    /// `show_bar = false` prints only the table.
    pub fn new(show_bar: bool) -> Self {
        Self {
            bar: None,
            show_bar,
            brief: false,
        }
    }

    fn println(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => println!("{line}"),
        }
    }

    /// Print the summary after the last round.
    pub fn finish(&mut self, s: &RunSummary) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "\n{}: eval loss {:.4} -> {:.4} (best {:.4}, ppl {:.2}); uplink {} (ratio {:.2}x vs dense f32), downlink {}; {} rejected; {:.1}s",
            s.name,
            s.initial_eval_loss,
            s.final_eval_loss,
            s.best_eval_loss,
            s.final_perplexity,
            human_bytes(s.total_uplink_bytes),
            s.ratio,
            human_bytes(s.total_downlink_bytes),
            s.rejected_updates,
            s.wall_s
        );
        if s.skipped_rounds + s.dropped_clients + s.stragglers > 0
            || !s.byzantine_clients.is_empty()
        {
            println!(
                "  faults: Byzantine clients {:?}, {} dropped, {} stragglers, {} rounds skipped",
                s.byzantine_clients, s.dropped_clients, s.stragglers, s.skipped_rounds
            );
        }
        if let Some(p) = &s.privacy {
            println!(
                "  privacy ({} mode): ({:.3}, {:e})-DP at the client level after {} rounds (RDP order {}, q {}, sigma {})",
                p.mode,
                p.epsilon,
                p.delta,
                p.steps,
                p.order,
                p.sampling_rate.map_or("mixed".into(), |q| format!("{q:.4}")),
                p.noise_multiplier.map_or("mixed".into(), |v| v.to_string()),
            );
        }
        if let Some(c) = &s.calibration {
            print!("{}", tgap_report(c));
        }
        for r in &s.accuracy_reports {
            let before: Vec<String> = r
                .metrics
                .keys()
                .filter_map(|k| {
                    s.initial_accuracy
                        .get(k)
                        .map(|v| format!("{k} {:.1}%", v * 100.0))
                })
                .collect();
            println!(
                "  final {} (before: {})",
                accuracy_line(r),
                before.join(", ")
            );
        }
    }
}

/// `cloze accuracy on 570 items: acc_cloze 41.2%, acc_cloze_norm 44.0% (chance 26.1%)`.
pub fn accuracy_line(r: &AccuracyReport) -> String {
    let m: Vec<String> = r
        .metrics
        .iter()
        .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
        .collect();
    format!(
        "{} accuracy on {} items: {} (chance {:.1}%)",
        r.scoring,
        r.items,
        m.join(", "),
        r.chance * 100.0
    )
}

/// What calibration trained on and cost, and the fitted codec's held-out quality against
/// the input-blind predictors (printed by `cgfed tgap` and after a calibrating run).
pub fn tgap_report(c: &CalibrationSummary) -> String {
    let mut s = format!(
        "  calibration: {} dense round(s) on D1 ({} examples{}), D2 {} examples; {} up, {} down\n",
        c.rounds,
        c.d1_examples,
        c.split
            .map(|f| format!(", {:.0} % of each client's", f * 100.0))
            .unwrap_or_default(),
        c.d2_examples,
        human_bytes(c.uplink_bytes),
        human_bytes(c.downlink_bytes),
    );
    let get = |k: &str| c.fit.get(k).copied();
    if get("tgap_heldout_cosine").is_some() || get("tgap_heldout_snr_db").is_some() {
        s.push_str(&format!(
            "  held-out ({} snapshots): {:>10} {:>8} {:>12} {:>8}\n",
            get("tgap_heldout_snapshots").unwrap_or(0.0),
            "snr_db",
            "cosine",
            "snr_paper",
            "rel_err"
        ));
        for (label, p) in [
            ("codec", "tgap_heldout"),
            ("codec on its training set", "tgap_train"),
            ("zero predictor", "tgap_zero"),
            ("mean predictor", "tgap_mean"),
            ("mean + codec scales", "tgap_mean_gain"),
        ] {
            let f =
                |m: &str| get(&format!("{p}_{m}")).map_or("-".to_string(), |v| format!("{v:.4}"));
            s.push_str(&format!(
                "    {label:<28} {:>10} {:>8} {:>12} {:>8}\n",
                f("snr_db"),
                f("cosine"),
                f("snr_paper"),
                f("rel_err")
            ));
        }
    }
    s
}

/// The `cgfed eval` report: loss, perplexity, accuracy with per-category rows.
pub fn eval_report(ev: &Evaluation) -> String {
    let mut s = format!(
        "eval loss {:.4} (ppl {:.2}) over {} target tokens; {:.1}s\n",
        ev.loss, ev.perplexity, ev.tokens, ev.seconds
    );
    for r in &ev.accuracy {
        s.push_str(&accuracy_line(r));
        s.push('\n');
        for (cat, m) in &r.by_category {
            let v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
                .collect();
            s.push_str(&format!("  {cat:<16} {}\n", v.join(", ")));
        }
    }
    s
}

impl Observer for Progress {
    fn on_start(&mut self, info: &RunInfo) {
        println!("run {} -> {}", info.name, info.run_dir.display());
        println!("  trainer:    {}", info.trainer);
        println!(
            "  compressor: {}   aggregator: {}",
            info.compressor, info.aggregator
        );
        if self.brief {
            println!("  data:       as above");
        } else {
            println!(
                "  data:       {}",
                info.partition.trim_end().replace('\n', "\n              ")
            );
        }
        println!("  initial eval loss {:.4}", info.initial_eval_loss);
        if info.resumed_from > 0 {
            println!(
                "  resuming after round {} (restored from the checkpoint)",
                info.resumed_from
            );
        }
        for r in &info.initial_accuracy {
            println!("  initial {}", accuracy_line(r));
        }
        println!(
            "{:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>7} {:>8} {:>8}",
            "round",
            "phase",
            "train_loss",
            "eval_loss",
            "uplink",
            "cum_up",
            "ratio",
            "snr_db",
            "time_s"
        );
        let total = (info.calibration_rounds + info.rounds) as u64;
        if self.show_bar {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:30} {pos}/{len} rounds {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(info.resumed_from as u64);
            self.bar = Some(bar);
        }
    }

    fn on_round(&mut self, m: &RoundMetrics) {
        let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
        let secs = (m.time_train_ms
            + m.time_encode_ms
            + m.time_decode_ms
            + m.time_aggregate_ms
            + m.time_eval_ms)
            / 1e3;
        let snr = match (m.quality.snr_db, m.quality.rel_err) {
            (None, Some(0.0)) => "exact".to_string(),
            (v, _) => fmt(v, 1),
        };
        self.println(format!(
            "{:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>7.2} {:>8} {:>8.2}",
            m.round,
            if m.phase == cgfed_core::Phase::Train {
                "train"
            } else {
                "calib"
            },
            fmt(m.train_loss, 4),
            fmt(m.eval_loss, 4),
            human_bytes(m.uplink_bytes),
            human_bytes(m.cum_uplink_bytes),
            m.ratio,
            snr,
            secs
        ));
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "loss {}  up {}",
                fmt(m.eval_loss.or(m.train_loss), 4),
                human_bytes(m.cum_uplink_bytes)
            ));
            b.inc(1);
        }
    }
}

/// Prints one header line per variant of a comparison and drives a [`Progress`] for each.
pub struct CompareProgress {
    run: Progress,
    total: usize,
}

impl CompareProgress {
    /// For `total` variants; `show_bar` as in [`Progress::new`].
    pub fn new(show_bar: bool, total: usize) -> Self {
        Self {
            run: Progress::new(show_bar),
            total,
        }
    }
}

impl cgfed_runner::CompareObserver for CompareProgress {
    fn on_variant(&mut self, index: usize, name: &str, status: &cgfed_runner::RunStatus) {
        use cgfed_runner::RunStatus;
        let what = match status {
            RunStatus::Finished(_) => "finished earlier, skipped".to_string(),
            RunStatus::Interrupted { from: 0, .. } => {
                "interrupted before its calibration fit, starting over".to_string()
            }
            RunStatus::Interrupted { round, total, .. } => {
                format!("interrupted after round {round} of {total}, resuming")
            }
            RunStatus::New => "running".to_string(),
        };
        println!(
            "\n=== variant {}/{}: {name} ({what})",
            index + 1,
            self.total
        );
    }

    fn run_observer(&mut self) -> &mut dyn Observer {
        &mut self.run
    }

    fn on_variant_done(&mut self, _name: &str, summary: &RunSummary) {
        self.run.finish(summary);
        self.run.brief = true;
    }
}

/// `1.5 MB`-style sizes (decimal units, bytes below 1 kB).
pub fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.2} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}
