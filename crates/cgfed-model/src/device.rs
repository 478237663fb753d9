//! Choosing the compute device from a config string, and the dtypes each device supports.
//!
//! Accepted device strings ([`parse_device`]):
//!
//! | value    | meaning                                                                 |
//! |----------|-------------------------------------------------------------------------|
//! | `auto`   | CUDA device 0 when built with the `cuda` feature and a GPU is usable, else the CPU |
//! | `cpu`    | the CPU                                                                 |
//! | `cuda`   | CUDA device 0 (an error when unusable)                                  |
//! | `cuda:N` | CUDA device `N` (an error when unusable)                                |
//!
//! `cuda` and `cuda:N` are errors, not silent CPU fallbacks, in a binary built without the
//! `cuda` feature (the default): rebuild with `--features cuda`, e.g. with
//! `scripts/build-cuda.sh`, which also works on machines without a GPU or a system CUDA.
//!
//! ```
//! use candle_core::DType;
//! use cgfed_model::device::{check_dtype_for_device, describe_device, parse_device};
//!
//! let cpu = parse_device("cpu")?;
//! assert_eq!(describe_device(&cpu), "cpu");
//! check_dtype_for_device(DType::F32, &cpu)?;
//! // half precision needs a GPU
//! assert!(check_dtype_for_device(DType::BF16, &cpu).is_err());
//! # Ok::<(), cgfed_core::Error>(())
//! ```

use candle_core::{DType, Device};
use cgfed_core::{Error, Result};

/// The config key device errors are reported at by [`parse_device`].
pub const DEVICE_KEY: &str = "model.device";

/// The config key dtype errors are reported at by [`check_dtype_for_device`].
pub const DTYPE_KEY: &str = "model.dtype";

/// The device strings [`parse_device`] accepts, for error messages and docs.
pub const ACCEPTED_DEVICES: &str = "auto, cpu, cuda, cuda:N (N = 0, 1, …)";

/// Whether this binary was built with the `cuda` feature.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Parse a device string (`auto`, `cpu`, `cuda`, `cuda:N`); errors name [`DEVICE_KEY`].
///
/// See the [module docs](self) for the meaning of each value. Surrounding whitespace and
/// ASCII case are ignored.
pub fn parse_device(spec: &str) -> Result<Device> {
    parse_device_at(DEVICE_KEY, spec)
}

/// [`parse_device`] for a device string found at config key `key` (e.g.
/// `experiment.device`), which errors name.
pub fn parse_device_at(key: &str, spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        "cuda" => cuda_device(key, spec, 0),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => match n.parse::<usize>() {
                Ok(ordinal) => cuda_device(key, spec, ordinal),
                Err(_) => Err(Error::config(
                    key,
                    format!(
                        "bad CUDA ordinal in \"{spec}\": expected `cuda:N` with N a \
                         non-negative integer; accepted: {ACCEPTED_DEVICES}"
                    ),
                )),
            },
            None => Err(Error::config(
                key,
                format!("unknown device \"{spec}\"; accepted: {ACCEPTED_DEVICES}"),
            )),
        },
    }
}

/// CUDA device 0 when this binary has the `cuda` feature and a GPU is usable, else the CPU.
///
/// This is what `auto` means; use `cuda` to make a missing GPU an error instead.
pub fn auto_device() -> Device {
    if cuda_compiled() && candle_core::utils::cuda_is_available() {
        if let Ok(device) = Device::new_cuda(0) {
            return device;
        }
    }
    Device::Cpu
}

fn cuda_device(key: &str, spec: &str, ordinal: usize) -> Result<Device> {
    if !cuda_compiled() {
        return Err(Error::config(
            key,
            format!(
                "device \"{spec}\" needs CUDA, but this binary was built without the `cuda` \
                 feature; rebuild with `--features cuda` (see scripts/build-cuda.sh), or use \
                 \"cpu\" or \"auto\""
            ),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        // the message without the backtrace candle attaches when RUST_BACKTRACE is set
        let mut e = &e;
        while let candle_core::Error::WithBacktrace { inner, .. } = e {
            e = inner;
        }
        Error::config(
            key,
            format!(
                "device \"{spec}\": CUDA device {ordinal} is not usable ({e}); check the driver, \
                 `nvidia-smi`, CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH (it needs the CUDA 13 \
                 libraries), or use \"cpu\""
            ),
        )
    })
}

/// A short name for a device: `cpu`, `cuda:0`, `metal:0`; the inverse of [`parse_device`]
/// for CPU and CUDA devices.
pub fn describe_device(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Error (at [`DTYPE_KEY`]) unless `dtype` is a floating-point type the model can train in on
/// `device`.
///
/// `f32` and `f64` work everywhere; `bf16` and `f16` only on CUDA (candle's CPU half-precision
/// kernels are slow and partly missing, and CPU training in half precision is not useful).
/// Integer dtypes are always errors.
pub fn check_dtype_for_device(dtype: DType, device: &Device) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        DType::BF16 | DType::F16 => {
            if device.is_cuda() {
                Ok(())
            } else {
                Err(Error::config(
                    DTYPE_KEY,
                    format!(
                        "dtype {} needs a CUDA device, but the device is {}; use \"f32\" on the \
                         CPU, or set model.device = \"cuda\" (in a build with the `cuda` feature)",
                        dtype.as_str(),
                        describe_device(device)
                    ),
                ))
            }
        }
        other => Err(Error::config(
            DTYPE_KEY,
            format!(
                "dtype {} is not a floating-point type the model can train in; accepted: f32, \
                 f64, bf16 and f16 (the last two on CUDA only)",
                other.as_str()
            ),
        )),
    }
}
