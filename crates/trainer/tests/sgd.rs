//! SGD against PyTorch golden tensors: two steps from `init` with the fixture gradients must
//! reproduce `step1.after.*` and `step2.after.*` for every trainable parameter.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use trainer::sgd::{Sgd, SgdConfig};

mod common;

fn fixture(name: &str) -> std::path::PathBuf {
    common::fixture_path(name)
}

fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked"))
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check_file(file: &str) {
    check_file_with(file, SgdConfig::default()).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs the two fixture steps with `config`; an error describes the first mismatch.
fn check_file_with(file: &str, config: SgdConfig) -> Result<(), String> {
    let tensors = candle_core::safetensors::load(fixture(file), &Device::Cpu).unwrap();
    let mut names: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("init."))
        .filter(|n| is_trainable(n))
        .map(str::to_string)
        .collect();
    names.sort();
    assert!(
        names.len() > 10,
        "{file}: only {} trainable tensors found",
        names.len()
    );
    let get = |k: String| {
        tensors
            .get(&k)
            .unwrap_or_else(|| panic!("{file}: tensor `{k}` missing"))
            .clone()
    };
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                Var::from_tensor(&get(format!("init.{n}"))).unwrap(),
            )
        })
        .collect();
    // The fixture's optimizer: lr 0.1, momentum 0.9, weight decay 1e-4 on every parameter.
    let mut opt = Sgd::new(vars.clone(), config).unwrap();
    for step in 1..=2 {
        let before: Vec<Tensor> = vars
            .iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect();
        // Surrogate loss sum(p * g) whose gradient with respect to p is exactly g.
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (n, v) in &vars {
            let g = get(format!("step{step}.grad.{n}"));
            loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
        }
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        for ((n, v), ours_before) in vars.iter().zip(&before) {
            let want = get(format!("step{step}.after.{n}"));
            let diff = max_abs(&(v.as_tensor() - &want).unwrap());
            let tol = 1e-4 * max_abs(&want);
            if diff.is_nan() || diff > tol {
                return Err(format!(
                    "{file} step {step} `{n}`: max|d| {diff:e} > {tol:e}"
                ));
            }
            // The update itself against PyTorch's: weight decay moves a parameter by only
            // lr * wd * |p| per step, far inside the tolerance on the parameters above, but
            // ~1e-3 of the update, so an SGD that ignored it fails here. The reference update
            // is after - before in f32; a few ulps of |p| allow for that subtraction.
            let ref_before = if step == 1 {
                get(format!("init.{n}"))
            } else {
                get(format!("step{}.after.{n}", step - 1))
            };
            let d_ref = (&want - &ref_before).unwrap();
            let d_ours = (v.as_tensor() - ours_before).unwrap();
            let diff = max_abs(&(&d_ours - &d_ref).unwrap());
            let tol = 1e-4 * max_abs(&d_ref) + 4.0 * f32::EPSILON * max_abs(&want);
            if diff.is_nan() || diff > tol {
                return Err(format!(
                    "{file} step {step} `{n}`: update differs from PyTorch's by {diff:e} > {tol:e}"
                ));
            }
        }
    }
    assert_eq!(opt.momentum_buffers().len(), names.len());
    Ok(())
}

/// The comparison above catches an optimizer without weight decay, or with the wrong
/// momentum (the parameters alone would not: weight decay moves them by ~1e-5 of |p|).
#[test]
fn fixture_comparison_detects_missing_weight_decay_or_momentum() {
    for (what, config) in [
        (
            "no weight decay",
            SgdConfig {
                weight_decay: 0.0,
                ..SgdConfig::default()
            },
        ),
        (
            "momentum 0.8",
            SgdConfig {
                momentum: 0.8,
                ..SgdConfig::default()
            },
        ),
    ] {
        let e = check_file_with("resnet8_option_a.safetensors", config).expect_err(what);
        assert!(e.contains("differs") || e.contains("max|d|"), "{what}: {e}");
        if what == "no weight decay" {
            assert!(e.contains("update differs"), "{what}: {e}");
        }
    }
}

#[test]
fn resnet20_option_a_two_steps_match_pytorch() {
    check_file("resnet20_option_a.safetensors");
}

#[test]
fn resnet20_option_b_two_steps_match_pytorch() {
    check_file("resnet20_option_b.safetensors");
}

#[test]
fn resnet8_option_a_two_steps_match_pytorch() {
    check_file("resnet8_option_a.safetensors");
}

#[test]
fn checkpointed_buffers_resume_identically() {
    let tensors =
        candle_core::safetensors::load(fixture("resnet8_option_a.safetensors"), &Device::Cpu)
            .unwrap();
    let names: Vec<String> = {
        let mut v: Vec<String> = tensors
            .keys()
            .filter_map(|k| k.strip_prefix("init."))
            .filter(|n| is_trainable(n))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let run = |resume: bool| -> Vec<Tensor> {
        let vars: Vec<(String, Var)> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Var::from_tensor(&tensors[&format!("init.{n}")]).unwrap(),
                )
            })
            .collect();
        let mut opt = Sgd::new(vars.clone(), SgdConfig::default()).unwrap();
        for step in 1..=2 {
            if resume && step == 2 {
                let saved: HashMap<String, Tensor> = opt.momentum_buffers().into_iter().collect();
                opt = Sgd::new(vars.clone(), SgdConfig::default()).unwrap();
                opt.load_momentum_buffers(&saved).unwrap();
            }
            let mut grads = candle_core::backprop::GradStore::default();
            for (n, v) in &vars {
                grads.insert(
                    v.as_tensor(),
                    tensors[&format!("step{step}.grad.{n}")].clone(),
                );
            }
            opt.step(&grads, 0.1).unwrap();
        }
        vars.iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect()
    };
    for (a, b) in run(false).iter().zip(run(true)) {
        let d = max_abs(&(a - b).unwrap());
        assert_eq!(d, 0.0);
    }
}
