//! Metric definitions checked on hand-computed values.

use cgfed_core::metrics::{cosine, rel_err, snr_db, snr_paper, Reconstruction};

#[test]
fn hand_computed_values() {
    let x = [3.0f32, 4.0];
    let y = [3.0f32, 3.0];
    // ||x||^2 = 25, ||x - y||^2 = 1, n = 2
    assert!((snr_db(&x, &y) - 10.0 * 25f64.log10()).abs() < 1e-12);
    assert!((snr_paper(&x, &y) - 50.0).abs() < 1e-12);
    assert!((rel_err(&x, &y) - 0.2).abs() < 1e-12);
    // <x,y> = 21, |y| = sqrt(18)
    assert!((cosine(&x, &y) - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-12);
    let r = Reconstruction::measure(&x, &y);
    assert_eq!(r.snr_db, snr_db(&x, &y));
    assert_eq!(r.snr_paper, snr_paper(&x, &y));
    assert_eq!(r.cosine, cosine(&x, &y));
    assert_eq!(r.rel_err, rel_err(&x, &y));
}

#[test]
fn exact_reconstruction_is_infinite_snr() {
    let x = [1.0f32, -2.0, 0.5];
    assert_eq!(snr_db(&x, &x), f64::INFINITY);
    assert_eq!(rel_err(&x, &x), 0.0);
    assert!((cosine(&x, &x) - 1.0).abs() < 1e-12);
}

#[test]
fn negated_reconstruction() {
    let x = [1.0f32, 2.0];
    let y = [-1.0f32, -2.0];
    assert!((cosine(&x, &y) + 1.0).abs() < 1e-12);
    assert!((rel_err(&x, &y) - 2.0).abs() < 1e-12);
    // ||x-y||^2 = 4 ||x||^2  =>  -6.02 dB
    assert!((snr_db(&x, &y) + 10.0 * 4f64.log10()).abs() < 1e-12);
}
