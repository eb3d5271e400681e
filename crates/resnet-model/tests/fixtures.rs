//! The model against PyTorch golden fixtures (see `shared/fixtures/README.md`): eval logits,
//! two training steps' logits, loss and gradients, and the state after a reference SGD step
//! (running statistics included).
//!
//! Two numerics are checked:
//! - **reference ops** (`ops::with_reference_ops`, plain candle ops): every tensor of every
//!   fixture, both steps chained;
//! - **fast kernels** (the default on CPU): every tensor of the ResNet-8 fixture, both steps
//!   chained; for the two ResNet-20 fixtures everything the forward pass determines (eval
//!   logits, train logits, loss, updated running statistics) and the gradients of every
//!   parameter downstream of the ReLU tie described next (`layer1.2` onward, `linear`). Each
//!   ResNet-20 fixture batch has one ReLU pre-activation closer to the kink than f32 rounding
//!   (option A: `layer1.1`'s residual sum is +3.0e-8 with the reference summation order and
//!   -5.1e-7 with the fast kernels'): that one mask element flips, and the gradients of every
//!   parameter upstream of it move by up to ~1e-2 of their maximum. `relu_tie_explains_the_
//!   fast_path_gradient_gap` pins that down, so a real kernel error cannot hide behind it; the
//!   fast kernels' gradients upstream of it are otherwise checked against the reference ops and against f64
//!   finite differences in `tests/ops_*.rs`.

mod common;

use std::collections::{BTreeSet, HashMap};

use candle_core::{Device, Tensor, Var};
use common::{load_fixture, with_prefix, Report};
use resnet_model::{ops, ResNetConfig, ResNetModel, Shortcut};

const LR: f64 = 0.1;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 1e-4;

/// PyTorch's SGD (dampening 0, no Nesterov): `d = g + wd * p`; `buf = d` on the first step,
/// else `buf = momentum * buf + d`; `p -= lr * buf`.
#[derive(Default)]
struct ReferenceSgd {
    buffers: HashMap<String, Tensor>,
}

impl ReferenceSgd {
    fn step(&mut self, params: &[(String, Var)], grads: &candle_core::backprop::GradStore) {
        for (name, var) in params {
            let p = var.as_tensor().detach();
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for `{name}`"));
            let d = (g + (&p * WEIGHT_DECAY).unwrap()).unwrap();
            let buf = match self.buffers.get(name) {
                None => d,
                Some(b) => ((b * MOMENTUM).unwrap() + d).unwrap(),
            };
            var.set(&(&p - (&buf * LR).unwrap()).unwrap()).unwrap();
            self.buffers.insert(name.clone(), buf);
        }
    }
}

/// What to compare with the fixture.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Every tensor.
    All,
    /// What the forward pass determines (logits, loss, running statistics), plus the first
    /// step's gradients of the parameters downstream of the ReLU tie in `layer1.1`
    /// (`layer1.2` onward and `linear`), which the flipped mask element does not reach.
    ForwardAndDownstreamGradients,
}

/// Whether `name` is a parameter whose gradient the `layer1.1` ReLU tie can move (the stem
/// and the first two blocks feed that ReLU).
fn upstream_of_the_tie(name: &str) -> bool {
    ["conv1.", "bn1.", "layer1.0.", "layer1.1."]
        .iter()
        .any(|p| name.starts_with(p))
}

fn run_fixture(file: &str, cfg: &ResNetConfig, expected_params: usize, check: Check) {
    let fx = load_fixture(file);
    let dev = Device::Cpu;
    let model = ResNetModel::from_tensors(cfg, &with_prefix(&fx, "init."), &dev)
        .unwrap_or_else(|e| panic!("{file}: loading init.* failed: {e}"));
    assert_eq!(
        model.num_parameters(),
        expected_params,
        "{file}: parameter count"
    );
    let mut report = Report::default();

    // Eval mode on batch 1 with the initial running statistics.
    let x1 = &fx["batch1.input"];
    let logits = model.forward_t(x1, false).unwrap();
    report.check("eval.logits", &logits, &fx["eval.logits"]);

    let mut sgd = ReferenceSgd::default();
    for step in 1..=2 {
        let x = &fx[&format!("batch{step}.input")];
        let y = &fx[&format!("batch{step}.labels")];
        let logits = model.forward_t(x, true).unwrap();
        report.check(
            &format!("step{step}.logits"),
            &logits,
            &fx[&format!("step{step}.logits")],
        );
        let loss = candle_nn::loss::cross_entropy(&logits, y).unwrap();
        report.check(
            &format!("step{step}.loss"),
            &loss,
            &fx[&format!("step{step}.loss")],
        );

        if check != Check::All {
            // Batch statistics of this step's forward pass, before any parameter update.
            let state = model.state_dict().unwrap();
            let after = with_prefix(&fx, &format!("step{step}.after."));
            for (name, t) in state.iter().filter(|(n, _)| n.contains("running_")) {
                report.check(&format!("step{step}.after.{name}"), t, &after[name]);
            }
            if check == Check::ForwardAndDownstreamGradients {
                let grads = loss.backward().unwrap();
                let ref_grads = with_prefix(&fx, &format!("step{step}.grad."));
                let mut compared = 0;
                for (name, var) in model.parameters() {
                    if upstream_of_the_tie(&name) {
                        continue;
                    }
                    let g = grads
                        .get(var.as_tensor())
                        .unwrap_or_else(|| panic!("no gradient for `{name}`"));
                    report.check(&format!("step{step}.grad.{name}"), g, &ref_grads[&name]);
                    compared += 1;
                }
                assert!(compared >= 40, "{file}: only {compared} gradients compared");
            }
            break; // step 2 would start from parameters updated with unchecked gradients
        }

        let grads = loss.backward().unwrap();
        let params = model.parameters();
        let ref_grads = with_prefix(&fx, &format!("step{step}.grad."));
        let ours: BTreeSet<&String> = params.iter().map(|(n, _)| n).collect();
        let theirs: BTreeSet<&String> = ref_grads.keys().collect();
        if ours != theirs {
            report.fail(format!(
                "step{step}: parameter names differ from the fixture's gradients: \
                 ours only {:?}, fixture only {:?}",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>()
            ));
        }
        for (name, var) in &params {
            match (grads.get(var.as_tensor()), ref_grads.get(name)) {
                (Some(g), Some(r)) => report.check(&format!("step{step}.grad.{name}"), g, r),
                (None, _) => report.fail(format!("step{step}: no gradient for `{name}`")),
                (_, None) => {}
            }
        }

        sgd.step(&params, &grads);
        let state = model.state_dict().unwrap();
        let after = with_prefix(&fx, &format!("step{step}.after."));
        let ours: BTreeSet<&String> = state.keys().collect();
        let theirs: BTreeSet<&String> = after.keys().collect();
        assert_eq!(
            ours, theirs,
            "{file}: state names differ from step{step}.after.*"
        );
        for (name, t) in &state {
            report.check(&format!("step{step}.after.{name}"), t, &after[name]);
        }
    }
    report.finish(file);
}

#[test]
fn resnet20_option_a_matches_pytorch() {
    ops::with_reference_ops(|| {
        run_fixture(
            "resnet20_option_a.safetensors",
            &ResNetConfig::resnet20(),
            269_722,
            Check::All,
        )
    });
}

#[test]
fn resnet20_option_a_fast_kernels_forward_matches_pytorch() {
    run_fixture(
        "resnet20_option_a.safetensors",
        &ResNetConfig::resnet20(),
        269_722,
        Check::ForwardAndDownstreamGradients,
    );
}

#[test]
fn resnet20_option_b_matches_pytorch() {
    ops::with_reference_ops(|| {
        run_fixture(
            "resnet20_option_b.safetensors",
            &ResNetConfig::resnet20().with_shortcut(Shortcut::Projection),
            272_474,
            Check::All,
        )
    });
}

#[test]
fn resnet20_option_b_fast_kernels_forward_matches_pytorch() {
    run_fixture(
        "resnet20_option_b.safetensors",
        &ResNetConfig::resnet20().with_shortcut(Shortcut::Projection),
        272_474,
        Check::ForwardAndDownstreamGradients,
    );
}

#[test]
fn resnet8_option_a_matches_pytorch() {
    ops::with_reference_ops(|| {
        run_fixture(
            "resnet8_option_a.safetensors",
            &ResNetConfig::with_depth(8),
            75_290,
            Check::All,
        )
    });
}

#[test]
fn resnet8_option_a_fast_kernels_match_pytorch() {
    run_fixture(
        "resnet8_option_a.safetensors",
        &ResNetConfig::with_depth(8),
        75_290,
        Check::All,
    );
}

/// The stage-1 ReLU pre-activations of the ResNet-20 option-A fixture's first batch (stem and
/// every block), computed with the fast kernels and with the reference ops.
fn stage1_pre_activations(fx: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let w = |n: &str| &fx[&format!("init.{n}")];
    let bn = |x: &Tensor, p: &str| {
        ops::batch_norm_train(
            x,
            w(&format!("{p}.weight")),
            w(&format!("{p}.bias")),
            1e-5,
            false,
        )
        .unwrap()
        .y
    };
    let conv = |x: &Tensor, name: &str| ops::conv2d(x, w(name), 1, 1).unwrap();
    let mut out = Vec::new();
    let z = bn(&conv(&fx["batch1.input"], "conv1.weight"), "bn1");
    out.push(("bn1".to_string(), z.clone()));
    let mut h = z.relu().unwrap();
    for i in 0..3 {
        let p = format!("layer1.{i}");
        let z = bn(&conv(&h, &format!("{p}.conv1.weight")), &format!("{p}.bn1"));
        out.push((format!("{p}.bn1"), z.clone()));
        let b = bn(
            &conv(&z.relu().unwrap(), &format!("{p}.conv2.weight")),
            &format!("{p}.bn2"),
        );
        let s = (&b + &h).unwrap();
        out.push((format!("{p} residual sum"), s.clone()));
        h = s.relu().unwrap();
    }
    out
}

/// Pins down why the fast kernels' ResNet-20 gradients are not compared with the fixture:
/// with both numerics the pre-activations agree to a few 1e-6, and the only ReLU decision
/// they disagree on is one value within 1e-6 of zero.
#[test]
fn relu_tie_explains_the_fast_path_gradient_gap() {
    let fx = load_fixture("resnet20_option_a.safetensors");
    let fast = stage1_pre_activations(&fx);
    let reference = ops::with_reference_ops(|| stage1_pre_activations(&fx));
    let mut flips = Vec::new();
    for ((name, f), (_, r)) in fast.iter().zip(&reference) {
        let f = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_diff = f
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 2e-5,
            "{name}: fast vs reference differ by {max_diff:e}"
        );
        for (k, (a, b)) in f.iter().zip(&r).enumerate() {
            if (*a > 0.0) != (*b > 0.0) {
                flips.push((name.clone(), k, *a, *b));
            }
        }
    }
    assert_eq!(
        flips.len(),
        1,
        "expected exactly one ReLU tie, found {flips:?}"
    );
    let (name, _, a, b) = &flips[0];
    assert!(
        a.abs() < 1e-6 && b.abs() < 1e-6,
        "{name}: a flipped ReLU decision away from the kink: fast {a:e}, reference {b:e}"
    );
}
