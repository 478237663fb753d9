//! # custom-compressor: a cgfed compressor plugin written outside the repository
//!
//! This crate is the worked example of `examples/custom-compressor/README.md`: a complete
//! compressor plugin that depends on `cgfed-core` only, registers itself with the core
//! registry, and is then usable from any TOML config by name, with the core wrappers
//! (`error_feedback`, `warmup_rounds`, `dense_fallback`) applied to it automatically.
//!
//! ## `ternary`: stochastic ternary quantization (TernGrad)
//!
//! TernGrad (Wen et al. 2017), per block. Each tensor is cut into blocks of `block_size`
//! consecutive elements (the last block of a tensor may be shorter; blocks never span two
//! tensors). A block with scale `s = max|x|` sends `s` and, per element, one of `{−s, 0, +s}`:
//!
//! ```text
//! x̂_i = sign(x_i)·s   with probability p_i = |x_i| / s
//! x̂_i = 0             otherwise
//! ```
//!
//! so `E[x̂_i] = x_i` (unbiased) with `Var[x̂_i] = s·|x_i| − x_i²`. The largest element of a
//! block has `p = 1` and always decodes exactly; a zero block has `s = 0` and decodes to
//! zeros. Cost: 2 bits per element plus 32 bits per block, 2.125 bits per element at the
//! default `block_size = 256` (a ratio of about 15 against f32).
//!
//! ```toml
//! [compressor]
//! name = "ternary"
//! block_size = 256        # >= 1
//! error_feedback = true   # a core wrapper key, works with every compressor
//! ```
//!
//! | key | default | accepted |
//! |---|---|---|
//! | `block_size` | `256` | an integer ≥ 1 |
//!
//! ## Randomness
//!
//! Reproducible from the [`RoundCtx`] alone: tensor `t` (named `name_t`) draws from a
//! SplitMix64 generator seeded with
//! `ctx.rng_seed(mix_seed(&[stream_of("ternary"), stream_of(name_t)]))` (see
//! [`cgfed_core::context`]), so the seed depends on the experiment seed, the round, the
//! client and the tensor. Element `j` of the tensor takes the `j`-th 64-bit output `r_j`
//! (one draw per element, zero blocks included), `u_j = (r_j >> 11)·2⁻⁵³ ∈ [0, 1)`, and is
//! sent non-zero iff `s > 0` and `u_j < |x_j| / s` (the ratio computed in f64). Seeding by
//! tensor name (not index) keeps the draws the same when a wrapper such as
//! `dense_fallback` hands the compressor one tensor at a time.
//!
//! # Wire format
//!
//! The payload is the exact bytes on the wire; its length is the uplink cost. All
//! multi-byte values are little-endian. The layout (tensor names and shapes) is not sent:
//! both ends know it from `ctx.layout`.
//!
//! Header ([`Payload::builder`]`("ternary")`, 9 bytes):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | wire version, [`cgfed_core::payload::WIRE_VERSION`] (`0x01`) |
//! | 1 | 1 | name length, `0x07` |
//! | 2 | 7 | `ternary` in ASCII |
//!
//! Body: for every tensor `t` of the layout, in layout order, with `n_t` elements and
//! `m_t = ceil(n_t / block_size)` blocks:
//!
//! | bytes | field |
//! |---|---|
//! | `4·m_t` | block scales `s = max\|x\|`, f32, finite, ≥ 0 (−0 rejected) |
//! | `ceil(n_t / 4)` | the `n_t` codes, 2 bits each: element `j` in bits `2·(j mod 4)` and `2·(j mod 4) + 1` of byte `⌊j / 4⌋` (least significant bits first); zero padding bits up to a whole byte |
//!
//! Codes: `0b00` → `0`, `0b01` → `+s`, `0b10` → `−s`; `0b11` is never written.
//!
//! Payload length (exact, asserted by the tests):
//!
//! ```text
//! len = 9 + Σ_t [ 4·ceil(n_t / block_size) + ceil(n_t / 4) ]
//! ```
//!
//! An empty layout is the header alone. [`Ternary::decompress`] returns
//! [`Error::MalformedPayload`] — and never panics — on a wrong header (version, name),
//! truncation, trailing bytes, a NaN, infinite or negative scale, the code `0b11`, non-zero
//! padding bits, a zero-scale block with non-zero codes, and a block with a positive scale
//! but no element at `±s` (the block maximum is always sent). Every length it reads is
//! computed from the layout, so no allocation is sized by the payload.
//!
//! ## Worked example
//!
//! One tensor of 5 elements, `block_size = 4`. Every `|x|` is `0` or its block's max, so
//! every `p` is 0 or 1 and the bytes do not depend on the random draws:
//!
//! ```
//! use cgfed_core::candle_core::Device;
//! use cgfed_core::{testkit, ClientState, GradientCompressor, Layout, TensorSpec, Update};
//! use custom_compressor::{Ternary, TernaryConfig};
//!
//! let layout = Layout::new(vec![TensorSpec { name: "t".into(), shape: vec![5] }]).unwrap();
//! let x = Update::from_flat(&layout, &[0.5, -0.5, 0.0, 0.5, 2.0], &Device::Cpu).unwrap();
//! let c = Ternary::new(TernaryConfig { block_size: 4 }).unwrap();
//! let ctx = testkit::ctx(&layout, 0, 0, 0);
//! let p = c.compress(&x, &mut ClientState::default(), &ctx).unwrap();
//! let mut want = vec![0x01, 0x07];                    // version, name length
//! want.extend_from_slice(b"ternary");                  // name
//! want.extend_from_slice(&0.5f32.to_le_bytes());       // block 0: s = 0.5
//! want.extend_from_slice(&2.0f32.to_le_bytes());       // block 1: s = 2.0
//! want.extend_from_slice(&[0b01_00_10_01, 0b01]);      // codes +s −s 0 +s | +s
//! assert_eq!(p.as_bytes(), want.as_slice());
//! assert_eq!(p.len(), c.payload_len(&layout));         // 9 + 4·2 + ceil(5/4) = 19
//! let y = c.decompress(&p, &ctx).unwrap().to_flat().unwrap();
//! assert_eq!(y, [0.5, -0.5, 0.0, 0.5, 2.0]);
//! ```
//!
//! ## Registration
//!
//! The crate registers `ternary` with `cgfed_core::inventory::submit!` (bottom of this
//! file). A binary that wants it must link this crate — `use custom_compressor as _;` —
//! because the linker drops crates nothing references, and their registrations with them.

use cgfed_core::config::{ensure, join_key, PluginTable};
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::toml::Value;
use cgfed_core::{
    ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload, Plugin, Result,
    RoundCtx, Update,
};

/// Registered name, also written in the payload header.
pub const NAME: &str = "ternary";

/// Default elements per block.
pub const DEFAULT_BLOCK_SIZE: usize = 256;

/// Code of an element sent as `0`.
pub const CODE_ZERO: u8 = 0b00;
/// Code of an element sent as `+s`.
pub const CODE_PLUS: u8 = 0b01;
/// Code of an element sent as `−s`.
pub const CODE_MINUS: u8 = 0b10;
/// The unused code; a payload containing it is malformed.
pub const CODE_INVALID: u8 = 0b11;

/// The plugin's own keys, as `cgfed list` shows them. Every default is a TOML value the
/// factory accepts (the tests build the plugin from them).
pub const PARAMS: &[Param] = &[Param {
    key: "block_size",
    default: "256",
    help: "elements per block (one f32 max|x| scale each), >= 1; blocks run within each tensor",
}];

/// Config of `ternary` (see the [crate docs](crate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TernaryConfig {
    /// Elements per block (one f32 scale each), ≥ 1. Default 256.
    pub block_size: usize,
}

impl Default for TernaryConfig {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl TernaryConfig {
    /// Read the plugin's keys from its table (the wrapper keys are already gone: the
    /// registry peels them off before calling the factory). Every error names the full
    /// key path (`compressor.block_size`) and what is accepted.
    ///
    /// The built-in plugins derive `serde::Deserialize` with `deny_unknown_fields` and
    /// call [`PluginTable::parse`]; this example reads the `toml` table by hand so that
    /// it needs no dependency besides `cgfed-core`. Both give the same kind of errors.
    pub fn from_table(table: &PluginTable) -> Result<Self> {
        let mut cfg = Self::default();
        for (key, value) in &table.params {
            let path = join_key(&table.key, key);
            match key.as_str() {
                "block_size" => cfg.block_size = block_size(&path, value)?,
                other => {
                    let accepted: Vec<String> =
                        PARAMS.iter().map(|p| format!("`{}`", p.key)).collect();
                    return Err(Error::config(
                        path,
                        format!(
                            "unknown key `{other}` for compressor `{NAME}`; accepted keys: {} \
                             (and the wrapper keys error_feedback, warmup_rounds, \
                             dense_fallback, values)",
                            accepted.join(", ")
                        ),
                    ));
                }
            }
        }
        cfg.validate(&table.key)?;
        Ok(cfg)
    }

    /// Check the ranges; errors name `key.block_size` (`key` is the table's path, e.g.
    /// `compressor`).
    pub fn validate(&self, key: &str) -> Result<()> {
        ensure(
            self.block_size >= 1,
            join_key(key, "block_size"),
            "must be an integer >= 1 (elements per block, one f32 scale each), got 0",
        )
    }
}

/// `block_size` from its TOML value: an integer ≥ 1.
fn block_size(path: &str, value: &Value) -> Result<usize> {
    let what = "elements per block, one f32 scale each";
    match value {
        Value::Integer(i) if *i >= 1 => usize::try_from(*i)
            .map_err(|_| Error::config(path, format!("{i} is too large for this platform"))),
        Value::Integer(i) => Err(Error::config(
            path,
            format!("must be an integer >= 1 ({what}), got {i}"),
        )),
        other => Err(Error::config(
            path,
            format!(
                "expected an integer >= 1 ({what}), found a {}",
                other.type_str()
            ),
        )),
    }
}

/// The ternary quantizer (see the [crate docs](crate)). Stateless: it keeps nothing about
/// clients, so one instance serves every client, in parallel (`&self`).
#[derive(Debug, Clone)]
pub struct Ternary {
    block: usize,
}

impl Default for Ternary {
    fn default() -> Self {
        Self {
            block: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl Ternary {
    /// A quantizer from a config, validated (errors name `ternary.<key>`).
    pub fn new(cfg: TernaryConfig) -> Result<Self> {
        cfg.validate(NAME)?;
        Ok(Self {
            block: cfg.block_size,
        })
    }

    /// Elements per block.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Exact payload length for `layout`, header included:
    /// `9 + Σ_t [4·ceil(n_t / block_size) + ceil(n_t / 4)]`.
    pub fn payload_len(&self, layout: &Layout) -> usize {
        Payload::header_len(NAME)
            + layout
                .specs()
                .iter()
                .map(|s| {
                    let n = s.numel();
                    4 * n.div_ceil(self.block) + n.div_ceil(4)
                })
                .sum::<usize>()
    }

    /// Scales (appended to `scales`) and packed codes (replacing `codes`) of one tensor.
    fn encode_tensor(
        &self,
        x: &[f32],
        rng: &mut SplitMix64,
        scales: &mut Vec<f32>,
        codes: &mut Vec<u8>,
    ) {
        codes.clear();
        codes.resize(x.len().div_ceil(4), 0);
        for (b, block) in x.chunks(self.block).enumerate() {
            // The input is finite (checked), so the max is finite and ≥ +0.
            let s = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            scales.push(s);
            let sd = s as f64;
            for (k, &v) in block.iter().enumerate() {
                let u = rng.next_unit();
                // f64 division: exactly 1.0 for the block maximum, so it is always sent.
                if s > 0.0 && u < v.abs() as f64 / sd {
                    let j = b * self.block + k;
                    let code = if v < 0.0 { CODE_MINUS } else { CODE_PLUS };
                    codes[j / 4] |= code << (2 * (j % 4));
                }
            }
        }
    }
}

/// The RNG seed of tensor `name` in `ctx` (see the crate docs, *Randomness*).
pub fn tensor_seed(ctx: &RoundCtx, name: &str) -> u64 {
    ctx.rng_seed(mix_seed(&[stream_of(NAME), stream_of(name)]))
}

/// SplitMix64 (Steele, Lea and Flood 2014): 64-bit state, one output per call. Small,
/// std-only and good enough for rounding decisions; any generator works as long as both
/// the documentation and the code say which.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform f64 in `[0, 1)`: the top 53 bits of the next output, times 2⁻⁵³.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl GradientCompressor for Ternary {
    fn name(&self) -> &str {
        NAME
    }

    fn describe(&self) -> String {
        format!("{NAME}(block {})", self.block)
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        // Inputs are validated like payloads: wrong layout or NaN/inf is an error.
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(NAME)?;
        p.reserve(self.payload_len(&ctx.layout) - Payload::header_len(NAME));
        let (mut scales, mut codes) = (Vec::new(), Vec::new());
        update.for_each_host(|_, spec, x| {
            let mut rng = SplitMix64::new(tensor_seed(ctx, &spec.name));
            scales.clear();
            self.encode_tensor(x, &mut rng, &mut scales, &mut codes);
            p.put_f32s(&scales);
            p.put_bytes(&codes);
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        // Header: version and name, or MalformedPayload.
        let mut r = payload.open(NAME)?;
        let mut parts = Vec::with_capacity(ctx.layout.len());
        for spec in ctx.layout.specs() {
            let n = spec.numel();
            // Both lengths come from the layout, never from the payload; `f32s` fails on
            // truncation and on NaN or infinity before anything is allocated from it.
            let scales = r.f32s(n.div_ceil(self.block))?;
            let codes = r.bytes(n.div_ceil(4))?;
            if n % 4 != 0 && codes.last().is_some_and(|&b| b >> (2 * (n % 4)) != 0) {
                return Err(Error::malformed(format!(
                    "non-zero padding bits after the codes of tensor `{}`",
                    spec.name
                )));
            }
            let mut out = Vec::with_capacity(n);
            for (b, &s) in scales.iter().enumerate() {
                if s.is_sign_negative() {
                    return Err(Error::malformed(format!(
                        "scale {s} of block {b} of tensor `{}` is negative",
                        spec.name
                    )));
                }
                let lo = b * self.block;
                let hi = lo.saturating_add(self.block).min(n);
                let mut sent = false;
                for j in lo..hi {
                    let code = (codes[j / 4] >> (2 * (j % 4))) & 0b11;
                    sent |= code != CODE_ZERO;
                    let v = match code {
                        CODE_ZERO => 0.0,
                        CODE_PLUS => s,
                        CODE_MINUS => -s,
                        // CODE_INVALID, the only value left after the 2-bit mask
                        _ => {
                            return Err(Error::malformed(format!(
                                "code 0b11 at element {j} of tensor `{}`",
                                spec.name
                            )))
                        }
                    };
                    out.push(v);
                }
                match (s == 0.0, sent) {
                    (true, true) => {
                        return Err(Error::malformed(format!(
                            "block {b} of tensor `{}` has scale 0 but non-zero codes",
                            spec.name
                        )))
                    }
                    (false, false) => {
                        return Err(Error::malformed(format!(
                            "block {b} of tensor `{}` has scale {s} but no element at ±{s} \
                             (its maximum is always sent)",
                            spec.name
                        )))
                    }
                    _ => {}
                }
            }
            parts.push(out);
        }
        r.finish()?; // trailing bytes are malformed
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

/// The factory the registry calls with the `[compressor]` table (wrapper keys removed).
fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg = TernaryConfig::from_table(table)?;
    Ok(Box::new(Ternary {
        block: cfg.block_size,
    }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "TernGrad: unbiased stochastic ternary {-s, 0, +s} per block, s = max|x|; 2 bits per element + one f32 per block (example plugin)",
        params: PARAMS,
        factory: Factory::Compressor(build),
    }
}
