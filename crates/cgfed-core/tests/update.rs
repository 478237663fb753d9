//! `Update` and `Layout`: canonical order, flatten round trip, layout checks.

use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::{Layout, TensorSpec, Update};

#[test]
fn sorted_by_name_and_flat_roundtrip() {
    let dev = Device::Cpu;
    let b = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
    let a = Tensor::new(&[5f32, 6., 7.], &dev).unwrap();
    let u = Update::new(vec![("b".into(), b), ("a".into(), a)]).unwrap();
    let names: Vec<&str> = u.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b"]);
    let flat = u.to_flat().unwrap();
    assert_eq!(flat, [5., 6., 7., 1., 2., 3., 4.]);
    let v = Update::from_flat(u.layout(), &flat, &dev).unwrap();
    assert_eq!(v.to_flat().unwrap(), flat);
    assert_eq!(u.layout().dense_bytes(), 28);
    assert!(u.get("b").is_some() && u.get("c").is_none());
}

#[test]
fn duplicate_names_and_bad_lengths_are_errors() {
    let spec = |n: &str| TensorSpec {
        name: n.into(),
        shape: vec![2],
    };
    assert!(Layout::new(vec![spec("x"), spec("x")]).is_err());
    let l = Layout::new(vec![spec("x")]).unwrap();
    assert!(Update::from_flat(&l, &[1.0], &Device::Cpu).is_err());
    assert!(Update::from_parts(&l, vec![vec![1.0, 2.0, 3.0]], &Device::Cpu).is_err());
}

#[test]
fn arithmetic_and_finiteness() {
    let l = Layout::new(vec![TensorSpec {
        name: "w".into(),
        shape: vec![3],
    }])
    .unwrap();
    let x = Update::from_flat(&l, &[1., 2., 3.], &Device::Cpu).unwrap();
    let y = Update::from_flat(&l, &[0.5, 0.5, 0.5], &Device::Cpu).unwrap();
    assert_eq!(x.sub(&y).unwrap().to_flat().unwrap(), [0.5, 1.5, 2.5]);
    assert_eq!(
        x.add(&y).unwrap().scale(2.0).unwrap().to_flat().unwrap(),
        [3., 5., 7.]
    );
    x.check_finite().unwrap();
    let bad = Update::from_flat(&l, &[1., f32::NAN, 3.], &Device::Cpu).unwrap();
    let msg = bad.check_finite().unwrap_err().to_string();
    assert!(msg.contains("`w`") && msg.contains("element 1"), "{msg}");
    let other = Layout::new(vec![TensorSpec {
        name: "v".into(),
        shape: vec![3],
    }])
    .unwrap();
    assert!(x.check_same_layout(&other).is_err());
}
