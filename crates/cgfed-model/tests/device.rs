//! Device strings: `cpu`/`auto` give the CPU on a machine without a GPU (or in a build
//! without the `cuda` feature), CUDA without the feature is an error naming `model.device`
//! and the fix, garbage lists the accepted values, and half precision needs CUDA.

use candle_core::{DType, Device};
use cgfed_model::device::{
    check_dtype_for_device, cuda_compiled, describe_device, parse_device, parse_device_at,
};

fn error(spec: &str) -> String {
    match parse_device(spec) {
        Ok(d) => panic!(
            "expected an error for \"{spec}\", got {}",
            describe_device(&d)
        ),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not mention `{p}`");
    }
}

#[test]
fn cpu_is_cpu() {
    for spec in ["cpu", " CPU "] {
        let d = parse_device(spec).expect("cpu");
        assert!(d.is_cpu(), "{spec}");
        assert_eq!(describe_device(&d), "cpu");
    }
}

#[test]
fn auto_is_cpu_without_a_usable_gpu() {
    let d = parse_device("auto").expect("auto never fails");
    if !cuda_compiled() {
        assert!(d.is_cpu());
    }
    // with the feature, auto is cuda:0 exactly when device 0 opens
    let name = describe_device(&d);
    assert!(name == "cpu" || name == "cuda:0", "{name}");
}

#[test]
fn cuda_without_the_feature_names_the_key_and_the_fix() {
    if cuda_compiled() {
        return;
    }
    for spec in ["cuda", "cuda:0", "cuda:3"] {
        let msg = error(spec);
        assert_mentions(
            &msg,
            &[
                "model.device",
                spec,
                "built without the `cuda` feature",
                "--features cuda",
                "scripts/build-cuda.sh",
            ],
        );
    }
}

#[test]
fn cuda_with_the_feature_opens_the_device_or_says_why_not() {
    if !cuda_compiled() {
        return;
    }
    match parse_device("cuda:0") {
        Ok(d) => assert_eq!(describe_device(&d), "cuda:0"),
        Err(e) => assert_mentions(&e.to_string(), &["model.device", "not usable", "cpu"]),
    }
    // no machine has 1000 GPUs
    let msg = error("cuda:999");
    assert_mentions(&msg, &["model.device", "CUDA device 999 is not usable"]);
}

#[test]
fn garbage_lists_the_accepted_values() {
    for spec in ["gpu0", "", "tpu", "cuda0"] {
        let msg = error(spec);
        assert_mentions(
            &msg,
            &["model.device", "unknown device", "auto", "cpu", "cuda:N"],
        );
    }
    for spec in ["cuda:", "cuda:x", "cuda:-1"] {
        let msg = error(spec);
        assert_mentions(&msg, &["model.device", "bad CUDA ordinal", "cuda:N"]);
    }
}

#[test]
fn errors_name_the_given_key() {
    let msg = parse_device_at("experiment.device", "tpu")
        .expect_err("tpu")
        .to_string();
    assert_mentions(&msg, &["experiment.device", "tpu"]);
}

#[test]
fn half_precision_needs_cuda() {
    let cpu = Device::Cpu;
    check_dtype_for_device(DType::F32, &cpu).expect("f32 on cpu");
    check_dtype_for_device(DType::F64, &cpu).expect("f64 on cpu");
    for dt in [DType::BF16, DType::F16] {
        let msg = check_dtype_for_device(dt, &cpu)
            .expect_err("half on cpu")
            .to_string();
        assert_mentions(&msg, &["model.dtype", dt.as_str(), "cpu", "f32"]);
    }
    let msg = check_dtype_for_device(DType::U32, &cpu)
        .expect_err("u32")
        .to_string();
    assert_mentions(&msg, &["model.dtype", "u32", "f32"]);
}
