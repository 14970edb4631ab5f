//! The image trainer's weight average (`cpflow::image::ExponentialMovingAverage`): the
//! update rule by hand for both kinds of shadows, the configured schedule, and loading saved
//! shadows in place.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use cpflow::image::{EmaConfig, ExponentialMovingAverage};

#[test]
fn ema_update_matches_hand_computation() {
    let dev = Device::Cpu;
    // Both kinds of shadows: tensors of their own, and variables written in place (those of
    // an evaluation copy, with other contents before the first update).
    for in_place in [false, true] {
        let targets = [("b", 1), ("w", 2)].map(|(n, len)| {
            let v = Var::from_slice(&vec![7.0f64; len], len, &dev).unwrap();
            (n.to_string(), v)
        });
        let mut ema = if in_place {
            ExponentialMovingAverage::in_vars(targets.to_vec())
        } else {
            ExponentialMovingAverage::new()
        };
        ema_steps(&mut ema, &dev);
        if in_place {
            // The average is in the variables given, and nowhere else.
            assert_eq!(
                targets[1].1.to_vec1::<f64>().unwrap(),
                ema.get("w").unwrap().to_vec1::<f64>().unwrap()
            );
        }
    }
    // The configured schedule: decay 0 up to `start_iteration`, then `decay`.
    let e = EmaConfig {
        decay: 0.999,
        start_iteration: 10,
    };
    assert_eq!((e.decay_at(10), e.decay_at(11)), (0.0, 0.999));
}

/// The hand-computed updates of [`ema_update_matches_hand_computation`] on `ema` (not yet
/// initialised).
fn ema_steps(ema: &mut ExponentialMovingAverage, dev: &Device) {
    let dev = dev.clone();
    let w = Var::from_slice(&[1.0f64, -2.0], 2, &dev).unwrap();
    let b = Var::from_slice(&[0.5f64], 1, &dev).unwrap();
    let vars = vec![("b".to_string(), b.clone()), ("w".to_string(), w.clone())];
    assert!(!ema.is_initialized());
    assert!(ema.get("w").is_none() && ema.tensors().is_empty());
    let (mut sw, mut sb) = ([0.0f64; 2], 0.0f64);
    let steps: [([f64; 2], f64, f64); 4] = [
        ([1.0, -2.0], 0.5, 0.9), // first update copies, whatever the decay
        ([3.0, 0.0], 1.5, 0.0),  // decay 0: copy
        ([4.0, 2.0], -0.5, 0.9),
        ([-1.0, 5.0], 2.5, 0.5),
    ];
    for (i, (pw, pb, decay)) in steps.into_iter().enumerate() {
        w.set(&Tensor::new(&pw, &dev).unwrap()).unwrap();
        b.set(&Tensor::new(&[pb], &dev).unwrap()).unwrap();
        ema.update(&vars, decay).unwrap();
        if i == 0 {
            (sw, sb) = (pw, pb);
        } else {
            for j in 0..2 {
                sw[j] -= (1.0 - decay) * (sw[j] - pw[j]);
            }
            sb -= (1.0 - decay) * (sb - pb);
        }
    }
    // By hand: [3, 0] → [3.1, 0.2] (decay 0.9 towards [4, 2]) → [1.05, 2.6] (0.5, [−1, 5]).
    let got = ema.get("w").unwrap().to_vec1::<f64>().unwrap();
    assert!((got[0] - sw[0]).abs() < 1e-14 && (got[1] - sw[1]).abs() < 1e-14);
    assert!((got[0] - 1.05).abs() < 1e-12 && (got[1] - 2.6).abs() < 1e-12);
    let gb = ema.get("b").unwrap().to_vec1::<f64>().unwrap()[0];
    assert!((gb - sb).abs() < 1e-14);
    // The shadows are copies: setting the variable does not move them.
    w.set(&Tensor::new(&[9.0f64, 9.0], &dev).unwrap()).unwrap();
    assert_eq!(ema.get("w").unwrap().to_vec1::<f64>().unwrap(), got);
    // A decay outside [0, 1] and a different variable list are errors.
    assert!(ema.update(&vars, 1.5).is_err());
    assert!(ema.update(&vars[..1], 0.5).is_err());
}

/// A checkpoint's shadows load into the variables of an in-place average (what a resumed
/// image run does); a missing, misshapen or non-finite tensor is refused before anything is
/// written, and variables that are not the average's are refused by `update`.
#[test]
fn ema_loads_in_place_or_refuses() {
    let dev = Device::Cpu;
    let var = |v: &[f64]| Var::from_slice(v, v.len(), &dev).unwrap();
    let vars = vec![
        ("b".to_string(), var(&[0.5])),
        ("w".to_string(), var(&[1.0, -2.0])),
    ];
    let mut saved = ExponentialMovingAverage::new();
    saved.update(&vars, 0.0).unwrap();
    let tensors: HashMap<String, Tensor> = saved
        .tensors()
        .into_iter()
        .map(|(k, t)| (format!("ema.{k}"), t))
        .collect();
    let targets = vec![
        ("b".to_string(), var(&[0.0])),
        ("w".to_string(), var(&[0.0, 0.0])),
    ];
    let mut ema = ExponentialMovingAverage::in_vars(targets.clone());
    // A missing tensor, then one of another shape: errors, and nothing written.
    let mut missing = tensors.clone();
    missing.remove("ema.w");
    assert!(ema.load_in_place(&missing, "ema.").is_err());
    let mut misshapen = tensors.clone();
    misshapen.insert("ema.w".into(), Tensor::new(&[1.0f64], &dev).unwrap());
    assert!(ema.load_in_place(&misshapen, "ema.").is_err());
    let mut non_finite = tensors.clone();
    non_finite.insert(
        "ema.w".into(),
        Tensor::new(&[1.0f64, f64::NAN], &dev).unwrap(),
    );
    assert!(ema.load_in_place(&non_finite, "ema.").is_err());
    assert!(!ema.is_initialized());
    assert_eq!(targets[0].1.to_vec1::<f64>().unwrap(), [0.0]);
    ema.load_in_place(&tensors, "ema.").unwrap();
    assert!(ema.is_initialized());
    assert_eq!(targets[1].1.to_vec1::<f64>().unwrap(), [1.0, -2.0]);
    assert_eq!(targets[0].1.to_vec1::<f64>().unwrap(), [0.5]);
    // Averaging other variables than those it was made for is an error.
    let others = vec![
        ("a".to_string(), var(&[0.5])),
        ("w".to_string(), var(&[1.0, -2.0])),
    ];
    assert!(ema.update(&others, 0.5).is_err());
    // An average of its own has nothing to load into.
    assert!(
        ExponentialMovingAverage::new()
            .load_in_place(&tensors, "ema.")
            .is_err()
    );
}
