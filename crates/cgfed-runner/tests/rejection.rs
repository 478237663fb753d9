//! Malformed payloads are rejected and counted; the round goes on, and a round with no
//! valid update is skipped (global state unchanged), never a crash.

use crate::common;

use cgfed_core::builtin::none::NoCompression;
use cgfed_core::{
    config::PluginTable, ClientState, Factory, GradientCompressor, Payload, Plugin, Result,
    RoundCtx, Update,
};
use cgfed_plugins as _;
use cgfed_runner::{run_experiment, Quiet};
use common::{read_metrics, small_config};
use serde::Deserialize;

/// Dense f32 (it writes `none` headers), but the clients listed in `corrupt` send their
/// payload with its last byte cut off.
struct Flaky {
    corrupt: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyConfig {
    corrupt: Vec<usize>,
}

impl GradientCompressor for Flaky {
    fn name(&self) -> &str {
        "none"
    }
    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        let p = NoCompression.compress(update, state, ctx)?;
        if ctx.client.is_some_and(|c| self.corrupt.contains(&c)) {
            let mut b = p.into_bytes();
            b.pop();
            return Ok(Payload::from_bytes(b));
        }
        Ok(p)
    }
    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        NoCompression.decompress(payload, ctx)
    }
}

fn build(t: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: FlakyConfig = t.parse()?;
    Ok(Box::new(Flaky {
        corrupt: cfg.corrupt,
    }))
}

cgfed_core::inventory::submit! {
    Plugin { name: "test-flaky", summary: "test only: truncates some clients' payloads", params: &[], factory: Factory::Compressor(build) }
}

#[test]
fn malformed_payloads_are_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "flaky",
        dir.path(),
        &[
            "compressor.name=test-flaky",
            "compressor.corrupt=[0, 1]",
            "federation.clients_per_round=4",
        ],
    );
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    let m = read_metrics(&cfg);
    for r in &m {
        assert_eq!(r.rejected_updates, 2, "round {}", r.round);
        assert_eq!(r.participants, 2);
        assert!(!r.skipped);
        for c in &r.clients {
            assert_eq!(c.rejected, c.client < 2, "client {}", c.client);
        }
    }
    assert_eq!(s.rejected_updates, 2 * m.len());
    assert!(
        s.final_eval_loss < s.initial_eval_loss,
        "the valid clients still train the model"
    );
}

#[test]
fn a_round_with_no_valid_update_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "all-bad",
        dir.path(),
        &[
            "compressor.name=test-flaky",
            "compressor.corrupt=[0, 1, 2, 3]",
            "federation.rounds=2",
        ],
    );
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    let m = read_metrics(&cfg);
    assert!(m.iter().all(|r| r.skipped && r.participants == 0));
    assert_eq!(s.skipped_rounds, 2);
    // Nothing was applied: the held-out loss is exactly the initial one.
    assert_eq!(s.final_eval_loss, s.initial_eval_loss);
}
