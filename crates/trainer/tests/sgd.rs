//! SGD against PyTorch golden tensors: two steps from `init` with the fixture gradients must
//! reproduce `step1.after.*` and `step2.after.*` for every trainable parameter.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use trainer::sgd::{Sgd, SgdConfig};

fn fixture(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "fixture {} is missing: the golden tensors are expected in <workspace>/../shared/fixtures",
        path.display()
    );
    path
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
    let mut opt = Sgd::new(vars.clone(), SgdConfig::default()).unwrap();
    for step in 1..=2 {
        // Surrogate loss sum(p * g) whose gradient with respect to p is exactly g.
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (n, v) in &vars {
            let g = get(format!("step{step}.grad.{n}"));
            loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
        }
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        for (n, v) in &vars {
            let want = get(format!("step{step}.after.{n}"));
            let diff = max_abs(&(v.as_tensor() - &want).unwrap());
            let tol = 1e-4 * max_abs(&want);
            assert!(
                diff <= tol,
                "{file} step {step} `{n}`: max|d| {diff:e} > {tol:e}"
            );
        }
    }
    assert_eq!(opt.momentum_buffers().len(), names.len());
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
