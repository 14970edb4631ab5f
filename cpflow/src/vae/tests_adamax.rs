//! Adamax against its update rule written out by hand.

use candle_core::{Device, Tensor, Var};

use super::*;

#[test]
fn adamax_matches_the_update_rule_written_out() {
    // Three steps on f(x) = Σ c_i x_i² against the rule evaluated by hand in f64.
    let dev = Device::Cpu;
    let x = Var::new(&[1.0f64, -0.5, 2.0], &dev).unwrap();
    let c = Tensor::new(&[1.0f64, 3.0, 0.1], &dev).unwrap();
    let p = AdamaxParams {
        lr: 0.05,
        ..Default::default()
    };
    let mut opt = Adamax::new(vec![("x".into(), x.clone())], p.clone()).unwrap();
    let (mut xs, cs) = (vec![1.0f64, -0.5, 2.0], [1.0, 3.0, 0.1]);
    let (mut m, mut u) = (vec![0.0; 3], vec![0.0f64; 3]);
    for t in 1..=3 {
        let loss = (x.as_tensor().sqr().unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        for i in 0..3 {
            let g = 2.0 * cs[i] * xs[i];
            m[i] = p.beta1 * m[i] + (1.0 - p.beta1) * g;
            u[i] = (p.beta2 * u[i]).max(g.abs() + p.eps);
            xs[i] -= p.lr / (1.0 - p.beta1.powi(t)) * m[i] / u[i];
        }
    }
    let got = x.as_tensor().to_vec1::<f64>().unwrap();
    for i in 0..3 {
        assert!((got[i] - xs[i]).abs() < 1e-14, "{got:?} vs {xs:?}");
    }
}
